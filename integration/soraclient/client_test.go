package soraclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
)

const (
	fakeConnectionID = "CLIENTCONNECTIONID00000001"
	publisherID      = "PUBLISHERCONNECTIONID00000"
	publisher2ID     = "SECONDPUBLISHERCONNECTION0"
	testTimeout      = 15 * time.Second
)

// ---------------------------------------------------------------------------
// A tiny fake Sora signaling server: gorilla websocket + an ICE-lite pion
// PeerConnection that is always the offerer, as Sora is.

type fakeConfig struct {
	// publishers are msid stream ids of server-sent (sendonly) VP8 tracks
	// put in the offer and fed with RTP.
	publishers []string
	// preOffer messages are sent between connect and offer.
	preOffer []any
	// handleConnect, when set, replaces the offer logic after connect was
	// read; the session then just reads until the socket closes.
	handleConnect func(s *fakeSession)
	// dataChannels, when set, are created before the offer and listed in
	// its data_channels (with rpc_methods); switched is sent on the
	// WebSocket once all are open.
	dataChannels []fakeDC
	// rpc answers a JSON-RPC request on DC rpc with a result or, when
	// rpcErr is non-nil, that error object; with neither it does not
	// answer.
	rpc func(method string, params json.RawMessage) (result any, rpcErr map[string]any)
	// skipSeqEvery, when positive, makes the publishers' feeds leave out
	// every skipSeqEvery-th sequence number, as if that packet were lost.
	skipSeqEvery int
}

// fakeDC is a DataChannel the fake server opens.
type fakeDC struct {
	label     string
	direction string
	compress  bool
}

// soraDataChannels are the signaling DataChannels Sora opens.
func soraDataChannels(compress bool) []fakeDC {
	return []fakeDC{
		{LabelSignaling, "sendrecv", compress},
		{LabelNotify, "sendonly", compress},
		{LabelPush, "sendonly", compress},
		{LabelStats, "sendrecv", compress},
		{LabelRPC, "sendrecv", compress},
	}
}

// dcMessage is a DataChannel message the fake server received.
type dcMessage struct {
	label  string
	text   bool   // sent as a text message
	wire   []byte // as received
	data   []byte // inflated on compressed labels
	object map[string]any
}

type fakeServer struct {
	t      *testing.T
	cfg    fakeConfig
	srv    *httptest.Server
	URL    string
	api    *webrtc.API
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	sessions []*fakeSession
	wg       sync.WaitGroup

	closeOnce sync.Once
}

type fakeSession struct {
	fs      *fakeServer
	ws      *websocket.Conn
	wsMu    sync.Mutex
	connect map[string]any

	pc   *webrtc.PeerConnection
	pcMu sync.Mutex // serializes renegotiation

	mu          sync.Mutex
	msgs        []map[string]any // every message from the client after connect
	recv        map[string]*serverTrack
	dcMsgs      []dcMessage                 // every DataChannel message from the client
	dcs         map[string]*fakeDataChannel // by label
	clientClose *websocket.CloseError       // the close frame the client sent
}

type fakeDataChannel struct {
	dc       *webrtc.DataChannel
	compress bool
}

// serverTrack is what the fake server received from the client on one kind.
type serverTrack struct {
	mime       atomic.Value // string
	packets    atomic.Int64
	keyFrames  atomic.Int64 // VP8 key frames seen
	firstByte  atomic.Int64 // first payload byte of the first packet + 1
	lastSize   atomic.Int64 // payload bytes of the last packet
	mu         sync.Mutex
	timestamps []uint32 // first distinct RTP timestamps, bounded
}

func newFakeServer(t *testing.T, cfg fakeConfig) *fakeServer {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetLite(true)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)

	ctx, cancel := context.WithCancel(context.Background())
	fs := &fakeServer{
		t:      t,
		cfg:    cfg,
		api:    webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)),
		ctx:    ctx,
		cancel: cancel,
	}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.handle))
	fs.URL = "ws" + strings.TrimPrefix(fs.srv.URL, "http") + "/signaling"
	t.Cleanup(fs.Close)
	return fs
}

// goroutine runs f tracked by the server's WaitGroup unless it is closing.
func (fs *fakeServer) goroutine(f func()) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return false
	}
	fs.wg.Add(1)
	go func() {
		defer fs.wg.Done()
		f()
	}()
	return true
}

