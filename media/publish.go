package media

import (
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/forward"
	"github.com/sorad/sorad/media/signaling"
)

// Publishing and receiving: a track a client sends becomes a published
// track of its session (a forward.Track with one Up per simulcast layer);
// every member that receives it gets a down track of its own, on an m-line
// of its own.

// published is a track a connection publishes, keyed by the m-line (mid) it
// arrives on.
type published struct {
	track *forward.Track
	owner *connection
	mid   string
}

// downTrack is a published track this connection receives.
type downTrack struct {
	pub  *published
	fwd  *forward.Down
	slot *sendSlot
	// startAfter: on a reused m-line, the offers made before the one that
	// carries this track (see startReused).
	startAfter uint64
}

// sendSlot is one of a connection's sendonly m-lines: it carries a
// forwarded track, or is parked until a track of its kind comes. Reusing
// parked m-lines keeps a long-lived receiver's m-lines at the most tracks
// it received at once, however many publishers came and went.
//
// A parked m-line carries a parkedTrack: it keeps its SSRC and says
// a=msid:- (a track in no stream), so the client's track leaves the
// publisher's stream (browsers: removetrack; the receiver stays). A slot
// is reused only once the client has answered an offer in which it was
// parked, and the new track's packets wait for the answer to the offer
// that names it (a=msid with the new publisher's stream): browsers fire
// track for the new stream; a pion-based client sees the track's stream
// id change.
type sendSlot struct {
	tr   *webrtc.RTPTransceiver
	kind webrtc.RTPCodecType
	cur  atomic.Pointer[downTrack] // nil while parked
	last *forward.Down             // the last track it carried
	// parkedAfter is the number of offers made when the slot was parked:
	// an answer to a later offer has seen it parked.
	parkedAfter uint64
}

// parkedTrack is what a parked m-line carries: no packets, no stream.
type parkedTrack struct {
	id   string
	kind webrtc.RTPCodecType
}

func (p *parkedTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codecs := ctx.CodecParameters()
	if len(codecs) == 0 {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	return codecs[0], nil
}
func (p *parkedTrack) Unbind(webrtc.TrackLocalContext) error { return nil }
func (p *parkedTrack) ID() string                            { return p.id }
func (p *parkedTrack) RID() string                           { return "" }
func (p *parkedTrack) StreamID() string                      { return "-" }
func (p *parkedTrack) Kind() webrtc.RTPCodecType             { return p.kind }

// onTrack runs when the client starts sending a stream: the first stream of
// an m-line publishes the track to the session; each stream (a simulcast
// layer) is forwarded until it ends, and the track is unpublished when its
// last stream ends.
func (c *connection) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	mid := c.midOf(receiver)
	codec := remote.Codec()
	c.log.Debug("publishing stream", "kind", remote.Kind().String(), "mid", mid, "rid", remote.RID(), "codec", codec.MimeType, "ssrc", uint32(remote.SSRC()), "payload_type", codec.PayloadType)
	c.pubMu.Lock()
	p, existed := c.published[mid]
	if !existed {
		p = &published{owner: c, mid: mid, track: forward.NewTrack(c.trackConfig(remote, receiver, mid))}
		c.published[mid] = p
	}
	c.pubMu.Unlock()
	up, err := p.track.AddUp(remote, c.sendPLI)
	if err != nil {
		c.log.Warn("ignored stream", "mid", mid, "rid", remote.RID(), "error", err)
		return
	}
	spawned := c.spawn(func() {
		if !existed {
			c.m.stats.tracks.Add(1)
			for _, r := range c.session.publish(p) {
				r.receive(p)
			}
		}
		if err := up.Run(); err != nil && !errors.Is(err, io.EOF) && c.ctx.Err() == nil {
			c.log.Debug("stream ended", "mid", mid, "layer", up.Layer(), "error", err)
		}
		if c.lastStreamEnded(p) {
			c.m.stats.tracks.Add(-1)
			for _, r := range c.session.unpublish(p) {
				r.stopReceiving(p)
			}
		}
	})
	if !spawned && !existed {
		c.pubMu.Lock()
		delete(c.published, mid)
		c.pubMu.Unlock()
	}
}

// lastStreamEnded reports, once, that a published track has no stream left.
func (c *connection) lastStreamEnded(p *published) bool {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if len(p.track.Layers()) > 0 || c.published[p.mid] != p {
		return false
	}
	delete(c.published, p.mid)
	return true
}

func (c *connection) midOf(receiver *webrtc.RTPReceiver) string {
	for _, t := range c.pc.GetTransceivers() {
		if t.Receiver() == receiver {
			return t.Mid()
		}
	}
	return ""
}

