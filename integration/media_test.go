package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// signalingURL is a node's signaling endpoint.
func signalingURL(n *harness.Node) string {
	return fmt.Sprintf("ws://%s:%d/signaling", n.Address, harness.SignalingPort)
}

func connectClient(t *testing.T, ctx context.Context, n *harness.Node, opts soraclient.Options) *soraclient.Client {
	t.Helper()
	opts.SignalingURL = signalingURL(n)
	c, err := soraclient.Connect(ctx, opts)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", opts.Role, opts.ChannelID, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// mediaNode starts one standalone node for a test and returns it with a
// context that bounds the test's waits.
func mediaNode(t *testing.T, bound time.Duration, args ...string) (*harness.Node, context.Context) {
	t.Helper()
	n := startNode(t, harness.New(t, soradBin), args...)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	t.Cleanup(cancel)
	return n, ctx
}

// startNode starts one standalone node and waits until it serves.
func startNode(t *testing.T, h *harness.Harness, args ...string) *harness.Node {
	t.Helper()
	n := h.NewNode("media", args...)
	n.Start()
	harness.Eventually(t, 10*time.Second, "node ready", func() bool { return formed(n, []string{n.Name}) })
	return n
}

func TestSendonlyToRecvonly(t *testing.T) {
	n, ctx := mediaNode(t, 30*time.Second)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "recvonly", Audio: true, Video: true})
	for _, kind := range []string{"audio", "video"} {
		if err := sub.WaitPackets(ctx, pub.ConnectionID(), kind, 50); err != nil {
			t.Fatalf("recvonly got no %s from the sendonly: %v (received %v)", kind, err, sub.Received())
		}
	}
	t.Logf("received: %v", sub.Received())
}

// notify decodes a notify message.
type notify struct {
	EventType          string           `json:"event_type"`
	ConnectionID       string           `json:"connection_id"`
	ClientID           string           `json:"client_id"`
	BundleID           string           `json:"bundle_id"`
	SessionID          string           `json:"session_id"`
	Role               string           `json:"role"`
	ChannelConnections int              `json:"channel_connections"`
	Sendrecv           int              `json:"channel_sendrecv_connections"`
	Sendonly           int              `json:"channel_sendonly_connections"`
	Recvonly           int              `json:"channel_recvonly_connections"`
	Metadata           json.RawMessage  `json:"metadata"`
	AuthnMetadata      json.RawMessage  `json:"authn_metadata"`
	Data               []map[string]any `json:"data"`
}

// notifies returns c's notify messages in arrival order.
func notifies(t *testing.T, c *soraclient.Client) []notify {
	t.Helper()
	var out []notify
	for _, m := range c.Messages() {
		if m.Type != "notify" {
			continue
		}
		var n notify
		if err := json.Unmarshal(m.Raw, &n); err != nil {
			t.Fatalf("notify %s: %v", m.Raw, err)
		}
		out = append(out, n)
	}
	return out
}

// waitNotify waits until c got a notify of event about subject.
func waitNotify(t *testing.T, ctx context.Context, c *soraclient.Client, event, subject string) notify {
	t.Helper()
	m, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
		var n notify
		return m.Type == "notify" && json.Unmarshal(m.Raw, &n) == nil && n.EventType == event && n.ConnectionID == subject
	})
	if err != nil {
		t.Fatalf("%s never got %s about %s: %v; notifies: %+v", c.ConnectionID(), event, subject, err, notifies(t, c))
	}
	var n notify
	_ = json.Unmarshal(m.Raw, &n)
	return n
}

// waitClose waits until the server closed c's WebSocket and returns the
// close frame's code and reason.
func waitClose(t *testing.T, ctx context.Context, c *soraclient.Client) *soraclient.CloseError {
	t.Helper()
	select {
	case <-c.Closed():
	case <-ctx.Done():
		t.Fatalf("%s was not closed", c.ConnectionID())
	}
	info := c.CloseInfo()
	if info == nil {
		t.Fatalf("%s closed without a close frame", c.ConnectionID())
	}
	return info
}

