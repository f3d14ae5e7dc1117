package media

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/logging"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/icehold"
	"github.com/sorad/sorad/media/udpbatch"
)

// Payload types sorad offers. Forwarded tracks keep the publisher's codec;
// pion rewrites the payload type for each receiver. They are the numbers of
// pion's default codec table: a pion-based client binds its sending track
// to its own table's payload type for a codec, not always to the one the
// answer names, so the two must agree (browsers follow the offer's).
const (
	ptOpus         = 111
	ptVP8          = 96
	ptVP9          = 98
	ptH264         = 106 // constrained baseline, 42e01f
	ptH264Baseline = 102 // baseline, 42001f
	ptAV1          = 45
)

var videoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBGoogREMB},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
	{Type: webrtc.TypeRTCPFBNACK},
	{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	{Type: webrtc.TypeRTCPFBTransportCC},
}

// codecs are the codecs sorad forwards, by Sora's codec_type names.
var codecs = map[string]webrtc.RTPCodecParameters{
	"OPUS": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}}}, PayloadType: ptOpus},
	"VP8": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: videoFeedback}, PayloadType: ptVP8},
	"VP9": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000,
		SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFeedback}, PayloadType: ptVP9},
	"H264": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", RTCPFeedback: videoFeedback}, PayloadType: ptH264},
	// Also accepted from publishers, offered after the others.
	"H264-baseline": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", RTCPFeedback: videoFeedback}, PayloadType: ptH264Baseline},
	"AV1": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000,
		RTCPFeedback: videoFeedback}, PayloadType: ptAV1},
}

// videoCodecOrder is the order of video codecs in an offer that leaves the
// choice to the client.
var videoCodecOrder = []string{"VP9", "VP8", "AV1", "H264", "H264-baseline"}

// Header extension URIs sorad negotiates.
const (
	twccURI       = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
	audioLevelURI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
)

// engineConfig configures the WebRTC stack shared by every connection.
type engineConfig struct {
	ListenAddress      string   // IP the UDP port binds
	UDPPort            int      // the one UDP port for all peers (ICE UDP mux)
	PublicIPs          []string // addresses to announce instead (NAT 1:1, containers)
	SCTPMaxMessageSize int      // largest DataChannel message accepted, bytes
}

// engine is the WebRTC stack: one pion API with a shared UDP mux.
type engine struct {
	api        *webrtc.API // for connections that send media to sorad
	receiveAPI *webrtc.API // for those that only receive it (see newEngine)
	mux        ice.UDPMux
	udp        net.PacketConn
	hold       *icehold.Conn  // the UDP socket under the mux, holding early checks
	batch      *udpbatch.Conn // under that: batches the packets of one forwarded packet

	certMu sync.Mutex
	cert   *webrtc.Certificate // the DTLS certificate of every connection; see certificate
	certAt time.Time
}

// certificateLifetime is how long the engine's DTLS certificate is used for
// new connections before another is made (pion's certificates are valid
// for a month).
const certificateLifetime = 24 * time.Hour

// certificate returns the DTLS certificate for a new connection. One is
// shared by all, as a browser shares one per origin: the client checks it
// against the fingerprint in the offer, so sharing it reveals nothing, and
// generating a key pair and signing a certificate per connection cost every
// join a few hundred microseconds of CPU.
func (e *engine) certificate() (webrtc.Certificate, error) {
	e.certMu.Lock()
	defer e.certMu.Unlock()
	if e.cert == nil || time.Since(e.certAt) > certificateLifetime {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("dtls key: %w", err)
		}
		cert, err := webrtc.GenerateCertificate(key)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("dtls certificate: %w", err)
		}
		e.cert, e.certAt = cert, time.Now()
	}
	return *e.cert, nil
}

