// Package authtoken checks the signed tokens a node can admit connects
// with when no auth webhook decides: a JWT (HS256 with a shared secret, or
// EdDSA with an Ed25519 key pair) that the client puts in its connect's
// metadata.access_token, as Sora Cloud clients already do. A token names the
// channel it opens, expires, and may bind the role and the client_id.
//
// The package only verifies and issues tokens; it does no I/O and keeps no
// state. The media plane decides what a refusal closes the socket with.
package authtoken

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MinSecretLength is the shortest HS256 secret accepted.
const MinSecretLength = 32

// MaxTokenLength bounds a token; longer ones are refused unread.
const MaxTokenLength = 8 << 10

// Leeway is the clock difference tolerated on exp and nbf.
const Leeway = 30 * time.Second

// Claims are the token's claims sorad reads. Exp and ChannelID are
// required; Role and ClientID bind the connect when present.
type Claims struct {
	ChannelID string `json:"channel_id"`
	Role      string `json:"role,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Exp       int64  `json:"exp"`
	Nbf       int64  `json:"nbf,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
}

// Connect is what a token is checked against.
type Connect struct {
	ChannelID string
	Role      string
	ClientID  string
}

// Refusal is why a token does not admit a connect. Reason is an
// UPPER-KEBAB-CASE word for the close frame; Detail says more for logs.
type Refusal struct {
	Reason string
	Detail string
}

func (r *Refusal) Error() string {
	if r.Detail == "" {
		return r.Reason
	}
	return r.Reason + ": " + r.Detail
}

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Verifier checks tokens with one key.
type Verifier struct {
	alg    string // "HS256" or "EdDSA"
	secret []byte
	public ed25519.PublicKey
	now    func() time.Time
}

// NewHS256 verifies tokens signed with secret.
func NewHS256(secret []byte) (*Verifier, error) {
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("signaling auth secret is %d bytes; at least %d are needed", len(secret), MinSecretLength)
	}
	return &Verifier{alg: "HS256", secret: bytes.Clone(secret), now: time.Now}, nil
}

// NewEd25519 verifies tokens signed with the private key of pub.
func NewEd25519(pub ed25519.PublicKey) *Verifier {
	return &Verifier{alg: "EdDSA", public: pub, now: time.Now}
}

// header is the JOSE header; only alg matters, and it must be the
// verifier's (no "none", no switching algorithms).
type header struct {
	Alg string `json:"alg"`
}

var b64 = base64.RawURLEncoding.Strict()

// isBase64URL reports whether r is in the unpadded base64url alphabet.
func isBase64URL(r rune) bool {
	return 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_'
}

