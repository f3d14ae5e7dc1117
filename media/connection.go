package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// WebSocket close codes sorad sends.
const (
	closeNormal      = 1000 // TYPE-DISCONNECT, DISCONNECTED-API
	closeSignaling   = 4490 // a bad or contradictory message (Sora's code)
	closeUnavailable = 4503 // refused for a reason of the node: mode, license, cluster
	closeTimeout     = 4408 // the client stopped answering
)

// connection is one client: its WebSocket, its PeerConnection, the tracks
// it publishes and those it receives. The goroutine running serve owns it:
// every other goroutine of the connection is started through spawn and
// waited for before serve returns.
type connection struct {
	m       *Media
	id      string
	req     ConnectRequest
	client  string // client_id
	bundle  string // bundle_id
	session *session
	ws      *websocket.Conn
	pc      *webrtc.PeerConnection
	log     *slog.Logger
	created time.Time

	ctx    context.Context
	cancel context.CancelFunc
	out    chan []byte // to the WebSocket writer

	goMu    sync.Mutex
	stopped bool // no more spawns
	wg      sync.WaitGroup

	closeOnce   sync.Once
	closeCode   int
	closeReason string

	established atomic.Bool
	connectedAt atomic.Int64 // Unix microseconds
	lastPong    atomic.Int64 // Unix nanoseconds

	negMu        sync.Mutex
	offerPending bool // an offer or re-offer awaits its answer
	needReoffer  bool // the tracks changed while an offer was pending
	mid          map[string]string

	downMu sync.Mutex
	down   map[string]*downTrack // by published track ID

	metaMu     sync.Mutex
	notifyMeta json.RawMessage // signaling notify metadata; the metadata APIs change it
}

// downTrack is a published track this connection receives.
type downTrack struct {
	pub    *publishedTrack
	sender *webrtc.RTPSender
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

// shouldReceive reports whether c receives track t: c receives, t is not its
// own, and t's publisher does not share c's bundle_id.
func (c *connection) shouldReceive(t *publishedTrack) bool {
	return c.req.Role.receives() && t.owner != c && t.owner.bundle != c.bundle
}

// send queues a message for the WebSocket. A client that does not keep up
// with its queue is disconnected rather than buffered without bound.
func (c *connection) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encode signaling message", "error", err)
		return
	}
	c.sendEncoded(b)
}

// sendEncoded queues an encoded message; fan-outs encode once.
func (c *connection) sendEncoded(b []byte) {
	if b == nil {
		return
	}
	select {
	case c.out <- b:
	case <-c.ctx.Done():
	default:
		c.log.Warn("signaling queue full; disconnecting")
		c.close(closeTimeout, "SIGNALING-QUEUE-FULL")
	}
}

// writeLoop writes queued messages until the connection ends.
func (c *connection) writeLoop() {
	for {
		select {
		case b := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.m.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				c.close(closeTimeout, "WRITE-FAILED")
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// pingLoop pings the client and disconnects it when pongs stop.
func (c *connection) pingLoop() {
	t := time.NewTicker(c.m.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, c.lastPong.Load())) > c.m.cfg.PongTimeout {
				c.log.Info("no pong in time; disconnecting", "timeout", c.m.cfg.PongTimeout)
				c.close(closeTimeout, "PONG-TIMEOUT")
				return
			}
			c.send(map[string]any{"type": "ping", "stats": false})
		}
	}
}

// close ends the connection once: it leaves the session (others are told at
// once), sends the close frame and stops the goroutines. The TCP connection
// is closed after a grace period so the client can read the close frame;
// serve finishes the teardown.
func (c *connection) close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		c.log.Info("closing connection", "code", code, "reason", reason)
		c.cancel()
		c.m.leave(c)
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		time.AfterFunc(c.m.cfg.CloseGrace, func() { _ = c.ws.NetConn().Close() })
	})
}

// negotiate sends a (re-)offer when none is pending, else remembers that
// another is needed once the answer arrives.
func (c *connection) negotiate(kind string) {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	if c.offerPending {
		c.needReoffer = true
		return
	}
	c.offerLocked(kind, nil)
}

