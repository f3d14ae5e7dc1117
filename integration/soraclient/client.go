// Package soraclient is a small WebRTC client for integration tests and
// benchmarks of sorad, the Sora-compatible SFU.
//
// It speaks only the wire protocol, exactly as an official Sora SDK does: it
// opens a WebSocket to the signaling URL, sends "connect", waits for the
// server's "offer", answers it with a pion/webrtc PeerConnection, trickles its
// ICE candidates and then keeps the signaling socket serviced ("re-offer",
// "ping", "notify", "push", ...). It imports no sorad package, so a test that
// uses it exercises a real sorad process the way a browser or a native SDK
// would.
//
// A client whose role sends ("sendrecv", "sendonly") publishes synthetic
// media on the m-lines named by the offer's "mid": an Opus audio track (one
// 20 ms frame every 20 ms, sized to Options.AudioBitrateKbps) and a video
// track of the negotiated codec (one frame every 33 ms, sized to
// Options.VideoBitrateKbps; VP8 key frames every 30 frames). The payloads
// are not real encodings; an SFU forwards bytes.
// Every remote track is read and counted per "<stream id>/<kind>", where the
// stream id is the msid stream id, which Sora sets to the sending
// connection's connection_id; the packets a track's sequence numbers say
// were sent but never arrived are counted as lost. SentBytes counts what
// the client itself has sent.
//
// Every received signaling message is kept (the last 10 000) so tests can
// assert on them with Messages and WaitMessage.
//
// With Options.DataChannelSignaling the server also opens DataChannels
// ("signaling", "notify", "push", "stats", "rpc" and "#" messaging labels)
// and lists them with their compress flag in the offer's "data_channels".
// JSON arriving on them is recorded like WebSocket messages (Message.Label
// tells them apart); "re-offer" on DC signaling is answered there,
// "req-stats" on DC stats with the same report a pong carries, and JSON-RPC
// responses on DC rpc complete RPC calls. Candidates, re-answers and
// disconnect go on DC signaling as soon as it is open, as sora-js-sdk does;
// pongs stay on the WebSocket. A label marked compress carries zlib
// (RFC 1950) in both directions. After {"type":"switched"} with
// ignore_disconnect_websocket true the client may close its WebSocket
// (CloseWebSocket, Options.CloseWebSocketOnSwitch) and the connection lives
// on over the DataChannels until DC signaling closes.
//
// Typical use:
//
//	c, err := soraclient.Connect(ctx, soraclient.Options{
//		SignalingURL: "ws://127.0.0.1:5000/signaling",
//		ChannelID:    "room",
//		Role:         "sendrecv",
//		Audio:        true,
//		Video:        true,
//	})
//	if err != nil { ... }
//	defer c.Close()
//	err = c.WaitPackets(ctx, otherConnectionID, "video", 50)
//
// A client must always be closed with Close, which stops every goroutine it
// started. A client is not closed when the server closes the WebSocket:
// Closed and CloseInfo report that, and the PeerConnection and the counters
// stay available until Close.
package soraclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// SoraClient is the value sent as "sora_client" in connect.
const SoraClient = "sorad soraclient"

const (
	// MaxMessages is how many received signaling messages a Client keeps;
	// older ones are dropped first.
	MaxMessages = 10000

	maxRedirects     = 5
	writeTimeout     = 10 * time.Second
	closeWaitTimeout = time.Second
	readLimit        = 16 << 20 // largest signaling frame accepted, bytes
	defaultVideoKbps = 500
	defaultAudioKbps = 32
)