func (fs *fakeServer) Close() {
	fs.closeOnce.Do(func() {
		fs.mu.Lock()
		fs.closed = true
		sessions := slices.Clone(fs.sessions)
		fs.mu.Unlock()
		fs.cancel()
		for _, s := range sessions {
			_ = s.ws.Close()
			s.pcMu.Lock()
			pc := s.pc
			s.pcMu.Unlock()
			if pc != nil {
				_ = pc.GracefulClose()
			}
		}
		fs.srv.Close()
		fs.wg.Wait()
	})
}

// session waits for the i-th signaling session (0-based).
func (fs *fakeServer) session(t *testing.T, ctx context.Context, i int) *fakeSession {
	t.Helper()
	var s *fakeSession
	eventually(t, ctx, "session to start", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if len(fs.sessions) > i {
			s = fs.sessions[i]
			return true
		}
		return false
	})
	return s
}

func (fs *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s := &fakeSession{fs: fs, ws: ws, recv: map[string]*serverTrack{}, dcs: map[string]*fakeDataChannel{}}
	done := make(chan struct{})
	if !fs.goroutine(func() { <-done }) { // keeps Close waiting for this handler
		_ = ws.Close()
		return
	}
	defer close(done)
	defer ws.Close()

	_, data, err := ws.ReadMessage()
	if err != nil {
		return
	}
	if err := json.Unmarshal(data, &s.connect); err != nil || s.connect["type"] != "connect" {
		s.closeWith(4490, "NOT-CONNECT")
		return
	}
	fs.mu.Lock()
	fs.sessions = append(fs.sessions, s)
	fs.mu.Unlock()

	if fs.cfg.handleConnect != nil {
		fs.cfg.handleConnect(s)
	} else if err := s.offer(); err != nil {
		fs.t.Errorf("fake server: offer: %v", err)
		return
	}
	s.readLoop()
}

func (s *fakeSession) send(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	s.sendRaw(websocket.TextMessage, data)
}

func (s *fakeSession) sendRaw(mt int, data []byte) {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	_ = s.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = s.ws.WriteMessage(mt, data)
}

func (s *fakeSession) closeWith(code int, reason string) {
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

func (s *fakeSession) offer() error {
	fs := s.fs
	pc, err := fs.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	s.pcMu.Lock()
	defer s.pcMu.Unlock()
	s.pc = pc
	fs.mu.Lock()
	closed := fs.closed
	fs.mu.Unlock()
	if closed { // Close may have missed this pc
		_ = pc.GracefulClose()
		return nil
	}
	pc.OnTrack(s.onTrack)

	msg := map[string]any{
		"type":          "offer",
		"connection_id": fakeConnectionID,
		"client_id":     fakeConnectionID,
		"bundle_id":     fakeConnectionID,
		"session_id":    "FAKESESSIONID0000000000000",
		"channel_id":    s.connect["channel_id"],
		"config":        map[string]any{"iceServers": []any{}},
		"version":       "fake",
	}
	var audio, video *webrtc.RTPTransceiver
	if role := s.connect["role"]; role == "sendrecv" || role == "sendonly" {
		if audio, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio,
			webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
		if video, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo,
			webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
	}
	for _, id := range fs.cfg.publishers {
		if err := s.addPublisherLocked(id); err != nil {
			return err
		}
	}
	if len(fs.cfg.dataChannels) > 0 {
		entries, err := s.createDataChannelsLocked()
		if err != nil {
			return err
		}
		msg["data_channels"] = entries
		msg["rpc_methods"] = []string{"2025.2.0/RequestSimulcastRid"}
		msg["data_channel_signaling"] = true
	}
	sdp, err := s.createOfferLocked()
	if err != nil {
		return err
	}
	msg["sdp"] = sdp
	if audio != nil {
		msg["mid"] = map[string]any{"audio": audio.Mid(), "video": video.Mid()}
	}
	for _, m := range fs.cfg.preOffer {
		s.send(m)
	}
	s.send(msg)
	return nil
}

func (s *fakeSession) createOfferLocked() (string, error) {
	offer, err := s.pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(offer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-s.fs.ctx.Done():
		return "", s.fs.ctx.Err()
	}
	return s.pc.LocalDescription().SDP, nil
}

// addPublisherLocked adds a sendonly VP8 track whose msid stream id is id and
// feeds it with RTP every 20 ms.
func (s *fakeSession) addPublisherLocked(id string) error {
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video-"+id, id)
	if err != nil {
		return err
	}
	if _, err := s.pc.AddTransceiverFromTrack(track,
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		return err
	}
	ctx := s.fs.ctx
	s.fs.goroutine(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		payload := append([]byte{0x10}, vp8Frame(false, 300)...) // descriptor S=1, PID 0
		var seq uint16
		var ts uint32
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			seq++
			if skip := s.fs.cfg.skipSeqEvery; skip > 0 && seq%uint16(skip) == 0 {
				seq++
			}
			ts += 1800
			_ = track.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: ts},
				Payload: payload,
			})
		}
	})
	return nil
}

