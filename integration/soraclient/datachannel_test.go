package soraclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
)

func waitClosed(t *testing.T, ctx context.Context, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func onLabel(label, typ string) func(Message) bool {
	return func(m Message) bool { return m.Label == label && m.Type == typ }
}

// checkWire checks how a JSON message crossed a DataChannel: zlib binary on
// compressed labels, else text.
func checkWire(t *testing.T, m dcMessage, compress bool) {
	t.Helper()
	if compress {
		if m.text || bytes.Equal(m.wire, m.data) {
			t.Errorf("%s: compressed label got text=%v %q", m.label, m.text, m.wire)
		}
		return
	}
	if !m.text || !bytes.Equal(m.wire, m.data) {
		t.Errorf("%s: uncompressed JSON should be text, got text=%v", m.label, m.text)
	}
}

func TestDataChannelSignaling(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeServer(t, fakeConfig{publishers: []string{publisherID}, dataChannels: soraDataChannels(compress)})
			c := mustConnect(t, ctx, Options{
				SignalingURL: fs.URL, ChannelID: "ch-dc", Role: "recvonly", Video: true,
				DataChannelSignaling: true, IgnoreDisconnectWebSocket: true, CloseWebSocketOnSwitch: true,
			})
			s := fs.session(t, ctx, 0)
			if s.connect["data_channel_signaling"] != true || s.connect["ignore_disconnect_websocket"] != true {
				t.Errorf("connect = %v", s.connect)
			}
			if _, ok := s.connect["data_channels"]; ok {
				t.Errorf("connect has data_channels: %v", s.connect)
			}

			// switched, then the client closes its WebSocket as the C++ SDK does
			waitClosed(t, ctx, "switched", c.Switched())
			waitClosed(t, ctx, "websocket closed", c.Closed())
			eventually(t, ctx, "the client's close frame", func() bool { return s.closeFrame() != nil })
			if cf := s.closeFrame(); cf.Code != 1000 || cf.Text != "SELF-CLOSED" {
				t.Errorf("client close frame = %v", cf)
			}
			if ci := c.CloseInfo(); ci != nil {
				t.Errorf("CloseInfo = %v after the client's own close", ci)
			}
			if _, err := c.WaitMessage(ctx, ofType("switched")); err != nil {
				t.Error(err)
			}
			// switched (TCP) may overtake the last DataChannel's open (SCTP).
			want := []string{LabelNotify, LabelPush, LabelRPC, LabelSignaling, LabelStats}
			eventually(t, ctx, "every DataChannel", func() bool { return slices.Equal(c.DataChannelLabels(), want) })
			if c.DataChannel(LabelSignaling) == nil || c.DataChannel("nope") != nil {
				t.Error("DataChannel lookup")
			}

			// the connection lives on: re-offer over DC signaling, answered there
			re := s.reofferDC(t, ctx, publisher2ID)
			checkWire(t, re, compress)
			if err := c.WaitPackets(ctx, publisher2ID, "video", 10); err != nil {
				t.Fatal(err)
			}
			if got := c.PeerConnection().ConnectionState(); got != webrtc.PeerConnectionStateConnected {
				t.Errorf("peer connection %v", got)
			}
			if m, err := c.WaitMessage(ctx, onLabel(LabelSignaling, "re-offer")); err != nil || !strings.Contains(string(m.Raw), "v=0") {
				t.Errorf("re-offer on DC signaling: %v %v", m, err)
			}
			s.mu.Lock()
			for _, m := range s.msgs {
				if m["type"] == "re-answer" {
					t.Error("re-answer sent on the WebSocket")
				}
			}
			s.mu.Unlock()

			// req-stats on DC stats
			s.sendDC(LabelStats, map[string]any{"type": "req-stats"})
			st := s.waitDCMsg(t, ctx, LabelStats, "stats")
			checkWire(t, st, compress)
			reports, _ := st.object["reports"].([]any)
			found := false
			for _, r := range reports {
				if rm, _ := r.(map[string]any); rm["type"] == "inbound-rtp" && rm["trackIdentifier"] == publisher2ID {
					found = true
				}
			}
			if !found {
				t.Errorf("stats reports lack %s: %v", publisher2ID, st.object)
			}

			// notify and push are recorded with their label
			s.sendDC(LabelNotify, map[string]any{"type": "notify", "event_type": "connection.created"})
			s.sendDC(LabelPush, map[string]any{"type": "push", "data": map[string]any{"n": 1}})
			for _, label := range []string{LabelNotify, LabelPush} {
				m, err := c.WaitMessage(ctx, onLabel(label, label))
				if err != nil {
					t.Fatal(err)
				}
				if !json.Valid(m.Raw) {
					t.Errorf("%s raw %q", label, m.Raw)
				}
			}

			// close over DC signaling, then the server closes the DataChannels
			s.sendDC(LabelSignaling, map[string]any{"type": "close", "code": 1000, "reason": "DISCONNECTED-API"})
			if _, err := c.WaitMessage(ctx, onLabel(LabelSignaling, "close")); err != nil {
				t.Fatal(err)
			}
			s.closeDataChannels()
			waitClosed(t, ctx, "DataChannels closed", c.DataChannelsClosed())
			if _, err := c.WaitMessage(ctx, ofType("never")); !errors.Is(err, ErrClosed) {
				t.Errorf("WaitMessage after the DataChannels closed: %v", err)
			}
			eventually(t, ctx, "DC rpc closed", func() bool {
				return c.DataChannel(LabelRPC).ReadyState() == webrtc.DataChannelStateClosed
			})
			if _, err := c.RPC(ctx, "x", nil); !errors.Is(err, ErrClosed) {
				t.Errorf("RPC after close: %v", err)
			}
		})
	}
}

