package integration

import (
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestLostVideoPacketsAreResent: a receiver that reports video packets lost
// (an RTCP NACK) gets them again, from the one history the node keeps of
// the published stream, with the sequence numbers and timestamps it got
// them with the first time.
func TestLostVideoPacketsAreResent(t *testing.T) {
	n, ctx := mediaNode(t, 30*time.Second)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "resend", Role: "sendonly", Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "resend", Role: "recvonly", Video: true, RecordPackets: true, AcceptReplays: true})
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 100); err != nil {
		t.Fatalf("no video: %v", err)
	}
	resent0, err := n.Metric("sorad_retransmitted_packets_total")
	if err != nil {
		t.Fatal(err)
	}
	log := sub.Packets(pub.ConnectionID(), "video")
	first := map[uint16]soraclient.PacketInfo{}
	var seqs []uint16
	for _, back := range []int{60, 45, 30, 20, 10} {
		p := log[len(log)-back]
		seqs = append(seqs, p.Seq)
		first[p.Seq] = p
	}
	if err := sub.RequestResend(pub.ConnectionID(), "video", seqs); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "every packet asked for arrives again", func() bool {
		seen := map[uint16]int{}
		for _, p := range sub.Packets(pub.ConnectionID(), "video") {
			if f, ok := first[p.Seq]; ok {
				if p.Timestamp != f.Timestamp || p.SSRC != f.SSRC {
					t.Fatalf("packet %d came again with timestamp %d ssrc %d, first %d %d", p.Seq, p.Timestamp, p.SSRC, f.Timestamp, f.SSRC)
				}
				seen[p.Seq]++
			}
		}
		for _, seq := range seqs {
			if seen[seq] < 2 {
				return false
			}
		}
		return true
	})
	resent, err := n.Metric("sorad_retransmitted_packets_total")
	if err != nil {
		t.Fatal(err)
	}
	if resent-resent0 < float64(len(seqs)) {
		t.Errorf("sorad_retransmitted_packets_total rose by %v, want at least %d", resent-resent0, len(seqs))
	}
}
