package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sorad/sorad/media/channel"
)

// Role is a connection's role, as in Sora's connect message.
type Role string

const (
	RoleSendrecv Role = "sendrecv"
	RoleSendonly Role = "sendonly"
	RoleRecvonly Role = "recvonly"
)

// Sends reports whether the role publishes media.
func (r Role) Sends() bool { return r == RoleSendrecv || r == RoleSendonly }

// Receives reports whether the role receives media.
func (r Role) Receives() bool { return r == RoleSendrecv || r == RoleRecvonly }

// MaxIDLength bounds channel_id, client_id and bundle_id, as Sora does.
const MaxIDLength = 255

// Error is a message sorad refuses: the connection is closed with code
// CloseSignaling (4490) and Reason, which names the problem.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "signaling error: " + e.Reason }

// Errorf returns an *Error whose reason is reason, followed by the
// formatted detail when format is not empty, cut to fit a close frame.
func Errorf(reason string, format string, args ...any) *Error {
	r := reason
	if format != "" {
		r += ": " + fmt.Sprintf(format, args...)
	}
	return &Error{Reason: TruncateReason(r)}
}

// TruncateReason keeps a close reason within the 123 bytes a WebSocket
// close frame allows, on a UTF-8 boundary.
func TruncateReason(r string) string {
	const max = 123
	if len(r) <= max {
		return r
	}
	r = r[:max]
	for !utf8.ValidString(r) {
		r = r[:len(r)-1]
	}
	return r
}

// MediaRequest is what a connect asks for one kind of media: false, true, or
// an object with codec_type and bit_rate (and codec parameters, kept as sent).
type MediaRequest struct {
	Enabled   bool
	CodecType string
	BitRate   int
	// Raw is the object as the client sent it (nil for a boolean), shown in
	// ListConnections.
	Raw json.RawMessage
}

// ConnectRequest is a validated connect message.
type ConnectRequest struct {
	Role                    Role
	ChannelID               string
	ClientID                string // empty: defaults to the connection ID
	BundleID                string // empty: defaults to the connection ID
	Metadata                json.RawMessage
	SignalingNotifyMetadata json.RawMessage
	Audio, Video            MediaRequest
	Multistream             bool
	Simulcast               bool
	// SimulcastRID is the layer the client receives from simulcast
	// senders: simulcast_request_rid, else simulcast_rid; "" when it named
	// none.
	SimulcastRID channel.RID
	Spotlight    bool
	// SpotlightNumber is spotlight_number, 0 when absent.
	SpotlightNumber int
	// SpotlightFocusRID and SpotlightUnfocusRID are "" when absent.
	SpotlightFocusRID, SpotlightUnfocusRID channel.RID
	DataChannelSignaling                   bool
	IgnoreDisconnectWebSocket              bool
	// DataChannels are the validated data_channels entries.
	DataChannels []DataChannelSpec
	Redirect     bool
	SoraClient   string
	Environment  string
	// Raw is the connect message as it came, for an auth webhook's
	// overrides to be applied to and checked again.
	Raw json.RawMessage
}

// connectWire is the connect message as it arrives. Fields whose type
// varies between SDKs (audio, video, simulcast, spotlight) stay raw.
type connectWire struct {
	Type                    string          `json:"type"`
	Role                    *string         `json:"role"`
	ChannelID               *string         `json:"channel_id"`
	ClientID                *string         `json:"client_id"`
	BundleID                *string         `json:"bundle_id"`
	Metadata                json.RawMessage `json:"metadata"`
	SignalingNotifyMetadata json.RawMessage `json:"signaling_notify_metadata"`
	Audio                   json.RawMessage `json:"audio"`
	Video                   json.RawMessage `json:"video"`
	Multistream             *bool           `json:"multistream"`
	Simulcast               json.RawMessage `json:"simulcast"`
	Spotlight               json.RawMessage `json:"spotlight"`
	SpotlightNumber         *int            `json:"spotlight_number"`
	SpotlightFocusRID       *string         `json:"spotlight_focus_rid"`
	SpotlightUnfocusRID     *string         `json:"spotlight_unfocus_rid"`
	SimulcastRID            *string         `json:"simulcast_rid"`
	SimulcastRequestRID     *string         `json:"simulcast_request_rid"`
	DataChannelSignaling    *bool           `json:"data_channel_signaling"`
	IgnoreDisconnectWS      *bool           `json:"ignore_disconnect_websocket"`
	DataChannels            json.RawMessage `json:"data_channels"`
	Redirect                *bool           `json:"redirect"`
	SDP                     *string         `json:"sdp"`
	SoraClient              *string         `json:"sora_client"`
	Environment             *string         `json:"environment"`
}