// reoffer adds a publisher track, sends re-offer and waits for re-answer
// (which readLoop applies).
func (s *fakeSession) reoffer(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	s.pcMu.Lock()
	err := s.addPublisherLocked(id)
	var sdp string
	if err == nil {
		sdp, err = s.createOfferLocked()
	}
	s.pcMu.Unlock()
	if err != nil {
		t.Fatalf("re-offer: %v", err)
	}
	s.send(map[string]any{"type": "re-offer", "sdp": sdp})
	s.waitMsg(t, ctx, "re-answer")
}

func (s *fakeSession) onTrack(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	st := &serverTrack{}
	st.mime.Store(track.Codec().MimeType)
	s.mu.Lock()
	s.recv[track.Kind().String()] = st
	s.mu.Unlock()
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		st.firstByte.CompareAndSwap(0, int64(pkt.Payload[0])+1)
		st.lastSize.Store(int64(len(pkt.Payload)))
		st.mu.Lock()
		if n := len(st.timestamps); n < 50 && (n == 0 || st.timestamps[n-1] != pkt.Timestamp) {
			st.timestamps = append(st.timestamps, pkt.Timestamp)
		}
		st.mu.Unlock()
		if strings.EqualFold(track.Codec().MimeType, webrtc.MimeTypeVP8) {
			var vp8 codecs.VP8Packet
			if b, err := vp8.Unmarshal(pkt.Payload); err == nil && vp8.S == 1 && vp8.PID == 0 &&
				len(b) >= 10 && b[0]&1 == 0 && bytes.Equal(b[3:6], []byte{0x9d, 0x01, 0x2a}) {
				st.keyFrames.Add(1)
			}
		}
		st.packets.Add(1)
	}
}

func (s *fakeSession) track(kind string) *serverTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recv[kind]
}

func (s *fakeSession) packets(kind string) int64 {
	if st := s.track(kind); st != nil {
		return st.packets.Load()
	}
	return 0
}

func (s *fakeSession) readLoop() {
	for {
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				s.mu.Lock()
				s.clientClose = ce
				s.mu.Unlock()
			}
			return
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
		s.pcMu.Lock()
		pc := s.pc
		s.pcMu.Unlock()
		switch m["type"] {
		case "disconnect":
			s.closeWith(1000, "TYPE-DISCONNECT")
		default:
			s.handleSignaling(pc, m)
		}
	}
}

// handleSignaling applies an answer or a candidate from either transport.
func (s *fakeSession) handleSignaling(pc *webrtc.PeerConnection, m map[string]any) {
	switch m["type"] {
	case "answer", "re-answer":
		sdp, _ := m["sdp"].(string)
		s.pcMu.Lock()
		err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
		s.pcMu.Unlock()
		if err != nil {
			s.fs.t.Errorf("fake server: set %s: %v", m["type"], err)
		}
	case "candidate":
		cand, _ := m["candidate"].(string)
		if pc != nil {
			_ = pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: cand})
		}
	}
}

// createDataChannelsLocked creates the configured DataChannels and returns
// their offer entries. Once all are open, switched goes on the WebSocket.
func (s *fakeSession) createDataChannelsLocked() ([]any, error) {
	dcs := s.fs.cfg.dataChannels
	var entries []any
	var open atomic.Int32
	for _, d := range dcs {
		dc, err := s.pc.CreateDataChannel(d.label, nil)
		if err != nil {
			return nil, err
		}
		fdc := &fakeDataChannel{dc: dc, compress: d.compress}
		s.mu.Lock()
		s.dcs[d.label] = fdc
		s.mu.Unlock()
		dc.OnOpen(func() {
			if int(open.Add(1)) == len(dcs) {
				ignore, _ := s.connect["ignore_disconnect_websocket"].(bool)
				s.send(map[string]any{"type": "switched", "ignore_disconnect_websocket": ignore})
			}
		})
		dc.OnMessage(func(msg webrtc.DataChannelMessage) { s.onDCMessage(d.label, fdc, msg) })
		entries = append(entries, map[string]any{"label": d.label, "direction": d.direction, "compress": d.compress})
	}
	return entries, nil
}

