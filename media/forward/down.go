package forward

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

const audioLevelURI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

// Down is what one receiver gets of a Track: a pion TrackLocal bound to
// the receiver's RTPSender. It rewrites every packet it forwards to the
// receiver's SSRC and payload type and to one continuous sequence of
// sequence numbers and timestamps, across simulcast layer switches and
// pauses, which happen only at key frames.
type Down struct {
	track    *Track
	id       string
	streamID string
	onSwitch func(from, to int, byRequest bool)

	mu sync.Mutex
	// Bound by the RTPSender.
	writer       webrtc.TrackLocalWriter
	ssrc         uint32
	pt           uint8
	audioLevelID uint8
	hdr          rtp.Header       // the outgoing header, reused: no allocation per packet
	ext          [2]rtp.Extension // storage for its extensions
	// What the receiver wants: a layer (0..2; audio and single-layer video
	// use 0), or -1 for nothing; paused stops video by PauseRtpStream.
	want        int
	paused      bool
	wantChanged bool // since the last switch
	// What it gets.
	current   int  // the layer forwarded, -1 before the first
	resync    bool // forward nothing until the next entry point (key frame for video)
	started   bool
	seqOffset uint16
	tsOffset  uint32
	lastSeq   uint16 // last sequence number and timestamp sent
	lastTS    uint32
	lastAt    int64  // Unix nanoseconds of the last packet sent
	entrySeq  uint16 // first incoming sequence number of the current run; older ones are dropped

	packets, bytes atomic.Int64
}

// Bind implements webrtc.TrackLocal: it takes the receiver's SSRC, the
// payload type it negotiated for the publisher's codec, and its audio
// level extension ID.
func (d *Down) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, ok := matchCodec(d.track.cfg.Codec, ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	var levelID uint8
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == audioLevelURI && d.track.cfg.Kind == webrtc.RTPCodecTypeAudio {
			levelID = uint8(e.ID)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writer, d.ssrc, d.pt, d.audioLevelID = ctx.WriteStream(), uint32(ctx.SSRC()), uint8(codec.PayloadType), levelID
	return codec, nil
}

// matchCodec finds the publisher's codec among those the receiver
// negotiated: the same MIME type and format parameters, else the same MIME
// type.
func matchCodec(want webrtc.RTPCodecParameters, have []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	for _, c := range have {
		if strings.EqualFold(c.MimeType, want.MimeType) && c.SDPFmtpLine == want.SDPFmtpLine {
			return c, true
		}
	}
	for _, c := range have {
		if strings.EqualFold(c.MimeType, want.MimeType) {
			return c, true
		}
	}
	return webrtc.RTPCodecParameters{}, false
}

// Unbind implements webrtc.TrackLocal.
func (d *Down) Unbind(webrtc.TrackLocalContext) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writer = nil
	return nil
}