// Codec names a connect may ask for.
var (
	audioCodecs = map[string]bool{"OPUS": true}
	videoCodecs = map[string]bool{"VP8": true, "VP9": true, "AV1": true, "H264": true}
)

// IsVideoCodec reports whether name is a video codec_type sorad forwards.
func IsVideoCodec(name string) bool { return videoCodecs[name] }

// ParseConnect validates the first message of a signaling connection. Every
// refusal is a *signalingError whose reason names the field.
func ParseConnect(b []byte) (ConnectRequest, error) {
	var w connectWire
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return ConnectRequest{}, Errorf("INVALID-MESSAGE", "%s", JSONProblem(err))
	}
	if w.Type != "connect" {
		return ConnectRequest{}, Errorf("UNEXPECTED-MESSAGE", "the first message must be type connect, not %q", w.Type)
	}
	req := ConnectRequest{Raw: b}
	switch {
	case w.Role == nil:
		return req, Errorf("MISSING-ROLE", "")
	case !Role(*w.Role).Sends() && !Role(*w.Role).Receives():
		return req, Errorf("INVALID-ROLE", "role must be sendrecv, sendonly or recvonly")
	}
	req.Role = Role(*w.Role)
	if w.ChannelID == nil {
		return req, Errorf("MISSING-CHANNEL-ID", "")
	}
	if err := checkID("CHANNEL-ID", *w.ChannelID); err != nil {
		return req, err
	}
	req.ChannelID = *w.ChannelID
	for _, f := range []struct {
		name string
		v    *string
		dst  *string
	}{{"CLIENT-ID", w.ClientID, &req.ClientID}, {"BUNDLE-ID", w.BundleID, &req.BundleID}} {
		if f.v == nil {
			continue
		}
		if err := checkID(f.name, *f.v); err != nil {
			return req, err
		}
		*f.dst = *f.v
	}
	var err error
	if req.Audio, err = parseMedia("AUDIO", w.Audio, audioCodecs); err != nil {
		return req, err
	}
	if req.Video, err = parseMedia("VIDEO", w.Video, videoCodecs); err != nil {
		return req, err
	}
	if req.Simulcast, err = parseFlag("SIMULCAST", w.Simulcast, true); err != nil {
		return req, err
	}
	if req.Spotlight, err = parseFlag("SPOTLIGHT", w.Spotlight, false); err != nil {
		return req, err
	}
	if err := parseLayers(w, &req); err != nil {
		return req, err
	}
	if w.Multistream != nil && !*w.Multistream {
		return req, Errorf("MULTISTREAM-REQUIRED", "sorad serves multistream connections only")
	}
	req.Multistream = true
	req.DataChannelSignaling = w.DataChannelSignaling != nil && *w.DataChannelSignaling
	req.IgnoreDisconnectWebSocket = w.IgnoreDisconnectWS != nil && *w.IgnoreDisconnectWS
	if req.DataChannels, err = ParseDataChannels(w.DataChannels); err != nil {
		return req, err
	}
	if !req.DataChannelSignaling {
		for _, d := range req.DataChannels {
			if IsMessagingLabel(d.Label) {
				return req, Errorf("INVALID-DATA-CHANNELS", "label %q: messaging labels need data_channel_signaling: true", clipLabel(d.Label))
			}
		}
	}
	if req.Role.Sends() && !req.Audio.Enabled && !req.Video.Enabled && !req.DataChannelSignaling {
		return req, Errorf("NOTHING-TO-SEND", "role %s with audio and video both false", req.Role)
	}
	req.Metadata = normalizeJSON(w.Metadata)
	req.SignalingNotifyMetadata = normalizeJSON(w.SignalingNotifyMetadata)
	req.Redirect = w.Redirect != nil && *w.Redirect
	if w.SoraClient != nil {
		req.SoraClient = *w.SoraClient
	}
	if w.Environment != nil {
		req.Environment = *w.Environment
	}
	return req, nil
}

func checkID(name, v string) error {
	switch {
	case v == "":
		return Errorf("INVALID-"+name, "must not be empty")
	case len(v) > MaxIDLength:
		return Errorf("INVALID-"+name, "longer than %d bytes", MaxIDLength)
	case !utf8.ValidString(v):
		return Errorf("INVALID-"+name, "not valid UTF-8")
	}
	return nil
}

