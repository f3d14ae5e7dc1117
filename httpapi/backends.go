package httpapi

import (
	"context"
	"encoding/json"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media"
)

// What the API server needs of the node: package cluster's *Cluster and
// package media's *Media, or fakes in tests.

// Cluster is the control plane as the API uses it.
type Cluster interface {
	NodeName() string
	Join(ctx context.Context, contact string) ([]string, error)
	Nodes() []cluster.NodeStatus
	// ApartNodes lists the nodes of other clusters this node reaches
	// through its contacts (clusters started apart).
	ApartNodes() []cluster.ApartNode
	Channels() []cluster.ChannelStatus
	Purge(ctx context.Context, target string) error
	Mode() fsm.Mode
	SetMode(ctx context.Context, mode fsm.Mode) error
	Stats() cluster.RaftStats
	// ChannelOwner names the live node in charge of a channel when that is
	// another node.
	ChannelOwner(channelID string) (string, bool)
	ConnectedPeers() []string
	// ReadBarrier returns once the node's copy of the state holds every
	// write acknowledged before the call (reads with "consistent": true).
	ReadBarrier(ctx context.Context) error
	ForwardAPI(ctx context.Context, node string, call cluster.APICall) (cluster.APIAnswer, error)
}

// Media is the media plane as the API uses it.
type Media interface {
	Stats() *media.Stats
	Counters() media.Counters
	WebhookReport() media.WebhookReport

	Disconnect(sel media.Selector, reason json.RawMessage) error
	Push(sel media.Selector, data json.RawMessage) error
	ListConnections() []media.ConnectionInfo
	ListChannelConnections(channelID string) []media.ConnectionInfo
	ListChannels() []media.ChannelInfo

	ListSignalingNotifyMetadata(channelID string) ([]media.MetadataEntry, error)
	GetSignalingNotifyMetadata(channelID, connectionID string) (json.RawMessage, error)
	PutSignalingNotifyMetadata(channelID, connectionID string, meta json.RawMessage, push bool) (json.RawMessage, error)
	DeleteSignalingNotifyMetadata(channelID, connectionID string, push bool) (json.RawMessage, error)
	PutSignalingNotifyMetadataItem(channelID, connectionID, key string, value json.RawMessage, push bool) (json.RawMessage, error)
	DeleteSignalingNotifyMetadataItem(channelID, connectionID, key string, push bool) (json.RawMessage, error)

	GetStatsConnection(channelID, connectionID string) (media.ConnectionStats, error)
	GetStatsClient(channelID, clientID string) ([]media.ConnectionStats, error)
	ListUserAgentStats() []media.UserAgentStatsEntry
	ListChannelUserAgentStats(channelID string) ([]media.UserAgentStatsEntry, error)
	GetUserAgentStats(channelID, connectionID string) (media.UserAgentStats, error)
	StartForwardingRtp(channelID, connectionID string, target media.RTPForwardTarget) (string, error)
	StopForwardingRtp(channelID, connectionID string) error

	RequestRtpStream(channelID, recv, send string, rid media.RID) error
	ResetRtpStream(channelID, recv, send string) error
	PauseRtpStream(channelID, recv, send string) error
	ResumeRtpStream(channelID, recv, send string) error
	ListPauseRtpStreams(channelID string) ([]media.PausedStream, error)
	ChangeSpotlightNumber(channelID string, n int) error
	FocusSpotlight(channelID, connectionID string, fixed bool) error
	UnfocusSpotlight(channelID, connectionID string) error
	BatchRequestSpotlightRID(channelID string, rs []media.SpotlightRIDRequest) error
	ResetSpotlightRID(channelID, recv, send string) error
	ChangeUpstreamVideoBitRate(channelID, connectionID string, kbps int) error
}

var (
	_ Cluster = (*cluster.Cluster)(nil)
	_ Media   = (*media.Media)(nil)
)
