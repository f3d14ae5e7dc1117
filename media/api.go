package media

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
)

// Role is a connection's role, as in Sora's connect message.
type Role = signaling.Role

// The roles.
const (
	RoleSendrecv = signaling.RoleSendrecv
	RoleSendonly = signaling.RoleSendonly
	RoleRecvonly = signaling.RoleRecvonly
)

// RID names a simulcast layer (r0, r1, r2) or none.
type RID = channel.RID

// NotFoundError is an API call naming a channel, connection or client that
// has no live connection on this node. The API answers 404 with Type.
type NotFoundError struct {
	Type   string
	Reason map[string]string
}

func (e *NotFoundError) Error() string { return e.Type }

// InvalidError is an API call the current state makes impossible, such as an
// item operation on metadata that is not an object. The API answers 400.
type InvalidError struct {
	Type   string
	Reason string
}

func (e *InvalidError) Error() string { return e.Type + ": " + e.Reason }

func channelNotFound(id string) error {
	return &NotFoundError{Type: "CHANNEL-NOT-FOUND", Reason: map[string]string{"channel_id": id}}
}

// members returns the channel's connections, or CHANNEL-NOT-FOUND.
func (m *Media) members(channelID string) ([]*connection, error) {
	s, err := m.session(channelID)
	if err != nil {
		return nil, err
	}
	return s.snapshot(), nil
}

// session returns the channel's live session, or CHANNEL-NOT-FOUND.
func (m *Media) session(channelID string) (*session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[channelID]
	if !ok {
		return nil, channelNotFound(channelID)
	}
	return s, nil
}

// selectMembers returns the channel's connections that match, or, when none
// does, a NotFoundError of type notFound naming field=value.
func (m *Media) selectMembers(channelID string, match func(*connection) bool, notFound, field, value string) ([]*connection, error) {
	all, err := m.members(channelID)
	if err != nil {
		return nil, err
	}
	var out []*connection
	for _, c := range all {
		if match(c) {
			out = append(out, c)
		}
	}
	if len(out) == 0 && notFound != "" {
		return nil, &NotFoundError{Type: notFound, Reason: map[string]string{"channel_id": channelID, field: value}}
	}
	return out, nil
}

