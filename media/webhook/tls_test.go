package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// clientCert makes a self-signed client certificate, its own CA.
func clientCert(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sorad webhook client"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert
}

func TestAuthOverTLSWithClientCertificate(t *testing.T) {
	cert, ca := clientCert(t)
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, `{"allowed":true,"client_id":"`+r.TLS.PeerCertificates[0].Subject.CommonName+`"}`)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	tests := []struct {
		name string
		tls  *tls.Config
		want string // AuthError.Reason; "" for allowed
	}{
		{name: "custom CA and client certificate", tls: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}},
		{name: "no client certificate", tls: &tls.Config{RootCAs: roots}, want: ReasonUnreachable},
		{name: "system roots", tls: nil, want: ReasonUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The timeout only bounds a hang: every case ends long before
			// it, but loading the system roots under -race on a loaded
			// machine has taken more than 2 s.
			c := newClient(t, Config{AuthURL: srv.URL, TLS: tt.tls, Timeout: 30 * time.Second})
			a, err := c.Auth(context.Background(), "C1", authPayload())
			if tt.want == "" {
				if err != nil || !a.Allowed || string(a.Fields["client_id"]) != `"sorad webhook client"` {
					t.Fatalf("Auth = %+v, %v; want allowed for the client certificate", a, err)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Reason != tt.want {
				t.Fatalf("Auth = %+v, %v; want %s", a, err, tt.want)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}
