package integration

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/soraclient"
)

// needFFmpeg returns ffmpeg's path; without it the test fails under CI
// (.ci/run installs it) and skips loudly elsewhere.
func needFFmpeg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err != nil {
		skipOrFail(t, "ffmpeg is not installed (apt-get install ffmpeg; .ci/run does); the RTP forwarding test needs it")
	}
	return p
}

// freeRTPPort finds an even UDP port on 127.0.0.1 whose next port (RTCP)
// is free too, as an RTP receiver needs.
func freeRTPPort(t *testing.T, avoid ...int) int {
	t.Helper()
	for range 100 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port &^ 1
		c.Close()
		ok := p > 1024
		for _, a := range avoid {
			ok = ok && p != a && p != a+1 && p+1 != a
		}
		for _, q := range []int{p, p + 1} {
			if !ok {
				break
			}
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: q})
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free RTP port pair")
	return 0
}

// TestRTPForwardingToFFmpeg: a publisher sends real VP8 (encoded by ffmpeg
// beforehand) and Opus; StartForwardingRtp aims them at ffmpeg, which opens
// the returned SDP as it is and decodes frames of both; StopForwardingRtp
// ends it.
func TestRTPForwardingToFFmpeg(t *testing.T) {
	ffmpeg := needFFmpeg(t)
	dir := t.TempDir()
	ivf := filepath.Join(dir, "testsrc.ivf")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	enc := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
		"-t", "2", "-c:v", "libvpx", "-g", "15", "-b:v", "400k", "-y", ivf)
	if out, err := enc.CombinedOutput(); err != nil {
		t.Fatalf("encode the test video: %v\n%s", err, out)
	}

	n, ctx2 := mediaNode(t, 90*time.Second)
	pub := connectClient(t, ctx2, n, soraclient.Options{ChannelID: "to-ffmpeg", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", VideoIVF: ivf})
	sub := connectClient(t, ctx2, n, soraclient.Options{ChannelID: "to-ffmpeg", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx2, pub.ConnectionID(), "video", 30); err != nil {
		t.Fatal(err)
	}
	audioPort := freeRTPPort(t)
	videoPort := freeRTPPort(t, audioPort)
	var answer struct {
		SDP string `json:"sdp"`
	}
	r := n.MustCall(200, "Sora_20170814.StartForwardingRtp", map[string]any{
		"channel_id": "to-ffmpeg", "connection_id": pub.ConnectionID(), "ip_address": "127.0.0.1", "audio_port": audioPort, "video_port": videoPort,
	})
	if err := r.JSON(&answer); err != nil || !strings.HasPrefix(answer.SDP, "v=0\r\n") {
		t.Fatalf("StartForwardingRtp answered %s", r.Body)
	}
	sdpFile := filepath.Join(dir, "forward.sdp")
	if err := os.WriteFile(sdpFile, []byte(answer.SDP), 0o600); err != nil {
		t.Fatal(err)
	}
	// framecrc prints one line per decoded frame: "<stream>, ...".
	dec := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp",
		"-i", sdpFile, "-t", "4", "-map", "0", "-f", "framecrc", "-")
	var out, errOut bytes.Buffer
	dec.Stdout, dec.Stderr = &out, &errOut
	if err := dec.Run(); err != nil {
		t.Fatalf("ffmpeg on the forwarded RTP: %v\n%s\nSDP:\n%s", err, errOut.String(), answer.SDP)
	}
	frames := map[string]int{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		stream, _, _ := strings.Cut(line, ",")
		frames[strings.TrimSpace(stream)]++
	}
	t.Logf("ffmpeg decoded %v frames per stream in 4 s (SDP:\n%s)", frames, answer.SDP)
	// The SDP lists audio first: stream 0 is Opus (50 frames a second),
	// stream 1 VP8 (30 a second); some are lost while ffmpeg starts.
	if frames["0"] < 50 || frames["1"] < 30 {
		t.Fatalf("decoded %v frames, want at least 50 audio and 30 video\n%s", frames, errOut.String())
	}

	n.MustCall(200, "Sora_20170814.StopForwardingRtp", map[string]string{"channel_id": "to-ffmpeg", "connection_id": pub.ConnectionID()})
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: videoPort})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	_ = probe.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := probe.Read(make([]byte, 1500)); err == nil {
		t.Fatal("RTP still arrives after StopForwardingRtp")
	}
	r2, err := n.Call("Sora_20170814.StopForwardingRtp", map[string]string{"channel_id": "to-ffmpeg", "connection_id": pub.ConnectionID()})
	if err != nil {
		t.Fatal(err)
	}
	apiError(t, r2, 404, "RTP-FORWARDING-NOT-FOUND")
	r3, err := n.Call("Sora_20170814.StartForwardingRtp", map[string]any{"channel_id": "to-ffmpeg", "ip_address": "192.0.2.10", "video_port": 5004})
	if err != nil {
		t.Fatal(err)
	}
	apiError(t, r3, 400, "RTP-FORWARDING-NOT-ALLOWED")
}
