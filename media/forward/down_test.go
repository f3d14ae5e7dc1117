package forward

import (
	"slices"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// sent is one packet a down track wrote.
type sent struct {
	hdr     rtp.Header
	payload []byte
}

// recorder is the receiver's side of a bound down track.
type recorder struct{ pkts []sent }

func (r *recorder) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	c := *h
	c.Extensions = slices.Clone(h.Extensions)
	r.pkts = append(r.pkts, sent{hdr: c, payload: slices.Clone(payload)})
	return len(payload), nil
}

func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }

// bindContext is the TrackLocalContext a receiver's RTPSender gives.
type bindContext struct {
	codecs []webrtc.RTPCodecParameters
	exts   []webrtc.RTPHeaderExtensionParameter
	w      webrtc.TrackLocalWriter
	id     string
}

func (b bindContext) CodecParameters() []webrtc.RTPCodecParameters { return b.codecs }
func (b bindContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter {
	return b.exts
}
func (b bindContext) SSRC() webrtc.SSRC                       { return 777 }
func (b bindContext) SSRCRetransmission() webrtc.SSRC         { return 0 }
func (b bindContext) SSRCForwardErrorCorrection() webrtc.SSRC { return 0 }
func (b bindContext) WriteStream() webrtc.TrackLocalWriter    { return b.w }
func (b bindContext) ID() string                              { return "ctx" + b.id }
func (b bindContext) RTCPReader() interceptor.RTCPReader      { return nil }

var (
	vp8  = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
	opus = webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111}
)

// publisher drives a Track as the Up goroutines would, on a clock of its
// own: layer i sends from sequence number 1000*(i+1) and timestamp
// 100000*(i+1), one frame of one packet per 33 ms.
type publisher struct {
	t    *testing.T
	tr   *Track
	ups  []*Up
	seq  []uint16
	ts   []uint32
	now  int64
	plis map[int]int
}

func newPublisher(t *testing.T, cfg TrackConfig, layers int) *publisher {
	p := &publisher{t: t, tr: NewTrack(cfg), now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano(), plis: map[int]int{}}
	for i := 0; i < layers; i++ {
		u, err := p.tr.addUp(i, uint32(100+i), nil, func(uint32) { p.plis[i]++ })
		if err != nil {
			t.Fatal(err)
		}
		p.ups = append(p.ups, u)
		p.seq = append(p.seq, uint16(1000*(i+1)))
		p.ts = append(p.ts, uint32(100000*(i+1)))
	}
	return p
}

// send sends one packet of layer l (a key frame or not) and returns it.
func (p *publisher) send(l int, key bool) *rtp.Packet {
	payload := []byte{0x10, 0x01, byte(l)} // VP8 inter frame, the layer in the third byte
	if key {
		payload[1] = 0x00
	}
	if p.tr.cfg.Kind == webrtc.RTPCodecTypeAudio {
		payload = []byte{0xfc, byte(l)}
	}
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 100, SequenceNumber: p.seq[l], Timestamp: p.ts[l], SSRC: uint32(100 + l)}, Payload: payload}
	_ = pkt.SetExtension(3, []byte{0x42}) // a publisher extension (say, its transport sequence number)
	p.seq[l]++
	p.ts[l] += 3000
	raw, err := pkt.Marshal()
	if err != nil {
		p.t.Fatal(err)
	}
	p.ups[l].receive(pkt, raw, p.now)
	return pkt
}

// tick moves the clock by one frame interval.
func (p *publisher) tick() { p.now += int64(33 * time.Millisecond) }

// round sends one packet of every layer, then ticks.
func (p *publisher) round(keys ...int) {
	for l := range p.ups {
		p.send(l, slices.Contains(keys, l))
	}
	p.tick()
}

type switchEvent struct {
	from, to  int
	byRequest bool
}