func (m *Media) connectionIn(channelID, connectionID string) (*connection, error) {
	cs, err := m.selectMembers(channelID, func(c *connection) bool { return c.id == connectionID }, "CONNECTION-NOT-FOUND", "connection_id", connectionID)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// Selector names the connections of a channel an operation applies to: all
// of them, or those with one client ID, connection ID or role.
type Selector struct {
	ChannelID    string
	ClientID     string
	ConnectionID string
	Role         Role
}

func (m *Media) selected(sel Selector) ([]*connection, error) {
	switch {
	case sel.ConnectionID != "":
		c, err := m.connectionIn(sel.ChannelID, sel.ConnectionID)
		if err != nil {
			return nil, err
		}
		return []*connection{c}, nil
	case sel.ClientID != "":
		return m.selectMembers(sel.ChannelID, func(c *connection) bool { return c.client == sel.ClientID }, "CLIENT-NOT-FOUND", "client_id", sel.ClientID)
	case sel.Role != "":
		return m.selectMembers(sel.ChannelID, func(c *connection) bool { return c.req.Role == sel.Role }, "", "", "")
	default:
		return m.members(sel.ChannelID)
	}
}

// Disconnect closes the selected connections with 1000 DISCONNECTED-API.
// reason (the API's optional reason object) is kept for the event webhook.
func (m *Media) Disconnect(sel Selector, reason json.RawMessage) error {
	cs, err := m.selected(sel)
	if err != nil {
		return err
	}
	for _, c := range cs {
		c.endMu.Lock()
		c.apiReason = reason
		c.endMu.Unlock()
		c.close(signaling.CloseNormal, "DISCONNECTED-API")
	}
	return nil
}

// Push sends {"type":"push","data":data} to the selected connections that
// are established.
func (m *Media) Push(sel Selector, data json.RawMessage) error {
	cs, err := m.selected(sel)
	if err != nil {
		return err
	}
	push(establishedOf(cs), data)
	return nil
}

// ConnectionInfo is one connection in ListConnections and
// ListChannelConnections, in Sora's key names.
type ConnectionInfo struct {
	Audio        any    `json:"audio"`
	ChannelID    string `json:"channel_id"`
	ClientID     string `json:"client_id"`
	CreatedTime  int64  `json:"created_time"` // Unix microseconds
	BundleID     string `json:"bundle_id"`
	ConnectionID string `json:"connection_id"`
	SessionID    string `json:"session_id"`
	Multistream  bool   `json:"multistream"`
	Role         Role   `json:"role"`
	Simulcast    bool   `json:"simulcast"`
	Spotlight    bool   `json:"spotlight"`
	Video        any    `json:"video"`
	// EventMetadata is what the auth webhook's answer gave the connection.
	EventMetadata json.RawMessage `json:"event_metadata,omitempty"`
}

func (c *connection) info() ConnectionInfo {
	return ConnectionInfo{
		Audio:         mediaInfo(c.req.Audio, "OPUS"),
		ChannelID:     c.req.ChannelID,
		ClientID:      c.client,
		CreatedTime:   c.created.UnixMicro(),
		BundleID:      c.bundle,
		ConnectionID:  c.id,
		SessionID:     c.session.id,
		Multistream:   true,
		Role:          c.req.Role,
		Simulcast:     c.req.Simulcast,
		Spotlight:     c.req.Spotlight,
		Video:         c.videoInfo(),
		EventMetadata: c.grant.eventMetadata,
	}
}

// mediaInfo is audio as ListConnections shows it: false, or its codec.
func mediaInfo(r signaling.MediaRequest, codec string) any {
	if !r.Enabled {
		return false
	}
	return map[string]any{"codec_type": codec}
}

// videoInfo is video as ListConnections shows it: false, or the codec, the
// bit rate and the codec's parameters, as Sora shows them.
func (c *connection) videoInfo() any {
	if !c.req.Video.Enabled {
		return false
	}
	codec := c.videoCodec()
	out := map[string]any{"codec_type": codec, "bit_rate": c.videoBitRate.Load()}
	if key, params := videoParams(codec); key != "" {
		out[key] = params
	}
	return out
}

// videoParams are the codec parameters sorad negotiates for a video codec,
// under the key Sora shows them with (vp9_params, av1_params,
// h264_params); "" for a codec without any.
func videoParams(codec string) (key string, params any) {
	switch codec {
	case "VP9":
		return "vp9_params", map[string]int{"profile_id": 0}
	case "AV1":
		return "av1_params", map[string]int{"profile": 0}
	case "H264":
		return "h264_params", map[string]string{"profile_level_id": "42e01f"}
	}
	return "", nil
}

// sortedConnections returns this node's admitted connections, by channel
// then connection ID.
func (m *Media) sortedConnections() []*connection {
	m.mu.Lock()
	cs := make([]*connection, 0, len(m.conns))
	for _, c := range m.conns {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].req.ChannelID != cs[j].req.ChannelID {
			return cs[i].req.ChannelID < cs[j].req.ChannelID
		}
		return cs[i].id < cs[j].id
	})
	return cs
}

// ListConnections lists every connection on this node, by channel then
// connection ID.
func (m *Media) ListConnections() []ConnectionInfo {
	cs := m.sortedConnections()
	out := make([]ConnectionInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	return out
}

// ListChannelConnections lists a channel's connections; a channel without
// connections on this node lists none.
func (m *Media) ListChannelConnections(channelID string) []ConnectionInfo {
	cs, _ := m.members(channelID)
	out := make([]ConnectionInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	return out
}

// ChannelInfo is one live channel in ListChannels.
type ChannelInfo struct {
	ChannelID   string `json:"channel_id"`
	Multistream bool   `json:"multistream"`
	Spotlight   bool   `json:"spotlight"`
}

// ListChannels lists the channels with a live session on this node.
func (m *Media) ListChannels() []ChannelInfo {
	m.mu.Lock()
	out := make([]ChannelInfo, 0, len(m.sessions))
	for id, s := range m.sessions {
		out = append(out, ChannelInfo{ChannelID: id, Multistream: true, Spotlight: s.spotlight})
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ChannelID < out[j].ChannelID })
	return out
}

// MetadataEntry is one connection in ListSignalingNotifyMetadata.
type MetadataEntry struct {
	ClientID     string          `json:"client_id"`
	BundleID     string          `json:"bundle_id"`
	ConnectionID string          `json:"connection_id"`
	Metadata     json.RawMessage `json:"metadata"`
}

// ListSignalingNotifyMetadata lists the channel's connections' signaling
// notify metadata.
func (m *Media) ListSignalingNotifyMetadata(channelID string) ([]MetadataEntry, error) {
	cs, err := m.members(channelID)
	if err != nil {
		return nil, err
	}
	out := make([]MetadataEntry, 0, len(cs))
	for _, c := range cs {
		out = append(out, MetadataEntry{ClientID: c.client, BundleID: c.bundle, ConnectionID: c.id, Metadata: orEmptyObject(c.notifyMetadata())})
	}
	return out, nil
}

// GetSignalingNotifyMetadata returns one connection's metadata ({} if none).
func (m *Media) GetSignalingNotifyMetadata(channelID, connectionID string) (json.RawMessage, error) {
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		return nil, err
	}
	return orEmptyObject(c.notifyMetadata()), nil
}