func (s *fakeSession) onDCMessage(label string, fdc *fakeDataChannel, msg webrtc.DataChannelMessage) {
	dm := dcMessage{label: label, text: msg.IsString, wire: msg.Data, data: msg.Data}
	if fdc.compress {
		// what does not inflate is kept with data nil (bad input tests)
		dm.data, _ = inflate(msg.Data, maxInflated)
	}
	if !strings.HasPrefix(label, "#") {
		_ = json.Unmarshal(dm.data, &dm.object)
	}
	s.mu.Lock()
	s.dcMsgs = append(s.dcMsgs, dm)
	s.mu.Unlock()
	switch {
	case label == LabelSignaling:
		s.pcMu.Lock()
		pc := s.pc
		s.pcMu.Unlock()
		if dm.object["type"] == "disconnect" {
			// Sora closes the DataChannels, then a WebSocket still open.
			s.fs.goroutine(func() {
				s.closeDataChannels()
				time.Sleep(50 * time.Millisecond)
				s.closeWith(1000, "TYPE-DISCONNECT")
			})
			return
		}
		s.handleSignaling(pc, dm.object)
	case label == LabelRPC:
		s.answerRPC(dm.data)
	case strings.HasPrefix(label, "#"):
		// Echo, as if another connection sent it: with the
		// sender_connection_id header when the client asked for it.
		payload := dm.data
		if s.wantsSenderHeader(label) {
			payload = append([]byte(publisherID), payload...)
		}
		s.sendDCPayload(label, payload, false)
	}
}

func (s *fakeSession) answerRPC(data []byte) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(data, &req); err != nil || s.fs.cfg.rpc == nil {
		return
	}
	result, rpcErr := s.fs.cfg.rpc(req.Method, req.Params)
	resp := map[string]any{"jsonrpc": "2.0", "id": req.ID}
	switch {
	case rpcErr != nil:
		resp["error"] = rpcErr
	case result != nil:
		resp["result"] = result
	default:
		return
	}
	s.sendDC(LabelRPC, resp)
}

// wantsSenderHeader reports whether the client's connect entry for label
// asked for the sender_connection_id header.
func (s *fakeSession) wantsSenderHeader(label string) bool {
	entries, _ := s.connect["data_channels"].([]any)
	for _, e := range entries {
		m, _ := e.(map[string]any)
		if m["label"] != label {
			continue
		}
		headers, _ := m["header"].([]any)
		for _, h := range headers {
			if hm, _ := h.(map[string]any); hm["type"] == "sender_connection_id" {
				return true
			}
		}
	}
	return false
}

// sendDC sends v as JSON on a DataChannel, compressed when the label is.
func (s *fakeSession) sendDC(label string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	s.sendDCPayload(label, data, true)
}

func (s *fakeSession) sendDCPayload(label string, data []byte, isJSON bool) {
	s.mu.Lock()
	fdc := s.dcs[label]
	s.mu.Unlock()
	if fdc == nil {
		s.fs.t.Errorf("fake server: no DataChannel %q", label)
		return
	}
	var err error
	switch {
	case fdc.compress:
		err = fdc.dc.Send(deflate(data))
	case isJSON:
		err = fdc.dc.SendText(string(data))
	default:
		err = fdc.dc.Send(data)
	}
	if err != nil {
		s.fs.t.Errorf("fake server: send on %q: %v", label, err)
	}
}

// closeDataChannels closes every DataChannel of the session.
func (s *fakeSession) closeDataChannels() {
	s.mu.Lock()
	dcs := make([]*fakeDataChannel, 0, len(s.dcs))
	for _, d := range s.dcs {
		dcs = append(dcs, d)
	}
	s.mu.Unlock()
	for _, d := range dcs {
		_ = d.dc.Close()
	}
}

