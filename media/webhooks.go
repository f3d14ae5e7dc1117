package media

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sorad/sorad/media/signaling"
	"github.com/sorad/sorad/media/webhook"
)

// Sora's webhooks, as the media plane sees them: the auth webhook admits a
// connect (after placement, on the node that serves it, so once per
// admitted connect) and may change it; session.*, connection.*,
// spotlight.* and the clients' statistics are told to the session, event
// and stats webhooks. Package webhook delivers them; this file builds
// their bodies. The common fields (id, timestamp, label, version,
// node_name) are the delivery's.

// grant is what an auth webhook's answer gave a connection beyond its
// connect fields.
type grant struct {
	metadata      json.RawMessage // authz metadata: the offer's metadata, notifies' authz_metadata
	eventMetadata json.RawMessage // in ListConnections and the event webhooks
	notifyOff     bool            // signaling_notify: false
	lifetime      time.Duration   // connection_lifetime; 0 none
	uaStatsOff    bool            // user_agent_stats: false
	// rpcMethods are the RPC methods the connection may call (their full
	// names); nil: every one sorad serves.
	rpcMethods []string
}

// hooks is the webhook delivery, nil when none is configured.
func (m *Media) hooks() *webhook.Client { return m.cfg.Webhooks }

// authorize asks the auth webhook about a connect that this node is about
// to admit, and applies its answer to req. No webhook admits everyone.
func (m *Media) authorize(ctx context.Context, req *signaling.ConnectRequest, id string) (grant, error) {
	h := m.hooks()
	if h == nil || !h.AuthEnabled() {
		return grant{}, nil
	}
	ans, err := h.Auth(ctx, id, m.authRequest(*req, id))
	if err != nil {
		reason := "AUTH-WEBHOOK-FAILED"
		var ae *webhook.AuthError
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		m.log.Warn("auth webhook gave no answer; connect refused", "channel_id", req.ChannelID, "connection_id", id, "error", err)
		return grant{}, &refusal{reason}
	}
	if !ans.Allowed {
		reason := ans.Reason
		if reason == "" {
			reason = "AUTH-WEBHOOK-DENIED"
		}
		m.log.Info("auth webhook denied a connect", "channel_id", req.ChannelID, "connection_id", id)
		return grant{}, &forbidden{reason}
	}
	out, rest, err := signaling.ApplyOverrides(*req, ans.Fields)
	if err != nil {
		return grant{}, err
	}
	if err := m.checkMetadata(out); err != nil {
		return grant{}, err
	}
	var g grant
	for _, k := range rest {
		v := ans.Fields[k]
		if err := m.grantField(&g, k, v); err != nil {
			return grant{}, signaling.Errorf("INVALID-AUTH-WEBHOOK-OVERRIDE", "%s: %v", k, err)
		}
	}
	*req = out
	return g, nil
}

// grantField applies one answer field that is not a connect field, or
// reports once that sorad does not support it.
func (m *Media) grantField(g *grant, key string, v json.RawMessage) error {
	switch key {
	case "metadata", "event_metadata":
		if len(v) > m.cfg.MaxMetadataSize {
			return errors.New("larger than signaling_max_metadata_size")
		}
		if key == "metadata" {
			g.metadata = v
		} else {
			g.eventMetadata = v
		}
	case "signaling_notify", "user_agent_stats":
		var on bool
		if err := json.Unmarshal(v, &on); err != nil {
			return errors.New("must be a boolean")
		}
		if key == "signaling_notify" {
			g.notifyOff = !on
		} else {
			g.uaStatsOff = !on
		}
	case "rpc_methods":
		var names []string
		if err := json.Unmarshal(v, &names); err != nil {
			return errors.New("must be an array of method names")
		}
		g.rpcMethods = []string{}
		for _, name := range rpcMethodNames() {
			if slices.Contains(names, name) {
				g.rpcMethods = append(g.rpcMethods, name)
			}
		}
	case "connection_lifetime":
		var secs int64
		if err := json.Unmarshal(v, &secs); err != nil || secs < 1 || secs > 86400*365 {
			return errors.New("must be whole seconds, 1 or more")
		}
		g.lifetime = time.Duration(secs) * time.Second
	default:
		if m.firstUnsupported("auth." + key) {
			m.log.Warn("auth webhook answer field not supported by sorad; ignored (logged once)", "field", key)
		}
	}
	return nil
}

