package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout         = 5 * time.Second
	DefaultQueueSize       = 1024
	DefaultMaxResponseSize = 1 << 20
)

// MaxRetries above this are refused by New: every queued delivery of the
// kind waits behind one that retries.
const maxRetriesLimit = 10

// maxCloseGrace bounds how long Close lets queued deliveries finish.
const maxCloseGrace = 5 * time.Second

// Config says where each kind of webhook goes and how it is delivered.
type Config struct {
	// One URL per kind; "" turns that kind off. Only http and https URLs
	// are accepted.
	AuthURL, SessionURL, EventURL, StatsURL string

	// Timeout bounds each attempt, from connecting to reading the whole
	// answer (Sora's webhook_response_timeout). Zero means DefaultTimeout.
	Timeout time.Duration

	// MaxRetries is how many times a failed session or event delivery is
	// tried again (0, the default, as in Sora; at most 10). Auth and stats
	// webhooks are never retried.
	MaxRetries int

	// QueueSize bounds each of the session, event and stats queues. Zero
	// means DefaultQueueSize. A delivery that finds its queue full is
	// dropped and counted as failed.
	QueueSize int

	// TLS configures https URLs (custom roots, client certificate). Nil
	// means the system defaults. The Client keeps a clone.
	TLS *tls.Config

	// Common fields of every request body.
	Label, Version, NodeName string

	// LogSensitive logs metadata as is. When false, the values of the
	// keys metadata, event_metadata, session_metadata, authn_metadata,
	// authz_metadata and auth_metadata, at any depth, are logged as
	// "REDACTED". Bodies sent are never altered.
	LogSensitive bool

	// MaxResponseSize bounds the bytes read of an answer. Zero means
	// DefaultMaxResponseSize. A larger auth or session.created answer is
	// not used; other answers are read up to the bound and discarded.
	MaxResponseSize int

	// Logger receives delivery failures (warn) and deliveries (debug). Nil
	// discards.
	Logger *slog.Logger
}

// Counters are the webhook counters of Sora's GetStatsReport.
type Counters struct {
	// Allowed and denied count valid answers; successful counts both;
	// failed counts calls that got no valid answer (Auth without an
	// AuthURL is not counted).
	AuthAllowed, AuthDenied, AuthSuccessful, AuthFailed int64
	// Ignored counts calls made while the kind is off.
	SessionSuccessful, SessionFailed, SessionIgnored int64
	EventSuccessful, EventFailed, EventIgnored       int64
	StatsSuccessful, StatsFailed, StatsIgnored       int64
}

// kind is one of the four webhooks.
type kind int

const (
	kindAuth kind = iota
	kindSession
	kindEvent
	kindStats
	numKinds
)

