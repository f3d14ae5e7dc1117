package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
)

// keyPair is a listener's certificate and key from files, reloaded on
// SIGHUP: new handshakes use the reloaded pair, established connections
// keep theirs.
type keyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// loadKeyPair reads the pair once; nil when certFile is empty (plain
// listener).
func loadKeyPair(certFile, keyFile string) (*keyPair, error) {
	if certFile == "" {
		return nil, nil
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// reload reads the files again; on failure the pair in use stays.
func (kp *keyPair) reload() error {
	c, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cur.Store(&c)
	return nil
}

// reloadFunc is reload for SIGHUP, nil for a plain listener.
func (kp *keyPair) reloadFunc() func() error {
	if kp == nil {
		return nil
	}
	return kp.reload
}

// config is the listener's TLS configuration (TLS 1.2 and later: browsers
// and SDKs of every age connect here).
func (kp *keyPair) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}, // WebSocket upgrades need HTTP/1.1
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.cur.Load(), nil
		},
	}
}

// clientListeners are the ports clients and operators reach; pprof is nil
// unless pprof_address is set.
type clientListeners struct {
	api, signaling, pprof net.Listener
}

// listenClientPorts opens the API and signaling ports (and pprof's).
func listenClientPorts(cfg Config) (clientListeners, error) {
	var ls clientListeners
	ports := []struct {
		name string
		addr string
		ln   *net.Listener
	}{
		{"api", hostPort(cfg.ListenAddress, cfg.APIPort), &ls.api},
		{"signaling", hostPort(cfg.ListenAddress, cfg.SignalingPort), &ls.signaling},
		{"pprof", cfg.PprofAddress, &ls.pprof},
	}
	for _, p := range ports {
		if p.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			closeListeners(ls)
			return clientListeners{}, fmt.Errorf("listen on %s port: %w", p.name, err)
		}
		*p.ln = ln
	}
	return ls, nil
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// closeListeners closes the listeners no server took; closing a served
// one again does nothing.
func closeListeners(ls clientListeners) {
	for _, ln := range []net.Listener{ls.api, ls.signaling, ls.pprof} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}
