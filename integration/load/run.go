package load

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sorad/sorad/integration/soraclient"
)

const (
	// maxJoinsInFlight bounds the connects under way at once, below
	// sorad's default signaling_max_pending_connections_per_ip (100).
	maxJoinsInFlight = 64
	// closeParallel clients disconnect at once at the end, each within
	// disconnectTimeout.
	closeParallel     = 32
	disconnectTimeout = 2 * time.Second
	progressInterval  = time.Second
)

// Roles of the clients.
const (
	RolePublisher  = "publisher"
	RoleSubscriber = "subscriber"
)

// member is one client of the load, planned or joined.
type member struct {
	index   int // in the join order
	role    string
	channel int
	url     string // contacted first

	// Set once joined, under runner.mu.
	client   *soraclient.Client
	joinedAt time.Time
	join     time.Duration
}

// runner is one run of a load.
type runner struct {
	cfg     Config
	urls    []string
	members []*member // in join order

	joins    sync.WaitGroup
	inFlight chan struct{}
	joinedN  atomic.Int64 // joins completed, for the joins per second

	mu       sync.Mutex
	joined   []*member
	started  map[string]int // role -> connects begun
	failures map[string]int // reason -> connects that failed
	failedBy map[string]int // role -> connects that failed
}

// Run runs the load cfg describes (defaults applied) until its duration
// ends or ctx is cancelled, printing a progress line to progress every
// second (nil: none), and returns the report of what it saw. Every client
// is disconnected and closed before Run returns. It fails only when the
// load cannot start (a bad configuration, no URL to connect to); connects
// that fail are in the report.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	urls := cfg.URLs
	if len(urls) == 0 {
		var err error
		if urls, err = DiscoverURLs(ctx, cfg.APIURL, cfg.tlsConfig()); err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
	}
	r := &runner{
		cfg:      cfg,
		urls:     urls,
		inFlight: make(chan struct{}, maxJoinsInFlight),
		started:  map[string]int{},
		failures: map[string]int{},
		failedBy: map[string]int{},
	}
	r.plan()

	start := time.Now()
	runCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()
	var progressDone sync.WaitGroup
	if progress != nil {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			r.progressLoop(runCtx, start, progress)
		}()
	}
	r.joinAll(runCtx)
	joined := make(chan struct{})
	go func() { // ends with the joins, which end with runCtx at the latest
		r.joins.Wait()
		close(joined)
	}()
	var first *sample
	select {
	case <-joined:
		if runCtx.Err() == nil && len(r.joinedMembers()) > 0 {
			s := r.take(runCtx)
			first = &s
		}
	case <-runCtx.Done():
	}
	<-runCtx.Done()
	<-joined
	progressDone.Wait()
	end := time.Now()
	rep := r.report(start, end, ctx.Err() != nil)
	if first != nil {
		// The run's context has ended; the servers are read once more
		// while every client is still connected.
		rep.Steady = steady(*first, r.take(context.Background()))
	}
	r.closeAll()
	return rep, nil
}

// plan lists the clients channel by channel, publishers first; client i
// contacts URL i mod len(URLs). They join publishers first (channel 0's,
// channel 1's, ...), then subscribers round-robin over the channels, so
// every channel has its publishers before its subscribers arrive.
func (r *runner) plan() {
	per := r.cfg.Publishers + r.cfg.Subscribers
	at := func(ch, j int, role string) *member {
		i := ch*per + j
		return &member{index: i, role: role, channel: ch, url: r.urls[i%len(r.urls)]}
	}
	for ch := range r.cfg.Channels {
		for j := range r.cfg.Publishers {
			r.members = append(r.members, at(ch, j, RolePublisher))
		}
	}
	for j := range r.cfg.Subscribers {
		for ch := range r.cfg.Channels {
			r.members = append(r.members, at(ch, r.cfg.Publishers+j, RoleSubscriber))
		}
	}
}

// joinAll starts the connects at the join rate, at most maxJoinsInFlight at
// once, until all have started or ctx ends.
func (r *runner) joinAll(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / r.cfg.JoinRate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i, m := range r.members {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
		select {
		case r.inFlight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.mu.Lock()
		r.started[m.role]++
		r.mu.Unlock()
		r.joins.Add(1)
		go func() {
			defer r.joins.Done()
			defer func() { <-r.inFlight }()
			r.joinOne(ctx, m)
		}()
	}
}

// joinOne connects one client; a connect the end of the run cut short is
// neither joined nor failed.
func (r *runner) joinOne(ctx context.Context, m *member) {
	jctx, cancel := context.WithTimeout(ctx, r.cfg.JoinTimeout)
	defer cancel()
	begin := time.Now()
	c, err := soraclient.Connect(jctx, r.options(m))
	took := time.Since(begin)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		if c != nil {
			_ = c.Close()
		}
		r.started[m.role]--
	case err != nil:
		r.failures[failureReason(err)]++
		r.failedBy[m.role]++
	default:
		m.client, m.joinedAt, m.join = c, time.Now(), took
		r.joined = append(r.joined, m)
		r.joinedN.Add(1)
	}
}