func TestCloseWebSocketKeepsDataChannels(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{dataChannels: soraDataChannels(false)})
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-close-ws", Role: "sendonly", Audio: true,
		DataChannelSignaling: true, IgnoreDisconnectWebSocket: true,
	})
	s := fs.session(t, ctx, 0)
	waitClosed(t, ctx, "switched", c.Switched())
	time.Sleep(50 * time.Millisecond)
	if isClosed(c.Closed()) || s.closeFrame() != nil {
		t.Fatal("websocket closed without CloseWebSocketOnSwitch")
	}
	if err := c.CloseWebSocket(1000, "bye"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ctx, "websocket closed", c.Closed())
	eventually(t, ctx, "the client's close frame", func() bool { return s.closeFrame() != nil })
	if cf := s.closeFrame(); cf.Code != 1000 || cf.Text != "bye" {
		t.Errorf("close frame %v", cf)
	}
	if err := c.CloseWebSocket(1000, "again"); !errors.Is(err, ErrClosed) {
		t.Errorf("second CloseWebSocket: %v", err)
	}
	// still connected, still receiving over the DataChannels
	s.sendDC(LabelNotify, map[string]any{"type": "notify", "event_type": "after.close"})
	if _, err := c.WaitMessage(ctx, func(m Message) bool {
		return m.Label == LabelNotify && strings.Contains(string(m.Raw), "after.close")
	}); err != nil {
		t.Fatal(err)
	}
	n := s.packets("audio")
	eventually(t, ctx, "audio after the websocket closed", func() bool { return s.packets("audio") > n+5 })
}

func TestDisconnectOverDataChannel(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selfWS   bool // the client closed its WebSocket after switched
		wantInfo *CloseError
	}{
		{name: "websocket open", wantInfo: &CloseError{Code: 1000, Reason: "TYPE-DISCONNECT"}},
		{name: "websocket closed on switch", selfWS: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			fs := newFakeServer(t, fakeConfig{dataChannels: soraDataChannels(true)})
			c := mustConnect(t, ctx, Options{
				SignalingURL: fs.URL, ChannelID: "ch-dc-dis", Role: "sendonly", Audio: true,
				DataChannelSignaling: true, IgnoreDisconnectWebSocket: tc.selfWS, CloseWebSocketOnSwitch: tc.selfWS,
			})
			s := fs.session(t, ctx, 0)
			waitClosed(t, ctx, "switched", c.Switched())
			if tc.selfWS {
				waitClosed(t, ctx, "websocket closed", c.Closed())
			}
			ci, err := c.Disconnect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if (ci == nil) != (tc.wantInfo == nil) || (ci != nil && *ci != *tc.wantInfo) {
				t.Errorf("Disconnect = %v, want %v", ci, tc.wantInfo)
			}
			m := s.waitDCMsg(t, ctx, LabelSignaling, "disconnect")
			if m.object["reason"] != "NO-ERROR" || m.text {
				t.Errorf("disconnect on DC signaling: %v (text %v)", m.object, m.text)
			}
			s.mu.Lock()
			for _, m := range s.msgs {
				if m["type"] == "disconnect" {
					t.Error("disconnect sent on the WebSocket")
				}
			}
			s.mu.Unlock()
			waitClosed(t, ctx, "DataChannels closed", c.DataChannelsClosed())
		})
	}
}