func newDown(t *testing.T, p *publisher, want int) (*Down, *recorder, *[]switchEvent) {
	var switches []switchEvent
	d := p.tr.NewDown("sender", "video-sender", func(from, to int, byRequest bool) {
		switches = append(switches, switchEvent{from, to, byRequest})
	})
	rec := &recorder{}
	codecs := []webrtc.RTPCodecParameters{opus, vp8}
	codecs[1].PayloadType = 120 // the receiver's own payload type for VP8
	exts := []webrtc.RTPHeaderExtensionParameter{{URI: audioLevelURI, ID: 9}}
	if _, err := d.Bind(bindContext{codecs: codecs, exts: exts, w: rec}); err != nil {
		t.Fatal(err)
	}
	d.SetRoute(want, false)
	p.tr.Add(d)
	return d, rec, &switches
}

// layers returns the layer of each packet sent (the third payload byte).
func layers(r *recorder) []int {
	var out []int
	for _, s := range r.pkts {
		out = append(out, int(s.payload[len(s.payload)-1]))
	}
	return out
}

// checkContinuous asserts that the receiver saw one stream: its SSRC and
// payload type, sequence numbers one apart, timestamps rising, and none of
// the publisher's header extensions.
func checkContinuous(t *testing.T, r *recorder, pt uint8) {
	t.Helper()
	for i, s := range r.pkts {
		if s.hdr.SSRC != 777 || s.hdr.PayloadType != pt {
			t.Fatalf("packet %d: ssrc %d pt %d, want 777 %d", i, s.hdr.SSRC, s.hdr.PayloadType, pt)
		}
		if pt != 111 && (s.hdr.Extension || len(s.hdr.Extensions) > 0) {
			t.Fatalf("packet %d carries the publisher's header extensions: %+v", i, s.hdr.Extensions)
		}
		if i == 0 {
			continue
		}
		prev := r.pkts[i-1].hdr
		if s.hdr.SequenceNumber != prev.SequenceNumber+1 {
			t.Fatalf("packet %d: sequence number %d after %d", i, s.hdr.SequenceNumber, prev.SequenceNumber)
		}
		if int32(s.hdr.Timestamp-prev.Timestamp) <= 0 {
			t.Fatalf("packet %d: timestamp %d after %d", i, s.hdr.Timestamp, prev.Timestamp)
		}
	}
}

func TestSingleLayerStartsAtOnce(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8}, 1)
	_, rec, _ := newDown(t, p, 2) // wants r2: a track without simulcast has one layer
	in := p.send(0, false)
	p.send(0, false)
	if len(rec.pkts) != 2 {
		t.Fatalf("forwarded %d packets, want 2 (no wait for a key frame)", len(rec.pkts))
	}
	if got := rec.pkts[0].hdr; got.SequenceNumber != in.SequenceNumber || got.Timestamp != in.Timestamp {
		t.Errorf("first packet seq %d ts %d, want the publisher's %d %d", got.SequenceNumber, got.Timestamp, in.SequenceNumber, in.Timestamp)
	}
	checkContinuous(t, rec, 120)
}

func TestSimulcastSwitchesAtKeyFrames(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, Simulcast: true, LayerTimeout: 500 * time.Millisecond, KeyframeThrottle: time.Hour}, 3)
	p.round() // the publisher sends every layer before the receiver comes
	d, rec, switches := newDown(t, p, 1)

	p.round()  // no key frame: nothing yet, and a PLI for r1
	p.round(0) // a key frame of r0 is not what it wants
	if len(rec.pkts) != 0 || p.plis[1] != 1 || p.plis[0] != 0 {
		t.Fatalf("before a key frame of r1: %d packets, PLIs %v; want none and one PLI for r1", len(rec.pkts), p.plis)
	}
	p.round(1)
	p.round()
	if got := layers(rec); !slices.Equal(got, []int{1, 1}) {
		t.Fatalf("layers %v, want r1 from its key frame on", got)
	}

	// Asking for r2 keeps r1 flowing until a key frame of r2.
	d.SetRoute(2, false)
	p.round()
	p.round(2)
	p.round()
	if got := layers(rec); !slices.Equal(got, []int{1, 1, 1, 1, 2, 2}) {
		t.Fatalf("layers %v, want r1 until r2's key frame, then r2", got)
	}
	if want := []switchEvent{{1, 2, true}}; !slices.Equal(*switches, want) {
		t.Errorf("switches %v, want %v", *switches, want)
	}

	// r2 stops: after LayerTimeout the down track falls back to r1, at its
	// next key frame.
	for i := 0; i < 20; i++ {
		p.send(0, false)
		p.send(1, false)
		p.tick()
	}
	p.send(1, true)
	p.send(1, false)
	if got := layers(rec); !slices.Equal(got[6:], []int{1, 1}) {
		t.Fatalf("after r2 stopped: layers %v, want r1 from its key frame", got)
	}
	if want := []switchEvent{{1, 2, true}, {2, 1, false}}; !slices.Equal(*switches, want) {
		t.Errorf("switches %v, want %v", *switches, want)
	}
	checkContinuous(t, rec, 120)
	if st := d.Stats(); st.Layer != 1 || st.Packets != int64(len(rec.pkts)) {
		t.Errorf("stats %+v, want layer 1 and %d packets", st, len(rec.pkts))
	}
}

