// Package forward moves RTP from publishers to receivers: one Track per
// published track (a connection's audio or video m-line), with an Up per
// RTP stream the publisher sends on it (one, or one per simulcast layer),
// and a Down per receiver. A Down is the receiver's own pion TrackLocal: it
// owns the SSRC, payload type, sequence number and timestamp the receiver
// sees, the layer it forwards and the one it wants, and whether it is
// paused, so every receiver can get something different from the same
// publisher.
//
// The packet path is one goroutine per Up (Up.Run): it reads a packet into
// a buffer it reuses and hands it to every Down of the track, which decides
// and rewrites a copy of the header. Downs are added and removed by
// replacing an immutable slice, so the packet path takes no lock but each
// Down's own.
package forward

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Layers is the number of simulcast layers: r0 (lowest) to r2.
const Layers = 3

// TrackConfig describes a published track.
type TrackConfig struct {
	ID        string // for logs and stats: connection ID / mid
	Kind      webrtc.RTPCodecType
	Codec     webrtc.RTPCodecParameters // what the publisher sends
	Simulcast bool                      // up to three Ups, one per rid
	// KeyframeThrottle is the least time between a key frame request (PLI)
	// sent for one Up and both the last request and the last key frame
	// that arrived: publishers ignore requests sooner than that (libwebrtc
	// sends at most one key frame per 300 ms). A request that comes
	// sooner is sent when that time is up, once for all that came
	// meanwhile, unless a key frame arrives first.
	KeyframeThrottle time.Duration
	// LayerTimeout is how long a simulcast layer may go without a packet
	// before down tracks leave it for another.
	LayerTimeout time.Duration
	// AudioLevelID is the publisher's ssrc-audio-level header extension ID
	// (0: not negotiated). Receivers get the level too, and OnSpeech, when
	// set, is called as the publisher starts speaking (spotlight).
	AudioLevelID uint8
	OnSpeech     func()
	// History is how many packets of each video stream are kept to answer
	// receivers' NACKs, one copy shared by all receivers (a power of two;
	// 0 keeps none). Audio is not retransmitted.
	History uint16
	// Sends, when set, is held while one packet is handed to the down
	// tracks, so that the packets to its receivers go out together
	// (media/udpbatch).
	Sends Batcher
	// Counters, when set, count every packet and byte received (node-wide).
	Counters *Counters
}

// Batcher gathers the packets written between Hold and Release.
type Batcher interface {
	Hold()
	Release()
}

// Counters are totals shared by many tracks.
type Counters struct {
	Packets, Bytes atomic.Int64
	// Retransmitted counts the packets sent again to receivers that asked
	// (NACK).
	Retransmitted atomic.Int64
}

// Track is one published track.
type Track struct {
	cfg   TrackConfig
	isKey func([]byte) bool

	ups   [Layers]atomic.Pointer[Up]
	mu    sync.Mutex // serialises changes of downs
	downs atomic.Pointer[[]*Down]

	speech speechDetector // audio only; used by the one Up's goroutine
}

// NewTrack returns a track with no Up and no Down yet.
func NewTrack(cfg TrackConfig) *Track {
	if cfg.KeyframeThrottle <= 0 {
		cfg.KeyframeThrottle = 300 * time.Millisecond
	}
	if cfg.LayerTimeout <= 0 {
		cfg.LayerTimeout = time.Second
	}
	t := &Track{cfg: cfg, isKey: keyframeDetector(cfg.Codec.MimeType)}
	t.downs.Store(&[]*Down{})
	return t
}

// ID returns the track's ID.
func (t *Track) ID() string { return t.cfg.ID }

// Kind returns audio or video.
func (t *Track) Kind() webrtc.RTPCodecType { return t.cfg.Kind }

// Codec returns the publisher's codec.
func (t *Track) Codec() webrtc.RTPCodecParameters { return t.cfg.Codec }

// Simulcast reports whether the track has a layer per rid.
func (t *Track) Simulcast() bool { return t.cfg.Simulcast }

// LayerOf is the layer index of a rid: "" (no simulcast) and r0 are 0.
func LayerOf(rid string) (int, error) {
	switch rid {
	case "", "r0":
		return 0, nil
	case "r1":
		return 1, nil
	case "r2":
		return 2, nil
	}
	return 0, fmt.Errorf("rid %q is not r0, r1 or r2", rid)
}

// ErrLayerTaken is returned by AddUp for a second stream of one layer.
var ErrLayerTaken = errors.New("the track already has that layer")