func TestDataChannelMessaging(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			ctx := testContext(t)
			dcs := append(soraDataChannels(compress), fakeDC{"#chat", "sendrecv", compress}, fakeDC{"#raw", "sendrecv", compress})
			fs := newFakeServer(t, fakeConfig{dataChannels: dcs})
			ordered, retransmits := false, 3
			c := mustConnect(t, ctx, Options{
				SignalingURL: fs.URL, ChannelID: "ch-msg", Role: "sendonly",
				DataChannelSignaling: true,
				DataChannels: []DataChannelOption{
					{Label: "#chat", Direction: "sendrecv", Compress: &compress, Ordered: &ordered,
						MaxRetransmits: &retransmits, Protocol: "chat-v1", SenderConnectionIDHeader: true},
					{Label: "#raw", Direction: "sendrecv"},
				},
			})
			s := fs.session(t, ctx, 0)
			gotConnect, _ := json.Marshal(s.connect["data_channels"])
			wantConnect := fmt.Sprintf(`[{"compress":%v,"direction":"sendrecv","header":[{"type":"sender_connection_id"}],`+
				`"label":"#chat","max_retransmits":3,"ordered":false,"protocol":"chat-v1"},{"direction":"sendrecv","label":"#raw"}]`, compress)
			if string(gotConnect) != wantConnect {
				t.Errorf("connect data_channels\n got %s\nwant %s", gotConnect, wantConnect)
			}
			if s.connect["ignore_disconnect_websocket"] != false {
				t.Errorf("ignore_disconnect_websocket = %v, want false", s.connect["ignore_disconnect_websocket"])
			}
			waitClosed(t, ctx, "switched", c.Switched())

			chat := [][]byte{[]byte("hello"), []byte(strings.Repeat("long message ", 500))}
			for _, m := range chat {
				if err := c.SendMessage("#chat", m); err != nil {
					t.Fatal(err)
				}
			}
			raw := []byte{0, 1, 2, 0xff}
			if err := c.SendMessage("#raw", raw); err != nil {
				t.Fatal(err)
			}
			got, err := c.WaitLabelMessages(ctx, "#chat", 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("got %d messages", len(got))
			}
			for i, m := range got {
				id, payload, ok := SplitSenderConnectionID(m)
				if !ok || id != publisherID || !bytes.Equal(payload, chat[i]) {
					t.Errorf("#chat message %d = %q", i, m)
				}
			}
			if got, err := c.WaitLabelMessages(ctx, "#raw", 1); err != nil || len(got) != 1 || !bytes.Equal(got[0], raw) {
				t.Errorf("#raw = %q, %v", got, err)
			}
			if got := c.LabelMessages("#none"); got != nil {
				t.Errorf("LabelMessages(#none) = %v", got)
			}
			// LabelMessages returns copies
			c.LabelMessages("#raw")[0][0] = 9
			if c.LabelMessages("#raw")[0][0] != 0 {
				t.Error("LabelMessages shares its slices")
			}

			// what crossed the wire: binary, zlib when compressed
			sent := s.labelPayloads("#chat")
			if len(sent) != 2 {
				t.Fatalf("server got %d #chat messages", len(sent))
			}
			for i, m := range sent {
				if m.text || !bytes.Equal(m.data, chat[i]) {
					t.Errorf("#chat %d at the server: text %v %q", i, m.text, m.data)
				}
				if compress == bytes.Equal(m.wire, m.data) {
					t.Errorf("#chat %d: compress %v but wire %q", i, compress, m.wire)
				}
			}
			if dc := c.DataChannel("#chat"); dc == nil || dc.Label() != "#chat" {
				t.Error("DataChannel(#chat)")
			}

			if err := c.SendMessage(LabelSignaling, []byte("x")); err == nil {
				t.Error("SendMessage on a signaling label succeeded")
			}
			if err := c.SendMessage("#nope", []byte("x")); err == nil {
				t.Error("SendMessage on an unknown label succeeded")
			}

			// raw sends are never compressed
			if err := c.SendOnDataChannel(LabelSignaling, []byte(`{"type":"bogus"}`), true); err != nil {
				t.Fatal(err)
			}
			if err := c.SendOnDataChannel(LabelStats, []byte{1, 2}, false); err != nil {
				t.Fatal(err)
			}
			eventually(t, ctx, "raw sends at the server", func() bool {
				return len(s.labelPayloads(LabelSignaling)) > 0 && len(s.labelPayloads(LabelStats)) > 0
			})
			sig := s.labelPayloads(LabelSignaling)
			if last := sig[len(sig)-1]; !last.text || string(last.wire) != `{"type":"bogus"}` {
				t.Errorf("raw text send arrived as %v %q", last.text, last.wire)
			}
			if st := s.labelPayloads(LabelStats)[0]; st.text || !bytes.Equal(st.wire, []byte{1, 2}) {
				t.Errorf("raw binary send arrived as %v %q", st.text, st.wire)
			}
			if err := c.SendOnDataChannel("#nope", nil, false); err == nil {
				t.Error("SendOnDataChannel on an unknown label succeeded")
			}

			s.closeDataChannels()
			if _, err := c.WaitLabelMessages(ctx, "#chat", 3); !errors.Is(err, ErrClosed) {
				t.Errorf("WaitLabelMessages after close: %v", err)
			}
		})
	}
}