// maxUnsupported bounds the unsupported answer fields remembered (a
// receiver could send endless new names); beyond it they are not logged.
const maxUnsupported = 256

// firstUnsupported reports whether an unsupported answer field is seen for
// the first time (and there is room to remember it).
func (m *Media) firstUnsupported(key string) bool {
	if _, seen := m.unsupported.Load(key); seen || m.unsupportedN.Load() >= maxUnsupported {
		return false
	}
	if _, seen := m.unsupported.LoadOrStore(key, true); seen {
		return false
	}
	m.unsupportedN.Add(1)
	return true
}

// soraClientPattern splits a sora_client string: "<type> <version> (<commit>)".
var soraClientPattern = regexp.MustCompile(`^(.*?)\s+(\d[\w.\-]*)(?:\s+\((\w+)\))?\s*$`)

// soraClient is sora_client as webhooks carry it.
type soraClient struct {
	Type        string `json:"type"`
	Raw         string `json:"raw"`
	Version     string `json:"version"`
	CommitShort string `json:"commit_short"`
	Environment string `json:"environment"`
	Libwebrtc   string `json:"libwebrtc"`
}

func parseSoraClient(raw, environment string) soraClient {
	sc := soraClient{Type: strings.TrimSpace(raw), Raw: raw, Environment: environment}
	if m := soraClientPattern.FindStringSubmatch(raw); m != nil {
		sc.Type, sc.Version, sc.CommitShort = m[1], m[2], m[3]
	}
	return sc
}

// channelCounts are a channel's connections by role.
type channelCounts struct {
	ChannelConnections         int `json:"channel_connections"`
	ChannelSendrecvConnections int `json:"channel_sendrecv_connections"`
	ChannelSendonlyConnections int `json:"channel_sendonly_connections"`
	ChannelRecvonlyConnections int `json:"channel_recvonly_connections"`
}

func countsOf(members []*connection) channelCounts {
	var n channelCounts
	for _, c := range members {
		n.ChannelConnections++
		switch c.req.Role {
		case signaling.RoleSendrecv:
			n.ChannelSendrecvConnections++
		case signaling.RoleSendonly:
			n.ChannelSendonlyConnections++
		case signaling.RoleRecvonly:
			n.ChannelRecvonlyConnections++
		}
	}
	return n
}

// authRequest is the auth webhook's body.
type authRequest struct {
	Role                      signaling.Role  `json:"role"`
	ChannelID                 string          `json:"channel_id"`
	ClientID                  string          `json:"client_id,omitempty"`
	BundleID                  string          `json:"bundle_id,omitempty"`
	ConnectionID              string          `json:"connection_id"`
	Metadata                  json.RawMessage `json:"metadata,omitempty"`
	Multistream               bool            `json:"multistream"`
	Simulcast                 bool            `json:"simulcast"`
	SimulcastRID              string          `json:"simulcast_rid,omitempty"`
	Spotlight                 bool            `json:"spotlight"`
	SpotlightNumber           int             `json:"spotlight_number,omitempty"`
	SpotlightFocusRID         string          `json:"spotlight_focus_rid,omitempty"`
	SpotlightUnfocusRID       string          `json:"spotlight_unfocus_rid,omitempty"`
	Audio                     any             `json:"audio"`
	AudioCodecType            string          `json:"audio_codec_type,omitempty"`
	AudioBitRate              int             `json:"audio_bit_rate,omitempty"`
	Video                     any             `json:"video"`
	VideoCodecType            string          `json:"video_codec_type,omitempty"`
	VideoBitRate              int             `json:"video_bit_rate,omitempty"`
	videoParamFields                          // as the client's video object gave them
	DataChannelSignaling      bool            `json:"data_channel_signaling"`
	IgnoreDisconnectWebSocket bool            `json:"ignore_disconnect_websocket"`
	DataChannels              json.RawMessage `json:"data_channels,omitempty"`
	ForwardingFilter          json.RawMessage `json:"forwarding_filter,omitempty"`
	Redirect                  bool            `json:"redirect,omitempty"`
	SoraClient                soraClient      `json:"sora_client"`
	E2EE                      bool            `json:"e2ee"`
	channelCounts
}

