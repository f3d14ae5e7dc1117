package media

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/forward"
)

// RTP forwarding (StartForwardingRtp): a connection's audio and video sent
// as plain RTP to an outside receiver, a recorder or a transcoder. Each
// forwarded track is a down track like any receiver's, bound to a UDP
// socket instead of a PeerConnection: it starts at a key frame, keeps its
// own SSRC and continuous sequence numbers, and stops when the sender
// leaves (or the channel leaves this node, which closes the sender).

// rtpForward is what one sender connection forwards.
type rtpForward struct {
	outs []rtpOut
}

type rtpOut struct {
	track *forward.Track
	down  *forward.Down
	conn  *net.UDPConn
}

func (f *rtpForward) stop() {
	for _, o := range f.outs {
		o.track.Remove(o.down)
		_ = o.conn.Close()
	}
}

// RTPForwardTarget is where StartForwardingRtp sends a connection's media;
// a zero port forwards nothing of that kind.
type RTPForwardTarget struct {
	IP        netip.Addr
	AudioPort int
	VideoPort int
}

// StartForwardingRtp forwards a connection's audio and video to target and
// returns the SDP a standard receiver opens to receive them. Without a
// connection ID the channel's one sending connection is forwarded.
// Forwarding a connection again replaces its targets.
func (m *Media) StartForwardingRtp(channelID, connectionID string, target RTPForwardTarget) (string, error) {
	if !m.rtpForwardAllowed(target.IP) {
		return "", &InvalidError{Type: "RTP-FORWARDING-NOT-ALLOWED", Reason: fmt.Sprintf("%s is not in rtp_forwarding_allowed_networks", target.IP)}
	}
	c, err := m.forwardedConnection(channelID, connectionID)
	if err != nil {
		return "", err
	}
	f := &rtpForward{}
	var media []string
	for _, want := range []struct {
		kind webrtc.RTPCodecType
		port int
	}{{webrtc.RTPCodecTypeAudio, target.AudioPort}, {webrtc.RTPCodecTypeVideo, target.VideoPort}} {
		if want.port == 0 {
			continue
		}
		p := c.publishedOf(want.kind)
		if p == nil {
			continue
		}
		out, err := startRTPOut(p, c.id, netip.AddrPortFrom(target.IP, uint16(want.port)))
		if err != nil {
			f.stop()
			return "", err
		}
		f.outs = append(f.outs, out)
		media = append(media, sdpMedia(want.kind, want.port, target.IP, p.track.Codec()))
	}
	if len(f.outs) == 0 {
		return "", &InvalidError{Type: "NO-MEDIA-TO-FORWARD", Reason: "the connection sends no track of the kinds given a port"}
	}
	c.fwdMu.Lock()
	old := c.rtpForward
	c.rtpForward = f
	closed := c.ctx.Err() != nil
	c.fwdMu.Unlock()
	if old != nil {
		old.stop()
	}
	if closed { // the sender left meanwhile
		c.stopForwardingRtp()
	}
	c.log.Info("forwarding RTP", "target", target.IP.String(), "audio_port", target.AudioPort, "video_port", target.VideoPort)
	return "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + strings.Join(media, ""), nil
}

// StopForwardingRtp stops what StartForwardingRtp started for a
// connection (or the channel's one sending connection).
func (m *Media) StopForwardingRtp(channelID, connectionID string) error {
	c, err := m.forwardedConnection(channelID, connectionID)
	if err != nil {
		return err
	}
	if !c.stopForwardingRtp() {
		return &NotFoundError{Type: "RTP-FORWARDING-NOT-FOUND", Reason: map[string]string{"channel_id": channelID, "connection_id": c.id}}
	}
	return nil
}

// stopForwardingRtp stops the connection's forwarding, if any, and reports
// whether there was one.
func (c *connection) stopForwardingRtp() bool {
	c.fwdMu.Lock()
	f := c.rtpForward
	c.rtpForward = nil
	c.fwdMu.Unlock()
	if f == nil {
		return false
	}
	f.stop()
	c.log.Info("stopped forwarding RTP")
	return true
}

// forwardedConnection finds the connection to forward: the one named, or
// the channel's only sending connection.
func (m *Media) forwardedConnection(channelID, connectionID string) (*connection, error) {
	if connectionID != "" {
		return m.connectionIn(channelID, connectionID)
	}
	cs, err := m.members(channelID)
	if err != nil {
		return nil, err
	}
	var senders []*connection
	for _, c := range cs {
		if c.req.Role.Sends() {
			senders = append(senders, c)
		}
	}
	if len(senders) != 1 {
		return nil, &InvalidError{Type: "CONNECTION-ID-REQUIRED", Reason: fmt.Sprintf("the channel has %d sending connections; name one with connection_id", len(senders))}
	}
	return senders[0], nil
}

