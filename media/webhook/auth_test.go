package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func authPayload() map[string]any {
	return map[string]any{
		"role": "sendrecv", "channel_id": "ch", "connection_id": "C1",
		"metadata": map[string]any{"access_token": "client-secret"},
	}
}

func TestAuthAnswers(t *testing.T) {
	const maxSize = 256
	tests := []struct {
		name    string
		answer  func(http.ResponseWriter, *http.Request, int)
		allowed bool
		reason  string            // of the answer
		fields  map[string]string // of the answer, raw JSON
		errWant string            // AuthError.Reason; "" for a valid answer
	}{
		{
			name:    "allowed with overrides",
			answer:  answerJSON(200, `{"allowed": true, "client_id": "c1", "metadata": {"k": "v"}, "audio": false}`),
			allowed: true,
			fields:  map[string]string{"client_id": `"c1"`, "metadata": `{"k": "v"}`, "audio": "false"},
		},
		{name: "allowed alone", answer: answerJSON(200, `{"allowed":true}`), allowed: true, fields: map[string]string{}},
		{
			name:   "denied with reason",
			answer: answerJSON(200, `{"allowed": false, "reason": "no ticket"}`),
			reason: "no ticket", fields: map[string]string{},
		},
		{name: "denied with null reason", answer: answerJSON(200, `{"allowed":false,"reason":null}`), fields: map[string]string{}},
		{name: "status 500", answer: answerJSON(500, `{"allowed":true}`), errWant: "AUTH-WEBHOOK-STATUS-500"},
		{name: "status 201", answer: answerJSON(201, `{"allowed":true}`), errWant: "AUTH-WEBHOOK-STATUS-201"},
		{name: "status 403", answer: answerJSON(403, ``), errWant: "AUTH-WEBHOOK-STATUS-403"},
		{
			name: "redirect is not followed",
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
					return
				}
				answerJSON(200, `{"allowed":true}`)(w, r, n)
			},
			errWant: "AUTH-WEBHOOK-STATUS-307",
		},
		{name: "malformed JSON", answer: answerJSON(200, `{"allowed": tru`), errWant: ReasonInvalidResponse},
		{name: "trailing data", answer: answerJSON(200, `{"allowed":true} {}`), errWant: ReasonInvalidResponse},
		{name: "array", answer: answerJSON(200, `[{"allowed":true}]`), errWant: ReasonInvalidResponse},
		{name: "null", answer: answerJSON(200, `null`), errWant: ReasonInvalidResponse},
		{name: "string", answer: answerJSON(200, `"allowed"`), errWant: ReasonInvalidResponse},
		{name: "empty body", answer: answerJSON(200, ``), errWant: ReasonInvalidResponse},
		{name: "missing allowed", answer: answerJSON(200, `{"reason":"x"}`), errWant: ReasonInvalidResponse},
		{name: "allowed is a string", answer: answerJSON(200, `{"allowed":"true"}`), errWant: ReasonInvalidResponse},
		{name: "allowed is null", answer: answerJSON(200, `{"allowed":null}`), errWant: ReasonInvalidResponse},
		{name: "reason is a number", answer: answerJSON(200, `{"allowed":false,"reason":3}`), errWant: ReasonInvalidResponse},
		{
			name:    "too large",
			answer:  answerJSON(200, `{"allowed":true,"pad":"`+strings.Repeat("x", maxSize)+`"}`),
			errWant: ReasonInvalidResponse,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, tt.answer)
			c := newClient(t, Config{AuthURL: rc.srv.URL, MaxResponseSize: maxSize, Timeout: 2 * time.Second})
			a, err := c.Auth(context.Background(), "C1", authPayload())
			n := c.Counters()
			if tt.errWant != "" {
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Reason != tt.errWant {
					t.Fatalf("Auth = %+v, %v; want an AuthError %s", a, err, tt.errWant)
				}
				if n != (Counters{AuthFailed: 1}) {
					t.Errorf("counters %+v, want one auth failed", n)
				}
				if got := len(rc.requests()); got != 1 {
					t.Errorf("receiver got %d requests, want 1 (no retry, no redirect)", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Auth: %v", err)
			}
			if a.Allowed != tt.allowed || a.Reason != tt.reason {
				t.Errorf("answer allowed=%v reason=%q, want %v %q", a.Allowed, a.Reason, tt.allowed, tt.reason)
			}
			if len(a.Fields) != len(tt.fields) {
				t.Errorf("fields %v, want %v", a.Fields, tt.fields)
			}
			for k, want := range tt.fields {
				if string(a.Fields[k]) != want {
					t.Errorf("field %s = %s, want %s", k, a.Fields[k], want)
				}
			}
			want := Counters{AuthSuccessful: 1, AuthAllowed: 1}
			if !tt.allowed {
				want = Counters{AuthSuccessful: 1, AuthDenied: 1}
			}
			if n != want {
				t.Errorf("counters %+v, want %+v", n, want)
			}
		})
	}
}

func TestAuthTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		ctx     func() (context.Context, context.CancelFunc)
		want    string
		wait    time.Duration // about how long Auth should wait
	}{
		{
			name:    "webhook timeout",
			timeout: 300 * time.Millisecond,
			ctx:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			want:    ReasonTimeout,
			wait:    300 * time.Millisecond,
		},
		{
			name:    "caller deadline",
			timeout: 5 * time.Second,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 200*time.Millisecond)
			},
			want: ReasonTimeout,
			wait: 200 * time.Millisecond,
		},
		{
			name:    "caller gone",
			timeout: 5 * time.Second,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(200*time.Millisecond, cancel)
				return ctx, cancel
			},
			want: ReasonCanceled,
			wait: 200 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stall := func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() }
			rc := newReceiver(t, stall)
			c := newClient(t, Config{AuthURL: rc.srv.URL, Timeout: tt.timeout})
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := c.Auth(ctx, "C1", authPayload())
			took := time.Since(start)
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Reason != tt.want {
				t.Fatalf("Auth error %v, want %s", err, tt.want)
			}
			if took < tt.wait-50*time.Millisecond || took > tt.wait+time.Second {
				t.Errorf("Auth returned after %v, want about %v", took, tt.wait)
			}
			if n := c.Counters(); n.AuthFailed != 1 {
				t.Errorf("counters %+v, want one auth failed", n)
			}
		})
	}
}

func TestAuthUnreachableHidesURL(t *testing.T) {
	rc := newReceiver(t, nil)
	target := rc.srv.URL + "/auth?token=url-secret"
	rc.srv.Close()
	log, buf := debugLogger()
	c := newClient(t, Config{AuthURL: target, Logger: log})
	_, err := c.Auth(context.Background(), "C1", authPayload())
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Reason != ReasonUnreachable {
		t.Fatalf("Auth error %v, want %s", err, ReasonUnreachable)
	}
	if strings.Contains(err.Error(), "url-secret") || strings.Contains(buf.String(), "url-secret") {
		t.Errorf("the URL query leaked: error %q, log %s", err, buf)
	}
	if !strings.Contains(buf.String(), rc.srv.Listener.Addr().String()) {
		t.Errorf("the log does not name the host: %s", buf)
	}
}

func TestAuthDisabledAndClosed(t *testing.T) {
	c := newClient(t, Config{})
	if c.AuthEnabled() {
		t.Fatal("AuthEnabled without AuthURL")
	}
	_, err := c.Auth(context.Background(), "C1", authPayload())
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Reason != ReasonDisabled || !errors.Is(err, ErrDisabled) {
		t.Fatalf("Auth error %v, want ErrDisabled", err)
	}

	rc := newReceiver(t, answerJSON(200, `{"allowed":true}`))
	c = newClient(t, Config{AuthURL: rc.srv.URL})
	if !c.AuthEnabled() {
		t.Fatal("AuthEnabled false with AuthURL")
	}
	c.Close()
	if _, err := c.Auth(context.Background(), "C1", authPayload()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Auth after Close: %v, want ErrClosed", err)
	}
}

func TestAuthInvalidPayload(t *testing.T) {
	rc := newReceiver(t, answerJSON(200, `{"allowed":true}`))
	c := newClient(t, Config{AuthURL: rc.srv.URL})
	_, err := c.Auth(context.Background(), "C1", []string{"not", "an", "object"})
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Reason != ReasonInvalidRequest {
		t.Fatalf("Auth error %v, want %s", err, ReasonInvalidRequest)
	}
	if len(rc.requests()) != 0 {
		t.Error("an invalid payload was sent")
	}
}

func TestAuthCloseAbortsInFlight(t *testing.T) {
	stall := func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() }
	rc := newReceiver(t, stall)
	c := newClient(t, Config{AuthURL: rc.srv.URL, Timeout: 5 * time.Second})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Auth(context.Background(), "C1", authPayload())
		errc <- err
	}()
	eventually(t, "the auth request", func() bool { return len(rc.requests()) == 1 })
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Auth error %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not abort the auth request")
	}
}

func FuzzParseAuthAnswer(f *testing.F) {
	for _, s := range []string{
		`{"allowed":true}`, `{"allowed":false,"reason":"x"}`, `{"allowed":true,"metadata":{"a":[1,2]}}`,
		`{"allowed":null}`, `[]`, `null`, ``, `{"allowed":true,"allowed":false}`, `{"reason":1,"allowed":false}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := parseAuthAnswer(body)
		if err != nil {
			if !errors.Is(err, errInvalidResponse) {
				t.Fatalf("error %v is not an invalid response", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if _, ok := a.Fields["allowed"]; ok {
			t.Fatal("allowed left in Fields")
		}
		if _, ok := a.Fields["reason"]; ok {
			t.Fatal("reason left in Fields")
		}
		if a.Fields == nil {
			t.Fatal("nil Fields")
		}
	})
}
