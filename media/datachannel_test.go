package media

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/integration/soraclient"
)

// DataChannel signaling and messaging against real pion clients over the
// wire protocol (soraclient speaks it as the Sora SDKs do).

func dcContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func onLabel(label, typ string) func(soraclient.Message) bool {
	return func(m soraclient.Message) bool { return m.Label == label && m.Type == typ }
}

func waitSwitched(t *testing.T, ctx context.Context, c *soraclient.Client) {
	t.Helper()
	select {
	case <-c.Switched():
	case <-ctx.Done():
		t.Fatalf("%s: no switched", c.ConnectionID())
	}
}

// eventuallyTrue polls cond for up to 10 s.
func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A client that switched and closed its WebSocket (as the C++ SDK does, at
// once) keeps its connection: it renegotiates over DC signaling when a
// sender joins, receives its media, gets notify and push on their
// DataChannels, answers req-stats on DC stats, and is told of a Disconnect
// API call by a close message on DC signaling.
func TestDataChannelSignalingOutlivesTheWebSocket(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, PingInterval: 100 * time.Millisecond, UserAgentStatsInterval: 100 * time.Millisecond})
	ctx := dcContext(t)
	sub, err := connect(t, url, soraclient.Options{ChannelID: "dc", Role: "recvonly", Audio: true, Video: true,
		DataChannelSignaling: true, IgnoreDisconnectWebSocket: true, CloseWebSocketOnSwitch: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSwitched(t, ctx, sub)
	offer := sub.Offer()
	if offer["data_channel_signaling"] != true || offer["ignore_disconnect_websocket"] != true {
		t.Fatalf("offer: %v", offer)
	}
	var labels []string
	for _, e := range offer["data_channels"].([]any) {
		labels = append(labels, e.(map[string]any)["label"].(string))
	}
	if strings.Join(labels, ",") != "signaling,notify,push,stats,rpc" {
		t.Fatalf("offered DataChannels %v", labels)
	}
	if got := offer["rpc_methods"]; len(got.([]any)) != len(rpcMethodList) {
		t.Fatalf("rpc_methods %v", got)
	}
	select {
	case <-sub.Closed():
	case <-ctx.Done():
		t.Fatal("the client did not close its WebSocket on switched")
	}
	time.Sleep(300 * time.Millisecond) // the server notices the close
	if m.Connections() != 1 {
		t.Fatalf("%d connections after the WebSocket closed, want 1", m.Connections())
	}

	pub, err := connect(t, url, soraclient.Options{ChannelID: "dc", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.WaitMessage(ctx, onLabel("signaling", "re-offer")); err != nil {
		t.Fatalf("re-offer over DC signaling: %v", err)
	}
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}
	created, err := sub.WaitMessage(ctx, func(msg soraclient.Message) bool {
		return msg.Label == "notify" && strings.Contains(string(msg.Raw), pub.ConnectionID())
	})
	if err != nil || !strings.Contains(string(created.Raw), `"connection.created"`) {
		t.Fatalf("connection.created over DC notify: %s %v", created.Raw, err)
	}
	if err := m.Push(Selector{ChannelID: "dc", ConnectionID: sub.ConnectionID()}, json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if p, err := sub.WaitMessage(ctx, onLabel("push", "push")); err != nil || !jsonEquals(p.Raw, `{"type":"push","data":{"n":1}}`) {
		t.Fatalf("push over DC push: %s %v", p.Raw, err)
	}
	eventuallyTrue(t, "statistics from req-stats on DC stats", func() bool {
		s, err := m.GetUserAgentStats("dc", sub.ConnectionID())
		return err == nil && strings.Contains(string(s.Stats), "inbound-rtp")
	})
	afterSwitch := false
	for _, msg := range sub.Messages() {
		// Pings stay on the WebSocket until it closes; everything else
		// goes over the DataChannels once switched.
		if msg.Label == "" && afterSwitch && msg.Type != "ping" {
			t.Errorf("after switched (and the client closing its WebSocket) a %q came over the WebSocket", msg.Type)
		}
		afterSwitch = afterSwitch || msg.Type == "switched"
	}

	if err := m.Disconnect(Selector{ChannelID: "dc", ConnectionID: sub.ConnectionID()}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := sub.WaitMessage(ctx, onLabel("signaling", "close"))
	if err != nil || !jsonEquals(c.Raw, `{"type":"close","code":1000,"reason":"DISCONNECTED-API"}`) {
		t.Fatalf("close over DC signaling: %s %v", c.Raw, err)
	}
	select {
	case <-sub.DataChannelsClosed():
	case <-ctx.Done():
		t.Fatal("the server did not close the DataChannels after close")
	}
	eventuallyTrue(t, "the connection is gone", func() bool { return m.Connections() == 1 })
}

func jsonEquals(got []byte, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && jsonString(a) == jsonString(b)
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The WebSocket's close ends a switched connection unless it connected with
// ignore_disconnect_websocket; DC signaling's close ends it always; a
// disconnect on DC signaling closes the DataChannels without a close
// message.
func TestDataChannelSignalingEnds(t *testing.T) {
	tests := []struct {
		name     string
		ignore   bool
		end      func(*soraclient.Client) error
		survive  bool
		closeMsg string // the close message on DC signaling; "" none
	}{
		{"WebSocket closed, ignore_disconnect_websocket false", false, func(c *soraclient.Client) error { return c.CloseWebSocket(1000, "") }, false, "WEBSOCKET-CLOSED"},
		{"WebSocket closed, ignore_disconnect_websocket true", true, func(c *soraclient.Client) error { return c.CloseWebSocket(1000, "") }, true, ""},
		{"DC signaling closed", true, func(c *soraclient.Client) error { return c.DataChannel("signaling").Close() }, false, ""},
		{"disconnect on DC signaling", false, func(c *soraclient.Client) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Disconnect(ctx)
			return err
		}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, url := startMedia(t, newFakeCluster())
			ctx := dcContext(t)
			c, err := connect(t, url, soraclient.Options{ChannelID: "dc", Role: "sendrecv", Audio: true,
				DataChannelSignaling: true, IgnoreDisconnectWebSocket: tt.ignore})
			if err != nil {
				t.Fatal(err)
			}
			waitSwitched(t, ctx, c)
			if err := tt.end(c); err != nil {
				t.Fatal(err)
			}
			if tt.survive {
				time.Sleep(500 * time.Millisecond)
				if m.Connections() != 1 {
					t.Fatalf("the connection ended")
				}
				return
			}
			eventuallyTrue(t, "the connection ended", func() bool { return m.Connections() == 0 })
			if tt.closeMsg != "" {
				if msg, err := c.WaitMessage(ctx, onLabel("signaling", "close")); err != nil || !strings.Contains(string(msg.Raw), tt.closeMsg) {
					t.Errorf("close message %s %v, want one with %s", msg.Raw, err, tt.closeMsg)
				}
				return
			}
			time.Sleep(200 * time.Millisecond)
			for _, msg := range c.Messages() {
				if msg.Type == "close" {
					t.Errorf("a close message after the client ended the connection itself: %s", msg.Raw)
				}
			}
		})
	}
}

// Compressed signaling labels: the offer says so, and a re-offer and its
// re-answer cross them as zlib; a bad message on DC signaling ends the
// connection with 4490 in a close message.
func TestCompressedSignalingLabels(t *testing.T) {
	_, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	yes := true
	sub, err := connect(t, url, soraclient.Options{ChannelID: "z", Role: "recvonly", Audio: true, Video: true, DataChannelSignaling: true,
		DataChannels: []soraclient.DataChannelOption{{Label: "signaling", Compress: &yes}, {Label: "notify", Compress: &yes}}})
	if err != nil {
		t.Fatal(err)
	}
	waitSwitched(t, ctx, sub)
	compressed := map[string]bool{}
	for _, e := range sub.Offer()["data_channels"].([]any) {
		d := e.(map[string]any)
		compressed[d["label"].(string)] = d["compress"].(bool)
	}
	if !compressed["signaling"] || !compressed["notify"] || compressed["push"] {
		t.Fatalf("offered compression %v", compressed)
	}
	pub, err := connect(t, url, soraclient.Options{ChannelID: "z", Role: "sendonly", Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatalf("media after a compressed re-offer: %v", err)
	}
	if err := sub.SendOnDataChannel("signaling", []byte("not zlib"), false); err != nil {
		t.Fatal(err)
	}
	c, err := sub.WaitMessage(ctx, onLabel("signaling", "close"))
	if err != nil || !jsonEquals(c.Raw, `{"type":"close","code":4490,"reason":"INVALID-COMPRESSED-MESSAGE"}`) {
		t.Fatalf("close: %s %v", c.Raw, err)
	}
}

// messagingClient connects a client with DataChannel signaling and the
// given # labels, no media, and waits until it switched.
func messagingClient(t *testing.T, ctx context.Context, url, bundle string, labels ...soraclient.DataChannelOption) *soraclient.Client {
	t.Helper()
	c, err := connect(t, url, soraclient.Options{ChannelID: "msg", Role: "sendrecv", BundleID: bundle, DataChannelSignaling: true, DataChannels: labels})
	if err != nil {
		t.Fatal(err)
	}
	waitSwitched(t, ctx, c)
	return c
}

// Messages on # labels reach the members with the label and a receiving
// direction, in order, never the sender's bundle; the header receiver gets
// the sender's connection ID first; a compressed receiver gets them
// compressed (soraclient inflates); a recvonly label sends nothing.
func TestMessagingRouting(t *testing.T) {
	m, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	yes := true
	a := messagingClient(t, ctx, url, "bundle-a", soraclient.DataChannelOption{Label: "#chat", Direction: "sendrecv"})
	b := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#chat", Direction: "recvonly", SenderConnectionIDHeader: true, Compress: &yes})
	c := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#chat", Direction: "sendonly"})
	d := messagingClient(t, ctx, url, "bundle-a", soraclient.DataChannelOption{Label: "#chat", Direction: "sendrecv"})
	no, zero := false, 0
	e := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#other", Direction: "sendrecv", Ordered: &no, MaxRetransmits: &zero, Protocol: "p1"})
	if dc := e.DataChannel("#other"); dc == nil || dc.Ordered() || dc.MaxRetransmits() == nil || *dc.MaxRetransmits() != 0 || dc.Protocol() != "p1" {
		t.Errorf("#other was not opened with the entry's ordered, max_retransmits and protocol: %+v", dc)
	}

	for _, s := range []string{"m1", "m2", strings.Repeat("x", 5000)} {
		if err := a.SendMessage("#chat", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SendMessage("#chat", []byte("from c")); err != nil {
		t.Fatal(err)
	}
	if err := b.SendMessage("#chat", []byte("b may not send")); err != nil {
		t.Fatal(err)
	}
	got, err := b.WaitLabelMessages(ctx, "#chat", 4)
	if err != nil {
		t.Fatal(err)
	}
	// In order per sender (senders' messages may interleave).
	bySender := map[string][]string{}
	for _, msg := range got {
		id, payload, _ := soraclient.SplitSenderConnectionID(msg)
		bySender[id] = append(bySender[id], string(payload))
	}
	if want := []string{"m1", "m2", strings.Repeat("x", 5000)}; strings.Join(bySender[a.ConnectionID()], "|") != strings.Join(want, "|") {
		t.Errorf("b got from a %.60q, want %.60q", bySender[a.ConnectionID()], want)
	}
	if got := bySender[c.ConnectionID()]; len(got) != 1 || got[0] != "from c" {
		t.Errorf("b got from c %q", got)
	}
	for _, r := range []*soraclient.Client{a, d} {
		if msgs, err := r.WaitLabelMessages(ctx, "#chat", 1); err != nil || string(msgs[0]) != "from c" {
			t.Fatalf("%v got %q, %v", r.ConnectionID(), msgs, err)
		}
	}
	eventuallyTrue(t, "the recvonly label's message counted as dropped", func() bool { return m.Counters().MessagesDropped >= 1 })
	time.Sleep(300 * time.Millisecond) // anything misrouted would be here by now
	for name, n := range map[string]struct {
		c    *soraclient.Client
		want int
	}{"a": {a, 1}, "b": {b, 4}, "c": {c, 0}, "d (a's bundle)": {d, 1}} {
		if got := len(n.c.LabelMessages("#chat")); got != n.want {
			t.Errorf("%s has %d #chat messages, want %d", name, got, n.want)
		}
	}
	if got := len(e.LabelMessages("#other")) + len(e.LabelMessages("#chat")); got != 0 {
		t.Errorf("e, without #chat, got %d messages", got)
	}
	k := m.Counters()
	if k.MessagesReceived != 5 || k.MessagesDelivered != 6 || k.MessagesDropped != 1 {
		t.Errorf("counters received %d delivered %d dropped %d, want 5, 6, 1", k.MessagesReceived, k.MessagesDelivered, k.MessagesDropped)
	}
}

// Messages over the size limit, beyond the sender's rate, or inflating past
// the limit are dropped and counted.
func TestMessagingLimits(t *testing.T) {
	m, url := startMediaWith(t, newFakeCluster(), Config{ReleaseDelay: time.Hour, MessagingMaxMessageSize: 1024, MessagingRate: 0.01, MessagingBurst: 5})
	ctx := dcContext(t)
	yes := true
	a := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#z", Direction: "sendonly", Compress: &yes}, soraclient.DataChannelOption{Label: "#l", Direction: "sendonly"})
	b := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#z", Direction: "recvonly"}, soraclient.DataChannelOption{Label: "#l", Direction: "recvonly"})

	if err := a.SendMessage("#l", make([]byte, 1025)); err != nil { // too large
		t.Fatal(err)
	}
	if err := a.SendMessage("#z", bytes.Repeat([]byte("a"), 4096)); err != nil { // small compressed, too large inflated
		t.Fatal(err)
	}
	var bomb bytes.Buffer
	zw := zlib.NewWriter(&bomb)
	_, _ = zw.Write(make([]byte, 256<<10)) // a few hundred bytes compressed
	_ = zw.Close()
	if err := a.SendOnDataChannel("#z", bomb.Bytes(), false); err != nil {
		t.Fatal(err)
	}
	// Those three came on two DataChannels: let them all arrive first.
	eventuallyTrue(t, "the oversized messages received", func() bool { return m.Counters().MessagesReceived == 3 })
	for i := range 10 { // burst 5: the rest are over the rate
		if err := a.SendMessage("#l", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.WaitLabelMessages(ctx, "#l", 3); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "every message received", func() bool { return m.Counters().MessagesReceived == 13 })
	time.Sleep(200 * time.Millisecond)
	got := b.LabelMessages("#l")
	k := m.Counters()
	if len(got) != 3 || len(b.LabelMessages("#z")) != 0 || k.MessagesDropped != 10 || k.MessagesDelivered != 3 {
		t.Errorf("b got %d on #l and %d on #z; dropped %d, delivered %d; want 3 (the oversized ones spent two of the burst), 0, 10, 3",
			len(got), len(b.LabelMessages("#z")), k.MessagesDropped, k.MessagesDelivered)
	}
	for i, msg := range got {
		if len(msg) != 1 || msg[0] != byte(i) {
			t.Errorf("message %d is %v, want [%d] (in order)", i, msg, i)
		}
	}
}

// The RPC methods act on the caller only and answer as JSON-RPC 2.0.
func TestRPCMethods(t *testing.T) {
	m, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	a := messagingClient(t, ctx, url, "")
	b := messagingClient(t, ctx, url, "")
	call := func(method string, params any) (json.RawMessage, *soraclient.RPCError) {
		t.Helper()
		res, err := a.RPC(ctx, "2025.2.0/"+method, params)
		var re *soraclient.RPCError
		if errors.As(err, &re) {
			return nil, re
		}
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return res, nil
	}
	tests := []struct {
		method string
		params any
		code   int    // 0: a result
		result string // the result, or a substring of the error's data
	}{
		{"PutSignalingNotifyMetadata", map[string]any{"metadata": map[string]any{"hand": "up"}, "push": true}, 0, `{"hand":"up"}`},
		{"PutSignalingNotifyMetadataItem", map[string]any{"key": "mic", "value": false}, 0, `{"hand":"up","mic":false}`},
		{"PutSignalingNotifyMetadataItem", map[string]any{"key": "mic"}, -32602, ""},
		{"RequestSimulcastRid", map[string]any{"rid": "r1", "sender_connection_id": b.ConnectionID()}, 0, `{"rid":"r1","sender_connection_id":"` + b.ConnectionID() + `","receiver_connection_id":"` + a.ConnectionID() + `"}`},
		{"RequestSimulcastRid", map[string]any{"rid": "r9"}, -32602, ""},
		{"RequestSimulcastRid", map[string]any{"rid": "r0", "receiver_connection_id": b.ConnectionID()}, -32602, ""},
		{"RequestSimulcastRid", map[string]any{"rid": "r0", "sender_connection_id": "NOSUCHCONNECTION"}, -32602, "CONNECTION-NOT-FOUND"},
		{"RequestSpotlightRid", map[string]any{"spotlight_focus_rid": "r1", "spotlight_unfocus_rid": "r0"}, -32602, "NOT-SPOTLIGHT-CHANNEL"},
		{"ResetSpotlightRid", nil, -32602, "NOT-SPOTLIGHT-CHANNEL"},
		{"NoSuchMethod", nil, -32601, ""},
	}
	for _, tt := range tests {
		res, rerr := call(tt.method, tt.params)
		switch {
		case tt.code == 0 && (rerr != nil || !jsonEquals(res, tt.result)):
			t.Errorf("%s %v: %s %v, want %s", tt.method, tt.params, res, rerr, tt.result)
		case tt.code != 0 && (rerr == nil || rerr.Code != tt.code || !strings.Contains(string(rerr.Data), tt.result)):
			t.Errorf("%s %v: %s %v, want error %d with %q", tt.method, tt.params, res, rerr, tt.code, tt.result)
		}
	}
	if got, err := m.GetSignalingNotifyMetadata("msg", a.ConnectionID()); err != nil || !jsonEquals(got, `{"hand":"up","mic":false}`) {
		t.Errorf("a's metadata is %s, %v", got, err)
	}
	if p, err := b.WaitMessage(ctx, onLabel("push", "push")); err != nil || !strings.Contains(string(p.Raw), "signaling_notify_metadata_ext") {
		t.Errorf("b's push of a's metadata: %s %v", p.Raw, err)
	}
	if _, err := a.RPC(ctx, "RequestSimulcastRid", map[string]any{"rid": "r0"}); err == nil || err.(*soraclient.RPCError).Code != -32601 {
		t.Errorf("a method without its version: %v", err)
	}
	if err := a.SendOnDataChannel("rpc", []byte(`{"jsonrpc":`), true); err != nil {
		t.Fatal(err)
	}
	if msg, err := a.WaitMessage(ctx, func(msg soraclient.Message) bool {
		return msg.Label == "rpc" && strings.Contains(string(msg.Raw), "-32700")
	}); err != nil || !strings.Contains(string(msg.Raw), `"id":null`) {
		t.Errorf("a parse error: %s %v", msg.Raw, err)
	}
}

// A bad data_channels entry closes the socket with 4490 and a reason that
// names it; so does a # label without DataChannel signaling.
func TestBadDataChannels(t *testing.T) {
	_, url := startMedia(t, newFakeCluster())
	tests := []struct {
		name   string
		extra  map[string]any
		reason string
	}{
		{"bad direction", map[string]any{"data_channel_signaling": true, "data_channels": []any{map[string]any{"label": "#a", "direction": "up"}}}, "data_channels[0].direction"},
		{"label neither # nor signaling", map[string]any{"data_channel_signaling": true, "data_channels": []any{map[string]any{"label": "chat", "direction": "sendrecv"}}}, `data_channels[0].label "chat"`},
		{"# label without DataChannel signaling", map[string]any{"data_channels": []any{map[string]any{"label": "#a", "direction": "sendrecv"}}}, "data_channel_signaling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connect(t, url, soraclient.Options{ChannelID: "bad", Role: "sendrecv", Audio: true, Extra: tt.extra})
			var ce *soraclient.CloseError
			if !errors.As(err, &ce) || ce.Code != 4490 || !strings.HasPrefix(ce.Reason, "INVALID-DATA-CHANNELS") || !strings.Contains(ce.Reason, tt.reason) {
				t.Fatalf("err %v, want 4490 INVALID-DATA-CHANNELS naming %s", err, tt.reason)
			}
		})
	}
}

// Every method the offer advertises has a handler.
func TestRPCMethodsAdvertisedAreServed(t *testing.T) {
	for _, name := range rpcMethodNames() {
		short, ok := cutVersion(name)
		if !ok || lookupRPC(short) == nil {
			t.Errorf("%s is advertised but not served", name)
		}
	}
}

// sendSignalingJSON sends v on the client's DC signaling as a text message,
// as an SDK does on an uncompressed label.
func sendSignalingJSON(t *testing.T, c *soraclient.Client, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendOnDataChannel("signaling", b, true); err != nil {
		t.Fatal(err)
	}
}

// remoteCandidates lists the address:port of every remote candidate the
// server's ICE agent holds for a connection.
func remoteCandidates(t *testing.T, m *Media, channelID, connectionID string) []string {
	t.Helper()
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		t.Fatalf("the server's connection %s: %v", connectionID, err)
	}
	var out []string
	for _, s := range c.pc.GetStats() {
		if cs, ok := s.(webrtc.ICECandidateStats); ok && cs.Type == webrtc.StatsTypeRemoteCandidate {
			out = append(out, net.JoinHostPort(cs.IP, strconv.Itoa(int(cs.Port))))
		}
	}
	return out
}

// Candidates trickled on DC signaling after the switch, in sora-js-sdk's
// shape (sdpMid, sdpMLineIndex, usernameFragment, the ufrag in the line) and
// in the native SDKs' (candidate only), reach the server's ICE agent; an
// end of candidates and a line the agent cannot parse are ignored, as on
// the WebSocket. The connection stays up: media keeps flowing, and a
// re-offer for a new sender goes over DC signaling and is answered.
func TestCandidatesOverDataChannelSignaling(t *testing.T) {
	m, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	pub, err := connect(t, url, soraclient.Options{ChannelID: "cand", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := connect(t, url, soraclient.Options{ChannelID: "cand", Role: "recvonly", Audio: true, Video: true, DataChannelSignaling: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSwitched(t, ctx, sub)
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}
	ufrag := ""
	for _, line := range strings.Split(sub.LocalDescription().SDP, "\r\n") {
		if v, ok := strings.CutPrefix(line, "a=ice-ufrag:"); ok {
			ufrag = v
			break
		}
	}
	if ufrag == "" {
		t.Fatal("no ice-ufrag in the client's answer")
	}
	for _, msg := range []map[string]any{
		{"type": "candidate", "candidate": "candidate:3317436236 1 udp 2113937151 127.0.170.1 40001 typ host generation 0 ufrag " + ufrag + " network-cost 999",
			"sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": ufrag},
		{"type": "candidate", "candidate": "candidate:1 1 udp 1677729535 127.0.170.2 40002 typ srflx raddr 0.0.0.0 rport 0"},
		{"type": "candidate", "candidate": ""},
		{"type": "candidate", "candidate": "candidate:not a candidate line"},
	} {
		sendSignalingJSON(t, sub, msg)
	}
	eventuallyTrue(t, "both candidates at the server's ICE agent", func() bool {
		got := remoteCandidates(t, m, "cand", sub.ConnectionID())
		return slices.Contains(got, "127.0.170.1:40001") && slices.Contains(got, "127.0.170.2:40002")
	})
	before := sub.Received()[pub.ConnectionID()+"/video"].Packets
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", before+50); err != nil {
		t.Fatalf("media after the candidates: %v", err)
	}
	if n := m.Connections(); n != 2 {
		t.Fatalf("%d connections after the candidates, want 2", n)
	}
	pub2, err := connect(t, url, soraclient.Options{ChannelID: "cand", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.WaitMessage(ctx, onLabel("signaling", "re-offer")); err != nil {
		t.Fatalf("re-offer over DC signaling after the candidates: %v", err)
	}
	if err := sub.WaitPackets(ctx, pub2.ConnectionID(), "video", 20); err != nil {
		t.Fatalf("media from a sender that joined after the candidates: %v", err)
	}
	for _, msg := range sub.Messages() {
		if msg.Type == "close" {
			t.Errorf("a close message: %s", msg.Raw)
		}
	}
}

// A malformed candidate message ends the connection with the same code and
// reason on DC signaling (in a close message) as on the WebSocket (in its
// close frame): 4490 INVALID-MESSAGE naming the problem.
func TestMalformedCandidateOverDataChannelSignaling(t *testing.T) {
	for _, tt := range []struct{ name, bad string }{
		{"negative sdpMLineIndex", `{"type":"candidate","sdpMLineIndex":-1}`},
		{"candidate not a string", `{"type":"candidate","candidate":["candidate:1 1 udp 1 127.0.0.1 1 typ host"]}`},
	} {
		bad := tt.bad
		t.Run(tt.name, func(t *testing.T) {
			m, url := startMedia(t, newFakeCluster())
			ctx := dcContext(t)
			ws, err := connect(t, url, soraclient.Options{ChannelID: "bad", Role: "sendrecv", Audio: true})
			if err != nil {
				t.Fatal(err)
			}
			dc, err := connect(t, url, soraclient.Options{ChannelID: "bad", Role: "sendrecv", Audio: true, DataChannelSignaling: true})
			if err != nil {
				t.Fatal(err)
			}
			waitSwitched(t, ctx, dc)
			if err := ws.SendRaw(websocket.TextMessage, []byte(bad)); err != nil {
				t.Fatal(err)
			}
			if err := dc.SendOnDataChannel("signaling", []byte(bad), true); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ws.Closed():
			case <-ctx.Done():
				t.Fatal("the WebSocket connection stayed open")
			}
			wsClose := ws.CloseInfo()
			if wsClose == nil || wsClose.Code != 4490 || !strings.HasPrefix(wsClose.Reason, "INVALID-MESSAGE") {
				t.Fatalf("WebSocket closed with %+v, want 4490 INVALID-MESSAGE", wsClose)
			}
			msg, err := dc.WaitMessage(ctx, onLabel("signaling", "close"))
			if err != nil {
				t.Fatalf("no close message on DC signaling: %v", err)
			}
			var dcClose struct {
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(msg.Raw, &dcClose); err != nil || dcClose.Code != wsClose.Code || dcClose.Reason != wsClose.Reason {
				t.Fatalf("close on DC signaling %s, want code %d and reason %q as on the WebSocket", msg.Raw, wsClose.Code, wsClose.Reason)
			}
			eventuallyTrue(t, "both connections ended", func() bool { return m.Connections() == 0 })
		})
	}
}

// A # label's ordered, max_packet_life_time, max_retransmits and protocol
// are the parameters the server opens its DataChannel with, as the client
// sees them; messages cross each such label.
func TestMessagingLabelParameters(t *testing.T) {
	_, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	yes, no := true, false
	ms := func(n int) *int { return &n }
	type want struct {
		ordered           bool
		maxPacketLifeTime *uint16
		maxRetransmits    *uint16
		protocol          string
	}
	u16 := func(n uint16) *uint16 { return &n }
	tests := []struct {
		opt  soraclient.DataChannelOption
		want want
	}{
		{soraclient.DataChannelOption{Label: "#timed", MaxPacketLifeTime: ms(1500), Protocol: "p-timed"}, want{true, u16(1500), nil, "p-timed"}},
		{soraclient.DataChannelOption{Label: "#timed-unordered", MaxPacketLifeTime: ms(250), Ordered: &no}, want{false, u16(250), nil, ""}},
		{soraclient.DataChannelOption{Label: "#rexmit", MaxRetransmits: ms(4), Ordered: &yes, Protocol: "p-rexmit"}, want{true, nil, u16(4), "p-rexmit"}},
		{soraclient.DataChannelOption{Label: "#rexmit-unordered", MaxRetransmits: ms(0), Ordered: &no}, want{false, nil, u16(0), ""}},
		{soraclient.DataChannelOption{Label: "#reliable"}, want{true, nil, nil, ""}},
	}
	var opts []soraclient.DataChannelOption
	for _, tt := range tests {
		tt.opt.Direction = "sendrecv"
		opts = append(opts, tt.opt)
	}
	a := messagingClient(t, ctx, url, "", opts...)
	b := messagingClient(t, ctx, url, "", opts...)
	eq := func(a, b *uint16) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
	str := func(p *uint16) string {
		if p == nil {
			return "nil"
		}
		return strconv.Itoa(int(*p))
	}
	for _, tt := range tests {
		for name, c := range map[string]*soraclient.Client{"a": a, "b": b} {
			dc := c.DataChannel(tt.opt.Label)
			if dc == nil {
				t.Errorf("%s: no DataChannel %s", name, tt.opt.Label)
				continue
			}
			if dc.Ordered() != tt.want.ordered || !eq(dc.MaxPacketLifeTime(), tt.want.maxPacketLifeTime) || !eq(dc.MaxRetransmits(), tt.want.maxRetransmits) || dc.Protocol() != tt.want.protocol {
				t.Errorf("%s: %s opened ordered %v, max_packet_life_time %s, max_retransmits %s, protocol %q; want %v, %s, %s, %q", name, tt.opt.Label,
					dc.Ordered(), str(dc.MaxPacketLifeTime()), str(dc.MaxRetransmits()), dc.Protocol(),
					tt.want.ordered, str(tt.want.maxPacketLifeTime), str(tt.want.maxRetransmits), tt.want.protocol)
			}
		}
		if err := a.SendMessage(tt.opt.Label, []byte("on "+tt.opt.Label)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		if got, err := b.WaitLabelMessages(ctx, tt.opt.Label, 1); err != nil || string(got[0]) != "on "+tt.opt.Label {
			t.Errorf("b on %s: %q %v", tt.opt.Label, got, err)
		}
	}
}

// rawLabel records what arrives on a client's DataChannel as it came off
// the wire (soraclient would inflate a compressed label's messages).
type rawLabel struct {
	mu     sync.Mutex
	msgs   []webrtc.DataChannelMessage
	notify chan struct{}
}

func recordRaw(t *testing.T, c *soraclient.Client, label string) *rawLabel {
	t.Helper()
	dc := c.DataChannel(label)
	if dc == nil {
		t.Fatalf("%s has no DataChannel %s", c.ConnectionID(), label)
	}
	r := &rawLabel{notify: make(chan struct{}, 1)}
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		r.mu.Lock()
		r.msgs = append(r.msgs, webrtc.DataChannelMessage{IsString: msg.IsString, Data: slices.Clone(msg.Data)})
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
	return r
}

// wait returns the first n messages once they are there.
func (r *rawLabel) wait(t *testing.T, ctx context.Context, n int) []webrtc.DataChannelMessage {
	t.Helper()
	for {
		r.mu.Lock()
		got := slices.Clone(r.msgs)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			t.Fatalf("%d messages, want %d", len(got), n)
		}
	}
}

// A compressed sender's messages reach a plain receiver inflated, and a
// plain sender's reach a compressed receiver as zlib (binary, even when
// sent as text): the bytes are those the sender meant, in order.
func TestMessagingCompressionMixed(t *testing.T) {
	_, url := startMedia(t, newFakeCluster())
	ctx := dcContext(t)
	yes, no := true, false
	z := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#mix", Direction: "sendrecv", Compress: &yes})
	p := messagingClient(t, ctx, url, "", soraclient.DataChannelOption{Label: "#mix", Direction: "sendrecv", Compress: &no})
	zRaw, pRaw := recordRaw(t, z, "#mix"), recordRaw(t, p, "#mix")
	payload := func(from string, i int) []byte {
		switch i % 4 {
		case 0: // binary, starting as zlib would
			return append([]byte{0x78, 0x9c, 0, 0xff, byte(i)}, from...)
		case 3: // large and compressible
			return []byte(strings.Repeat(fmt.Sprintf("%s-%02d;", from, i), 800))
		}
		return []byte(fmt.Sprintf("%s-%02d: 日本語", from, i))
	}
	const n = 12
	for i := range n {
		if err := z.SendMessage("#mix", payload("z", i)); err != nil { // deflated: the offer says #mix is compressed for z
			t.Fatal(err)
		}
		var err error
		if i%4 == 0 {
			err = p.SendMessage("#mix", payload("p", i)) // binary
		} else {
			err = p.SendOnDataChannel("#mix", payload("p", i), true) // text
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, msg := range pRaw.wait(t, ctx, n) {
		if want := payload("z", i); !bytes.Equal(msg.Data, want) || msg.IsString {
			t.Errorf("plain receiver, message %d: %.40q (text %v), want %.40q as binary", i, msg.Data, msg.IsString, want)
		}
	}
	for i, msg := range zRaw.wait(t, ctx, n) {
		want := payload("p", i)
		got, err := zlib.NewReader(bytes.NewReader(msg.Data))
		var inflated []byte
		if err == nil {
			inflated, err = io.ReadAll(got)
		}
		if err != nil || !bytes.Equal(inflated, want) || msg.IsString {
			t.Errorf("compressed receiver, message %d: %.40q (text %v) inflates to %.40q (%v), want zlib of %.40q as binary", i, msg.Data, msg.IsString, inflated, err, want)
		}
	}
	time.Sleep(200 * time.Millisecond) // anything extra would be here by now
	if a, b := len(pRaw.wait(t, ctx, 0)), len(zRaw.wait(t, ctx, 0)); a != n || b != n {
		t.Errorf("the receivers got %d and %d messages, want %d each", a, b, n)
	}
}

// waitVideoLayer waits until the last n video packets c got from sender
// are all of the simulcast layer (-1: none arrive for a second).
func waitVideoLayer(t *testing.T, ctx context.Context, c, sender *soraclient.Client, layer, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		log := c.Packets(sender.ConnectionID(), "video")
		if layer >= 0 && len(log) >= n && !slices.ContainsFunc(log[len(log)-n:], func(p soraclient.PacketInfo) bool { return p.Layer != layer }) {
			return
		}
		if layer < 0 && (len(log) == 0 || time.Since(log[len(log)-1].At) > time.Second) {
			return
		}
		select {
		case <-ctx.Done():
			var last []int
			for _, p := range log[max(0, len(log)-n):] {
				last = append(last, p.Layer)
			}
			t.Fatalf("%s: the video from %s is not of layer %d: the last packets' layers %v", c.ConnectionID(), sender.ConnectionID(), layer, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RequestSpotlightRid and ResetSpotlightRid on DC rpc, on a spotlight
// channel: the result echoes the request with the caller as
// recv_connection_id, and the layers the caller gets change: of every
// sender by focus, of one sender when it is named, back to the channel's
// default after the reset.
func TestSpotlightRIDOverRPC(t *testing.T) {
	_, url := startMedia(t, newFakeCluster())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	join := func(role string, dcs bool) *soraclient.Client {
		c, err := connect(t, url, soraclient.Options{ChannelID: "spot", Role: role, Audio: true, Video: true, VideoCodec: "VP8", Simulcast: true,
			RecordPackets: true, DataChannelSignaling: dcs, Extra: map[string]any{"spotlight": true}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	o := join("recvonly", true)
	waitSwitched(t, ctx, o)
	focused := join("sendonly", false)        // the first sender takes the one focus place
	waitVideoLayer(t, ctx, o, focused, 1, 40) // the default focus rid
	other := join("sendonly", false)
	waitVideoLayer(t, ctx, o, other, 0, 40) // the default unfocus rid

	rpc := func(method string, params map[string]any, want map[string]any) {
		t.Helper()
		res, err := o.RPC(ctx, "2025.2.0/"+method, params)
		if err != nil {
			t.Fatalf("%s %v: %v", method, params, err)
		}
		if w := jsonString(want); !jsonEquals(res, w) {
			t.Fatalf("%s %v: result %s, want %s", method, params, res, w)
		}
	}
	rpc("RequestSpotlightRid", map[string]any{"spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "r1"},
		map[string]any{"recv_connection_id": o.ConnectionID(), "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "r1"})
	waitVideoLayer(t, ctx, o, focused, 2, 40)
	waitVideoLayer(t, ctx, o, other, 1, 40)

	rpc("RequestSpotlightRid", map[string]any{"recv_connection_id": o.ConnectionID(), "send_connection_id": other.ConnectionID(), "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "none"},
		map[string]any{"recv_connection_id": o.ConnectionID(), "send_connection_id": other.ConnectionID(), "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "none"})
	waitVideoLayer(t, ctx, o, other, -1, 0)
	waitVideoLayer(t, ctx, o, focused, 2, 40) // the request for every sender holds for the others

	rpc("ResetSpotlightRid", nil, map[string]any{"recv_connection_id": o.ConnectionID()})
	waitVideoLayer(t, ctx, o, focused, 1, 40)
	waitVideoLayer(t, ctx, o, other, 0, 40)
}