func TestThreeSendrecvPeers(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second)
	var peers []*soraclient.Client
	for i := 0; i < 3; i++ {
		peers = append(peers, connectClient(t, ctx, n, soraclient.Options{
			ChannelID: "three", Role: "sendrecv", Audio: true, Video: true,
			SignalingNotifyMetadata: map[string]int{"peer": i},
		}))
		// Each joins once the previous one is established, so the notify
		// order below is fixed.
		waitNotify(t, ctx, peers[i], "connection.created", peers[i].ConnectionID())
	}
	for _, p := range peers {
		for _, o := range peers {
			if o == p {
				continue
			}
			for _, kind := range []string{"audio", "video"} {
				if err := p.WaitPackets(ctx, o.ConnectionID(), kind, 50); err != nil {
					t.Fatalf("%s got no %s from %s: %v (received %v)", p.ConnectionID(), kind, o.ConnectionID(), err, p.Received())
				}
			}
		}
		if _, own := p.Received()[p.ConnectionID()+"/video"]; own {
			t.Fatalf("%s receives its own video", p.ConnectionID())
		}
	}
	// Each newcomer's first notify is about itself, with the members already
	// there in data; the earlier members then hear about it.
	for i, p := range peers {
		ns := notifies(t, p)
		self := ns[0]
		if self.EventType != "connection.created" || self.ConnectionID != p.ConnectionID() || self.ChannelConnections != i+1 || self.Sendrecv != i+1 {
			t.Fatalf("peer %d's first notify = %+v", i, self)
		}
		if len(self.Data) != i {
			t.Fatalf("peer %d's own notify lists %d members, want %d: %+v", i, len(self.Data), i, self.Data)
		}
		for j, d := range self.Data {
			if d["connection_id"] != peers[j].ConnectionID() {
				t.Fatalf("peer %d's data = %+v", i, self.Data)
			}
			if meta, _ := json.Marshal(d["metadata"]); string(meta) != fmt.Sprintf(`{"peer":%d}`, j) {
				t.Fatalf("peer %d's data[%d].metadata = %s", i, j, meta)
			}
		}
		for j := i + 1; j < len(peers); j++ {
			got := waitNotify(t, ctx, p, "connection.created", peers[j].ConnectionID())
			if got.ChannelConnections != j+1 || string(got.Metadata) != fmt.Sprintf(`{"peer":%d}`, j) {
				t.Fatalf("peer %d heard of peer %d as %+v", i, j, got)
			}
		}
	}
	// A clean leave: TYPE-DISCONNECT for the leaver, destroyed for the rest.
	info, err := peers[2].Disconnect(ctx)
	if err != nil || info == nil || info.Code != 1000 || info.Reason != "TYPE-DISCONNECT" {
		t.Fatalf("disconnect answered %+v, %v; want 1000 TYPE-DISCONNECT", info, err)
	}
	for _, p := range peers[:2] {
		if got := waitNotify(t, ctx, p, "connection.destroyed", peers[2].ConnectionID()); got.ChannelConnections != 2 {
			t.Fatalf("destroyed notify = %+v", got)
		}
	}
}

func TestBundleIDPeersDoNotReceiveEachOther(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second)
	a := connectClient(t, ctx, n, soraclient.Options{ChannelID: "bundle", Role: "sendrecv", Audio: true, Video: true, BundleID: "same"})
	b := connectClient(t, ctx, n, soraclient.Options{ChannelID: "bundle", Role: "sendrecv", Audio: true, Video: true, BundleID: "same"})
	watcher := connectClient(t, ctx, n, soraclient.Options{ChannelID: "bundle", Role: "recvonly", Audio: true, Video: true})
	for _, p := range []*soraclient.Client{a, b} {
		if err := watcher.WaitPackets(ctx, p.ConnectionID(), "video", 30); err != nil {
			t.Fatalf("watcher got no video from %s: %v", p.ConnectionID(), err)
		}
	}
	for _, pair := range [][2]*soraclient.Client{{a, b}, {b, a}} {
		if st, ok := pair[0].Received()[pair[1].ConnectionID()+"/video"]; ok {
			t.Fatalf("%s received %d packets from %s of the same bundle", pair[0].ConnectionID(), st.Packets, pair[1].ConnectionID())
		}
	}
	if got := a.Offer()["bundle_id"]; got != "same" {
		t.Fatalf("offer bundle_id = %v", got)
	}
}