// videoParamFields are video_vp9_params, video_av1_params and
// video_h264_params; at most one is set.
type videoParamFields struct {
	VideoVP9Params  any `json:"video_vp9_params,omitempty"`
	VideoAV1Params  any `json:"video_av1_params,omitempty"`
	VideoH264Params any `json:"video_h264_params,omitempty"`
}

// set puts params under the field named by key (vp9_params, av1_params
// or h264_params); other keys are ignored.
func (f *videoParamFields) set(key string, params any) {
	switch key {
	case "vp9_params":
		f.VideoVP9Params = params
	case "av1_params":
		f.VideoAV1Params = params
	case "h264_params":
		f.VideoH264Params = params
	}
}

// negotiatedVideoParams are the parameters sorad negotiates for codec.
func negotiatedVideoParams(codec string) videoParamFields {
	var f videoParamFields
	f.set(videoParams(codec))
	return f
}

// requestedVideoParams are the codec parameters a client's video object
// carried, as it sent them.
func requestedVideoParams(video json.RawMessage) videoParamFields {
	var obj map[string]json.RawMessage
	var f videoParamFields
	if json.Unmarshal(video, &obj) != nil {
		return f
	}
	for _, key := range []string{"vp9_params", "av1_params", "h264_params"} {
		if v, ok := obj[key]; ok {
			f.set(key, v)
		}
	}
	return f
}

// mediaField is audio or video as webhooks show them: false, true, or the
// object the client sent.
func mediaField(r signaling.MediaRequest) any {
	if !r.Enabled || len(r.Raw) == 0 {
		return r.Enabled
	}
	return r.Raw
}

func (m *Media) authRequest(req signaling.ConnectRequest, id string) authRequest {
	var counts channelCounts
	m.mu.Lock()
	if s, ok := m.sessions[req.ChannelID]; ok {
		counts = countsOf(s.established())
	}
	m.mu.Unlock()
	r := authRequest{
		Role: req.Role, ChannelID: req.ChannelID, ClientID: req.ClientID, BundleID: req.BundleID, ConnectionID: id,
		Metadata: req.Metadata, Multistream: true, Simulcast: req.Simulcast, SimulcastRID: string(req.SimulcastRID),
		Spotlight: req.Spotlight, SpotlightNumber: req.SpotlightNumber,
		SpotlightFocusRID: string(req.SpotlightFocusRID), SpotlightUnfocusRID: string(req.SpotlightUnfocusRID),
		Audio: mediaField(req.Audio), Video: mediaField(req.Video),
		DataChannelSignaling: req.DataChannelSignaling, IgnoreDisconnectWebSocket: req.IgnoreDisconnectWebSocket,
		Redirect: req.Redirect, SoraClient: parseSoraClient(req.SoraClient, req.Environment), channelCounts: counts,
	}
	if req.Audio.Enabled {
		r.AudioCodecType, r.AudioBitRate = "OPUS", req.Audio.BitRate
	}
	if req.Video.Enabled {
		r.VideoCodecType, r.VideoBitRate = req.Video.CodecType, req.Video.BitRate
		if r.VideoCodecType == "" {
			r.VideoCodecType = m.cfg.DefaultVideoCodec
		}
		r.videoParamFields = requestedVideoParams(req.Video.Raw)
	}
	var sent struct {
		DataChannels     json.RawMessage `json:"data_channels"`
		ForwardingFilter json.RawMessage `json:"forwarding_filter"`
	}
	_ = json.Unmarshal(req.Raw, &sent) // a validated connect
	if len(req.DataChannels) > 0 {
		r.DataChannels = sent.DataChannels
	}
	// sorad applies no forwarding filter, but the auth webhook is told of
	// one a client asked for, and may refuse the connect for it.
	if f := sent.ForwardingFilter; len(f) > 0 && string(f) != "null" {
		r.ForwardingFilter = f
	}
	return r
}