// Verify checks token against c and returns its claims.
func (v *Verifier) Verify(token string, c Connect) (Claims, error) {
	var claims Claims
	if token == "" {
		return claims, refuse("ACCESS-TOKEN-MISSING", "metadata.access_token is required")
	}
	if len(token) > MaxTokenLength {
		return claims, refuse("ACCESS-TOKEN-INVALID", "longer than %d bytes", MaxTokenLength)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims, refuse("ACCESS-TOKEN-INVALID", "not a JWT")
	}
	// Go's base64 decoding skips CR and LF even when strict, so a signed
	// token with one inserted would decode to the same signature: only the
	// base64url alphabet is taken.
	if strings.IndexFunc(token, func(r rune) bool { return r != '.' && !isBase64URL(r) }) >= 0 {
		return claims, refuse("ACCESS-TOKEN-INVALID", "not base64url")
	}
	rawHeader, err1 := b64.DecodeString(parts[0])
	payload, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return claims, refuse("ACCESS-TOKEN-INVALID", "not base64url")
	}
	var h header
	if err := json.Unmarshal(rawHeader, &h); err != nil {
		return claims, refuse("ACCESS-TOKEN-INVALID", "header is not JSON")
	}
	if h.Alg != v.alg {
		return claims, refuse("ACCESS-TOKEN-INVALID", "algorithm %q, want %s", clip(h.Alg), v.alg)
	}
	if !v.signatureOK([]byte(parts[0]+"."+parts[1]), sig) {
		return claims, refuse("ACCESS-TOKEN-INVALID", "bad signature")
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return claims, refuse("ACCESS-TOKEN-INVALID", "claims are not a JSON object of the expected types")
	}
	now := v.now()
	switch {
	case claims.Exp == 0:
		return claims, refuse("ACCESS-TOKEN-INVALID", "no exp claim")
	case now.After(time.Unix(claims.Exp, 0).Add(Leeway)):
		return claims, refuse("ACCESS-TOKEN-EXPIRED", "expired at %s", time.Unix(claims.Exp, 0).UTC().Format(time.RFC3339))
	case claims.Nbf != 0 && now.Add(Leeway).Before(time.Unix(claims.Nbf, 0)):
		return claims, refuse("ACCESS-TOKEN-NOT-YET-VALID", "valid from %s", time.Unix(claims.Nbf, 0).UTC().Format(time.RFC3339))
	case claims.ChannelID == "":
		return claims, refuse("ACCESS-TOKEN-INVALID", "no channel_id claim")
	case claims.ChannelID != c.ChannelID:
		return claims, refuse("ACCESS-TOKEN-CHANNEL-MISMATCH", "the token is for another channel")
	case claims.Role != "" && claims.Role != c.Role:
		return claims, refuse("ACCESS-TOKEN-ROLE-MISMATCH", "the token is for role %s", clip(claims.Role))
	case claims.ClientID != "" && c.ClientID != "" && claims.ClientID != c.ClientID:
		return claims, refuse("ACCESS-TOKEN-CLIENT-ID-MISMATCH", "the token is for another client_id")
	}
	return claims, nil
}

func (v *Verifier) signatureOK(signed, sig []byte) bool {
	switch v.alg {
	case "HS256":
		mac := hmac.New(sha256.New, v.secret)
		mac.Write(signed)
		return hmac.Equal(mac.Sum(nil), sig)
	case "EdDSA":
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(v.public, signed, sig)
	}
	return false
}

// clip bounds what a refusal repeats of the token.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// SignHS256 issues a token for claims with secret.
func SignHS256(secret []byte, claims Claims) (string, error) {
	return sign("HS256", claims, func(b []byte) []byte {
		mac := hmac.New(sha256.New, secret)
		mac.Write(b)
		return mac.Sum(nil)
	})
}

// SignEd25519 issues a token for claims with key.
func SignEd25519(key ed25519.PrivateKey, claims Claims) (string, error) {
	return sign("EdDSA", claims, func(b []byte) []byte { return ed25519.Sign(key, b) })
}

func sign(alg string, claims Claims, sig func([]byte) []byte) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	return signed + "." + b64.EncodeToString(sig([]byte(signed))), nil
}

// ParsePublicKey reads an Ed25519 public key in PEM (PKIX).
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is a %T, not Ed25519", k)
	}
	return pub, nil
}

// ParsePrivateKey reads an Ed25519 private key in PEM (PKCS #8).
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is a %T, not Ed25519", k)
	}
	return key, nil
}

// AccessToken returns metadata.access_token of a connect's metadata, and
// the metadata without it, so the token is not shown to other members
// (notify's authn_metadata) or in listings. Metadata that is not an object
// has no token.
func AccessToken(metadata json.RawMessage) (string, json.RawMessage) {
	var obj map[string]json.RawMessage
	if len(metadata) == 0 || metadata[0] != '{' || json.Unmarshal(metadata, &obj) != nil {
		return "", metadata
	}
	raw, ok := obj["access_token"]
	if !ok {
		return "", metadata
	}
	var token string
	if json.Unmarshal(raw, &token) != nil {
		return "", metadata
	}
	delete(obj, "access_token")
	rest, err := json.Marshal(obj)
	if err != nil {
		return token, metadata
	}
	return token, rest
}
