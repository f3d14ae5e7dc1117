package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCommonFieldsAndHeaders(t *testing.T) {
	type kindCase struct {
		name   string
		send   func(t *testing.T, c *Client, payload any)
		url    func(cfg *Config, u string)
		header map[string]string // "" = must be absent
	}
	cases := []kindCase{{
		name: "auth",
		send: func(t *testing.T, c *Client, payload any) {
			if _, err := c.Auth(context.Background(), "CONN1", payload); err != nil {
				t.Fatalf("Auth: %v", err)
			}
		},
		url:    func(cfg *Config, u string) { cfg.AuthURL = u },
		header: map[string]string{"sora-connection-id": "CONN1", "sora-stats-webhook-type": ""},
	}}
	for _, k := range asyncKinds() {
		h := map[string]string{"sora-connection-id": "", "sora-stats-webhook-type": ""}
		if k.kind == kindStats {
			h["sora-stats-webhook-type"] = "connection.rtc"
		}
		cases = append(cases, kindCase{
			name:   k.kind.String(),
			send:   func(_ *testing.T, c *Client, payload any) { k.send(c, payload) },
			url:    k.url,
			header: h,
		})
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, answerJSON(200, `{"allowed":true}`))
			cfg := Config{Label: "WebRTC SFU Sora", Version: "2025.1.0", NodeName: "node-1"}
			tt.url(&cfg, rc.srv.URL+"/hook?key=k")
			c := newClient(t, cfg)
			tt.send(t, c, json.RawMessage(`{"type":"x.y","id":"caller","node_name":"caller","channel_id":"ch","big":12345678901234567890}`))
			eventually(t, "the request", func() bool { return len(rc.requests()) == 1 })
			r := rc.requests()[0]
			if r.method != http.MethodPost || r.proto != "HTTP/1.1" {
				t.Errorf("request %s %s, want POST HTTP/1.1", r.method, r.proto)
			}
			want := map[string]string{"content-type": "application/json", "user-agent": "sorad/2025.1.0"}
			for k, v := range tt.header {
				want[k] = v
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			checkCommon(t, r.body, "WebRTC SFU Sora", "2025.1.0", "node-1")
			if string(r.body["id"]) == `"caller"` {
				t.Error("the caller's id was kept")
			}
			for k, v := range map[string]string{"type": `"x.y"`, "channel_id": `"ch"`, "big": "12345678901234567890"} {
				if string(r.body[k]) != v {
					t.Errorf("%s = %s, want %s", k, r.body[k], v)
				}
			}
		})
	}
}

func TestAsyncOrderPerKind(t *testing.T) {
	const n = 100
	for _, k := range asyncKinds() {
		t.Run(k.kind.String(), func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			var cfg Config
			k.url(&cfg, rc.srv.URL)
			c := newClient(t, cfg)
			for i := range n {
				k.send(c, map[string]any{"type": "t", "seq": i})
			}
			eventually(t, "all deliveries", func() bool { return k.counters(c.Counters())[0] == n })
			for i, r := range rc.requests() {
				if string(r.body["seq"]) != fmt.Sprint(i) {
					t.Fatalf("request %d carries seq %s", i, r.body["seq"])
				}
			}
		})
	}
}

