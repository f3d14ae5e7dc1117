package authtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	secret = []byte("the signaling auth secret, 32 bytes or more")
	now    = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
)

func fixedVerifier(v *Verifier) *Verifier {
	v.now = func() time.Time { return now }
	return v
}

func reasonOf(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

func TestVerify(t *testing.T) {
	hs, err := NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	hs = fixedVerifier(hs)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ed := fixedVerifier(NewEd25519(pub))
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)

	valid := Claims{ChannelID: "room", Exp: now.Add(time.Hour).Unix()}
	with := func(f func(*Claims)) Claims {
		c := valid
		f(&c)
		return c
	}
	hsToken := func(c Claims) string {
		tok, err := SignHS256(secret, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	edToken := func(key ed25519.PrivateKey, c Claims) string {
		tok, err := SignEd25519(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	conn := Connect{ChannelID: "room", Role: "sendrecv", ClientID: "alice"}
	parts := strings.Split(hsToken(valid), ".")
	noneHeader := b64.EncodeToString([]byte(`{"alg":"none"}`))

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		c      Connect
		reason string // "" admits
	}{
		{"HS256 valid", hs, hsToken(valid), conn, ""},
		{"EdDSA valid", ed, edToken(priv, valid), conn, ""},
		{"role and client_id bound and matching", hs, hsToken(with(func(c *Claims) { c.Role, c.ClientID = "sendrecv", "alice" })), conn, ""},
		{"client_id bound, connect names none", hs, hsToken(with(func(c *Claims) { c.ClientID = "alice" })), Connect{ChannelID: "room", Role: "sendrecv"}, ""},
		{"within the leeway after exp", hs, hsToken(with(func(c *Claims) { c.Exp = now.Add(-Leeway / 2).Unix() })), conn, ""},
		{"missing", hs, "", conn, "ACCESS-TOKEN-MISSING"},
		{"expired", hs, hsToken(with(func(c *Claims) { c.Exp = now.Add(-time.Hour).Unix() })), conn, "ACCESS-TOKEN-EXPIRED"},
		{"not yet valid", hs, hsToken(with(func(c *Claims) { c.Nbf = now.Add(time.Hour).Unix() })), conn, "ACCESS-TOKEN-NOT-YET-VALID"},
		{"no exp", hs, hsToken(with(func(c *Claims) { c.Exp = 0 })), conn, "ACCESS-TOKEN-INVALID"},
		{"no channel", hs, hsToken(with(func(c *Claims) { c.ChannelID = "" })), conn, "ACCESS-TOKEN-INVALID"},
		{"another channel", hs, hsToken(with(func(c *Claims) { c.ChannelID = "other" })), conn, "ACCESS-TOKEN-CHANNEL-MISMATCH"},
		{"another role", hs, hsToken(with(func(c *Claims) { c.Role = "recvonly" })), conn, "ACCESS-TOKEN-ROLE-MISMATCH"},
		{"another client_id", hs, hsToken(with(func(c *Claims) { c.ClientID = "bob" })), conn, "ACCESS-TOKEN-CLIENT-ID-MISMATCH"},
		{"wrong HS256 secret", hs, func() string {
			tok, _ := SignHS256([]byte("some other secret, also 32 bytes long"), valid)
			return tok
		}(), conn, "ACCESS-TOKEN-INVALID"},
		{"EdDSA from another key", ed, edToken(otherPriv, valid), conn, "ACCESS-TOKEN-INVALID"},
		{"HS256 token to an EdDSA verifier", ed, hsToken(valid), conn, "ACCESS-TOKEN-INVALID"},
		{"EdDSA token to an HS256 verifier", hs, edToken(priv, valid), conn, "ACCESS-TOKEN-INVALID"},
		{"alg none", hs, noneHeader + "." + parts[1] + ".", conn, "ACCESS-TOKEN-INVALID"},
		{"claims changed after signing", hs, parts[0] + "." + b64.EncodeToString([]byte(`{"channel_id":"room","exp":9999999999,"role":"sendrecv"}`)) + "." + parts[2], conn, "ACCESS-TOKEN-INVALID"},
		{"two parts", hs, parts[0] + "." + parts[1], conn, "ACCESS-TOKEN-INVALID"},
		{"not base64", hs, "a.b!.c", conn, "ACCESS-TOKEN-INVALID"},
		// Go's base64 decoding skips CR and LF: the signature would still match.
		{"valid token with a CR in its signature", hs, parts[0] + "." + parts[1] + "." + parts[2][:3] + "\r" + parts[2][3:], conn, "ACCESS-TOKEN-INVALID"},
		{"valid token with a LF in its claims", hs, parts[0] + "." + parts[1][:3] + "\n" + parts[1][3:] + "." + parts[2], conn, "ACCESS-TOKEN-INVALID"},
		{"too long", hs, strings.Repeat("a", MaxTokenLength+1), conn, "ACCESS-TOKEN-INVALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(tt.token, tt.c)
			if got := reasonOf(err); got != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("Verify = %v, want %q", err, tt.reason)
			}
		})
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := NewHS256([]byte("short")); err == nil {
		t.Fatal("a short secret was accepted")
	}
}

func TestAccessToken(t *testing.T) {
	tests := []struct {
		in, token, rest string
	}{
		{`{"access_token":"abc","room":"x"}`, "abc", `{"room":"x"}`},
		{`{"room":"x"}`, "", `{"room":"x"}`},
		{`{"access_token":1}`, "", `{"access_token":1}`},
		{`"just a string"`, "", `"just a string"`},
		{``, "", ``},
	}
	for _, tt := range tests {
		token, rest := AccessToken(json.RawMessage(tt.in))
		if token != tt.token || string(rest) != tt.rest {
			t.Errorf("AccessToken(%s) = %q, %s; want %q, %s", tt.in, token, rest, tt.token, tt.rest)
		}
	}
}

func FuzzVerify(f *testing.F) {
	valid, _ := SignHS256(secret, Claims{ChannelID: "room", Exp: now.Add(time.Hour).Unix()})
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v, err := NewHS256(secret)
	if err != nil {
		f.Fatal(err)
	}
	v = fixedVerifier(v)
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(token, Connect{ChannelID: "room", Role: "sendrecv"})
		if err == nil && token != valid {
			// Only a token signed with the secret may pass.
			t.Fatalf("a token not made with the secret was admitted: %q %+v", token, claims)
		}
		if err != nil && reasonOf(err) == "" {
			t.Fatalf("refusal without a reason: %v", err)
		}
	})
}
