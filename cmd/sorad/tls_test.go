package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/media/authtoken"
)

// TestTLSCommand makes an operator PKI with `sorad tls` and loads it as a
// node would.
func TestTLSCommand(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := runTLS([]string{"secret"}, &out); err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(out.String()); len(s) < trust.MinSecretLength {
		t.Fatalf("secret %q is too short", s)
	}
	if err := runTLS([]string{"ca", "create", "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	ca, caKey := filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
	const node = "node-01@10.0.0.1"
	if err := runTLS([]string{"cert", "create", "--dir", dir, "--ca", ca, "--ca-key", caKey, "--node", node, "--dns", "node-01.internal"}, &out); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, node+".pem"), filepath.Join(dir, node+"-key.pem")
	for _, p := range []string{caKey, key} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want a file only its owner reads", p, fi.Mode(), err)
		}
	}
	cfg := Config{NodeName: node, ClusterTLSCAFile: ca, ClusterTLSCertFile: cert, ClusterTLSKeyFile: key}
	ts, err := clusterTrust(cfg)
	if err != nil || ts == nil || ts.Current().Name != node {
		t.Fatalf("loading the new certificate: %v", err)
	}
	cfg.NodeName = "node-02@10.0.0.2"
	if _, err := clusterTrust(cfg); err == nil {
		t.Fatal("node-02 loaded node-01's certificate")
	}
	if err := runTLS([]string{"ca", "create", "--dir", dir}, &out); err == nil {
		t.Fatal("ca create overwrote an existing CA")
	}
	for _, args := range [][]string{{"cert", "create", "--dir", dir}, {"bogus"}, {"cert", "create", "--node", "no-at", "--ca", ca, "--ca-key", caKey, "--dir", t.TempDir()}} {
		if err := runTLS(args, &out); err == nil {
			t.Fatalf("sorad tls %v succeeded", args)
		}
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	const first, second = "the current cluster secret, 32 bytes or more", "the previous cluster secret, 32 bytes or more"
	if err := os.WriteFile(p, []byte("# rotation in progress\n"+first+"\n\n"+second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readSecretFile(p)
	if err != nil || len(got) != 2 || got[0] != first || got[1] != second {
		t.Fatalf("readSecretFile = %q, %v", got, err)
	}
	ts, err := clusterTrust(Config{NodeName: "a@h", ClusterSecretFile: p})
	if err != nil || ts == nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("\n# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(); err == nil || !strings.Contains(err.Error(), "no secret") {
		t.Fatalf("reload of an empty file: %v", err)
	}
	if ts, err := clusterTrust(Config{NodeName: "a@h"}); ts != nil || err != nil {
		t.Fatalf("no configuration gave %v, %v", ts, err)
	}
}

// TestTokenCommand issues tokens with `sorad token` and checks that the
// node's verifier, built from the matching configuration, admits them.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	const secret = "the signaling auth secret, 32 bytes or more"
	env := mapEnv(map[string]string{"SORAD_SIGNALING_AUTH_SECRET": secret})
	var out bytes.Buffer
	if err := runToken([]string{"create", "--channel_id", "room", "--role", "sendrecv", "--ttl", "10m"}, env, &out); err != nil {
		t.Fatal(err)
	}
	v, err := signalingTokens(Config{SignalingAuthSecret: secret})
	if err != nil || v == nil {
		t.Fatalf("verifier: %v", err)
	}
	if _, err := v.Verify(strings.TrimSpace(out.String()), authtoken.Connect{ChannelID: "room", Role: "sendrecv"}); err != nil {
		t.Fatalf("the HS256 token: %v", err)
	}
	if err := runToken([]string{"create", "--channel_id", "room"}, mapEnv(nil), &out); err == nil {
		t.Fatal("created a token without a secret")
	}

	out.Reset()
	if err := runToken([]string{"keygen", "--dir", dir}, env, &out); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runToken([]string{"create", "--channel_id", "room", "--key", filepath.Join(dir, "sorad-signaling-auth.pem")}, env, &out); err != nil {
		t.Fatal(err)
	}
	ev, err := signalingTokens(Config{SignalingAuthPublicKeyFile: filepath.Join(dir, "sorad-signaling-auth.pub.pem")})
	if err != nil || ev == nil {
		t.Fatalf("EdDSA verifier: %v", err)
	}
	if _, err := ev.Verify(strings.TrimSpace(out.String()), authtoken.Connect{ChannelID: "room", Role: "recvonly"}); err != nil {
		t.Fatalf("the EdDSA token: %v", err)
	}
	if _, err := v.Verify(strings.TrimSpace(out.String()), authtoken.Connect{ChannelID: "room", Role: "recvonly"}); err == nil {
		t.Fatal("the HS256 verifier admitted an EdDSA token")
	}
}