func TestStalledReceiverNeverBlocksCallers(t *testing.T) {
	const queueSize, extra = 4, 6
	for _, k := range asyncKinds() {
		t.Run(k.kind.String(), func(t *testing.T) {
			t.Parallel()
			arrived := make(chan struct{}, queueSize+extra+1)
			release := make(chan struct{})
			rc := newReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) {
				arrived <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			log, buf := debugLogger()
			cfg := Config{QueueSize: queueSize, Timeout: 5 * time.Second, Logger: log}
			k.url(&cfg, rc.srv.URL)
			c := newClient(t, cfg)

			k.send(c, map[string]any{"type": "first"})
			<-arrived // the worker is now stuck on the first delivery
			start := time.Now()
			for i := range queueSize + extra {
				k.send(c, map[string]any{"type": "more", "seq": i})
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("%d calls took %v with a stalled receiver", queueSize+extra, took)
			}
			if got := k.counters(c.Counters()); got != [3]int64{0, extra, 0} {
				t.Errorf("counters (successful, failed, ignored) %v while stalled, want [0 %d 0]", got, extra)
			}
			if got := strings.Count(buf.String(), "queue full"); got != extra {
				t.Errorf("%d drops logged, want %d:\n%s", got, extra, buf)
			}
			close(release)
			eventually(t, "the queued deliveries", func() bool { return k.counters(c.Counters())[0] == queueSize+1 })
			if got := k.counters(c.Counters()); got != [3]int64{queueSize + 1, extra, 0} {
				t.Errorf("counters %v, want [%d %d 0]", got, queueSize+1, extra)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		kind         asyncKind
		statuses     []int // answered in turn; the last one repeats
		wantAttempts int
		wantOK       bool
		minTime      time.Duration // the backoff waits
	}{
		{name: "session succeeds on the third attempt", kind: asyncKinds()[0], statuses: []int{503, 500, 200}, wantAttempts: 3, wantOK: true, minTime: 1500 * time.Millisecond},
		{name: "event gives up after two retries", kind: asyncKinds()[1], statuses: []int{503}, wantAttempts: 3, minTime: 1500 * time.Millisecond},
		{name: "stats is never retried", kind: asyncKinds()[2], statuses: []int{503, 200}, wantAttempts: 1},
		{name: "a 4xx is final", kind: asyncKinds()[0], statuses: []int{400, 200}, wantAttempts: 1},
		{name: "a 3xx is final", kind: asyncKinds()[1], statuses: []int{302, 200}, wantAttempts: 1},
		{name: "429 is retried", kind: asyncKinds()[1], statuses: []int{429, 204}, wantAttempts: 2, wantOK: true, minTime: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
				w.WriteHeader(tt.statuses[min(n, len(tt.statuses)-1)])
			})
			cfg := Config{MaxRetries: 2}
			tt.kind.url(&cfg, rc.srv.URL)
			c := newClient(t, cfg)
			start := time.Now()
			tt.kind.send(c, map[string]any{"type": "t"})
			eventually(t, "the outcome", func() bool {
				n := tt.kind.counters(c.Counters())
				return n[0]+n[1] == 1
			})
			took := time.Since(start)
			want := [3]int64{0, 1, 0}
			if tt.wantOK {
				want = [3]int64{1, 0, 0}
			}
			if got := tt.kind.counters(c.Counters()); got != want {
				t.Errorf("counters %v, want %v", got, want)
			}
			reqs := rc.requests()
			if len(reqs) != tt.wantAttempts {
				t.Fatalf("%d attempts, want %d", len(reqs), tt.wantAttempts)
			}
			for _, r := range reqs[1:] {
				if string(r.body["id"]) != string(reqs[0].body["id"]) {
					t.Errorf("a retry carries id %s, the first attempt %s", r.body["id"], reqs[0].body["id"])
				}
			}
			if took < tt.minTime-100*time.Millisecond {
				t.Errorf("outcome after %v, want the backoff of at least %v", took, tt.minTime)
			}
		})
	}
}

func TestSessionCreatedAnswer(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   map[string]string // nil: onAnswer not called
		failed bool
	}{
		{
			name: "fields", status: 200, body: `{"session_metadata": {"a": 1}, "spotlight_number": 2}`,
			want: map[string]string{"session_metadata": `{"a": 1}`, "spotlight_number": "2"},
		},
		{name: "empty object", status: 200, body: `{}`, want: map[string]string{}},
		{name: "empty body", status: 200, body: ``},
		{name: "not an object", status: 200, body: `[1]`},
		{name: "malformed", status: 200, body: `{"a":`},
		{name: "too large", status: 200, body: `{"pad":"` + strings.Repeat("x", 300) + `"}`},
		{name: "204", status: 204},
		{name: "500", status: 500, body: `{"a":1}`, failed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, answerJSON(tt.status, tt.body))
			c := newClient(t, Config{SessionURL: rc.srv.URL, MaxResponseSize: 256})
			var mu sync.Mutex
			var got map[string]json.RawMessage
			calls := 0
			c.SessionCreated(map[string]any{"type": "session.created"}, func(f map[string]json.RawMessage) {
				mu.Lock()
				defer mu.Unlock()
				got, calls = f, calls+1
			})
			c.Close() // delivers the queue and stops the worker
			mu.Lock()
			defer mu.Unlock()
			n := c.Counters()
			if tt.failed != (n.SessionFailed == 1) || tt.failed == (n.SessionSuccessful == 1) {
				t.Errorf("counters %+v, want failed=%v", n, tt.failed)
			}
			if tt.want == nil {
				if calls != 0 {
					t.Fatalf("onAnswer called with %v", got)
				}
				return
			}
			if calls != 1 || len(got) != len(tt.want) {
				t.Fatalf("onAnswer called %d times with %v, want once with %v", calls, got, tt.want)
			}
			for k, v := range tt.want {
				if string(got[k]) != v {
					t.Errorf("%s = %s, want %s", k, got[k], v)
				}
			}
		})
	}
}

