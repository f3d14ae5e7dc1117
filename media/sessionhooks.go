package media

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
)

// The session webhook: session.created when a channel's session starts on
// this node (its answer may set session_metadata and spotlight_number),
// session.updated every WebhookUpdateInterval, session.destroyed when the
// last connection leaves. The connection.updated event webhooks go out on
// the same tick.

// maxSessionHistory bounds the connections a session remembers for its
// webhooks; total_connections still counts them all.
const maxSessionHistory = 1000

// sessionRecord is what a session keeps for its webhooks. Guarded by the
// session's mu.
type sessionRecord struct {
	history  []sessionConnection
	byID     map[string]int // connection ID -> index in history
	total    int            // connections ever admitted
	peak     int            // most members at once
	metadata json.RawMessage
}

// sessionConnection is one entry of a session webhook's connections.
type sessionConnection struct {
	ConnectionID                 string          `json:"connection_id"`
	Role                         signaling.Role  `json:"role"`
	ClientID                     string          `json:"client_id"`
	BundleID                     string          `json:"bundle_id"`
	Audio                        bool            `json:"audio"`
	AudioCodecType               string          `json:"audio_codec_type,omitempty"`
	Video                        bool            `json:"video"`
	VideoCodecType               string          `json:"video_codec_type,omitempty"`
	VideoBitRate                 int             `json:"video_bit_rate,omitempty"`
	Simulcast                    bool            `json:"simulcast"`
	EventMetadata                json.RawMessage `json:"event_metadata,omitempty"`
	ConnectionCreatedTimestamp   string          `json:"connection_created_timestamp"`
	ConnectionDestroyedTimestamp *string         `json:"connection_destroyed_timestamp"`
	videoParamFields
}

// recordJoinLocked notes a connection joining. s.mu is held.
func (s *session) recordJoinLocked(c *connection) {
	r := &s.record
	r.total++
	r.peak = max(r.peak, len(s.members))
	if len(r.history) >= maxSessionHistory {
		return
	}
	if r.byID == nil {
		r.byID = map[string]int{}
	}
	e := sessionConnection{
		ConnectionID: c.id, Role: c.req.Role, ClientID: c.client, BundleID: c.bundle,
		Audio: c.req.Audio.Enabled, Video: c.req.Video.Enabled, Simulcast: c.req.Simulcast,
		EventMetadata: c.grant.eventMetadata, ConnectionCreatedTimestamp: signaling.Timestamp(c.created),
	}
	if e.Audio {
		e.AudioCodecType = "OPUS"
	}
	if e.Video {
		e.VideoCodecType, e.VideoBitRate = c.videoCodec(), int(c.videoBitRate.Load())
		e.videoParamFields = negotiatedVideoParams(e.VideoCodecType)
	}
	r.byID[c.id] = len(r.history)
	r.history = append(r.history, e)
}

// recordLeaveLocked notes a connection leaving. s.mu is held.
func (s *session) recordLeaveLocked(c *connection) {
	if i, ok := s.record.byID[c.id]; ok {
		ts := signaling.Timestamp(time.Now())
		s.record.history[i].ConnectionDestroyedTimestamp = &ts
	}
}

// sessionWebhook is a session.* webhook's body.
type sessionWebhook struct {
	Type             string `json:"type"`
	ChannelID        string `json:"channel_id"`
	SessionID        string `json:"session_id"`
	Multistream      bool   `json:"multistream"`
	Spotlight        bool   `json:"spotlight"`
	CreatedTime      int64  `json:"created_time"`
	CreatedTimestamp string `json:"created_timestamp"`
	// session.updated and session.destroyed
	MaxConnections   *int                `json:"max_connections,omitempty"`
	TotalConnections *int                `json:"total_connections,omitempty"`
	SessionMetadata  json.RawMessage     `json:"session_metadata,omitempty"`
	Connections      []sessionConnection `json:"connections,omitempty"`
	// session.destroyed
	DestroyedTime      int64  `json:"destroyed_time,omitempty"`
	DestroyedTimestamp string `json:"destroyed_timestamp,omitempty"`
	// ExternalSignalingURL is the signaling URL of the node the session
	// lives on.
	ExternalSignalingURL string `json:"external_signaling_url,omitempty"`
}

