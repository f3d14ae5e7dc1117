package media

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media/authtoken"
	"github.com/sorad/sorad/media/signaling"
)

// Admission: from a connect to a connection that has sent its offer, a
// redirect to the node in charge, or a refusal. The policy (which verdict
// in which mode) is package cluster's Decide; this file carries it out.

// refusal is a connect the node turns away for a reason of its own (mode,
// license, cluster): close code 4503.
type refusal struct{ reason string }

func (e *refusal) Error() string { return "refused: " + e.reason }

// forbidden: the connect did not prove it may join its channel (its access
// token, when the node checks tokens). The socket closes with 4403.
type forbidden struct{ reason string }

func (e *forbidden) Error() string { return "forbidden: " + e.reason }

// errNoNewSession: join found no session to join, and this node may not
// start one (it is not normal, or draining).
var errNoNewSession = errors.New("this node starts no new session")

// releaseInFlight: join found no session, and this node is releasing the
// channel in the cluster; done is closed when the release is over.
type releaseInFlight struct{ done <-chan struct{} }

func (*releaseInFlight) Error() string { return "the channel is being released" }

// maxPlacements bounds how often one connect is placed again (a session
// that ended, a release in flight) before it is refused.
const maxPlacements = 3

// admit decides whether this node serves the connect: it redirects the
// client to the node in charge, refuses it, or creates the connection,
// joins its session and sends the offer. It returns nil, nil when it has
// dealt with the client itself (a redirect, or a connection that failed to
// start).
func (m *Media) admit(ctx context.Context, ws *websocket.Conn, limiter *rate.Limiter, req signaling.ConnectRequest, ip string) (*connection, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout)
	defer cancel()
	if err := m.checkMetadata(req); err != nil {
		return nil, err
	}
	if err := m.checkToken(&req); err != nil {
		return nil, err
	}
	mode, err := m.waitReady(ctx)
	if err != nil {
		return nil, err
	}
	if !m.waitLease(ctx) {
		return nil, &refusal{reasonQuorumLost}
	}
	if !m.hasSession(req.ChannelID) && !m.cluster.Assigned(req.ChannelID) && !m.perIP.allowNewChannel(ip, time.Now()) {
		m.log.Warn("refused a connect: too many new channels from one address", "channel_id", req.ChannelID, "client_ip", ip)
		return nil, &refusal{"TOO-MANY-NEW-CHANNELS"}
	}
	m.mu.Lock()
	m.admitting[req.ChannelID]++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.admitting[req.ChannelID]--; m.admitting[req.ChannelID] <= 0 {
			delete(m.admitting, req.ChannelID)
		}
		m.mu.Unlock()
	}()
	var (
		c          *connection
		pubs       []*published
		id         = newID()
		g          grant
		authorized bool
	)
	for attempt := 0; c == nil; attempt++ {
		if attempt == maxPlacements {
			return nil, m.refusal(mode)
		}
		a, err := m.place(ctx, req, mode)
		if err != nil {
			return nil, err
		}
		if !a.Local {
			m.redirect(ws, req, a.Owner)
			return nil, nil
		}
		if !authorized {
			// Once per admitted connect, on the node that serves it.
			if g, err = m.authorize(ctx, &req, id); err != nil {
				return nil, err
			}
			authorized = true
		}
		c, pubs, err = m.join(ws, limiter, req, id, g)
		var rel *releaseInFlight
		switch {
		case errors.As(err, &rel):
			// This node is giving the channel back: place the connect
			// again once it has.
			select {
			case <-rel.done:
			case <-ctx.Done():
				return nil, m.refusal(mode)
			}
		case errors.Is(err, errNoNewSession):
			// Admitted as a joiner of a session that ended meanwhile:
			// place the connect again, as the new session it now is.
			mode = m.cluster.Mode()
		case err != nil:
			return nil, err
		}
	}
	if err := c.start(pubs); err != nil {
		// The connection existed: close it (which tells the client) and
		// count it as a connection that failed, not as a refusal.
		c.log.Error("start connection", "error", err)
		c.close(signaling.CloseSignaling, "SDP-GENERATION-ERROR")
		c.teardown()
		return nil, nil
	}
	return c, nil
}

