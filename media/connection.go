package media

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/signaling"
)

// connection is one client: its signaling transport, its PeerConnection,
// the tracks it publishes and those it receives. The goroutine that reads
// its transport owns it: every other goroutine of the connection is
// started through spawn and waited for before teardown returns.
type connection struct {
	m        *Media
	id       string
	req      signaling.ConnectRequest
	client   string // client_id
	bundle   string // bundle_id
	session  *session
	tr       transport
	pc       *webrtc.PeerConnection
	log      *slog.Logger
	created  time.Time
	handlers signaling.Handlers

	ctx    context.Context
	cancel context.CancelFunc

	goMu    sync.Mutex
	stopped bool // no more spawns
	wg      sync.WaitGroup

	closeOnce sync.Once

	established atomic.Bool
	connectedAt atomic.Int64             // Unix microseconds
	lastPong    atomic.Int64             // Unix nanoseconds
	uaStats     atomic.Pointer[uaReport] // the client's latest statistics report

	negotiation

	pubMu     sync.Mutex
	published map[string]*published // by mid

	downMu sync.Mutex
	down   map[string]*downTrack // by published track ID

	metaMu     sync.Mutex
	notifyMeta json.RawMessage // signaling notify metadata; the metadata APIs change it

	fwdMu      sync.Mutex
	rtpForward *rtpForward // StartForwardingRtp's outputs; nil when none
}

func newConnection(m *Media, req signaling.ConnectRequest, tr transport, pc *webrtc.PeerConnection) *connection {
	id := newID()
	ctx, cancel := context.WithCancel(m.ctx)
	c := &connection{
		m: m, id: id, req: req, client: req.ClientID, bundle: req.BundleID,
		tr: tr, pc: pc, created: time.Now(),
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
	c.sendEncoded(b)
}

// sendEncoded queues an encoded message; fan-outs encode once. It may be
// called under any lock: a full queue closes the connection from a
// goroutine of its own.
func (c *connection) sendEncoded(b []byte) {
	if b == nil || c.ctx.Err() != nil {
		return
	}
	if !c.tr.send(b) {
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

func (c *connection) onDisconnect(signaling.Disconnect) error {
	c.close(signaling.CloseNormal, "TYPE-DISCONNECT")
	return nil
}

// pingLoop pings the client and disconnects it when pongs stop. Every
// UserAgentStatsInterval (at a ping) the ping asks for the client's
// statistics.
func (c *connection) pingLoop() {
	t := time.NewTicker(c.m.cfg.PingInterval)
	defer t.Stop()
	ping, _ := signaling.Encode(signaling.Ping{Stats: false})
	pingStats, _ := signaling.Encode(signaling.Ping{Stats: true})
	var askedStats time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, c.lastPong.Load())) > c.m.cfg.PongTimeout {
				c.log.Info("no pong in time; disconnecting", "timeout", c.m.cfg.PongTimeout)
				c.close(signaling.CloseTimeout, "PONG-TIMEOUT")
				return
			}
			if every := c.m.cfg.UserAgentStatsInterval; every > 0 && time.Since(askedStats) >= every {
				askedStats = time.Now()
				c.sendEncoded(pingStats)
				continue
			}
			c.sendEncoded(ping)
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
			announceCreated(c)
		}
	case webrtc.PeerConnectionStateFailed:
		c.close(signaling.CloseTimeout, "ICE-CONNECTION-FAILED")
	case webrtc.PeerConnectionStateClosed:
		c.close(signaling.CloseTimeout, "PEER-CONNECTION-CLOSED")
	}
}

// close ends the connection once: it leaves the session (others are told at
// once), sends the close and stops the goroutines. The transport drops the
// client after a grace period so it can read the close; the reading
// goroutine finishes the teardown.
func (c *connection) close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.log.Info("closing connection", "code", code, "reason", reason)
		c.cancel()
		c.m.leave(c)
		c.tr.close(code, signaling.TruncateReason(reason))
	})
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
	c.stopForwardingRtp()
	c.tr.shut()
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