// trackConfig describes a track the client publishes on mid.
func (c *connection) trackConfig(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver, mid string) forward.TrackConfig {
	cfg := forward.TrackConfig{
		ID:               c.id + "/" + mid,
		Kind:             remote.Kind(),
		Codec:            remote.Codec(),
		Simulcast:        remote.Kind() == webrtc.RTPCodecTypeVideo && c.simulcastSender(),
		KeyframeThrottle: c.m.cfg.KeyframeThrottle,
		History:          c.m.cfg.NACKBufferSize,
		Sends:            c.m.engine.batch,
		Counters:         &c.m.stats.forwarded,
	}
	if remote.Kind() == webrtc.RTPCodecTypeAudio {
		for _, e := range receiver.GetParameters().HeaderExtensions {
			if e.URI == audioLevelURI {
				cfg.AudioLevelID = uint8(e.ID)
			}
		}
		if c.session.spotlight {
			s, id := c.session, c.id
			cfg.OnSpeech = func() { s.spoke(id) }
		}
	}
	return cfg
}

// sendPLI asks this client for a key frame of one of its streams.
func (c *connection) sendPLI(mediaSSRC uint32) {
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: mediaSSRC}}); err == nil {
		c.m.stats.plisSent.Add(1)
	}
}

// receive starts forwarding a published track to this connection, as the
// channel model routes it.
func (c *connection) receive(p *published) {
	c.downMu.Lock()
	if _, dup := c.down[p.track.ID()]; dup || c.ctx.Err() != nil {
		c.downMu.Unlock()
		return
	}
	sender := p.owner
	fwd := p.track.NewDown(sender.id, p.track.Kind().String()+"-"+sender.id, func(from, to int, byRequest bool) {
		c.simulcastSwitched(sender, from, to, byRequest)
	})
	d := &downTrack{pub: p, fwd: fwd}
	d.slot = c.reuseSlot(fwd)
	reused := d.slot != nil
	if !reused {
		// A transceiver of its own, never AddTrack: AddTrack may take over
		// the connection's upstream (server-recvonly) transceivers before
		// the first answer. The m-line offers every codec (see
		// videoCodecsPreferring); the down track binds to the publisher's
		// codec among those the client answered.
		tr, err := c.pc.AddTransceiverFromTrack(fwd, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			c.downMu.Unlock()
			c.log.Warn("add forwarded track", "track", p.track.ID(), "error", err)
			return
		}
		d.slot = &sendSlot{tr: tr, kind: fwd.Kind()}
		slot := d.slot
		c.spawn(func() { c.readReceiverRTCP(slot) })
	}
	d.slot.cur.Store(d)
	c.down[p.track.ID()] = d
	if reused {
		// The m-line's sender runs: the track's packets wait for the
		// answer that gives the client the new track.
		d.startAfter = c.offersMade.Load()
		c.starting = append(c.starting, d)
	}
	c.downMu.Unlock()
	c.session.route(c, d)
	if !reused {
		p.track.Add(fwd)
	}
	c.negotiate()
}

// reuseSlot puts fwd on a parked m-line of its kind that the client has
// seen parked, if there is one. downMu is held.
func (c *connection) reuseSlot(fwd *forward.Down) *sendSlot {
	answered := c.offersAnswered.Load()
	for i, slot := range c.parked {
		if slot.kind != fwd.Kind() || answered <= slot.parkedAfter {
			continue
		}
		fwd.ContinueFrom(slot.last)
		if err := slot.tr.Sender().ReplaceTrack(fwd); err != nil {
			// The client did not negotiate the publisher's codec on this
			// m-line: a new one offers every codec again.
			c.log.Debug("reuse m-line", "mid", slot.tr.Mid(), "error", err)
			continue
		}
		c.parked = slices.Delete(c.parked, i, i+1)
		return slot
	}
	return nil
}

// startReused starts forwarding on the reused m-lines whose new track the
// client has now answered. negMu is held.
func (c *connection) startReused() {
	answered := c.offersAnswered.Load()
	c.downMu.Lock()
	var ready []*downTrack
	c.starting = slices.DeleteFunc(c.starting, func(d *downTrack) bool {
		if answered > d.startAfter {
			ready = append(ready, d)
			return true
		}
		return false
	})
	c.downMu.Unlock()
	for _, d := range ready {
		d.pub.track.Add(d.fwd)
	}
}

// stopReceiving stops forwarding a track to this connection.
func (c *connection) stopReceiving(p *published) {
	c.downMu.Lock()
	d, ok := c.down[p.track.ID()]
	delete(c.down, p.track.ID())
	if ok {
		c.starting = slices.DeleteFunc(c.starting, func(s *downTrack) bool { return s == d })
	}
	c.downMu.Unlock()
	if !ok {
		return
	}
	p.track.Remove(d.fwd)
	d.slot.cur.Store(nil)
	if c.ctx.Err() != nil {
		return
	}
	c.downMu.Lock()
	c.parkedN++
	parked := &parkedTrack{id: "parked-" + strconv.Itoa(c.parkedN), kind: d.slot.kind}
	c.downMu.Unlock()
	if err := d.slot.tr.Sender().ReplaceTrack(parked); err != nil {
		// Not parked: the m-line stays with nothing on it.
		c.log.Debug("park m-line", "track", p.track.ID(), "error", err)
		c.negotiate()
		return
	}
	d.slot.parkedAfter, d.slot.last = c.offersMade.Load(), d.fwd
	c.downMu.Lock()
	c.parked = append(c.parked, d.slot)
	c.downMu.Unlock()
	c.negotiate()
}