// checkMetadata bounds what one connect may make the node keep and send to
// every member of its channel.
func (m *Media) checkMetadata(req signaling.ConnectRequest) error {
	for _, f := range []struct {
		name string
		v    []byte
	}{{"metadata", req.Metadata}, {"signaling_notify_metadata", req.SignalingNotifyMetadata}} {
		if len(f.v) > m.cfg.MaxMetadataSize {
			return signaling.Errorf("METADATA-TOO-LARGE", "%s is %d bytes; at most %d are accepted", f.name, len(f.v), m.cfg.MaxMetadataSize)
		}
	}
	return nil
}

// checkToken admits a connect by the signed token in its
// metadata.access_token when the node checks tokens. The token is taken out
// of the metadata, so other members and listings never see it; a client_id
// the token binds becomes the connection's when the connect names none.
func (m *Media) checkToken(req *signaling.ConnectRequest) error {
	if m.cfg.Tokens == nil {
		return nil
	}
	token, rest := authtoken.AccessToken(req.Metadata)
	claims, err := m.cfg.Tokens.Verify(token, authtoken.Connect{ChannelID: req.ChannelID, Role: string(req.Role), ClientID: req.ClientID})
	if err != nil {
		m.log.Info("connect refused by its access token", "channel_id", req.ChannelID, "error", err)
		var r *authtoken.Refusal
		if errors.As(err, &r) {
			return &forbidden{r.Reason}
		}
		return &forbidden{"ACCESS-TOKEN-INVALID"}
	}
	req.Metadata = rest
	if req.ClientID == "" {
		req.ClientID = claims.ClientID
	}
	return nil
}

// metadataSize is what a connection's metadata weighs in its channel's
// notifications.
func metadataSize(c *connection) int { return len(c.req.Metadata) + len(c.notifyMetadata()) }

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

// leaseWait bounds how long a connect waits for this node's cluster lease:
// a node just started, or back from a short cut, has it within a renewal (a
// quarter of cluster_lease_timeout).
const leaseWait = time.Second

// waitLease waits, within ctx and leaseWait, for this node's cluster lease.
func (m *Media) waitLease(ctx context.Context) bool {
	if m.cluster.LeaseHeld() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, leaseWait)
	defer cancel()
	return m.cluster.WaitLease(ctx)
}

