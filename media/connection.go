package media

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/sorad/sorad/media/signaling"
)

// connection is one client: its signaling (the WebSocket, and DataChannels
// once it switched to them), its PeerConnection, the tracks it publishes
// and those it receives. The goroutine that reads its WebSocket owns it:
// every other goroutine of the connection is started through spawn and
// waited for before teardown returns.
type connection struct {
	m          *Media
	id         string
	req        signaling.ConnectRequest
	client     string // client_id
	bundle     string // bundle_id
	session    *session
	ws         *websocket.Conn
	wsGone     atomic.Bool   // the client closed the WebSocket; signaling goes on over DataChannels
	limiter    *rate.Limiter // signaling messages from the client, on any transport
	msgLimiter *rate.Limiter // messages on # labels
	out        chan outbound // messages to the client, written by writeLoop
	dcs        *dataChannels // nil without DataChannel signaling
	pc         *webrtc.PeerConnection
	log        *slog.Logger
	created    time.Time
	handlers   signaling.Handlers
	grant      grant // from the auth webhook's answer

	ctx    context.Context
	cancel context.CancelFunc

	goMu    sync.Mutex
	stopped bool // no more spawns
	wg      sync.WaitGroup

	closeOnce sync.Once
	endMu     sync.Mutex // guards the end's account below
	endCode   int
	endReason string
	apiReason json.RawMessage // the Disconnect API's reason object
	// typeReason is the reason of the client's disconnect message.
	typeReason string

	established atomic.Bool
	iceTimes    iceTimes                 // for the event webhooks
	connectedAt atomic.Int64             // Unix microseconds
	lastPong    atomic.Int64             // Unix nanoseconds
	uaStats     atomic.Pointer[uaReport] // the client's latest statistics report

	negotiation

	pubMu     sync.Mutex
	published map[string]*published // by mid

	downMu  sync.Mutex
	down    map[string]*downTrack // by published track ID
	parked  []*sendSlot           // m-lines waiting for a track of their kind
	parkedN int                   // parked tracks made, for their ids
	// starting: tracks on reused m-lines waiting for the client's answer.
	starting []*downTrack

	metaMu     sync.Mutex
	notifyMeta json.RawMessage // signaling notify metadata; the metadata APIs change it

	fwdMu      sync.Mutex
	rtpForward *rtpForward // StartForwardingRtp's outputs; nil when none
}

func newConnection(m *Media, req signaling.ConnectRequest, id string, g grant, ws *websocket.Conn, limiter *rate.Limiter, pc *webrtc.PeerConnection) *connection {
	ctx, cancel := context.WithCancel(m.ctx)
	req.Raw = nil // only admission needs the connect as it came
	c := &connection{
		m: m, id: id, req: req, grant: g, client: req.ClientID, bundle: req.BundleID,
		ws: ws, limiter: limiter, out: make(chan outbound, m.cfg.SendQueue), pc: pc, created: time.Now(),
		msgLimiter: rate.NewLimiter(rate.Limit(m.cfg.MessagingRate), m.cfg.MessagingBurst),
		log:        m.log.With("channel_id", req.ChannelID, "connection_id", id),
		ctx:        ctx,
		cancel:     cancel,
		published:  map[string]*published{},
		down:       map[string]*downTrack{},
		notifyMeta: req.SignalingNotifyMetadata,
	}
	if c.client == "" {
		c.client = id
	}
	if c.bundle == "" {
		c.bundle = id
	}
	// The first offer is pending until it is sent: tracks added before it
	// go into it rather than into a re-offer.
	c.offerPending = true
	c.videoBitRate.Store(int64(c.requestedVideoBitRate()))
	c.lastPong.Store(time.Now().UnixNano())
	c.handlers = signaling.Handlers{
		Answer:     c.onAnswer,
		ReAnswer:   c.onAnswer,
		Candidate:  c.onCandidate,
		Pong:       c.onPong,
		Disconnect: c.onDisconnect,
	}
	return c
}

