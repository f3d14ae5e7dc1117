package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	oldSecret   = "0123456789abcdef0123456789abcdef-old"
	newSecret   = "0123456789abcdef0123456789abcdef-new"
	otherSecret = "0123456789abcdef0123456789abcdef-other"
)

func storeOf(t *testing.T, load func() (*Material, error)) *Store {
	t.Helper()
	s, err := NewStore(load)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretStore(t *testing.T, name, secret string, previous ...string) *Store {
	t.Helper()
	return storeOf(t, func() (*Material, error) { return FromSecret(name, secret, previous...) })
}

// handshake connects a client using dialer's material to a server using
// listener's, and returns the name each side saw and each side's error.
func handshake(t *testing.T, dialer, listener *Store) (clientSaw, serverSaw string, clientErr, serverErr error) {
	t.Helper()
	a, b := tcpPair(t)
	srv := tls.Server(b, listener.ServerConfig(ProtoRaft, ProtoHTTP))
	done := make(chan struct{})
	go func() {
		defer close(done)
		serverErr = srv.Handshake()
		if serverErr != nil {
			b.Close() // unblock the client
		}
	}()
	cli := tls.Client(a, dialer.ClientConfig(ProtoHTTP))
	clientErr = cli.Handshake()
	if clientErr != nil {
		a.Close()
	}
	<-done
	if clientErr == nil {
		cs := cli.ConnectionState()
		clientSaw = PeerName(&cs)
	}
	if serverErr == nil {
		cs := srv.ConnectionState()
		serverSaw = PeerName(&cs)
		if cs.NegotiatedProtocol != ProtoHTTP || cs.Version != tls.VersionTLS13 {
			t.Errorf("negotiated %q over %x, want %q over TLS 1.3", cs.NegotiatedProtocol, cs.Version, ProtoHTTP)
		}
	}
	return clientSaw, serverSaw, clientErr, serverErr
}

// tcpPair is a connected pair of loopback TCP connections, closed with the
// test. (net.Pipe is unbuffered: a refused handshake would block both sides.)
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{a, b} {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
	}
	return a, b
}

func TestSecretHandshakes(t *testing.T) {
	oldA := secretStore(t, "a@10.0.0.1", oldSecret)
	oldB := secretStore(t, "b@10.0.0.2", oldSecret)
	rotating := secretStore(t, "c@10.0.0.3", newSecret, oldSecret)
	rotatingD := secretStore(t, "d@10.0.0.4", newSecret, oldSecret)
	newE := secretStore(t, "e@10.0.0.5", newSecret)
	stranger := secretStore(t, "x@10.0.0.9", otherSecret)

	tests := []struct {
		name          string
		dialer, lsner *Store
		ok            bool
	}{
		{"same secret", oldA, oldB, true},
		{"same secret, other way", oldB, oldA, true},
		{"rotating node dials a node on the old secret", rotating, oldA, true},
		{"node on the old secret dials a rotating node", oldA, rotating, true},
		{"two rotating nodes", rotating, rotatingD, true},
		{"rotated node dials a rotating node", newE, rotating, true},
		{"rotating node dials a rotated node", rotating, newE, true},
		{"old secret dials a rotated node", oldA, newE, false},
		{"rotated node dials the old secret", newE, oldA, false},
		{"another secret dials", stranger, oldA, false},
		{"dials another secret", oldA, stranger, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientSaw, serverSaw, cerr, serr := handshake(t, tt.dialer, tt.lsner)
			if !tt.ok {
				if cerr == nil && serr == nil {
					t.Fatalf("handshake succeeded; client saw %q, server saw %q", clientSaw, serverSaw)
				}
				return
			}
			if cerr != nil || serr != nil {
				t.Fatalf("handshake failed: client %v, server %v", cerr, serr)
			}
			if clientSaw != tt.lsner.Current().Name || serverSaw != tt.dialer.Current().Name {
				t.Fatalf("client saw %q, server saw %q", clientSaw, serverSaw)
			}
		})
	}
}

func TestServerRefusesNoCertificate(t *testing.T) {
	srv := secretStore(t, "a@10.0.0.1", oldSecret)
	a, b := tcpPair(t)
	errs := make(chan error, 1)
	go func() {
		err := tls.Server(b, srv.ServerConfig(ProtoHTTP)).Handshake()
		b.Close()
		errs <- err
	}()
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ProtoHTTP}, MinVersion: tls.VersionTLS13} //nolint:gosec // the attacker's side
	cli := tls.Client(a, cfg)
	_ = cli.Handshake()
	// In TLS 1.3 the client learns of the refusal on its first read.
	_, _ = cli.Read(make([]byte, 1))
	if err := <-errs; err == nil {
		t.Fatal("the server accepted a client without a certificate")
	}
}