// downTracks returns what this connection receives.
func (c *connection) downTracks() []*downTrack {
	c.downMu.Lock()
	defer c.downMu.Unlock()
	return slices.Collect(maps.Values(c.down))
}

// apply sets a down track to a route of the channel model.
func (d *downTrack) apply(rt channel.Route, ok bool) {
	switch {
	case !ok:
		d.fwd.SetRoute(-1, false)
	case d.pub.track.Kind() == webrtc.RTPCodecTypeAudio:
		if rt.Audio {
			d.fwd.SetRoute(0, false)
		} else {
			d.fwd.SetRoute(-1, false)
		}
	default:
		d.fwd.SetRoute(rt.Video.Layer(), rt.Paused)
	}
}

// readReceiverRTCP relays this receiver's key frame requests to the
// publisher (throttled) and answers its NACKs from the published stream's
// history.
func (c *connection) readReceiverRTCP(slot *sendSlot) {
	var seqs []uint16
	lost := receiverLoss{}
	for {
		pkts, _, err := slot.tr.Sender().ReadRTCP()
		if err != nil {
			return
		}
		d := slot.cur.Load()
		if d == nil {
			continue // parked
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				c.m.stats.plisReceived.Add(1)
				d.fwd.RequestKeyframe()
			case *rtcp.TransportLayerNack:
				c.m.stats.nacksReceived.Add(1)
				seqs = nackedSequences(p, seqs[:0])
				d.fwd.Resend(seqs)
			case *rtcp.ReceiverReport:
				for _, r := range p.Reports {
					c.m.stats.receiverLost.Add(lost.add(r.SSRC, r.TotalLost))
				}
			}
		}
	}
}

// receiverLoss turns the cumulative lost counts of one receiver's reports
// into increments, per source it reports on. A slot sends one SSRC at a
// time; the map is cleared past a few so that it stays small.
type receiverLoss map[uint32]uint32

// add records a report's cumulative count for ssrc and returns how many
// more packets it says were lost since the last report: 0 for the first
// report of a source, and when the count went down (duplicates make it
// so) or jumped by more than maxLossStep (the 24-bit count is signed, and a
// negative one reads as huge).
func (l receiverLoss) add(ssrc, total uint32) int64 {
	last, seen := l[ssrc]
	if !seen && len(l) >= 4 {
		clear(l)
	}
	l[ssrc] = total
	if !seen || total <= last || total-last > maxLossStep {
		return 0
	}
	return int64(total - last)
}

// maxLossStep is the largest increase of a receiver's cumulative lost
// count taken as real between two reports.
const maxLossStep = 1 << 16

// nackedSequences appends the sequence numbers a NACK names to dst, at most
// maxNACKed: a NACK can name 17 per pair and carry many pairs, and a
// receiver asking for more than a history holds gains nothing.
func nackedSequences(n *rtcp.TransportLayerNack, dst []uint16) []uint16 {
	for _, pair := range n.Nacks {
		pair.Range(func(seq uint16) bool {
			dst = append(dst, seq)
			return len(dst) < maxNACKed
		})
		if len(dst) >= maxNACKed {
			break
		}
	}
	return dst
}

// maxNACKed bounds the packets one NACK makes sorad resend.
const maxNACKed = 256

// simulcastSwitched tells this receiver that the layer it gets from sender
// changed.
func (c *connection) simulcastSwitched(sender *connection, from, to int, byRequest bool) {
	priority, trigger := "lower", "sender"
	if to > from {
		priority = "higher"
	}
	if byRequest {
		trigger = "receiver"
	}
	requested := channel.RIDNone
	c.session.mu.Lock()
	if rt, ok := c.session.model.Route(c.id, sender.id); ok {
		requested = rt.Video
	}
	c.session.mu.Unlock()
	c.send(signaling.SimulcastSwitched{
		EventType:          "simulcast.switched",
		Timestamp:          signaling.Timestamp(time.Now()),
		SenderConnectionID: sender.id,
		Priority:           priority,
		Trigger:            trigger,
		RPCRIDs:            []string{},
		AutoRIDs:           []string{},
		RequestRID:         string(requested),
		CurrentRID:         string(channel.LayerRID(to)),
		PreviousRID:        string(channel.LayerRID(from)),
	})
}
