// Package media is sorad's media plane: Sora's signaling and a pion/webrtc
// SFU for the channels this node is in charge of.
//
// A client connects to /signaling and sends connect; admission asks the
// cluster for the channel (redirecting the client when another node is in
// charge), and the connection sends an offer (the server is always the
// offerer, with its candidates in the SDP: it is ICE-lite and never sends
// candidate). Each publisher's tracks are forwarded to the other members
// by per-receiver down tracks (package forward), as the channel model
// (package channel) says: roles, bundle_id, simulcast layers, spotlight
// focus and paused streams. The wire messages are package signaling's.
// Notifies, pings, pushes and renegotiation follow Sora's protocol. This
// package does not serve the HTTP API; it offers the operations the API
// needs.
//
// The files by job: admission.go (connect to placed, redirected or
// refused), websocket.go (the WebSocket), signalout.go (the queue of
// messages to a client and where each goes), datachannel.go (DataChannel
// signaling), messaging.go (# labels), rpc.go (the rpc DataChannel),
// connection.go (a connection's life and goroutines), negotiation.go
// (offers and answers), publish.go (tracks published and received),
// session.go (a channel's session), notify.go, and api.go with
// layers_api.go (the operations the API calls).
package media

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media/authtoken"
	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
	"github.com/sorad/sorad/media/webhook"
)

// Cluster is what the media plane needs of the cluster: package cluster's
// *Cluster, or a fake in tests.
type Cluster interface {
	// AcquireChannel returns the node in charge of a channel, assigning it
	// (to a node placement chooses) when nobody holds it.
	AcquireChannel(ctx context.Context, channelID string, opts cluster.ChannelOptions) (cluster.Assignment, error)
	// ReleaseChannel gives up this node's assignment of a channel.
	ReleaseChannel(ctx context.Context, channelID string) error
	// InCharge reports whether this node still holds a channel, and why
	// not when it does not.
	InCharge(channelID string) (bool, string)
	// Mode is this node's mode (initial until it is a registered member).
	Mode() fsm.Mode
	// Purged reports whether this node was removed from the cluster.
	Purged() bool
	// Changes signals every change of the replicated state, and of the
	// lease.
	Changes() <-chan struct{}
	// LeaseHeld reports whether this node may serve its channels now (it
	// heard from the cluster recently), and WaitLease waits until it may.
	LeaseHeld() bool
	WaitLease(ctx context.Context) bool
	// Drain tells the peers that this node is stopping; it returns those
	// it could not tell.
	Drain(ctx context.Context) []string
	// ChannelsHeld lists the channels assigned to this node's current
	// process.
	ChannelsHeld() []string
	// Assigned reports whether a channel is assigned to some node.
	Assigned(channelID string) bool
	// RecordSession and ForgetSession record in the cluster the session
	// this node runs for a channel it holds, so that the cluster reports
	// the end of a session that dies with its node.
	RecordSession(ctx context.Context, channelID, sessionID string, created time.Time) error
	ForgetSession(ctx context.Context, channelID, sessionID string) error
}

