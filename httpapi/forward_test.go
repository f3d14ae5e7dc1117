package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sorad/sorad/cluster"
)

// TestForwardedCallsCarryNoToken: a call made with the operator's bearer
// token and forwarded to the node in charge takes its target, content type
// and body there, and neither the token nor any other header.
func TestForwardedCallsCarryNoToken(t *testing.T) {
	const token = "operator-s3cret"
	cfg := baseConfig()
	cfg.BearerToken = token
	fc := &fakeCluster{owner: "owner@127.0.0.9"}
	s := New(cfg, fc, &fakeMedia{})
	body := `{"channel_id":"elsewhere"}`
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("x-sora-target", "Sora_20201013.ListChannelConnections")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Cookie", "session="+token)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"from":"owner"}` || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("forwarded call: %d %s %v", rec.Code, rec.Body, rec.Header())
	}
	want := cluster.APICall{Target: "Sora_20201013.ListChannelConnections", ContentType: "application/json", Body: []byte(body)}
	if len(fc.calls) != 1 || fc.calls[0].Target != want.Target || fc.calls[0].ContentType != want.ContentType || string(fc.calls[0].Body) != body {
		t.Fatalf("forwarded %+v, want %+v", fc.calls, want)
	}
	if c := fc.calls[0]; strings.Contains(c.Target+c.ContentType+string(c.Body), token) {
		t.Fatalf("the token travelled with the call: %+v", c)
	}
}

// TestAnswerForwarded: a call forwarded here is answered with the dispatch
// of a call made here, without a token and without forwarding it again.
func TestAnswerForwarded(t *testing.T) {
	cfg := baseConfig()
	cfg.BearerToken = "operator-s3cret"
	fc := &fakeCluster{owner: "owner@127.0.0.9"}
	s := New(cfg, fc, &fakeMedia{})
	tests := []struct {
		name   string
		call   cluster.APICall
		status int
		answer string
	}{
		{"a channel another node is in charge of is answered here",
			cluster.APICall{Target: "Sora_20201005.ResetRtpStream", ContentType: "application/json", Body: []byte(`{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`)},
			200, `"recv_connection_id":"R"`},
		{"missing target", cluster.APICall{Body: []byte(`{}`)}, 400, "MISSING-TARGET"},
		{"unknown target", cluster.APICall{Target: "Sora_X.Nope", Body: []byte(`{}`)}, 400, "UNKNOWN-TARGET"},
		{"body too large", cluster.APICall{Target: "Sora_20201005.ResetRtpStream", Body: []byte(strings.Repeat(" ", testMaxBody+1))}, 400, "REQUEST-BODY-TOO-LARGE"},
		{"bad body", cluster.APICall{Target: "Sora_20201005.ResetRtpStream", Body: []byte(`{`)}, 400, "INVALID-JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans := s.AnswerForwarded(context.Background(), tt.call)
			if ans.Status != tt.status || ans.ContentType != "application/json" || !strings.Contains(string(ans.Body), tt.answer) {
				t.Fatalf("%d %s %s, want %d %s", ans.Status, ans.ContentType, ans.Body, tt.status, tt.answer)
			}
		})
	}
	if len(fc.calls) != 0 {
		t.Fatalf("a forwarded call was forwarded again: %+v", fc.calls)
	}
}

// channelIDReference is channelIDOf as decodeBody reads a body: members by
// exact name, the last of duplicates winning.
func channelIDReference(body []byte) (string, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return "", false
	}
	var id string
	if json.Unmarshal(fields["channel_id"], &id) != nil || id == "" {
		return "", false
	}
	raw := bytes.TrimSpace(fields["channel_id"])
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	return id, true
}

var channelIDBodies = []string{
	`{"channel_id":"c"}`,
	` { "channel_id" : "c" } `,
	`{"a":{"channel_id":"nested"},"b":["channel_id","x"],"channel_id":"top"}`,
	`{"channel_id":"first","channel_id":"last"}`,
	`{"channel_id":"first","channel_id":null}`,
	`{"channel_id":"first","channel_id":1}`,
	`{"channel_id":""}`,
	`{"channel_id":"a\"b\\c\u00e9"}`,
	`{"channel\u005fid":"escaped name"}`,
	`{"Channel_Id":"other case"}`,
	`{"x":"}\"{","channel_id":"after a tricky string"}`,
	`{"n":-1.5e3,"t":true,"f":false,"z":null,"channel_id":"c"}`,
	`["channel_id","c"]`,
	`"channel_id"`,
	`{"channel_id":"c"`,
	`{"channel_id":"c"} trailing`,
	`{}`,
	``,
	"{\"channel_id\":\"\xff\"}",
}

func TestChannelIDOf(t *testing.T) {
	for _, body := range channelIDBodies {
		id, ok := channelIDOf([]byte(body))
		wantID, wantOK := channelIDReference([]byte(body))
		if id != wantID || ok != wantOK {
			t.Errorf("%s: %q %v, want %q %v", body, id, ok, wantID, wantOK)
		}
	}
	body := []byte(`{"channel_id":"c","connection_id":"x"}`)
	if n := testing.AllocsPerRun(100, func() { channelIDOf(body) }); n > 1 {
		t.Errorf("%v allocations to read a channel_id, want at most 1 (the string)", n)
	}
}

func FuzzChannelIDOf(f *testing.F) {
	for _, body := range channelIDBodies {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, ok := channelIDOf(body)
		wantID, wantOK := channelIDReference(body)
		if id != wantID || ok != wantOK {
			t.Fatalf("%q: %q %v, want %q %v", body, id, ok, wantID, wantOK)
		}
	})
}
