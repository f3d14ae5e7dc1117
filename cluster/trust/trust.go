// Package trust decides who may speak on the cluster port. Every connection
// there is TLS 1.3 with certificates on both sides, and a peer counts as a
// member only if its certificate chains to a root this node trusts. The roots
// come either from a shared secret (every node derives the same certificate
// authority from it, so one environment variable secures a cluster) or from
// files of an operator's own PKI.
//
// A member's node name is the common name of its certificate. The package
// knows nothing of Raft or of the cluster's membership list: the cluster
// package checks the names it gets from here against its own state.
package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The cluster port's protocols, negotiated with ALPN during the handshake.
const (
	ProtoRaft = "sorad-raft/1"
	ProtoHTTP = "sorad-http/1"
	// ProtoAPI carries API calls forwarded to the node in charge, framed
	// (see package cluster). A node older than it offers only the first
	// two; a dialler that offers ProtoAPI then ProtoHTTP learns which one
	// the peer speaks from the handshake.
	ProtoAPI = "sorad-api/1"
)

// Material is what one node proves itself with and checks others against.
type Material struct {
	// Certificate is presented to peers: the node's leaf, then any
	// intermediate certificates (cross-signed roots during a rotation).
	Certificate tls.Certificate
	// Roots are the certificate authorities whose members are trusted.
	Roots *x509.CertPool
	// Name is the node name in the leaf.
	Name string
}

// Store holds a node's current Material and builds the TLS configurations
// of the cluster port from it. Reload replaces the material for every later
// handshake; established connections keep what they negotiated.
type Store struct {
	load func() (*Material, error)
	cur  atomic.Pointer[Material]
}

// NewStore loads the material once and keeps load for Reload.
func NewStore(load func() (*Material, error)) (*Store, error) {
	s := &Store{load: load}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload loads the material again. On failure the previous material stays.
func (s *Store) Reload() error {
	m, err := s.load()
	if err != nil {
		return err
	}
	s.cur.Store(m)
	return nil
}

// Current returns the material in use.
func (s *Store) Current() *Material { return s.cur.Load() }

// ServerConfig is the configuration of the cluster port's listener: it
// requires a member's certificate and offers protos.
func (s *Store) ServerConfig(protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		ClientAuth: tls.RequireAnyClientCert, // verified by VerifyConnection against the current roots
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &s.cur.Load().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.verify(cs, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig is the configuration for dialling a peer's cluster port to
// speak proto, or, if the peer does not know it, one of also in that order
// (the listener picks by its own order of preference; the connection
// state's NegotiatedProtocol says which): the peer must present a member's
// certificate.
func (s *Store) ClientConfig(proto string, also ...string) *tls.Config {
	protos := append([]string{proto}, also...)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		ServerName: "sorad-cluster", // not checked: membership is the chain and the name in it
		// The chain is verified by VerifyConnection against the current
		// roots; the host name is not part of a member's identity.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.cur.Load().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if !slices.Contains(protos, cs.NegotiatedProtocol) {
				return fmt.Errorf("peer speaks none of %s", strings.Join(protos, ", "))
			}
			_, err := s.verify(cs, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// ErrNotMember is wrapped by every refusal of a peer's certificate.
var ErrNotMember = errors.New("peer is not a member of this cluster")

// verify checks the peer's chain against the current roots and returns the
// node name in its leaf.
func (s *Store) verify(cs tls.ConnectionState, usage x509.ExtKeyUsage) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: no certificate", ErrNotMember)
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         s.cur.Load().Roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
		CurrentTime:   time.Now(),
	}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotMember, err)
	}
	name := leaf.Subject.CommonName
	if err := checkNodeName(name); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotMember, err)
	}
	return name, nil
}

// PeerName returns the node name of a verified peer, or "" for a
// connection that is not TLS (a cluster running with cluster_insecure).
func PeerName(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}

// checkNodeName is the shape rule of node names (name@host), repeated here
// because the cluster package imports this one.
func checkNodeName(name string) error {
	short, host, ok := strings.Cut(name, "@")
	if !ok || short == "" || host == "" || strings.ContainsAny(name, " \t\r\n/") || strings.Contains(host, "@") {
		return fmt.Errorf("certificate name %q is not a node name (name@host)", name)
	}
	return nil
}