func newEngine(cfg engineConfig) (*engine, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(codecs["OPUS"], webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("register opus: %w", err)
	}
	for _, name := range videoCodecOrder {
		if err := m.RegisterCodec(codecs[name], webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("register %s: %w", name, err)
		}
	}
	// Two sets of interceptors: every one for a connection that sends media
	// to sorad; for one that only receives (recvonly), those that act on
	// what sorad sends. The others would each run a goroutine and a timer
	// per connection with nothing to do.
	reg, receiving := &interceptor.Registry{}, &interceptor.Registry{}
	// NACK: ask publishers to resend what we lost. Receivers' NACKs are
	// answered by the forwarding code (media/forward) from one history per
	// published stream, not by pion's responder, which would keep a copy of
	// every packet per receiver.
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		return nil, fmt.Errorf("nack generator: %w", err)
	}
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	reg.Add(gen)
	// RTCP sender and receiver reports.
	recvReports, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, fmt.Errorf("receiver reports: %w", err)
	}
	sendReports, err := report.NewSenderInterceptor()
	if err != nil {
		return nil, fmt.Errorf("sender reports: %w", err)
	}
	reg.Add(recvReports)
	reg.Add(sendReports)
	receiving.Add(sendReports)
	// Header extensions: transport-wide congestion control feedback to
	// publishers, which browsers need to raise their sending bitrate; mid
	// and rid, by which a simulcast publisher's layers are told apart; and
	// the audio level, from which spotlight channels learn who speaks.
	for _, ext := range []struct {
		uri   string
		kinds []webrtc.RTPCodecType
	}{
		{twccURI, []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio}},
		{sdp.SDESMidURI, []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio}},
		{sdp.SDESRTPStreamIDURI, []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}},
		{sdp.SDESRepairRTPStreamIDURI, []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}},
		{audioLevelURI, []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio}},
	} {
		for _, kind := range ext.kinds {
			if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: ext.uri}, kind); err != nil {
				return nil, fmt.Errorf("%s extension: %w", ext.uri, err)
			}
		}
	}
	twccGen, err := twcc.NewSenderInterceptor()
	if err != nil {
		return nil, fmt.Errorf("twcc: %w", err)
	}
	reg.Add(twccGen)

	addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(cfg.ListenAddress, fmt.Sprint(cfg.UDPPort)))
	if err != nil {
		return nil, fmt.Errorf("media udp address: %w", err)
	}
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on media udp port: %w", err)
	}
	s := webrtc.SettingEngine{}
	s.LoggerFactory = quietLoggerFactory()
	batch := udpbatch.Wrap(udp)
	hold := icehold.Wrap(batch, icehold.Limits{})
	mux := webrtc.NewICEUDPMux(s.LoggerFactory.NewLogger("ice"), hold)
	s.SetICEUDPMux(mux)
	s.SetLite(true)
	// The DTLS cookie exchange proves that a client receives at its
	// address; ICE proved that already (DTLS is only accepted on a pair
	// that answered a check), so sorad skips it and saves a round trip.
	s.SetDTLSInsecureSkipHelloVerify(true)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	// An ICE-lite server has no use for mDNS: it never checks the client's
	// candidates (a browser's .local ones included) and learns the client's
	// address from its checks. Off, a connection opens no multicast socket
	// and no goroutine to read it.
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if len(cfg.PublicIPs) > 0 {
		// NAT 1:1: announce the public addresses instead of the local one.
		rule := webrtc.ICEAddressRewriteRule{External: cfg.PublicIPs, AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace}
		if err := s.SetICEAddressRewriteRules(rule); err != nil {
			_ = udp.Close()
			return nil, fmt.Errorf("announced addresses: %w", err)
		}
	}
	if cfg.SCTPMaxMessageSize > 0 {
		s.SetSCTPMaxMessageSize(uint32(cfg.SCTPMaxMessageSize))
	}
	if ip := net.ParseIP(cfg.ListenAddress); ip != nil && ip.IsLoopback() {
		s.SetIncludeLoopbackCandidate(true)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s))
	receiveAPI := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(receiving), webrtc.WithSettingEngine(s))
	return &engine{api: api, receiveAPI: receiveAPI, mux: mux, udp: udp, hold: hold, batch: batch}, nil
}

// port is the UDP port the engine listens on.
func (e *engine) port() int {
	if a, ok := e.udp.LocalAddr().(*net.UDPAddr); ok {
		return a.Port
	}
	return 0
}

func (e *engine) close() error {
	err := e.mux.Close()
	if cerr := e.udp.Close(); err == nil && cerr != nil && !strings.Contains(cerr.Error(), "closed") {
		err = cerr
	}
	return err
}

// quietLoggerFactory keeps pion's own logging to errors.
func quietLoggerFactory() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}