// Options configures Connect. Only SignalingURL is required; everything else
// is sent as given, so tests can also send odd inputs.
type Options struct {
	// SignalingURL is the WebSocket URL, e.g. ws://127.0.0.1:5000/signaling.
	SignalingURL string
	// ChannelID is sent as "channel_id" (also when empty).
	ChannelID string
	// Role is sent as "role": "sendrecv", "sendonly" or "recvonly". The
	// client publishes media only for "sendrecv" and "sendonly"; other
	// values are sent unchanged (for tests of bad inputs).
	Role string
	// ClientID and BundleID are sent as "client_id" / "bundle_id" only when
	// non-empty.
	ClientID, BundleID string
	// Metadata is sent as "metadata"; nil is sent as JSON null, as
	// sora-js-sdk does.
	Metadata any
	// SignalingNotifyMetadata is sent as "signaling_notify_metadata" only
	// when non-nil.
	SignalingNotifyMetadata any
	// Audio and Video are sent as booleans and say whether to send (for
	// sending roles) and receive audio and video. Unlike sora-js-sdk the
	// zero value is false.
	Audio, Video bool
	// VideoCodec, when non-empty and Video is true, makes "video" be sent
	// as {"codec_type": VideoCodec} (VP8, VP9, AV1, H264, H265) and makes
	// the client prefer that codec when the offer lists several.
	VideoCodec string
	// VideoBitrateKbps sizes the synthetic video frames; default 500.
	VideoBitrateKbps int
	// AudioBitrateKbps sizes the synthetic Opus frames (one every 20 ms);
	// default 32 (80-byte frames), at most 510 as Opus allows.
	AudioBitrateKbps int
	// VideoIVF, when set, names an IVF file (VP8 or VP9, e.g. made by
	// ffmpeg) whose frames are sent instead of the synthetic ones, one per
	// 33 ms, from the start again at its end: real, decodable video.
	VideoIVF string
	// Extra holds top-level fields merged into connect last, overriding
	// the fields above. A value of Omit removes that field.
	Extra map[string]any
	// TLSConfig is used for wss:// signaling URLs (nil: the system's roots).
	TLSConfig *tls.Config
	// NoRedirect disables following {"type":"redirect"}. By default the
	// client, like every official SDK, closes the socket, opens the
	// redirect location and re-sends connect with "redirect": true. With
	// NoRedirect, Connect returns a *RedirectError instead.
	NoRedirect bool
	// CandidateMinimal sends ICE candidates as {"type":"candidate",
	// "candidate":"..."} only (the C++/Rust/Android SDK shape) instead of
	// the JS shape that adds sdpMid, sdpMLineIndex and usernameFragment.
	CandidateMinimal bool
	// Simulcast sends "simulcast": true. A sending client whose offer then
	// asks for simulcast (a=rid and a=simulcast:recv on its video m-line)
	// publishes one VP8 stream per offered rid, each with its own SSRC and
	// the mid and rid header extensions: layer i (0 for r0) has frames
	// 160<<i by 90<<i pixels whose bodies are all LayerMark(i), key frames
	// every 30 frames and whenever the server asks (PLI).
	Simulcast bool
	// SimulcastLayers, when positive, sends only that many of the offered
	// rids, the lowest first (as a browser does when its resolution or bit
	// rate is too low for all of them).
	SimulcastLayers int
	// RecordPackets keeps a log of the packets of every remote track (see
	// Packets).
	RecordPackets bool
	// DataChannelSignaling sends "data_channel_signaling": true.
	DataChannelSignaling bool
	// IgnoreDisconnectWebSocket is sent as "ignore_disconnect_websocket"
	// when it or DataChannelSignaling is set: with true the server keeps
	// the connection when the WebSocket closes after "switched".
	IgnoreDisconnectWebSocket bool
	// DataChannels is sent as "data_channels" when non-empty.
	DataChannels []DataChannelOption
	// CloseWebSocketOnSwitch closes the WebSocket with 1000 "SELF-CLOSED"
	// as soon as "switched" arrives with ignore_disconnect_websocket true,
	// as the C++ SDK does.
	CloseWebSocketOnSwitch bool
	// SingleCheck makes the client send each ICE connectivity check once,
	// never repeating an unanswered one (pion's default repeats it every
	// 200 ms): a check the server drops then fails the connection.
	SingleCheck bool
	// ICEIPFilter, when set, limits the client's ICE host candidates to
	// the local addresses it returns true for (e.g. net.IP.IsLoopback).
	// nil gathers on loopback only when the signaling URL's host is a
	// loopback address (where only loopback candidates can reach the
	// server, and the host's other interfaces, which may come and go, can
	// only get in the way), and on every interface otherwise.
	ICEIPFilter func(net.IP) bool
	// AcceptReplays turns off SRTP replay protection, so that a packet the
	// server sends again (see RequestResend) reaches the track's reader.
	AcceptReplays bool
	// BeforeAnswer, when set, is called once the client has applied its
	// answer (its ICE agent is checking) and before it sends the answer.
	BeforeAnswer func()
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

type omitField struct{}

// Omit, used as a value in Options.Extra, removes that field from connect
// (e.g. Extra: map[string]any{"channel_id": soraclient.Omit}).
var Omit any = omitField{}

// CloseError is the close code and reason of the signaling WebSocket. Connect
// returns it (unwrapped) when the socket closes before the offer; Code is
// 1006 with an empty Reason when the connection ended without a close frame.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("soraclient: signaling websocket closed: code %d reason %q", e.Code, e.Reason)
}

// RedirectError is returned by Connect when Options.NoRedirect is set and the
// server answered connect with a redirect.
type RedirectError struct {
	Location string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("soraclient: server redirected to %q (NoRedirect is set)", e.Location)
}

// ErrClosed is returned by waits that cannot succeed any more because the
// WebSocket or the client was closed.
var ErrClosed = errors.New("soraclient: closed")

// Message is one received signaling frame or DataChannel message.
type Message struct {
	// Type is the "type" member of a JSON object; empty for binary
	// WebSocket frames and messages that are not a JSON object with a
	// string type (such as JSON-RPC responses).
	Type string
	// Label is "" for the WebSocket, else the DataChannel label.
	Label string
	// Raw is the message as received, inflated on compressed labels (not
	// necessarily JSON when Type is "").
	Raw json.RawMessage
	// At is when the frame was read.
	At time.Time
}

// TrackStats counts what one remote track delivered.
type TrackStats struct {
	Packets     int64
	Bytes       int64 // RTP payload bytes
	FirstPacket time.Time
	LastPacket  time.Time
	// Lost is how many packets the sequence numbers from the first packet
	// received to the highest one say were sent but have not arrived (a
	// packet that comes late or twice lowers it again; never below 0).
	Lost int64
}

type trackCounter struct {
	ssrc      atomic.Uint32 // the remote track's, as the server sends it
	packets   atomic.Int64
	bytes     atomic.Int64
	firstNano atomic.Int64
	lastNano  atomic.Int64

	seqMu sync.Mutex
	seq   seqCounter

	logMu sync.Mutex
	log   []PacketInfo // with Options.RecordPackets, the last MaxPackets
}