// eventData is the data of a connection.* event webhook.
type eventData struct {
	Minutes        int    `json:"minutes"`
	Audio          bool   `json:"audio"`
	AudioCodecType string `json:"audio_codec_type,omitempty"`
	AudioBitRate   int    `json:"audio_bit_rate,omitempty"`
	Video          bool   `json:"video"`
	VideoCodecType string `json:"video_codec_type,omitempty"`
	VideoBitRate   int    `json:"video_bit_rate,omitempty"`
	videoParamFields
	channelCounts
	TurnTransportType  string         `json:"turn_transport_type"`
	CreatedTime        int64          `json:"created_time"`
	CreatedTimestamp   string         `json:"created_timestamp"`
	ICEConnectionState iceStateTotals `json:"ice_connection_state"`
	TotalReceivedBytes int64          `json:"total_received_bytes"`
	TotalSentBytes     int64          `json:"total_sent_bytes"`
	// connection.destroyed
	DestroyedTime        int64           `json:"destroyed_time,omitempty"`
	DestroyedTimestamp   string          `json:"destroyed_timestamp,omitempty"`
	Reason               string          `json:"reason,omitempty"`
	DisconnectAPIReason  json.RawMessage `json:"disconnect_api_reason,omitempty"`
	TypeDisconnectReason string          `json:"type_disconnect_reason,omitempty"`
}

// failedData is the data of connection.failed: why, the channel's counts
// and the bytes the connection moved before it gave up.
type failedData struct {
	Message string `json:"message"`
	channelCounts
	TotalReceivedBytes int64 `json:"total_received_bytes"`
	TotalSentBytes     int64 `json:"total_sent_bytes"`
}

// connectionFields say which connection a webhook is about.
type connectionFields struct {
	Role         signaling.Role `json:"role"`
	ChannelID    string         `json:"channel_id"`
	SessionID    string         `json:"session_id"`
	ClientID     string         `json:"client_id"`
	BundleID     string         `json:"bundle_id"`
	ConnectionID string         `json:"connection_id"`
	Multistream  bool           `json:"multistream"`
	Simulcast    bool           `json:"simulcast"`
	Spotlight    bool           `json:"spotlight"`
}

func (c *connection) fields() connectionFields {
	return connectionFields{
		Role: c.req.Role, ChannelID: c.req.ChannelID, SessionID: c.session.id,
		ClientID: c.client, BundleID: c.bundle, ConnectionID: c.id,
		Multistream: true, Simulcast: c.req.Simulcast, Spotlight: c.req.Spotlight,
	}
}

// connectionEvent is a connection.* or spotlight.* event webhook.
type connectionEvent struct {
	Type       string `json:"type"`
	LogWritten bool   `json:"log_written"`
	connectionFields
	EventMetadata json.RawMessage `json:"event_metadata,omitempty"`
	Data          any             `json:"data,omitempty"` // *eventData or *failedData
	// spotlight.* only
	SpotlightNumber *int  `json:"spotlight_number,omitempty"`
	Fixed           *bool `json:"fixed,omitempty"`
	Audio           *bool `json:"audio,omitempty"`
	Video           *bool `json:"video,omitempty"`
}

// event builds an event webhook about c; members are the channel's
// connections the counts are of.
func (c *connection) event(typ string, members []*connection) connectionEvent {
	e := c.eventHeader(typ)
	e.Data = c.eventData(members)
	return e
}