// place finds the node for a connect, as cluster.Decide says for this
// node's mode: the node in charge elsewhere, this node, or (handing the
// channel over) the node placement chooses after this one lets it go.
func (m *Media) place(ctx context.Context, req signaling.ConnectRequest, mode fsm.Mode) (cluster.Assignment, error) {
	opts := cluster.ChannelOptions{Multistream: true, Spotlight: req.Spotlight}
	a, err := m.cluster.AcquireChannel(ctx, req.ChannelID, opts)
	if err != nil {
		m.log.Warn("cannot place channel", "channel_id", req.ChannelID, "error", err)
		return a, m.refusal(mode)
	}
	switch cluster.Decide(cluster.Admission{Local: a.Local, Mode: mode, Draining: m.draining.Load(), HasSession: m.hasSession(req.ChannelID)}) {
	case cluster.Redirect, cluster.Serve:
		return a, nil
	case cluster.HandOver:
		if err := m.cluster.ReleaseChannel(ctx, req.ChannelID); err != nil {
			m.log.Warn("hand over channel", "channel_id", req.ChannelID, "error", err)
			return a, m.refusal(mode)
		}
		a, err = m.cluster.AcquireChannel(ctx, req.ChannelID, opts)
		if err != nil {
			return a, m.refusal(mode)
		}
		// Placement gives the channel back to this node when it takes new
		// sessions again by now (ChangeMode normal since the connect
		// came): then it serves, as it would have had the mode changed a
		// moment earlier.
		if a.Local && !cluster.TakesNewSessions(m.cluster.Mode(), m.draining.Load()) {
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
		return &refusal{strings.ToUpper(strings.ReplaceAll(string(mode), "_", "-"))}
	}
}

// redirect sends the client to the node in charge of its channel.
func (m *Media) redirect(ws *websocket.Conn, req signaling.ConnectRequest, owner fsm.Node) {
	m.log.Info("redirecting connect", "channel_id", req.ChannelID, "node_in_charge", owner.Name, "location", owner.ExternalSignalingURL)
	if b, err := signaling.Encode(signaling.Redirect{Location: owner.ExternalSignalingURL}); err == nil {
		_ = ws.SetWriteDeadline(time.Now().Add(m.cfg.WriteTimeout))
		_ = ws.WriteMessage(websocket.TextMessage, b)
	}
	// The client closes this socket itself and reconnects to location.
	drain(ws, m.cfg.ConnectTimeout)
}

func (m *Media) hasSession(channelID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.sessions[channelID]
	return ok
}

// join admits a connection to its channel's session, creating the session
// when it is the first, within license_max_connections. The connect that
// starts a session decides whether it is a spotlight channel; a joiner
// that disagrees is refused. It returns the tracks the connection receives
// from the start.
func (m *Media) join(ws *websocket.Conn, limiter *rate.Limiter, req signaling.ConnectRequest, id string, g grant) (*connection, []*published, error) {
	cert, err := m.engine.certificate()
	if err != nil {
		return nil, nil, err
	}
	api := m.engine.api
	if !req.Role.Sends() {
		api = m.engine.receiveAPI
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{Certificates: []webrtc.Certificate{cert}})
	if err != nil {
		return nil, nil, fmt.Errorf("new peer connection: %w", err)
	}
	c := newConnection(m, req, id, g, ws, limiter, pc)
	if err := c.createDataChannels(); err != nil {
		c.discard()
		return nil, nil, err
	}
	m.mu.Lock()
	turnAway := func(err error) (*connection, []*published, error) {
		m.mu.Unlock()
		c.discard()
		return nil, nil, err
	}
	if len(m.conns) >= m.cfg.MaxConnections {
		return turnAway(&refusal{"LICENSE-MAX-CONNECTIONS"})
	}
	if !m.cluster.LeaseHeld() {
		// Checked under m.mu: StopServing, which follows the lease's
		// end, finds this connection in its session.
		return turnAway(&refusal{reasonQuorumLost})
	}
	s, ok := m.sessions[req.ChannelID]
	if !ok && !cluster.TakesNewSessions(m.cluster.Mode(), m.draining.Load()) {
		return turnAway(errNoNewSession)
	}
	if done, releasing := m.releasing[req.ChannelID]; !ok && releasing {
		return turnAway(&releaseInFlight{done: done})
	}
	if ok && s.spotlight != req.Spotlight {
		if s.spotlight {
			return turnAway(signaling.Errorf("SPOTLIGHT-MISMATCH", "a spotlight channel: connect with spotlight true"))
		}
		return turnAway(signaling.Errorf("SPOTLIGHT-MISMATCH", "not a spotlight channel: connect without spotlight"))
	}
	if ok {
		total := len(req.Metadata) + len(req.SignalingNotifyMetadata)
		for _, o := range s.snapshot() {
			total += metadataSize(o)
		}
		if total > m.cfg.MaxChannelMetadata {
			return turnAway(signaling.Errorf("CHANNEL-METADATA-TOO-LARGE", "the channel's connections would hold %d bytes of metadata; at most %d are accepted", total, m.cfg.MaxChannelMetadata))
		}
	}
	created := !ok
	if created {
		s = m.newSession(req)
		m.sessions[req.ChannelID] = s
		m.stats.sessionsCreated.Add(1)
		c.log.Info("session created", "session_id", s.id, "spotlight", s.spotlight) // c.log has no session_id yet
	}
	if t, ok := m.release[req.ChannelID]; ok {
		t.Stop()
		delete(m.release, req.ChannelID)
	}
	c.session = s
	c.log = c.log.With("session_id", s.id) // before any goroutine of c runs
	m.conns[c.id] = c
	pubs := s.join(c)
	m.mu.Unlock()
	if created {
		m.sessionStarted(s)
	}
	m.stats.connectionsCreated.Add(1)
	m.stats.connectionsOngoing.Add(1)
	return c, pubs, nil
}
