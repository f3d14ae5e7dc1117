package signaling

import (
	"encoding/json"
	"fmt"
	"time"
)

// Outbound is a message sorad sends. Encode adds its "type".
type Outbound interface {
	Type() string
}

// Encode marshals msg with "type" as its first member.
func Encode(msg Outbound) ([]byte, error) {
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", msg.Type(), err)
	}
	if len(b) < 2 || b[0] != '{' {
		return nil, fmt.Errorf("encode %s: not a JSON object", msg.Type())
	}
	typ, _ := json.Marshal(msg.Type())
	out := make([]byte, 0, len(b)+len(typ)+9)
	out = append(out, `{"type":`...)
	out = append(out, typ...)
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...), nil
}

// TimestampLayout is RFC 3339 in UTC with microseconds, as Sora writes
// times.
const TimestampLayout = "2006-01-02T15:04:05.000000Z"

// Timestamp formats t in TimestampLayout.
func Timestamp(t time.Time) string { return t.UTC().Format(TimestampLayout) }

// ICEConfig is the RTCConfiguration an offer carries.
type ICEConfig struct {
	ICEServers         []ICEServer `json:"iceServers"`
	ICETransportPolicy string      `json:"iceTransportPolicy"`
}

// ICEServer is one entry of iceServers; the native SDKs require username
// and credential.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// Encoding is one RTCRtpEncodingParameters of a simulcast sender, in the
// browsers' camelCase.
type Encoding struct {
	RID                   string  `json:"rid"`
	Active                bool    `json:"active"`
	MaxBitrate            int     `json:"maxBitrate,omitempty"`
	MaxFramerate          float64 `json:"maxFramerate,omitempty"`
	ScaleResolutionDownBy float64 `json:"scaleResolutionDownBy,omitempty"`
	ScalabilityMode       string  `json:"scalabilityMode,omitempty"`
}

// Offer is the first offer, the answer to connect.
type Offer struct {
	SDP                       string            `json:"sdp"`
	ConnectionID              string            `json:"connection_id"`
	ClientID                  string            `json:"client_id"`
	BundleID                  string            `json:"bundle_id"`
	SessionID                 string            `json:"session_id"`
	ChannelID                 string            `json:"channel_id"`
	Config                    ICEConfig         `json:"config"`
	Metadata                  json.RawMessage   `json:"metadata"` // what an auth webhook returned; null without one
	Version                   string            `json:"version"`
	Multistream               bool              `json:"multistream"`
	Simulcast                 bool              `json:"simulcast"`
	Spotlight                 bool              `json:"spotlight"`
	DataChannelSignaling      bool              `json:"data_channel_signaling"`
	IgnoreDisconnectWebSocket bool              `json:"ignore_disconnect_websocket"`
	Audio                     bool              `json:"audio"`
	AudioCodecType            string            `json:"audio_codec_type,omitempty"`
	Video                     bool              `json:"video"`
	VideoCodecType            string            `json:"video_codec_type,omitempty"`
	VideoBitRate              int               `json:"video_bit_rate,omitempty"`
	Mid                       map[string]string `json:"mid"`
	Encodings                 []Encoding        `json:"encodings,omitempty"`
	// DataChannels lists every DataChannel the server opens, with DataChannel
	// signaling or messaging labels; RPCMethods the methods of DC rpc.
	DataChannels []OfferDataChannel `json:"data_channels,omitempty"`
	RPCMethods   []string           `json:"rpc_methods,omitempty"`
}

// OfferDataChannel describes one DataChannel of the offer: the client
// learns from it which labels to expect and whether their payloads are
// zlib-compressed.
type OfferDataChannel struct {
	Label     string         `json:"label"`
	Direction Direction      `json:"direction"`
	Compress  bool           `json:"compress"`
	Header    []HeaderOption `json:"header,omitempty"`
}

// HeaderOption is one header prepended to messages on a # label.
type HeaderOption struct {
	Type   string `json:"type"`             // sender_connection_id
	Length int    `json:"length,omitempty"` // bytes of the header
}

// Type implements Outbound.
func (Offer) Type() string { return "offer" }

// ReOffer renegotiates: the forwarded tracks changed, or the sender's bit
// rate did.
type ReOffer struct {
	SDP string `json:"sdp"`
}

// Type implements Outbound.
func (ReOffer) Type() string { return "re-offer" }

// Ping asks for a pong; with Stats, for the client's RTCStats in it.
type Ping struct {
	Stats bool `json:"stats"`
}

// Type implements Outbound.
func (Ping) Type() string { return "ping" }