func TestSignalingRefusals(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second, "--signaling_max_message_size=4096")
	refused := func(opts soraclient.Options) *soraclient.CloseError {
		t.Helper()
		opts.SignalingURL = signalingURL(n)
		c, err := soraclient.Connect(ctx, opts)
		if err == nil {
			_ = c.Close()
			t.Fatalf("connect %+v was accepted", opts.Extra)
		}
		var ce *soraclient.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connect failed without a close frame: %v", err)
		}
		return ce
	}
	tests := []struct {
		name   string
		opts   soraclient.Options
		reason string
	}{
		{"bad role", soraclient.Options{ChannelID: "c", Role: "upstream", Audio: true}, "INVALID-ROLE"},
		{"no channel", soraclient.Options{Role: "recvonly", Audio: true, Extra: map[string]any{"channel_id": soraclient.Omit}}, "MISSING-CHANNEL-ID"},
		{"focus rid without spotlight", soraclient.Options{ChannelID: "c", Role: "recvonly", Audio: true, Extra: map[string]any{"spotlight_focus_rid": "r0"}}, "SPOTLIGHT-RID-WITHOUT-SPOTLIGHT"},
		{"oversized connect", soraclient.Options{ChannelID: "c", Role: "recvonly", Audio: true, Extra: map[string]any{"padding": strings.Repeat("x", 5000)}}, "MESSAGE-TOO-LARGE"},
		{"unknown video codec", soraclient.Options{ChannelID: "c", Role: "sendonly", Video: true, VideoCodec: "H265"}, "UNSUPPORTED-VIDEO-CODEC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ce := refused(tt.opts)
			if ce.Code != 4490 || !strings.HasPrefix(ce.Reason, tt.reason) {
				t.Fatalf("closed with %d %q, want 4490 %s", ce.Code, ce.Reason, tt.reason)
			}
		})
	}
	// After connect: a binary frame, an oversized message and garbage.
	for _, bad := range []struct {
		name   string
		typ    int
		data   []byte
		reason string
	}{
		{"binary frame", websocket.BinaryMessage, []byte{1, 2, 3}, "BINARY-MESSAGE"},
		{"oversized message", websocket.TextMessage, []byte(`{"type":"pong","x":"` + strings.Repeat("y", 5000) + `"}`), "MESSAGE-TOO-LARGE"},
		{"not json", websocket.TextMessage, []byte(`{{{`), "INVALID-MESSAGE"},
	} {
		t.Run("after connect: "+bad.name, func(t *testing.T) {
			c := connectClient(t, ctx, n, soraclient.Options{ChannelID: "refusals", Role: "recvonly", Audio: true})
			if err := c.SendRaw(bad.typ, bad.data); err != nil {
				t.Fatal(err)
			}
			if info := waitClose(t, ctx, c); info.Code != 4490 || !strings.HasPrefix(info.Reason, bad.reason) {
				t.Fatalf("closed with %d %q, want 4490 %s", info.Code, info.Reason, bad.reason)
			}
		})
	}
	// The node is still fine.
	connectClient(t, ctx, n, soraclient.Options{ChannelID: "after", Role: "recvonly", Audio: true})
}

