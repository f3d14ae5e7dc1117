package media

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/signaling"
)

// DataChannel signaling: a connection that asks for it gets the signaling,
// notify, push, stats and rpc DataChannels and its # messaging labels, all
// opened by the server and listed in the offer. Once they are all
// open the server sends switched on the WebSocket; from then on re-offer,
// close, notify, push, req-stats and RPC responses go over them, and the
// client's re-answer, candidate, disconnect, stats and RPC calls come
// over them.

// inboxSize bounds the DataChannel signaling messages waiting to be
// handled; a client that floods them is disconnected.
const inboxSize = 64

// signalingDirections are the directions the offer gives the signaling
// DataChannels, as the server uses them.
var signalingDirections = [numRoutes]signaling.Direction{
	viaSignaling: signaling.DirSendrecv,
	viaNotify:    signaling.DirSendonly,
	viaPush:      signaling.DirSendonly,
	viaStats:     signaling.DirSendrecv,
	viaRPC:       signaling.DirSendrecv,
}

// dataChannels are a connection's DataChannels. The set is fixed before the
// connection joins its session; signaling switches once they are all open.
type dataChannels struct {
	byRoute  [numRoutes]*labelChannel // the signaling ones
	labels   map[string]*labelChannel // every one, by label
	order    []*labelChannel          // as created, for the offer
	open     atomic.Int32             // DataChannels open
	switched atomic.Bool
	refusing atomic.Bool // a message broke a limit: the connection is closing
	inbox    chan inboundMessage
}

// labelChannel is one DataChannel.
type labelChannel struct {
	spec      signaling.DataChannelSpec
	direction signaling.Direction // as the offer lists it
	compress  bool                // payloads are zlib, both ways
	dc        *webrtc.DataChannel
	opened    atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
}

// inboundMessage is a message the client sent on a signaling DataChannel,
// inflated.
type inboundMessage struct {
	via route
	b   []byte
}

// createDataChannels creates the DataChannels a connect with
// data_channel_signaling asks for: the signaling ones with the options its
// data_channels give them, then its # labels.
func (c *connection) createDataChannels() error {
	if !c.req.DataChannelSignaling {
		return nil
	}
	asked := map[string]signaling.DataChannelSpec{}
	for _, s := range c.req.DataChannels {
		asked[s.Label] = s
	}
	d := &dataChannels{labels: map[string]*labelChannel{}, inbox: make(chan inboundMessage, inboxSize)}
	for via := viaSignaling; via < numRoutes; via++ {
		spec, ok := asked[routeLabels[via]]
		if !ok {
			spec = signaling.DataChannelSpec{Label: routeLabels[via]}
		}
		l, err := c.createDataChannel(d, spec, signalingDirections[via], via)
		if err != nil {
			return err
		}
		d.byRoute[via] = l
	}
	for _, spec := range c.req.DataChannels {
		if signaling.IsMessagingLabel(spec.Label) {
			if _, err := c.createDataChannel(d, spec, spec.Direction, viaWebSocket); err != nil {
				return err
			}
		}
	}
	c.dcs = d
	return nil
}

// createDataChannel creates one DataChannel; via is its route for a
// signaling one, viaWebSocket for a # label.
func (c *connection) createDataChannel(d *dataChannels, spec signaling.DataChannelSpec, dir signaling.Direction, via route) (*labelChannel, error) {
	init := &webrtc.DataChannelInit{Ordered: spec.Ordered, MaxPacketLifeTime: spec.MaxPacketLifeTime, MaxRetransmits: spec.MaxRetransmits}
	if spec.Protocol != "" {
		init.Protocol = &spec.Protocol
	}
	dc, err := c.pc.CreateDataChannel(spec.Label, init)
	if err != nil {
		return nil, fmt.Errorf("create DataChannel %q: %w", spec.Label, err)
	}
	l := &labelChannel{spec: spec, direction: dir, compress: c.m.cfg.DataChannelCompress, dc: dc, closed: make(chan struct{})}
	if spec.Compress != nil {
		l.compress = *spec.Compress
	}
	dc.OnOpen(func() {
		l.opened.Store(true)
		if d.open.Add(1) == int32(len(d.order)) {
			c.switchToDataChannels()
		}
	})
	dc.OnClose(func() {
		l.closeOnce.Do(func() { close(l.closed) })
		if via == viaSignaling {
			// The client left: DC signaling closing ends the connection.
			c.spawn(func() { c.close(signaling.CloseNormal, "DATA-CHANNEL-CLOSED") })
		}
	})
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		switch via {
		case viaSignaling, viaStats, viaRPC:
			c.receiveOnDataChannel(via, l, msg.Data)
		case viaWebSocket:
			c.onLabelMessage(l, msg)
		default:
			// notify and push carry nothing from the client.
		}
	})
	d.labels[spec.Label] = l
	d.order = append(d.order, l)
	return l, nil
}

// switchToDataChannels marks signaling as switched, then tells the client
// on the WebSocket: a client may close its WebSocket as soon as it reads
// switched. switched goes once the client's SCTP stack has acknowledged
// the DataChannels' opening (nothing left unacknowledged on them, within
// switchWait), so that it does not overtake them: the WebSocket is another
// path, and the SDKs look their DataChannels up when it arrives.
func (c *connection) switchToDataChannels() {
	if !c.dcs.switched.CompareAndSwap(false, true) {
		return
	}
	b, err := signaling.Encode(signaling.Switched{IgnoreDisconnectWebSocket: c.req.IgnoreDisconnectWebSocket})
	if err != nil {
		return
	}
	c.spawn(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		deadline := time.Now().Add(switchWait)
		for !c.dcs.acknowledged() && time.Now().Before(deadline) {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
		}
		c.sendEncoded(viaWebSocket, b)
		c.log.Info("signaling switched to DataChannels", "ignore_disconnect_websocket", c.req.IgnoreDisconnectWebSocket)
	})
}

