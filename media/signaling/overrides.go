package signaling

import (
	"encoding/json"
	"fmt"
	"sort"
)

// An auth webhook's answer may change what a connect asked for. The fields
// that are connect fields are written into the connect as the client sent
// it, which is then checked again as a connect is: an override cannot make
// a connection that a client could not have asked for.

// connectOverrides are the answer fields that replace the connect field of
// the same name.
var connectOverrides = map[string]bool{
	"client_id": true, "bundle_id": true, "audio": true, "video": true,
	"simulcast": true, "simulcast_rid": true, "simulcast_request_rid": true,
	"spotlight": true, "spotlight_number": true, "spotlight_focus_rid": true, "spotlight_unfocus_rid": true,
	"data_channel_signaling": true, "ignore_disconnect_websocket": true, "data_channels": true,
	"signaling_notify_metadata": true,
}

// mediaOverrides are the answer fields that go into the connect's audio or
// video object, under the name given. The codec parameter fields
// (audio_opus_params, video_vp9_params, video_av1_params,
// video_h264_params) are not among them: sorad negotiates one fixed set of
// parameters per codec, so they are returned to the caller as fields it
// does not apply, rather than kept as if they had been.
var mediaOverrides = map[string]struct{ kind, field string }{
	"audio_codec_type": {"audio", "codec_type"},
	"audio_bit_rate":   {"audio", "bit_rate"},
	"video_codec_type": {"video", "codec_type"},
	"video_bit_rate":   {"video", "bit_rate"},
}

// ApplyOverrides returns req with the connect fields of an auth webhook's
// answer applied, and the answer's fields it did not apply (sorted) for the
// caller to handle or report. The result is checked as a connect; a bad
// override is an *Error naming the field. req's Metadata is kept as it was
// (the access token already taken out).
func ApplyOverrides(req ConnectRequest, fields map[string]json.RawMessage) (ConnectRequest, []string, error) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(req.Raw, &msg); err != nil {
		return req, nil, fmt.Errorf("apply overrides: the connect is not an object: %w", err)
	}
	var rest []string
	changed := false
	for k, v := range fields {
		switch {
		case connectOverrides[k]:
			msg[k] = v
			changed = true
		case mediaOverrides[k].kind != "":
			changed = true
		default:
			rest = append(rest, k)
		}
	}
	// Codec and bit rate fields after audio and video themselves, so that
	// an answer may give both.
	for k, v := range fields {
		o, ok := mediaOverrides[k]
		if !ok {
			continue
		}
		obj := map[string]json.RawMessage{}
		switch cur := msg[o.kind]; {
		case string(cur) == "false":
			continue // the kind is off: nothing to tune
		case len(cur) > 0 && cur[0] == '{':
			if err := json.Unmarshal(cur, &obj); err != nil {
				return req, nil, Errorf("INVALID-AUTH-WEBHOOK-OVERRIDE", "%s: %s", o.kind, JSONProblem(err))
			}
		}
		obj[o.field] = v
		b, _ := json.Marshal(obj)
		msg[o.kind] = b
	}
	sort.Strings(rest)
	if !changed {
		return req, rest, nil
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return req, nil, fmt.Errorf("apply overrides: %w", err)
	}
	out, err := ParseConnect(b)
	if err != nil {
		if se, ok := err.(*Error); ok {
			return req, nil, Errorf("INVALID-AUTH-WEBHOOK-OVERRIDE", "%s", se.Reason)
		}
		return req, nil, err
	}
	out.Metadata = req.Metadata
	return out, rest, nil
}