// options are the connect options of a member.
func (r *runner) options(m *member) soraclient.Options {
	cfg := r.cfg
	o := soraclient.Options{
		SignalingURL:     m.url,
		ChannelID:        cfg.channelID(m.channel),
		Role:             "recvonly",
		Audio:            cfg.Audio,
		Video:            cfg.Video,
		VideoBitrateKbps: cfg.VideoKbps,
		AudioBitrateKbps: cfg.AudioKbps,
		Simulcast:        cfg.Simulcast,
		TLSConfig:        cfg.tlsConfig(),
		ICEIPFilter:      cfg.iceFilter(),
	}
	if len(cfg.Metadata) > 0 {
		o.Metadata = cfg.Metadata
	}
	extra := map[string]any{}
	if m.role == RolePublisher {
		o.Role = "sendonly"
		if cfg.Video {
			o.VideoCodec = cfg.VideoCodec
			extra["video"] = map[string]any{"codec_type": cfg.VideoCodec, "bit_rate": cfg.VideoKbps}
		}
		if cfg.Audio {
			extra["audio"] = map[string]any{"codec_type": "OPUS", "bit_rate": cfg.AudioKbps}
		}
	} else if cfg.SimulcastRID != "" {
		extra["simulcast_rid"] = cfg.SimulcastRID
	}
	if len(extra) > 0 {
		o.Extra = extra
	}
	return o
}

func (c Config) tlsConfig() *tls.Config {
	if !c.InsecureSkipVerify {
		return nil
	}
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for it (-insecure)
}

// failureReason groups a failed connect: the close code and reason the
// server gave, else what went wrong.
func failureReason(err error) string {
	var ce *soraclient.CloseError
	switch {
	case errors.As(err, &ce) && ce.Reason != "":
		return fmt.Sprintf("%d %s", ce.Code, ce.Reason)
	case errors.As(err, &ce):
		return fmt.Sprintf("%d (no reason)", ce.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "JOIN-TIMEOUT"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, websocket.ErrBadHandshake):
		return "websocket handshake refused"
	case errors.Is(err, soraclient.ErrClosed):
		return "signaling closed without a close frame"
	}
	var re *soraclient.RedirectError
	if errors.As(err, &re) {
		return "redirect not followed"
	}
	const maxLen = 120
	msg := err.Error()
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "..."
	}
	return msg
}

// closedReason is why the server closed a joined client's signaling, or ""
// while it is open.
func closedReason(c *soraclient.Client) string {
	select {
	case <-c.Closed():
	default:
		return ""
	}
	if ci := c.CloseInfo(); ci != nil {
		if ci.Reason == "" {
			return fmt.Sprintf("%d (no reason)", ci.Code)
		}
		return fmt.Sprintf("%d %s", ci.Code, ci.Reason)
	}
	return "closed without a close frame"
}

// joinedMembers is a copy of the joined members.
func (r *runner) joinedMembers() []*member {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*member(nil), r.joined...)
}

// closeAll disconnects every joined client, closedParallel at a time.
func (r *runner) closeAll() {
	sem := make(chan struct{}, closeParallel)
	var wg sync.WaitGroup
	for _, m := range r.joinedMembers() {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
			_, _ = m.client.Disconnect(ctx)
			cancel()
			_ = m.client.Close()
		}()
	}
	wg.Wait()
}

// DiscoverURLs asks a Sora API endpoint for its cluster's nodes
// (ListClusterNodes) and returns the external_signaling_url of every
// connected node.
func DiscoverURLs(ctx context.Context, apiURL string, tlsConfig *tls.Config) ([]string, error) {
	nodes, err := listClusterNodes(ctx, apiURL, tlsConfig)
	if err != nil {
		return nil, fmt.Errorf("discover signaling URLs: %w", err)
	}
	var urls []string
	for _, n := range nodes {
		if n.Connected && n.ExternalSignalingURL != "" {
			urls = append(urls, n.ExternalSignalingURL)
		}
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("discover signaling URLs: %s lists no connected node with an external_signaling_url", apiURL)
	}
	if len(urls) > MaxURLs {
		urls = urls[:MaxURLs]
	}
	return urls, nil
}

// kbps is a bit rate from payload bytes over a time.
func kbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / 1000 / d.Seconds()
}

// percentile is the nearest-rank q-quantile (0 < q <= 1) of sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

type clusterNode struct {
	NodeName             string `json:"node_name"`
	Connected            bool   `json:"connected"`
	ExternalSignalingURL string `json:"external_signaling_url"`
}

// listClusterNodes decodes ListClusterNodes.
func listClusterNodes(ctx context.Context, apiURL string, tlsConfig *tls.Config) ([]clusterNode, error) {
	body, err := apiCall(ctx, apiURL, "Sora_20211215.ListClusterNodes", tlsConfig)
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	if err := json.Unmarshal(body, &nodes); err != nil {
		return nil, fmt.Errorf("ListClusterNodes: %w", err)
	}
	return nodes, nil
}