// sessionWebhookLocked builds a session.* webhook; updated and destroyed
// carry the connections. s.mu is held.
func (s *session) sessionWebhookLocked(typ string) sessionWebhook {
	w := sessionWebhook{
		Type: typ, ChannelID: s.channelID, SessionID: s.id, Multistream: true, Spotlight: s.spotlight,
		CreatedTime: s.created.Unix(), CreatedTimestamp: signaling.Timestamp(s.created),
	}
	w.ExternalSignalingURL = s.externalSignalingURL
	if typ == "session.created" {
		return w
	}
	peak, total := s.record.peak, s.record.total
	w.MaxConnections, w.TotalConnections = &peak, &total
	w.SessionMetadata = s.record.metadata
	w.Connections = append([]sessionConnection{}, s.record.history...)
	if typ == "session.destroyed" {
		now := time.Now()
		w.DestroyedTime, w.DestroyedTimestamp = now.Unix(), signaling.Timestamp(now)
	}
	return w
}

// sessionWebhook builds a session.* webhook under s.mu.
func (s *session) sessionWebhook(typ string) sessionWebhook {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessionWebhookLocked(typ)
}

// announceSessionCreated sends session.created; its answer may set the
// session's metadata and spotlight number.
func (m *Media) announceSessionCreated(s *session) {
	h := m.hooks()
	if h == nil {
		return
	}
	h.SessionCreated(s.sessionWebhook("session.created"), func(fields map[string]json.RawMessage) { m.applySessionAnswer(s, fields) })
}

// applySessionAnswer applies what session.created's answer sets.
func (m *Media) applySessionAnswer(s *session, fields map[string]json.RawMessage) {
	for k, v := range fields {
		switch k {
		case "session_metadata":
			if len(v) > m.cfg.MaxMetadataSize {
				m.log.Warn("session.created answer: session_metadata larger than signaling_max_metadata_size; ignored", "channel_id", s.channelID, "session_id", s.id)
				continue
			}
			s.mu.Lock()
			s.record.metadata = v
			s.mu.Unlock()
		case "spotlight_number":
			var n int
			if err := json.Unmarshal(v, &n); err != nil || !s.spotlight {
				m.log.Warn("session.created answer: spotlight_number ignored (not a number, or not a spotlight channel)", "channel_id", s.channelID, "session_id", s.id)
				continue
			}
			if err := s.change(func(c *channel.Channel) ([]channel.Event, error) { return c.SetSpotlightNumber(n, time.Now()) }); err != nil {
				m.log.Warn("session.created answer: spotlight_number refused", "channel_id", s.channelID, "session_id", s.id, "error", err)
			}
		default:
			if m.firstUnsupported("session." + k) {
				m.log.Warn("session.created answer field not supported by sorad; ignored (logged once)", "field", k)
			}
		}
	}
}

// announceSessionDestroyed sends session.destroyed.
func (m *Media) announceSessionDestroyed(s *session) {
	h := m.hooks()
	if h == nil {
		return
	}
	h.Session(s.sessionWebhook("session.destroyed"))
}

// webhookLoop sends session.updated for every session and connection.updated
// for every established connection each WebhookUpdateInterval, until the
// media plane stops.
func (m *Media) webhookLoop() {
	t := time.NewTicker(m.cfg.WebhookUpdateInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			h := m.hooks()
			for _, s := range m.sessionList() {
				if s.announced() {
					h.Session(s.sessionWebhook("session.updated"))
				}
				members := s.established()
				for _, c := range members {
					m.sendEvent(c.event("connection.updated", members))
				}
			}
		}
	}
}

