package media

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/soraclient"
)

// rtpSink counts the RTP packets a UDP socket receives.
type rtpSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	pkts []rtp.Header
	done chan struct{}
}

func newRTPSink(t *testing.T) *rtpSink {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &rtpSink{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1500)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil {
				s.mu.Lock()
				s.pkts = append(s.pkts, p.Header)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

func (s *rtpSink) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *rtpSink) headers() []rtp.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rtp.Header(nil), s.pkts...)
}

func waitHeaders(t *testing.T, s *rtpSink, n int) []rtp.Header {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if h := s.headers(); len(h) >= n {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d RTP packets received, want %d", len(s.headers()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRTPForwarding: a sender's audio and video reach a plain UDP receiver
// as RTP with the payload types the returned SDP names, one SSRC each and
// continuous sequence numbers, until StopForwardingRtp; forbidden
// addresses and unknown connections are refused.
func TestRTPForwarding(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, RTPForwardNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	pub, err := connect(t, url, soraclient.Options{ChannelID: "fwd", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := connect(t, url, soraclient.Options{ChannelID: "fwd", Role: "recvonly", Audio: true, Video: true})
	if err != nil {
		t.Fatal(err)
	}
	audio, video := newRTPSink(t), newRTPSink(t)
	target := RTPForwardTarget{IP: netip.MustParseAddr("127.0.0.1"), AudioPort: audio.port(), VideoPort: video.port()}

	// The sender's tracks are there once its media flows (a second call
	// would start the forwarding again, with new SSRCs).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, kind := range []string{"audio", "video"} {
		if err := sub.WaitPackets(ctx, pub.ConnectionID(), kind, 1); err != nil {
			t.Fatal(err)
		}
	}
	sdp, err := m.StartForwardingRtp("fwd", "", target)
	if err != nil || strings.Count(sdp, "m=") != 2 {
		t.Fatalf("StartForwardingRtp: %q %v", sdp, err)
	}
	for _, want := range []string{"v=0\r\n", "m=audio " + strconv.Itoa(audio.port()) + " RTP/AVP ", "m=video " + strconv.Itoa(video.port()) + " RTP/AVP ", "c=IN IP4 127.0.0.1\r\n", "opus/48000/2", "VP8/90000"} {
		if !strings.Contains(sdp, want) {
			t.Fatalf("SDP lacks %q:\n%s", want, sdp)
		}
	}
	pt := func(kind string) uint8 {
		line := sdp[strings.Index(sdp, "m="+kind):]
		f := strings.Fields(line[:strings.Index(line, "\r\n")])
		n, _ := strconv.Atoi(f[3])
		return uint8(n)
	}
	for _, tc := range []struct {
		name string
		sink *rtpSink
		pt   uint8
	}{{"audio", audio, pt("audio")}, {"video", video, pt("video")}} {
		hs := waitHeaders(t, tc.sink, 30)
		for i, h := range hs {
			if h.PayloadType != tc.pt || h.SSRC != hs[0].SSRC {
				t.Fatalf("%s packet %d: pt %d ssrc %d, want pt %d ssrc %d", tc.name, i, h.PayloadType, h.SSRC, tc.pt, hs[0].SSRC)
			}
			if i > 0 && h.SequenceNumber != hs[i-1].SequenceNumber+1 {
				t.Fatalf("%s sequence jumps from %d to %d", tc.name, hs[i-1].SequenceNumber, h.SequenceNumber)
			}
		}
	}

	if err := m.StopForwardingRtp("fwd", pub.ConnectionID()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	n := len(video.headers())
	time.Sleep(300 * time.Millisecond)
	if got := len(video.headers()); got != n {
		t.Fatalf("%d video packets after StopForwardingRtp", got-n)
	}

	var ie *InvalidError
	if _, err := m.StartForwardingRtp("fwd", "", RTPForwardTarget{IP: netip.MustParseAddr("192.0.2.1"), VideoPort: 5004}); !errors.As(err, &ie) || ie.Type != "RTP-FORWARDING-NOT-ALLOWED" {
		t.Fatalf("a target outside the allowed networks: %v", err)
	}
	var nf *NotFoundError
	if err := m.StopForwardingRtp("fwd", pub.ConnectionID()); !errors.As(err, &nf) {
		t.Fatalf("stopping twice: %v", err)
	}
	if _, err := m.StartForwardingRtp("fwd", "NOBODY", target); !errors.As(err, &nf) {
		t.Fatalf("an unknown connection: %v", err)
	}

	// Forwarding ends with its sender.
	if _, err := m.StartForwardingRtp("fwd", pub.ConnectionID(), target); err != nil {
		t.Fatal(err)
	}
	waitHeaders(t, video, n+10)
	_ = pub.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if len(m.ListConnections()) == 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	n = len(video.headers())
	time.Sleep(300 * time.Millisecond)
	if got := len(video.headers()); got != n {
		t.Fatalf("%d video packets after the sender left", got-n)
	}
}

// TestFencingStopsRTPForwarding: when the cluster gives the channel to
// another node, the forwarded sender is closed with 4503 CHANNEL-MOVED and
// its forwarding stops: no more RTP reaches the outside receiver, and the
// forwarding's sockets are let go.
func TestFencingStopsRTPForwarding(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, RTPForwardNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	pub, sub := publishAndReceive(t, url, "fenced")
	audio, video := newRTPSink(t), newRTPSink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "audio", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartForwardingRtp("fenced", pub.ConnectionID(), RTPForwardTarget{IP: netip.MustParseAddr("127.0.0.1"), AudioPort: audio.port(), VideoPort: video.port()}); err != nil {
		t.Fatal(err)
	}
	waitHeaders(t, audio, 20)
	waitHeaders(t, video, 20)
	sender, err := m.connectionIn("fenced", pub.ConnectionID())
	if err != nil {
		t.Fatal(err)
	}

	fc.mu.Lock()
	fc.owners["fenced"] = fsm.Node{NodeInfo: fsm.NodeInfo{Name: "other@127.0.0.9"}}
	fc.mu.Unlock()
	fc.changes <- struct{}{}
	select {
	case <-pub.Closed():
	case <-ctx.Done():
		t.Fatal("the sender of a moved channel is still connected")
	}
	if ci := pub.CloseInfo(); ci == nil || ci.Code != 4503 || ci.Reason != "CHANNEL-MOVED" {
		t.Fatalf("the sender closed with %+v, want 4503 CHANNEL-MOVED", ci)
	}
	for m.Connections() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections left", m.Connections())
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond) // packets in flight arrive
	na, nv := len(audio.headers()), len(video.headers())
	time.Sleep(500 * time.Millisecond) // 25 audio packets' time
	if a, v := len(audio.headers())-na, len(video.headers())-nv; a != 0 || v != 0 {
		t.Fatalf("%d audio and %d video packets forwarded after the channel moved", a, v)
	}
	sender.fwdMu.Lock()
	left := sender.rtpForward
	sender.fwdMu.Unlock()
	if left != nil {
		t.Fatal("the closed sender still holds its forwarding (and its UDP sockets)")
	}
}