// discard drops a connection that was never admitted.
func (c *connection) discard() {
	c.cancel()
	c.endEarlyChecks(false)
	_ = c.pc.Close()
}

// spawn runs f in a goroutine owned by the connection, unless it is being
// torn down.
func (c *connection) spawn(f func()) bool {
	c.goMu.Lock()
	defer c.goMu.Unlock()
	if c.stopped {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

func (c *connection) isEstablished() bool { return c.established.Load() }

// send encodes a message and queues it for the client. A client that does
// not keep up with its queue is disconnected rather than buffered without
// bound.
func (c *connection) send(msg signaling.Outbound) {
	b, err := signaling.Encode(msg)
	if err != nil {
		c.log.Error("encode signaling message", "error", err)
		return
	}
	c.sendEncoded(routeOf(msg), b)
}

// sendEncoded queues an encoded message for its route; fan-outs encode
// once. It may be called under any lock: a full queue closes the
// connection from a goroutine of its own.
func (c *connection) sendEncoded(via route, b []byte) {
	if b == nil || c.ctx.Err() != nil || via == viaNotify && c.grant.notifyOff {
		return
	}
	select {
	case c.out <- outbound{via: via, b: b}:
	default:
		c.spawn(func() {
			c.log.Warn("signaling queue full; disconnecting")
			c.close(signaling.CloseTimeout, "SIGNALING-QUEUE-FULL")
		})
	}
}

// receiveMessage handles one message the client sent after connect.
func (c *connection) receiveMessage(b []byte) error {
	typ, known, err := signaling.Dispatch(b, &c.handlers)
	if !known && err == nil {
		c.log.Debug("ignored signaling message", "type", typ)
	}
	return err
}

func (c *connection) onCandidate(cand signaling.Candidate) error {
	// sorad is ICE-lite: it learns the client's addresses from its
	// connectivity checks, so candidates are a hint at most.
	if cand.Candidate == "" {
		return nil
	}
	init := webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: cand.SDPMid, SDPMLineIndex: cand.SDPMLineIndex}
	if err := c.pc.AddICECandidate(init); err != nil {
		c.log.Debug("ignored candidate", "error", err)
	}
	return nil
}

func (c *connection) onPong(p signaling.Pong) error {
	c.lastPong.Store(time.Now().UnixNano())
	c.recordUserAgentStats(p.Stats)
	return nil
}

func (c *connection) onStats(s signaling.Stats) error {
	c.recordUserAgentStats(s.Reports)
	return nil
}

func (c *connection) onDisconnect(d signaling.Disconnect) error {
	c.endMu.Lock()
	c.typeReason = signaling.TruncateReason(d.Reason)
	c.endMu.Unlock()
	c.close(signaling.CloseNormal, "TYPE-DISCONNECT")
	return nil
}

// expireAfter closes the connection with LIFETIME-EXPIRED once d (the auth
// webhook's connection_lifetime) has passed, unless it ended before.
func (c *connection) expireAfter(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		c.close(signaling.CloseNormal, "LIFETIME-EXPIRED")
	case <-c.ctx.Done():
	}
}

// closedWith is the close code and reason the connection ended with.
func (c *connection) closedWith() (int, string) {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	return c.endCode, c.endReason
}

// disconnectAPIReason is the reason object of the Disconnect API call that
// ended the connection, if one did.
func (c *connection) disconnectAPIReason() json.RawMessage {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	return c.apiReason
}

// typeDisconnectReason is the reason of the client's disconnect message.
func (c *connection) typeDisconnectReason() string {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	return c.typeReason
}

