package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/sorad/sorad/media/webhook"
)

// newWebhooks is the webhook delivery the configuration asks for; nil when
// no webhook URL is set.
func newWebhooks(cfg Config, log *slog.Logger) (*webhook.Client, error) {
	if cfg.AuthWebhookURL == "" && cfg.SessionWebhookURL == "" && cfg.EventWebhookURL == "" && cfg.StatsWebhookURL == "" {
		return nil, nil
	}
	tlsConfig, err := webhookTLS(cfg)
	if err != nil {
		return nil, err
	}
	h, err := webhook.New(webhook.Config{
		AuthURL:      cfg.AuthWebhookURL,
		SessionURL:   cfg.SessionWebhookURL,
		EventURL:     cfg.EventWebhookURL,
		StatsURL:     cfg.StatsWebhookURL,
		Timeout:      cfg.WebhookResponseTimeout,
		MaxRetries:   cfg.WebhookMaxRetries,
		QueueSize:    cfg.WebhookQueueSize,
		TLS:          tlsConfig,
		Label:        cfg.Label,
		Version:      version,
		NodeName:     cfg.NodeName,
		LogSensitive: cfg.SkipRedactSensitiveData,
		Logger:       log.With("component", "webhook"),
	})
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	return h, nil
}

// webhookTLS is the TLS configuration for https webhook receivers: the
// system's roots or webhook_tls_ca_file, and the client certificate of
// webhook_tls_cert_file when set.
func webhookTLS(cfg Config) (*tls.Config, error) {
	if cfg.WebhookTLSCAFile == "" && cfg.WebhookTLSCertFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.WebhookTLSCAFile != "" {
		pem, err := os.ReadFile(cfg.WebhookTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook_tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook_tls_ca_file %s: no PEM certificate in it", cfg.WebhookTLSCAFile)
		}
		c.RootCAs = pool
	}
	if cfg.WebhookTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.WebhookTLSCertFile, cfg.WebhookTLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("webhook_tls_cert_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