// Client is one Sora connection. Its methods are safe for concurrent use.
type Client struct {
	opts Options
	log  *slog.Logger
	url  string // see URL

	ctx    context.Context // lifetime; cancelled by Close
	cancel context.CancelFunc

	goMu    sync.Mutex // guards closing and wg.Add
	closing bool
	wg      sync.WaitGroup

	ws   *websocket.Conn // fixed once Connect has the offer
	wsMu sync.Mutex      // serializes writes on ws

	api *webrtc.API
	pc  *webrtc.PeerConnection

	offerRaw     json.RawMessage
	connectionID string
	// answerSDP is the first answer, as created. It is read instead of
	// pc.LocalDescription(), which adds the gathered candidates into the
	// description pion itself reads while it applies a re-offer.
	answerSDP   string
	audioTrack  *webrtc.TrackLocalStaticRTP
	audioMid    string
	audioLevel  atomic.Uint32
	sentBytes   atomic.Int64 // media payload handed to the local tracks
	videoTrack  *webrtc.TrackLocalStaticSample
	videoSender *webrtc.RTPSender
	videoMid    string
	layers      []*simulcastLayer // a simulcast publisher's

	candMu     sync.Mutex // orders candidates after the answer
	answerSent bool
	pendCands  []webrtc.ICECandidateInit
	ufrag      string

	msgMu     sync.Mutex
	msgs      []Message
	msgSeq    uint64        // number of messages ever recorded
	msgNotify chan struct{} // closed and replaced on every new message

	tracksMu sync.Mutex
	tracks   map[string]*trackCounter

	pcConnected     chan struct{}
	pcConnectedOnce sync.Once
	pcFailed        chan struct{}
	pcFailedOnce    sync.Once

	closed       chan struct{} // WebSocket closed
	closedOnce   sync.Once
	closeMu      sync.Mutex
	closeInfo    *CloseError
	wsSelfClosed atomic.Bool // CloseWebSocket was called

	negMu sync.Mutex // serializes re-offer handling across transports

	compress map[string]bool // offer data_channels: label -> compress; fixed by the offer
	dcMu     sync.Mutex
	dcs      map[string]*dataChannel

	switched     chan struct{}
	switchedOnce sync.Once
	sigOpen      chan struct{} // DC signaling open
	sigOpenOnce  sync.Once
	dcClosed     chan struct{} // DC signaling closed, or Close
	dcClosedOnce sync.Once

	endMu     sync.Mutex
	wsDone    bool // the WebSocket closed
	sigLive   bool // DC signaling was opened or switched received
	sigDone   bool // DC signaling closed
	ended     chan struct{}
	endedOnce sync.Once

	labelMu     sync.Mutex
	labels      map[string]*labelLog
	labelNotify chan struct{} // closed and replaced on every new payload

	rpcMu      sync.Mutex
	rpcID      int64
	rpcPending map[int64]chan rpcResponse

	closeAllOnce sync.Once
	closeErr     error
}

// Connect opens the signaling WebSocket, sends connect, follows redirects,
// answers the offer and returns once the PeerConnection is connected. ctx
// bounds only the connection attempt; the returned client lives until Close.
// If the socket closes before the offer, the error is a *CloseError.
func Connect(ctx context.Context, opts Options) (*Client, error) {
	if opts.SignalingURL == "" {
		return nil, errors.New("soraclient: Options.SignalingURL is required")
	}
	if opts.VideoBitrateKbps <= 0 {
		opts.VideoBitrateKbps = defaultVideoKbps
	}
	if opts.AudioBitrateKbps <= 0 {
		opts.AudioBitrateKbps = defaultAudioKbps
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:        opts,
		log:         log,
		ctx:         lctx,
		cancel:      cancel,
		msgNotify:   make(chan struct{}),
		tracks:      make(map[string]*trackCounter),
		pcConnected: make(chan struct{}),
		pcFailed:    make(chan struct{}),
		closed:      make(chan struct{}),
		dcs:         make(map[string]*dataChannel),
		switched:    make(chan struct{}),
		sigOpen:     make(chan struct{}),
		dcClosed:    make(chan struct{}),
		ended:       make(chan struct{}),
		labels:      make(map[string]*labelLog),
		labelNotify: make(chan struct{}),
		rpcPending:  make(map[int64]chan rpcResponse),
	}
	c.audioLevel.Store(127)
	if err := c.connect(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) sends() bool {
	return c.opts.Role == "sendrecv" || c.opts.Role == "sendonly"
}

// connectMessage builds the connect message as the official SDKs do.
func (c *Client) connectMessage(redirect bool) map[string]any {
	o := c.opts
	m := map[string]any{
		"type":        "connect",
		"role":        o.Role,
		"channel_id":  o.ChannelID,
		"sora_client": SoraClient,
		"environment": fmt.Sprintf("%s/%s %s", runtime.GOOS, runtime.GOARCH, runtime.Version()),
		"metadata":    o.Metadata,
		"audio":       o.Audio,
		"video":       o.Video,
	}
	if o.Video && o.VideoCodec != "" {
		m["video"] = map[string]any{"codec_type": o.VideoCodec}
	}
	if o.Simulcast {
		m["simulcast"] = true
	}
	if o.ClientID != "" {
		m["client_id"] = o.ClientID
	}
	if o.BundleID != "" {
		m["bundle_id"] = o.BundleID
	}
	if o.SignalingNotifyMetadata != nil {
		m["signaling_notify_metadata"] = o.SignalingNotifyMetadata
	}
	if o.DataChannelSignaling {
		m["data_channel_signaling"] = true
	}
	if o.DataChannelSignaling || o.IgnoreDisconnectWebSocket {
		m["ignore_disconnect_websocket"] = o.IgnoreDisconnectWebSocket
	}
	if len(o.DataChannels) > 0 {
		entries := make([]any, len(o.DataChannels))
		for i, dc := range o.DataChannels {
			entries[i] = dc.connectEntry()
		}
		m["data_channels"] = entries
	}
	if redirect {
		m["redirect"] = true
	}
	for k, v := range o.Extra {
		if _, ok := v.(omitField); ok {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

func (c *Client) connect(ctx context.Context) error {
	url := c.opts.SignalingURL
	var offer json.RawMessage
	for redirects := 0; ; redirects++ {
		ws, _, err := (&websocket.Dialer{HandshakeTimeout: writeTimeout, TLSClientConfig: c.opts.TLSConfig}).DialContext(ctx, url, nil)
		if err != nil {
			return fmt.Errorf("soraclient: dial %s: %w", url, err)
		}
		ws.SetReadLimit(readLimit)
		c.ws = ws
		stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
		if err := c.writeJSON(c.connectMessage(redirects > 0)); err != nil {
			stop()
			return fmt.Errorf("soraclient: send connect to %s: %w", url, err)
		}
		typ, raw, location, err := c.waitOffer(ws)
		if !stop() || ctx.Err() != nil {
			return fmt.Errorf("soraclient: waiting for offer from %s: %w", url, context.Cause(ctx))
		}
		if err != nil {
			return err
		}
		if typ == "offer" {
			offer = raw
			c.url = url
			break
		}
		// redirect
		if c.opts.NoRedirect {
			return &RedirectError{Location: location}
		}
		if redirects >= maxRedirects {
			return fmt.Errorf("soraclient: more than %d redirects (last to %q)", maxRedirects, location)
		}
		c.log.Debug("soraclient: redirect", "from", url, "to", location)
		c.closeSocket(ws)
		url = location
	}
	return c.handleOffer(ctx, offer)
}

// closeSocket sends a close frame (best effort) and closes the connection.
func (c *Client) closeSocket(ws *websocket.Conn) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeWaitTimeout))
	_ = ws.Close()
}

// waitOffer reads until an offer or a redirect, ignoring (but recording)
// every other message, as sora-js-sdk does.
func (c *Client) waitOffer(ws *websocket.Conn) (typ string, raw json.RawMessage, location string, err error) {
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return "", nil, "", c.closeErrorFrom(err)
		}
		m := c.record("", mt == websocket.TextMessage, data)
		if mt != websocket.TextMessage {
			return "", nil, "", fmt.Errorf("soraclient: non-text frame (type %d) before offer", mt)
		}
		if m.Type == "" {
			return "", nil, "", fmt.Errorf("soraclient: frame before offer is not a JSON object with a type: %.200q", data)
		}
		switch m.Type {
		case "offer":
			return "offer", data, "", nil
		case "redirect":
			var r struct {
				Location string `json:"location"`
			}
			if err := json.Unmarshal(data, &r); err != nil || r.Location == "" {
				return "", nil, "", fmt.Errorf("soraclient: redirect without a location: %.200q", data)
			}
			return "redirect", nil, r.Location, nil
		default:
			c.log.Debug("soraclient: ignoring message before offer", "type", m.Type)
		}
	}
}