// waitPush waits until c got a push whose data equals want.
func waitPush(t *testing.T, ctx context.Context, c *soraclient.Client, want string) {
	t.Helper()
	_, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
		var p struct {
			Data json.RawMessage `json:"data"`
		}
		return m.Type == "push" && json.Unmarshal(m.Raw, &p) == nil && jsonEqual(p.Data, []byte(want))
	})
	if err != nil {
		t.Fatalf("%s never got push %s: %v", c.ConnectionID(), want, err)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// apiError checks an error answer's status and type.
func apiError(t *testing.T, r harness.Response, status int, typ string) {
	t.Helper()
	var e struct {
		Type string `json:"error_type"`
	}
	if r.Status != status || r.JSON(&e) != nil || e.Type != typ {
		t.Fatalf("answer %d %s, want %d %s", r.Status, r.Body, status, typ)
	}
}

func TestMediaAPIsOnLiveConnections(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "api", Role: "sendrecv", Audio: true, Video: true, ClientID: "alice",
		Metadata: map[string]string{"token": "t"}, SignalingNotifyMetadata: map[string]int{"abc": 10}})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "api", Role: "recvonly", Audio: true, Video: true, ClientID: "bob"})
	other := connectClient(t, ctx, n, soraclient.Options{ChannelID: "elsewhere", Role: "recvonly", Audio: true, Video: true})
	for _, c := range []*soraclient.Client{pub, sub, other} {
		waitNotify(t, ctx, c, "connection.created", c.ConnectionID())
	}
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}

	t.Run("ListConnections and ListChannelConnections", func(t *testing.T) {
		var all []map[string]any
		if err := n.MustCall(200, "Sora_20201013.ListConnections", nil).JSON(&all); err != nil || len(all) != 3 {
			t.Fatalf("ListConnections = %v, %v", all, err)
		}
		var chans []map[string]any
		if err := n.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "api"}).JSON(&chans); err != nil || len(chans) != 2 {
			t.Fatalf("ListChannelConnections = %v, %v", chans, err)
		}
		byID := map[string]map[string]any{}
		for _, c := range chans {
			byID[c["connection_id"].(string)] = c
		}
		p := byID[pub.ConnectionID()]
		if p["client_id"] != "alice" || p["role"] != "sendrecv" || p["channel_id"] != "api" || p["multistream"] != true || p["bundle_id"] != pub.ConnectionID() {
			t.Fatalf("publisher entry = %v", p)
		}
		if _, ok := p["created_time"].(float64); !ok {
			t.Fatalf("created_time = %v", p["created_time"])
		}
		if v, _ := p["video"].(map[string]any); v["codec_type"] == nil {
			t.Fatalf("video = %v", p["video"])
		}
		var none []any
		if err := n.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "nobody"}).JSON(&none); err != nil || len(none) != 0 {
			t.Fatalf("unknown channel lists %v", none)
		}
	})

	t.Run("ListChannels lists live sessions", func(t *testing.T) {
		var chans []map[string]any
		if err := n.MustCall(200, "Sora_20201013.ListChannels", nil).JSON(&chans); err != nil || len(chans) != 2 || chans[0]["channel_id"] != "api" || chans[1]["channel_id"] != "elsewhere" {
			t.Fatalf("ListChannels = %v, %v", chans, err)
		}
	})

	t.Run("Push", func(t *testing.T) {
		n.MustCall(200, "Sora_20160711.PushChannel", map[string]any{"channel_id": "api", "data": map[string]int{"to": 1}})
		waitPush(t, ctx, pub, `{"to":1}`)
		waitPush(t, ctx, sub, `{"to":1}`)
		n.MustCall(200, "Sora_20160711.PushClient", map[string]any{"channel_id": "api", "client_id": "bob", "data": map[string]int{"to": 2}})
		waitPush(t, ctx, sub, `{"to":2}`)
		n.MustCall(200, "Sora_20160711.PushConnection", map[string]any{"channel_id": "api", "connection_id": pub.ConnectionID(), "data": map[string]int{"to": 3}})
		waitPush(t, ctx, pub, `{"to":3}`)
		r := n.MustCall(200, "Sora_20201120.PushChannelByRole", map[string]any{"channel_id": "api", "role": "recvonly", "data": map[string]int{"to": 4}})
		if !jsonEqual(r.Body, []byte(`{"channel_id":"api","role":"recvonly"}`)) {
			t.Fatalf("PushChannelByRole answered %s", r.Body)
		}
		waitPush(t, ctx, sub, `{"to":4}`)
		// Pushes reach only whom they were for.
		for _, c := range []*soraclient.Client{pub, other} {
			for _, m := range c.Messages() {
				if m.Type == "push" && (strings.Contains(string(m.Raw), `"to":2`) || strings.Contains(string(m.Raw), `"to":4`)) || c == other && m.Type == "push" {
					t.Fatalf("%s got a push not meant for it: %s", c.ConnectionID(), m.Raw)
				}
			}
		}
		apiError(t, mustCall(t, n, "Sora_20160711.PushChannel", map[string]any{"channel_id": "nobody", "data": map[string]int{}}), 404, "CHANNEL-NOT-FOUND")
		apiError(t, mustCall(t, n, "Sora_20160711.PushClient", map[string]any{"channel_id": "api", "client_id": "carol", "data": map[string]int{}}), 404, "CLIENT-NOT-FOUND")
		apiError(t, mustCall(t, n, "Sora_20160711.PushConnection", map[string]any{"channel_id": "api", "connection_id": "NOPE", "data": map[string]int{}}), 404, "CONNECTION-NOT-FOUND")
	})

	t.Run("signaling notify metadata", func(t *testing.T) {
		id := pub.ConnectionID()
		var list []map[string]any
		if err := n.MustCall(200, "Sora_20201124.ListSignalingNotifyMetadata", map[string]string{"channel_id": "api"}).JSON(&list); err != nil || len(list) != 2 {
			t.Fatalf("list = %v, %v", list, err)
		}
		get := func() string {
			return string(n.MustCall(200, "Sora_20201124.GetSignalingNotifyMetadata", map[string]string{"channel_id": "api", "connection_id": id}).Body)
		}
		if got := get(); !jsonEqual([]byte(got), []byte(`{"abc":10}`)) {
			t.Fatalf("metadata from connect = %s", got)
		}
		r := n.MustCall(200, "Sora_20201124.PutSignalingNotifyMetadata", map[string]any{"channel_id": "api", "connection_id": id, "metadata": map[string]string{"abc": "efg"}, "push": true})
		if !jsonEqual(r.Body, []byte(`{"abc":"efg"}`)) {
			t.Fatalf("put answered %s", r.Body)
		}
		waitPush(t, ctx, sub, `{"action":"PutMetadata","connection_id":"`+id+`","metadata":{"abc":"efg"},"type":"signaling_notify_metadata_ext"}`)
		r = n.MustCall(200, "Sora_20201124.PutSignalingNotifyMetadataItem", map[string]any{"channel_id": "api", "connection_id": id, "key": "k", "value": []int{1}, "push": true})
		if !jsonEqual(r.Body, []byte(`{"abc":"efg","k":[1]}`)) {
			t.Fatalf("put item answered %s", r.Body)
		}
		waitPush(t, ctx, sub, `{"action":"PutMetadataItem","connection_id":"`+id+`","key":"k","value":[1],"type":"signaling_notify_metadata_ext"}`)
		r = n.MustCall(200, "Sora_20201124.DeleteSignalingNotifyMetadataItem", map[string]any{"channel_id": "api", "connection_id": id, "key": "abc", "push": true})
		if !jsonEqual(r.Body, []byte(`{"k":[1]}`)) {
			t.Fatalf("delete item answered %s", r.Body)
		}
		waitPush(t, ctx, pub, `{"action":"DeleteMetadataItem","connection_id":"`+id+`","key":"abc","type":"signaling_notify_metadata_ext"}`)
		r = n.MustCall(200, "Sora_20201124.DeleteSignalingNotifyMetadata", map[string]any{"channel_id": "api", "connection_id": id})
		if !jsonEqual(r.Body, []byte(`{"k":[1]}`)) {
			t.Fatalf("delete answered %s (want the metadata before deletion)", r.Body)
		}
		if got := get(); got != "{}" {
			t.Fatalf("metadata after delete = %s", got)
		}
		apiError(t, mustCall(t, n, "Sora_20201124.GetSignalingNotifyMetadata", map[string]string{"channel_id": "api", "connection_id": "NOPE"}), 404, "CONNECTION-NOT-FOUND")
		apiError(t, mustCall(t, n, "Sora_20201124.ListSignalingNotifyMetadata", map[string]string{"channel_id": "nobody"}), 404, "CHANNEL-NOT-FOUND")
	})

	t.Run("stats", func(t *testing.T) {
		var st map[string]any
		if err := n.MustCall(200, "Sora_20170529.GetStatsConnection", map[string]string{"channel_id": "api", "connection_id": pub.ConnectionID()}).JSON(&st); err != nil {
			t.Fatal(err)
		}
		tracks, _ := st["tracks"].([]any)
		if st["connection_id"] != pub.ConnectionID() || len(tracks) == 0 {
			t.Fatalf("GetStatsConnection = %v", st)
		}
		var received float64
		for _, tr := range tracks {
			m := tr.(map[string]any)
			if m["direction"] == "recv" {
				received += m["total_received_rtp"].(float64)
			}
		}
		if received == 0 {
			t.Fatalf("no received RTP counted for the publisher: %v", st)
		}
		var list []map[string]any
		if err := n.MustCall(200, "Sora_20170529.GetStatsClient", map[string]string{"channel_id": "api", "client_id": "bob"}).JSON(&list); err != nil || len(list) != 1 || list[0]["connection_id"] != sub.ConnectionID() {
			t.Fatalf("GetStatsClient = %v, %v", list, err)
		}
		var report map[string]any
		if err := n.MustCall(200, "Sora_20171010.GetStatsReport", nil).JSON(&report); err != nil {
			t.Fatal(err)
		}
		if report["total_ongoing_connections"] != 3.0 || report["total_connection_created"] != 3.0 || report["total_successful_connections"] != 3.0 || report["total_session_created"] != 2.0 {
			t.Fatalf("GetStatsReport = %v", report)
		}
		apiError(t, mustCall(t, n, "Sora_20170529.GetStatsConnection", map[string]string{"channel_id": "api", "connection_id": "NOPE"}), 404, "CONNECTION-NOT-FOUND")
	})

	t.Run("Disconnect", func(t *testing.T) {
		r := n.MustCall(200, "Sora_20151104.DisconnectConnection", map[string]any{"channel_id": "api", "connection_id": sub.ConnectionID(), "reason": map[string]string{"why": "test"}})
		if !jsonEqual(r.Body, []byte(`{"channel_id":"api","connection_id":"`+sub.ConnectionID()+`"}`)) {
			t.Fatalf("DisconnectConnection answered %s", r.Body)
		}
		if info := waitClose(t, ctx, sub); info.Code != 1000 || info.Reason != "DISCONNECTED-API" {
			t.Fatalf("closed with %+v, want 1000 DISCONNECTED-API", info)
		}
		waitNotify(t, ctx, pub, "connection.destroyed", sub.ConnectionID())
		apiError(t, mustCall(t, n, "Sora_20151104.DisconnectClient", map[string]string{"channel_id": "api", "client_id": "bob"}), 404, "CLIENT-NOT-FOUND")
		n.MustCall(200, "Sora_20151104.DisconnectClient", map[string]string{"channel_id": "api", "client_id": "alice"})
		if info := waitClose(t, ctx, pub); info.Code != 1000 || info.Reason != "DISCONNECTED-API" {
			t.Fatalf("closed with %+v", info)
		}
		r = n.MustCall(200, "Sora_20201120.DisconnectChannelByRole", map[string]string{"channel_id": "elsewhere", "role": "recvonly"})
		if !jsonEqual(r.Body, []byte(`{"channel_id":"elsewhere","role":"recvonly"}`)) {
			t.Fatalf("DisconnectChannelByRole answered %s", r.Body)
		}
		waitClose(t, ctx, other)
		apiError(t, mustCall(t, n, "Sora_20151104.DisconnectChannel", map[string]string{"channel_id": "api"}), 404, "CHANNEL-NOT-FOUND")
		harness.Eventually(t, 5*time.Second, "no connection left", func() bool {
			var all []any
			return n.MustCall(200, "Sora_20201013.ListConnections", nil).JSON(&all) == nil && len(all) == 0
		})
	})
}

