package signaling

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestApplyOverrides(t *testing.T) {
	const connect = `{"type":"connect","role":"sendrecv","channel_id":"c","client_id":"mine","metadata":{"access_token":"x"},"audio":true,"video":{"codec_type":"VP9","bit_rate":800}}`
	base, err := ParseConnect([]byte(connect))
	if err != nil {
		t.Fatal(err)
	}
	base.Metadata = json.RawMessage(`{}`) // as after the access token was taken out
	tests := []struct {
		name   string
		answer string
		check  func(ConnectRequest) bool
		rest   []string
		reason string // a refused override
	}{
		{"nothing", `{}`, func(r ConnectRequest) bool { return r.ClientID == "mine" }, nil, ""},
		{"ids", `{"client_id":"given","bundle_id":"b"}`, func(r ConnectRequest) bool { return r.ClientID == "given" && r.BundleID == "b" }, nil, ""},
		{"video codec and bit rate", `{"video_codec_type":"VP8","video_bit_rate":300}`, func(r ConnectRequest) bool {
			return r.Video.Enabled && r.Video.CodecType == "VP8" && r.Video.BitRate == 300
		}, nil, ""},
		{"audio off", `{"audio":false,"audio_bit_rate":32}`, func(r ConnectRequest) bool { return !r.Audio.Enabled }, nil, ""},
		{"audio bit rate on a boolean", `{"audio_bit_rate":32}`, func(r ConnectRequest) bool { return r.Audio.Enabled && r.Audio.BitRate == 32 }, nil, ""},
		{"spotlight", `{"spotlight":true,"spotlight_number":2,"spotlight_focus_rid":"r2"}`, func(r ConnectRequest) bool {
			return r.Spotlight && r.SpotlightNumber == 2 && r.SpotlightFocusRID == "r2"
		}, nil, ""},
		{"DataChannels", `{"data_channel_signaling":true,"ignore_disconnect_websocket":true,"data_channels":[{"label":"#x","direction":"sendonly"}]}`, func(r ConnectRequest) bool {
			return r.DataChannelSignaling && r.IgnoreDisconnectWebSocket && len(r.DataChannels) == 1
		}, nil, ""},
		{"the rest is returned", `{"metadata":{"a":1},"event_metadata":{},"turn_tcp_only":true}`, func(r ConnectRequest) bool { return true }, []string{"event_metadata", "metadata", "turn_tcp_only"}, ""},
		{"codec parameters are not applied", `{"audio_opus_params":{"stereo":true},"video_vp9_params":{"profile_id":2},"video_av1_params":{"profile":1},"video_h264_params":{"profile_level_id":"640c1f"}}`,
			func(r ConnectRequest) bool {
				return r.Video.CodecType == "VP9" && r.Video.BitRate == 800 && !strings.Contains(string(r.Video.Raw), "params") && r.Audio.Enabled && len(r.Audio.Raw) == 0
			}, []string{"audio_opus_params", "video_av1_params", "video_h264_params", "video_vp9_params"}, ""},
		{"a bad codec", `{"video_codec_type":"NOPE"}`, nil, nil, "INVALID-AUTH-WEBHOOK-OVERRIDE"},
		{"rids without spotlight", `{"spotlight_focus_rid":"r1"}`, nil, nil, "INVALID-AUTH-WEBHOOK-OVERRIDE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tt.answer), &fields); err != nil {
				t.Fatal(err)
			}
			got, rest, err := ApplyOverrides(base, fields)
			if tt.reason != "" {
				var se *Error
				if !errors.As(err, &se) || !strings.HasPrefix(se.Reason, tt.reason) {
					t.Fatalf("err %v, want %s", err, tt.reason)
				}
				return
			}
			if err != nil || !tt.check(got) || !slices.Equal(rest, tt.rest) {
				t.Fatalf("got %+v rest %v err %v", got, rest, err)
			}
			if string(got.Metadata) != `{}` {
				t.Errorf("metadata %s: the access token came back", got.Metadata)
			}
		})
	}
}