func TestIgnoredWhenOff(t *testing.T) {
	c := newClient(t, Config{})
	c.Session(map[string]any{"type": "session.destroyed"})
	c.SessionCreated(map[string]any{"type": "session.created"}, func(map[string]json.RawMessage) {
		t.Error("onAnswer called for a kind that is off")
	})
	c.Event(map[string]any{"type": "connection.created"})
	c.Stats(map[string]any{"type": "connection.rtc"})
	c.Stats(map[string]any{"type": "connection.rtc"})
	want := Counters{SessionIgnored: 2, EventIgnored: 1, StatsIgnored: 2}
	if n := c.Counters(); n != want {
		t.Fatalf("counters %+v, want %+v", n, want)
	}
}

func TestInvalidPayloadFails(t *testing.T) {
	rc := newReceiver(t, nil)
	c := newClient(t, Config{SessionURL: rc.srv.URL, EventURL: rc.srv.URL, StatsURL: rc.srv.URL})
	c.Session([]int{1})
	c.Event("connection.created")
	c.Stats(map[string]any{"c": make(chan int)})
	c.Close()
	want := Counters{SessionFailed: 1, EventFailed: 1, StatsFailed: 1}
	if n := c.Counters(); n != want {
		t.Fatalf("counters %+v, want %+v", n, want)
	}
	if len(rc.requests()) != 0 {
		t.Fatal("an invalid payload was sent")
	}
}

func TestClose(t *testing.T) {
	t.Run("delivers what is queued", func(t *testing.T) {
		rc := newReceiver(t, nil)
		c := newClient(t, Config{EventURL: rc.srv.URL})
		for i := range 20 {
			c.Event(map[string]any{"type": "connection.created", "seq": i})
		}
		c.Close()
		if n := c.Counters(); n.EventSuccessful != 20 {
			t.Fatalf("counters %+v after Close, want 20 events delivered", n)
		}
	})

	t.Run("bounded with a stalled receiver", func(t *testing.T) {
		const timeout = 400 * time.Millisecond
		rc := newReceiver(t, func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() })
		log, buf := debugLogger()
		c := newClient(t, Config{
			SessionURL: rc.srv.URL, EventURL: rc.srv.URL, StatsURL: rc.srv.URL,
			Timeout: timeout, MaxRetries: 2, Logger: log,
		})
		for range 3 {
			c.Session(map[string]any{"type": "session.created"})
			c.Event(map[string]any{"type": "connection.created"})
			c.Stats(map[string]any{"type": "connection.rtc"})
		}
		start := time.Now()
		c.Close()
		if took := time.Since(start); took > timeout+time.Second {
			t.Errorf("Close took %v with a stalled receiver, want about %v", took, timeout)
		}
		want := Counters{SessionFailed: 3, EventFailed: 3, StatsFailed: 3}
		if n := c.Counters(); n != want {
			t.Errorf("counters %+v, want %+v", n, want)
		}
		if got := strings.Count(buf.String(), "webhook delivery failed"); got != 9 {
			t.Errorf("%d failures logged, want 9:\n%s", got, buf)
		}

		c.Close() // idempotent
		c.Event(map[string]any{"type": "connection.destroyed"})
		if n := c.Counters(); n.EventFailed != 4 {
			t.Errorf("an event after Close: counters %+v, want it failed", n)
		}
		if !strings.Contains(buf.String(), "client closed") {
			t.Errorf("the event after Close is not logged:\n%s", buf)
		}
	})
}