func mustCall(t *testing.T, n *harness.Node, target string, body any) harness.Response {
	t.Helper()
	r, err := n.Call(target, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// refusedWith connects and expects the node to close the socket with code
// and reason before the offer.
func refusedWith(t *testing.T, ctx context.Context, n *harness.Node, opts soraclient.Options, code int, reason string) {
	t.Helper()
	opts.SignalingURL = signalingURL(n)
	c, err := soraclient.Connect(ctx, opts)
	if err == nil {
		_ = c.Close()
		t.Fatalf("connect to %s was admitted, want %d %s", opts.ChannelID, code, reason)
	}
	var ce *soraclient.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("connect to %s failed with %v, want close %d %s", opts.ChannelID, err, code, reason)
	}
}

func TestAdmissionModesLicenseAndRelease(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second, "--license_max_connections=2", "--channel_release_delay=300ms")
	recv := soraclient.Options{Role: "recvonly", Audio: true, Video: true}
	with := func(channel string) soraclient.Options { o := recv; o.ChannelID = channel; return o }

	first := connectClient(t, ctx, n, with("live"))
	connectClient(t, ctx, n, with("live"))
	refusedWith(t, ctx, n, with("live"), 4503, "LICENSE-MAX-CONNECTIONS")

	// block_new_session: joiners of a live session are admitted, new
	// sessions are not.
	_ = first.Close()
	harness.Eventually(t, 5*time.Second, "first connection gone", func() bool {
		var all []any
		return n.MustCall(200, "Sora_20201013.ListConnections", nil).JSON(&all) == nil && len(all) == 1
	})
	n.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
	connectClient(t, ctx, n, with("live"))
	refusedWith(t, ctx, n, with("fresh"), 4503, "BLOCK-NEW-SESSION")

	n.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_connection"})
	refusedWith(t, ctx, n, with("live"), 4503, "BLOCK-NEW-CONNECTION")
	n.MustCall(200, targetChangeMode, map[string]string{"mode": "normal"})

	// A channel is released in the cluster shortly after its last
	// connection leaves.
	n.MustCall(200, "Sora_20151104.DisconnectChannel", map[string]string{"channel_id": "live"})
	harness.Eventually(t, 5*time.Second, "channel released", func() bool { return len(listChannels(n)) == 0 })
	var report map[string]any
	if err := n.MustCall(200, "Sora_20171010.GetStatsReport", nil).JSON(&report); err != nil {
		t.Fatal(err)
	}
	if report["total_failed_connections"].(float64) < 3 || report["total_session_destroyed"] != 1.0 || report["total_ongoing_connections"] != 0.0 {
		t.Fatalf("GetStatsReport after the refusals = %v", report)
	}
}