// sessionStarted records a new session in the cluster (with
// RecordSessions), then announces it: so every session.created has a
// record behind it, and the cluster reports the end of every session it
// announced, even if this node dies right after. Recording is a Raft write
// off the connect path; only session.created waits for it. A session whose
// channel moved before it was recorded is about to be fenced off: it is
// never announced, and so neither is its end.
func (m *Media) sessionStarted(s *session) {
	if !m.cfg.RecordSessions {
		m.announceSessionCreated(s)
		close(s.recorded)
		return
	}
	m.goOwned(func() {
		defer close(s.recorded)
		ctx, cancel := context.WithTimeout(m.ctx, recordTimeout)
		defer cancel()
		switch err := m.cluster.RecordSession(ctx, s.channelID, s.id, s.created); {
		case errors.Is(err, cluster.ErrChannelTakenOver):
			s.unannounced.Store(true)
			m.log.Info("session not announced: its channel moved before it was recorded", "channel_id", s.channelID, "session_id", s.id)
			return
		case err != nil:
			m.log.Warn("session not recorded in the cluster: its end is not reported if this node dies with it", "channel_id", s.channelID, "session_id", s.id, "error", err)
		}
		m.announceSessionCreated(s)
	})
}

// announced reports whether s's session.created went (or is queued).
func (s *session) announced() bool {
	select {
	case <-s.recorded:
		return !s.unannounced.Load()
	default:
		return false
	}
}

// recordTimeout bounds recording a session in the cluster.
const recordTimeout = 10 * time.Second

// sessionEnded reports the end of an announced session: its record in the
// cluster is removed first (so that the cluster does not report it again), then
// session.destroyed goes. A session fenced off with RecordSessions was
// reported by the node that took its channel over. One closed when this
// node's lease ended waits for the cluster to answer again: then either its
// record is still here and removed, and this node reports it, or the
// channel moved meanwhile and the node that moved it reported it.
func (m *Media) sessionEnded(s *session) {
	if !m.cfg.RecordSessions {
		m.announceSessionDestroyed(s)
		return
	}
	if s.fenced.Load() {
		m.log.Info("session ended by fencing; the cluster reports its end", "channel_id", s.channelID, "session_id", s.id)
		return
	}
	m.goOwned(func() {
		<-s.recorded
		if s.unannounced.Load() {
			return
		}
		if s.quorumLost.Load() && !m.cluster.WaitLease(m.ctx) {
			m.log.Warn("node stopped while cut off from the cluster: the end of a session closed by the lease is left to the cluster (session.vanished once its channel moves)", "channel_id", s.channelID, "session_id", s.id)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), recordTimeout)
		defer cancel()
		switch err := m.cluster.ForgetSession(ctx, s.channelID, s.id); {
		case errors.Is(err, cluster.ErrChannelTakenOver):
			m.log.Info("session ended after its channel moved; the cluster reported its end", "channel_id", s.channelID, "session_id", s.id)
			return
		case err != nil:
			m.log.Warn("session record not removed from the cluster", "channel_id", s.channelID, "session_id", s.id, "error", err)
		}
		m.announceSessionDestroyed(s)
	})
}

// goOwned runs f in a goroutine the media plane waits for on Close.
func (m *Media) goOwned(f func()) {
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		f()
	}()
}

// vanishedSession is the session webhook about a session that ended with
// its node, sent once by the node whose cluster change ended it.
type vanishedSession struct {
	Type               string `json:"type"` // session.vanished
	ChannelID          string `json:"channel_id"`
	SessionID          string `json:"session_id"`
	Multistream        bool   `json:"multistream"`
	Spotlight          bool   `json:"spotlight"`
	CreatedTime        int64  `json:"created_time"`
	CreatedTimestamp   string `json:"created_timestamp"`
	DestroyedTime      int64  `json:"destroyed_time"`
	DestroyedTimestamp string `json:"destroyed_timestamp"`
	NodeInCharge       string `json:"node_in_charge"` // the node it died with
}

// SessionsEnded reports sessions that ended with their node (the cluster's
// records of them): session.vanished for each. It never blocks.
func (m *Media) SessionsEnded(chs []fsm.Channel) {
	h := m.hooks()
	if h == nil {
		return
	}
	now := time.Now()
	for _, ch := range chs {
		created := time.UnixMicro(ch.SessionCreatedMicros)
		h.Session(vanishedSession{
			Type: "session.vanished", ChannelID: ch.ID, SessionID: ch.SessionID, Multistream: ch.Multistream, Spotlight: ch.Spotlight,
			CreatedTime: created.Unix(), CreatedTimestamp: signaling.Timestamp(created),
			DestroyedTime: now.Unix(), DestroyedTimestamp: signaling.Timestamp(now), NodeInCharge: ch.NodeInCharge,
		})
	}
}