// switchWait bounds the wait for the DataChannels' opening to be
// acknowledged before switched.
const switchWait = time.Second

// acknowledged reports whether nothing sent on any DataChannel awaits the
// client's acknowledgement.
func (d *dataChannels) acknowledged() bool {
	for _, l := range d.order {
		if l.dc.BufferedAmount() > 0 {
			return false
		}
	}
	return true
}

// receiveOnDataChannel bounds a message the client sent on a signaling
// DataChannel (size, rate and the inbox, as on the WebSocket) and queues
// it for readDataChannels. It runs on pion's reading goroutine, which it
// never blocks.
func (c *connection) receiveOnDataChannel(via route, l *labelChannel, data []byte) {
	if c.ctx.Err() != nil {
		return
	}
	refuse := func(reason string) {
		if c.dcs.refusing.CompareAndSwap(false, true) {
			c.spawn(func() { c.close(signaling.CloseSignaling, reason) })
		}
	}
	max := c.m.cfg.MaxMessageSize
	if len(data) > max {
		refuse("MESSAGE-TOO-LARGE")
		return
	}
	if !c.limiter.Allow() {
		refuse("TOO-MANY-MESSAGES")
		return
	}
	b := data
	if l.compress {
		var err error
		if b, err = inflate(data, max); err != nil {
			refuse("INVALID-COMPRESSED-MESSAGE")
			return
		}
	}
	select {
	case c.dcs.inbox <- inboundMessage{via: via, b: b}:
	default:
		refuse("TOO-MANY-MESSAGES")
	}
}

// readDataChannels handles the messages of the signaling DataChannels, one
// at a time, until the connection ends.
func (c *connection) readDataChannels() {
	handlers := signaling.Handlers{
		ReAnswer:   c.onAnswer,
		Candidate:  c.onCandidate,
		Disconnect: c.onDisconnect,
		Stats:      c.onStats,
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case in := <-c.dcs.inbox:
			if in.via == viaRPC {
				c.serveRPC(in.b)
				continue
			}
			typ, known, err := signaling.Dispatch(in.b, &handlers)
			var se *signaling.Error
			switch {
			case errors.As(err, &se):
				c.close(signaling.CloseSignaling, se.Reason)
				return
			case err != nil:
				c.log.Warn("DataChannel signaling message", "type", typ, "error", err)
			case !known:
				c.log.Debug("ignored DataChannel signaling message", "label", routeLabels[in.via], "type", typ)
			}
		}
	}
}

// errSlowReader: a DataChannel holds more unsent bytes than allowed.
var errSlowReader = errors.New("the client does not read its DataChannel fast enough")

// send writes one message: zlib-compressed and binary on a compressed
// label, else as text or binary as asked.
func (l *labelChannel) send(m *Media, b []byte, text bool) error {
	if l.compress {
		b = m.deflate(b)
		text = false
	}
	return l.write(m, b, text)
}

// write writes one message as it is. It fails when the DataChannel is not
// open or already holds DataChannelMaxBuffered unsent bytes.
func (l *labelChannel) write(m *Media, b []byte, text bool) error {
	if l.dc.ReadyState() != webrtc.DataChannelStateOpen {
		return fmt.Errorf("DataChannel %q is %s", l.spec.Label, l.dc.ReadyState())
	}
	if l.dc.BufferedAmount() > uint64(m.cfg.DataChannelMaxBuffered) {
		return errSlowReader
	}
	if text {
		return l.dc.SendText(string(b))
	}
	return l.dc.Send(b)
}

// offered lists the DataChannels for the offer.
func (d *dataChannels) offered() []signaling.OfferDataChannel {
	out := make([]signaling.OfferDataChannel, 0, len(d.order))
	for _, l := range d.order {
		o := signaling.OfferDataChannel{Label: l.spec.Label, Direction: l.direction, Compress: l.compress}
		if l.spec.SenderConnectionID {
			o.Header = []signaling.HeaderOption{{Type: "sender_connection_id", Length: connectionIDLength}}
		}
		out = append(out, o)
	}
	return out
}

// close ends DataChannel signaling: a switched client gets a close message
// on DC signaling (not after asking to leave itself), then every
// DataChannel closes, after what was sent on it.
func (d *dataChannels) close(c *connection, code int, reason string) {
	if d.switched.Load() && (code != signaling.CloseNormal || reason != "TYPE-DISCONNECT") {
		if b, err := signaling.Encode(signaling.Close{Code: code, Reason: reason}); err == nil {
			if err := d.byRoute[viaSignaling].send(c.m, b, true); err != nil {
				c.log.Debug("send close on DataChannel", "error", err)
			}
		}
	}
	for _, l := range d.order {
		if err := l.dc.Close(); err != nil {
			c.log.Debug("close DataChannel", "label", l.spec.Label, "error", err)
		}
	}
}

// waitClosed waits, at most grace, until every DataChannel that opened has
// closed on both sides.
func (d *dataChannels) waitClosed(grace time.Duration) {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	for _, l := range d.order {
		if !l.opened.Load() {
			continue
		}
		select {
		case <-l.closed:
		case <-deadline.C:
			return
		}
	}
}
