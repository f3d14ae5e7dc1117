package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/media"
)

// fakeCluster says owner is in charge of every channel (this node when
// owner is empty) and records what it forwards there.
type fakeCluster struct {
	Cluster
	owner     string
	forwarded []string
	calls     []cluster.APICall
}

func (f *fakeCluster) ChannelOwner(string) (string, bool) { return f.owner, f.owner != "" }

func (f *fakeCluster) ForwardAPI(_ context.Context, node string, call cluster.APICall) (cluster.APIAnswer, error) {
	f.forwarded = append(f.forwarded, node+" "+call.Target+" "+string(call.Body))
	f.calls = append(f.calls, call)
	return cluster.APIAnswer{Status: 200, ContentType: "application/json", Body: []byte(`{"from":"owner"}`)}, nil
}

// fakeMedia records the layer calls it gets and answers each with err.
type fakeMedia struct {
	Media
	calls []string
	err   error
}

func (f *fakeMedia) record(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeMedia) RequestRtpStream(ch, recv, send string, rid media.RID) error {
	return f.record("RequestRtpStream %s %s %s %s", ch, recv, send, rid)
}
func (f *fakeMedia) ResetRtpStream(ch, recv, send string) error {
	return f.record("ResetRtpStream %s %s %s", ch, recv, send)
}
func (f *fakeMedia) PauseRtpStream(ch, recv, send string) error {
	return f.record("PauseRtpStream %s %s %s", ch, recv, send)
}
func (f *fakeMedia) ResumeRtpStream(ch, recv, send string) error {
	return f.record("ResumeRtpStream %s %s %s", ch, recv, send)
}
func (f *fakeMedia) ListPauseRtpStreams(ch string) ([]media.PausedStream, error) {
	return []media.PausedStream{{ChannelID: ch, RecvConnectionID: "R", Role: media.RoleRecvonly, SendConnectionID: "S"}}, f.record("ListPauseRtpStreams %s", ch)
}
func (f *fakeMedia) ChangeSpotlightNumber(ch string, n int) error {
	return f.record("ChangeSpotlightNumber %s %d", ch, n)
}
func (f *fakeMedia) FocusSpotlight(ch, conn string, fixed bool) error {
	return f.record("FocusSpotlight %s %s %v", ch, conn, fixed)
}
func (f *fakeMedia) UnfocusSpotlight(ch, conn string) error {
	return f.record("UnfocusSpotlight %s %s", ch, conn)
}
func (f *fakeMedia) BatchRequestSpotlightRID(ch string, rs []media.SpotlightRIDRequest) error {
	var items []string
	for _, r := range rs {
		items = append(items, fmt.Sprintf("%s>%s:%s/%s", r.Send, r.Recv, r.FocusRID, r.UnfocusRID))
	}
	return f.record("BatchRequestSpotlightRID %s %s", ch, strings.Join(items, ","))
}
func (f *fakeMedia) ResetSpotlightRID(ch, recv, send string) error {
	return f.record("ResetSpotlightRID %s %s %s", ch, recv, send)
}
func (f *fakeMedia) ChangeUpstreamVideoBitRate(ch, conn string, kbps int) error {
	return f.record("ChangeUpstreamVideoBitRate %s %s %d", ch, conn, kbps)
}