// offerLocked creates an offer and sends it as message type kind ("offer"
// or "re-offer"), with extra fields for the first offer. negMu is held.
func (c *connection) offerLocked(kind string, extra map[string]any) {
	if c.ctx.Err() != nil {
		return
	}
	offer, err := c.pc.CreateOffer(nil)
	if err == nil {
		gathered := webrtc.GatheringCompletePromise(c.pc)
		if err = c.pc.SetLocalDescription(offer); err == nil {
			select {
			case <-gathered:
			case <-c.ctx.Done():
				return
			}
		}
	}
	if err != nil {
		c.log.Error("create offer", "error", err)
		c.close(closeSignaling, "SDP-GENERATION-ERROR")
		return
	}
	if kind == "offer" {
		// The m-lines the client sends on: its upstream transceivers
		// (receivers do not send; their placeholders are not upstream).
		c.mid = map[string]string{}
		for _, t := range c.pc.GetTransceivers() {
			if c.req.Role.sends() && t.Direction() == webrtc.RTPTransceiverDirectionRecvonly && t.Mid() != "" {
				c.mid[t.Kind().String()] = t.Mid()
			}
		}
	}
	sdp := c.pc.LocalDescription().SDP
	if mid, ok := c.mid["video"]; ok {
		// The client's video bit rate: a bandwidth line on its upstream
		// video m-line, which browsers and libwebrtc obey as a cap.
		sdp = withBandwidth(sdp, mid, c.videoBitRate())
	}
	msg := map[string]any{"type": kind, "sdp": sdp}
	for k, v := range extra {
		msg[k] = v
	}
	if kind == "offer" {
		msg["mid"] = c.mid
	}
	c.offerPending, c.needReoffer = true, false
	c.send(msg)
}

// onAnswer applies an answer or re-answer and sends the next re-offer if the
// tracks changed meanwhile.
func (c *connection) onAnswer(sdp string) error {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	if !c.offerPending {
		return sigErr("UNEXPECTED-ANSWER", "no offer is waiting for an answer")
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		if !errors.Is(err, webrtc.ErrUnsupportedCodec) {
			return sigErr("INVALID-ANSWER", "%v", err)
		}
		// The answer is applied; the client just cannot decode some
		// forwarded track's codec. It goes without that track.
		c.log.Warn("client does not support the codec of a forwarded track", "error", err)
	}
	c.offerPending = false
	// Receivers of video need a key frame to start decoding.
	c.downMu.Lock()
	pubs := make([]*publishedTrack, 0, len(c.down))
	for _, d := range c.down {
		pubs = append(pubs, d.pub)
	}
	c.downMu.Unlock()
	for _, p := range pubs {
		p.requestKeyframe(c.m.cfg.KeyframeThrottle)
	}
	if c.needReoffer {
		c.offerLocked("re-offer", nil)
	}
	return nil
}

// receive starts forwarding a published track to this connection.
func (c *connection) receive(t *publishedTrack) {
	c.downMu.Lock()
	if _, dup := c.down[t.id]; dup || c.ctx.Err() != nil {
		c.downMu.Unlock()
		return
	}
	// A transceiver of its own, never AddTrack: AddTrack may take over the
	// connection's upstream (server-recvonly) transceivers before the first
	// answer. Removed tracks leave their m-line inactive; pion does not
	// recycle it once the client answered inactive, so a long-lived
	// connection in a busy channel accumulates m-lines. The m-line offers
	// every codec (see videoCodecsPreferring); pion binds the track to the
	// publisher's codec among those the client answered.
	tr, err := c.pc.AddTransceiverFromTrack(t.local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		c.downMu.Unlock()
		c.log.Warn("add forwarded track", "track", t.id, "error", err)
		return
	}
	sender := tr.Sender()
	c.down[t.id] = &downTrack{pub: t, sender: sender}
	c.downMu.Unlock()
	c.spawn(func() { c.readReceiverRTCP(t, sender) })
	c.negotiate("re-offer")
}

// stopReceiving stops forwarding a track to this connection.
func (c *connection) stopReceiving(t *publishedTrack) {
	c.downMu.Lock()
	d, ok := c.down[t.id]
	delete(c.down, t.id)
	c.downMu.Unlock()
	if !ok || c.ctx.Err() != nil {
		return
	}
	if err := c.pc.RemoveTrack(d.sender); err != nil {
		c.log.Debug("remove forwarded track", "track", t.id, "error", err)
	}
	c.negotiate("re-offer")
}