// Config configures the media plane.
type Config struct {
	ListenAddress string   // IP of the media UDP port
	UDPPort       int      // the one UDP port every PeerConnection uses (0: any)
	PublicIPs     []string // announced instead of ListenAddress (NAT 1:1)
	Version       string   // sent in offers

	MaxMessageSize     int           // largest signaling message, bytes
	MessageRate        float64       // signaling messages per second per connection
	MessageBurst       int           // burst allowed above MessageRate
	ConnectTimeout     time.Duration // WebSocket open to connect, and offer to connected
	PingInterval       time.Duration
	PongTimeout        time.Duration
	WriteTimeout       time.Duration // one WebSocket write
	CloseGrace         time.Duration // close frame to TCP close
	ReleaseDelay       time.Duration // last connection gone to channel released in Raft
	KeyframeThrottle   time.Duration // between key frame requests to one publisher stream, and after a key frame
	NACKBufferSize     uint16        // packets kept per published video stream to answer receivers' NACKs
	MaxConnections     int           // license_max_connections
	MaxPending         int           // WebSockets open that have not been admitted yet
	MaxPendingPerIP    int           // of those, from one client address
	NewChannelRate     float64       // channels one client address may create per second
	NewChannelBurst    int           // burst allowed above NewChannelRate
	MaxMetadataSize    int           // bytes of a connection's metadata, and of its signaling_notify_metadata
	MaxChannelMetadata int           // bytes of all the metadata of a channel's connections
	// UserAgentStatsInterval is how often a client is asked for its
	// statistics (with a ping, so at least PingInterval); 0 never.
	UserAgentStatsInterval time.Duration
	// MaxUserAgentStats bounds one kept statistics report, in bytes.
	MaxUserAgentStats int
	// DataChannelCompress is whether DataChannels carry zlib payloads when
	// the connect's data_channels entry does not say.
	DataChannelCompress bool
	// DataChannelMaxBuffered bounds the unsent bytes of one DataChannel: a
	// message beyond it is dropped (messaging) or ends the connection
	// (signaling).
	DataChannelMaxBuffered int
	// MessagingMaxMessageSize is the largest message on a # label, bytes.
	MessagingMaxMessageSize int
	// MessagingRate and MessagingBurst bound the messages one connection
	// sends on its # labels, per second.
	MessagingRate  float64
	MessagingBurst int
	// Webhooks delivers the auth, session, event and stats webhooks; nil
	// sends none and admits every connect.
	Webhooks *webhook.Client
	// WebhookUpdateInterval is how often session.updated and
	// connection.updated go out.
	WebhookUpdateInterval time.Duration
	// ExternalSignalingURL is this node's signaling URL, sent in the
	// session webhooks ("" leaves it out).
	ExternalSignalingURL string
	// RecordSessions records every session in the cluster (a Raft write
	// at its start and its end), so that the end of a session that dies
	// with its node is reported, once, by the cluster: on when session
	// webhooks are.
	RecordSessions bool
	// RTPForwardNetworks are the addresses StartForwardingRtp may send to.
	RTPForwardNetworks []netip.Prefix
	// Tokens, when set, admits only connects whose metadata.access_token
	// it verifies.
	Tokens              *authtoken.Verifier
	DefaultVideoCodec   string // when the client names none
	DefaultVideoBitRate int    // kbps, when the client names none
	SendQueue           int    // signaling messages queued per connection

	// SimulcastEncodings are the encodings a simulcast sender is told to
	// send, lowest layer (r0) first.
	SimulcastEncodings []signaling.Encoding
	// SpotlightNumber is how many senders a spotlight channel focuses when
	// its first connect names no spotlight_number.
	SpotlightNumber int
	// SpotlightFocusRID and SpotlightUnfocusRID are the layers receivers
	// get from focused and unfocused senders unless they ask otherwise.
	SpotlightFocusRID, SpotlightUnfocusRID channel.RID
	// SpotlightFocusHold is the least time a focused sender keeps the focus
	// before a new speaker takes its place.
	SpotlightFocusHold time.Duration

	Logger *slog.Logger
}

// DefaultSimulcastEncodings are r0, r1 and r2 at a quarter, half and full
// resolution, all active, without bit rate caps of their own: the sender's
// video bit rate (b=AS) is shared among them by its encoder.
func DefaultSimulcastEncodings() []signaling.Encoding {
	return []signaling.Encoding{
		{RID: "r0", Active: true, ScaleResolutionDownBy: 4},
		{RID: "r1", Active: true, ScaleResolutionDownBy: 2},
		{RID: "r2", Active: true, ScaleResolutionDownBy: 1},
	}
}

