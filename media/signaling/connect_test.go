package signaling

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseConnect(t *testing.T) {
	base := `"type":"connect","role":"sendrecv","channel_id":"sora"`
	tests := []struct {
		name   string
		msg    string
		reason string // expected close reason prefix; "" = accepted
		check  func(t *testing.T, r ConnectRequest)
	}{
		{name: "minimal", msg: `{` + base + `}`, check: func(t *testing.T, r ConnectRequest) {
			if r.Role != RoleSendrecv || r.ChannelID != "sora" || !r.Audio.Enabled || !r.Video.Enabled || !r.Multistream {
				t.Fatalf("request = %+v", r)
			}
		}},
		{name: "metadata null as sora-js-sdk sends it", msg: `{` + base + `,"metadata":null}`, check: func(t *testing.T, r ConnectRequest) {
			if string(r.Metadata) != "null" {
				t.Fatalf("metadata = %s", r.Metadata)
			}
		}},
		{name: "metadata object and notify metadata kept compact", msg: `{` + base + `,"metadata": {"a": 1},"signaling_notify_metadata":{ "b" : [1, 2] }}`, check: func(t *testing.T, r ConnectRequest) {
			if string(r.Metadata) != `{"a":1}` || string(r.SignalingNotifyMetadata) != `{"b":[1,2]}` {
				t.Fatalf("metadata = %s / %s", r.Metadata, r.SignalingNotifyMetadata)
			}
		}},
		{name: "audio and video objects", msg: `{` + base + `,"audio":{"codec_type":"OPUS"},"video":{"codec_type":"vp8","bit_rate":1500}}`, check: func(t *testing.T, r ConnectRequest) {
			if r.Video.CodecType != "VP8" || r.Video.BitRate != 1500 || r.Audio.CodecType != "OPUS" || len(r.Video.Raw) == 0 {
				t.Fatalf("media = %+v %+v", r.Audio, r.Video)
			}
		}},
		{name: "recvonly without media", msg: `{"type":"connect","role":"recvonly","channel_id":"c","audio":false,"video":false}`},
		{name: "client and bundle ids", msg: `{` + base + `,"client_id":"me","bundle_id":"b"}`, check: func(t *testing.T, r ConnectRequest) {
			if r.ClientID != "me" || r.BundleID != "b" {
				t.Fatalf("ids = %q %q", r.ClientID, r.BundleID)
			}
		}},
		{name: "redirect and sdk fields", msg: `{` + base + `,"redirect":true,"sora_client":"Sora JavaScript SDK 2026.1.0","environment":"x","sdp":"v=0"}`, check: func(t *testing.T, r ConnectRequest) {
			if !r.Redirect || r.SoraClient == "" {
				t.Fatalf("request = %+v", r)
			}
		}},
		{name: "simulcast as an object counts as true", msg: `{` + base + `,"simulcast":{"rid":"r0"}}`, check: func(t *testing.T, r ConnectRequest) {
			if !r.Simulcast {
				t.Fatal("simulcast object not accepted as true")
			}
		}},
		{name: "multistream true accepted", msg: `{` + base + `,"multistream":true}`},
		{name: "simulcast request rid wins over simulcast_rid", msg: `{` + base + `,"simulcast":true,"simulcast_rid":"r2","simulcast_request_rid":"r1"}`, check: func(t *testing.T, r ConnectRequest) {
			if !r.Simulcast || r.SimulcastRID != "r1" {
				t.Fatalf("simulcast %v rid %q, want true r1", r.Simulcast, r.SimulcastRID)
			}
		}},
		{name: "simulcast_rid alone", msg: `{` + base + `,"simulcast":true,"simulcast_rid":"r2"}`, check: func(t *testing.T, r ConnectRequest) {
			if r.SimulcastRID != "r2" {
				t.Fatalf("rid %q, want r2", r.SimulcastRID)
			}
		}},
		{name: "simulcast request none", msg: `{` + base + `,"simulcast_request_rid":"none"}`, check: func(t *testing.T, r ConnectRequest) {
			if r.SimulcastRID != "none" {
				t.Fatalf("rid %q, want none", r.SimulcastRID)
			}
		}},
		{name: "spotlight settings", msg: `{` + base + `,"spotlight":true,"spotlight_number":3,"spotlight_focus_rid":"r2","spotlight_unfocus_rid":"none"}`, check: func(t *testing.T, r ConnectRequest) {
			if !r.Spotlight || r.SpotlightNumber != 3 || r.SpotlightFocusRID != "r2" || r.SpotlightUnfocusRID != "none" {
				t.Fatalf("spotlight = %v %d %q %q", r.Spotlight, r.SpotlightNumber, r.SpotlightFocusRID, r.SpotlightUnfocusRID)
			}
		}},
		{name: "bad simulcast rid", msg: `{` + base + `,"simulcast_rid":"none"}`, reason: "INVALID-SIMULCAST-RID"},
		{name: "bad simulcast request rid", msg: `{` + base + `,"simulcast_request_rid":"r3"}`, reason: "INVALID-SIMULCAST-REQUEST-RID"},
		{name: "simulcast rid of the wrong type", msg: `{` + base + `,"simulcast_rid":0}`, reason: "INVALID-MESSAGE"},
		{name: "spotlight number too big", msg: `{` + base + `,"spotlight":true,"spotlight_number":9}`, reason: "INVALID-SPOTLIGHT-NUMBER"},
		{name: "spotlight number zero", msg: `{` + base + `,"spotlight":true,"spotlight_number":0}`, reason: "INVALID-SPOTLIGHT-NUMBER"},
		{name: "spotlight number without spotlight", msg: `{` + base + `,"spotlight_number":2}`, reason: "SPOTLIGHT-RID-WITHOUT-SPOTLIGHT"},
		{name: "bad focus rid", msg: `{` + base + `,"spotlight":true,"spotlight_focus_rid":"high"}`, reason: "INVALID-SPOTLIGHT-FOCUS-RID"},
		{name: "bad unfocus rid", msg: `{` + base + `,"spotlight":true,"spotlight_unfocus_rid":"r9"}`, reason: "INVALID-SPOTLIGHT-UNFOCUS-RID"},
		{name: "messaging only", msg: `{"type":"connect","role":"sendonly","channel_id":"c","audio":false,"video":false,"data_channel_signaling":true}`},
		{name: "not json", msg: `{`, reason: "INVALID-MESSAGE"},
		{name: "array", msg: `[]`, reason: "INVALID-MESSAGE"},
		{name: "wrong first type", msg: `{"type":"answer","sdp":""}`, reason: "UNEXPECTED-MESSAGE"},
		{name: "missing role", msg: `{"type":"connect","channel_id":"c"}`, reason: "MISSING-ROLE"},
		{name: "bad role", msg: `{"type":"connect","role":"upstream","channel_id":"c"}`, reason: "INVALID-ROLE"},
		{name: "role of the wrong type", msg: `{"type":"connect","role":1,"channel_id":"c"}`, reason: "INVALID-MESSAGE"},
		{name: "missing channel", msg: `{"type":"connect","role":"sendrecv"}`, reason: "MISSING-CHANNEL-ID"},
		{name: "empty channel", msg: `{"type":"connect","role":"sendrecv","channel_id":""}`, reason: "INVALID-CHANNEL-ID"},
		{name: "channel too long", msg: `{"type":"connect","role":"sendrecv","channel_id":"` + strings.Repeat("x", 256) + `"}`, reason: "INVALID-CHANNEL-ID"},
		{name: "empty client id", msg: `{` + base + `,"client_id":""}`, reason: "INVALID-CLIENT-ID"},
		{name: "audio a string", msg: `{` + base + `,"audio":"yes"}`, reason: "INVALID-AUDIO"},
		{name: "unknown video codec", msg: `{` + base + `,"video":{"codec_type":"H265"}}`, reason: "UNSUPPORTED-VIDEO-CODEC"},
		{name: "video bit rate zero", msg: `{` + base + `,"video":{"bit_rate":0}}`, reason: "INVALID-VIDEO-BIT-RATE"},
		{name: "video codec of the wrong type", msg: `{` + base + `,"video":{"codec_type":8}}`, reason: "INVALID-VIDEO"},
		{name: "focus rid without spotlight", msg: `{` + base + `,"spotlight_focus_rid":"r1"}`, reason: "SPOTLIGHT-RID-WITHOUT-SPOTLIGHT"},
		{name: "spotlight a string", msg: `{` + base + `,"spotlight":"yes"}`, reason: "INVALID-SPOTLIGHT"},
		{name: "multistream false", msg: `{` + base + `,"multistream":false}`, reason: "MULTISTREAM-REQUIRED"},
		{name: "sender with nothing to send", msg: `{"type":"connect","role":"sendonly","channel_id":"c","audio":false,"video":false}`, reason: "NOTHING-TO-SEND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseConnect([]byte(tt.msg))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tt.check != nil {
					tt.check(t, r)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) || !strings.HasPrefix(se.Reason, tt.reason) {
				t.Fatalf("error = %v, want reason %s", err, tt.reason)
			}
			if len(se.Reason) > 123 {
				t.Fatalf("reason of %d bytes does not fit a close frame", len(se.Reason))
			}
		})
	}
}

