package webhook

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

var idPattern = regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if !idPattern.MatchString(id) {
			t.Fatalf("id %q is not 26 Crockford base32 characters of 128 bits", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestBuild(t *testing.T) {
	c := &Client{cfg: Config{Label: "WebRTC SFU Sora", Version: "2025.1.0", NodeName: "node-1"}}
	tests := []struct {
		name     string
		payload  any
		wantErr  bool
		wantType string
		kept     map[string]string // caller fields that must arrive as is
	}{
		{
			name:     "map",
			payload:  map[string]any{"type": "session.created", "channel_id": "ch"},
			wantType: "session.created",
			kept:     map[string]string{"type": `"session.created"`, "channel_id": `"ch"`},
		},
		{
			name: "struct",
			payload: struct {
				Type string `json:"type"`
				N    int    `json:"n"`
			}{"connection.created", 3},
			wantType: "connection.created",
			kept:     map[string]string{"n": "3"},
		},
		{
			name:     "raw message keeps big numbers",
			payload:  json.RawMessage(`{"type":"connection.rtc","big":12345678901234567890}`),
			wantType: "connection.rtc",
			kept:     map[string]string{"big": "12345678901234567890"},
		},
		{
			name:    "common fields are replaced",
			payload: map[string]any{"id": "mine", "label": "mine", "version": "mine", "node_name": "mine", "timestamp": "mine"},
		},
		{name: "no type", payload: map[string]any{}},
		{name: "array", payload: []int{1}, wantErr: true},
		{name: "null", payload: nil, wantErr: true},
		{name: "nil map", payload: map[string]any(nil), wantErr: true},
		{name: "string", payload: "x", wantErr: true},
		{name: "unmarshalable", payload: map[string]any{"c": make(chan int)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.build(tt.payload)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("build succeeded: %s", out.body)
				}
				return
			}
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if out.typ != tt.wantType {
				t.Errorf("type %q, want %q", out.typ, tt.wantType)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal(out.body, &got); err != nil {
				t.Fatalf("body %s: %v", out.body, err)
			}
			checkCommon(t, got, "WebRTC SFU Sora", "2025.1.0", "node-1")
			if string(got["id"]) != `"`+out.id+`"` {
				t.Errorf("id %s, want %q", got["id"], out.id)
			}
			for k, want := range tt.kept {
				if string(got[k]) != want {
					t.Errorf("%s = %s, want %s", k, got[k], want)
				}
			}
		})
	}
}

// checkCommon checks the common fields of a request body.
func checkCommon(t *testing.T, body map[string]json.RawMessage, label, version, node string) {
	t.Helper()
	str := func(k string) string {
		var s string
		if err := json.Unmarshal(body[k], &s); err != nil {
			t.Errorf("%s = %s: not a string", k, body[k])
		}
		return s
	}
	if id := str("id"); !idPattern.MatchString(id) {
		t.Errorf("id %q is not a webhook id", id)
	}
	ts := str("timestamp")
	at, err := time.Parse(TimestampLayout, ts)
	if err != nil || len(ts) != len(TimestampLayout) {
		t.Errorf("timestamp %q: not in layout %s: %v", ts, TimestampLayout, err)
	} else if d := time.Since(at); d < -time.Second || d > time.Minute {
		t.Errorf("timestamp %q is %v away from now", ts, d)
	}
	for k, want := range map[string]string{"label": label, "version": version, "node_name": node} {
		if got := str(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "nothing sensitive", in: `{"type":"x","n":1}`, want: `{"type":"x","n":1}`},
		{
			name: "top level",
			in:   `{"metadata":{"token":"s"},"auth_metadata":"s","authn_metadata":1,"authz_metadata":[1],"event_metadata":null,"session_metadata":true,"type":"x"}`,
			want: `{"auth_metadata":"REDACTED","authn_metadata":"REDACTED","authz_metadata":"REDACTED","event_metadata":"REDACTED","metadata":"REDACTED","session_metadata":"REDACTED","type":"x"}`,
		},
		{
			name: "nested in arrays and objects",
			in:   `{"connections":[{"connection_id":"a","event_metadata":{"s":1}}],"data":{"metadata":"s"}}`,
			want: `{"connections":[{"connection_id":"a","event_metadata":"REDACTED"}],"data":{"metadata":"REDACTED"}}`,
		},
		{name: "not an object", in: `[1,"metadata"]`, want: `[1,"metadata"]`},
		{name: "invalid", in: `{"metadata":`, wantErr: true},
		{name: "invalid scalar", in: `tru`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := redact([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("redact(%s) = %s, want an error", tt.in, got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("redact(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestLogBodyNeverShowsUnreadableBody(t *testing.T) {
	v := logBody{body: []byte(`secret-not-json`)}.LogValue().String()
	if strings.Contains(v, "secret") {
		t.Fatalf("logged %q", v)
	}
}