func (cfg *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ConnectTimeout, 30*time.Second)
	def(&cfg.PingInterval, 5*time.Second)
	def(&cfg.PongTimeout, 15*time.Second)
	def(&cfg.WriteTimeout, 10*time.Second)
	def(&cfg.CloseGrace, time.Second)
	def(&cfg.ReleaseDelay, 5*time.Second)
	def(&cfg.KeyframeThrottle, 300*time.Millisecond)
	def(&cfg.SpotlightFocusHold, 2*time.Second)
	def(&cfg.WebhookUpdateInterval, time.Minute)
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 256 << 10
	}
	if cfg.MessageRate <= 0 {
		cfg.MessageRate = 50
	}
	if cfg.MessageBurst <= 0 {
		cfg.MessageBurst = 200
	}
	if cfg.NACKBufferSize == 0 {
		cfg.NACKBufferSize = 1024
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 500
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1000
	}
	if cfg.MaxPendingPerIP <= 0 {
		cfg.MaxPendingPerIP = 100
	}
	if cfg.NewChannelRate <= 0 {
		cfg.NewChannelRate = 5
	}
	if cfg.NewChannelBurst <= 0 {
		cfg.NewChannelBurst = 50
	}
	if cfg.MaxMetadataSize <= 0 {
		cfg.MaxMetadataSize = 64 << 10
	}
	if cfg.MaxChannelMetadata <= 0 {
		cfg.MaxChannelMetadata = 1 << 20
	}
	if cfg.DataChannelMaxBuffered <= 0 {
		cfg.DataChannelMaxBuffered = 1 << 20
	}
	if cfg.MessagingMaxMessageSize <= 0 {
		cfg.MessagingMaxMessageSize = 64 << 10
	}
	if cfg.MessagingRate <= 0 {
		cfg.MessagingRate = 500
	}
	if cfg.MessagingBurst <= 0 {
		cfg.MessagingBurst = 500
	}
	if cfg.MaxUserAgentStats <= 0 {
		cfg.MaxUserAgentStats = 256 << 10
	}
	if cfg.DefaultVideoCodec == "" {
		cfg.DefaultVideoCodec = "VP9"
	}
	if cfg.DefaultVideoBitRate <= 0 {
		cfg.DefaultVideoBitRate = 1000
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 256
	}
	if len(cfg.SimulcastEncodings) == 0 {
		cfg.SimulcastEncodings = DefaultSimulcastEncodings()
	}
	if cfg.SpotlightNumber <= 0 {
		cfg.SpotlightNumber = 1
	}
	if cfg.SpotlightFocusRID == "" {
		cfg.SpotlightFocusRID = channel.R1
	}
	if cfg.SpotlightUnfocusRID == "" {
		cfg.SpotlightUnfocusRID = channel.R0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// check validates what setDefaults cannot fix.
func (cfg *Config) check() error {
	if !signaling.IsVideoCodec(cfg.DefaultVideoCodec) {
		return fmt.Errorf("default video codec %q is not one of VP8, VP9, AV1, H264", cfg.DefaultVideoCodec)
	}
	if n := cfg.SpotlightNumber; n < channel.MinSpotlightNumber || n > channel.MaxSpotlightNumber {
		return fmt.Errorf("spotlight number %d is not %d to %d", n, channel.MinSpotlightNumber, channel.MaxSpotlightNumber)
	}
	for _, r := range []channel.RID{cfg.SpotlightFocusRID, cfg.SpotlightUnfocusRID} {
		if _, ok := channel.ParseRID(string(r)); !ok {
			return fmt.Errorf("spotlight rid %q is not none, r0, r1 or r2", r)
		}
	}
	return CheckSimulcastEncodings(cfg.SimulcastEncodings)
}

// CheckSimulcastEncodings validates the encodings a simulcast sender is
// told to send: one to three, r0 first, with sensible values.
func CheckSimulcastEncodings(encs []signaling.Encoding) error {
	if len(encs) == 0 || len(encs) > channel.Layers {
		return fmt.Errorf("%d simulcast encodings; 1 to %d (r0, r1, r2)", len(encs), channel.Layers)
	}
	for i, e := range encs {
		if e.RID != string(channel.LayerRID(i)) {
			return fmt.Errorf("simulcast encoding %d has rid %q, want %s (lowest first)", i, e.RID, channel.LayerRID(i))
		}
		if e.ScaleResolutionDownBy != 0 && e.ScaleResolutionDownBy < 1 {
			return fmt.Errorf("simulcast encoding %s: scaleResolutionDownBy %v is below 1", e.RID, e.ScaleResolutionDownBy)
		}
		if e.MaxBitrate < 0 || e.MaxFramerate < 0 {
			return fmt.Errorf("simulcast encoding %s: negative maxBitrate or maxFramerate", e.RID)
		}
	}
	return nil
}

// Media is a node's media plane.
type Media struct {
	cfg     Config
	cluster Cluster
	stats   *Stats
	engine  *engine
	log     *slog.Logger
	up      websocket.Upgrader

	ctx     context.Context
	cancel  context.CancelFunc
	pending chan struct{} // a slot per WebSocket not admitted yet
	perIP   *perIP

	mu        sync.Mutex
	sessions  map[string]*session      // by channel ID
	conns     map[string]*connection   // by connection ID, admitted
	release   map[string]*time.Timer   // pending channel releases, by channel ID
	releasing map[string]chan struct{} // releases in flight, closed when done
	admitting map[string]int           // connects being placed, by channel ID: not released under them
	serving   sync.WaitGroup           // signaling handlers and release calls
	zlib      sync.Pool                // *zlib.Writer for compressed DataChannels
	// unsupported are the webhook answer fields already reported as not
	// supported (each is logged once).
	unsupported  sync.Map
	unsupportedN atomic.Int64
	draining     atomic.Bool // stopping: no new channel here
}

// New starts the media plane: it opens the UDP port. stats may be shared
// with the cluster's load function; cl answers which node is in charge.
func New(cfg Config, cl Cluster, stats *Stats) (*Media, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	e, err := newEngine(engineConfig{
		ListenAddress: cfg.ListenAddress, UDPPort: cfg.UDPPort, PublicIPs: cfg.PublicIPs,
		// The largest DataChannel message a client may send (the SDP's
		// max-message-size): signaling, or messaging (larger messaging
		// ones up to this are dropped and counted).
		SCTPMaxMessageSize: max(cfg.MaxMessageSize, cfg.MessagingMaxMessageSize),
	})
	if err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Media{
		cfg:     cfg,
		cluster: cl,
		stats:   stats,
		engine:  e,
		log:     cfg.Logger.With("component", "media"),
		up: websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			// Sora's SDKs connect from pages of any origin; authorisation
			// is the auth webhook's job, not the Origin header's.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		ctx:       ctx,
		cancel:    cancel,
		pending:   make(chan struct{}, cfg.MaxPending),
		perIP:     newPerIP(cfg.MaxPendingPerIP, cfg.NewChannelRate, cfg.NewChannelBurst),
		sessions:  map[string]*session{},
		conns:     map[string]*connection{},
		release:   map[string]*time.Timer{},
		releasing: map[string]chan struct{}{},
		admitting: map[string]int{},
	}
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		m.fenceLoop()
	}()
	if cfg.Webhooks != nil {
		m.serving.Add(1)
		go func() {
			defer m.serving.Done()
			m.webhookLoop()
		}()
	}
	return m, nil
}

