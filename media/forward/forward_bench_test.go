package forward

import (
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// The forwarding hop alone, in process: one publisher packet handed to N
// receivers, each write marshalling the header and payload as the SRTP
// writer does, without the encryption and the UDP send that follow
// (BenchmarkFanout in package integration measures those too). The
// baseline, in the same run, is pion's TrackLocalStaticRTP, which sorad
// forwarded with before it had down tracks of its own.
//
//	go test -run '^$' -bench ForwardHop -benchtime 2s ./media/forward

// marshaller is a receiver's write stream that costs what marshalling the
// packet costs.
type marshaller struct{ buf []byte }

func (m *marshaller) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	n, err := h.MarshalTo(m.buf)
	if err != nil {
		return 0, err
	}
	return n + copy(m.buf[n:], payload), nil
}

func (m *marshaller) Write(b []byte) (int, error) { return len(b), nil }

func benchPacket() *rtp.Packet {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1, Timestamp: 1, SSRC: 5}, Payload: make([]byte, 1100)}
	_ = pkt.SetExtension(3, []byte{0, 1}) // the publisher's transport sequence number
	pkt.Payload[0] = 0x10
	return pkt
}

func BenchmarkForwardHop(b *testing.B) {
	for _, n := range []int{1, 10, 200} {
		b.Run(fmt.Sprintf("pion-TrackLocalStaticRTP/receivers=%d", n), func(b *testing.B) {
			track, err := webrtc.NewTrackLocalStaticRTP(vp8.RTPCodecCapability, "video", "s")
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if _, err := track.Bind(bindContext{codecs: []webrtc.RTPCodecParameters{vp8}, w: &marshaller{buf: make([]byte, 1500)}, id: fmt.Sprint(i)}); err != nil {
					b.Fatal(err)
				}
			}
			pkt := benchPacket()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pkt.SequenceNumber++
				if err := track.WriteRTP(pkt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/forwarded-pkt")
		})
		b.Run(fmt.Sprintf("sorad-Down/receivers=%d", n), func(b *testing.B) {
			// With the packet history sorad keeps for retransmission.
			tr := NewTrack(TrackConfig{Kind: webrtc.RTPCodecTypeVideo, Codec: vp8, History: 1024})
			up, err := tr.addUp(0, 5, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				d := tr.NewDown("s", "video", nil)
				if _, err := d.Bind(bindContext{codecs: []webrtc.RTPCodecParameters{vp8}, w: &marshaller{buf: make([]byte, 1500)}}); err != nil {
					b.Fatal(err)
				}
				tr.Add(d)
			}
			pkt := benchPacket()
			raw, err := pkt.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pkt.SequenceNumber++
				up.receive(pkt, raw, time.Now().UnixNano())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/forwarded-pkt")
		})
	}
}