// metadataPush is the push the metadata APIs send when asked to.
type metadataPush struct {
	Action       string          `json:"action"`
	ConnectionID string          `json:"connection_id"`
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	Key          *string         `json:"key,omitempty"`
	Value        json.RawMessage `json:"value,omitempty"`
	Type         string          `json:"type"`
}

// changeMetadata applies change to a connection's metadata under its lock,
// pushes p to the channel when asked, and returns what change returns.
func (m *Media) changeMetadata(channelID, connectionID string, pushIt bool, change func(cur json.RawMessage) (next, answer json.RawMessage, p metadataPush, err error)) (json.RawMessage, error) {
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		return nil, err
	}
	c.metaMu.Lock()
	next, answer, p, err := change(c.notifyMeta)
	if err == nil && len(next) > m.cfg.MaxMetadataSize {
		err = &InvalidError{Type: "METADATA-TOO-LARGE", Reason: fmt.Sprintf("the metadata would be %d bytes; at most %d are accepted", len(next), m.cfg.MaxMetadataSize)}
	}
	if err == nil {
		c.notifyMeta = next
	}
	c.metaMu.Unlock()
	if err != nil {
		return nil, err
	}
	if pushIt {
		p.ConnectionID, p.Type = c.id, "signaling_notify_metadata_ext"
		if all, err := m.members(channelID); err == nil {
			push(establishedOf(all), p)
		}
	}
	return answer, nil
}

// PutSignalingNotifyMetadata replaces a connection's metadata and returns it.
func (m *Media) PutSignalingNotifyMetadata(channelID, connectionID string, meta json.RawMessage, pushIt bool) (json.RawMessage, error) {
	return m.changeMetadata(channelID, connectionID, pushIt, func(json.RawMessage) (json.RawMessage, json.RawMessage, metadataPush, error) {
		return meta, meta, metadataPush{Action: "PutMetadata", Metadata: meta}, nil
	})
}

// DeleteSignalingNotifyMetadata removes a connection's metadata and returns
// what it was.
func (m *Media) DeleteSignalingNotifyMetadata(channelID, connectionID string, pushIt bool) (json.RawMessage, error) {
	return m.changeMetadata(channelID, connectionID, pushIt, func(cur json.RawMessage) (json.RawMessage, json.RawMessage, metadataPush, error) {
		was := orEmptyObject(cur)
		return nil, was, metadataPush{Action: "DeleteMetadata", Metadata: was}, nil
	})
}

// PutSignalingNotifyMetadataItem sets one key and returns the metadata.
func (m *Media) PutSignalingNotifyMetadataItem(channelID, connectionID, key string, value json.RawMessage, pushIt bool) (json.RawMessage, error) {
	return m.changeMetadata(channelID, connectionID, pushIt, func(cur json.RawMessage) (json.RawMessage, json.RawMessage, metadataPush, error) {
		obj, err := metadataObject(cur)
		if err != nil {
			return nil, nil, metadataPush{}, err
		}
		obj[key] = value
		next, _ := json.Marshal(obj)
		return next, next, metadataPush{Action: "PutMetadataItem", Key: &key, Value: value}, nil
	})
}

// DeleteSignalingNotifyMetadataItem removes one key (absent is fine) and
// returns the metadata.
func (m *Media) DeleteSignalingNotifyMetadataItem(channelID, connectionID, key string, pushIt bool) (json.RawMessage, error) {
	return m.changeMetadata(channelID, connectionID, pushIt, func(cur json.RawMessage) (json.RawMessage, json.RawMessage, metadataPush, error) {
		obj, err := metadataObject(cur)
		if err != nil {
			return nil, nil, metadataPush{}, err
		}
		delete(obj, key)
		next, _ := json.Marshal(obj)
		return next, next, metadataPush{Action: "DeleteMetadataItem", Key: &key}, nil
	})
}

// metadataObject decodes metadata that must be an object (or absent/null).
func metadataObject(cur json.RawMessage) (map[string]json.RawMessage, error) {
	obj := map[string]json.RawMessage{}
	if len(cur) == 0 || bytes.Equal(cur, []byte("null")) {
		return obj, nil
	}
	if err := json.Unmarshal(cur, &obj); err != nil {
		return nil, &InvalidError{Type: "METADATA-NOT-OBJECT", Reason: "the connection's metadata is not a JSON object"}
	}
	return obj, nil
}