func (k kind) String() string {
	switch k {
	case kindAuth:
		return "auth"
	case kindSession:
		return "session"
	case kindEvent:
		return "event"
	case kindStats:
		return "stats"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// LogValue logs a kind by its name.
func (k kind) LogValue() slog.Value { return slog.StringValue(k.String()) }

// endpoint is where one kind is posted.
type endpoint struct {
	kind   kind
	url    string
	host   string            // the only part of the URL that is logged
	header map[string]string // besides content-type and user-agent
}

type kindCounters struct {
	successful, failed, ignored atomic.Int64
}

// Client posts webhooks. It is safe for concurrent use.
type Client struct {
	cfg       Config // defaults applied
	userAgent string
	log       *slog.Logger
	transport *http.Transport
	http      *http.Client

	auth                    *endpoint        // nil when off
	queues                  [numKinds]*queue // nil when off; never for auth
	count                   [numKinds]kindCounters
	authAllowed, authDenied atomic.Int64

	// ctx is cancelled when Close gives up waiting: it aborts requests in
	// flight and retry waits.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.RWMutex
	closed    bool          // no more deliveries are queued
	draining  chan struct{} // closed by Close: workers finish their queue
	closeOnce sync.Once
}

// New checks cfg and starts one worker per enabled session, event and stats
// kind. Close stops them.
func New(cfg Config) (*Client, error) {
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		userAgent: "sorad",
		log:       cfg.Logger,
		draining:  make(chan struct{}),
	}
	if cfg.Version != "" {
		c.userAgent = "sorad/" + cfg.Version
	}
	urls := [numKinds]string{cfg.AuthURL, cfg.SessionURL, cfg.EventURL, cfg.StatsURL}
	var eps [numKinds]*endpoint
	for k, raw := range urls {
		ep, err := newEndpoint(kind(k), raw)
		if err != nil {
			return nil, err
		}
		eps[k] = ep
	}
	c.transport = newTransport(cfg)
	c.http = &http.Client{
		Transport: c.transport,
		// A webhook answers itself: a 3xx is returned as is, and fails.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.auth = eps[kindAuth]
	for _, k := range []kind{kindSession, kindEvent, kindStats} {
		if eps[k] == nil {
			continue
		}
		retries := 0
		if k == kindSession || k == kindEvent {
			retries = cfg.MaxRetries
		}
		q := &queue{
			endpoint: eps[k],
			retries:  retries,
			ch:       make(chan delivery, cfg.QueueSize),
			done:     make(chan struct{}),
		}
		c.queues[k] = q
		go c.run(q)
	}
	return c, nil
}

func applyDefaults(cfg *Config) error {
	switch {
	case cfg.Timeout < 0:
		return fmt.Errorf("webhook: negative timeout %v", cfg.Timeout)
	case cfg.MaxRetries < 0 || cfg.MaxRetries > maxRetriesLimit:
		return fmt.Errorf("webhook: max retries %d not in 0..%d", cfg.MaxRetries, maxRetriesLimit)
	case cfg.QueueSize < 0:
		return fmt.Errorf("webhook: negative queue size %d", cfg.QueueSize)
	case cfg.MaxResponseSize < 0:
		return fmt.Errorf("webhook: negative max response size %d", cfg.MaxResponseSize)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxResponseSize == 0 {
		cfg.MaxResponseSize = DefaultMaxResponseSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
	}
	return nil
}

// newEndpoint checks raw, the URL of kind k; "" gives nil. Errors never
// quote the URL: its query may hold a secret.
func newEndpoint(k kind, raw string) (*endpoint, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("webhook: %s webhook URL: %w", k, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("webhook: %s webhook URL: scheme %q is not http or https", k, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("webhook: %s webhook URL: no host", k)
	}
	ep := &endpoint{kind: k, url: raw, host: u.Host}
	switch k {
	case kindStats:
		ep.header = map[string]string{"sora-stats-webhook-type": "connection.rtc"}
	}
	return ep, nil
}

// newTransport speaks HTTP/1.1 only, as Sora does, with bounded waits and a
// small idle pool per receiver.
func newTransport(cfg Config) *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   cfg.Timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:        cfg.TLS,
		TLSHandshakeTimeout:    cfg.Timeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		Protocols:              protocols,
	}
}

// AuthEnabled reports whether an auth webhook URL is set.
func (c *Client) AuthEnabled() bool { return c.auth != nil }

// Counters returns a snapshot of the counters.
func (c *Client) Counters() Counters {
	s, e, st := &c.count[kindSession], &c.count[kindEvent], &c.count[kindStats]
	return Counters{
		AuthAllowed:       c.authAllowed.Load(),
		AuthDenied:        c.authDenied.Load(),
		AuthSuccessful:    c.count[kindAuth].successful.Load(),
		AuthFailed:        c.count[kindAuth].failed.Load(),
		SessionSuccessful: s.successful.Load(),
		SessionFailed:     s.failed.Load(),
		SessionIgnored:    s.ignored.Load(),
		EventSuccessful:   e.successful.Load(),
		EventFailed:       e.failed.Load(),
		EventIgnored:      e.ignored.Load(),
		StatsSuccessful:   st.successful.Load(),
		StatsFailed:       st.failed.Load(),
		StatsIgnored:      st.ignored.Load(),
	}
}

// Close stops queueing, lets the queued deliveries finish for at most
// Timeout (and at most 5 s), then aborts what is left and stops the
// workers. Auth calls in flight are aborted then too. Later deliveries
// fail. Close is idempotent.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.draining)

		grace := time.NewTimer(min(c.cfg.Timeout, maxCloseGrace))
		defer grace.Stop()
		expired := false
		for _, q := range c.queues {
			if q == nil {
				continue
			}
			if !expired {
				select {
				case <-q.done:
					continue
				case <-grace.C:
					expired = true
					c.cancel()
				}
			}
			<-q.done
		}
		c.cancel()
		c.transport.CloseIdleConnections()
	})
}

func (c *Client) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}