func TestPongTimeoutClosesConnection(t *testing.T) {
	h := harness.New(t, soradBin)
	n := startNode(t, h, "--signaling_ping_interval=200ms", "--signaling_pong_timeout=1s")
	ws, _, err := websocket.DefaultDialer.Dial(signalingURL(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"type": "connect", "role": "recvonly", "channel_id": "silent"}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var types []string
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4408 || ce.Text != "PONG-TIMEOUT" {
				t.Fatalf("connection ended with %v after %v, want close 4408 PONG-TIMEOUT", err, types)
			}
			break
		}
		var m struct{ Type string }
		_ = json.Unmarshal(b, &m)
		types = append(types, m.Type)
	}
	if len(types) < 2 || types[0] != "offer" || types[1] != "ping" {
		t.Fatalf("messages before the close: %v, want offer then pings", types)
	}
}

func TestRedirectToNodeInCharge(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2)
	owner, other := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := connectClient(t, ctx, owner, soraclient.Options{ChannelID: "routed", Role: "sendonly", Audio: true, Video: true})
	harness.Eventually(t, 5*time.Second, "assignment replicated", func() bool {
		for _, ch := range listChannels(other) {
			if ch.ChannelID == "routed" {
				return ch.NodeInCharge == owner.Name
			}
		}
		return false
	})
	// Without following, the client sees the redirect to the owner.
	_, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(other), ChannelID: "routed", Role: "recvonly", Audio: true, Video: true, NoRedirect: true})
	var re *soraclient.RedirectError
	if !errors.As(err, &re) || re.Location != signalingURL(owner) {
		t.Fatalf("connect on the other node = %v, want a redirect to %s", err, signalingURL(owner))
	}
	// Following it, as every SDK does, it gets media on the owner.
	sub := connectClient(t, ctx, other, soraclient.Options{ChannelID: "routed", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 30); err != nil {
		t.Fatalf("redirected subscriber got no video: %v", err)
	}
	var conns []map[string]any
	if err := owner.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "routed"}).JSON(&conns); err != nil || len(conns) != 2 {
		t.Fatalf("owner lists %v, %v", conns, err)
	}
}