// reofferDC adds a publisher track, sends re-offer on DC signaling and
// waits for the re-answer there.
func (s *fakeSession) reofferDC(t *testing.T, ctx context.Context, id string) dcMessage {
	t.Helper()
	s.pcMu.Lock()
	err := s.addPublisherLocked(id)
	var sdp string
	if err == nil {
		sdp, err = s.createOfferLocked()
	}
	s.pcMu.Unlock()
	if err != nil {
		t.Fatalf("re-offer: %v", err)
	}
	s.sendDC(LabelSignaling, map[string]any{"type": "re-offer", "sdp": sdp})
	return s.waitDCMsg(t, ctx, LabelSignaling, "re-answer")
}

// waitDCMsg waits for a JSON message of that type from the client on a
// DataChannel.
func (s *fakeSession) waitDCMsg(t *testing.T, ctx context.Context, label, typ string) dcMessage {
	t.Helper()
	var found dcMessage
	eventually(t, ctx, "client DataChannel message "+label+" "+typ, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.dcMsgs {
			if m.label == label && m.object["type"] == typ {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// labelPayloads returns what the client sent on a DataChannel label.
func (s *fakeSession) labelPayloads(label string) []dcMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dcMessage
	for _, m := range s.dcMsgs {
		if m.label == label {
			out = append(out, m)
		}
	}
	return out
}

func (s *fakeSession) closeFrame() *websocket.CloseError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientClose
}

// waitMsg waits for a message of that type from the client.
func (s *fakeSession) waitMsg(t *testing.T, ctx context.Context, typ string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, ctx, "client message "+typ, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.msgs {
			if m["type"] == typ {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// ---------------------------------------------------------------------------
// helpers

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 5 ms until it holds or ctx ends.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func mustConnect(t *testing.T, ctx context.Context, opts Options) *Client {
	t.Helper()
	c, err := Connect(ctx, opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func messageTypes(c *Client) []string {
	var out []string
	for _, m := range c.Messages() {
		out = append(out, m.Type)
	}
	return out
}

func ofType(typ string) func(Message) bool {
	return func(m Message) bool { return m.Type == typ }
}

// ---------------------------------------------------------------------------
// tests

func TestSendonlyPublishesAudioAndVideo(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{preOffer: []any{
		map[string]any{"type": "notify", "event_type": "something.before.offer"},
		map[string]any{"type": "unknown-before-offer"},
	}})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-sendonly", Role: "sendonly", Audio: true, Video: true,
	})
	s := fs.session(t, ctx, 0)

	eventually(t, ctx, "audio and video RTP at the server", func() bool {
		v := s.track("video")
		return s.packets("audio") >= 25 && s.packets("video") >= 20 && v != nil && v.keyFrames.Load() >= 1
	})

	// connect as the SDKs send it
	cm := s.connect
	for k, want := range map[string]any{
		"type": "connect", "role": "sendonly", "channel_id": "ch-sendonly",
		"sora_client": SoraClient, "audio": true, "video": true,
	} {
		if cm[k] != want {
			t.Errorf("connect[%q] = %#v, want %#v", k, cm[k], want)
		}
	}
	if md, ok := cm["metadata"]; !ok || md != nil {
		t.Errorf("connect metadata = %#v (present %v), want null", md, ok)
	}
	if env, _ := cm["environment"].(string); env == "" {
		t.Errorf("connect environment empty")
	}
	for _, k := range []string{"client_id", "bundle_id", "signaling_notify_metadata", "redirect", "sdp", "multistream"} {
		if _, ok := cm[k]; ok {
			t.Errorf("connect has %q", k)
		}
	}

	if got := c.ConnectionID(); got != fakeConnectionID {
		t.Errorf("ConnectionID = %q", got)
	}
	if o := c.Offer(); o["type"] != "offer" || o["connection_id"] != fakeConnectionID || o["mid"] == nil {
		t.Errorf("Offer = %v", o)
	}
	types := messageTypes(c)
	if want := []string{"notify", "unknown-before-offer", "offer"}; !slices.Equal(types[:min(3, len(types))], want) {
		t.Errorf("message types = %v, want prefix %v", types, want)
	}

	// media: opus TOC, VP8 codec, timestamps advancing by the sample durations
	a, v := s.track("audio"), s.track("video")
	if mime := a.mime.Load(); !strings.EqualFold(mime.(string), webrtc.MimeTypeOpus) {
		t.Errorf("audio codec %v", mime)
	}
	if mime := v.mime.Load(); !strings.EqualFold(mime.(string), webrtc.MimeTypeVP8) {
		t.Errorf("video codec %v", mime)
	}
	if b := a.firstByte.Load() - 1; b != 0xf8 {
		t.Errorf("first opus byte %#x, want TOC 0xf8", b)
	}
	checkTimestampSteps(t, "audio", a, 960)
	checkTimestampSteps(t, "video", v, 2970)

	// JS-shaped trickle candidates
	cand := s.waitMsg(t, ctx, "candidate")
	if cs, _ := cand["candidate"].(string); !strings.HasPrefix(cs, "candidate:") {
		t.Errorf("candidate %v", cand)
	}
	for _, k := range []string{"sdpMid", "sdpMLineIndex", "usernameFragment"} {
		if _, ok := cand[k]; !ok {
			t.Errorf("candidate lacks %q: %v", k, cand)
		}
	}
	if uf, _ := cand["usernameFragment"].(string); uf == "" {
		t.Errorf("empty usernameFragment: %v", cand)
	}
	if len(c.Received()) != 0 {
		t.Errorf("Received = %v, want nothing", c.Received())
	}
}

func checkTimestampSteps(t *testing.T, kind string, st *serverTrack, step uint32) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.timestamps) < 5 {
		t.Errorf("%s: only %d timestamps", kind, len(st.timestamps))
		return
	}
	for i := 1; i < len(st.timestamps); i++ {
		if d := st.timestamps[i] - st.timestamps[i-1]; d%step != 0 || d == 0 {
			t.Errorf("%s: timestamp step %d, want multiples of %d", kind, d, step)
			return
		}
	}
}

func TestRecvonlyReceivesPublisherTrack(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{publishers: []string{publisherID}})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-recvonly", Role: "recvonly", Audio: true, Video: true,
	})
	if err := c.WaitPackets(ctx, publisherID, "video", 20); err != nil {
		t.Fatal(err)
	}
	st, ok := c.Received()[publisherID+"/video"]
	if !ok || st.Packets < 20 || st.Bytes < 20*300 || st.FirstPacket.IsZero() || st.FirstPacket.After(time.Now()) {
		t.Errorf("Received = %+v", c.Received())
	}
	if _, ok := c.Offer()["mid"]; ok {
		t.Errorf("recvonly offer has mid")
	}
	s := fs.session(t, ctx, 0)
	if s.track("audio") != nil || s.track("video") != nil {
		t.Errorf("recvonly client sent media")
	}
}

