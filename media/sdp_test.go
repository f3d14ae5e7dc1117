package media

import (
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/signaling"
)

func TestWithBandwidth(t *testing.T) {
	sdp := strings.Join([]string{
		"v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "b=AS:50", "a=mid:1", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:10", "a=sendonly", "",
	}, "\r\n")
	got := withBandwidth(sdp, "1", 1500)
	want := strings.Join([]string{
		"v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "b=AS:1500", "a=mid:1", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:10", "a=sendonly", "",
	}, "\r\n")
	if got != want {
		t.Fatalf("withBandwidth:\n%q\nwant\n%q", got, want)
	}
	if unchanged := withBandwidth(sdp, "7", 10); unchanged != sdp {
		t.Fatalf("an unknown mid changed the SDP:\n%q", unchanged)
	}
}

func TestWithSimulcastReceive(t *testing.T) {
	sdp := strings.Join([]string{
		"v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:1", "a=rid:x recv", "a=recvonly", "",
	}, "\r\n")
	encodings := []signaling.Encoding{{RID: "r0", Active: true}, {RID: "r1", Active: true}, {RID: "r2"}}
	got := withSimulcastReceive(sdp, "1", encodings)
	want := strings.Join([]string{
		"v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=recvonly",
		"m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:1", "a=recvonly",
		"a=rid:r0 recv", "a=rid:r1 recv", "a=rid:r2 recv", "a=simulcast:recv r0;r1;~r2", "",
	}, "\r\n")
	if got != want {
		t.Fatalf("withSimulcastReceive:\n%q\nwant\n%q", got, want)
	}
	if unchanged := withSimulcastReceive(sdp, "0", nil); unchanged != sdp {
		t.Fatalf("no encodings changed the SDP")
	}
}

// FuzzAnswerSDP feeds arbitrary answer messages down the path a client's
// answer takes before the PeerConnection applies it: the signaling decoder,
// then the SDP parser; and through the offer editors, which must not panic
// on any SDP either.
func FuzzAnswerSDP(f *testing.F) {
	f.Add(`{"type":"answer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"}`)
	f.Add(`{"type":"answer","sdp":""}`)
	f.Add(`{"type":"answer","sdp":"m=audio\r\na=mid:1\r\n"}`)
	f.Fuzz(func(t *testing.T, msg string) {
		var got *signaling.Answer
		h := &signaling.Handlers{Answer: func(a signaling.Answer) error { got = &a; return nil }}
		if _, _, err := signaling.Dispatch([]byte(msg), h); err != nil || got == nil {
			return
		}
		desc := webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: got.SDP}
		_, _ = desc.Unmarshal() // must not panic
		_ = withBandwidth(got.SDP, "0", 500)
		_ = withSimulcastReceive(got.SDP, "0", DefaultSimulcastEncodings())
	})
}