// UDPPort is the media UDP port the node listens on (useful when Config
// asked for any).
func (m *Media) UDPPort() int { return m.engine.port() }

// fenceLoop closes the sessions of channels this node is no longer in
// charge of, whenever the cluster's state changes (and once a second, in
// case a change was missed): after a partition heals, the node that lost a
// channel, or was purged, stops serving it at once. It also releases the
// channels assigned here that no client came to.
func (m *Media) fenceLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.cluster.Changes():
		case <-t.C:
		}
		m.fence()
		m.releaseUnused()
	}
}

// releaseUnused schedules the release of every channel assigned to this
// node that has no session here: a client placed here by another node
// never arrived (or left before its session started). Without this, each
// redirected connect for a new channel id would leave an assignment behind
// for good.
func (m *Media) releaseUnused() {
	held := m.cluster.ChannelsHeld()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range held {
		_, busy := m.sessions[id]
		_, scheduled := m.release[id]
		_, inFlight := m.releasing[id]
		if !busy && !scheduled && !inFlight && m.admitting[id] == 0 {
			m.scheduleRelease(id)
		}
	}
}

func (m *Media) fence() {
	if !m.cluster.LeaseHeld() {
		m.StopServing()
		return
	}
	for _, s := range m.sessionList() {
		ok, reason := m.cluster.InCharge(s.channelID)
		if ok {
			continue
		}
		members := s.snapshot()
		m.log.Warn("no longer in charge of a channel; closing its connections", "channel_id", s.channelID, "reason", reason, "connections", len(members))
		// The cluster moved the channel, and reported the end of the
		// session it recorded here.
		s.fenced.Store(true)
		for _, c := range members {
			c.close(signaling.CloseUnavailable, reason)
		}
	}
}

// reasonQuorumLost closes the clients of a node whose cluster lease ended,
// and refuses connects until it is back.
const reasonQuorumLost = "CLUSTER-QUORUM-LOST"