// readReceiverRTCP relays this receiver's key frame requests to the
// publisher (throttled) and counts its NACKs, which the NACK interceptor
// answers from its cache.
func (c *connection) readReceiverRTCP(t *publishedTrack, sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				c.m.stats.plisReceived.Add(1)
				t.requestKeyframe(c.m.cfg.KeyframeThrottle)
			case *rtcp.TransportLayerNack:
				c.m.stats.nacksReceived.Add(1)
			}
		}
	}
}

// onTrack runs when the client starts sending a track: publish it to the
// session and forward its packets until it ends.
func (c *connection) onTrack(remote *webrtc.TrackRemote) {
	codec := remote.Codec()
	c.log.Debug("publishing track", "kind", remote.Kind().String(), "codec", codec.MimeType, "ssrc", uint32(remote.SSRC()), "payload_type", codec.PayloadType)
	local, err := webrtc.NewTrackLocalStaticRTP(codec.RTPCodecCapability, remote.Kind().String()+"-"+c.id, c.id)
	if err != nil {
		c.log.Error("create forwarding track", "error", err)
		return
	}
	t := &publishedTrack{id: c.id + "/" + remote.Kind().String() + "/" + remote.ID(), kind: remote.Kind(), owner: c, remote: remote, local: local, codec: codec}
	c.spawn(func() {
		c.m.stats.tracks.Add(1)
		defer c.m.stats.tracks.Add(-1)
		for _, r := range c.session.publish(t) {
			r.receive(t)
		}
		c.forward(t)
		for _, r := range c.session.unpublish(t) {
			r.stopReceiving(t)
		}
	})
}

// forward copies the publisher's packets to every receiver until the track
// ends (the PeerConnection closes).
func (c *connection) forward(t *publishedTrack) {
	for {
		pkt, _, err := t.remote.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) && c.ctx.Err() == nil {
				c.log.Debug("track ended", "track", t.id, "error", err)
			}
			return
		}
		n := int64(pkt.MarshalSize())
		t.packets.Add(1)
		t.bytes.Add(n)
		c.m.stats.forwardedPackets.Add(1)
		c.m.stats.forwardedBytes.Add(n)
		if err := t.local.WriteRTP(pkt); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			c.log.Debug("forward packet", "track", t.id, "error", err)
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
			c.m.announceCreated(c)
		}
	case webrtc.PeerConnectionStateFailed:
		c.close(closeTimeout, "ICE-CONNECTION-FAILED")
	case webrtc.PeerConnectionStateClosed:
		c.close(closeTimeout, "PEER-CONNECTION-CLOSED")
	}
}

// handle processes one message after connect.
func (c *connection) handle(b []byte) error {
	var msg clientMessage
	if err := json.Unmarshal(b, &msg); err != nil {
		return sigErr("INVALID-MESSAGE", "%s", jsonProblem(err))
	}
	switch msg.Type {
	case "answer", "re-answer":
		return c.onAnswer(msg.SDP)
	case "candidate":
		// sorad is ICE-lite: it learns the client's addresses from its
		// connectivity checks, so candidates are a hint at most.
		if msg.Candidate == "" {
			return nil
		}
		init := webrtc.ICECandidateInit{Candidate: msg.Candidate, SDPMid: msg.SDPMid, SDPMLineIndex: msg.SDPMLineIndex}
		if err := c.pc.AddICECandidate(init); err != nil {
			c.log.Debug("ignored candidate", "error", err)
		}
	case "pong":
		c.lastPong.Store(time.Now().UnixNano())
	case "disconnect":
		c.close(closeNormal, "TYPE-DISCONNECT")
	default:
		c.log.Debug("ignored signaling message", "type", msg.Type)
	}
	return nil
}

func (c *connection) notifyMetadata() json.RawMessage {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	return c.notifyMeta
}

func (c *connection) String() string {
	return fmt.Sprintf("connection %s in %s", c.id, c.req.ChannelID)
}