func TestSecretRules(t *testing.T) {
	if _, err := FromSecret("a@h", "short"); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := FromSecret("a@h", newSecret, "short"); err == nil || !strings.Contains(err.Error(), "previous secret 1") {
		t.Fatalf("short previous secret: %v", err)
	}
	if _, err := FromSecret("no-at-sign", newSecret); err == nil {
		t.Fatal("a name that is not name@host was accepted")
	}
	a, err := deriveAuthority(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	b, err := deriveAuthority(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !a.cert.Equal(b.cert) {
		t.Fatal("one secret derived two different authorities")
	}
	if first, second := NewSecret(), NewSecret(); len(first) < MinSecretLength || first == second {
		t.Fatal("NewSecret is too short or not random")
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pki is an operator's authority in files.
type pki struct {
	dir             string
	caCert, caKey   []byte
	caFile, keyFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	cert, key, err := NewAuthority(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &pki{dir: dir, caCert: cert, caKey: key, caFile: writeFile(t, dir, "ca.pem", cert), keyFile: writeFile(t, dir, "ca-key.pem", key)}
}

func (p *pki) issue(t *testing.T, node string) (certFile, keyFile string) {
	t.Helper()
	cert, key, err := NewNodeCertificate(p.caCert, p.caKey, node, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.ReplaceAll(node, "@", "_")
	return writeFile(t, p.dir, base+".pem", cert), writeFile(t, p.dir, base+"-key.pem", key)
}

func fileStore(t *testing.T, node, caFile, certFile, keyFile string) *Store {
	t.Helper()
	return storeOf(t, func() (*Material, error) { return FromFiles(node, caFile, certFile, keyFile) })
}

func TestFileHandshakes(t *testing.T) {
	one := newPKI(t, "sorad test CA one")
	two := newPKI(t, "sorad test CA two")
	both := writeFile(t, t.TempDir(), "both.pem", append(append([]byte{}, one.caCert...), two.caCert...))

	cA, kA := one.issue(t, "a@10.0.0.1")
	cB, kB := one.issue(t, "b@10.0.0.2")
	cC, kC := two.issue(t, "c@10.0.0.3")
	a := fileStore(t, "a@10.0.0.1", one.caFile, cA, kA)
	b := fileStore(t, "b@10.0.0.2", one.caFile, cB, kB)
	cOnTwo := fileStore(t, "c@10.0.0.3", two.caFile, cC, kC)
	bTrustsBoth := fileStore(t, "b@10.0.0.2", both, cB, kB)
	cTrustsBoth := fileStore(t, "c@10.0.0.3", both, cC, kC)

	tests := []struct {
		name          string
		dialer, lsner *Store
		ok            bool
	}{
		{"one CA", a, b, true},
		{"CAs apart", a, cOnTwo, false},
		{"CAs apart, other way", cOnTwo, a, false},
		{"rotation: both trust both", bTrustsBoth, cTrustsBoth, true},
		{"rotation: the node issued by the new CA trusts both", cTrustsBoth, bTrustsBoth, true},
		{"rotation: a node trusting only the old CA", a, cTrustsBoth, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, cerr, serr := handshake(t, tt.dialer, tt.lsner)
			if ok := cerr == nil && serr == nil; ok != tt.ok {
				t.Fatalf("handshake ok=%v, want %v (client %v, server %v)", ok, tt.ok, cerr, serr)
			}
		})
	}

	t.Run("a certificate names its node", func(t *testing.T) {
		_, err := FromFiles("b@10.0.0.2", one.caFile, cA, kA)
		if err == nil || !strings.Contains(err.Error(), "a@10.0.0.1") {
			t.Fatalf("loading a@'s certificate as b@: %v", err)
		}
	})
	t.Run("a certificate from another CA is refused at load", func(t *testing.T) {
		if _, err := FromFiles("c@10.0.0.3", one.caFile, cC, kC); err == nil {
			t.Fatal("loaded a certificate that the CA file does not vouch for")
		}
	})
	t.Run("reload keeps the old material on failure", func(t *testing.T) {
		caFile := writeFile(t, t.TempDir(), "ca.pem", one.caCert)
		s := fileStore(t, "a@10.0.0.1", caFile, cA, kA)
		if err := os.WriteFile(caFile, []byte("not pem"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(); err == nil {
			t.Fatal("reload of a broken CA file succeeded")
		}
		if _, _, cerr, serr := handshake(t, s, b); cerr != nil || serr != nil {
			t.Fatalf("after a failed reload: client %v, server %v", cerr, serr)
		}
	})
}

func TestVerifyWrapsErrNotMember(t *testing.T) {
	a := secretStore(t, "a@10.0.0.1", oldSecret)
	x := secretStore(t, "x@10.0.0.9", otherSecret)
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{x.Current().Certificate.Leaf}}
	if _, err := a.verify(cs, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrNotMember) {
		t.Fatalf("a stranger's certificate: %v", err)
	}
	if _, err := a.verify(tls.ConnectionState{}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrNotMember) {
		t.Fatalf("no certificate: %v", err)
	}
	peer := secretStore(t, "b@10.0.0.2", oldSecret)
	cs = tls.ConnectionState{PeerCertificates: []*x509.Certificate{peer.Current().Certificate.Leaf}}
	if name, err := a.verify(cs, x509.ExtKeyUsageClientAuth); err != nil || name != "b@10.0.0.2" {
		t.Fatalf("a member's certificate: %q %v", name, err)
	}
}