// TestParseConnectAcceptsSoraJSSDK feeds every connect the official
// JavaScript SDK was recorded sending (shared/spec) through the parser.
func TestParseConnectAcceptsSoraJSSDK(t *testing.T) {
	f, err := os.Open("../../../shared/spec/sora-js-sdk-connect.jsonl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared/spec must be beside the checkout in CI: %v", err)
		}
		t.Skipf("SKIPPED: the recorded SDK messages (shared/spec) are not beside this checkout: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		// Connects sit under several keys (before and after a redirect, in
		// an exchange): take every object of type connect.
		for _, c := range connectsIn(rec) {
			b, _ := json.Marshal(c)
			if _, err := ParseConnect(b); err != nil {
				t.Errorf("scenario %v: %v\n%s", rec["scenario"], err, b)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no recorded connect messages")
	}
}

func connectsIn(v any) []map[string]any {
	var out []map[string]any
	switch x := v.(type) {
	case map[string]any:
		if x["type"] == "connect" {
			return []map[string]any{x}
		}
		for _, e := range x {
			out = append(out, connectsIn(e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, connectsIn(e)...)
		}
	}
	return out
}

func TestTruncateReason(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	r := TruncateReason(long)
	if len(r) > 123 || !strings.HasPrefix(long, r) {
		t.Fatalf("truncated to %d bytes: %q", len(r), r)
	}
}

func FuzzParseConnect(f *testing.F) {
	f.Add([]byte(`{"type":"connect","role":"sendrecv","channel_id":"sora","audio":{"codec_type":"OPUS"},"video":{"bit_rate":100}}`))
	f.Add([]byte(`{"type":"connect","role":"recvonly","channel_id":"x","simulcast":{},"spotlight":true,"spotlight_focus_rid":"r0"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"type":"connect","role":"sendrecv","channel_id":"c","data_channel_signaling":true,"ignore_disconnect_websocket":false,"data_channels":[{"label":"#chat","direction":"sendrecv","compress":true,"max_retransmits":3,"header":[{"type":"sender_connection_id"}]},{"label":"signaling","compress":false}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseConnect(b) // must never panic
		if err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Reason == "" || len(se.Reason) > 123 {
				t.Fatalf("error %v is not a close reason", err)
			}
			return
		}
		if r.ChannelID == "" || len(r.ChannelID) > MaxIDLength || (!r.Role.Sends() && !r.Role.Receives()) {
			t.Fatalf("accepted an invalid request: %+v", r)
		}
	})
}