func TestPingNotifyPushUnknown(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{})
	c := mustConnect(t, ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-ping", Role: "sendonly", Audio: true})
	s := fs.session(t, ctx, 0)

	s.send(map[string]any{"type": "ping", "stats": true})
	pong := s.waitMsg(t, ctx, "pong")
	if stats, ok := pong["stats"].([]any); !ok {
		t.Fatalf("pong = %v, want stats array", pong)
	} else if len(stats) != 0 {
		t.Errorf("stats = %v", stats)
	}
	s.mu.Lock()
	s.msgs = nil
	s.mu.Unlock()
	s.send(map[string]any{"type": "ping"})
	if pong := s.waitMsg(t, ctx, "pong"); pong["stats"] != nil {
		t.Errorf("pong to ping without stats = %v", pong)
	}

	s.send(map[string]any{"type": "notify", "event_type": "connection.created", "connection_id": fakeConnectionID})
	s.send(map[string]any{"type": "push", "data": map[string]any{"n": 1}})
	s.send(map[string]any{"type": "no-such-type"})
	s.sendRaw(websocket.BinaryMessage, []byte{1, 2, 3})
	s.send(map[string]any{"type": "offer", "sdp": "ignored after connect"})
	m, err := c.WaitMessage(ctx, func(m Message) bool {
		var v struct {
			EventType string `json:"event_type"`
		}
		return m.Type == "notify" && json.Unmarshal(m.Raw, &v) == nil && v.EventType == "connection.created"
	})
	if err != nil || m.At.IsZero() {
		t.Fatalf("WaitMessage notify: %v %v", m, err)
	}
	for _, typ := range []string{"push", "no-such-type", "", "ping"} {
		if _, err := c.WaitMessage(ctx, ofType(typ)); err != nil {
			t.Errorf("WaitMessage(%q): %v", typ, err)
		}
	}
	// the late offer was recorded and ignored: still connected, still one offer answered
	if _, err := c.WaitMessage(ctx, func(m Message) bool { return m.Type == "offer" && strings.Contains(string(m.Raw), "ignored") }); err != nil {
		t.Error(err)
	}
	if got := c.PeerConnection().ConnectionState(); got != webrtc.PeerConnectionStateConnected {
		t.Errorf("state %v", got)
	}
	s.mu.Lock()
	answers := 0
	for _, m := range s.msgs {
		if m["type"] == "answer" {
			answers++
		}
	}
	s.mu.Unlock()
	if answers != 0 { // msgs was reset after the first pong; no second answer
		t.Errorf("client answered the late offer")
	}
}