// closeErrorFrom turns a read error into a *CloseError and records the close
// code when the server sent a close frame.
func (c *Client) closeErrorFrom(err error) *CloseError {
	var wce *websocket.CloseError
	if errors.As(err, &wce) && wce.Code != websocket.CloseAbnormalClosure {
		ce := &CloseError{Code: wce.Code, Reason: wce.Text}
		if !c.wsSelfClosed.Load() { // else it answers the client's own close frame
			c.closeMu.Lock()
			if c.closeInfo == nil {
				c.closeInfo = ce
			}
			c.closeMu.Unlock()
		}
		return &CloseError{Code: ce.Code, Reason: ce.Reason}
	}
	c.log.Debug("soraclient: websocket ended without close frame", "err", err)
	return &CloseError{Code: websocket.CloseAbnormalClosure}
}

type offerMessage struct {
	SDP          string `json:"sdp"`
	ConnectionID string `json:"connection_id"`
	Config       struct {
		ICEServers []struct {
			URLs       json.RawMessage `json:"urls"`
			Username   string          `json:"username"`
			Credential string          `json:"credential"`
		} `json:"iceServers"`
		ICETransportPolicy string `json:"iceTransportPolicy"`
	} `json:"config"`
	Mid struct {
		Audio string `json:"audio"`
		Video string `json:"video"`
	} `json:"mid"`
	DataChannels []offerDataChannel `json:"data_channels"`
}

func (o *offerMessage) rtcConfiguration() (webrtc.Configuration, error) {
	var cfg webrtc.Configuration
	for i, s := range o.Config.ICEServers {
		var urls []string
		if len(s.URLs) > 0 {
			var one string
			if err := json.Unmarshal(s.URLs, &one); err == nil {
				urls = []string{one}
			} else if err := json.Unmarshal(s.URLs, &urls); err != nil {
				return cfg, fmt.Errorf("soraclient: offer config.iceServers[%d].urls: %w", i, err)
			}
		}
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{
			URLs:       urls,
			Username:   s.Username,
			Credential: s.Credential,
		})
	}
	if o.Config.ICETransportPolicy != "" {
		cfg.ICETransportPolicy = webrtc.NewICETransportPolicy(o.Config.ICETransportPolicy)
	}
	return cfg, nil
}

// loopbackURL reports whether a signaling URL's host is a loopback
// address (or localhost).
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

func newAPI(opts Options) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("soraclient: register codecs: %w", err)
	}
	// mid and rid tell a simulcast publisher's layers apart; the audio
	// level is what spotlight channels focus by.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
		return nil, fmt.Errorf("soraclient: register simulcast extensions: %w", err)
	}
	for _, uri := range []string{sdp.SDESMidURI, audioLevelURI} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, fmt.Errorf("soraclient: register %s: %w", uri, err)
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, fmt.Errorf("soraclient: register interceptors: %w", err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true) // tests run on 127.0.x.y
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if opts.SingleCheck {
		se.SetICEMaxBindingRequests(0)
	}
	if opts.ICEIPFilter != nil {
		se.SetIPFilter(opts.ICEIPFilter)
	}
	se.DisableSRTPReplayProtection(opts.AcceptReplays)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

