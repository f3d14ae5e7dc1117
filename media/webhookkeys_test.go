package media

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/soraclient"
)

// keySet is the keys a JSON object of a webhook must have (required) and
// may have (optional); any other key is a failure.
type keySet struct {
	required, optional []string
}

func keys(required ...string) keySet { return keySet{required: required} }

func (k keySet) with(required ...string) keySet {
	return keySet{required: append(slices.Clone(k.required), required...), optional: slices.Clone(k.optional)}
}

func (k keySet) maybe(optional ...string) keySet {
	return keySet{required: slices.Clone(k.required), optional: append(slices.Clone(k.optional), optional...)}
}

// check fails unless obj has every required key and no key beyond the
// required and optional ones.
func (k keySet) check(t *testing.T, what string, obj map[string]any) {
	t.Helper()
	var missing, unknown []string
	for _, key := range k.required {
		if _, ok := obj[key]; !ok {
			missing = append(missing, key)
		}
	}
	for key := range obj {
		if !slices.Contains(k.required, key) && !slices.Contains(k.optional, key) {
			unknown = append(unknown, key)
		}
	}
	sort.Strings(unknown)
	if len(missing) > 0 || len(unknown) > 0 {
		t.Errorf("%s: missing %q, not documented %q; got %s", what, missing, unknown, mustJSON(obj))
	}
}

// object is obj[key] as an object, failing when it is not one.
func object(t *testing.T, what string, obj map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := obj[key].(map[string]any)
	if !ok {
		t.Fatalf("%s.%s is %v, not an object", what, key, obj[key])
	}
	return v
}

// The documented keys of every webhook type (sora-protocol.md section 7,
// and the README for sorad's additions: node_in_charge of
// session.vanished, event_metadata in session connections, spotlight_number
// and redirect in the auth webhook, bundle_id and id in the stats
// webhook).
var (
	hookCommon = keys("id", "timestamp", "label", "version", "node_name")
	hookCounts = []string{"channel_connections", "channel_sendrecv_connections", "channel_sendonly_connections", "channel_recvonly_connections"}

	authKeys = hookCommon.with("role", "channel_id", "connection_id", "multistream", "simulcast", "spotlight", "audio", "video",
		"data_channel_signaling", "ignore_disconnect_websocket", "sora_client", "e2ee").with(hookCounts...).
		maybe("client_id", "bundle_id", "metadata", "simulcast_rid", "spotlight_number", "spotlight_focus_rid", "spotlight_unfocus_rid",
			"audio_codec_type", "audio_bit_rate", "video_codec_type", "video_bit_rate", "video_vp9_params", "video_av1_params", "video_h264_params",
			"data_channels", "forwarding_filter", "redirect")
	soraClientKeys = keys("type", "raw", "version", "commit_short", "environment", "libwebrtc")

	sessionCreatedKeys   = hookCommon.with("type", "external_signaling_url", "channel_id", "session_id", "multistream", "spotlight", "created_time", "created_timestamp")
	sessionUpdatedKeys   = sessionCreatedKeys.with("max_connections", "total_connections", "session_metadata", "connections")
	sessionDestroyedKeys = sessionUpdatedKeys.with("destroyed_time", "destroyed_timestamp")
	sessionVanishedKeys  = hookCommon.with("type", "channel_id", "session_id", "multistream", "spotlight", "created_time", "created_timestamp",
		"destroyed_time", "destroyed_timestamp", "node_in_charge")
	// sessionConnectionKeys is an entry of connections of a sendrecv
	// connection with audio, VP9 video and event_metadata.
	sessionConnectionKeys = keys("connection_id", "role", "client_id", "bundle_id", "audio", "audio_codec_type", "video", "video_codec_type",
		"video_bit_rate", "video_vp9_params", "simulcast", "event_metadata", "connection_created_timestamp", "connection_destroyed_timestamp")

	eventEnvelopeKeys = hookCommon.with("type", "log_written", "role", "channel_id", "session_id", "client_id", "bundle_id", "connection_id",
		"multistream", "simulcast", "spotlight", "event_metadata")
	connectionEventKeys = eventEnvelopeKeys.with("data")
	// connectionDataKeys is data of connection.created and .updated about
	// a connection with audio at a given bit rate and VP9 video.
	connectionDataKeys = keys("minutes", "audio", "audio_codec_type", "audio_bit_rate", "video", "video_codec_type", "video_bit_rate",
		"video_vp9_params", "turn_transport_type", "created_time", "created_timestamp", "ice_connection_state",
		"total_received_bytes", "total_sent_bytes").with(hookCounts...)
	// destroyedDataKeys: closed by a Disconnect API call with a reason.
	destroyedDataKeys = connectionDataKeys.with("destroyed_time", "destroyed_timestamp", "reason", "disconnect_api_reason")
	iceStateKeys      = keys("total_checking_duration_ms", "total_disconnected_duration_ms")
	failedDataKeys    = keys("message", "total_received_bytes", "total_sent_bytes").with(hookCounts...)
	spotlightKeys     = eventEnvelopeKeys.with("spotlight_number", "fixed", "audio", "video")
	statsKeys         = hookCommon.with("type", "role", "channel_id", "session_id", "client_id", "bundle_id", "connection_id",
		"multistream", "simulcast", "spotlight", "stats")
)