// pingLoop pings the client on its WebSocket and disconnects it when pongs
// stop (a client that closed its WebSocket after switching to DataChannels
// is watched by ICE instead). Every UserAgentStatsInterval it asks for the
// client's statistics: with req-stats on DC stats once switched, else in
// the ping.
func (c *connection) pingLoop() {
	t := time.NewTicker(c.m.cfg.PingInterval)
	defer t.Stop()
	ping, _ := signaling.Encode(signaling.Ping{Stats: false})
	pingStats, _ := signaling.Encode(signaling.Ping{Stats: true})
	reqStats, _ := signaling.Encode(signaling.ReqStats{})
	var askedStats time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			wsUp := !c.wsGone.Load()
			if wsUp && time.Since(time.Unix(0, c.lastPong.Load())) > c.m.cfg.PongTimeout {
				c.log.Info("no pong in time; disconnecting", "timeout", c.m.cfg.PongTimeout)
				c.close(signaling.CloseTimeout, "PONG-TIMEOUT")
				return
			}
			msg := ping
			if every := c.m.cfg.UserAgentStatsInterval; every > 0 && !c.grant.uaStatsOff && time.Since(askedStats) >= every {
				askedStats = time.Now()
				if c.switched() {
					c.sendEncoded(viaStats, reqStats)
				} else {
					msg = pingStats
				}
			}
			if wsUp {
				c.sendEncoded(viaWebSocket, msg)
			}
		}
	}
}

// onConnectionState follows the PeerConnection.
func (c *connection) onConnectionState(s webrtc.PeerConnectionState) {
	switch s {
	case webrtc.PeerConnectionStateConnected:
		if c.established.CompareAndSwap(false, true) {
			c.connectedAt.Store(time.Now().UnixMicro())
			c.m.stats.connectionsSuccessful.Add(1)
			c.m.stats.setupMicros.Add(micros(time.Since(c.created)))
			c.log.Info("connection established", "setup", time.Since(c.created).Round(time.Millisecond))
			c.requestKeyframes()
			announceCreated(c)
			c.eventCreated()
		}
	case webrtc.PeerConnectionStateFailed:
		c.close(signaling.CloseTimeout, "ICE-CONNECTION-FAILED")
	case webrtc.PeerConnectionStateClosed:
		c.close(signaling.CloseTimeout, "PEER-CONNECTION-CLOSED")
	}
}

// close ends the connection once: it leaves the session (others are told at
// once), tells the client and stops the goroutines. Once signaling switched
// to DataChannels the client gets a close message on DC signaling (unless
// it asked to leave) and the DataChannels close; the WebSocket, while it is
// open, gets a close frame and is dropped after a grace period so the
// client can read it. The goroutine reading the WebSocket finishes the
// teardown.
func (c *connection) close(code int, reason string) {
	c.closeOnce.Do(func() {
		reason = signaling.TruncateReason(reason)
		c.endMu.Lock()
		c.endCode, c.endReason = code, reason
		c.endMu.Unlock()
		c.log.Info("closing connection", "code", code, "reason", reason)
		c.cancel()
		c.m.leave(c)
		if c.dcs != nil {
			c.dcs.close(c, code, reason)
		}
		c.closeWebSocket(code, reason)
	})
}

// teardown finishes a closed connection: it gives the DataChannels a moment
// to close cleanly, stops the PeerConnection and waits for every goroutine
// the connection started.
func (c *connection) teardown() {
	c.goMu.Lock()
	c.stopped = true
	c.goMu.Unlock()
	if c.dcs != nil {
		c.dcs.waitClosed(c.m.cfg.CloseGrace)
	}
	if err := c.pc.Close(); err != nil {
		c.log.Debug("close peer connection", "error", err)
	}
	c.endEarlyChecks(false)
	c.wg.Wait()
	c.stopForwardingRtp()
	_ = c.ws.Close()
	c.eventEnded()
	m := c.m
	m.stats.connectionsOngoing.Add(-1)
	m.stats.connectionsDestroyed.Add(1)
	if at := c.connectedAt.Load(); at != 0 {
		m.stats.durationMicros.Add(time.Now().UnixMicro() - at)
	} else {
		m.stats.connectionsFailed.Add(1)
	}
}

func (c *connection) notifyMetadata() json.RawMessage {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	return c.notifyMeta
}

func (c *connection) String() string {
	return fmt.Sprintf("connection %s in %s", c.id, c.req.ChannelID)
}