// parseMedia reads audio or video: absent means true, as the SDKs default.
func parseMedia(name string, raw json.RawMessage, codecs map[string]bool) (MediaRequest, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return MediaRequest{Enabled: true}, nil
	}
	switch raw[0] {
	case 't', 'f':
		var on bool
		if err := json.Unmarshal(raw, &on); err != nil {
			return MediaRequest{}, Errorf("INVALID-"+name, "must be a boolean or an object")
		}
		return MediaRequest{Enabled: on}, nil
	case '{':
	default:
		return MediaRequest{}, Errorf("INVALID-"+name, "must be a boolean or an object")
	}
	var obj struct {
		CodecType *string `json:"codec_type"`
		BitRate   *int    `json:"bit_rate"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return MediaRequest{}, Errorf("INVALID-"+name, "%s", JSONProblem(err))
	}
	m := MediaRequest{Enabled: true, Raw: append(json.RawMessage(nil), raw...)}
	if obj.CodecType != nil {
		c := strings.ToUpper(*obj.CodecType)
		if !codecs[c] {
			return MediaRequest{}, Errorf("UNSUPPORTED-"+name+"-CODEC", "codec_type %q", *obj.CodecType)
		}
		m.CodecType = c
	}
	if obj.BitRate != nil {
		if *obj.BitRate < 1 || *obj.BitRate > 50000 {
			return MediaRequest{}, Errorf("INVALID-"+name+"-BIT-RATE", "bit_rate must be 1-50000 kbps")
		}
		m.BitRate = *obj.BitRate
	}
	return m, nil
}

// parseLayers reads the simulcast and spotlight choices. Spotlight
// settings without spotlight: true are a contradiction Sora refuses.
func parseLayers(w connectWire, req *ConnectRequest) error {
	rid := func(name string, v *string, noneOK bool) (channel.RID, error) {
		if v == nil {
			return "", nil
		}
		r, ok := channel.ParseRID(*v)
		if !ok || (r == channel.RIDNone && !noneOK) {
			allowed := "r0, r1 or r2"
			if noneOK {
				allowed = "none, " + allowed
			}
			return "", Errorf("INVALID-"+name, "must be %s", allowed)
		}
		return r, nil
	}
	var err error
	if req.SimulcastRID, err = rid("SIMULCAST-RID", w.SimulcastRID, false); err != nil {
		return err
	}
	if w.SimulcastRequestRID != nil {
		if req.SimulcastRID, err = rid("SIMULCAST-REQUEST-RID", w.SimulcastRequestRID, true); err != nil {
			return err
		}
	}
	if !req.Spotlight && (w.SpotlightFocusRID != nil || w.SpotlightUnfocusRID != nil || w.SpotlightNumber != nil) {
		return Errorf("SPOTLIGHT-RID-WITHOUT-SPOTLIGHT", "spotlight_number, spotlight_focus_rid and spotlight_unfocus_rid need spotlight: true")
	}
	if n := w.SpotlightNumber; n != nil {
		if *n < channel.MinSpotlightNumber || *n > channel.MaxSpotlightNumber {
			return Errorf("INVALID-SPOTLIGHT-NUMBER", "must be %d to %d", channel.MinSpotlightNumber, channel.MaxSpotlightNumber)
		}
		req.SpotlightNumber = *n
	}
	if req.SpotlightFocusRID, err = rid("SPOTLIGHT-FOCUS-RID", w.SpotlightFocusRID, true); err != nil {
		return err
	}
	if req.SpotlightUnfocusRID, err = rid("SPOTLIGHT-UNFOCUS-RID", w.SpotlightUnfocusRID, true); err != nil {
		return err
	}
	return nil
}

// parseFlag reads simulcast or spotlight: a boolean, or (objectOK) an object
// as old SDKs send for simulcast, which counts as true.
func parseFlag(name string, raw json.RawMessage, objectOK bool) (bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	if objectOK && raw[0] == '{' {
		return true, nil
	}
	var on bool
	if err := json.Unmarshal(raw, &on); err != nil {
		return false, Errorf("INVALID-"+name, "must be a boolean")
	}
	return on, nil
}

// normalizeJSON keeps a client-supplied JSON value compact; absent stays nil.
func normalizeJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil // cannot happen: the decoder already accepted it
	}
	return buf.Bytes()
}

// JSONProblem describes a decoding error without echoing the input.
func JSONProblem(err error) string {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			return fmt.Sprintf("field %s has the wrong type", e.Field)
		}
		return "the message must be a JSON object"
	case *json.SyntaxError:
		return "not valid JSON"
	}
	return "not a JSON object"
}