// Switched tells the client, on the WebSocket, that signaling now goes over
// DataChannels.
type Switched struct {
	IgnoreDisconnectWebSocket bool `json:"ignore_disconnect_websocket"`
}

// Type implements Outbound.
func (Switched) Type() string { return "switched" }

// Close ends a connection whose signaling switched to DataChannels (on DC
// signaling, before the server closes the DataChannels).
type Close struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Type implements Outbound.
func (Close) Type() string { return "close" }

// ReqStats asks, on DC stats, for the client's RTCStats.
type ReqStats struct{}

// Type implements Outbound.
func (ReqStats) Type() string { return "req-stats" }

// Push carries data from the Push* APIs and the metadata APIs.
type Push struct {
	Data any `json:"data"`
}

// Type implements Outbound.
func (Push) Type() string { return "push" }

// Redirect sends the client to the node in charge of its channel.
type Redirect struct {
	Location string `json:"location"`
}

// Type implements Outbound.
func (Redirect) Type() string { return "redirect" }

// NotifyEntry describes a member in the data list of the connection.created
// a newcomer gets about itself.
type NotifyEntry struct {
	ClientID      string          `json:"client_id"`
	BundleID      string          `json:"bundle_id"`
	ConnectionID  string          `json:"connection_id"`
	AuthnMetadata json.RawMessage `json:"authn_metadata,omitempty"`
	AuthzMetadata json.RawMessage `json:"authz_metadata,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
}

// ConnectionNotify is connection.created, connection.updated or
// connection.destroyed about Subject, with the channel's counts.
type ConnectionNotify struct {
	EventType                  string          `json:"event_type"`
	Role                       Role            `json:"role"`
	SessionID                  string          `json:"session_id"`
	ClientID                   string          `json:"client_id"`
	BundleID                   string          `json:"bundle_id"`
	ConnectionID               string          `json:"connection_id"`
	Audio                      bool            `json:"audio"`
	Video                      bool            `json:"video"`
	Minutes                    int             `json:"minutes"`
	ChannelConnections         int             `json:"channel_connections"`
	ChannelSendrecvConnections int             `json:"channel_sendrecv_connections"`
	ChannelSendonlyConnections int             `json:"channel_sendonly_connections"`
	ChannelRecvonlyConnections int             `json:"channel_recvonly_connections"`
	TurnTransportType          string          `json:"turn_transport_type"`
	Timestamp                  string          `json:"timestamp"`
	AuthnMetadata              json.RawMessage `json:"authn_metadata,omitempty"`
	AuthzMetadata              json.RawMessage `json:"authz_metadata,omitempty"`
	Metadata                   json.RawMessage `json:"metadata,omitempty"`
	// Data lists the members already there, in the newcomer's own
	// connection.created only.
	Data *[]NotifyEntry `json:"data,omitempty"`
}

// Type implements Outbound.
func (ConnectionNotify) Type() string { return "notify" }

// SpotlightNotify is spotlight.focused, spotlight.unfocused or
// spotlight.changed about one sender of a spotlight channel.
type SpotlightNotify struct {
	EventType    string `json:"event_type"`
	ChannelID    string `json:"channel_id"`
	ClientID     string `json:"client_id"`
	ConnectionID string `json:"connection_id"`
	// SpotlightID identifies one focus change (spotlight.changed only).
	SpotlightID     string `json:"spotlight_id,omitempty"`
	SpotlightNumber int    `json:"spotlight_number"`
	Fixed           bool   `json:"fixed"`
	Audio           bool   `json:"audio"`
	Video           bool   `json:"video"`
	Timestamp       string `json:"timestamp"`
}

// Type implements Outbound.
func (SpotlightNotify) Type() string { return "notify" }

// SimulcastSwitched tells a receiver that the layer it gets from a sender
// changed.
type SimulcastSwitched struct {
	EventType          string   `json:"event_type"` // simulcast.switched
	Timestamp          string   `json:"timestamp"`
	SenderConnectionID string   `json:"sender_connection_id"`
	Priority           string   `json:"priority"` // higher or lower
	Trigger            string   `json:"trigger"`  // receiver (a request) or sender (its layers)
	RPCRIDs            []string `json:"rpc_rids"`
	AutoRIDs           []string `json:"auto_rids"`
	RequestRID         string   `json:"request_rid"`
	CurrentRID         string   `json:"current_rid"`
	PreviousRID        string   `json:"previous_rid"`
}

// Type implements Outbound.
func (SimulcastSwitched) Type() string { return "notify" }
