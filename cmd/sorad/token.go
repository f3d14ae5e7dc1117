package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sorad/sorad/media/authtoken"
)

// signalingTokens builds the verifier of access tokens from the
// configuration, or nil when connects are not checked by token.
func signalingTokens(cfg Config) (*authtoken.Verifier, error) {
	switch {
	case cfg.SignalingAuthSecret != "":
		return authtoken.NewHS256([]byte(cfg.SignalingAuthSecret))
	case cfg.SignalingAuthPublicKeyFile != "":
		b, err := os.ReadFile(cfg.SignalingAuthPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("signaling_auth_public_key_file: %w", err)
		}
		pub, err := authtoken.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("signaling_auth_public_key_file %s: %w", cfg.SignalingAuthPublicKeyFile, err)
		}
		return authtoken.NewEd25519(pub), nil
	}
	return nil, nil
}

const tokenUsage = `Usage:
  sorad token create --channel_id ID [--role ROLE] [--client_id ID] [--ttl 1h] [--key FILE]
      print an access token for metadata.access_token. Signed with the
      private key FILE (EdDSA), or else with the secret in the environment
      variable SORAD_SIGNALING_AUTH_SECRET (HS256).
  sorad token keygen [--dir DIR]
      create an Ed25519 key pair: DIR/sorad-signaling-auth.pem (private, for
      the token issuer) and DIR/sorad-signaling-auth.pub.pem (public, for
      signaling_auth_public_key_file)
`

// runToken is the `sorad token` subcommand.
func runToken(args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	switch {
	case len(args) >= 1 && args[0] == "create":
		return createToken(args[1:], getenv, stdout)
	case len(args) >= 1 && args[0] == "keygen":
		return tokenKeygen(args[1:], stdout)
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprint(stdout, tokenUsage)
		return errHelp
	default:
		fmt.Fprint(stdout, tokenUsage)
		return errors.New("sorad token: unknown command")
	}
}

func createToken(args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	fs := flag.NewFlagSet("sorad token create", flag.ContinueOnError)
	channel := fs.String("channel_id", "", "the channel the token opens (required)")
	role := fs.String("role", "", "bind the token to this role (sendrecv, sendonly, recvonly)")
	client := fs.String("client_id", "", "bind the token to this client_id")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	keyFile := fs.String("key", "", "Ed25519 private key (PEM) to sign with; default: the HS256 secret in SORAD_SIGNALING_AUTH_SECRET")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *channel == "" {
		return errors.New("--channel_id is required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("--ttl %s: must be positive", *ttl)
	}
	now := time.Now()
	claims := authtoken.Claims{ChannelID: *channel, Role: *role, ClientID: *client, Iat: now.Unix(), Exp: now.Add(*ttl).Unix()}
	var (
		token string
		err   error
	)
	if *keyFile != "" {
		b, rerr := os.ReadFile(*keyFile)
		if rerr != nil {
			return fmt.Errorf("--key: %w", rerr)
		}
		key, perr := authtoken.ParsePrivateKey(b)
		if perr != nil {
			return fmt.Errorf("--key %s: %w", *keyFile, perr)
		}
		token, err = authtoken.SignEd25519(key, claims)
	} else {
		secret, _ := getenv(envName("signaling_auth_secret"))
		if len(secret) < authtoken.MinSecretLength {
			return fmt.Errorf("set %s (at least %d bytes), or give --key", envName("signaling_auth_secret"), authtoken.MinSecretLength)
		}
		token, err = authtoken.SignHS256([]byte(secret), claims)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

func tokenKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sorad token keygen", flag.ContinueOnError)
	dir := fs.String("dir", ".", "directory to write the key pair into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return writeNew(stdout, *dir, []namedPEM{
		{"sorad-signaling-auth.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600},
		{"sorad-signaling-auth.pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644},
	})
}