func (c *Client) handleOffer(ctx context.Context, raw json.RawMessage) error {
	var offer offerMessage
	if err := json.Unmarshal(raw, &offer); err != nil {
		return fmt.Errorf("soraclient: parse offer: %w", err)
	}
	if offer.SDP == "" {
		return errors.New("soraclient: offer has no sdp")
	}
	if offer.ConnectionID == "" {
		return errors.New("soraclient: offer has no connection_id")
	}
	c.offerRaw = raw
	c.connectionID = offer.ConnectionID
	c.compress = make(map[string]bool, len(offer.DataChannels))
	for _, dc := range offer.DataChannels {
		c.compress[dc.Label] = dc.Compress
	}

	cfg, err := offer.rtcConfiguration()
	if err != nil {
		return err
	}
	apiOpts := c.opts
	if apiOpts.ICEIPFilter == nil && loopbackURL(c.url) {
		apiOpts.ICEIPFilter = net.IP.IsLoopback
	}
	if c.api, err = newAPI(apiOpts); err != nil {
		return err
	}
	if c.pc, err = c.api.NewPeerConnection(cfg); err != nil {
		return fmt.Errorf("soraclient: new peer connection: %w", err)
	}
	c.pc.OnConnectionStateChange(c.onConnectionState)
	c.pc.OnICECandidate(c.onICECandidate)
	c.pc.OnTrack(c.onTrack)
	c.pc.OnDataChannel(c.onDataChannel)

	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer.SDP}); err != nil {
		return fmt.Errorf("soraclient: set remote offer: %w", err)
	}
	if c.sends() {
		if err := c.attachTracks(offer.SDP, offer.Mid.Audio, offer.Mid.Video); err != nil {
			return err
		}
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("soraclient: create answer: %w", err)
	}
	if err := c.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("soraclient: set local answer: %w", err)
	}
	c.answerSDP = answer.SDP
	c.logNegotiatedCodecs()

	if !c.goroutine(c.readLoop) {
		return ErrClosed
	}
	if c.opts.BeforeAnswer != nil {
		c.opts.BeforeAnswer()
	}
	if err := c.sendAnswer(answer.SDP); err != nil {
		return err
	}

	// The server may open the DataChannels and send switched before pion
	// reports the PeerConnection connected, so a WebSocket the client
	// closed itself meanwhile does not fail Connect.
	wsClosed := c.closed
	for connected := false; !connected; {
		select {
		case <-c.pcConnected:
			connected = true
		case <-c.pcFailed:
			return errors.New("soraclient: peer connection failed before connecting")
		case <-wsClosed:
			if c.wsSelfClosed.Load() {
				wsClosed = nil
				continue
			}
			if ci := c.CloseInfo(); ci != nil {
				return fmt.Errorf("soraclient: signaling closed before the peer connection connected: %w", ci)
			}
			return fmt.Errorf("soraclient: signaling closed before the peer connection connected: %w", ErrClosed)
		case <-ctx.Done():
			return fmt.Errorf("soraclient: waiting for the peer connection to connect: %w", context.Cause(ctx))
		}
	}
	for _, l := range c.layers {
		c.goroutine(func(context.Context) { c.readLayerRTCP(l) })
	}
	if c.audioTrack != nil || c.videoTrack != nil || len(c.layers) > 0 {
		c.goroutine(c.runMedia)
	}
	return nil
}

// sendAnswer sends the answer, then the candidates gathered meanwhile; later
// candidates are sent directly by onICECandidate.
func (c *Client) sendAnswer(sdp string) error {
	c.candMu.Lock()
	defer c.candMu.Unlock()
	if err := c.writeJSON(map[string]any{"type": "answer", "sdp": sdp}); err != nil {
		return fmt.Errorf("soraclient: send answer: %w", err)
	}
	c.answerSent = true
	c.ufrag = sdpAttribute(sdp, "ice-ufrag")
	for _, cand := range c.pendCands {
		c.sendCandidateLocked(cand)
	}
	c.pendCands = nil
	return nil
}

func (c *Client) onICECandidate(cand *webrtc.ICECandidate) {
	if cand == nil {
		return // end of candidates: not signalled, as sora-js-sdk
	}
	init := cand.ToJSON()
	c.candMu.Lock()
	defer c.candMu.Unlock()
	if !c.answerSent {
		c.pendCands = append(c.pendCands, init)
		return
	}
	c.sendCandidateLocked(init)
}

func (c *Client) sendCandidateLocked(cand webrtc.ICECandidateInit) {
	msg := map[string]any{"type": "candidate", "candidate": cand.Candidate}
	if !c.opts.CandidateMinimal {
		if cand.SDPMid != nil {
			msg["sdpMid"] = *cand.SDPMid
		}
		if cand.SDPMLineIndex != nil {
			msg["sdpMLineIndex"] = *cand.SDPMLineIndex
		}
		msg["usernameFragment"] = c.ufrag
	}
	if err := c.sendSignaling(msg); err != nil {
		c.log.Debug("soraclient: send candidate", "err", err)
	}
}

func (c *Client) onConnectionState(s webrtc.PeerConnectionState) {
	c.log.Debug("soraclient: peer connection state", "state", s.String(), "connection_id", c.connectionID)
	switch s {
	case webrtc.PeerConnectionStateConnected:
		c.pcConnectedOnce.Do(func() { close(c.pcConnected) })
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		c.pcFailedOnce.Do(func() { close(c.pcFailed) })
	}
}

