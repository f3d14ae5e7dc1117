package signaling

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDataChannels(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		want   int    // entries when valid
		reason string // substring of the refusal
	}{
		{"absent", ``, 0, ""},
		{"null", `null`, 0, ""},
		{"empty", `[]`, 0, ""},
		{"messaging labels", `[{"label":"#chat","direction":"sendrecv","compress":true,"header":[{"type":"sender_connection_id"}]},{"label":"#log","direction":"recvonly","ordered":false,"max_retransmits":0}]`, 2, ""},
		{"a signaling label's options", `[{"label":"signaling","compress":true},{"label":"notify","direction":"sendonly"}]`, 2, ""},
		{"not an array", `{"label":"#chat"}`, 0, "must be an array"},
		{"an entry not an object", `["#chat"]`, 0, "data_channels[0] must be an object"},
		{"no label", `[{"direction":"sendrecv"}]`, 0, "data_channels[0].label is missing"},
		{"empty label", `[{"label":"","direction":"sendrecv"}]`, 0, "data_channels[0].label must be"},
		{"label neither # nor signaling", `[{"label":"chat","direction":"sendrecv"}]`, 0, `data_channels[0].label "chat" must start with #`},
		{"# label without direction", `[{"label":"#a","direction":"sendrecv"},{"label":"#b"}]`, 0, "data_channels[1].direction is missing"},
		{"bad direction", `[{"label":"#a","direction":"both"}]`, 0, "data_channels[0].direction must be"},
		{"both reliability limits", `[{"label":"#a","direction":"sendrecv","max_packet_life_time":10,"max_retransmits":1}]`, 0, "exclude each other"},
		{"negative retransmits", `[{"label":"#a","direction":"sendrecv","max_retransmits":-1}]`, 0, "max_retransmits must be 0-65535"},
		{"huge life time", `[{"label":"#a","direction":"sendrecv","max_packet_life_time":70000}]`, 0, "max_packet_life_time must be 0-65535"},
		{"wrong type", `[{"label":"#a","direction":"sendrecv","compress":"yes"}]`, 0, "data_channels[0] must be an object with fields"},
		{"unknown header", `[{"label":"#a","direction":"sendrecv","header":[{"type":"timestamp"}]}]`, 0, "header[0].type must be sender_connection_id"},
		{"header on a signaling label", `[{"label":"push","header":[{"type":"sender_connection_id"}]}]`, 0, "header is for # labels only"},
		{"duplicate label", `[{"label":"#a","direction":"sendrecv"},{"label":"#a","direction":"recvonly"}]`, 0, `data_channels[1].label "#a" appears twice`},
		{"too many", `[` + strings.Repeat(`{"label":"#x","direction":"sendrecv"},`, MaxDataChannels) + `{"label":"#y","direction":"sendrecv"}]`, 0, "at most"},
		{"long label", `[{"label":"#` + strings.Repeat("l", MaxIDLength) + `","direction":"sendrecv"}]`, 0, ".label must be 1-255 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDataChannels([]byte(tt.raw))
			if tt.reason == "" {
				if err != nil || len(got) != tt.want {
					t.Fatalf("ParseDataChannels = %+v, %v; want %d entries", got, err, tt.want)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) || !strings.HasPrefix(se.Reason, "INVALID-DATA-CHANNELS: ") || !strings.Contains(se.Reason, tt.reason) || len(se.Reason) > 123 {
				t.Fatalf("err = %v, want INVALID-DATA-CHANNELS naming %q", err, tt.reason)
			}
		})
	}
	specs, _ := ParseDataChannels([]byte(`[{"label":"#chat","direction":"sendonly","ordered":true,"max_packet_life_time":500,"protocol":"json","header":[{"type":"sender_connection_id"}]}]`))
	s := specs[0]
	if s.Label != "#chat" || !s.Direction.Sends() || s.Direction.Receives() || s.Ordered == nil || !*s.Ordered || s.MaxPacketLifeTime == nil || *s.MaxPacketLifeTime != 500 || s.MaxRetransmits != nil || s.Protocol != "json" || !s.SenderConnectionID {
		t.Fatalf("parsed %+v", s)
	}
}

// A bad data_channels entry refuses the whole connect.
func TestConnectWithBadDataChannels(t *testing.T) {
	_, err := ParseConnect([]byte(`{"type":"connect","role":"sendrecv","channel_id":"c","data_channel_signaling":true,"ignore_disconnect_websocket":true,"data_channels":[{"label":"#a"}]}`))
	var se *Error
	if !errors.As(err, &se) || !strings.Contains(se.Reason, "data_channels[0].direction") {
		t.Fatalf("err = %v", err)
	}
	req, err := ParseConnect([]byte(`{"type":"connect","role":"sendrecv","channel_id":"c","data_channel_signaling":true,"ignore_disconnect_websocket":true,"data_channels":[{"label":"#a","direction":"sendrecv"}]}`))
	if err != nil || !req.IgnoreDisconnectWebSocket || len(req.DataChannels) != 1 {
		t.Fatalf("req %+v, %v", req, err)
	}
}

// Messaging labels ride on DataChannel signaling; without it they are a
// signaling error rather than labels that silently never open.
func TestMessagingLabelsNeedDataChannelSignaling(t *testing.T) {
	_, err := ParseConnect([]byte(`{"type":"connect","role":"sendrecv","channel_id":"c","data_channels":[{"label":"#a","direction":"sendrecv"}]}`))
	var se *Error
	if !errors.As(err, &se) || se.Reason == "" || !strings.Contains(se.Reason, "data_channel_signaling") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseConnect([]byte(`{"type":"connect","role":"sendrecv","channel_id":"c","data_channels":[{"label":"signaling","compress":true}]}`)); err != nil {
		t.Fatalf("a signaling label's options without DataChannel signaling: %v", err)
	}
}