func TestRPC(t *testing.T) {
	type call struct {
		method string
		params json.RawMessage
	}
	var mu sync.Mutex
	var calls []call
	fs := newFakeServer(t, fakeConfig{
		dataChannels: soraDataChannels(true),
		rpc: func(method string, params json.RawMessage) (any, map[string]any) {
			mu.Lock()
			calls = append(calls, call{method, params})
			mu.Unlock()
			switch method {
			case "2025.2.0/RequestSimulcastRid":
				return map[string]any{"ok": true}, nil
			case "2025.2.0/NullResult":
				return json.RawMessage("null"), nil
			case "silent":
				return nil, nil
			case "with-data":
				return nil, map[string]any{"code": -32602, "message": "Invalid params", "data": map[string]any{"rid": "r9"}}
			default:
				return nil, map[string]any{"code": -32601, "message": "Method not found"}
			}
		},
	})
	ctx := testContext(t)
	c := mustConnect(t, ctx, Options{
		SignalingURL: fs.URL, ChannelID: "ch-rpc", Role: "recvonly", Video: true, DataChannelSignaling: true,
	})
	waitClosed(t, ctx, "switched", c.Switched())
	if methods, _ := c.Offer()["rpc_methods"].([]any); len(methods) != 1 {
		t.Errorf("offer rpc_methods %v", c.Offer()["rpc_methods"])
	}

	for _, tc := range []struct {
		method     string
		params     any
		wantResult string
		wantErr    *RPCError
	}{
		{method: "2025.2.0/RequestSimulcastRid", params: map[string]any{"rid": "r1"}, wantResult: `{"ok":true}`},
		{method: "2025.2.0/NullResult", wantResult: `null`},
		{method: "no-such-method", wantErr: &RPCError{Code: -32601, Message: "Method not found"}},
		{method: "with-data", params: []int{1}, wantErr: &RPCError{Code: -32602, Message: "Invalid params", Data: json.RawMessage(`{"rid":"r9"}`)}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			result, err := c.RPC(ctx, tc.method, tc.params)
			if tc.wantErr != nil {
				var re *RPCError
				if !errors.As(err, &re) {
					t.Fatalf("err = %v, want *RPCError", err)
				}
				if re.Code != tc.wantErr.Code || re.Message != tc.wantErr.Message || string(re.Data) != string(tc.wantErr.Data) {
					t.Errorf("RPCError = %+v, want %+v", re, tc.wantErr)
				}
				if result != nil {
					t.Errorf("result %s with an error", result)
				}
				return
			}
			if err != nil || string(result) != tc.wantResult {
				t.Errorf("RPC = %s, %v; want %s", result, err, tc.wantResult)
			}
		})
	}

	// requests as the server saw them
	s := fs.session(t, ctx, 0)
	var ids []float64
	for _, m := range s.labelPayloads(LabelRPC) {
		if m.object["jsonrpc"] != "2.0" || m.text {
			t.Errorf("request %v (text %v)", m.object, m.text)
		}
		id, ok := m.object["id"].(float64)
		if !ok {
			t.Errorf("request id %v", m.object["id"])
		}
		ids = append(ids, id)
		withParams := m.object["method"] == "2025.2.0/RequestSimulcastRid" || m.object["method"] == "with-data"
		if _, has := m.object["params"]; has != withParams {
			t.Errorf("params presence in %v", m.object)
		}
	}
	if !slices.Equal(ids, []float64{1, 2, 3, 4}) {
		t.Errorf("request ids %v", ids)
	}
	mu.Lock()
	if len(calls) != 4 || string(calls[0].params) != `{"rid":"r1"}` {
		t.Errorf("calls %v", calls)
	}
	mu.Unlock()

	// no answer: ctx decides
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.RPC(short, "silent", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered RPC: %v", err)
	}
	c.rpcMu.Lock()
	if len(c.rpcPending) != 0 {
		t.Errorf("pending calls left: %v", c.rpcPending)
	}
	c.rpcMu.Unlock()
	// an RPC response is recorded too, with no type
	if _, err := c.WaitMessage(ctx, func(m Message) bool { return m.Label == LabelRPC && m.Type == "" }); err != nil {
		t.Error(err)
	}
}