// Up is one RTP stream a publisher sends: the track itself, or one of its
// simulcast layers.
type Up struct {
	track *Track
	layer int
	ssrc  uint32
	read  func([]byte) (int, error)
	pli   func(mediaSSRC uint32)
	// history keeps the last packets for retransmission (video; nil
	// without TrackConfig.History).
	history *history

	lastPacket     atomic.Int64 // Unix nanoseconds
	lastKeyRequest atomic.Int64 // Unix nanoseconds
	lastKeyframe   atomic.Int64 // Unix nanoseconds: when a key frame last arrived
	packets, bytes atomic.Int64

	deferMu    sync.Mutex
	deferred   *time.Timer // a key frame request waiting for its time; see requestKeyframe
	deferredAt int64       // when the first request it stands for came
	ended      bool        // Run returned: nothing is deferred any more
}

// AddUp adds the stream remote of the layer its rid names. pli sends a key
// frame request for it to the publisher.
func (t *Track) AddUp(remote *webrtc.TrackRemote, pli func(mediaSSRC uint32)) (*Up, error) {
	layer, err := LayerOf(remote.RID())
	if err != nil {
		return nil, err
	}
	read := func(b []byte) (int, error) {
		n, _, err := remote.Read(b)
		return n, err
	}
	return t.addUp(layer, uint32(remote.SSRC()), read, pli)
}

func (t *Track) addUp(layer int, ssrc uint32, read func([]byte) (int, error), pli func(uint32)) (*Up, error) {
	u := &Up{track: t, layer: layer, ssrc: ssrc, read: read, pli: pli}
	if t.cfg.Kind == webrtc.RTPCodecTypeVideo && t.cfg.History > 0 {
		u.history = newHistory(t.cfg.History)
	}
	if !t.ups[layer].CompareAndSwap(nil, u) {
		return nil, ErrLayerTaken
	}
	return u, nil
}

// Layer returns the Up's layer index.
func (u *Up) Layer() int { return u.layer }

// Run forwards the stream's packets until it ends (the PeerConnection
// closed), then removes the Up from its track.
func (u *Up) Run() error {
	defer u.end()
	defer u.track.ups[u.layer].CompareAndSwap(u, nil)
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, err := u.read(buf)
		if err != nil {
			return err
		}
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		u.receive(&pkt, buf[:n], time.Now().UnixNano())
	}
}

// receive keeps a packet of u (raw, as it arrived) for retransmission and
// forwards it.
func (u *Up) receive(pkt *rtp.Packet, raw []byte, now int64) {
	if u.history != nil {
		u.history.put(pkt.SequenceNumber, raw)
	}
	u.track.forward(u, pkt, len(raw), now)
}

// forward hands one packet of u to every down track. pkt and its payload
// are valid only during the call: downs copy what they keep.
func (t *Track) forward(u *Up, pkt *rtp.Packet, size int, now int64) {
	u.lastPacket.Store(now)
	u.packets.Add(1)
	u.bytes.Add(int64(size))
	if c := t.cfg.Counters; c != nil {
		c.Packets.Add(1)
		c.Bytes.Add(int64(size))
	}
	key := t.cfg.Kind == webrtc.RTPCodecTypeVideo && t.isKey(pkt.Payload)
	if key {
		u.lastKeyframe.Store(now)
	}
	if t.cfg.OnSpeech != nil && t.cfg.AudioLevelID != 0 {
		if t.speech.observe(pkt.GetExtension(t.cfg.AudioLevelID), now) {
			t.cfg.OnSpeech()
		}
	}
	downs := *t.downs.Load()
	if b := t.cfg.Sends; b != nil && len(downs) > 1 {
		b.Hold()
		defer b.Release()
	}
	for _, d := range downs {
		d.write(u, pkt, key, now)
	}
}

// requestKeyframe asks the publisher for a key frame of this stream, now
// or, within KeyframeThrottle of the last request or key frame, when that
// time is up (see TrackConfig.KeyframeThrottle).
func (u *Up) requestKeyframe(now int64) {
	if u.track.cfg.Kind != webrtc.RTPCodecTypeVideo || u.pli == nil {
		return
	}
	last := u.lastKeyRequest.Load()
	next := max(last, u.lastKeyframe.Load()) + int64(u.track.cfg.KeyframeThrottle)
	if now < next {
		u.deferRequest(now, time.Duration(next-now))
		return
	}
	if !u.lastKeyRequest.CompareAndSwap(last, now) {
		return // another request went just now
	}
	u.pli(u.ssrc)
}

