// Package media is sorad's media plane: Sora's WebSocket signaling and a
// pion/webrtc SFU for the channels this node is in charge of.
//
// A client connects to /signaling and sends connect; the node asks package
// cluster for the channel (redirecting the client when another node is in
// charge), sends an offer (the server is always the offerer, with its
// candidates in the SDP: it is ICE-lite and never sends candidate), and
// forwards every publisher's RTP to every other member of the channel
// without transcoding. Notifies, pings, pushes and renegotiation follow
// Sora's protocol. This package does not serve the HTTP API; it offers the
// operations the API needs.
package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
)

// Config configures the media plane.
type Config struct {
	ListenAddress string   // IP of the media UDP port
	UDPPort       int      // the one UDP port every PeerConnection uses
	PublicIPs     []string // announced instead of ListenAddress (NAT 1:1)
	Version       string   // sent in offers

	MaxMessageSize      int           // largest signaling message, bytes
	MessageRate         float64       // signaling messages per second per connection
	MessageBurst        int           // burst allowed above MessageRate
	ConnectTimeout      time.Duration // WebSocket open to connect, and offer to connected
	PingInterval        time.Duration
	PongTimeout         time.Duration
	WriteTimeout        time.Duration // one WebSocket write
	CloseGrace          time.Duration // close frame to TCP close
	ReleaseDelay        time.Duration // last connection gone to channel released in Raft
	KeyframeThrottle    time.Duration // between key frame requests to one publisher track
	NACKBufferSize      uint16        // packets kept per outgoing stream for retransmission
	MaxConnections      int           // license_max_connections
	MaxPending          int           // WebSockets open that have not been admitted yet
	DefaultVideoCodec   string        // when the client names none
	DefaultVideoBitRate int           // kbps, when the client names none
	SendQueue           int           // signaling messages queued per connection

	Logger *slog.Logger
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
	def(&cfg.KeyframeThrottle, 500*time.Millisecond)
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
	if cfg.DefaultVideoCodec == "" {
		cfg.DefaultVideoCodec = "VP9"
	}
	if cfg.DefaultVideoBitRate <= 0 {
		cfg.DefaultVideoBitRate = 1000
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// Media is a node's media plane.
type Media struct {
	cfg     Config
	cluster *cluster.Cluster
	stats   *Stats
	engine  *engine
	log     *slog.Logger
	up      websocket.Upgrader

	ctx     context.Context
	cancel  context.CancelFunc
	pending chan struct{} // a slot per WebSocket not admitted yet

	mu       sync.Mutex
	sessions map[string]*session    // by channel ID
	conns    map[string]*connection // by connection ID, admitted
	release  map[string]*time.Timer // pending channel releases, by channel ID
	serving  sync.WaitGroup         // signaling handlers and release calls
	draining atomic.Bool            // stopping: no new channel here
}

// New starts the media plane: it opens the UDP port. stats may be shared
// with the cluster's load function; cl answers which node is in charge.
func New(cfg Config, cl *cluster.Cluster, stats *Stats) (*Media, error) {
	cfg.setDefaults()
	if !videoCodecs[cfg.DefaultVideoCodec] {
		return nil, fmt.Errorf("media: default video codec %q is not one of VP8, VP9, AV1, H264", cfg.DefaultVideoCodec)
	}
	e, err := newEngine(engineConfig{ListenAddress: cfg.ListenAddress, UDPPort: cfg.UDPPort, PublicIPs: cfg.PublicIPs, NACKBufferSize: cfg.NACKBufferSize})
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
		ctx:      ctx,
		cancel:   cancel,
		pending:  make(chan struct{}, cfg.MaxPending),
		sessions: map[string]*session{},
		conns:    map[string]*connection{},
		release:  map[string]*time.Timer{},
	}
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		m.fenceLoop()
	}()
	return m, nil
}

// fenceLoop closes the sessions of channels this node is no longer in
// charge of, whenever the cluster's state changes (and once a second, in
// case a change was missed): after a partition heals, the node that lost a
// channel, or was purged, stops serving it at once.
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
	}
}