// attachTracks creates the local tracks and puts them on the transceivers
// whose mids the offer named. pion creates, for an offered a=recvonly m-line,
// a transceiver whose direction is already sendonly but which has no
// RTPSender; giving it one with SetSender makes the answer send there.
func (c *Client) attachTracks(offerSDP, audioMid, videoMid string) error {
	if c.opts.Audio && audioMid != "" {
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		}, "audio", "soraclient")
		if err != nil {
			return fmt.Errorf("soraclient: new audio track: %w", err)
		}
		if err := c.attachTrack(webrtc.RTPCodecTypeAudio, audioMid, track); err != nil {
			return err
		}
		c.audioTrack, c.audioMid = track, audioMid
	}
	if c.opts.Video && videoMid != "" {
		capability, err := offeredVideoCodec(offerSDP, videoMid, c.opts.VideoCodec)
		if err != nil {
			return err
		}
		c.videoMid = videoMid
		if c.opts.Simulcast {
			rids, err := offeredRIDs(offerSDP, videoMid)
			if err != nil {
				return err
			}
			if n := c.opts.SimulcastLayers; n > 0 && n < len(rids) {
				rids = rids[:n]
			}
			if len(rids) > 0 {
				return c.attachSimulcast(capability, videoMid, rids)
			}
		}
		track, err := webrtc.NewTrackLocalStaticSample(capability, "video", "soraclient")
		if err != nil {
			return fmt.Errorf("soraclient: new video track: %w", err)
		}
		if err := c.attachTrack(webrtc.RTPCodecTypeVideo, videoMid, track); err != nil {
			return err
		}
		c.videoTrack = track
	}
	return nil
}

func (c *Client) attachTrack(kind webrtc.RTPCodecType, mid string, track webrtc.TrackLocal) error {
	var tr *webrtc.RTPTransceiver
	for _, t := range c.pc.GetTransceivers() {
		if t.Mid() == mid {
			tr = t
			break
		}
	}
	if tr == nil {
		return fmt.Errorf("soraclient: offer.mid.%s is %q but the offer has no such m-line", kind, mid)
	}
	if tr.Kind() != kind {
		return fmt.Errorf("soraclient: offer.mid.%s is %q but that m-line is %s", kind, mid, tr.Kind())
	}
	sender := tr.Sender()
	if sender != nil {
		// Not the case for a fresh answerer; keep pion's own rules.
		if err := sender.ReplaceTrack(track); err != nil {
			return fmt.Errorf("soraclient: replace %s track on mid %s: %w", kind, mid, err)
		}
	} else {
		var err error
		sender, err = c.api.NewRTPSender(track, c.pc.SCTP().Transport())
		if err != nil {
			return fmt.Errorf("soraclient: new %s sender: %w", kind, err)
		}
		if err := tr.SetSender(sender, track); err != nil {
			return fmt.Errorf("soraclient: set %s sender on mid %s: %w", kind, mid, err)
		}
	}
	if kind == webrtc.RTPCodecTypeVideo {
		c.videoSender = sender
	}
	if track.RID() != "" {
		return nil // simulcast layers read their RTCP by rid
	}
	// RTCP must be read for the interceptors (NACK, reports) to work.
	c.goroutine(func(context.Context) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	})
	return nil
}

func (c *Client) logNegotiatedCodecs() {
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, t := range c.pc.GetTransceivers() {
		if s := t.Sender(); s != nil && s.Track() != nil {
			if p := s.GetParameters(); len(p.Codecs) > 0 {
				c.log.Debug("soraclient: sending", "mid", t.Mid(), "kind", t.Kind().String(), "codec", p.Codecs[0].MimeType)
			}
		}
	}
}

func (c *Client) onTrack(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	counter := func(streamID string) *trackCounter {
		key := streamID + "/" + track.Kind().String()
		c.tracksMu.Lock()
		defer c.tracksMu.Unlock()
		tc, ok := c.tracks[key]
		if !ok {
			tc = &trackCounter{}
			c.tracks[key] = tc
		}
		tc.ssrc.Store(uint32(track.SSRC()))
		c.log.Debug("soraclient: remote track", "key", key, "codec", track.Codec().MimeType)
		return tc
	}
	streamID := track.StreamID()
	tc := counter(streamID)
	c.goroutine(func(context.Context) {
		for {
			pkt, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			// An m-line the server reuses for another publisher's track
			// keeps its SSRC: pion changes the track's stream id (from
			// the offer's a=msid) and fires no new OnTrack.
			if id := track.StreamID(); id != streamID {
				streamID, tc = id, counter(id)
			}
			now := time.Now()
			tc.firstNano.CompareAndSwap(0, now.UnixNano())
			tc.lastNano.Store(now.UnixNano())
			tc.bytes.Add(int64(len(pkt.Payload)))
			tc.packets.Add(1)
			tc.seqMu.Lock()
			tc.seq.add(pkt.SequenceNumber)
			tc.seqMu.Unlock()
			if c.opts.RecordPackets {
				tc.logMu.Lock()
				if len(tc.log) >= MaxPackets {
					tc.log = append(tc.log[:0], tc.log[len(tc.log)-MaxPackets/2:]...)
				}
				tc.log = append(tc.log, packetInfo(pkt, now))
				tc.logMu.Unlock()
			}
		}
	})
}

// goroutine runs f in a goroutine owned by the client, unless Close has
// started. It reports whether f was started.
func (c *Client) goroutine(f func(ctx context.Context)) bool {
	c.goMu.Lock()
	defer c.goMu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
	return true
}

