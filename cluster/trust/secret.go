package trust

import (
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"
)

// MinSecretLength is the shortest cluster secret accepted. The derived
// authority's public key can be checked against guesses offline, so the
// secret must be long and random; `sorad tls secret` prints a good one.
const MinSecretLength = 32

// secretIterations makes each guess at a secret cost a PBKDF2 run.
const secretIterations = 200_000

// secretSalt separates this derivation from any other use of the secret.
const secretSalt = "sorad cluster certificate authority v1"

// authority is a certificate authority derived from a cluster secret: every
// node given the same secret derives the same key and the same certificate.
type authority struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
}

// Fixed validity of derived authorities: every node must produce the same
// certificate, so nothing in it may depend on when or where it is made.
var (
	authorityNotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	authorityNotAfter  = time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)
)

// deriveAuthority turns a secret into its certificate authority.
func deriveAuthority(secret string) (*authority, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("cluster secret is %d bytes; at least %d are needed (generate one with: sorad tls secret)", len(secret), MinSecretLength)
	}
	seed, err := pbkdf2.Key(sha256.New, secret, []byte(secretSalt), secretIterations, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("derive cluster key: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	tmpl := authorityTemplate(pub)
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("derive cluster certificate authority: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse derived certificate authority: %w", err)
	}
	return &authority{cert: cert, key: key}, nil
}

// authorityTemplate is the certificate of the authority with key pub. Its
// subject names the key, so authorities of different secrets never share a
// subject.
func authorityTemplate(pub ed25519.PublicKey) *x509.Certificate {
	sum := sha256.Sum256(pub)
	return &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(sum[:16]),
		Subject:               pkix.Name{CommonName: "sorad cluster secret " + hex.EncodeToString(sum[:8])},
		NotBefore:             authorityNotBefore,
		NotAfter:              authorityNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1, // room for one cross-signed authority during a rotation
		KeyUsage:              x509.KeyUsageCertSign,
	}
}

// crossSign certifies the authority next under previous: a node that still
// trusts only previous accepts a leaf of next through it.
func crossSign(next, previous *authority) (*x509.Certificate, error) {
	tmpl := authorityTemplate(next.key.Public().(ed25519.PublicKey))
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	der, err := x509.CreateCertificate(nil, tmpl, previous.cert, next.key.Public(), previous.key)
	if err != nil {
		return nil, fmt.Errorf("cross-sign cluster authority: %w", err)
	}
	return x509.ParseCertificate(der)
}

// FromSecret derives a node's material from the cluster secret. previous
// holds secrets being rotated out: their members stay trusted, and this
// node's certificate carries cross-signatures they accept, so nodes on the
// old secret and nodes on the new one talk to each other during a rolling
// rotation.
func FromSecret(nodeName, secret string, previous ...string) (*Material, error) {
	if err := checkNodeName(nodeName); err != nil {
		return nil, err
	}
	ca, err := deriveAuthority(secret)
	if err != nil {
		return nil, err
	}
	leaf, key, err := newLeaf(nodeName, ca.cert, ca.key)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	chain := [][]byte{leaf.Raw}
	for i, p := range previous {
		old, err := deriveAuthority(p)
		if err != nil {
			return nil, fmt.Errorf("previous secret %d: %w", i+1, err)
		}
		roots.AddCert(old.cert)
		cross, err := crossSign(ca, old)
		if err != nil {
			return nil, err
		}
		chain = append(chain, cross.Raw)
	}
	return &Material{
		Certificate: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		Roots:       roots,
		Name:        nodeName,
	}, nil
}

// leafValidity bounds a certificate minted at start from a secret. A node
// running longer than this renews it on SIGHUP or restart.
const leafValidity = 5 * 365 * 24 * time.Hour

// newLeaf makes a fresh key and a certificate for it naming nodeName, signed
// by the authority.
func newLeaf(nodeName string, ca *x509.Certificate, caKey ed25519.PrivateKey) (*x509.Certificate, ed25519.PrivateKey, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	tmpl, err := leafTemplate(nodeName, nil, time.Now(), leafValidity)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse node certificate: %w", err)
	}
	return leaf, key, nil
}

// leafTemplate is a member's certificate: its common name is the node name,
// and it serves both ends of a cluster connection.
func leafTemplate(nodeName string, dnsNames []string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeName},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-time.Hour), // tolerate clocks a little behind
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, nil
}

// newSerial is a random 127-bit certificate serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return serial, nil
}

// NewSecret returns a random cluster secret, 32 bytes in hex.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
