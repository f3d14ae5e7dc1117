package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
	"github.com/sorad/sorad/media/authtoken"
)

// selfSigned writes a certificate for ip named cn (its own root) and its
// key into dir, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir, cn string, ip net.IP) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		IPAddresses:           []net.IP{ip},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, {keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSListenersAndAccessTokens runs a node that serves https and wss
// and admits connects by signed token: the API answers over TLS, a client
// with a valid token gets media over wss, one without is refused with
// 4403, and SIGHUP makes the node serve a replaced certificate.
func TestTLSListenersAndAccessTokens(t *testing.T) {
	h := harness.New(t, soradBin)
	const secret = "the signaling auth secret of this test, 32+ bytes"
	n := h.NewNode("tls")
	addr := n.Address
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir, "first", net.ParseIP(addr))
	n.Args = append(n.Args, "--api_tls_cert_file="+certFile, "--api_tls_key_file="+keyFile,
		"--signaling_tls_cert_file="+certFile, "--signaling_tls_key_file="+keyFile, "--signaling_auth_secret="+secret)
	n.Start()

	client := func(pool *x509.CertPool) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	apiURL := fmt.Sprintf("https://%s:%d/", addr, harness.APIPort)
	served := func(c *http.Client) (string, error) {
		req, _ := http.NewRequest(http.MethodPost, apiURL, strings.NewReader("{}"))
		req.Header.Set("x-sora-target", targetGetStatsReport)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName, nil
	}
	harness.Eventually(t, 15*time.Second, "the API over https", func() bool {
		cn, err := served(client(pool))
		return err == nil && cn == "first"
	})
	// Go's TLS server answers a plain request with a bare 400.
	if resp, err := http.Post(fmt.Sprintf("http://%s:%d/", addr, harness.APIPort), "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain http to the https port: %d", resp.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wss := fmt.Sprintf("wss://%s:%d/signaling", addr, harness.SignalingPort)
	tlsConfig := &tls.Config{RootCAs: pool}
	token := func(role string) map[string]string {
		tok, err := authtoken.SignHS256([]byte(secret), authtoken.Claims{ChannelID: "secure", Role: role, Exp: time.Now().Add(time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{"access_token": tok}
	}
	_, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: wss, TLSConfig: tlsConfig, ChannelID: "secure", Role: "sendonly", Audio: true})
	if code, reason := closeOf(err); code != 4403 || reason != "ACCESS-TOKEN-MISSING" {
		t.Fatalf("connect without a token: %v", err)
	}
	pub, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: wss, TLSConfig: tlsConfig, ChannelID: "secure", Role: "sendonly", Audio: true, Video: true, Metadata: token("sendonly")})
	if err != nil {
		t.Fatalf("publisher with a token: %v", err)
	}
	defer pub.Close()
	sub, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: wss, TLSConfig: tlsConfig, ChannelID: "secure", Role: "recvonly", Audio: true, Video: true, Metadata: token("recvonly")})
	if err != nil {
		t.Fatalf("subscriber with a token: %v", err)
	}
	defer sub.Close()
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 30); err != nil {
		t.Fatalf("no video over the token-admitted connections: %v", err)
	}

	// Replace the certificate in place and reload.
	os.Remove(certFile)
	os.Remove(keyFile)
	_, _, pool2 := selfSigned(t, dir, "second", net.ParseIP(addr))
	n.Reload()
	// Reload returns at the first SIGHUP line; the second follows.
	harness.Eventually(t, 5*time.Second, "both certificates reloaded", func() bool {
		return strings.Contains(n.Log(), "SIGHUP: api certificate reloaded") && strings.Contains(n.Log(), "SIGHUP: signaling certificate reloaded")
	})
	if cn, err := served(client(pool2)); err != nil || cn != "second" {
		t.Fatalf("after SIGHUP the API serves %q, %v", cn, err)
	}
	// The connections made before the reload go on.
	before := sub.Received()[pub.ConnectionID()+"/video"].Packets
	harness.Eventually(t, 10*time.Second, "video still flowing after the reload", func() bool {
		return sub.Received()[pub.ConnectionID()+"/video"].Packets > before
	})
}

func closeOf(err error) (int, string) {
	var ce *soraclient.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return 0, ""
}