func TestSimulcastFallsBackToTheNearestLowerLayer(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, Simulcast: true}, 2) // r0 and r1 only
	p.round()
	_, rec, _ := newDown(t, p, 2)
	p.round(0, 1)
	p.round()
	if got := layers(rec); !slices.Equal(got, []int{1, 1}) {
		t.Fatalf("layers %v, want r1 for a request of r2 when r2 is not sent", got)
	}
	_, rec0, _ := newDown(t, p, 0)
	p.round(0, 1)
	if got := layers(rec0); !slices.Equal(got, []int{0}) {
		t.Fatalf("layers %v, want r0", got)
	}
}

// A receiver that comes before the layer it wants starts on what is there
// and moves up when the layer arrives.
func TestSimulcastColdStart(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, Simulcast: true}, 2)
	_, rec, switches := newDown(t, p, 1)
	p.send(0, true) // r1 has not been seen yet
	p.send(1, true)
	p.tick()
	p.round()
	if got := layers(rec); !slices.Equal(got, []int{0, 1, 1}) {
		t.Fatalf("layers %v, want r0 until r1 starts", got)
	}
	if want := []switchEvent{{0, 1, false}}; !slices.Equal(*switches, want) {
		t.Errorf("switches %v, want %v", *switches, want)
	}
	checkContinuous(t, rec, 120)
}

func TestPauseAndResumeAtAKeyFrame(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, KeyframeThrottle: time.Hour}, 1)
	d, rec, _ := newDown(t, p, 0)
	p.round()
	p.round()
	d.SetRoute(0, true)
	p.round(0) // even a key frame is not forwarded while paused
	p.round()
	if len(rec.pkts) != 2 {
		t.Fatalf("forwarded %d packets by the end of the pause, want 2", len(rec.pkts))
	}
	plis := p.plis[0]
	d.SetRoute(0, false)
	if p.plis[0] != plis+1 {
		t.Errorf("resume sent %d PLIs, want 1", p.plis[0]-plis)
	}
	p.round()
	p.round(0)
	p.round()
	if len(rec.pkts) != 4 || rec.pkts[2].payload[1] != 0x00 {
		t.Fatalf("after resume: %d packets, want 4 starting with the key frame", len(rec.pkts))
	}
	checkContinuous(t, rec, 120)
	// A late packet from before the resume is not forwarded.
	p.seq[0] -= 5
	p.send(0, false)
	if len(rec.pkts) != 4 {
		t.Errorf("a packet older than the resume point was forwarded")
	}
}

