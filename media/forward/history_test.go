package forward

import (
	"bytes"
	"slices"
	"testing"

	"github.com/pion/webrtc/v4"
)

func TestHistoryKeepsTheLastPackets(t *testing.T) {
	tests := []struct {
		name    string
		size    uint16
		put     []uint16
		get     uint16
		want    bool
		entries int
	}{
		{"kept", 8, []uint16{10, 11, 12}, 11, true, 8},
		{"never put", 8, []uint16{10, 11, 12}, 13, false, 8},
		{"overwritten by the packet size later", 8, []uint16{10, 18}, 10, false, 8},
		{"the newer one in that slot", 8, []uint16{10, 18}, 18, true, 8},
		{"across the sequence number wrap", 8, []uint16{65534, 65535, 0, 1}, 65535, true, 8},
		{"size rounded up to a power of two", 1000, []uint16{1, 1001}, 1, true, 1024},
		{"one packet", 1, []uint16{5, 6}, 5, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistory(tt.size)
			if len(h.entries) != tt.entries {
				t.Fatalf("%d entries, want %d", len(h.entries), tt.entries)
			}
			for _, seq := range tt.put {
				h.put(seq, []byte{byte(seq >> 8), byte(seq), 0xaa})
			}
			got, ok := h.get(tt.get, []byte{0xff})
			if ok != tt.want {
				t.Fatalf("get(%d) found %v, want %v", tt.get, ok, tt.want)
			}
			want := []byte{0xff}
			if ok {
				want = append(want, byte(tt.get>>8), byte(tt.get), 0xaa)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("get(%d) = %x, want %x (appended to dst)", tt.get, got, want)
			}
		})
	}
}

func TestHistoryCopiesWhatItKeeps(t *testing.T) {
	h := newHistory(4)
	buf := []byte{1, 2, 3}
	h.put(7, buf)
	buf[0] = 9 // the Up reuses its read buffer
	if got, _ := h.get(7, nil); !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("kept %v, want the packet as it was put", got)
	}
}

// sentBySeq finds the packet a receiver got with sequence number seq.
func sentBySeq(t *testing.T, r *recorder, seq uint16) sent {
	t.Helper()
	for _, s := range r.pkts {
		if s.hdr.SequenceNumber == seq {
			return s
		}
	}
	t.Fatalf("the receiver got no packet %d", seq)
	return sent{}
}

func TestResendAnswersFromTheSharedHistory(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, Simulcast: true, KeyframeThrottle: 1, History: 16}, 2)
	p.round(0, 1)
	d, rec, _ := newDown(t, p, 0)
	_, otherRec, _ := newDown(t, p, 1)
	p.round(0, 1)
	for range 3 {
		p.round()
	}
	// Layer 0 ran from its key frame; switch to layer 1 at its next key
	// frame, which moves the receiver's sequence numbers onto another
	// offset.
	d.SetRoute(1, false)
	p.round(1)
	p.round()
	p.round()
	if got := layers(rec); !slices.Equal(got, []int{0, 0, 0, 0, 0, 1, 1, 1}) {
		t.Fatalf("layers %v, want five of r0 then three of r1", got)
	}
	before := slices.Clone(rec.pkts)
	r0Seq := before[1].hdr.SequenceNumber // of the run before the switch
	r1Seqs := []uint16{before[5].hdr.SequenceNumber, before[7].hdr.SequenceNumber}
	notYet := before[7].hdr.SequenceNumber + 1
	othersBefore := len(otherRec.pkts)

	if n := d.Resend([]uint16{r1Seqs[0], r0Seq, notYet, r1Seqs[1]}); n != 2 {
		t.Fatalf("resent %d packets, want 2 (those of the current run)", n)
	}
	again := rec.pkts[len(before):]
	for i, seq := range r1Seqs {
		orig := sentBySeq(t, &recorder{pkts: before}, seq)
		got := again[i]
		if got.hdr.SequenceNumber != seq || got.hdr.Timestamp != orig.hdr.Timestamp || got.hdr.SSRC != 777 || got.hdr.PayloadType != 120 {
			t.Errorf("resent %d: seq %d ts %d ssrc %d pt %d; want as first sent: %d %d 777 120", i,
				got.hdr.SequenceNumber, got.hdr.Timestamp, got.hdr.SSRC, got.hdr.PayloadType, orig.hdr.SequenceNumber, orig.hdr.Timestamp)
		}
		if !bytes.Equal(got.payload, orig.payload) || got.hdr.Extension {
			t.Errorf("resent %d: payload %x extensions %v; want %x and none", i, got.payload, got.hdr.Extensions, orig.payload)
		}
	}
	if len(otherRec.pkts) != othersBefore {
		t.Errorf("another receiver of the track got %d packets more: a resend goes only to who asked", len(otherRec.pkts)-othersBefore)
	}

	// Past the history's size, the packets are gone.
	for range 16 {
		p.round()
	}
	if n := d.Resend(r1Seqs); n != 0 {
		t.Errorf("resent %d packets older than the history, want 0", n)
	}
	// A paused receiver gets nothing again.
	last := rec.pkts[len(rec.pkts)-1].hdr.SequenceNumber
	d.SetRoute(1, true)
	if n := d.Resend([]uint16{last}); n != 0 {
		t.Errorf("resent %d packets to a paused receiver, want 0", n)
	}
}

func TestResendWithoutHistory(t *testing.T) {
	p := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8}, 1)
	d, rec, _ := newDown(t, p, 0)
	p.round(0)
	if n := d.Resend([]uint16{rec.pkts[0].hdr.SequenceNumber}); n != 0 {
		t.Errorf("resent %d packets with no history, want 0", n)
	}
	a := newPublisher(t, TrackConfig{Kind: webrtc.RTPCodecTypeAudio, Codec: opus, History: 16}, 1)
	if a.ups[0].history != nil {
		t.Errorf("an audio track keeps a history; audio is not retransmitted")
	}
}