func TestRPCWithoutDataChannels(t *testing.T) {
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{})
	c := mustConnect(t, ctx, Options{SignalingURL: fs.URL, ChannelID: "ch-no-dc", Role: "sendonly", Audio: true})
	if _, err := c.RPC(ctx, "m", nil); err == nil {
		t.Error("RPC without DC rpc succeeded")
	}
	if err := c.SendMessage("#x", nil); err == nil {
		t.Error("SendMessage without DataChannels succeeded")
	}
	if isClosed(c.Switched()) || isClosed(c.DataChannelsClosed()) {
		t.Error("switched or DataChannelsClosed without DataChannels")
	}
	// signaling stays on the WebSocket
	if m := fs.session(t, ctx, 0).waitMsg(t, ctx, "candidate"); m == nil {
		t.Error("no candidate on the WebSocket")
	}
	if _, ok := fs.session(t, ctx, 0).connect["ignore_disconnect_websocket"]; ok {
		t.Error("ignore_disconnect_websocket sent without DataChannelSignaling")
	}
}

func TestInflate(t *testing.T) {
	msg := []byte(`{"type":"re-offer","sdp":"v=0"}`)
	if got, err := inflate(deflate(msg), maxInflated); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("round trip = %q, %v", got, err)
	}
	bomb := deflate(make([]byte, maxInflated+1))
	if _, err := inflate(bomb, maxInflated); err == nil {
		t.Error("inflated past the limit")
	}
	if got, err := inflate(deflate(make([]byte, maxInflated)), maxInflated); err != nil || len(got) != maxInflated {
		t.Errorf("exactly the limit: %d, %v", len(got), err)
	}
	for _, bad := range [][]byte{nil, []byte("not zlib"), deflate(msg)[:10]} {
		if _, err := inflate(bad, maxInflated); err == nil {
			t.Errorf("inflate(%q) succeeded", bad)
		}
	}
}

func FuzzInflate(f *testing.F) {
	f.Add(deflate([]byte(`{"type":"req-stats"}`)))
	f.Add([]byte{0x78, 0x9c})
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		out, err := inflate(data, limit)
		if err == nil && len(out) > limit {
			t.Fatalf("inflated %d bytes past the limit", len(out))
		}
		if back, err := inflate(deflate(data), int64(len(data))); err != nil || !bytes.Equal(back, data) {
			t.Fatalf("round trip of %q: %q, %v", data, back, err)
		}
	})
}

func TestDataChannelsCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := testContext(t)
	fs := newFakeServer(t, fakeConfig{
		publishers:   []string{publisherID},
		dataChannels: append(soraDataChannels(true), fakeDC{"#m", "sendrecv", true}),
		rpc:          func(string, json.RawMessage) (any, map[string]any) { return nil, nil }, // never answers
	})
	const n = 6
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Connect(ctx, Options{
				SignalingURL: fs.URL, ChannelID: "ch-dc-leak", Role: "sendrecv", Audio: true, Video: true,
				DataChannelSignaling: true, IgnoreDisconnectWebSocket: true, CloseWebSocketOnSwitch: i%2 == 0,
			})
			if err != nil {
				errs <- err
				return
			}
			select {
			case <-c.Switched():
			case <-ctx.Done():
				errs <- ctx.Err()
			}
			rpcDone := make(chan error, 1)
			go func() {
				_, err := c.RPC(context.Background(), "hangs", nil)
				rpcDone <- err
			}()
			if err := c.SendMessage("#m", []byte("x")); err != nil {
				errs <- err
			}
			if _, err := c.WaitLabelMessages(ctx, "#m", 1); err != nil {
				errs <- err
			}
			if err := c.Close(); err != nil {
				errs <- err
			}
			if err := <-rpcDone; !errors.Is(err, ErrClosed) {
				errs <- fmt.Errorf("pending RPC after Close: %v", err)
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
