package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects log output written by workers while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// debugLogger logs everything, as JSON, into the returned buffer.
func debugLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// request is what a test receiver saw.
type request struct {
	method, proto string
	header        http.Header
	body          map[string]json.RawMessage
	raw           []byte
}

// receiver is a webhook receiver that records every request and answers
// with answer.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []request
	answer func(w http.ResponseWriter, r *http.Request, n int) // n counts from 0
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := request{method: r.Method, proto: r.Proto, header: r.Header.Clone(), raw: raw}
	_ = json.Unmarshal(raw, &req.body)
	rc.mu.Lock()
	n := len(rc.got)
	rc.got = append(rc.got, req)
	rc.mu.Unlock()
	if rc.answer != nil {
		rc.answer(w, r, n)
	}
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.got...)
}

// answerJSON answers every request with status and body.
func answerJSON(status int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// newClient starts a client that the test closes at its end.
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// eventually polls cond until it holds or the test waited too long.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// asyncKind is a notification kind with its entry point, its URL setting
// and its counters (successful, failed, ignored).
type asyncKind struct {
	kind     kind
	send     func(c *Client, payload any)
	url      func(cfg *Config, url string)
	counters func(Counters) [3]int64
}

func asyncKinds() []asyncKind {
	return []asyncKind{
		{
			kind: kindSession,
			send: (*Client).Session,
			url:  func(cfg *Config, u string) { cfg.SessionURL = u },
			counters: func(n Counters) [3]int64 {
				return [3]int64{n.SessionSuccessful, n.SessionFailed, n.SessionIgnored}
			},
		},
		{
			kind: kindEvent,
			send: (*Client).Event,
			url:  func(cfg *Config, u string) { cfg.EventURL = u },
			counters: func(n Counters) [3]int64 {
				return [3]int64{n.EventSuccessful, n.EventFailed, n.EventIgnored}
			},
		},
		{
			kind: kindStats,
			send: (*Client).Stats,
			url:  func(cfg *Config, u string) { cfg.StatsURL = u },
			counters: func(n Counters) [3]int64 {
				return [3]int64{n.StatsSuccessful, n.StatsFailed, n.StatsIgnored}
			},
		},
	}
}