// TestConnectionsLeaveNothingBehind opens and closes 200 connections (half
// leaving with disconnect, half dropping the socket) and checks that the
// sorad process is back to its goroutines and file descriptors.
func TestConnectionsLeaveNothingBehind(t *testing.T) {
	n, ctx := mediaNode(t, 3*time.Minute)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "churn", Role: "sendonly", Audio: true, Video: true})
	sample := func() (g, fds, heap float64) {
		var err error
		if g, err = n.Metric("go_goroutines"); err == nil {
			if fds, err = n.Metric("process_open_fds"); err == nil {
				heap, err = n.Metric("go_memstats_heap_inuse_bytes")
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return g, fds, heap
	}
	// A first subscriber warms up what is created once (pools, timers).
	warm := connectClient(t, ctx, n, soraclient.Options{ChannelID: "churn", Role: "recvonly", Audio: true, Video: true})
	if err := warm.WaitPackets(ctx, pub.ConnectionID(), "video", 10); err != nil {
		t.Fatal(err)
	}
	_ = warm.Close()
	time.Sleep(2 * time.Second) // let the server finish that teardown
	g0, fd0, heap0 := sample()

	const total, batch = 200, 10
	for i := 0; i < total; i += batch {
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for j := 0; j < batch; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(n), ChannelID: "churn", Role: "recvonly", Audio: true, Video: true})
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if err := c.WaitPackets(ctx, pub.ConnectionID(), "video", 5); err != nil {
					errs <- err
					return
				}
				if (i+j)%2 == 0 {
					if _, err := c.Disconnect(ctx); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("connection %d..%d: %v", i, i+batch, err)
		}
	}
	var g1, fd1, heap1 float64
	harness.Eventually(t, 20*time.Second, "goroutines and descriptors back to the baseline", func() bool {
		g1, fd1, heap1 = sample()
		return g1 <= g0+3 && fd1 <= fd0+2
	})
	t.Logf("after %d connections: goroutines %v -> %v, open fds %v -> %v, heap in use %.1f -> %.1f MiB",
		total, g0, g1, fd0, fd1, heap0/(1<<20), heap1/(1<<20))
	if heap1 > 2*heap0+64<<20 {
		t.Fatalf("heap in use grew from %.1f to %.1f MiB", heap0/(1<<20), heap1/(1<<20))
	}
	var report map[string]any
	if err := n.MustCall(200, "Sora_20171010.GetStatsReport", nil).JSON(&report); err != nil {
		t.Fatal(err)
	}
	if report["total_ongoing_connections"] != 1.0 || report["total_connection_destroyed"] != float64(total+1) {
		t.Fatalf("GetStatsReport = %v", report)
	}
}

// TestPendingSignalingConnectionsAreBounded: sockets that never send
// connect are limited in number; beyond the limit the upgrade is refused.
func TestPendingSignalingConnectionsAreBounded(t *testing.T) {
	h := harness.New(t, soradBin)
	n := startNode(t, h, "--signaling_max_pending_connections=2")
	var silent []*websocket.Conn
	for i := 0; i < 2; i++ {
		ws, _, err := websocket.DefaultDialer.Dial(signalingURL(n), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		silent = append(silent, ws)
	}
	_, resp, err := websocket.DefaultDialer.Dial(signalingURL(n), nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("third pending socket: %v, %+v; want HTTP 503", err, resp)
	}
	silent[0].Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *soraclient.Client
	harness.Eventually(t, 5*time.Second, "a slot freed", func() bool {
		var err error
		c, err = soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(n), ChannelID: "slot", Role: "recvonly", Audio: true})
		return err == nil
	})
	_ = c.Close()
}

// TestAnnouncedIPInOffer: with media_public_ip_list the offer's candidates
// carry the announced address (NAT 1:1) on the media UDP port.
func TestAnnouncedIPInOffer(t *testing.T) {
	h := harness.New(t, soradBin)
	n := startNode(t, h, "--media_public_ip_list=127.0.0.99", "--media_udp_port=15000")
	ws, _, err := websocket.DefaultDialer.Dial(signalingURL(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"type": "connect", "role": "recvonly", "channel_id": "nat"}); err != nil {
		t.Fatal(err)
	}
	var offer struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&offer); err != nil || offer.Type != "offer" {
		t.Fatalf("first message %+v, %v", offer, err)
	}
	var cands []string
	for _, line := range strings.Split(offer.SDP, "\r\n") {
		if strings.HasPrefix(line, "a=candidate:") {
			cands = append(cands, line)
		}
	}
	if len(cands) == 0 {
		t.Fatalf("offer has no candidates:\n%s", offer.SDP)
	}
	for _, c := range cands {
		if !strings.Contains(c, " 127.0.0.99 15000 typ host") || strings.Contains(c, n.Address) {
			t.Fatalf("candidate %q does not announce 127.0.0.99:15000 only", c)
		}
	}
	if !strings.Contains(offer.SDP, "a=ice-lite") {
		t.Fatal("offer is not ICE-lite")
	}
}

