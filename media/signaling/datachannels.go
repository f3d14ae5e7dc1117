package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The data_channels field of connect: how the client wants each DataChannel
// the server opens (the signaling ones, and "#" messaging labels).

// MaxDataChannels bounds the entries of one connect's data_channels.
const MaxDataChannels = 32

// Direction is which way messages go on a messaging label, from the
// client's side.
type Direction string

const (
	DirSendonly Direction = "sendonly"
	DirRecvonly Direction = "recvonly"
	DirSendrecv Direction = "sendrecv"
)

// Sends reports whether the client sends on a label of this direction.
func (d Direction) Sends() bool { return d == DirSendonly || d == DirSendrecv }

// Receives reports whether the client receives on such a label.
func (d Direction) Receives() bool { return d == DirRecvonly || d == DirSendrecv }

// signalingLabels are the DataChannels of DataChannel signaling; their
// entries may only change compression and delivery options.
var signalingLabels = map[string]bool{"signaling": true, "notify": true, "push": true, "stats": true, "rpc": true}

// IsMessagingLabel reports whether label is an application messaging label.
func IsMessagingLabel(label string) bool { return strings.HasPrefix(label, "#") }

// DataChannelSpec is one validated data_channels entry. Pointers are nil
// when the client left the option to the server.
type DataChannelSpec struct {
	Label             string
	Direction         Direction // "" for signaling labels that name none
	Ordered           *bool
	MaxPacketLifeTime *uint16
	MaxRetransmits    *uint16
	Protocol          string
	Compress          *bool
	// SenderConnectionID: messages delivered on this label start with the
	// sender's 26-byte connection ID.
	SenderConnectionID bool
}

// dataChannelWire is an entry as it arrives.
type dataChannelWire struct {
	Label             *string          `json:"label"`
	Direction         *string          `json:"direction"`
	Ordered           *bool            `json:"ordered"`
	MaxPacketLifeTime *int             `json:"max_packet_life_time"`
	MaxRetransmits    *int             `json:"max_retransmits"`
	Protocol          *string          `json:"protocol"`
	Compress          *bool            `json:"compress"`
	Header            *[]headerOptWire `json:"header"`
}

type headerOptWire struct {
	Type *string `json:"type"`
}

// ParseDataChannels validates a connect's data_channels (raw; absent or
// null gives none). A malformed entry is an INVALID-DATA-CHANNELS error
// naming it.
func ParseDataChannels(raw json.RawMessage) ([]DataChannelSpec, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	bad := func(format string, args ...any) error {
		return Errorf("INVALID-DATA-CHANNELS", format, args...)
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, bad("must be an array of objects")
	}
	if len(entries) > MaxDataChannels {
		return nil, bad("%d entries; at most %d", len(entries), MaxDataChannels)
	}
	out := make([]DataChannelSpec, 0, len(entries))
	seen := map[string]bool{}
	for i, e := range entries {
		spec, err := parseDataChannel(e)
		if err != nil {
			return nil, bad("data_channels[%d]%s", i, err.Error())
		}
		if seen[spec.Label] {
			return nil, bad("data_channels[%d].label %q appears twice", i, clipLabel(spec.Label))
		}
		seen[spec.Label] = true
		out = append(out, spec)
	}
	return out, nil
}

// parseDataChannel validates one entry; its errors start with the field
// (".label ...") for ParseDataChannels to prefix.
func parseDataChannel(raw json.RawMessage) (DataChannelSpec, error) {
	var spec DataChannelSpec
	var w dataChannelWire
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &w) != nil {
		return spec, fmt.Errorf(" must be an object with fields of the documented types")
	}
	switch {
	case w.Label == nil:
		return spec, fmt.Errorf(".label is missing")
	case *w.Label == "" || len(*w.Label) > MaxIDLength || !utf8.ValidString(*w.Label):
		return spec, fmt.Errorf(".label must be 1-%d bytes of UTF-8", MaxIDLength)
	case !IsMessagingLabel(*w.Label) && !signalingLabels[*w.Label]:
		return spec, fmt.Errorf(".label %q must start with # or be one of signaling, notify, push, stats, rpc", clipLabel(*w.Label))
	}
	spec.Label = *w.Label
	if w.Direction != nil {
		switch d := Direction(*w.Direction); d {
		case DirSendonly, DirRecvonly, DirSendrecv:
			spec.Direction = d
		default:
			return spec, fmt.Errorf(".direction must be sendonly, recvonly or sendrecv")
		}
	} else if IsMessagingLabel(spec.Label) {
		return spec, fmt.Errorf(".direction is missing (a # label needs sendonly, recvonly or sendrecv)")
	}
	if w.MaxPacketLifeTime != nil && w.MaxRetransmits != nil {
		return spec, fmt.Errorf(": max_packet_life_time and max_retransmits exclude each other")
	}
	for _, f := range []struct {
		name string
		v    *int
		dst  **uint16
	}{{"max_packet_life_time", w.MaxPacketLifeTime, &spec.MaxPacketLifeTime}, {"max_retransmits", w.MaxRetransmits, &spec.MaxRetransmits}} {
		if f.v == nil {
			continue
		}
		if *f.v < 0 || *f.v > 65535 {
			return spec, fmt.Errorf(".%s must be 0-65535", f.name)
		}
		n := uint16(*f.v)
		*f.dst = &n
	}
	if w.Protocol != nil {
		if len(*w.Protocol) > MaxIDLength || !utf8.ValidString(*w.Protocol) {
			return spec, fmt.Errorf(".protocol must be at most %d bytes of UTF-8", MaxIDLength)
		}
		spec.Protocol = *w.Protocol
	}
	spec.Ordered, spec.Compress = w.Ordered, w.Compress
	if w.Header != nil {
		if !IsMessagingLabel(spec.Label) {
			return spec, fmt.Errorf(".header is for # labels only")
		}
		for j, h := range *w.Header {
			if h.Type == nil || *h.Type != "sender_connection_id" {
				return spec, fmt.Errorf(".header[%d].type must be sender_connection_id", j)
			}
			spec.SenderConnectionID = true
		}
	}
	return spec, nil
}

// clipLabel keeps a label short enough for a close reason.
func clipLabel(s string) string {
	if len(s) <= 24 {
		return s
	}
	cut := 24
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
