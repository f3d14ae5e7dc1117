package main

import (
	"crypto/tls"
	"fmt"
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