// StopServing closes every session of a node whose lease ended: it is cut
// off from the cluster (or leaving it), which may give its channels to
// another node once cluster_failover_timeout has passed. Their ends are
// reported once the cluster answers again (sessionEnded).
func (m *Media) StopServing() {
	for _, s := range m.sessionList() {
		members := s.snapshot()
		if len(members) == 0 {
			continue
		}
		m.log.Warn("cluster lease lost; closing a channel's connections", "channel_id", s.channelID, "connections", len(members))
		s.quorumLost.Store(true)
		for _, c := range members {
			c.close(signaling.CloseUnavailable, reasonQuorumLost)
		}
	}
}

func (m *Media) sessionList() []*session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.sessions))
}

// Stats returns the media counters.
func (m *Media) Stats() *Stats { return m.stats }

// Counters returns the figures /metrics exports.
func (m *Media) Counters() Counters { return m.stats.counters() }

// Drain prepares the node to stop while it still answers: it tells the
// cluster (no node places a new channel here any more, and this node's
// channels move as soon as it is gone), redirects connects for its own
// channels elsewhere from now on, and disconnects every client. Call it
// before the signaling listener closes.
func (m *Media) Drain() {
	if m.draining.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if missed := m.cluster.Drain(ctx); len(missed) > 0 {
		m.log.Warn("peers not told that this node is stopping; they will see it stop", "nodes", missed)
	}
	m.closeAll()
}

// closeAll closes every admitted connection with 4503 SHUTDOWN.
func (m *Media) closeAll() {
	m.mu.Lock()
	conns := slices.Collect(maps.Values(m.conns))
	m.mu.Unlock()
	for _, c := range conns {
		c.close(signaling.CloseUnavailable, "SHUTDOWN")
	}
}

// Close drains the node if that was not done, and stops the media plane.
// The channels it holds stay assigned to it (stale once it restarts, or
// taken over by the next connect elsewhere).
func (m *Media) Close() error {
	m.Drain()
	m.cancel()
	m.mu.Lock()
	for _, t := range m.release {
		t.Stop()
	}
	m.mu.Unlock()
	m.closeAll() // connections admitted while the node drained
	m.serving.Wait()
	return m.engine.close()
}

// Handler serves Sora's signaling at /signaling.
func (m *Media) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /signaling", m.serveSignaling)
	return mux
}

// leave removes a closing connection from its session: receivers drop its
// tracks, the others are told it is gone, and an empty session ends.
func (m *Media) leave(c *connection) {
	m.mu.Lock()
	delete(m.conns, c.id)
	empty, gone := c.session.leave(c)
	destroyed := empty && m.sessions[c.req.ChannelID] == c.session
	if destroyed {
		delete(m.sessions, c.req.ChannelID)
		m.stats.sessionsDestroyed.Add(1)
		c.log.Info("session destroyed")
		m.scheduleRelease(c.req.ChannelID)
	}
	m.mu.Unlock()
	if destroyed {
		m.sessionEnded(c.session)
	}
	for _, p := range gone {
		for _, r := range c.session.snapshot() {
			r.stopReceiving(p)
		}
	}
	if c.isEstablished() {
		announceDestroyed(c)
	}
}

// scheduleRelease gives the channel back to the cluster after ReleaseDelay
// unless a new session starts first. While the release is in flight, a
// connect that would start a session waits for it and is placed again
// (join): the channel may go to another node. m.mu is held.
func (m *Media) scheduleRelease(channelID string) {
	if m.ctx.Err() != nil {
		return
	}
	m.release[channelID] = time.AfterFunc(m.cfg.ReleaseDelay, func() {
		m.mu.Lock()
		if _, busy := m.sessions[channelID]; busy || m.admitting[channelID] > 0 || m.ctx.Err() != nil {
			delete(m.release, channelID)
			m.mu.Unlock()
			return
		}
		delete(m.release, channelID)
		done := make(chan struct{})
		m.releasing[channelID] = done
		m.serving.Add(1)
		m.mu.Unlock()
		defer m.serving.Done()
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
		defer cancel()
		if err := m.cluster.ReleaseChannel(ctx, channelID); err != nil {
			m.log.Warn("release channel", "channel_id", channelID, "error", err)
		}
		m.mu.Lock()
		delete(m.releasing, channelID)
		m.mu.Unlock()
		close(done)
	})
}

// Connections returns the number of admitted connections (for placement).
func (m *Media) Connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}