// TestKeyframeRequestsRelayedAndThrottled: PLIs from a receiver reach the
// publisher as key frame requests, at most one per keyframe_request_interval
// (one that comes sooner waits for its time, with all that came meanwhile).
func TestKeyframeRequestsRelayedAndThrottled(t *testing.T) {
	const interval = 300 * time.Millisecond
	n, ctx := mediaNode(t, 30*time.Second, "--keyframe_request_interval="+interval.String())
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "pli", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "pli", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 10); err != nil {
		t.Fatal(err)
	}
	var ssrc uint32
	for _, tr := range sub.PeerConnection().GetTransceivers() {
		if r := tr.Receiver(); r != nil && r.Track() != nil && r.Track().Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(r.Track().SSRC())
		}
	}
	if ssrc == 0 {
		t.Fatal("no video receiver")
	}
	metric := func(name string) float64 {
		v, err := n.Metric(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	recv0, sent0 := metric("sorad_plis_received_total"), metric("sorad_keyframe_requests_sent_total")
	// The synthetic publisher sends a key frame every second and ignores
	// requests, so a request deferred for the interval goes out.
	const plis = 30
	start := time.Now()
	for i := 0; i < plis; i++ {
		if err := sub.PeerConnection().WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	harness.Eventually(t, 5*time.Second, "the PLIs counted", func() bool { return metric("sorad_plis_received_total")-recv0 >= plis })
	harness.Eventually(t, 5*time.Second, "a key frame request sent", func() bool { return metric("sorad_keyframe_requests_sent_total")-sent0 >= 1 })
	time.Sleep(3 * interval) // for a request still waiting to go out
	// However long all this took, at most one request per interval since
	// the first PLI, and one more for a request that was already waiting.
	elapsed := time.Since(start)
	sent := metric("sorad_keyframe_requests_sent_total") - sent0
	allowed := 2 + int(elapsed/interval)
	if allowed >= plis {
		t.Logf("this machine took %v: too slow to tell throttling from none", elapsed)
	}
	if sent > float64(allowed) {
		t.Fatalf("%d PLIs within %v became %v key frame requests in %v, want at most %d (throttled)", plis, plis*10*time.Millisecond, sent, elapsed.Round(time.Millisecond), allowed)
	}
}

// TestVideoBitRateCapsTheSender: a sender's video bit rate (requested, or
// default_video_bit_rate) is offered as b=AS on its upstream video m-line
// only, and listed by ListConnections.
func TestVideoBitRateCapsTheSender(t *testing.T) {
	n, ctx := mediaNode(t, 30*time.Second, "--default_video_bit_rate=800")
	upstreamBandwidth := func(c *soraclient.Client) string {
		sdp, _ := c.Offer()["sdp"].(string)
		mid := c.Offer()["mid"].(map[string]any)["video"].(string)
		var section []string
		for _, block := range strings.Split(sdp, "\r\nm=")[1:] {
			if strings.Contains(block, "\r\na=mid:"+mid+"\r\n") {
				section = strings.Split(block, "\r\n")
			} else if strings.Contains(block, "b=AS:") {
				t.Fatalf("a bandwidth line outside the upstream video m-line:\nm=%s", block)
			}
		}
		for _, l := range section {
			if strings.HasPrefix(l, "b=AS:") {
				return l
			}
		}
		return ""
	}
	asked := connectClient(t, ctx, n, soraclient.Options{ChannelID: "rate", Role: "sendonly", Audio: true, Video: true,
		Extra: map[string]any{"video": map[string]any{"codec_type": "VP8", "bit_rate": 300}}})
	if got := upstreamBandwidth(asked); got != "b=AS:300" {
		t.Fatalf("requested 300 kbps, offer has %q", got)
	}
	dflt := connectClient(t, ctx, n, soraclient.Options{ChannelID: "rate", Role: "sendrecv", Audio: true, Video: true})
	if got := upstreamBandwidth(dflt); got != "b=AS:800" {
		t.Fatalf("default 800 kbps, offer has %q", got)
	}
	var conns []map[string]any
	if err := n.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "rate"}).JSON(&conns); err != nil {
		t.Fatal(err)
	}
	rates := map[string]any{}
	for _, c := range conns {
		rates[c["connection_id"].(string)] = c["video"].(map[string]any)["bit_rate"]
	}
	if rates[asked.ConnectionID()] != 300.0 || rates[dflt.ConnectionID()] != 800.0 {
		t.Fatalf("listed bit rates = %v", rates)
	}
}

// TestLaterPublishersOfOtherCodecsReachReceivers: a receiver that first
// negotiated with only a VP8 publisher still gets the tracks of publishers
// that join later in VP9, AV1 and H264.
func TestLaterPublishersOfOtherCodecsReachReceivers(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second)
	first := connectClient(t, ctx, n, soraclient.Options{ChannelID: "codecs", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "codecs", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx, first.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}
	for _, codec := range []string{"VP9", "AV1", "H264"} {
		pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "codecs", Role: "sendonly", Audio: true, Video: true, VideoCodec: codec})
		if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
			t.Fatalf("the receiver got no %s video from a later publisher: %v (received %v)", codec, err, sub.Received())
		}
	}
	select {
	case <-sub.Closed():
		t.Fatalf("the receiver was disconnected: %+v", sub.CloseInfo())
	default:
	}
}
