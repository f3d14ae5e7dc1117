package media

import (
	"sync/atomic"
	"time"

	"github.com/sorad/sorad/media/forward"
)

// Stats are a node's media counters since it started, read by
// GetStatsReport and /metrics. All fields are updated atomically.
type Stats struct {
	connectionsCreated    atomic.Int64 // admitted: an offer was sent
	connectionsSuccessful atomic.Int64 // reached a connected PeerConnection
	connectionsFailed     atomic.Int64 // refused, or never connected
	connectionsDestroyed  atomic.Int64
	connectionsOngoing    atomic.Int64
	sessionsCreated       atomic.Int64
	sessionsDestroyed     atomic.Int64
	durationMicros        atomic.Int64     // of destroyed successful connections
	setupMicros           atomic.Int64     // connect to connected, summed
	tracks                atomic.Int64     // published tracks being forwarded
	forwarded             forward.Counters // RTP packets and bytes received from publishers and forwarded
	nacksReceived         atomic.Int64     // NACK feedback from receivers
	receiverLost          atomic.Int64     // packets receivers reported lost (RTCP receiver reports)
	plisReceived          atomic.Int64     // PLI/FIR from receivers
	plisSent              atomic.Int64     // key frame requests sent to publishers
	userAgentStatsDropped atomic.Int64     // client statistics reports too large or not a JSON array
	messagesReceived      atomic.Int64     // sent by clients on # labels
	messagesDelivered     atomic.Int64     // to receivers on # labels
	messagesDropped       atomic.Int64     // too large, over the rate, wrong direction, or to a receiver that does not keep up
}

// Ongoing returns the number of connections admitted and not yet torn
// down: this node's load for the placement of new channels.
func (s *Stats) Ongoing() int64 { return s.connectionsOngoing.Load() }

// Report holds the connection counters of Sora's GetStatsReport, in its
// key names.
type Report struct {
	AverageDurationSec                int64 `json:"average_duration_sec"`
	AverageSetupTimeMsec              int64 `json:"average_setup_time_msec"`
	TotalConnectionCreated            int64 `json:"total_connection_created"`
	TotalConnectionDestroyed          int64 `json:"total_connection_destroyed"`
	TotalConnectionUpdated            int64 `json:"total_connection_updated"`
	TotalSessionCreated               int64 `json:"total_session_created"`
	TotalSessionDestroyed             int64 `json:"total_session_destroyed"`
	TotalDurationSec                  int64 `json:"total_duration_sec"`
	TotalFailedConnections            int64 `json:"total_failed_connections"`
	TotalOngoingConnections           int64 `json:"total_ongoing_connections"`
	TotalSuccessfulConnections        int64 `json:"total_successful_connections"`
	TotalReceivedInvalidTurnTCPPacket int64 `json:"total_received_invalid_turn_tcp_packet"`
	TotalTurnTCPConnections           int64 `json:"total_turn_tcp_connections"`
	TotalTurnUDPConnections           int64 `json:"total_turn_udp_connections"`
}

// Report returns the GetStatsReport counters. sorad has no TURN server, so
// the TURN counters stay zero.
func (s *Stats) Report() Report {
	r := Report{
		TotalConnectionCreated:     s.connectionsCreated.Load(),
		TotalConnectionDestroyed:   s.connectionsDestroyed.Load(),
		TotalSessionCreated:        s.sessionsCreated.Load(),
		TotalSessionDestroyed:      s.sessionsDestroyed.Load(),
		TotalDurationSec:           s.durationMicros.Load() / 1e6,
		TotalFailedConnections:     s.connectionsFailed.Load(),
		TotalOngoingConnections:    s.connectionsOngoing.Load(),
		TotalSuccessfulConnections: s.connectionsSuccessful.Load(),
	}
	if ok := r.TotalSuccessfulConnections; ok > 0 {
		r.AverageSetupTimeMsec = s.setupMicros.Load() / 1000 / ok
	}
	if n := r.TotalConnectionDestroyed; n > 0 {
		r.AverageDurationSec = r.TotalDurationSec / n
	}
	return r
}

