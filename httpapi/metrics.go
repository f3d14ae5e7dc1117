package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is the node's Prometheus registry: API calls, and cluster state
// read once per scrape.
type metrics struct {
	registry  *prometheus.Registry
	calls     *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	forwarded *prometheus.CounterVec
}

func newMetrics(cl Cluster, med Media, targets map[string]target) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sorad_api_requests_total",
			Help: "API calls by x-sora-target and HTTP status.",
		}, []string{"target", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sorad_api_request_duration_seconds",
			Help:    "API call latency by x-sora-target.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"target"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sorad_api_forwarded_total",
			Help: "API calls forwarded to the node in charge of their channel, by x-sora-target.",
		}, []string{"target"}),
	}
	m.registry.MustRegister(
		m.calls, m.latency, m.forwarded,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&clusterCollector{cl: cl},
		&mediaCollector{med: med},
	)
	// Create the series for every known target so dashboards see zeros.
	for name := range targets {
		m.latency.WithLabelValues(name)
	}
	return m
}

func (m *metrics) observe(target string, status int, d time.Duration) {
	m.calls.WithLabelValues(target, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(target).Observe(d.Seconds())
}

var (
	descRaftState = prometheus.NewDesc("sorad_raft_state", "1 for this node's current Raft state.", []string{"state"}, nil)
	descRaftTerm  = prometheus.NewDesc("sorad_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("sorad_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied   = prometheus.NewDesc("sorad_raft_applied_index", "Raft index applied to the state machine.", nil, nil)
	descLast      = prometheus.NewDesc("sorad_raft_last_index", "Last Raft log index.", nil, nil)
	descVoters    = prometheus.NewDesc("sorad_cluster_voters", "Raft voters in the cluster configuration.", nil, nil)
	descNodes     = prometheus.NewDesc("sorad_cluster_nodes", "Registered cluster nodes.", nil, nil)
	descConnected = prometheus.NewDesc("sorad_cluster_connected_nodes", "Cluster nodes this node is connected to, itself included.", nil, nil)
	descChannels  = prometheus.NewDesc("sorad_cluster_channels", "Channels assigned to a node in charge.", nil, nil)
)

// clusterCollector reads the cluster's state at scrape time.
type clusterCollector struct{ cl Cluster }

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descCommit, descApplied, descLast, descVoters, descNodes, descConnected, descChannels} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.cl.Stats()
	for _, s := range []string{"leader", "follower", "candidate", "shutdown"} {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, s)
	}
	connected := 0
	for _, n := range c.cl.Nodes() {
		if n.Connected {
			connected++
		}
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(descRaftTerm, float64(st.Term))
	gauge(descCommit, float64(st.CommitIndex))
	gauge(descApplied, float64(st.AppliedIndex))
	gauge(descLast, float64(st.LastIndex))
	gauge(descVoters, float64(st.Voters))
	gauge(descNodes, float64(st.Nodes))
	gauge(descConnected, float64(connected))
	gauge(descChannels, float64(st.Channels))
}