// readLoop services the signaling socket after the offer.
func (c *Client) readLoop(context.Context) {
	defer c.markClosed()
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			ci := c.closeErrorFrom(err)
			c.log.Debug("soraclient: websocket closed", "code", ci.Code, "reason", ci.Reason)
			_ = c.ws.Close()
			return
		}
		m := c.record("", mt == websocket.TextMessage, data)
		switch m.Type {
		case "re-offer":
			c.handleReOffer(data, "re-answer")
		case "update": // legacy re-offer, answered with type update as sora-js-sdk does
			c.handleReOffer(data, "update")
		case "ping":
			c.handlePing(data)
		case "switched":
			c.onSwitched(data)
		case "notify", "push", "offer", "redirect":
			// recorded; offer and redirect are ignored after connect
		default:
			c.log.Debug("soraclient: unknown message", "type", m.Type)
		}
	}
}

// handleReOffer applies a re-offer (from the WebSocket or DC signaling) and
// sends the answer on DC signaling when it is in use, else the WebSocket.
func (c *Client) handleReOffer(data []byte, replyType string) {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	var msg struct {
		SDP string `json:"sdp"`
	}
	if err := json.Unmarshal(data, &msg); err != nil || msg.SDP == "" {
		c.log.Warn("soraclient: re-offer without sdp", "err", err)
		return
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: msg.SDP}); err != nil {
		c.log.Warn("soraclient: re-offer: set remote description", "err", err)
		return
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err != nil {
		c.log.Warn("soraclient: re-offer: create answer", "err", err)
		return
	}
	if err := c.pc.SetLocalDescription(answer); err != nil {
		c.log.Warn("soraclient: re-offer: set local description", "err", err)
		return
	}
	if err := c.sendSignaling(map[string]any{"type": replyType, "sdp": answer.SDP}); err != nil {
		c.log.Debug("soraclient: send "+replyType, "err", err)
	}
}

func (c *Client) handlePing(data []byte) {
	var msg struct {
		Stats bool `json:"stats"`
	}
	_ = json.Unmarshal(data, &msg)
	pong := map[string]any{"type": "pong"}
	if msg.Stats {
		pong["stats"] = c.statsReport()
	}
	if err := c.writeJSON(pong); err != nil {
		c.log.Debug("soraclient: send pong", "err", err)
	}
}

// markClosed records that the WebSocket is closed.
func (c *Client) markClosed() {
	c.closedOnce.Do(func() { close(c.closed) })
	c.endMu.Lock()
	c.wsDone = true
	c.endMu.Unlock()
	c.checkEnded()
}

// record stores a received message (label "" for the WebSocket) and wakes
// WaitMessage callers. Its type is read only when isJSON.
func (c *Client) record(label string, isJSON bool, data []byte) Message {
	m := Message{Label: label, Raw: data, At: time.Now()}
	if isJSON {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(data, &head) == nil {
			m.Type = head.Type
		}
	}
	c.msgMu.Lock()
	if len(c.msgs) >= MaxMessages {
		c.msgs[0] = Message{}
		c.msgs = c.msgs[1:]
	}
	c.msgs = append(c.msgs, m)
	c.msgSeq++
	close(c.msgNotify)
	c.msgNotify = make(chan struct{})
	c.msgMu.Unlock()
	return m
}

// statsReport is what the client answers a ping asking for statistics
// with: one RTCStats-shaped object per remote track, as a browser's
// getStats() lists its inbound-rtp entries.
func (c *Client) statsReport() []map[string]any {
	now := float64(time.Now().UnixNano()) / 1e6
	received := c.Received()
	keys := make([]string, 0, len(received))
	for k := range received {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		stream, kind, _ := strings.Cut(k, "/")
		out = append(out, map[string]any{
			"id": "RTCInboundRTP_" + k, "type": "inbound-rtp", "kind": kind, "trackIdentifier": stream,
			"packetsReceived": received[k].Packets, "bytesReceived": received[k].Bytes, "timestamp": now,
		})
	}
	return out
}

func (c *Client) writeJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("soraclient: marshal: %w", err)
	}
	return c.SendRaw(websocket.TextMessage, data)
}

// ConnectionID returns the connection_id of the offer.
func (c *Client) ConnectionID() string { return c.connectionID }

// URL is the signaling URL that sent the offer: the node that admitted the
// connect, after any redirects.
func (c *Client) URL() string { return c.url }

// Offer returns a fresh copy of the offer message as received.
func (c *Client) Offer() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(c.offerRaw, &m)
	return m
}

// PeerConnection returns the underlying pion PeerConnection. Read its
// local description with LocalDescription.
func (c *Client) PeerConnection() *webrtc.PeerConnection { return c.pc }

// LocalDescription returns the PeerConnection's local description with the
// candidates gathered so far, read while no re-offer is being applied: pion
// adds the candidates into the description it reads itself while it
// applies one.
func (c *Client) LocalDescription() *webrtc.SessionDescription {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	return c.pc.LocalDescription()
}

// Messages returns copies of the received messages, oldest first (at most
// MaxMessages; older ones were dropped).
func (c *Client) Messages() []Message {
	c.msgMu.Lock()
	defer c.msgMu.Unlock()
	out := make([]Message, len(c.msgs))
	for i, m := range c.msgs {
		m.Raw = append(json.RawMessage(nil), m.Raw...)
		out[i] = m
	}
	return out
}

// WaitMessage returns the first message, already received or still to come,
// for which match returns true. It fails when ctx ends or when no match can
// come any more (the error wraps ErrClosed): the WebSocket closed and so did
// DataChannel signaling if the server started it.
func (c *Client) WaitMessage(ctx context.Context, match func(Message) bool) (Message, error) {
	var next uint64
	closed := false
	for {
		c.msgMu.Lock()
		first := c.msgSeq - uint64(len(c.msgs))
		if next < first {
			next = first
		}
		batch := make([]Message, 0, c.msgSeq-next)
		for ; next < c.msgSeq; next++ {
			batch = append(batch, c.msgs[next-first])
		}
		notify := c.msgNotify
		c.msgMu.Unlock()
		for _, m := range batch {
			if match(m) {
				m.Raw = append(json.RawMessage(nil), m.Raw...)
				return m, nil
			}
		}
		if closed {
			return Message{}, fmt.Errorf("soraclient: waiting for a message: %w", ErrClosed)
		}
		select {
		case <-notify:
		case <-c.ended:
			closed = true // one more scan: the readers record before closing
		case <-ctx.Done():
			return Message{}, fmt.Errorf("soraclient: waiting for a message: %w", context.Cause(ctx))
		}
	}
}

