package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sorad/sorad/cluster/trust"
)

// clusterTrust builds the cluster port's trust store from the configuration,
// or returns nil when the port runs without authentication. The store's
// Reload re-reads the secret file or the PKI files.
func clusterTrust(cfg Config) (*trust.Store, error) {
	var load func() (*trust.Material, error)
	switch {
	case cfg.ClusterSecret != "":
		var previous []string
		if cfg.ClusterSecretPrevious != "" {
			previous = []string{cfg.ClusterSecretPrevious}
		}
		load = func() (*trust.Material, error) {
			return trust.FromSecret(cfg.NodeName, cfg.ClusterSecret, previous...)
		}
	case cfg.ClusterSecretFile != "":
		load = func() (*trust.Material, error) {
			secrets, err := readSecretFile(cfg.ClusterSecretFile)
			if err != nil {
				return nil, err
			}
			return trust.FromSecret(cfg.NodeName, secrets[0], secrets[1:]...)
		}
	case cfg.ClusterTLSCAFile != "":
		load = func() (*trust.Material, error) {
			return trust.FromFiles(cfg.NodeName, cfg.ClusterTLSCAFile, cfg.ClusterTLSCertFile, cfg.ClusterTLSKeyFile)
		}
	default:
		return nil, nil
	}
	ts, err := trust.NewStore(load)
	if err != nil {
		return nil, fmt.Errorf("cluster authentication: %w", err)
	}
	return ts, nil
}

// readSecretFile reads cluster_secret_file: the secret on the first line,
// secrets being rotated out on the next ones; blank lines and lines
// starting with # are skipped.
func readSecretFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster_secret_file: %w", err)
	}
	var secrets []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			secrets = append(secrets, line)
		}
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("cluster_secret_file %s holds no secret", path)
	}
	return secrets, nil
}

const tlsUsage = `Usage:
  sorad tls secret
      print a new random cluster_secret
  sorad tls ca create [--dir DIR] [--days N] [--name NAME]
      create a cluster CA: DIR/sorad-cluster-ca.pem and DIR/sorad-cluster-ca-key.pem
  sorad tls cert create --node NAME@HOST [--dir DIR] [--days N] [--ca FILE] [--ca-key FILE] [--dns NAME,...]
      issue a node certificate under the CA: DIR/NAME@HOST.pem and DIR/NAME@HOST-key.pem

Give each node cluster_tls_ca_file, and its own certificate and key as
cluster_tls_cert_file and cluster_tls_key_file. Keep the CA key off the nodes.
`

// runTLS is the `sorad tls` subcommand, which makes the material the
// cluster port authenticates with.
func runTLS(args []string, stdout io.Writer) error {
	switch {
	case len(args) == 1 && args[0] == "secret":
		fmt.Fprintln(stdout, trust.NewSecret())
		return nil
	case len(args) >= 2 && args[0] == "ca" && args[1] == "create":
		return createCA(args[2:], stdout)
	case len(args) >= 2 && args[0] == "cert" && args[1] == "create":
		return createNodeCert(args[2:], stdout)
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprint(stdout, tlsUsage)
		return errHelp
	default:
		fmt.Fprint(stdout, tlsUsage)
		return errors.New("sorad tls: unknown command")
	}
}

const (
	caCertName = "sorad-cluster-ca.pem"
	caKeyName  = "sorad-cluster-ca-key.pem"
)

func createCA(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sorad tls ca create", flag.ContinueOnError)
	dir := fs.String("dir", ".", "directory to write the CA into")
	days := fs.Int("days", 3650, "validity in days")
	name := fs.String("name", "sorad cluster CA", "common name of the CA")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *days < 1 {
		return fmt.Errorf("--days %d: must be at least 1", *days)
	}
	cert, key, err := trust.NewAuthority(*name, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	return writeNew(stdout, *dir, []namedPEM{{caCertName, cert, 0o644}, {caKeyName, key, 0o600}})
}

func createNodeCert(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sorad tls cert create", flag.ContinueOnError)
	dir := fs.String("dir", ".", "directory to write the certificate into")
	days := fs.Int("days", 365, "validity in days (at most the CA's)")
	node := fs.String("node", "", "node_name of the node, name@host")
	caFile := fs.String("ca", caCertName, "the CA certificate")
	caKeyFile := fs.String("ca-key", caKeyName, "the CA key")
	dns := fs.String("dns", "", "extra DNS names, comma-separated (informational: members are identified by node name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("--node is required")
	}
	if *days < 1 {
		return fmt.Errorf("--days %d: must be at least 1", *days)
	}
	caCert, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	caKey, err := os.ReadFile(*caKeyFile)
	if err != nil {
		return fmt.Errorf("--ca-key: %w", err)
	}
	var names []string
	for _, n := range strings.Split(*dns, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	cert, key, err := trust.NewNodeCertificate(caCert, caKey, *node, names, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	return writeNew(stdout, *dir, []namedPEM{{*node + ".pem", cert, 0o644}, {*node + "-key.pem", key, 0o600}})
}

type namedPEM struct {
	name string
	data []byte
	mode os.FileMode
}

// writeNew writes files into dir, refusing to overwrite any.
func writeNew(stdout io.Writer, dir string, files []namedPEM) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if _, err := fh.Write(f.data); err != nil {
			fh.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := fh.Close(); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		fmt.Fprintln(stdout, "wrote", p)
	}
	return nil
}