func TestReOfferAddsTrack(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{publishers: []string{publisherID}})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-reoffer", Role: "sendrecv", Audio: true, Video: true,
	})
	if err := c.WaitPackets(ctx, publisherID, "video", 5); err != nil {
		t.Fatal(err)
	}
	s := fs.session(t, ctx, 0)
	s.reoffer(t, ctx, publisher2ID)
	if m := s.waitMsg(t, ctx, "re-answer"); strings.Count(m["sdp"].(string), "\r\nm=") != 4 {
		t.Errorf("re-answer should answer 4 m-lines (2 upstream, 2 publishers): %v", m["sdp"])
	}
	if err := c.WaitPackets(ctx, publisher2ID, "video", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitMessage(ctx, ofType("re-offer")); err != nil {
		t.Error(err)
	}
	// the client keeps publishing after renegotiation
	n := s.packets("video")
	eventually(t, ctx, "more client video after re-offer", func() bool { return s.packets("video") > n+5 })
}

func TestCloseBeforeOffer(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{handleConnect: func(s *fakeSession) {
		s.closeWith(4490, "BAD-CONNECT")
	}})
	c, err := Connect(ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-bad", Role: "sendrecv"})
	if err == nil {
		_ = c.Close()
		t.Fatal("Connect succeeded")
	}
	ce, ok := err.(*CloseError)
	if !ok {
		t.Fatalf("error %T %v, want *CloseError", err, err)
	}
	if ce.Code != 4490 || ce.Reason != "BAD-CONNECT" {
		t.Errorf("CloseError = %+v", ce)
	}
}