// eventHeader is an event webhook about c without its data.
func (c *connection) eventHeader(typ string) connectionEvent {
	return connectionEvent{Type: typ, connectionFields: c.fields(), EventMetadata: c.grant.eventMetadata}
}

func (c *connection) eventData(members []*connection) *eventData {
	d := &eventData{
		Minutes: c.minutes(), Audio: c.req.Audio.Enabled, Video: c.req.Video.Enabled,
		channelCounts: countsOf(members), TurnTransportType: "udp",
		CreatedTime: c.created.Unix(), CreatedTimestamp: signaling.Timestamp(c.created),
	}
	if c.req.Audio.Enabled {
		d.AudioCodecType, d.AudioBitRate = "OPUS", c.req.Audio.BitRate
	}
	if c.req.Video.Enabled {
		d.VideoCodecType, d.VideoBitRate = c.videoCodec(), int(c.videoBitRate.Load())
		d.videoParamFields = negotiatedVideoParams(d.VideoCodecType)
	}
	d.ICEConnectionState = c.iceTimes.totals(time.Now())
	d.TotalReceivedBytes, d.TotalSentBytes = c.totalBytes()
	return d
}

// totalBytes are the bytes c's tracks received and sent.
func (c *connection) totalBytes() (received, sent int64) {
	for _, t := range c.stats().Tracks {
		received += t.Bytes
		sent += t.SentBytes
	}
	return received, sent
}

// sendEvent hands an event webhook to the delivery.
func (m *Media) sendEvent(e connectionEvent) {
	if h := m.hooks(); h != nil {
		h.Event(e)
	}
}

// eventCreated tells the event webhook that c is established.
func (c *connection) eventCreated() {
	if c.m.hooks() == nil {
		return
	}
	c.m.sendEvent(c.event("connection.created", c.session.established()))
}

// eventEnded tells the event webhook that c ended: connection.destroyed
// when it had been established, connection.failed when it never was.
func (c *connection) eventEnded() {
	if c.m.hooks() == nil {
		return
	}
	members := c.session.established()
	code, reason := c.closedWith()
	now := time.Now()
	if !c.isEstablished() {
		e := c.eventHeader("connection.failed")
		d := &failedData{Message: reason, channelCounts: countsOf(members)}
		d.TotalReceivedBytes, d.TotalSentBytes = c.totalBytes()
		e.Data = d
		c.m.sendEvent(e)
		return
	}
	e := c.eventHeader("connection.destroyed")
	d := c.eventData(members)
	d.DestroyedTime, d.DestroyedTimestamp = now.Unix(), signaling.Timestamp(now)
	d.Reason = reason
	if code == signaling.CloseNormal && reason == "DISCONNECTED-API" {
		d.DisconnectAPIReason = c.disconnectAPIReason()
	}
	d.TypeDisconnectReason = c.typeDisconnectReason()
	e.Data = d
	c.m.sendEvent(e)
}

// spotlightEvent is spotlight.focused or spotlight.unfocused about subject
// for the event webhook. s.mu is held.
func (s *session) spotlightEvent(kind string, subject *connection, fixed bool) connectionEvent {
	e := subject.eventHeader(kind)
	n := s.model.SpotlightNumber()
	audio, video := subject.req.Audio.Enabled, subject.req.Video.Enabled
	e.SpotlightNumber, e.Fixed, e.Audio, e.Video = &n, &fixed, &audio, &video
	return e
}

// statsWebhook is the stats webhook's body: a client's own statistics.
type statsWebhook struct {
	Type string `json:"type"` // connection.rtc, as its header
	connectionFields
	Stats json.RawMessage `json:"stats"`
}

// sendStats hands a client's statistics report to the stats webhook.
func (c *connection) sendStats(report json.RawMessage) {
	h := c.m.hooks()
	if h == nil {
		return
	}
	h.Stats(statsWebhook{Type: "connection.rtc", connectionFields: c.fields(), Stats: report})
}
