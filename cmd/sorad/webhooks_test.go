package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate and its key as PEM.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestWebhookTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"none: the system's defaults", Config{}, ""},
		{"a CA and a client certificate", Config{WebhookTLSCAFile: cert, WebhookTLSCertFile: cert, WebhookTLSKeyFile: key}, ""},
		{"a CA file without a certificate", Config{WebhookTLSCAFile: empty}, "no PEM certificate"},
		{"a missing CA file", Config{WebhookTLSCAFile: filepath.Join(dir, "nope.pem")}, "webhook_tls_ca_file"},
		{"a certificate with the wrong key file", Config{WebhookTLSCertFile: cert, WebhookTLSKeyFile: empty}, "webhook_tls_cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := webhookTLS(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.cfg.WebhookTLSCAFile == "" {
				if c != nil {
					t.Fatalf("a TLS configuration without any setting: %+v", c)
				}
				return
			}
			if c.RootCAs == nil || len(c.Certificates) != 1 {
				t.Fatalf("roots %v, %d client certificates", c.RootCAs, len(c.Certificates))
			}
		})
	}
}

func TestNoWebhooksWithoutURLs(t *testing.T) {
	h, err := newWebhooks(Config{}, nil)
	if err != nil || h != nil {
		t.Fatalf("webhooks %v, %v without any URL", h, err)
	}
}
