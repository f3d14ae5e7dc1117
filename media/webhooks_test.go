package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sorad/sorad/integration/soraclient"
	"github.com/sorad/sorad/media/webhook"
)

// Webhooks against a real HTTP receiver in the test process and the real
// delivery of package webhook.

// hookRequest is one webhook the receiver got.
type hookRequest struct {
	path   string
	header http.Header
	body   map[string]any
	raw    []byte
}

// receiver records every webhook; auth answers with authAnswer.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	got        []hookRequest
	authAnswer func(body map[string]any) (status int, answer string)
	// sessionAnswer answers session.created.
	sessionAnswer string
	changed       chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, changed: make(chan struct{}, 1), sessionAnswer: `{"session_metadata":{"room":"blue"}}`}
	r.authAnswer = func(map[string]any) (int, string) { return 200, `{"allowed":true}` }
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		raw, _ := io.ReadAll(req.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		r.mu.Lock()
		r.got = append(r.got, hookRequest{path: req.URL.Path, header: req.Header.Clone(), body: body, raw: raw})
		answer, sessionAnswer := r.authAnswer, r.sessionAnswer
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
		switch req.URL.Path {
		case "/auth":
			status, a := answer(body)
			w.WriteHeader(status)
			_, _ = io.WriteString(w, a)
		case "/session":
			if body["type"] == "session.created" {
				_, _ = io.WriteString(w, sessionAnswer)
			}
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setAuth(f func(body map[string]any) (int, string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.authAnswer = f
}

// find waits up to 10 s for the first webhook on path matching match.
func (r *receiver) find(path string, match func(map[string]any) bool) hookRequest {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for _, h := range r.got {
			if h.path == path && match(h.body) {
				r.mu.Unlock()
				return h
			}
		}
		r.mu.Unlock()
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.t.Fatalf("no %s webhook matching within 10 s", path)
		}
	}
}

func (r *receiver) count(path string, match func(map[string]any) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, h := range r.got {
		if h.path == path && match(h.body) {
			n++
		}
	}
	return n
}

func ofWebhookType(typ string) func(map[string]any) bool {
	return func(b map[string]any) bool { return b["type"] == typ }
}

func about(typ, connectionID string) func(map[string]any) bool {
	return func(b map[string]any) bool { return b["type"] == typ && b["connection_id"] == connectionID }
}

// startWithWebhooks runs a media plane whose webhooks go to r.
func startWithWebhooks(t *testing.T, r *receiver, cfg Config, timeout time.Duration) (*Media, string) {
	t.Helper()
	h, err := webhook.New(webhook.Config{
		AuthURL: r.srv.URL + "/auth", SessionURL: r.srv.URL + "/session", EventURL: r.srv.URL + "/event", StatsURL: r.srv.URL + "/stats",
		Timeout: timeout, Label: "WebRTC SFU sorad", Version: "test", NodeName: "sorad@127.0.0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close) // after the media plane's own cleanup (LIFO)
	cfg.Webhooks = h
	if cfg.ReleaseDelay == 0 {
		cfg.ReleaseDelay = time.Hour
	}
	return startMediaWith(t, newFakeCluster(), cfg)
}

// wantKeys fails unless body has every key.
func wantKeys(t *testing.T, what string, body map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := body[k]; !ok {
			t.Errorf("%s lacks %q: %v", what, k, body)
		}
	}
}

var commonKeys = []string{"id", "timestamp", "label", "version", "node_name"}

// The auth webhook's request carries the documented fields and header; an
// allowed answer's overrides reach the client, the API and the events.
func TestAuthWebhookAllowsWithOverrides(t *testing.T) {
	r := newReceiver(t)
	r.setAuth(func(b map[string]any) (int, string) {
		if b["client_id"] == "quiet" {
			return 200, `{"allowed":true,"signaling_notify":false,"connection_lifetime":2,"turn_tcp_only":true}`
		}
		return 200, `{"allowed":true,"client_id":"given-by-auth","video_codec_type":"VP8","video_bit_rate":300,
			"metadata":{"plan":"gold"},"event_metadata":{"user":42},"turn_tcp_only":true}`
	})
	m, url := startWithWebhooks(t, r, Config{}, 2*time.Second)
	c, err := connect(t, url, soraclient.Options{ChannelID: "auth", Role: "sendrecv", Audio: true, Video: true,
		Metadata: map[string]any{"token": "t"}, Extra: map[string]any{"sora_client": "Sora JavaScript SDK 2026.1.0", "environment": "test browser"}})
	if err != nil {
		t.Fatal(err)
	}
	auth := r.find("/auth", func(map[string]any) bool { return true })
	if got := auth.header.Get("sora-connection-id"); got != c.ConnectionID() || auth.body["connection_id"] != got {
		t.Errorf("sora-connection-id %q, body connection_id %v, offer %s", got, auth.body["connection_id"], c.ConnectionID())
	}
	wantKeys(t, "the auth webhook", auth.body, append(commonKeys, "role", "channel_id", "connection_id", "metadata", "multistream", "simulcast",
		"spotlight", "audio", "video", "data_channel_signaling", "ignore_disconnect_websocket", "sora_client",
		"channel_connections", "channel_sendrecv_connections", "channel_sendonly_connections", "channel_recvonly_connections")...)
	if sc, _ := auth.body["sora_client"].(map[string]any); sc["type"] != "Sora JavaScript SDK" || sc["version"] != "2026.1.0" || sc["environment"] != "test browser" {
		t.Errorf("sora_client %v", auth.body["sora_client"])
	}
	offer := c.Offer()
	if offer["client_id"] != "given-by-auth" || offer["video_codec_type"] != "VP8" || offer["video_bit_rate"] != float64(300) {
		t.Errorf("offer does not carry the overrides: %v", offer)
	}
	if md, _ := json.Marshal(offer["metadata"]); string(md) != `{"plan":"gold"}` {
		t.Errorf("offer metadata %s, want the auth webhook's", md)
	}
	list := m.ListChannelConnections("auth")
	if len(list) != 1 || string(list[0].EventMetadata) != `{"user":42}` || list[0].ClientID != "given-by-auth" {
		t.Errorf("ListChannelConnections %+v", list)
	}
	created := r.find("/event", about("connection.created", c.ConnectionID()))
	if em, _ := json.Marshal(created.body["event_metadata"]); string(em) != `{"user":42}` {
		t.Errorf("connection.created event_metadata %s", em)
	}

	// signaling_notify false: no notify at all; connection_lifetime: closed
	// with LIFETIME-EXPIRED.
	quiet, err := connect(t, url, soraclient.Options{ChannelID: "auth", Role: "recvonly", Audio: true, ClientID: "quiet"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-quiet.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("connection_lifetime 2 did not end the connection")
	}
	if ci := quiet.CloseInfo(); ci == nil || ci.Code != 1000 || ci.Reason != "LIFETIME-EXPIRED" {
		t.Errorf("close %+v, want 1000 LIFETIME-EXPIRED", ci)
	}
	for _, msg := range quiet.Messages() {
		if msg.Type == "notify" {
			t.Errorf("signaling_notify false, yet a notify came: %s", msg.Raw)
		}
	}
	destroyed := r.find("/event", about("connection.destroyed", quiet.ConnectionID()))
	if d, _ := destroyed.body["data"].(map[string]any); d["reason"] != "LIFETIME-EXPIRED" {
		t.Errorf("connection.destroyed data %v", destroyed.body["data"])
	}
}

// Every way the auth webhook can refuse, or fail, closes the socket with a
// clear reason, within the timeout.
func TestAuthWebhookRefusals(t *testing.T) {
	tests := []struct {
		name   string
		status int
		answer string
		delay  time.Duration
		code   int
		reason string
	}{
		{"denied with a reason", 200, `{"allowed":false,"reason":"NOT-A-MEMBER"}`, 0, 4403, "NOT-A-MEMBER"},
		{"denied without a reason", 200, `{"allowed":false}`, 0, 4403, "AUTH-WEBHOOK-DENIED"},
		{"500", 500, `oops`, 0, 4503, "AUTH-WEBHOOK-STATUS-500"},
		{"malformed JSON", 200, `{"allowed":`, 0, 4503, "AUTH-WEBHOOK-INVALID-RESPONSE"},
		{"allowed is not a boolean", 200, `{"allowed":"yes"}`, 0, 4503, "AUTH-WEBHOOK-INVALID-RESPONSE"},
		{"timeout", 200, `{"allowed":true}`, 3 * time.Second, 4503, "AUTH-WEBHOOK-TIMEOUT"},
		{"a bad override", 200, `{"allowed":true,"audio_codec_type":"NOPE"}`, 0, 4490, "INVALID-AUTH-WEBHOOK-OVERRIDE"},
		{"metadata too large", 200, `{"allowed":true,"metadata":"` + strings.Repeat("x", 70000) + `"}`, 0, 4490, "INVALID-AUTH-WEBHOOK-OVERRIDE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t)
			r.setAuth(func(map[string]any) (int, string) {
				time.Sleep(tt.delay)
				return tt.status, tt.answer
			})
			m, url := startWithWebhooks(t, r, Config{}, 500*time.Millisecond)
			start := time.Now()
			_, err := connect(t, url, soraclient.Options{ChannelID: "refused", Role: "sendrecv", Audio: true})
			var ce *soraclient.CloseError
			if !errors.As(err, &ce) || ce.Code != tt.code || !strings.HasPrefix(ce.Reason, tt.reason) {
				t.Fatalf("err %v, want %d %s", err, tt.code, tt.reason)
			}
			// A stalled webhook is given up at its timeout, not waited for.
			if took := time.Since(start); tt.delay > 0 && took >= tt.delay {
				t.Errorf("the refusal came after %v, when the webhook answered: the timeout was not kept", took)
			}
			if m.Connections() != 0 {
				t.Errorf("%d connections after a refusal", m.Connections())
			}
		})
	}
}

// The session and event webhooks of one session's life, and the stats
// webhook, with their documented fields.
func TestSessionEventAndStatsWebhooks(t *testing.T) {
	r := newReceiver(t)
	m, url := startWithWebhooks(t, r, Config{PingInterval: 100 * time.Millisecond, UserAgentStatsInterval: 100 * time.Millisecond, WebhookUpdateInterval: 300 * time.Millisecond}, 2*time.Second)
	pub, sub := publishAndReceive(t, url, "life")
	created := r.find("/session", ofWebhookType("session.created"))
	wantKeys(t, "session.created", created.body, append(commonKeys, "channel_id", "session_id", "multistream", "spotlight", "created_time", "created_timestamp")...)
	for _, c := range []*soraclient.Client{pub, sub} {
		e := r.find("/event", about("connection.created", c.ConnectionID()))
		wantKeys(t, "connection.created", e.body, append(commonKeys, "log_written", "role", "channel_id", "session_id", "client_id", "bundle_id", "connection_id", "multistream", "simulcast", "spotlight", "data")...)
		d, _ := e.body["data"].(map[string]any)
		wantKeys(t, "connection.created data", d, "minutes", "audio", "video", "channel_connections", "channel_sendrecv_connections",
			"channel_sendonly_connections", "channel_recvonly_connections", "turn_transport_type", "created_time", "created_timestamp",
			"total_received_bytes", "total_sent_bytes")
	}
	updated := r.find("/session", ofWebhookType("session.updated"))
	wantKeys(t, "session.updated", updated.body, "max_connections", "total_connections", "connections", "session_metadata")
	if md, _ := json.Marshal(updated.body["session_metadata"]); string(md) != `{"room":"blue"}` {
		t.Errorf("session.updated session_metadata %s, want session.created's answer", md)
	}
	r.find("/event", about("connection.updated", sub.ConnectionID()))
	st := r.find("/stats", func(b map[string]any) bool {
		s, _ := b["stats"].([]any)
		return about("connection.rtc", sub.ConnectionID())(b) && len(s) > 0
	})
	if st.header.Get("sora-stats-webhook-type") != "connection.rtc" {
		t.Errorf("stats webhook header %q", st.header.Get("sora-stats-webhook-type"))
	}
	wantKeys(t, "the stats webhook", st.body, append(commonKeys, "multistream", "simulcast", "spotlight", "role", "channel_id", "session_id", "client_id", "connection_id")...)

	if err := m.Disconnect(Selector{ChannelID: "life", ConnectionID: sub.ConnectionID()}, json.RawMessage(`{"why":"test"}`)); err != nil {
		t.Fatal(err)
	}
	d := r.find("/event", about("connection.destroyed", sub.ConnectionID()))
	data, _ := d.body["data"].(map[string]any)
	wantKeys(t, "connection.destroyed data", data, "destroyed_time", "destroyed_timestamp", "reason", "disconnect_api_reason")
	if api, _ := json.Marshal(data["disconnect_api_reason"]); data["reason"] != "DISCONNECTED-API" || string(api) != `{"why":"test"}` {
		t.Errorf("connection.destroyed data %v", data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	pd := r.find("/event", about("connection.destroyed", pub.ConnectionID()))
	if data, _ := pd.body["data"].(map[string]any); data["type_disconnect_reason"] != "NO-ERROR" || data["reason"] != "TYPE-DISCONNECT" {
		t.Errorf("the publisher's connection.destroyed data %v", pd.body["data"])
	}
	end := r.find("/session", ofWebhookType("session.destroyed"))
	wantKeys(t, "session.destroyed", end.body, "destroyed_time", "destroyed_timestamp", "max_connections", "total_connections", "connections", "session_metadata")
	conns, _ := end.body["connections"].([]any)
	var ids []string
	for _, c := range conns {
		e, _ := c.(map[string]any)
		if e["connection_destroyed_timestamp"] == nil {
			t.Errorf("a connection without connection_destroyed_timestamp in session.destroyed: %v", e)
		}
		ids = append(ids, e["connection_id"].(string))
	}
	slices.Sort(ids)
	want := []string{pub.ConnectionID(), sub.ConnectionID()}
	slices.Sort(want)
	if !slices.Equal(ids, want) || end.body["total_connections"] != float64(2) || end.body["max_connections"] != float64(2) {
		t.Errorf("session.destroyed connections %v total %v max %v", ids, end.body["total_connections"], end.body["max_connections"])
	}
	if n := r.count("/session", ofWebhookType("session.created")); n != 1 {
		t.Errorf("%d session.created", n)
	}
	// A delivery is counted once its answer is read: after the receiver
	// has recorded it.
	eventuallyTrue(t, "the webhook counters", func() bool {
		k := m.WebhookReport()
		return k.TotalAuthWebhookAllowed == 2 && k.TotalSuccessfulSessionWebhook >= 3 && k.TotalSuccessfulEventWebhook >= 4 && k.TotalSuccessfulStatsWebhook >= 1
	})
}

// A receiver that stalls does not slow connects (beyond the auth webhook)
// or media: session, event and stats webhooks wait in their queues.
func TestStalledWebhookReceiver(t *testing.T) {
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/auth" {
			_, _ = io.WriteString(w, `{"allowed":true}`)
			return
		}
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(stalled.Close)
	t.Cleanup(func() { close(release) })
	h, err := webhook.New(webhook.Config{AuthURL: stalled.URL + "/auth", SessionURL: stalled.URL + "/session", EventURL: stalled.URL + "/event",
		StatsURL: stalled.URL + "/stats", Timeout: time.Minute, QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	_, url := startMediaWith(t, newFakeCluster(), Config{ReleaseDelay: time.Hour, Webhooks: h})
	// The receiver answers nothing until the test ends (its webhook timeout
	// is a minute): a connect or media that waited on it would never
	// arrive within publishAndReceive's bounds.
	for i := range 3 {
		publishAndReceive(t, url, "stalled-"+string(rune('a'+i)))
	}
	if k := h.Counters(); k.SessionFailed+k.EventFailed == 0 {
		t.Errorf("no delivery dropped from the full queues: %+v", k)
	}
}

// spotlight.focused and spotlight.unfocused go to the event webhook, and
// session.created's spotlight_number answer changes the channel's.
func TestSpotlightEventWebhooks(t *testing.T) {
	r := newReceiver(t)
	r.sessionAnswer = `{"spotlight_number":3,"recording":true}`
	m, url := startWithWebhooks(t, r, Config{}, 2*time.Second)
	a, err := connect(t, url, soraclient.Options{ChannelID: "spot", Role: "sendrecv", Audio: true, Extra: map[string]any{"spotlight": true}})
	if err != nil {
		t.Fatal(err)
	}
	r.find("/event", about("connection.created", a.ConnectionID()))
	if err := m.FocusSpotlight("spot", a.ConnectionID(), true); err != nil {
		t.Fatal(err)
	}
	// The first sender of a channel is focused as it joins; the API fixes it.
	f := r.find("/event", func(b map[string]any) bool {
		return about("spotlight.focused", a.ConnectionID())(b) && b["fixed"] == true
	})
	wantKeys(t, "spotlight.focused", f.body, append(commonKeys, "channel_id", "session_id", "client_id", "connection_id", "spotlight_number", "fixed", "audio", "video")...)
	if err := m.UnfocusSpotlight("spot", a.ConnectionID()); err != nil {
		t.Fatal(err)
	}
	r.find("/event", about("spotlight.unfocused", a.ConnectionID()))
	s, err := m.session("spot")
	if err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "the spotlight number session.created's answer set", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.model.SpotlightNumber() == 3
	})
}

// Each connect override of an allowed answer, as the client and the API
// see it.
func TestAuthWebhookConnectOverrides(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		opts   soraclient.Options
		check  func(t *testing.T, m *Media, c *soraclient.Client)
		// hooks, when set, checks further with the receiver and the
		// signaling URL at hand.
		hooks func(t *testing.T, x overrideEnv)
	}{
		{"bundle_id", `{"bundle_id":"b9"}`, soraclient.Options{Role: "recvonly", Audio: true}, func(t *testing.T, _ *Media, c *soraclient.Client) {
			if c.Offer()["bundle_id"] != "b9" {
				t.Errorf("offer %v", c.Offer())
			}
		}, nil},
		{"audio off", `{"audio":false}`, soraclient.Options{Role: "sendrecv", Audio: true, Video: true}, func(t *testing.T, _ *Media, c *soraclient.Client) {
			if o := c.Offer(); o["audio"] != false || o["video"] != true {
				t.Errorf("offer %v", o)
			}
		}, nil},
		{"video off", `{"video":false}`, soraclient.Options{Role: "sendrecv", Audio: true, Video: true, VideoCodec: "VP8"}, func(t *testing.T, m *Media, c *soraclient.Client) {
			if o := c.Offer(); o["audio"] != true || o["video"] != false || o["video_codec_type"] != nil {
				t.Errorf("offer %v", o)
			}
			if sdp, _ := c.Offer()["sdp"].(string); strings.Contains(sdp, "m=video") {
				t.Errorf("the offer has a video m-line:\n%s", sdp)
			}
			if l := m.ListChannelConnections("over"); len(l) != 1 || l[0].Video != false {
				t.Errorf("ListChannelConnections %+v", l)
			}
		}, func(t *testing.T, x overrideEnv) {
			d, _ := x.r.find("/event", about("connection.created", x.c.ConnectionID())).body["data"].(map[string]any)
			if d["video"] != false || d["audio"] != true {
				t.Errorf("connection.created data %v", d)
			}
		}},
		{"audio codec and bit rate", `{"audio_codec_type":"OPUS","audio_bit_rate":24}`, soraclient.Options{Role: "sendrecv", Audio: true}, func(t *testing.T, _ *Media, c *soraclient.Client) {
			if o := c.Offer(); o["audio_codec_type"] != "OPUS" || o["audio"] != true {
				t.Errorf("offer %v", o)
			}
		}, func(t *testing.T, x overrideEnv) {
			d, _ := x.r.find("/event", about("connection.created", x.c.ConnectionID())).body["data"].(map[string]any)
			if d["audio_codec_type"] != "OPUS" || d["audio_bit_rate"] != float64(24) {
				t.Errorf("connection.created data %v", d)
			}
		}},
		{"simulcast", `{"simulcast":true}`, soraclient.Options{Role: "sendonly", Video: true, VideoCodec: "VP8"}, func(t *testing.T, _ *Media, c *soraclient.Client) {
			if o := c.Offer(); o["simulcast"] != true || o["encodings"] == nil {
				t.Errorf("offer %v", o)
			}
		}, nil},
		{"spotlight", `{"spotlight":true,"spotlight_number":2}`, soraclient.Options{Role: "sendrecv", Audio: true}, func(t *testing.T, _ *Media, c *soraclient.Client) {
			if o := c.Offer(); o["spotlight"] != true {
				t.Errorf("offer %v", o)
			}
			// The first sender is focused; the notify carries the
			// channel's spotlight number, which the override set.
			n := waitNotify(t, c, func(n map[string]any) bool {
				return n["event_type"] == "spotlight.focused" && n["connection_id"] == c.ConnectionID()
			})
			if n["spotlight_number"] != float64(2) {
				t.Errorf("spotlight.focused %v, want spotlight_number 2", n)
			}
		}, nil},
		{"event_metadata", `{"event_metadata":{"user":7}}`, soraclient.Options{Role: "recvonly", Audio: true}, func(t *testing.T, m *Media, c *soraclient.Client) {
			for what, l := range map[string][]ConnectionInfo{"ListConnections": m.ListConnections(), "ListChannelConnections": m.ListChannelConnections("over")} {
				if len(l) != 1 || string(l[0].EventMetadata) != `{"user":7}` {
					t.Errorf("%s %+v", what, l)
				}
			}
		}, func(t *testing.T, x overrideEnv) {
			created := x.r.find("/event", about("connection.created", x.c.ConnectionID()))
			if got := string(mustJSON(created.body["event_metadata"])); got != `{"user":7}` {
				t.Errorf("connection.created event_metadata %s", got)
			}
			if err := x.m.Disconnect(Selector{ChannelID: "over", ConnectionID: x.c.ConnectionID()}, nil); err != nil {
				t.Fatal(err)
			}
			destroyed := x.r.find("/event", about("connection.destroyed", x.c.ConnectionID()))
			if got := string(mustJSON(destroyed.body["event_metadata"])); got != `{"user":7}` {
				t.Errorf("connection.destroyed event_metadata %s", got)
			}
			end := x.r.find("/session", ofWebhookType("session.destroyed"))
			if cs, _ := end.body["connections"].([]any); len(cs) != 1 || !strings.Contains(string(mustJSON(cs[0])), `"event_metadata":{"user":7}`) {
				t.Errorf("session.destroyed connections %s", mustJSON(end.body["connections"]))
			}
		}},
		{"metadata as authz_metadata", `{"metadata":{"plan":"gold"}}`, soraclient.Options{Role: "sendrecv", Audio: true, Metadata: map[string]any{"token": "first"}},
			func(t *testing.T, _ *Media, c *soraclient.Client) {
				if got := string(mustJSON(c.Offer()["metadata"])); got != `{"plan":"gold"}` {
					t.Errorf("offer metadata %s", got)
				}
			}, func(t *testing.T, x overrideEnv) {
				// A second connection (given the same answer): each learns
				// the other's authz_metadata and authn_metadata.
				other, err := connect(t, x.url, soraclient.Options{ChannelID: "over", Role: "recvonly", Audio: true, Metadata: map[string]any{"token": "second"}})
				if err != nil {
					t.Fatal(err)
				}
				n := waitNotify(t, x.c, func(n map[string]any) bool {
					return n["event_type"] == "connection.created" && n["connection_id"] == other.ConnectionID()
				})
				if got := string(mustJSON(n["authz_metadata"])); got != `{"plan":"gold"}` || string(mustJSON(n["authn_metadata"])) != `{"token":"second"}` {
					t.Errorf("connection.created notify %s", mustJSON(n))
				}
				self := waitNotify(t, other, func(n map[string]any) bool {
					return n["event_type"] == "connection.created" && n["connection_id"] == other.ConnectionID()
				})
				if got := string(mustJSON(self["data"])); !strings.Contains(got, `"authz_metadata":{"plan":"gold"}`) || !strings.Contains(got, `"authn_metadata":{"token":"first"}`) {
					t.Errorf("the newcomer's connection.created data %s", got)
				}
				if err := other.Close(); err != nil {
					t.Fatal(err)
				}
				gone := waitNotify(t, x.c, func(n map[string]any) bool {
					return n["event_type"] == "connection.destroyed" && n["connection_id"] == other.ConnectionID()
				})
				if got := string(mustJSON(gone["authz_metadata"])); got != `{"plan":"gold"}` {
					t.Errorf("connection.destroyed notify %s", mustJSON(gone))
				}
			}},
		{"DataChannel signaling", `{"data_channel_signaling":true,"ignore_disconnect_websocket":true,"data_channels":[{"label":"#x","direction":"sendrecv"}]}`,
			soraclient.Options{Role: "sendrecv", Audio: true}, func(t *testing.T, _ *Media, c *soraclient.Client) {
				o := c.Offer()
				if o["data_channel_signaling"] != true || o["ignore_disconnect_websocket"] != true || !strings.Contains(string(mustJSON(o["data_channels"])), `"#x"`) {
					t.Errorf("offer %v", o)
				}
				select {
				case <-c.Switched():
				case <-time.After(10 * time.Second):
					t.Error("no switched")
				}
			}, nil},
		{"rpc_methods", `{"data_channel_signaling":true,"rpc_methods":["2025.2.0/ResetSpotlightRid","NotServed"]}`, soraclient.Options{Role: "sendrecv", Audio: true},
			func(t *testing.T, _ *Media, c *soraclient.Client) {
				if got := string(mustJSON(c.Offer()["rpc_methods"])); got != `["2025.2.0/ResetSpotlightRid"]` {
					t.Errorf("offer rpc_methods %s", got)
				}
				<-c.Switched()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := c.RPC(ctx, "2025.2.0/PutSignalingNotifyMetadata", map[string]any{"metadata": map[string]any{}})
				var re *soraclient.RPCError
				if !errors.As(err, &re) || re.Code != -32601 {
					t.Errorf("a method the auth webhook did not grant: %v", err)
				}
			}, nil},
		{"signaling_notify_metadata", `{"signaling_notify_metadata":{"seat":3}}`, soraclient.Options{Role: "recvonly", Audio: true}, func(t *testing.T, m *Media, c *soraclient.Client) {
			if md, err := m.GetSignalingNotifyMetadata("over", c.ConnectionID()); err != nil || string(md) != `{"seat":3}` {
				t.Errorf("metadata %s %v", md, err)
			}
		}, nil},
		{"user_agent_stats off", `{"user_agent_stats":false}`, soraclient.Options{Role: "recvonly", Audio: true}, func(t *testing.T, m *Media, c *soraclient.Client) {
			time.Sleep(500 * time.Millisecond) // several pings
			for _, msg := range c.Messages() {
				if msg.Type == "ping" && strings.Contains(string(msg.Raw), `"stats":true`) {
					t.Errorf("asked for statistics: %s", msg.Raw)
				}
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t)
			r.setAuth(func(map[string]any) (int, string) {
				return 200, `{"allowed":true,` + strings.TrimPrefix(tt.answer, "{")
			})
			m, url := startWithWebhooks(t, r, Config{PingInterval: 50 * time.Millisecond, UserAgentStatsInterval: 50 * time.Millisecond}, 2*time.Second)
			tt.opts.ChannelID = "over"
			c, err := connect(t, url, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, m, c)
			if tt.hooks != nil {
				tt.hooks(t, overrideEnv{m: m, r: r, url: url, c: c})
			}
		})
	}
}

// overrideEnv is what a case of TestAuthWebhookConnectOverrides checks
// with: the media plane, the webhook receiver, the signaling URL and the
// connection the answer was about.
type overrideEnv struct {
	m   *Media
	r   *receiver
	url string
	c   *soraclient.Client
}

// waitNotify waits up to 10 s for a notify to c matching match.
func waitNotify(t *testing.T, c *soraclient.Client, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	eventuallyTrue(t, "a matching notify", func() bool {
		for _, msg := range c.Messages() {
			var n map[string]any
			if msg.Type == "notify" && json.Unmarshal(msg.Raw, &n) == nil && match(n) {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// A connection that never connects (the client never answers the offer)
// is told to the event webhook as connection.failed.
func TestConnectionFailedEvent(t *testing.T) {
	r := newReceiver(t)
	_, url := startWithWebhooks(t, r, Config{ConnectTimeout: time.Second}, 2*time.Second)
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"type": "connect", "role": "recvonly", "channel_id": "silent", "audio": true, "video": false}); err != nil {
		t.Fatal(err)
	}
	var offer struct {
		Type         string `json:"type"`
		ConnectionID string `json:"connection_id"`
	}
	if err := ws.ReadJSON(&offer); err != nil || offer.Type != "offer" {
		t.Fatalf("offer %+v %v", offer, err)
	}
	f := r.find("/event", about("connection.failed", offer.ConnectionID))
	wantKeys(t, "connection.failed", f.body, append(commonKeys, "role", "channel_id", "session_id", "connection_id", "data")...)
	if d, _ := f.body["data"].(map[string]any); d["message"] != "ICE-CONNECTION-TIMEOUT" {
		t.Errorf("connection.failed data %v", f.body["data"])
	}
	if n := r.count("/event", about("connection.destroyed", offer.ConnectionID)); n != 0 {
		t.Errorf("a connection that never connected also got %d connection.destroyed", n)
	}
}

// An answer field sorad does not support is logged once, however many
// connects carry it, and changes nothing else. The codec parameter
// overrides are among them: sorad negotiates one set per codec, which the
// API and the event webhooks show unchanged.
func TestUnsupportedOverrideLoggedOnce(t *testing.T) {
	unsupported := map[string]string{
		"turn_tcp_only":     `true`,
		"audio_opus_params": `{"stereo":true}`,
		"video_vp9_params":  `{"profile_id":2}`,
		"video_av1_params":  `{"profile":1}`,
		"video_h264_params": `{"profile_level_id":"640c1f"}`,
	}
	answer := `{"allowed":true`
	for k, v := range unsupported {
		answer += `,"` + k + `":` + v
	}
	answer += "}"
	r := newReceiver(t)
	r.setAuth(func(map[string]any) (int, string) { return 200, answer })
	var logs syncBuffer
	m, url := startWithWebhooks(t, r, Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, 2*time.Second)
	var ids []string
	for range 3 {
		c, err := connect(t, url, soraclient.Options{ChannelID: "unsupported", Role: "recvonly", Audio: true, Video: true, VideoCodec: "VP9"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ConnectionID())
	}
	for k := range unsupported {
		if n := strings.Count(logs.String(), `"field":"`+k+`"`); n != 1 {
			t.Errorf("the unsupported field %s was logged %d times, want once", k, n)
		}
	}
	for _, info := range m.ListChannelConnections("unsupported") {
		if got := string(mustJSON(info.Video)); !strings.Contains(got, `"vp9_params":{"profile_id":0}`) {
			t.Errorf("ListChannelConnections video %s, want the VP9 parameters sorad negotiates", got)
		}
		if got := string(mustJSON(info.Audio)); got != `{"codec_type":"OPUS"}` {
			t.Errorf("ListChannelConnections audio %s", got)
		}
	}
	for _, id := range ids {
		e := r.find("/event", about("connection.created", id))
		d, _ := e.body["data"].(map[string]any)
		if got := string(mustJSON(d["video_vp9_params"])); got != `{"profile_id":0}` {
			t.Errorf("connection.created video_vp9_params %s, want the negotiated ones", got)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Unsupported answer fields are remembered up to a bound, each reported
// once.
func TestFirstUnsupportedIsBounded(t *testing.T) {
	m := &Media{}
	if !m.firstUnsupported("auth.x") || m.firstUnsupported("auth.x") {
		t.Fatal("a field is not reported exactly once")
	}
	n := 1
	for i := range 2 * maxUnsupported {
		if m.firstUnsupported("auth.f" + strconv.Itoa(i)) {
			n++
		}
	}
	if n != maxUnsupported {
		t.Fatalf("%d fields reported, want at most %d", n, maxUnsupported)
	}
}

// The auth webhook's simulcast_rid, simulcast_request_rid,
// spotlight_focus_rid and spotlight_unfocus_rid choose the layers a
// receiver gets, as its video packets show (every answer here is other
// than the default: r0 for simulcast, r1 focused and r0 unfocused).
func TestAuthWebhookLayerOverrides(t *testing.T) {
	r := newReceiver(t)
	r.setAuth(func(b map[string]any) (int, string) {
		switch b["client_id"] {
		case "rid":
			return 200, `{"allowed":true,"simulcast_rid":"r2"}`
		case "request-rid":
			return 200, `{"allowed":true,"simulcast_rid":"r2","simulcast_request_rid":"r1"}`
		case "spot-rids":
			return 200, `{"allowed":true,"spotlight_focus_rid":"r2","spotlight_unfocus_rid":"r1"}`
		}
		return 200, `{"allowed":true}`
	})
	_, url := startWithWebhooks(t, r, Config{}, 2*time.Second)
	join := func(channelID, role, clientID string, extra map[string]any) *soraclient.Client {
		t.Helper()
		c, err := connect(t, url, soraclient.Options{ChannelID: channelID, Role: role, ClientID: clientID, Audio: true, Video: true, VideoCodec: "VP8",
			Simulcast: true, RecordPackets: true, Extra: extra})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	pub := join("layers", "sendonly", "", nil)
	rid := join("layers", "recvonly", "rid", nil)
	req := join("layers", "recvonly", "request-rid", nil)
	waitVideoLayer(t, context.Background(), rid, pub, 2, 30)
	waitVideoLayer(t, context.Background(), req, pub, 1, 30)

	spot := map[string]any{"spotlight": true}
	focused := join("spot-layers", "sendonly", "", spot)
	// The first sender is focused; the second, with spotlight_number 1,
	// is not.
	waitNotify(t, focused, func(n map[string]any) bool {
		return n["event_type"] == "spotlight.focused" && n["connection_id"] == focused.ConnectionID()
	})
	unfocused := join("spot-layers", "sendonly", "", spot)
	o := join("spot-layers", "recvonly", "spot-rids", spot)
	waitVideoLayer(t, context.Background(), o, focused, 2, 30)
	waitVideoLayer(t, context.Background(), o, unfocused, 1, 30)
}