var (
	descConnections = prometheus.NewDesc("sorad_connections", "Connections admitted and not yet closed.", nil, nil)
	descSessions    = prometheus.NewDesc("sorad_sessions", "Live channel sessions on this node.", nil, nil)
	descTracks      = prometheus.NewDesc("sorad_tracks", "Published tracks being forwarded.", nil, nil)
	descConnTotal   = prometheus.NewDesc("sorad_connections_total", "Connections by outcome since start.", []string{"outcome"}, nil)
	descFwdPackets  = prometheus.NewDesc("sorad_forwarded_packets_total", "RTP packets received from publishers and forwarded.", nil, nil)
	descFwdBytes    = prometheus.NewDesc("sorad_forwarded_bytes_total", "RTP bytes received from publishers and forwarded.", nil, nil)
	descNACKs       = prometheus.NewDesc("sorad_nacks_received_total", "NACK feedback messages from receivers.", nil, nil)
	descRecvLost    = prometheus.NewDesc("sorad_receiver_lost_packets_total", "RTP packets that receivers reported lost in their RTCP receiver reports (before any retransmission repaired them).", nil, nil)
	descResent      = prometheus.NewDesc("sorad_retransmitted_packets_total", "RTP packets sent again to receivers that reported them lost (NACK).", nil, nil)
	descPLIs        = prometheus.NewDesc("sorad_plis_received_total", "PLI and FIR from receivers.", nil, nil)
	descPLIsSent    = prometheus.NewDesc("sorad_keyframe_requests_sent_total", "Key frame requests (PLI) sent to publishers.", nil, nil)
	descUAStatsDrop = prometheus.NewDesc("sorad_user_agent_stats_dropped_total", "Client statistics reports dropped: larger than user_agent_stats_max_size, or not a JSON array.", nil, nil)
	descMessages    = prometheus.NewDesc("sorad_messages_total", "Messages on # messaging labels: received from senders, delivered to receivers.", []string{"outcome"}, nil)
	descWebhooks    = prometheus.NewDesc("sorad_webhooks_total", "Webhook calls by kind (auth, session, event, stats) and outcome: successful (a valid answer, or delivered), failed (no valid answer after any retries, or dropped from a full queue), ignored (the kind has no URL); auth answers also by allowed and denied.", []string{"kind", "outcome"}, nil)
	descMsgDropped  = prometheus.NewDesc("sorad_messages_dropped_total", "Messages on # labels dropped: larger than messaging_max_message_size, over messaging_message_rate, sent on a recvonly label, or to a receiver that does not keep up.", nil, nil)
)

// mediaCollector reads the media counters at scrape time.
type mediaCollector struct{ med Media }

func (c *mediaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descSessions, descTracks, descConnTotal, descFwdPackets, descFwdBytes, descNACKs, descRecvLost, descResent, descPLIs, descPLIsSent, descUAStatsDrop, descMessages, descMsgDropped, descWebhooks} {
		ch <- d
	}
}

func (c *mediaCollector) Collect(ch chan<- prometheus.Metric) {
	k := c.med.Counters()
	r := c.med.Stats().Report()
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descConnections, k.Ongoing)
	gauge(descSessions, k.Sessions)
	gauge(descTracks, k.Tracks)
	counter(descConnTotal, r.TotalConnectionCreated, "created")
	counter(descConnTotal, r.TotalSuccessfulConnections, "successful")
	counter(descConnTotal, r.TotalFailedConnections, "failed")
	counter(descConnTotal, r.TotalConnectionDestroyed, "destroyed")
	counter(descFwdPackets, k.ForwardedPackets)
	counter(descFwdBytes, k.ForwardedBytes)
	counter(descNACKs, k.NACKsReceived)
	counter(descRecvLost, k.ReceiverLost)
	counter(descResent, k.RetransmittedPackets)
	counter(descPLIs, k.PLIsReceived)
	counter(descPLIsSent, k.PLIsSent)
	counter(descUAStatsDrop, k.UserAgentStatsDropped)
	counter(descMessages, k.MessagesReceived, "received")
	counter(descMessages, k.MessagesDelivered, "delivered")
	counter(descMsgDropped, k.MessagesDropped)
	w := c.med.WebhookReport()
	for _, x := range []struct {
		kind, outcome string
		v             int64
	}{
		{"auth", "allowed", w.TotalAuthWebhookAllowed}, {"auth", "denied", w.TotalAuthWebhookDenied},
		{"auth", "successful", w.TotalSuccessfulAuthWebhook}, {"auth", "failed", w.TotalFailedAuthWebhook},
		{"session", "successful", w.TotalSuccessfulSessionWebhook}, {"session", "failed", w.TotalFailedSessionWebhook}, {"session", "ignored", w.TotalIgnoredSessionWebhook},
		{"event", "successful", w.TotalSuccessfulEventWebhook}, {"event", "failed", w.TotalFailedEventWebhook}, {"event", "ignored", w.TotalIgnoredEventWebhook},
		{"stats", "successful", w.TotalSuccessfulStatsWebhook}, {"stats", "failed", w.TotalFailedStatsWebhook}, {"stats", "ignored", w.TotalIgnoredStatsWebhook},
	} {
		counter(descWebhooks, x.v, x.kind, x.outcome)
	}
}