// Counters are the figures /metrics exports beyond the report.
type Counters struct {
	Ongoing          int64
	Sessions         int64 // live sessions
	Tracks           int64
	ForwardedPackets int64
	ForwardedBytes   int64
	NACKsReceived    int64
	// ReceiverLost counts packets receivers reported lost in RTCP
	// receiver reports, before retransmissions repaired them.
	ReceiverLost int64
	// RetransmittedPackets counts the packets answering receivers' NACKs.
	RetransmittedPackets int64
	PLIsReceived         int64
	PLIsSent             int64
	// UserAgentStatsDropped counts client statistics reports that were
	// too large or not a JSON array.
	UserAgentStatsDropped int64
	// Messages on # labels: received from senders, delivered to
	// receivers, dropped (too large, over the sender's rate, sent on a
	// recvonly label, or to a receiver that does not keep up).
	MessagesReceived, MessagesDelivered, MessagesDropped int64
}

func (s *Stats) counters() Counters {
	return Counters{
		Ongoing:               s.connectionsOngoing.Load(),
		Sessions:              s.sessionsCreated.Load() - s.sessionsDestroyed.Load(),
		Tracks:                s.tracks.Load(),
		ForwardedPackets:      s.forwarded.Packets.Load(),
		ForwardedBytes:        s.forwarded.Bytes.Load(),
		NACKsReceived:         s.nacksReceived.Load(),
		ReceiverLost:          s.receiverLost.Load(),
		RetransmittedPackets:  s.forwarded.Retransmitted.Load(),
		PLIsReceived:          s.plisReceived.Load(),
		PLIsSent:              s.plisSent.Load(),
		UserAgentStatsDropped: s.userAgentStatsDropped.Load(),
		MessagesReceived:      s.messagesReceived.Load(),
		MessagesDelivered:     s.messagesDelivered.Load(),
		MessagesDropped:       s.messagesDropped.Load(),
	}
}

func micros(d time.Duration) int64 { return d.Microseconds() }

// WebhookReport holds the webhook counters of Sora's GetStatsReport, in its
// key names: auth answers allowed and denied, and per kind the deliveries
// that succeeded, failed (no valid answer, after any retries, or dropped
// from a full queue) and were ignored (the kind has no URL).
type WebhookReport struct {
	TotalAuthWebhookAllowed       int64 `json:"total_auth_webhook_allowed"`
	TotalAuthWebhookDenied        int64 `json:"total_auth_webhook_denied"`
	TotalSuccessfulAuthWebhook    int64 `json:"total_successful_auth_webhook"`
	TotalFailedAuthWebhook        int64 `json:"total_failed_auth_webhook"`
	TotalSuccessfulSessionWebhook int64 `json:"total_successful_session_webhook"`
	TotalFailedSessionWebhook     int64 `json:"total_failed_session_webhook"`
	TotalIgnoredSessionWebhook    int64 `json:"total_ignored_session_webhook"`
	TotalSuccessfulEventWebhook   int64 `json:"total_successful_event_webhook"`
	TotalFailedEventWebhook       int64 `json:"total_failed_event_webhook"`
	TotalIgnoredEventWebhook      int64 `json:"total_ignored_event_webhook"`
	TotalSuccessfulStatsWebhook   int64 `json:"total_successful_stats_webhook"`
	TotalFailedStatsWebhook       int64 `json:"total_failed_stats_webhook"`
	TotalIgnoredStatsWebhook      int64 `json:"total_ignored_stats_webhook"`
}

// WebhookReport returns the webhook counters (all zero without webhooks).
func (m *Media) WebhookReport() WebhookReport {
	h := m.hooks()
	if h == nil {
		return WebhookReport{}
	}
	k := h.Counters()
	return WebhookReport{
		TotalAuthWebhookAllowed: k.AuthAllowed, TotalAuthWebhookDenied: k.AuthDenied,
		TotalSuccessfulAuthWebhook: k.AuthSuccessful, TotalFailedAuthWebhook: k.AuthFailed,
		TotalSuccessfulSessionWebhook: k.SessionSuccessful, TotalFailedSessionWebhook: k.SessionFailed, TotalIgnoredSessionWebhook: k.SessionIgnored,
		TotalSuccessfulEventWebhook: k.EventSuccessful, TotalFailedEventWebhook: k.EventFailed, TotalIgnoredEventWebhook: k.EventIgnored,
		TotalSuccessfulStatsWebhook: k.StatsSuccessful, TotalFailedStatsWebhook: k.StatsFailed, TotalIgnoredStatsWebhook: k.StatsIgnored,
	}
}