func TestConnectHonoursContext(t *testing.T) {
	fs := newFakeServer(t, fakeConfig{handleConnect: func(*fakeSession) {}}) // never offers
	ctx, cancel := context.WithTimeout(testContext(t), 200*time.Millisecond)
	defer cancel()
	c, err := Connect(ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-silent", Role: "recvonly"})
	if err == nil {
		_ = c.Close()
		t.Fatal("Connect succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
}

func TestRedirect(t *testing.T) {
	ctx := testContext(t)
	b := newFakeServer(t, fakeConfig{})
	a := newFakeServer(t, fakeConfig{handleConnect: func(s *fakeSession) {
		s.send(map[string]any{"type": "redirect", "location": b.URL})
	}})
	opts := Options{
		SignalingURL: a.URL, ChannelID: "ch-redirect", Role: "sendonly", Audio: true,
		Metadata: map[string]any{"access_token": "x"},
	}
	c := mustConnect(t, ctx, opts)
	if c.ConnectionID() != fakeConnectionID {
		t.Errorf("ConnectionID %q", c.ConnectionID())
	}
	ca := a.session(t, ctx, 0).connect
	cb := b.session(t, ctx, 0).connect
	if _, ok := ca["redirect"]; ok {
		t.Errorf("first connect has redirect: %v", ca)
	}
	if cb["redirect"] != true {
		t.Errorf("redirected connect = %v, want redirect: true", cb)
	}
	cb2 := maps.Clone(cb)
	delete(cb2, "redirect")
	ja, _ := json.Marshal(ca)
	jb, _ := json.Marshal(cb2)
	if !bytes.Equal(ja, jb) {
		t.Errorf("connects differ beyond redirect:\n%s\n%s", ja, jb)
	}
	if got, want := messageTypes(c), []string{"redirect", "offer"}; !slices.Equal(got[:min(2, len(got))], want) {
		t.Errorf("messages %v", got)
	}

	// NoRedirect reports the location instead
	opts.NoRedirect = true
	_, err := Connect(ctx, opts)
	var re *RedirectError
	if !errors.As(err, &re) || re.Location != b.URL {
		t.Errorf("NoRedirect: err = %v", err)
	}
}

func TestDisconnect(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{})
	c := mustConnect(t, ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-dis", Role: "sendonly", Audio: true, Video: true})
	ce, err := c.Disconnect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ce.Code != 1000 || ce.Reason != "TYPE-DISCONNECT" {
		t.Errorf("Disconnect = %+v", ce)
	}
	if m := fs.session(t, ctx, 0).waitMsg(t, ctx, "disconnect"); m["reason"] != "NO-ERROR" {
		t.Errorf("disconnect message %v", m)
	}
	select {
	case <-c.Closed():
	default:
		t.Error("Closed not closed")
	}
	if ci := c.CloseInfo(); ci == nil || *ci != *ce {
		t.Errorf("CloseInfo = %v", ci)
	}
	if _, err := c.WaitMessage(ctx, ofType("never")); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitMessage after close: %v", err)
	}
	if err := c.Send(map[string]any{"type": "late"}); err == nil {
		t.Error("Send after close succeeded")
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := c.WaitPackets(ctx, "x", "video", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitPackets after Close: %v", err)
	}
}

func TestConnectOptionsCodecAndMinimalCandidates(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-opts", Role: "sendrecv", Audio: false, Video: true,
		ClientID: "cid", BundleID: "bid",
		Metadata:                map[string]any{"access_token": "tok"},
		SignalingNotifyMetadata: map[string]any{"name": "n"},
		VideoCodec:              "VP9",
		VideoBitrateKbps:        200,
		CandidateMinimal:        true,
		Extra:                   map[string]any{"multistream": true, "sora_client": Omit, "simulcast": false},
	})
	s := fs.session(t, ctx, 0)
	eventually(t, ctx, "VP9 video at the server", func() bool { return s.packets("video") >= 15 })
	if mime := s.track("video").mime.Load().(string); !strings.EqualFold(mime, webrtc.MimeTypeVP9) {
		t.Errorf("video codec %s, want VP9", mime)
	}
	if s.track("audio") != nil {
		t.Error("audio sent with Audio false")
	}
	got, _ := json.Marshal(s.connect)
	var cm map[string]any
	_ = json.Unmarshal(got, &cm)
	want := map[string]any{
		"client_id": "cid", "bundle_id": "bid", "multistream": true, "simulcast": false, "audio": false,
	}
	for k, v := range want {
		if cm[k] != v {
			t.Errorf("connect[%q] = %#v, want %#v", k, cm[k], v)
		}
	}
	for k, v := range map[string]string{
		"video": `{"codec_type":"VP9"}`, "metadata": `{"access_token":"tok"}`, "signaling_notify_metadata": `{"name":"n"}`,
	} {
		if j, _ := json.Marshal(cm[k]); string(j) != v {
			t.Errorf("connect[%q] = %s, want %s", k, j, v)
		}
	}
	if _, ok := cm["sora_client"]; ok {
		t.Error("Omit did not remove sora_client")
	}
	cand := s.waitMsg(t, ctx, "candidate")
	if len(cand) != 2 || cand["candidate"] == nil {
		t.Errorf("minimal candidate = %v", cand)
	}
	_ = c
}

func TestVideoCodecs(t *testing.T) {
	for _, codec := range videoCodecs {
		t.Run(codec, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeServer(t, fakeConfig{})
			mustConnect(t, ctx, Options{
				SignalingURL: fs.URL, ChannelID: "ch-" + codec, Role: "sendonly", Video: true, VideoCodec: codec,
			})
			s := fs.session(t, ctx, 0)
			eventually(t, ctx, codec+" packets at the server", func() bool { return s.packets("video") >= 10 })
			if mime := s.track("video").mime.Load().(string); !strings.EqualFold(mime, "video/"+codec) {
				t.Errorf("server received %s, want %s", mime, codec)
			}
		})
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{publishers: []string{publisherID}})
	const n = 20
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			role := []string{"sendrecv", "sendonly", "recvonly"}[i%3]
			c, err := Connect(ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-leak", Role: role, Audio: true, Video: true})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.WaitPackets(ctx, publisherID, "video", 3); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fs.Close()
}