func callFake(t *testing.T, s *Server, target, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/", strings.NewReader(body))
	req.Header.Set("x-sora-target", target)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func TestLayerTargets(t *testing.T) {
	tests := []struct {
		target, body string
		status       int
		answer       string // exact JSON answer, or the error_type
		call         string // what media was asked; "" for nothing
	}{
		// RequestRtpStream / ResetRtpStream
		{"Sora_20201005.RequestRtpStream", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S","rid":"r1"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","rid":"r1","send_connection_id":"S"}`, "RequestRtpStream c R S r1"},
		{"Sora_20201005.RequestRtpStream", `{"channel_id":"c","recv_connection_id":"R","rid":"r2"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","rid":"r2"}`, "RequestRtpStream c R  r2"},
		{"Sora_20201005.RequestRtpStream", `{"channel_id":"c","recv_connection_id":"R","rid":"none"}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20201005.RequestRtpStream", `{"channel_id":"c","recv_connection_id":"R"}`, 400, "MISSING-FIELD", ""},
		{"Sora_20201005.RequestRtpStream", `{"channel_id":"c","recv_connection_id":7,"rid":"r0"}`, 400, "INVALID-FIELD-TYPE", ""},
		{"Sora_20201005.ResetRtpStream", `{"channel_id":"c","recv_connection_id":"R"}`, 200, `{"channel_id":"c","recv_connection_id":"R"}`, "ResetRtpStream c R "},
		{"Sora_20201005.ResetRtpStream", `{"channel_id":"c","send_connection_id":"S"}`, 400, "MISSING-FIELD", ""},
		// Pause / Resume / List
		{"Sora_20200401.PauseRtpStream", `{"channel_id":"sora","recv_connection_id":"VTGYC92AZX6M72K860BPREFTMC","send_connection_id":"3X0W1C23KS1TQAAYMKA9TXJS4G"}`, 200,
			`{"channel_id":"sora","recv_connection_id":"VTGYC92AZX6M72K860BPREFTMC","send_connection_id":"3X0W1C23KS1TQAAYMKA9TXJS4G"}`, "PauseRtpStream sora VTGYC92AZX6M72K860BPREFTMC 3X0W1C23KS1TQAAYMKA9TXJS4G"},
		{"Sora_20200401.PauseRtpStream", `{"channel_id":"c","recv_connection_id":"R"}`, 400, "MISSING-FIELD", ""},
		{"Sora_20200401.ResumeRtpStream", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`, "ResumeRtpStream c R S"},
		{"Sora_20200401.ResumeRtpStream", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":""}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20200401.ListPauseRtpStreams", `{"channel_id":"c"}`, 200,
			`[{"channel_id":"c","recv_connection_id":"R","role":"recvonly","send_connection_id":"S"}]`, "ListPauseRtpStreams c"},
		{"Sora_20200401.ListPauseRtpStreams", `{}`, 400, "MISSING-FIELD", ""},
		// Spotlight
		{"Sora_20200807.ChangeSpotlightNumber", `{"channel_id":"c","spotlight_number":8}`, 200, `{"channel_id":"c","spotlight_number":8}`, "ChangeSpotlightNumber c 8"},
		{"Sora_20200807.ChangeSpotlightNumber", `{"channel_id":"c","spotlight_number":0}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20200807.ChangeSpotlightNumber", `{"channel_id":"c","spotlight_number":9}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20200807.ChangeSpotlightNumber", `{"channel_id":"c","spotlight_number":"2"}`, 400, "INVALID-FIELD-TYPE", ""},
		{"Sora_20200807.ChangeSpotlightNumber", `{"channel_id":"c","spotlight_number":1.5}`, 400, "INVALID-FIELD-TYPE", ""},
		{"Sora_20200807.FocusSpotlight", `{"channel_id":"sora","connection_id":"74Z2G1JS7S67DE226T8R1H3YGW"}`, 200,
			`{"channel_id":"sora","connection_id":"74Z2G1JS7S67DE226T8R1H3YGW"}`, "FocusSpotlight sora 74Z2G1JS7S67DE226T8R1H3YGW false"},
		{"Sora_20200807.FocusSpotlightFixed", `{"channel_id":"sora","connection_id":"7QSNT842FS0J9E6BZDBC2DRYY8"}`, 200,
			`{"channel_id":"sora","connection_id":"7QSNT842FS0J9E6BZDBC2DRYY8"}`, "FocusSpotlight sora 7QSNT842FS0J9E6BZDBC2DRYY8 true"},
		{"Sora_20200807.UnfocusSpotlight", `{"channel_id":"c","connection_id":"X"}`, 200, `{"channel_id":"c","connection_id":"X"}`, "UnfocusSpotlight c X"},
		{"Sora_20200807.UnfocusSpotlight", `{"channel_id":"c"}`, 400, "MISSING-FIELD", ""},
		{"Sora_20211215.RequestSpotlightRid", `{"channel_id":"c","recv_connection_id":"R","spotlight_focus_rid":"r2","spotlight_unfocus_rid":"none"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","spotlight_focus_rid":"r2","spotlight_unfocus_rid":"none"}`, "BatchRequestSpotlightRID c >R:r2/none"},
		{"Sora_20211215.RequestSpotlightRid", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S","spotlight_focus_rid":"r1","spotlight_unfocus_rid":"r0"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S","spotlight_focus_rid":"r1","spotlight_unfocus_rid":"r0"}`, "BatchRequestSpotlightRID c S>R:r1/r0"},
		{"Sora_20211215.RequestSpotlightRid", `{"channel_id":"c","recv_connection_id":"R","spotlight_focus_rid":"r3","spotlight_unfocus_rid":"r0"}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20211215.RequestSpotlightRid", `{"channel_id":"c","recv_connection_id":"R","spotlight_focus_rid":"r1"}`, 400, "MISSING-FIELD", ""},
		{"Sora_20211215.ResetSpotlightRid", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`, 200,
			`{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`, "ResetSpotlightRID c R S"},
		{"Sora_20211215.BatchRequestSpotlightRid", `{"channel_id":"c","item_list":[{"recv_connection_id":"R","send_connection_id":"S","spotlight_focus_rid":"r2","spotlight_unfocus_rid":"r0"},{"recv_connection_id":"Q","spotlight_focus_rid":"r1","spotlight_unfocus_rid":"none"}]}`, 200,
			`{"channel_id":"c","item_list":[{"recv_connection_id":"R","send_connection_id":"S","spotlight_focus_rid":"r2","spotlight_unfocus_rid":"r0"},{"recv_connection_id":"Q","spotlight_focus_rid":"r1","spotlight_unfocus_rid":"none"}]}`,
			"BatchRequestSpotlightRID c S>R:r2/r0,>Q:r1/none"},
		{"Sora_20211215.BatchRequestSpotlightRid", `{"channel_id":"c","item_list":[]}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20211215.BatchRequestSpotlightRid", `{"channel_id":"c","item_list":{}}`, 400, "INVALID-FIELD-TYPE", ""},
		{"Sora_20211215.BatchRequestSpotlightRid", `{"channel_id":"c","item_list":[{"recv_connection_id":"R","spotlight_focus_rid":"r2","spotlight_unfocus_rid":"r0"},{"spotlight_focus_rid":"r2","spotlight_unfocus_rid":"r0"}]}`, 400, "MISSING-FIELD", ""},
		{"Sora_20211215.BatchRequestSpotlightRid", `{"channel_id":"c","item_list":[{"recv_connection_id":"R","spotlight_focus_rid":"high","spotlight_unfocus_rid":"r0"}]}`, 400, "INVALID-FIELD-VALUE", ""},
		// Upstream bit rate
		{"Sora_20190327.ChangeUpstreamVideoBitRate", `{"bit_rate":300,"channel_id":"sora","connection_id":"HMRVPQEXJX03D3B3WE778SJGRC"}`, 200,
			`{"bit_rate":300,"channel_id":"sora","connection_id":"HMRVPQEXJX03D3B3WE778SJGRC"}`, "ChangeUpstreamVideoBitRate sora HMRVPQEXJX03D3B3WE778SJGRC 300"},
		{"Sora_20190327.ChangeUpstreamVideoBitRate", `{"bit_rate":0,"channel_id":"c","connection_id":"X"}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20190327.ChangeUpstreamVideoBitRate", `{"bit_rate":30001,"channel_id":"c","connection_id":"X"}`, 400, "INVALID-FIELD-VALUE", ""},
		{"Sora_20190327.ChangeUpstreamVideoBitRate", `{"bit_rate":"300","channel_id":"c","connection_id":"X"}`, 400, "INVALID-FIELD-TYPE", ""},
		{"Sora_20190327.ChangeUpstreamVideoBitRate", `{"channel_id":"c","connection_id":"X"}`, 400, "MISSING-FIELD", ""},
	}
	for _, tt := range tests {
		name := tt.target + " " + tt.body
		fm := &fakeMedia{}
		s := New(baseConfig(), &fakeCluster{}, fm)
		status, answer := callFake(t, s, tt.target, tt.body)
		if status != tt.status {
			t.Errorf("%s: status %d (%s), want %d", name, status, answer, tt.status)
			continue
		}
		if tt.status == 200 {
			if answer != tt.answer {
				t.Errorf("%s:\n answer %s\n want   %s", name, answer, tt.answer)
			}
		} else {
			var e errorBody
			if err := json.Unmarshal([]byte(answer), &e); err != nil || e.ErrorType != tt.answer {
				t.Errorf("%s: answer %s, want error_type %s", name, answer, tt.answer)
			}
		}
		var want []string
		if tt.call != "" {
			want = []string{tt.call}
		}
		if !slices.Equal(fm.calls, want) {
			t.Errorf("%s: media got %q, want %q", name, fm.calls, want)
		}
	}
}

// The media plane's refusals keep their status and type.
func TestLayerTargetErrors(t *testing.T) {
	tests := []struct {
		err    error
		status int
		typ    string
	}{
		{&media.NotFoundError{Type: "CONNECTION-NOT-FOUND", Reason: map[string]string{"channel_id": "c", "recv_connection_id": "R"}}, 404, "CONNECTION-NOT-FOUND"},
		{&media.NotFoundError{Type: "CHANNEL-NOT-FOUND", Reason: map[string]string{"channel_id": "c"}}, 404, "CHANNEL-NOT-FOUND"},
		{&media.InvalidError{Type: "NOT-SPOTLIGHT-CHANNEL", Reason: "x"}, 400, "NOT-SPOTLIGHT-CHANNEL"},
	}
	for _, tt := range tests {
		s := New(baseConfig(), &fakeCluster{}, &fakeMedia{err: tt.err})
		status, answer := callFake(t, s, "Sora_20200401.PauseRtpStream", `{"channel_id":"c","recv_connection_id":"R","send_connection_id":"S"}`)
		var e errorBody
		if status != tt.status || json.Unmarshal([]byte(answer), &e) != nil || e.ErrorType != tt.typ {
			t.Errorf("%v: %d %s, want %d %s", tt.err, status, answer, tt.status, tt.typ)
		}
	}
}

// Every layer target is about a channel: a call about a channel another
// node is in charge of is forwarded there, unchanged, and answered with the
// owner's answer.
func TestLayerTargetsAreForwardedToTheNodeInCharge(t *testing.T) {
	for name := range (&Server{}).layerTargets() {
		fc, fm := &fakeCluster{owner: "owner@127.0.0.9"}, &fakeMedia{}
		s := New(baseConfig(), fc, fm)
		body := `{"channel_id":"elsewhere","recv_connection_id":"R","send_connection_id":"S","connection_id":"C"}`
		status, answer := callFake(t, s, name, body)
		if status != 200 || answer != `{"from":"owner"}` || len(fm.calls) != 0 || !slices.Equal(fc.forwarded, []string{"owner@127.0.0.9 " + name + " " + body}) {
			t.Errorf("%s: %d %s, media %q, forwarded %q; want the owner's answer and one forward", name, status, answer, fm.calls, fc.forwarded)
		}
	}
}

// The user-agent statistics APIs about a channel are answered by its node
// in charge; the node-wide listing is answered here.
func TestUserAgentStatsRouting(t *testing.T) {
	for _, name := range []string{"Sora_20211215.ListChannelUserAgentStats", "Sora_20211215.GetUserAgentStats"} {
		fc := &fakeCluster{owner: "owner@127.0.0.9"}
		s := New(baseConfig(), fc, &fakeMedia{})
		body := `{"channel_id":"elsewhere","connection_id":"C"}`
		if status, answer := callFake(t, s, name, body); status != 200 || answer != `{"from":"owner"}` || len(fc.forwarded) != 1 {
			t.Errorf("%s: %d %s, forwarded %q", name, status, answer, fc.forwarded)
		}
	}
	fc := &fakeCluster{owner: "owner@127.0.0.9"}
	s := New(baseConfig(), fc, &uaMedia{})
	if status, answer := callFake(t, s, "Sora_20211215.ListUserAgentStats", `{"channel_id":"elsewhere"}`); status != 200 || answer != `[{"channel_id":"c","connection_id":"X","timestamp":"2021-11-13T13:05:33.264Z","user_agent_stats":[]}]` || len(fc.forwarded) != 0 {
		t.Errorf("ListUserAgentStats: %d %s, forwarded %q", status, answer, fc.forwarded)
	}
	for _, tt := range []struct{ name, body, typ string }{
		{"Sora_20211215.GetUserAgentStats", `{"channel_id":"c"}`, "MISSING-FIELD"},
		{"Sora_20211215.ListChannelUserAgentStats", `{}`, "MISSING-FIELD"},
		{"Sora_20211215.ListUserAgentStats", `{"local":"yes"}`, "INVALID-FIELD-TYPE"},
	} {
		status, answer := callFake(t, New(baseConfig(), &fakeCluster{}, &uaMedia{}), tt.name, tt.body)
		var e errorBody
		if status != 400 || json.Unmarshal([]byte(answer), &e) != nil || e.ErrorType != tt.typ {
			t.Errorf("%s %s: %d %s, want 400 %s", tt.name, tt.body, status, answer, tt.typ)
		}
	}
}

// uaMedia answers the node-wide user-agent statistics listing.
type uaMedia struct{ fakeMedia }

func (uaMedia) ListUserAgentStats() []media.UserAgentStatsEntry {
	return []media.UserAgentStatsEntry{{ChannelID: "c", ConnectionID: "X", Timestamp: "2021-11-13T13:05:33.264Z", UserAgentStats: json.RawMessage("[]")}}
}
