package media

import (
	"strings"
	"testing"

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