func orEmptyObject(meta json.RawMessage) json.RawMessage {
	if len(meta) == 0 || bytes.Equal(meta, []byte("null")) {
		return json.RawMessage("{}")
	}
	return meta
}

// ConnectionStats is GetStatsConnection's answer for one connection.
type ConnectionStats struct {
	Timestamp    string      `json:"timestamp"`
	ChannelID    string      `json:"channel_id"`
	SessionID    string      `json:"session_id"`
	ClientID     string      `json:"client_id"`
	BundleID     string      `json:"bundle_id"`
	ConnectionID string      `json:"connection_id"`
	Role         Role        `json:"role"`
	Simulcast    bool        `json:"simulcast"`
	Spotlight    bool        `json:"spotlight"`
	Established  bool        `json:"established"`
	CreatedTime  int64       `json:"created_time"`
	Tracks       []TrackStat `json:"tracks"`
}

// TrackStat counts what a connection publishes (direction "recv": sorad
// receives it, per simulcast layer in Layers) or receives ("send": sorad
// sends it, the layer it forwards now in RID).
type TrackStat struct {
	Direction   string      `json:"direction"`
	Kind        string      `json:"kind"`
	Codec       string      `json:"codec"`
	FromConnID  string      `json:"publisher_connection_id"`
	Packets     int64       `json:"total_received_rtp,omitempty"`
	Bytes       int64       `json:"total_received_rtp_byte_size,omitempty"`
	Layers      []LayerStat `json:"layers,omitempty"`
	RID         RID         `json:"rid,omitempty"`
	SentPackets int64       `json:"total_sent_rtp,omitempty"`
	SentBytes   int64       `json:"total_sent_rtp_byte_size,omitempty"`
}

// LayerStat counts one simulcast layer a connection publishes.
type LayerStat struct {
	RID     RID    `json:"rid"`
	SSRC    uint32 `json:"ssrc"`
	Packets int64  `json:"total_received_rtp"`
	Bytes   int64  `json:"total_received_rtp_byte_size"`
}

func (c *connection) stats() ConnectionStats {
	st := ConnectionStats{
		Timestamp:    signaling.Timestamp(time.Now()),
		ChannelID:    c.req.ChannelID,
		SessionID:    c.session.id,
		ClientID:     c.client,
		BundleID:     c.bundle,
		ConnectionID: c.id,
		Role:         c.req.Role,
		Simulcast:    c.req.Simulcast,
		Spotlight:    c.req.Spotlight,
		Established:  c.isEstablished(),
		CreatedTime:  c.created.UnixMicro(),
		Tracks:       []TrackStat{},
	}
	c.pubMu.Lock()
	for _, p := range c.published {
		ts := TrackStat{Direction: "recv", Kind: p.track.Kind().String(), Codec: p.track.Codec().MimeType, FromConnID: c.id}
		for _, l := range p.track.Layers() {
			ts.Packets += l.Packets
			ts.Bytes += l.Bytes
			if p.track.Simulcast() {
				ts.Layers = append(ts.Layers, LayerStat{RID: channel.LayerRID(l.Layer), SSRC: l.SSRC, Packets: l.Packets, Bytes: l.Bytes})
			}
		}
		st.Tracks = append(st.Tracks, ts)
	}
	c.pubMu.Unlock()
	for _, d := range c.downTracks() {
		ds := d.fwd.Stats()
		ts := TrackStat{Direction: "send", Kind: d.pub.track.Kind().String(), Codec: d.pub.track.Codec().MimeType, FromConnID: d.pub.owner.id, SentPackets: ds.Packets, SentBytes: ds.Bytes}
		if d.pub.track.Simulcast() {
			ts.RID = channel.LayerRID(ds.Layer)
		}
		st.Tracks = append(st.Tracks, ts)
	}
	sort.Slice(st.Tracks, func(i, j int) bool {
		a, b := st.Tracks[i], st.Tracks[j]
		return a.Direction+a.FromConnID+a.Kind < b.Direction+b.FromConnID+b.Kind
	})
	return st
}

// GetStatsConnection returns one connection's statistics.
func (m *Media) GetStatsConnection(channelID, connectionID string) (ConnectionStats, error) {
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		return ConnectionStats{}, err
	}
	return c.stats(), nil
}

// GetStatsClient returns the statistics of a client's connections.
func (m *Media) GetStatsClient(channelID, clientID string) ([]ConnectionStats, error) {
	cs, err := m.selected(Selector{ChannelID: channelID, ClientID: clientID})
	if err != nil {
		return nil, err
	}
	out := make([]ConnectionStats, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.stats())
	}
	return out, nil
}