func TestAudioOffAndOn(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeAudio, Codec: opus, AudioLevelID: 1}, 1)
	d, rec, _ := newDown(t, p, 0)
	level := func(pkt *rtp.Packet) { _ = pkt.SetExtension(1, []byte{0x85}) }
	send := func() {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: p.seq[0], Timestamp: p.ts[0], SSRC: 100}, Payload: []byte{0xfc, 0}}
		level(pkt)
		p.seq[0]++
		p.ts[0] += 960
		p.tr.forward(p.ups[0], pkt, 20, p.now)
		p.tick()
	}
	send()
	d.SetRoute(-1, false) // unfocused in a spotlight channel: no audio
	send()
	send()
	d.SetRoute(0, false)
	send()
	if len(rec.pkts) != 2 {
		t.Fatalf("forwarded %d audio packets, want 2", len(rec.pkts))
	}
	checkContinuous(t, rec, 111)
	for i, s := range rec.pkts {
		if got := s.hdr.GetExtension(9); len(got) != 1 || got[0] != 0x85 {
			t.Errorf("packet %d: audio level %v under the receiver's ID 9, want [0x85] (extensions %+v)", i, got, s.hdr.Extensions)
		}
		if s.hdr.GetExtension(1) != nil {
			t.Errorf("packet %d keeps the publisher's extension ID", i)
		}
	}
	// The timestamp goes on with the sender's clock: same source.
	if d := rec.pkts[1].hdr.Timestamp - rec.pkts[0].hdr.Timestamp; d != 3*960 {
		t.Errorf("timestamp advanced by %d over three frames, want %d", d, 3*960)
	}
}

func TestBindRefusesAnUnknownCodec(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8}, 1)
	d := p.tr.NewDown("s", "t", nil)
	if _, err := d.Bind(bindContext{codecs: []webrtc.RTPCodecParameters{opus}, w: &recorder{}}); err != webrtc.ErrUnsupportedCodec {
		t.Errorf("Bind without VP8: %v, want ErrUnsupportedCodec", err)
	}
	p.tr.Add(d)
	p.send(0, true) // an unbound down track drops everything
	p.tr.Remove(d)
	if n := len(*p.tr.downs.Load()); n != 0 {
		t.Errorf("%d downs after Remove", n)
	}
}

func TestSpeechDetection(t *testing.T) {
	var s speechDetector
	now := int64(0)
	step := int64(20 * time.Millisecond)
	count := 0
	feed := func(level byte, n int) {
		for i := 0; i < n; i++ {
			if s.observe([]byte{level}, now) {
				count++
			}
			now += step
		}
	}
	feed(127, 50) // silence
	feed(30, 4)   // a short noise
	feed(127, 1)
	if count != 0 {
		t.Fatalf("%d reports before speech", count)
	}
	feed(30, 5)
	if count != 1 {
		t.Fatalf("%d reports after 100 ms of voice, want 1", count)
	}
	feed(0x80|30, 50) // one second more of voice (the V bit set): reported again every 500 ms
	if count != 3 {
		t.Errorf("%d reports after 1.1 s of voice, want 3", count)
	}
}

// TestContinueFrom: a down track that takes over another's SSRC (a reused
// m-line) goes on with its sequence numbers and timestamps, whatever the
// new publisher's own; the receiver sees one continuous stream.
func TestContinueFrom(t *testing.T) {
	first := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8}, 1)
	prev, rec, _ := newDown(t, first, 0)
	first.round(0)
	first.round()
	first.round()
	first.tr.Remove(prev)

	second := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8}, 1)
	second.seq[0], second.ts[0] = 7, 5 // far behind the first publisher's numbers
	d := second.tr.NewDown("other", "video-other", func(int, int, bool) {})
	d.ContinueFrom(prev)
	codecs := []webrtc.RTPCodecParameters{opus, vp8}
	codecs[1].PayloadType = 120
	if _, err := d.Bind(bindContext{codecs: codecs, w: rec}); err != nil {
		t.Fatal(err)
	}
	d.SetRoute(0, false)
	second.tr.Add(d)
	second.round()  // not a key frame: a continued track starts at one
	second.round(0) // key frame
	second.round()
	if len(rec.pkts) != 5 {
		t.Fatalf("%d packets sent, want 3 from the first publisher and 2 from the second (from its key frame)", len(rec.pkts))
	}
	checkContinuous(t, rec, 120)
}