func TestLogRedaction(t *testing.T) {
	const secret = "client-secret"
	payload := map[string]any{
		"type":          "session.destroyed",
		"metadata":      map[string]any{"token": secret},
		"auth_metadata": secret,
		"connections":   []any{map[string]any{"connection_id": "C1", "event_metadata": secret}},
	}
	tests := []struct {
		name      string
		sensitive bool
	}{
		{name: "redacted", sensitive: false},
		{name: "sensitive logged", sensitive: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, answerJSON(200, `{"allowed":true,"metadata":{"granted":"`+secret+`"}}`))
			log, buf := debugLogger()
			c := newClient(t, Config{AuthURL: rc.srv.URL, SessionURL: rc.srv.URL, LogSensitive: tt.sensitive, Logger: log})
			if _, err := c.Auth(context.Background(), "C1", payload); err != nil {
				t.Fatalf("Auth: %v", err)
			}
			c.Session(payload)
			c.Close()
			for _, r := range rc.requests() {
				if strings.Count(string(r.raw), secret) != 3 {
					t.Errorf("the body sent was altered: %s", r.raw)
				}
			}
			logged := buf.String()
			if !strings.Contains(logged, "webhook delivered") || !strings.Contains(logged, "auth webhook answered") {
				t.Fatalf("deliveries not logged:\n%s", logged)
			}
			if tt.sensitive != strings.Contains(logged, secret) {
				t.Errorf("LogSensitive=%v but the secret logged=%v:\n%s", tt.sensitive, !tt.sensitive, logged)
			}
			if !tt.sensitive && !strings.Contains(logged, "REDACTED") {
				t.Errorf("no REDACTED in the log:\n%s", logged)
			}
		})
	}
}

func TestFailureLogHidesURL(t *testing.T) {
	rc := newReceiver(t, answerJSON(500, ``))
	log, buf := debugLogger()
	c := newClient(t, Config{EventURL: rc.srv.URL + "/hook?token=url-secret", Logger: log})
	c.Event(map[string]any{"type": "connection.created", "event_metadata": "meta-secret"})
	c.Close()
	logged := buf.String()
	var entry struct {
		Msg, Kind, ID, Type, Host, Error string
	}
	for _, line := range strings.Split(strings.TrimSpace(logged), "\n") {
		if err := json.Unmarshal([]byte(line), &entry); err == nil && entry.Msg == "webhook delivery failed" {
			break
		}
		entry.Msg = ""
	}
	if entry.Msg == "" {
		t.Fatalf("no failure logged:\n%s", logged)
	}
	if entry.Kind != "event" || !idPattern.MatchString(entry.ID) || entry.Type != "connection.created" ||
		entry.Host != rc.srv.Listener.Addr().String() || !strings.Contains(entry.Error, "500") {
		t.Errorf("failure logged as %+v", entry)
	}
	if strings.Contains(logged, "url-secret") || strings.Contains(logged, "meta-secret") {
		t.Errorf("a secret leaked into the log:\n%s", logged)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "ftp URL", cfg: Config{AuthURL: "ftp://example.com/auth"}},
		{name: "no scheme", cfg: Config{SessionURL: "example.com/hook?token=url-secret"}},
		{name: "no host", cfg: Config{EventURL: "http:///hook?token=url-secret"}},
		{name: "unparsable", cfg: Config{StatsURL: "http://exa mple.com/?token=url-secret"}},
		{name: "negative timeout", cfg: Config{Timeout: -time.Second}},
		{name: "negative retries", cfg: Config{MaxRetries: -1}},
		{name: "too many retries", cfg: Config{MaxRetries: 11}},
		{name: "negative queue", cfg: Config{QueueSize: -1}},
		{name: "negative response size", cfg: Config{MaxResponseSize: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("New accepted the config")
			}
			if strings.Contains(err.Error(), "url-secret") {
				t.Errorf("the error quotes the URL: %v", err)
			}
		})
	}
}

// Closing a client that never delivered anything is immediate.
func TestCloseIdle(t *testing.T) {
	c, err := New(Config{SessionURL: "http://127.0.0.1:1/", EventURL: "https://127.0.0.1:1/"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Close()
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Close took %v", took)
	}
}