// Every webhook type a real receiver gets has exactly its documented keys,
// at the top, in data, in data.ice_connection_state and in session
// connections.
func TestWebhookKeySets(t *testing.T) {
	const (
		sigURL           = "ws://127.0.0.1:5000/signaling"
		forwardingFilter = `{"action":"block","rules":[[{"field":"client_id","operator":"is_in","values":["x"]}]]}`
	)
	r := newReceiver(t)
	r.setAuth(func(map[string]any) (int, string) { return 200, `{"allowed":true,"event_metadata":{"user":42}}` })
	m, url := startWithWebhooks(t, r, Config{PingInterval: 100 * time.Millisecond, UserAgentStatsInterval: 100 * time.Millisecond,
		WebhookUpdateInterval: 300 * time.Millisecond, ConnectTimeout: 5 * time.Second, ExternalSignalingURL: sigURL}, 2*time.Second)

	pub, err := connect(t, url, soraclient.Options{ChannelID: "keys", Role: "sendrecv", ClientID: "pub", Audio: true, Video: true, VideoCodec: "VP9",
		Metadata: map[string]any{"k": "v"},
		Extra: map[string]any{"audio": map[string]any{"codec_type": "OPUS", "bit_rate": 48}, "video": map[string]any{"codec_type": "VP9", "vp9_params": map[string]any{"profile_id": 0}},
			"forwarding_filter": json.RawMessage(forwardingFilter)}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := connect(t, url, soraclient.Options{ChannelID: "keys", Role: "recvonly", Audio: true, Video: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.WaitPackets(ctxFor(t, 10*time.Second), pub.ConnectionID(), "audio", 5); err != nil {
		t.Fatal(err)
	}

	auth := r.find("/auth", func(b map[string]any) bool { return b["client_id"] == "pub" })
	authKeys.check(t, "auth", auth.body)
	soraClientKeys.check(t, "auth sora_client", object(t, "auth", auth.body, "sora_client"))
	for _, k := range []string{"client_id", "metadata", "audio_codec_type", "audio_bit_rate", "video_codec_type", "video_vp9_params", "forwarding_filter"} {
		if _, ok := auth.body[k]; !ok {
			t.Errorf("auth lacks %q, which the connect gave: %s", k, auth.raw)
		}
	}
	if got := string(mustJSON(auth.body["forwarding_filter"])); got != forwardingFilter {
		t.Errorf("auth forwarding_filter %s, want the connect's %s", got, forwardingFilter)
	}

	created := r.find("/session", ofWebhookType("session.created"))
	sessionCreatedKeys.check(t, "session.created", created.body)
	if created.body["external_signaling_url"] != sigURL {
		t.Errorf("session.created external_signaling_url %v", created.body["external_signaling_url"])
	}
	updated := r.find("/session", func(b map[string]any) bool {
		cs, _ := b["connections"].([]any)
		return b["type"] == "session.updated" && len(cs) == 2
	})
	sessionUpdatedKeys.check(t, "session.updated", updated.body)
	checkSessionConnections(t, "session.updated", updated.body, pub.ConnectionID())

	checkConnectionEvent := func(typ string, data keySet, match func(map[string]any) bool) {
		t.Helper()
		e := r.find("/event", match)
		connectionEventKeys.check(t, typ, e.body)
		d := object(t, typ, e.body, "data")
		data.check(t, typ+" data", d)
		iceStateKeys.check(t, typ+" data.ice_connection_state", object(t, typ+" data", d, "ice_connection_state"))
		if vp9 := string(mustJSON(d["video_vp9_params"])); vp9 != `{"profile_id":0}` {
			t.Errorf("%s data.video_vp9_params %s, want what sorad negotiates", typ, vp9)
		}
	}
	checkConnectionEvent("connection.created", connectionDataKeys, about("connection.created", pub.ConnectionID()))
	// The ICE times follow the PeerConnection's states: it went through
	// checking and is connected now.
	m.mu.Lock()
	pc := m.conns[pub.ConnectionID()]
	m.mu.Unlock()
	pc.iceTimes.mu.Lock()
	state, since := pc.iceTimes.state, pc.iceTimes.since
	pc.iceTimes.mu.Unlock()
	if (state != webrtc.ICEConnectionStateConnected && state != webrtc.ICEConnectionStateCompleted) || since.IsZero() {
		t.Errorf("ICE state as the event webhooks measure it: %s since %v", state, since)
	}
	checkConnectionEvent("connection.updated", connectionDataKeys, about("connection.updated", pub.ConnectionID()))

	st := r.find("/stats", func(b map[string]any) bool {
		s, _ := b["stats"].([]any)
		return about("connection.rtc", sub.ConnectionID())(b) && len(s) > 0
	})
	statsKeys.check(t, "stats", st.body)

	// spotlight.focused and spotlight.unfocused.
	a, err := connect(t, url, soraclient.Options{ChannelID: "keys-spot", Role: "sendrecv", Audio: true, Extra: map[string]any{"spotlight": true}})
	if err != nil {
		t.Fatal(err)
	}
	r.find("/event", about("connection.created", a.ConnectionID()))
	if err := m.FocusSpotlight("keys-spot", a.ConnectionID(), true); err != nil {
		t.Fatal(err)
	}
	spotlightKeys.check(t, "spotlight.focused", r.find("/event", about("spotlight.focused", a.ConnectionID())).body)
	if err := m.UnfocusSpotlight("keys-spot", a.ConnectionID()); err != nil {
		t.Fatal(err)
	}
	spotlightKeys.check(t, "spotlight.unfocused", r.find("/event", about("spotlight.unfocused", a.ConnectionID())).body)

	// connection.failed: a client that never answers the offer.
	failedID := neverAnswer(t, url, "keys")
	f := r.find("/event", about("connection.failed", failedID))
	connectionEventKeys.check(t, "connection.failed", f.body)
	fd := object(t, "connection.failed", f.body, "data")
	failedDataKeys.check(t, "connection.failed data", fd)
	// Counted after the failure: the two established connections.
	if fd["channel_connections"] != float64(2) || fd["channel_sendrecv_connections"] != float64(1) || fd["channel_recvonly_connections"] != float64(1) ||
		fd["channel_sendonly_connections"] != float64(0) || fd["message"] != "ICE-CONNECTION-TIMEOUT" {
		t.Errorf("connection.failed data %s", mustJSON(fd))
	}

	// connection.destroyed by the Disconnect API, then session.destroyed.
	if err := m.Disconnect(Selector{ChannelID: "keys", ConnectionID: pub.ConnectionID()}, json.RawMessage(`{"why":"keys"}`)); err != nil {
		t.Fatal(err)
	}
	checkConnectionEvent("connection.destroyed", destroyedDataKeys, about("connection.destroyed", pub.ConnectionID()))
	if err := m.Disconnect(Selector{ChannelID: "keys", ConnectionID: sub.ConnectionID()}, nil); err != nil {
		t.Fatal(err)
	}
	end := r.find("/session", func(b map[string]any) bool { return b["type"] == "session.destroyed" && b["channel_id"] == "keys" })
	sessionDestroyedKeys.check(t, "session.destroyed", end.body)
	checkSessionConnections(t, "session.destroyed", end.body, pub.ConnectionID())

	// session.vanished, as the cluster reports a session that died with
	// its node.
	m.SessionsEnded([]fsm.Channel{{ID: "gone", NodeInCharge: "dead@127.0.0.9", SessionID: "SESSION", SessionCreatedMicros: time.Now().Add(-time.Minute).UnixMicro()}})
	v := r.find("/session", ofWebhookType("session.vanished"))
	sessionVanishedKeys.check(t, "session.vanished", v.body)
	if v.body["channel_id"] != "gone" || v.body["session_id"] != "SESSION" || v.body["node_in_charge"] != "dead@127.0.0.9" {
		t.Errorf("session.vanished %s", v.raw)
	}
}

// checkSessionConnections checks the publisher's entry of a session
// webhook's connections against the documented keys, and that every entry
// has only documented keys.
func checkSessionConnections(t *testing.T, what string, body map[string]any, pubID string) {
	t.Helper()
	cs, _ := body["connections"].([]any)
	found := false
	for _, c := range cs {
		e, _ := c.(map[string]any)
		if e["connection_id"] == pubID {
			found = true
			sessionConnectionKeys.check(t, what+" connections[publisher]", e)
			continue
		}
		// Another connection may lack codec fields (no audio, no video).
		keys("connection_id", "role", "client_id", "bundle_id", "audio", "video", "simulcast", "connection_created_timestamp", "connection_destroyed_timestamp").
			maybe("audio_codec_type", "video_codec_type", "video_bit_rate", "video_vp9_params", "video_av1_params", "video_h264_params", "event_metadata").
			check(t, what+" connections[]", e)
	}
	if !found {
		t.Errorf("%s connections lack the publisher: %s", what, mustJSON(cs))
	}
}

// neverAnswer sends a connect on a raw WebSocket and never answers the
// offer; it returns the offer's connection ID.
func neverAnswer(t *testing.T, url, channelID string) string {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if err := ws.WriteJSON(map[string]any{"type": "connect", "role": "recvonly", "channel_id": channelID, "audio": true, "video": false}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		// A ping may come first when the offer takes a while.
		var msg struct {
			Type         string `json:"type"`
			ConnectionID string `json:"connection_id"`
		}
		if err := ws.ReadJSON(&msg); err != nil {
			t.Fatalf("no offer: %v", err)
		}
		if msg.Type == "offer" {
			return msg.ConnectionID
		}
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