// publishedOf returns a track of kind the connection publishes, if any.
func (c *connection) publishedOf(kind webrtc.RTPCodecType) *published {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	var found *published
	for _, p := range c.published {
		if p.track.Kind() == kind && (found == nil || p.mid < found.mid) {
			found = p
		}
	}
	return found
}

func (m *Media) rtpForwardAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range m.cfg.RTPForwardNetworks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// startRTPOut starts forwarding p to addr: a down track bound to a UDP
// socket, on the best layer the sender sends, from a key frame.
func startRTPOut(p *published, senderID string, addr netip.AddrPort) (rtpOut, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return rtpOut{}, fmt.Errorf("open RTP forwarding socket to %s: %w", addr, err)
	}
	down := p.track.NewDown(senderID, "rtp-forward-"+p.track.Kind().String(), nil)
	if _, err := down.Bind(&udpTrackContext{codec: p.track.Codec(), ssrc: randomSSRC(), conn: conn}); err != nil {
		conn.Close()
		return rtpOut{}, fmt.Errorf("bind RTP forwarding of %s: %w", p.track.Kind(), err)
	}
	best := 0
	if p.track.Simulcast() {
		best = 2 // the down track falls back to the best layer sent
	}
	down.SetRoute(best, false)
	p.track.Add(down)
	down.RequestKeyframe()
	return rtpOut{track: p.track, down: down, conn: conn}, nil
}

func randomSSRC() webrtc.SSRC {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return webrtc.SSRC(binary.BigEndian.Uint32(b[:]))
}

// sdpMedia describes one forwarded stream: plain RTP (RTP/AVP) to ip:port
// with the sender's payload type and codec.
func sdpMedia(kind webrtc.RTPCodecType, port int, ip netip.Addr, codec webrtc.RTPCodecParameters) string {
	family := "IP4"
	if ip.Is6() && !ip.Is4In6() {
		family = "IP6"
	}
	name := strings.TrimPrefix(codec.MimeType, kind.String()+"/")
	if strings.EqualFold(name, "opus") {
		name = "opus" // as browsers and ffmpeg write it
	}
	rtpmap := fmt.Sprintf("%s/%d", name, codec.ClockRate)
	if codec.Channels > 0 {
		rtpmap += fmt.Sprintf("/%d", codec.Channels)
	}
	s := fmt.Sprintf("m=%s %d RTP/AVP %d\r\nc=IN %s %s\r\na=rtpmap:%d %s\r\n", kind, port, codec.PayloadType, family, ip.Unmap(), codec.PayloadType, rtpmap)
	if codec.SDPFmtpLine != "" {
		s += fmt.Sprintf("a=fmtp:%d %s\r\n", codec.PayloadType, codec.SDPFmtpLine)
	}
	return s + "a=recvonly\r\n"
}

// udpTrackContext binds a down track to a UDP socket: the sender's codec,
// an SSRC of the forwarder's own, no header extensions, no RTCP.
type udpTrackContext struct {
	codec webrtc.RTPCodecParameters
	ssrc  webrtc.SSRC
	conn  *net.UDPConn
}

func (u *udpTrackContext) CodecParameters() []webrtc.RTPCodecParameters {
	return []webrtc.RTPCodecParameters{u.codec}
}
func (u *udpTrackContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter { return nil }
func (u *udpTrackContext) SSRC() webrtc.SSRC                                      { return u.ssrc }
func (u *udpTrackContext) SSRCRetransmission() webrtc.SSRC                        { return 0 }
func (u *udpTrackContext) SSRCForwardErrorCorrection() webrtc.SSRC                { return 0 }
func (u *udpTrackContext) WriteStream() webrtc.TrackLocalWriter                   { return &udpWriter{conn: u.conn} }
func (u *udpTrackContext) ID() string                                             { return "rtp-forward" }
func (u *udpTrackContext) RTCPReader() interceptor.RTCPReader                     { return nil }

// udpWriter sends each RTP packet as one datagram, marshalled into a buffer
// of its own (the down track writes one packet at a time, under its lock).
// A receiver that is not there (ICMP unreachable) makes writes fail; the
// packets are dropped.
type udpWriter struct {
	conn *net.UDPConn
	buf  []byte
}

func (w *udpWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	pkt := rtp.Packet{Header: *h, Payload: payload}
	if n := pkt.MarshalSize(); cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	n, err := pkt.MarshalTo(w.buf[:cap(w.buf)])
	if err != nil {
		return 0, err
	}
	return w.conn.Write(w.buf[:n])
}

func (w *udpWriter) Write(b []byte) (int, error) { return w.conn.Write(b) }
