package media

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Role is a connection's role, as in Sora's connect message.
type Role string

const (
	RoleSendrecv Role = "sendrecv"
	RoleSendonly Role = "sendonly"
	RoleRecvonly Role = "recvonly"
)

func (r Role) sends() bool    { return r == RoleSendrecv || r == RoleSendonly }
func (r Role) receives() bool { return r == RoleSendrecv || r == RoleRecvonly }

// maxIDLength bounds channel_id, client_id and bundle_id, as Sora does.
const maxIDLength = 255

// signalingError is a connect that sorad refuses: the WebSocket is closed
// with code 4490 and Reason.
type signalingError struct {
	Reason string
}

func (e *signalingError) Error() string { return "signaling error: " + e.Reason }

func sigErr(reason string, format string, args ...any) *signalingError {
	r := reason
	if format != "" {
		r += ": " + fmt.Sprintf(format, args...)
	}
	return &signalingError{Reason: truncateReason(r)}
}

// truncateReason keeps a close reason within the 123 bytes a WebSocket
// close frame allows, on a UTF-8 boundary.
func truncateReason(r string) string {
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
	Spotlight               bool
	DataChannelSignaling    bool
	Redirect                bool
	SoraClient              string
	Environment             string
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
	SpotlightFocusRID       *string         `json:"spotlight_focus_rid"`
	SpotlightUnfocusRID     *string         `json:"spotlight_unfocus_rid"`
	DataChannelSignaling    *bool           `json:"data_channel_signaling"`
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

// parseConnect validates the first message of a signaling connection. Every
// refusal is a *signalingError whose reason names the field.
func parseConnect(b []byte) (ConnectRequest, error) {
	var w connectWire
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return ConnectRequest{}, sigErr("INVALID-MESSAGE", "%s", jsonProblem(err))
	}
	if w.Type != "connect" {
		return ConnectRequest{}, sigErr("UNEXPECTED-MESSAGE", "the first message must be type connect, not %q", w.Type)
	}
	var req ConnectRequest
	switch {
	case w.Role == nil:
		return req, sigErr("MISSING-ROLE", "")
	case !Role(*w.Role).sends() && !Role(*w.Role).receives():
		return req, sigErr("INVALID-ROLE", "role must be sendrecv, sendonly or recvonly")
	}
	req.Role = Role(*w.Role)
	if w.ChannelID == nil {
		return req, sigErr("MISSING-CHANNEL-ID", "")
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
	if !req.Spotlight && (w.SpotlightFocusRID != nil || w.SpotlightUnfocusRID != nil) {
		return req, sigErr("SPOTLIGHT-RID-WITHOUT-SPOTLIGHT", "spotlight_focus_rid and spotlight_unfocus_rid need spotlight: true")
	}
	if w.Multistream != nil && !*w.Multistream {
		return req, sigErr("MULTISTREAM-REQUIRED", "sorad serves multistream connections only")
	}
	req.Multistream = true
	req.DataChannelSignaling = w.DataChannelSignaling != nil && *w.DataChannelSignaling
	if req.Role.sends() && !req.Audio.Enabled && !req.Video.Enabled && !req.DataChannelSignaling {
		return req, sigErr("NOTHING-TO-SEND", "role %s with audio and video both false", req.Role)
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
		return sigErr("INVALID-"+name, "must not be empty")
	case len(v) > maxIDLength:
		return sigErr("INVALID-"+name, "longer than %d bytes", maxIDLength)
	case !utf8.ValidString(v):
		return sigErr("INVALID-"+name, "not valid UTF-8")
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
			return MediaRequest{}, sigErr("INVALID-"+name, "must be a boolean or an object")
		}
		return MediaRequest{Enabled: on}, nil
	case '{':
	default:
		return MediaRequest{}, sigErr("INVALID-"+name, "must be a boolean or an object")
	}
	var obj struct {
		CodecType *string `json:"codec_type"`
		BitRate   *int    `json:"bit_rate"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return MediaRequest{}, sigErr("INVALID-"+name, "%s", jsonProblem(err))
	}
	m := MediaRequest{Enabled: true, Raw: append(json.RawMessage(nil), raw...)}
	if obj.CodecType != nil {
		c := strings.ToUpper(*obj.CodecType)
		if !codecs[c] {
			return MediaRequest{}, sigErr("UNSUPPORTED-"+name+"-CODEC", "codec_type %q", *obj.CodecType)
		}
		m.CodecType = c
	}
	if obj.BitRate != nil {
		if *obj.BitRate < 1 || *obj.BitRate > 50000 {
			return MediaRequest{}, sigErr("INVALID-"+name+"-BIT-RATE", "bit_rate must be 1-50000 kbps")
		}
		m.BitRate = *obj.BitRate
	}
	return m, nil
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
		return false, sigErr("INVALID-"+name, "must be a boolean")
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

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
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

// clientMessage is any message after connect; only the fields sorad reads.
type clientMessage struct {
	Type          string          `json:"type"`
	SDP           string          `json:"sdp"`
	Candidate     string          `json:"candidate"`
	SDPMid        *string         `json:"sdpMid"`
	SDPMLineIndex *uint16         `json:"sdpMLineIndex"`
	Reason        string          `json:"reason"`
	Stats         json.RawMessage `json:"stats"`
}