func (m *Media) fence() {
	m.mu.Lock()
	sessions := make([]*session, 0, len(m.sessions))
	for _, s := range m.sessions {
		sessions = append(sessions, s)
	}
	m.mu.Unlock()
	for _, s := range sessions {
		ok, reason := m.cluster.InCharge(s.channelID)
		if ok {
			continue
		}
		members := s.snapshot()
		m.log.Warn("no longer in charge of a channel; closing its connections", "channel_id", s.channelID, "reason", reason, "connections", len(members))
		for _, c := range members {
			c.close(closeUnavailable, reason)
		}
	}
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
	conns := make([]*connection, 0, len(m.conns))
	for _, c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		c.close(closeUnavailable, "SHUTDOWN")
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

func (m *Media) serveSignaling(w http.ResponseWriter, r *http.Request) {
	if m.ctx.Err() != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	// Sockets that have not sent an admitted connect are bounded in number
	// (and each by ConnectTimeout).
	select {
	case m.pending <- struct{}{}:
	default:
		http.Error(w, "too many signaling connections waiting to connect", http.StatusServiceUnavailable)
		return
	}
	admitted := false
	defer func() {
		if !admitted {
			<-m.pending
		}
	}()
	m.serving.Add(1)
	defer m.serving.Done()
	ws, err := m.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	defer ws.Close()
	limiter := rate.NewLimiter(rate.Limit(m.cfg.MessageRate), m.cfg.MessageBurst)
	_ = ws.SetReadDeadline(time.Now().Add(m.cfg.ConnectTimeout))
	b, err := m.readMessage(ws, limiter)
	if err != nil {
		refuse(ws, err)
		return
	}
	req, err := parseConnect(b)
	if err != nil {
		refuse(ws, err)
		return
	}
	_ = ws.SetReadDeadline(time.Time{})
	c, err := m.admit(r.Context(), ws, req)
	if err != nil {
		m.stats.connectionsFailed.Add(1)
		refuse(ws, err)
		return
	}
	if c == nil {
		return // redirected, or failed and closed
	}
	admitted = true
	<-m.pending // from here on license_max_connections bounds it
	c.serve(limiter)
}

// refusal is a connect the node turns away for a reason of its own (mode,
// license, cluster): close code 4503.
type refusal struct{ reason string }

// errNoNewSession: join found no session to join, and this node may not
// start one (it is not normal, or draining).
var errNoNewSession = errors.New("this node starts no new session")

func (e *refusal) Error() string { return "refused: " + e.reason }

// refuse closes a WebSocket that never became a connection.
func refuse(ws *websocket.Conn, err error) {
	code, reason := closeSignaling, "INVALID-MESSAGE"
	var se *signalingError
	var re *refusal
	switch {
	case errors.As(err, &se):
		reason = se.Reason
	case errors.As(err, &re):
		code, reason = closeUnavailable, re.reason
	case isTimeout(err):
		code, reason = closeTimeout, "CONNECT-TIMEOUT"
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncateReason(reason)), time.Now().Add(time.Second))
	// Let the client read the close frame before the TCP connection goes.
	_ = ws.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// readMessage reads one text message of at most MaxMessageSize bytes.
// Binary, oversized and too frequent messages are signaling errors.
func (m *Media) readMessage(ws *websocket.Conn, limiter *rate.Limiter) ([]byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return nil, err
	}
	if !limiter.Allow() {
		return nil, sigErr("TOO-MANY-MESSAGES", "more than %.0f messages per second", m.cfg.MessageRate)
	}
	if typ != websocket.TextMessage {
		return nil, sigErr("BINARY-MESSAGE", "signaling messages are JSON text frames")
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(m.cfg.MaxMessageSize)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > m.cfg.MaxMessageSize {
		return nil, sigErr("MESSAGE-TOO-LARGE", "larger than %d bytes", m.cfg.MaxMessageSize)
	}
	return b, nil
}

// admit decides whether this node serves the connect: it redirects the
// client to the node in charge, refuses it, or creates the connection,
// joins its session and sends the offer. It returns nil, nil when it has
// dealt with the client itself (a redirect, or a connection that failed to
// start).
func (m *Media) admit(ctx context.Context, ws *websocket.Conn, req ConnectRequest) (*connection, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
	defer cancel()
	mode, err := m.waitReady(ctx)
	if err != nil {
		return nil, err
	}
	var (
		c      *connection
		tracks []*publishedTrack
	)
	for attempt := 0; ; attempt++ {
		a, err := m.place(ctx, req, mode)
		if err != nil {
			return nil, err
		}
		if !a.Local {
			m.redirect(ws, req, a.Owner)
			return nil, nil
		}
		c, tracks, err = m.join(ws, req)
		if !errors.Is(err, errNoNewSession) {
			if err != nil {
				return nil, err
			}
			break
		}
		mode = m.cluster.Mode()
		if attempt > 0 {
			return nil, m.refusal(mode)
		}
		// Admitted as a joiner of a session that ended meanwhile: place
		// the connect again, as the new session it now is.
	}
	if err := c.start(tracks); err != nil {
		// The connection existed: close it (which tells the client) and
		// count it as a connection that failed, not as a refusal.
		c.log.Error("start connection", "error", err)
		c.close(closeSignaling, "SDP-GENERATION-ERROR")
		c.teardown()
		return nil, nil
	}
	return c, nil
}

// waitReady waits, within ctx, until this node is a registered member of a
// cluster (a node just restarted registers again within a moment), and
// returns its mode then. A purged node, or one still not ready when ctx
// ends, refuses.
func (m *Media) waitReady(ctx context.Context) (fsm.Mode, error) {
	for {
		if m.cluster.Purged() {
			return "", &refusal{"NODE-PURGED"}
		}
		if mode := m.cluster.Mode(); mode != fsm.ModeInitial {
			return mode, nil
		}
		select {
		case <-ctx.Done():
			return "", &refusal{"NODE-NOT-READY"}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// place finds the node for a connect according to this node's mode: a
// channel held elsewhere goes there whatever the mode; a normal node serves
// its own channels; a block_new_session node serves only joiners of its live
// sessions and hands a channel it holds without one to a normal node; a
// block_new_connection node serves nothing of its own; a draining node
// hands its channels over like a block_new_session node without sessions.
// New channels never land on a node that is not normal, or is draining
// (placement skips it).
func (m *Media) place(ctx context.Context, req ConnectRequest, mode fsm.Mode) (cluster.Assignment, error) {
	draining := m.draining.Load()
	opts := cluster.ChannelOptions{Multistream: true, Spotlight: req.Spotlight}
	a, err := m.cluster.AcquireChannel(ctx, req.ChannelID, opts)
	if err != nil {
		m.log.Warn("cannot place channel", "channel_id", req.ChannelID, "error", err)
		return a, m.refusal(mode)
	}
	switch {
	case !a.Local, mode == fsm.ModeNormal && !draining:
		return a, nil
	case mode == fsm.ModeBlockNewSession && !draining && m.hasSession(req.ChannelID):
		return a, nil
	case mode == fsm.ModeBlockNewSession, draining:
		if err := m.cluster.ReleaseChannel(ctx, req.ChannelID); err != nil {
			m.log.Warn("hand over channel", "channel_id", req.ChannelID, "error", err)
			return a, m.refusal(mode)
		}
		a, err = m.cluster.AcquireChannel(ctx, req.ChannelID, opts)
		if err != nil || a.Local {
			return a, m.refusal(mode)
		}
		return a, nil
	default:
		return a, m.refusal(mode)
	}
}

// refusal is why this node, in mode, turns a connect away.
func (m *Media) refusal(mode fsm.Mode) error {
	switch {
	case m.draining.Load():
		return &refusal{"SHUTDOWN"}
	case mode == fsm.ModeNormal:
		return &refusal{"CLUSTER-UNAVAILABLE"}
	default:
		return &refusal{modeReason(mode)}
	}
}

func modeReason(mode fsm.Mode) string {
	return strings.ToUpper(strings.ReplaceAll(string(mode), "_", "-"))
}

// redirect sends the client to the node in charge of its channel.
func (m *Media) redirect(ws *websocket.Conn, req ConnectRequest, owner fsm.Node) {
	m.log.Info("redirecting connect", "channel_id", req.ChannelID, "node_in_charge", owner.Name, "location", owner.ExternalSignalingURL)
	_ = ws.SetWriteDeadline(time.Now().Add(m.cfg.WriteTimeout))
	_ = ws.WriteJSON(map[string]string{"type": "redirect", "location": owner.ExternalSignalingURL})
	// The client closes this socket itself and reconnects to location.
	_ = ws.SetReadDeadline(time.Now().Add(m.cfg.ConnectTimeout))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func (m *Media) hasSession(channelID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.sessions[channelID]
	return ok
}

// join admits a connection to its channel's session, creating the session
// when it is the first, within license_max_connections.
func (m *Media) join(ws *websocket.Conn, req ConnectRequest) (*connection, []*publishedTrack, error) {
	pc, err := m.engine.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, nil, fmt.Errorf("new peer connection: %w", err)
	}
	id := newID()
	ctx, cancel := context.WithCancel(m.ctx)
	c := &connection{
		m: m, id: id, req: req, client: req.ClientID, bundle: req.BundleID,
		ws: ws, pc: pc, created: time.Now(),
		log:    m.log.With("channel_id", req.ChannelID, "connection_id", id),
		ctx:    ctx,
		cancel: cancel,
		out:    make(chan []byte, m.cfg.SendQueue),
		down:   map[string]*downTrack{},
		// The first offer is pending until it is sent: tracks added before
		// it go into it rather than into a re-offer.
		offerPending: true,
		notifyMeta:   req.SignalingNotifyMetadata,
	}
	if c.client == "" {
		c.client = id
	}
	if c.bundle == "" {
		c.bundle = id
	}
	c.lastPong.Store(time.Now().UnixNano())

	m.mu.Lock()
	if len(m.conns) >= m.cfg.MaxConnections {
		m.mu.Unlock()
		cancel()
		_ = pc.Close()
		return nil, nil, &refusal{"LICENSE-MAX-CONNECTIONS"}
	}
	s, ok := m.sessions[req.ChannelID]
	if !ok && (m.draining.Load() || m.cluster.Mode() != fsm.ModeNormal) {
		m.mu.Unlock()
		cancel()
		_ = pc.Close()
		return nil, nil, errNoNewSession
	}
	if !ok {
		s = newSession(req.ChannelID)
		m.sessions[req.ChannelID] = s
		m.stats.sessionsCreated.Add(1)
		c.log.Info("session created", "session_id", s.id)
	}
	if t, ok := m.release[req.ChannelID]; ok {
		t.Stop()
		delete(m.release, req.ChannelID)
	}
	c.session = s
	m.conns[id] = c
	tracks := s.join(c)
	m.mu.Unlock()
	m.stats.connectionsCreated.Add(1)
	m.stats.connectionsOngoing.Add(1)
	return c, tracks, nil
}

// start sets up the PeerConnection and sends the offer.
func (c *connection) start(tracks []*publishedTrack) error {
	c.pc.OnConnectionStateChange(c.onConnectionState)
	c.pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { c.onTrack(t) })
	// Upstream m-lines first: the SDKs attach their tracks to the first
	// transceivers of each kind.
	if c.req.Role.sends() {
		if c.req.Audio.Enabled {
			if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return fmt.Errorf("audio transceiver: %w", err)
			}
		}
		if c.req.Video.Enabled {
			tr, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
			if err != nil {
				return fmt.Errorf("video transceiver: %w", err)
			}
			if err := tr.SetCodecPreferences(videoCodecsPreferring(c.videoCodec())); err != nil {
				return fmt.Errorf("video codec: %w", err)
			}
		}
	}
	for _, t := range tracks {
		c.receive(t)
	}
	if len(c.pc.GetTransceivers()) == 0 {
		// A receiver in a channel with nothing to forward yet still needs
		// media sections to carry ICE and DTLS. Placeholders that ask the
		// client to send get answered inactive; forwarded tracks come in
		// re-offers.
		if err := c.addPlaceholders(); err != nil {
			return err
		}
	}
	c.spawn(c.writeLoop)
	c.spawn(c.pingLoop)
	c.negMu.Lock()
	c.offerPending = false
	c.offerLocked("offer", c.offerFields())
	c.negMu.Unlock()
	return nil
}

func (c *connection) addPlaceholders() error {
	kinds := []webrtc.RTPCodecType{}
	if c.req.Audio.Enabled || !c.req.Video.Enabled {
		kinds = append(kinds, webrtc.RTPCodecTypeAudio)
	}
	if c.req.Video.Enabled {
		kinds = append(kinds, webrtc.RTPCodecTypeVideo)
	}
	for _, k := range kinds {
		if _, err := c.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return fmt.Errorf("placeholder %s transceiver: %w", k, err)
		}
	}
	return nil
}

// videoCodecsPreferring lists every video codec with first first. The
// client sends with the first codec it supports, and the other codecs stay
// negotiated: pion keeps only the codecs of a connection's first answer,
// and tracks forwarded later may be in any of them.
func videoCodecsPreferring(first string) []webrtc.RTPCodecParameters {
	out := []webrtc.RTPCodecParameters{codecs[first]}
	for _, name := range videoCodecOrder {
		if name != first {
			out = append(out, codecs[name])
		}
	}
	return out
}

// videoCodec is the codec this connection sends video in.
func (c *connection) videoCodec() string {
	if c.req.Video.CodecType != "" {
		return c.req.Video.CodecType
	}
	return c.m.cfg.DefaultVideoCodec
}

// videoBitRate is the kbps this connection may send video at.
func (c *connection) videoBitRate() int {
	if c.req.Video.BitRate > 0 {
		return c.req.Video.BitRate
	}
	return c.m.cfg.DefaultVideoBitRate
}

// offerFields are the fields of the first offer besides type, sdp and mid.
func (c *connection) offerFields() map[string]any {
	f := map[string]any{
		"connection_id":               c.id,
		"client_id":                   c.client,
		"bundle_id":                   c.bundle,
		"session_id":                  c.session.id,
		"channel_id":                  c.req.ChannelID,
		"config":                      map[string]any{"iceServers": []any{}, "iceTransportPolicy": "all"},
		"metadata":                    nil, // what an auth webhook returns; there is none yet
		"version":                     c.m.cfg.Version,
		"multistream":                 true,
		"simulcast":                   false,
		"spotlight":                   false,
		"data_channel_signaling":      false,
		"ignore_disconnect_websocket": false,
		"audio":                       c.req.Audio.Enabled,
		"video":                       c.req.Video.Enabled,
	}
	if c.req.Audio.Enabled {
		f["audio_codec_type"] = "OPUS"
	}
	if c.req.Video.Enabled {
		f["video_codec_type"] = c.videoCodec()
		f["video_bit_rate"] = c.videoBitRate()
	}
	return f
}

// serve reads the client's messages until the connection ends, then tears
// it down. It runs on the WebSocket handler's goroutine, which owns c.
func (c *connection) serve(limiter *rate.Limiter) {
	established := time.AfterFunc(c.m.cfg.ConnectTimeout, func() {
		if !c.isEstablished() {
			c.close(closeTimeout, "ICE-CONNECTION-TIMEOUT")
		}
	})
	defer established.Stop()
	for {
		b, err := c.m.readMessage(c.ws, limiter)
		if err == nil {
			err = c.handle(b)
		}
		var se *signalingError
		switch {
		case err == nil:
			continue
		case errors.As(err, &se):
			c.close(closeSignaling, se.Reason)
		case c.ctx.Err() == nil:
			// The client went away without a disconnect.
			c.close(closeTimeout, "WEBSOCKET-CLOSED")
		}
		break
	}
	c.teardown()
}

// teardown finishes a closed connection: it stops the PeerConnection and
// waits for every goroutine the connection started.
func (c *connection) teardown() {
	c.goMu.Lock()
	c.stopped = true
	c.goMu.Unlock()
	if err := c.pc.Close(); err != nil {
		c.log.Debug("close peer connection", "error", err)
	}
	c.wg.Wait()
	_ = c.ws.Close()
	m := c.m
	m.stats.connectionsOngoing.Add(-1)
	m.stats.connectionsDestroyed.Add(1)
	if at := c.connectedAt.Load(); at != 0 {
		m.stats.durationMicros.Add(time.Now().UnixMicro() - at)
	} else {
		m.stats.connectionsFailed.Add(1)
	}
}

// leave removes a closing connection from its session: receivers drop its
// tracks, the others are told it is gone, and an empty session ends.
func (m *Media) leave(c *connection) {
	m.mu.Lock()
	delete(m.conns, c.id)
	empty, gone := c.session.leave(c)
	if empty && m.sessions[c.req.ChannelID] == c.session {
		delete(m.sessions, c.req.ChannelID)
		m.stats.sessionsDestroyed.Add(1)
		c.log.Info("session destroyed", "session_id", c.session.id)
		m.scheduleRelease(c.req.ChannelID)
	}
	m.mu.Unlock()
	for _, t := range gone {
		for _, r := range c.session.snapshot() {
			r.stopReceiving(t)
		}
	}
	if c.isEstablished() {
		m.announceDestroyed(c)
	}
}

// scheduleRelease gives the channel back to the cluster after ReleaseDelay
// unless a new session starts first. m.mu is held.
func (m *Media) scheduleRelease(channelID string) {
	if m.ctx.Err() != nil {
		return
	}
	m.release[channelID] = time.AfterFunc(m.cfg.ReleaseDelay, func() {
		m.mu.Lock()
		if _, busy := m.sessions[channelID]; busy || m.ctx.Err() != nil {
			m.mu.Unlock()
			return
		}
		delete(m.release, channelID)
		m.serving.Add(1)
		m.mu.Unlock()
		defer m.serving.Done()
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
		defer cancel()
		if err := m.cluster.ReleaseChannel(ctx, channelID); err != nil {
			m.log.Warn("release channel", "channel_id", channelID, "error", err)
		}
		// A connect may have started a session while the release was in
		// flight: hold the channel again for it.
		if m.hasSession(channelID) {
			if _, err := m.cluster.AcquireChannel(ctx, channelID, cluster.ChannelOptions{Multistream: true}); err != nil {
				m.log.Warn("re-acquire channel after release", "channel_id", channelID, "error", err)
			}
		}
	})
}

// Connections returns the number of admitted connections (for placement).
func (m *Media) Connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}
