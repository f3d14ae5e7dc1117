package signaling

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDispatch(t *testing.T) {
	var got []string
	h := &Handlers{
		Answer:     func(a Answer) error { got = append(got, "answer "+a.SDP); return nil },
		ReAnswer:   func(a Answer) error { got = append(got, "re-answer "+a.SDP); return nil },
		Candidate:  func(c Candidate) error { got = append(got, "candidate "+c.Candidate); return nil },
		Pong:       func(p Pong) error { got = append(got, "pong "+string(p.Stats)); return nil },
		Disconnect: func(d Disconnect) error { got = append(got, "disconnect "+d.Reason); return nil },
	}
	tests := []struct {
		msg    string
		typ    string
		known  bool
		reason string // of an *Error; "" for none
		call   string // what the handler saw; "" for no call
	}{
		{msg: `{"type":"answer","sdp":"v=0"}`, typ: "answer", known: true, call: "answer v=0"},
		{msg: `{"type":"re-answer","sdp":"v=1"}`, typ: "re-answer", known: true, call: "re-answer v=1"},
		{msg: `{"type":"candidate","candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}`, typ: "candidate", known: true, call: "candidate candidate:1"},
		{msg: `{"type":"candidate","candidate":"candidate:2"}`, typ: "candidate", known: true, call: "candidate candidate:2"},
		{msg: `{"type":"pong","stats":[{"id":"x"}]}`, typ: "pong", known: true, call: `pong [{"id":"x"}]`},
		{msg: `{"type":"disconnect","reason":"NO-ERROR"}`, typ: "disconnect", known: true, call: "disconnect NO-ERROR"},
		{msg: `{"type":"update","sdp":"v=0"}`, typ: "update"},
		{msg: `{"type":"answer","sdp":5}`, typ: "answer", known: true, reason: "INVALID-MESSAGE: field sdp"},
		{msg: `{"type":"candidate","sdpMLineIndex":-1}`, typ: "candidate", known: true, reason: "INVALID-MESSAGE"},
		{msg: `[]`, reason: "INVALID-MESSAGE"},
		{msg: `{"type":7}`, reason: "INVALID-MESSAGE"},
		{msg: `not json`, reason: "INVALID-MESSAGE"},
	}
	for _, tt := range tests {
		got = nil
		typ, known, err := Dispatch([]byte(tt.msg), h)
		var se *Error
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("%s: error %v", tt.msg, err)
		case tt.reason != "" && (!errors.As(err, &se) || !strings.HasPrefix(se.Reason, tt.reason)):
			t.Errorf("%s: error %v, want reason %s", tt.msg, err, tt.reason)
		case typ != tt.typ || known != tt.known:
			t.Errorf("%s: type %q known %v, want %q %v", tt.msg, typ, known, tt.typ, tt.known)
		}
		if want := tt.call; (want == "" && len(got) != 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
			t.Errorf("%s: handlers saw %q, want %q", tt.msg, got, want)
		}
	}
	// A nil handler ignores its message, and a handler's error comes back.
	boom := errors.New("boom")
	if _, _, err := Dispatch([]byte(`{"type":"pong"}`), &Handlers{}); err != nil {
		t.Errorf("nil handler: %v", err)
	}
	if _, _, err := Dispatch([]byte(`{"type":"pong"}`), &Handlers{Pong: func(Pong) error { return boom }}); !errors.Is(err, boom) {
		t.Errorf("handler error: %v", err)
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		msg  Outbound
		want string
	}{
		{Ping{Stats: false}, `{"type":"ping","stats":false}`},
		{ReOffer{SDP: "v=0"}, `{"type":"re-offer","sdp":"v=0"}`},
		{Redirect{Location: "ws://a/signaling"}, `{"type":"redirect","location":"ws://a/signaling"}`},
		{Push{Data: json.RawMessage(`{"a":1}`)}, `{"type":"push","data":{"a":1}}`},
		{empty{}, `{"type":"empty"}`},
		{ConnectionNotify{EventType: "connection.destroyed"}, `{"type":"notify","event_type":"connection.destroyed","role":"","session_id":"","client_id":"","bundle_id":"","connection_id":"","audio":false,"video":false,"minutes":0,"channel_connections":0,"channel_sendrecv_connections":0,"channel_sendonly_connections":0,"channel_recvonly_connections":0,"turn_transport_type":"","timestamp":""}`},
	}
	for _, tt := range tests {
		b, err := Encode(tt.msg)
		if err != nil || string(b) != tt.want {
			t.Errorf("Encode(%T) = %s, %v; want %s", tt.msg, b, err, tt.want)
		}
	}
	// The newcomer's own connection.created lists the members, even none.
	b, _ := Encode(ConnectionNotify{EventType: "connection.created", Data: &[]NotifyEntry{}})
	if !strings.Contains(string(b), `"data":[]`) {
		t.Errorf("empty data list dropped: %s", b)
	}
	if _, err := Encode(Push{Data: json.RawMessage(`{bad`)}); err == nil {
		t.Errorf("invalid raw JSON encoded without an error")
	}
}

type empty struct{}

func (empty) Type() string { return "empty" }

func FuzzDispatch(f *testing.F) {
	f.Add([]byte(`{"type":"answer","sdp":"v=0"}`))
	f.Add([]byte(`{"type":"candidate","candidate":"c","sdpMid":"0","sdpMLineIndex":1}`))
	f.Add([]byte(`{"type":"pong","stats":[]}`))
	f.Add([]byte(`{"type":"disconnect"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := &Handlers{
			Answer: func(Answer) error { return nil }, ReAnswer: func(Answer) error { return nil },
			Candidate: func(Candidate) error { return nil }, Pong: func(Pong) error { return nil },
			Disconnect: func(Disconnect) error { return nil },
		}
		_, _, err := Dispatch(b, h) // must never panic
		var se *Error
		if err != nil && (!errors.As(err, &se) || se.Reason == "" || len(se.Reason) > 123) {
			t.Fatalf("error %v is not a close reason", err)
		}
	})
}