// deferRequest sends a key frame request after wait, unless one is
// waiting already or a key frame arrives meanwhile.
func (u *Up) deferRequest(now int64, wait time.Duration) {
	u.deferMu.Lock()
	defer u.deferMu.Unlock()
	if u.deferred != nil || u.ended {
		return
	}
	u.deferredAt = now
	u.deferred = time.AfterFunc(wait, func() {
		u.deferMu.Lock()
		u.deferred = nil
		ended, asked := u.ended, u.deferredAt
		u.deferMu.Unlock()
		if !ended && u.lastKeyframe.Load() < asked {
			u.requestKeyframe(time.Now().UnixNano())
		}
	})
}

// end stops a deferred key frame request: the stream is gone.
func (u *Up) end() {
	u.deferMu.Lock()
	defer u.deferMu.Unlock()
	u.ended = true
	if u.deferred != nil {
		u.deferred.Stop()
		u.deferred = nil
	}
}

// live reports whether layer l received a packet within LayerTimeout.
func (t *Track) live(l int, now int64) bool {
	u := t.ups[l].Load()
	return u != nil && now-u.lastPacket.Load() < int64(t.cfg.LayerTimeout)
}

// target is the layer a down track that wants layer want should forward:
// the highest live layer up to want, else the lowest live one above; -1
// when none is live. A track without simulcast has the one layer 0.
func (t *Track) target(want int, now int64) int {
	if !t.cfg.Simulcast {
		return 0
	}
	for l := min(want, Layers-1); l >= 0; l-- {
		if t.live(l, now) {
			return l
		}
	}
	for l := want + 1; l < Layers; l++ {
		if t.live(l, now) {
			return l
		}
	}
	return -1
}

// LayerStats counts one layer's received packets.
type LayerStats struct {
	Layer   int
	SSRC    uint32
	Packets int64
	Bytes   int64
}

// Layers returns the statistics of the layers being received.
func (t *Track) Layers() []LayerStats {
	var out []LayerStats
	for i := range t.ups {
		if u := t.ups[i].Load(); u != nil {
			out = append(out, LayerStats{Layer: i, SSRC: u.ssrc, Packets: u.packets.Load(), Bytes: u.bytes.Load()})
		}
	}
	return out
}

// NewDown returns a down track of t for one receiver, with the MediaStream
// and track IDs the receiver sees. onSwitch, when set, is called (outside
// any lock of the packet path) each time the down track moves from one
// simulcast layer to another; byRequest tells whether a change of the
// wanted layer caused it. The down track forwards nothing until it is
// added with Add and bound by its RTPSender.
func (t *Track) NewDown(streamID, trackID string, onSwitch func(from, to int, byRequest bool)) *Down {
	return &Down{track: t, streamID: streamID, id: trackID, onSwitch: onSwitch, want: 0, current: -1}
}

// Add makes d receive the track's packets.
func (t *Track) Add(d *Down) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.downs.Load()
	next := make([]*Down, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	t.downs.Store(&next)
}

// Remove stops d receiving the track's packets.
func (t *Track) Remove(d *Down) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.downs.Load()
	next := make([]*Down, 0, len(old))
	for _, o := range old {
		if o != d {
			next = append(next, o)
		}
	}
	t.downs.Store(&next)
}

// speech detects the start of speech from the audio level a publisher
// puts in each packet (RFC 6464: 0 is the loudest, 127 silence, in -dBov).
type speechDetector struct {
	streak   int   // packets in a row louder than the threshold
	lastCall int64 // Unix nanoseconds of the last report
}

const (
	// speechLevel is the quietest level counted as voice (-50 dBov).
	speechLevel = 50
	// speechPackets is how many loud packets in a row make speech: 100 ms
	// of 20 ms Opus frames.
	speechPackets = 5
	// speechRepeat is how often ongoing speech is reported again.
	speechRepeat = 500 * time.Millisecond
)

// observe takes one packet's audio level extension and reports whether
// speech started (or goes on, once per speechRepeat).
func (s *speechDetector) observe(ext []byte, now int64) bool {
	if len(ext) == 0 {
		return false
	}
	if ext[0]&0x7f > speechLevel {
		s.streak = 0
		return false
	}
	s.streak++
	if s.streak < speechPackets || now-s.lastCall < int64(speechRepeat) {
		return false
	}
	s.lastCall = now
	return true
}
