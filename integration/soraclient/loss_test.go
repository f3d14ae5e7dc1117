package soraclient

import (
	"net"
	"strings"
	"testing"
)

func TestSeqCounter(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []uint16
		want int64 // expected
	}{
		{"none", nil, 0},
		{"one", []uint16{7}, 1},
		{"in order", []uint16{1, 2, 3, 4}, 4},
		{"gap", []uint16{1, 2, 5, 6}, 6},
		{"late packet", []uint16{1, 3, 2, 4}, 4},
		{"repeated packet", []uint16{1, 2, 2, 3}, 3},
		{"wrap", []uint16{65534, 65535, 0, 1}, 4},
		{"wrap with a gap", []uint16{65533, 65535, 2}, 6},
		{"late packet across the wrap", []uint16{65534, 0, 65535, 1}, 4},
		{"late packet before the first", []uint16{10, 11, 9}, 3},
		{"two wraps and a late packet", append(seqRun(0, 70000), 4000), 70000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s seqCounter
			for _, q := range tc.seqs {
				s.add(q)
			}
			if got := s.expected(); got != tc.want {
				t.Errorf("expected() = %d, want %d", got, tc.want)
			}
		})
	}
}

// seqRun is n consecutive sequence numbers from first, wrapping.
func seqRun(first uint16, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = first + uint16(i)
	}
	return out
}

// TestLostPacketsCounted: packets the sequence numbers say were sent but
// never came are counted per track, as many as the packet log shows
// missing.
func TestLostPacketsCounted(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{publishers: []string{publisherID}, skipSeqEvery: 5})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-loss", Role: "recvonly", Video: true, RecordPackets: true,
	})
	if err := c.WaitPackets(ctx, publisherID, "video", 30); err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // the counters stay; no more packets come
	log := c.Packets(publisherID, "video")
	var gaps int64
	for i := 1; i < len(log); i++ {
		gaps += int64(log[i].Seq - log[i-1].Seq - 1)
	}
	st := c.Received()[publisherID+"/video"]
	if st.Packets != int64(len(log)) {
		t.Fatalf("%d packets counted, %d logged", st.Packets, len(log))
	}
	if gaps < 5 || st.Lost != gaps {
		t.Errorf("Lost = %d, want the %d numbers missing from the log (at least 5)", st.Lost, gaps)
	}
}

// TestAudioBitrateAndSentBytes: Opus frames are sized to the audio bit
// rate, and SentBytes counts the media the client sent.
func TestAudioBitrateAndSentBytes(t *testing.T) {
	for _, tc := range []struct {
		kbps     int
		wantSize int64
	}{{0, 80}, {64, 160}, {6, 15}} {
		ctx := testContext(t)
		fs := newFakeServer(t, fakeConfig{})
		c := mustConnect(t, ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-audio", Role: "sendonly", Audio: true, AudioBitrateKbps: tc.kbps})
		s := fs.session(t, ctx, 0)
		eventually(t, ctx, "audio at the server", func() bool { return s.packets("audio") >= 10 })
		if got := s.track("audio").lastSize.Load(); got != tc.wantSize {
			t.Errorf("%d kbit/s: Opus frames of %d bytes, want %d", tc.kbps, got, tc.wantSize)
		}
		if sent := c.SentBytes(); sent < 10*tc.wantSize || sent%tc.wantSize != 0 {
			t.Errorf("%d kbit/s: SentBytes = %d, want a multiple of %d, at least 10 frames", tc.kbps, sent, tc.wantSize)
		}
		_ = c.Close()
	}
}

// TestICEIPFilter: with a filter the client offers host candidates only on
// the addresses it admits.
func TestICEIPFilter(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{})
	c := mustConnect(t, ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-ice", Role: "sendonly", Audio: true,
		ICEIPFilter: func(ip net.IP) bool { return ip.IsLoopback() }})
	defer c.Close()
	s := fs.session(t, ctx, 0)
	s.waitMsg(t, ctx, "candidate")
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		if m["type"] != "candidate" {
			continue
		}
		cand, _ := m["candidate"].(string)
		f := strings.Fields(cand)
		if len(f) < 5 || net.ParseIP(f[4]) == nil || !net.ParseIP(f[4]).IsLoopback() {
			t.Errorf("candidate %q is not on a loopback address", cand)
		}
		n++
	}
	if n == 0 {
		t.Error("no candidate")
	}
}