// Received returns the per-track counters, keyed "<stream id>/<kind>".
func (c *Client) Received() map[string]TrackStats {
	c.tracksMu.Lock()
	defer c.tracksMu.Unlock()
	out := make(map[string]TrackStats, len(c.tracks))
	for k, tc := range c.tracks {
		out[k] = tc.snapshot()
	}
	return out
}

func (tc *trackCounter) snapshot() TrackStats {
	tc.seqMu.Lock()
	expected := tc.seq.expected()
	tc.seqMu.Unlock()
	s := TrackStats{Packets: tc.packets.Load(), Bytes: tc.bytes.Load()}
	s.Lost = max(expected-s.Packets, 0)
	if n := tc.firstNano.Load(); n != 0 {
		s.FirstPacket = time.Unix(0, n)
	}
	if n := tc.lastNano.Load(); n != 0 {
		s.LastPacket = time.Unix(0, n)
	}
	return s
}

// WaitPackets waits until the remote track of that stream id ("audio" or
// "video") has delivered at least n RTP packets.
func (c *Client) WaitPackets(ctx context.Context, streamID, kind string, n int64) error {
	key := streamID + "/" + kind
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		c.tracksMu.Lock()
		tc := c.tracks[key]
		c.tracksMu.Unlock()
		var got int64
		if tc != nil {
			if got = tc.packets.Load(); got >= n {
				return nil
			}
		}
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return fmt.Errorf("soraclient: waiting for %d packets on %s (have %d): %w", n, key, got, ErrClosed)
		case <-ctx.Done():
			return fmt.Errorf("soraclient: waiting for %d packets on %s (have %d): %w", n, key, got, context.Cause(ctx))
		}
	}
}

// Send sends msg as a JSON text frame on the signaling WebSocket.
func (c *Client) Send(msg any) error { return c.writeJSON(msg) }

// SendRaw sends one frame of the given websocket message type (e.g.
// websocket.BinaryMessage) with data as is.
func (c *Client) SendRaw(messageType int, data []byte) error {
	c.wsMu.Lock()
	defer c.wsMu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("soraclient: websocket write: %w", err)
	}
	if err := c.ws.WriteMessage(messageType, data); err != nil {
		return fmt.Errorf("soraclient: websocket write: %w", err)
	}
	return nil
}

// Disconnect sends {"type":"disconnect","reason":"NO-ERROR"} and waits for
// the server to close the WebSocket, returning the close code and reason it
// sent. It releases nothing: call Close afterwards.
//
// When DataChannel signaling is open, disconnect goes there instead and
// Disconnect waits until the server closes DC signaling or the WebSocket.
// It then returns the WebSocket's close code and reason if the server
// closed a WebSocket that was open (it closes the DataChannels first; a
// close frame within a second after them is waited for), else nil with a
// nil error.
func (c *Client) Disconnect(ctx context.Context) (*CloseError, error) {
	if ch := c.signalingChannel(); ch != nil {
		return c.disconnectOverDataChannel(ctx, ch)
	}
	sendErr := c.Send(map[string]any{"type": "disconnect", "reason": "NO-ERROR"})
	select {
	case <-c.closed:
	case <-ctx.Done():
		if sendErr != nil {
			return nil, sendErr
		}
		return nil, fmt.Errorf("soraclient: waiting for the server to close after disconnect: %w", context.Cause(ctx))
	}
	if ci := c.CloseInfo(); ci != nil {
		return ci, nil
	}
	if sendErr != nil {
		return nil, sendErr
	}
	return nil, errors.New("soraclient: websocket closed without a close frame after disconnect")
}

// Closed is closed when the WebSocket has closed for any reason (also by
// CloseWebSocket).
func (c *Client) Closed() <-chan struct{} { return c.closed }

// CloseInfo returns the close code and reason of the close frame the server
// sent, or nil if none was received (yet). The server's reply to the
// client's own close frame (CloseWebSocket) is not reported.
func (c *Client) CloseInfo() *CloseError {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closeInfo == nil {
		return nil
	}
	ci := *c.closeInfo
	return &ci
}

// Close tears the client down: it closes the WebSocket (sending a close
// frame if it is still open) and the PeerConnection, and waits for every
// goroutine the client started. It is idempotent.
func (c *Client) Close() error {
	c.closeAllOnce.Do(func() {
		c.goMu.Lock()
		c.closing = true
		c.goMu.Unlock()
		c.cancel()
		if c.ws != nil {
			c.closeSocket(c.ws)
		}
		if c.pc != nil {
			if err := c.pc.GracefulClose(); err != nil {
				c.closeErr = fmt.Errorf("soraclient: close peer connection: %w", err)
			}
		}
		c.wg.Wait()
		c.markClosed()
		c.dcClosedOnce.Do(func() { close(c.dcClosed) })
		c.endedOnce.Do(func() { close(c.ended) })
	})
	return c.closeErr
}

// sdpAttribute returns the value of the first "a=<name>:" line of an SDP.
func sdpAttribute(sdp, name string) string {
	prefix := "a=" + name + ":"
	for line := range strings.SplitSeq(sdp, "\n") {
		line = strings.TrimRight(line, "\r")
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return ""
}