// ContinueFrom makes d, which has sent nothing yet, continue prev's
// sequence numbers and timestamps: the two go to one receiver on the same
// SSRC (an m-line reused for another publisher's track), whose SRTP replay
// protection would drop packets numbered behind prev's for as long as it
// takes to catch up.
func (d *Down) ContinueFrom(prev *Down) {
	prev.mu.Lock()
	started, seq, ts, at := prev.started, prev.lastSeq, prev.lastTS, prev.lastAt
	prev.mu.Unlock()
	if !started {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.started, d.current = true, -1
	d.lastSeq, d.lastTS, d.lastAt = seq, ts, at
}

// ID implements webrtc.TrackLocal.
func (d *Down) ID() string { return d.id }

// RID implements webrtc.TrackLocal: the receiver gets one stream.
func (d *Down) RID() string { return "" }

// StreamID implements webrtc.TrackLocal.
func (d *Down) StreamID() string { return d.streamID }

// Kind implements webrtc.TrackLocal.
func (d *Down) Kind() webrtc.RTPCodecType { return d.track.cfg.Kind }

// Track returns the published track d forwards.
func (d *Down) Track() *Track { return d.track }

// SetRoute sets what the receiver wants: a layer (0..2) or -1 for nothing,
// and whether PauseRtpStream stopped it. Video that starts again after
// nothing or a pause resumes at a key frame, which is requested now.
func (d *Down) SetRoute(want int, paused bool) {
	d.mu.Lock()
	if want != d.want && d.started {
		d.wantChanged = true
	}
	restart := (d.paused && !paused) || (d.want < 0 && want >= 0)
	d.want, d.paused = want, paused
	if restart && d.started {
		d.resync = true
	}
	d.mu.Unlock()
	if restart {
		d.requestKeyframe()
	}
}

// RequestKeyframe asks the publisher for a key frame of what d forwards,
// or is waiting for (a receiver's PLI or FIR).
func (d *Down) RequestKeyframe() { d.requestKeyframe() }

func (d *Down) requestKeyframe() {
	now := time.Now().UnixNano()
	d.mu.Lock()
	layer := d.track.target(max(d.want, 0), now)
	if !d.resync && d.current >= 0 {
		layer = d.current
	}
	d.mu.Unlock()
	if layer < 0 {
		return
	}
	if u := d.track.ups[layer].Load(); u != nil {
		u.requestKeyframe(now)
	}
}

// DownStats is what one down track sent.
type DownStats struct {
	Layer   int // forwarded now, -1 for none
	Packets int64
	Bytes   int64
}

// Stats returns what d sent so far.
func (d *Down) Stats() DownStats {
	d.mu.Lock()
	layer := d.current
	if d.want < 0 || d.paused {
		layer = -1
	}
	d.mu.Unlock()
	return DownStats{Layer: layer, Packets: d.packets.Load(), Bytes: d.bytes.Load()}
}

// write forwards pkt of u to the receiver if it should have it. The lock
// is held while the packet is written: writes of one down track are
// ordered, and the header's extension storage is its own.
func (d *Down) write(u *Up, pkt *rtp.Packet, key bool, now int64) {
	var switched bool
	var from, to int
	var byRequest bool
	d.mu.Lock()
	if d.writer == nil || d.want < 0 || d.paused {
		d.mu.Unlock()
		return
	}
	if u.layer != d.current || d.resync {
		prev := d.current
		if !d.enter(u, pkt, key, now) {
			d.mu.Unlock()
			return
		}
		if prev >= 0 && prev != d.current {
			switched, from, to, byRequest = true, prev, d.current, d.wantChanged
			d.wantChanged = false
		}
	} else if int16(pkt.SequenceNumber-d.entrySeq) < 0 {
		d.mu.Unlock()
		return // sent before the current run began: not ours any more
	}
	hdr := d.rewrite(pkt)
	if !d.started || int16(hdr.SequenceNumber-d.lastSeq) > 0 {
		d.lastSeq, d.lastTS = hdr.SequenceNumber, hdr.Timestamp
	}
	d.lastAt, d.started = now, true
	_, err := d.writer.WriteRTP(hdr, pkt.Payload)
	d.mu.Unlock()
	if err == nil {
		d.packets.Add(1)
		d.bytes.Add(int64(len(pkt.Payload)))
	}
	if switched && d.onSwitch != nil {
		d.onSwitch(from, to, byRequest)
	}
}

// rewrite fills d's outgoing header for pkt: the receiver's SSRC, payload
// type, sequence number and timestamp. d.mu is held.
func (d *Down) rewrite(pkt *rtp.Packet) *rtp.Header {
	hdr := &d.hdr
	*hdr = pkt.Header
	hdr.SSRC = d.ssrc
	hdr.PayloadType = d.pt
	hdr.SequenceNumber = pkt.SequenceNumber - d.seqOffset
	hdr.Timestamp = pkt.Timestamp - d.tsOffset
	if pkt.PaddingSize != 0 && hdr.PaddingSize == 0 {
		hdr.PaddingSize = pkt.PaddingSize
	}
	// The publisher's extensions (mid, rid, its transport sequence
	// numbers) mean nothing to the receiver; the audio level does.
	hdr.Extension, hdr.ExtensionProfile, hdr.Extensions = false, 0, d.ext[:0]
	if up := d.track.cfg.AudioLevelID; up != 0 && d.audioLevelID != 0 {
		if level := pkt.GetExtension(up); len(level) > 0 {
			_ = hdr.SetExtension(d.audioLevelID, level)
		}
	}
	return hdr
}

// Resend sends the receiver again the packets it lost, by the sequence
// numbers it sees (a NACK's), from the history of the stream it gets, and
// returns how many it sent. It sends only packets of the run forwarded now:
// those sent before a layer switch or a pause carry sequence numbers of
// another mapping, and the decoder waits for the key frame that began this
// run anyway.
func (d *Down) Resend(seqs []uint16) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writer == nil || !d.started || d.current < 0 || d.want < 0 || d.paused {
		return 0
	}
	u := d.track.ups[d.current].Load()
	if u == nil || u.history == nil {
		return 0
	}
	var buf []byte
	var pkt rtp.Packet
	sent := 0
	for _, seq := range seqs {
		if int16(seq-d.lastSeq) > 0 {
			continue // not sent yet
		}
		in := seq + d.seqOffset
		if int16(in-d.entrySeq) < 0 {
			continue // before this run
		}
		var ok bool
		if buf, ok = u.history.get(in, buf[:0]); !ok || pkt.Unmarshal(buf) != nil {
			continue
		}
		if _, err := d.writer.WriteRTP(d.rewrite(&pkt), pkt.Payload); err == nil {
			sent++
		}
	}
	if c := d.track.cfg.Counters; c != nil {
		c.Retransmitted.Add(int64(sent))
	}
	return sent
}

// enter decides whether pkt, of a layer d does not forward now (or after a
// pause), starts a run: audio starts anywhere; video of the layer d should
// forward starts at a key frame, except the very first packets of a track
// without simulcast (its receiver asks for a key frame itself). It relinks
// the sequence numbers and timestamps so the receiver sees no gap.
func (d *Down) enter(u *Up, pkt *rtp.Packet, key bool, now int64) bool {
	t := d.track
	if t.cfg.Kind == webrtc.RTPCodecTypeVideo {
		if u.layer != t.target(d.want, now) {
			return false
		}
		if !key && (d.started || t.cfg.Simulcast) {
			u.requestKeyframe(now)
			return false
		}
	}
	if d.started {
		d.seqOffset = pkt.SequenceNumber - (d.lastSeq + 1)
		if u.layer != d.current {
			// Another layer has a timeline of its own: continue ours by the
			// time that passed.
			ticks := uint32(1)
			if elapsed := now - d.lastAt; elapsed > 0 {
				ticks = max(1, uint32(uint64(elapsed)*uint64(t.cfg.Codec.ClockRate)/uint64(time.Second)))
			}
			d.tsOffset = pkt.Timestamp - (d.lastTS + ticks)
		}
	}
	d.entrySeq = pkt.SequenceNumber
	d.current, d.resync = u.layer, false
	return true
}
