package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/sorad/sorad/media"
	"github.com/sorad/sorad/media/authtoken"
	"github.com/sorad/sorad/media/signaling"
)

// Config is the resolved configuration of the sorad daemon.
type Config struct {
	ConfigFile             string        `conf:"config_file"` // the file actually read, "" if none
	NodeName               string        `conf:"node_name"`
	DataDir                string        `conf:"data_dir"`
	ListenAddress          string        `conf:"listen_address"`
	APIPort                int           `conf:"api_port"`
	SignalingPort          int           `conf:"signaling_port"`
	ClusterPort            int           `conf:"cluster_port"`
	ContactNodeNameList    []string      `conf:"contact_node_name_list"`
	ExternalAPIURL         string        `conf:"external_api_url"`
	ExternalSignalingURL   string        `conf:"external_signaling_url"`
	APIBearerToken         string        `conf:"api_bearer_token" secret:"true"`
	APICORSOrigin          string        `conf:"api_cors_origin"`
	Devtools               bool          `conf:"devtools"`
	APIMaxBodySize         int64         `conf:"api_max_body_size"`
	LicenseMaxConnections  int           `conf:"license_max_connections"`
	LicenseMaxNodes        int           `conf:"license_max_nodes"`
	LicenseSerialCode      string        `conf:"license_serial_code"`
	LicenseType            string        `conf:"license_type"`
	LogLevel               string        `conf:"log_level"`
	LogFormat              string        `conf:"log_format"`
	ProbeInterval          time.Duration `conf:"cluster_probe_interval"`
	PeerTimeout            time.Duration `conf:"cluster_peer_timeout"`
	FailoverTimeout        time.Duration `conf:"cluster_failover_timeout"`
	LeaseTimeout           time.Duration `conf:"cluster_lease_timeout"`
	RaftHeartbeatTimeout   time.Duration `conf:"raft_heartbeat_timeout"`
	RaftElectionTimeout    time.Duration `conf:"raft_election_timeout"`
	RaftLeaderLeaseTimeout time.Duration `conf:"raft_leader_lease_timeout"`
	RaftSnapshotThreshold  int           `conf:"raft_snapshot_threshold"`
	RaftSnapshotInterval   time.Duration `conf:"raft_snapshot_interval"`
	RaftTrailingLogs       int           `conf:"raft_trailing_logs"`
	ClusterRequestTimeout  time.Duration `conf:"cluster_request_timeout"`
	ClusterIdleTimeout     time.Duration `conf:"cluster_idle_timeout"`
	ShutdownTimeout        time.Duration `conf:"shutdown_timeout"`

	MediaUDPPort             int            `conf:"media_udp_port"`
	MediaPublicIPList        []string       `conf:"media_public_ip_list"`
	DefaultVideoCodecType    string         `conf:"default_video_codec_type"`
	DefaultVideoBitRate      int            `conf:"default_video_bit_rate"`
	SignalingMaxMessageSize  int            `conf:"signaling_max_message_size"`
	SignalingMessageRate     int            `conf:"signaling_message_rate"`
	SignalingMessageBurst    int            `conf:"signaling_message_burst"`
	SignalingMaxPending      int            `conf:"signaling_max_pending_connections"`
	SignalingMaxPendingPerIP int            `conf:"signaling_max_pending_connections_per_ip"`
	SignalingNewChannelRate  int            `conf:"signaling_new_channel_rate"`
	SignalingNewChannelBurst int            `conf:"signaling_new_channel_burst"`
	SignalingMaxMetadataSize int            `conf:"signaling_max_metadata_size"`
	ChannelMaxMetadataSize   int            `conf:"channel_max_metadata_size"`
	UserAgentStatsInterval   time.Duration  `conf:"user_agent_stats_interval"`
	RTPForwardingNetworks    []netip.Prefix `conf:"rtp_forwarding_allowed_networks"`
	UserAgentStatsMaxSize    int            `conf:"user_agent_stats_max_size"`
	DataChannelCompress      bool           `conf:"data_channel_compress"`
	// Webhook URLs may carry credentials: logged as set or unset.
	AuthWebhookURL          string        `conf:"auth_webhook_url" secret:"true"`
	SessionWebhookURL       string        `conf:"session_webhook_url" secret:"true"`
	EventWebhookURL         string        `conf:"event_webhook_url" secret:"true"`
	StatsWebhookURL         string        `conf:"stats_webhook_url" secret:"true"`
	WebhookResponseTimeout  time.Duration `conf:"webhook_response_timeout"`
	WebhookMaxRetries       int           `conf:"webhook_max_retries"`
	WebhookQueueSize        int           `conf:"webhook_queue_size"`
	WebhookUpdateInterval   time.Duration `conf:"webhook_updated_interval"`
	WebhookTLSCAFile        string        `conf:"webhook_tls_ca_file"`
	WebhookTLSCertFile      string        `conf:"webhook_tls_cert_file"`
	WebhookTLSKeyFile       string        `conf:"webhook_tls_key_file"`
	SkipRedactSensitiveData bool          `conf:"skip_redact_sensitive_data"`
	Label                   string        `conf:"label"`
	DataChannelMaxBuffered  int           `conf:"data_channel_max_buffered_amount"`
	MessagingMaxMessageSize int           `conf:"messaging_max_message_size"`
	MessagingMessageRate    int           `conf:"messaging_message_rate"`
	MessagingMessageBurst   int           `conf:"messaging_message_burst"`
	SignalingConnectTimeout time.Duration `conf:"signaling_connect_timeout"`
	SignalingPingInterval   time.Duration `conf:"signaling_ping_interval"`
	SignalingPongTimeout    time.Duration `conf:"signaling_pong_timeout"`
	ChannelReleaseDelay     time.Duration `conf:"channel_release_delay"`
	KeyframeRequestInterval time.Duration `conf:"keyframe_request_interval"`
	NACKBufferSize          int           `conf:"nack_buffer_size"`

	SimulcastEncodings     []signaling.Encoding `conf:"simulcast_encodings"`
	DefaultSpotlightNumber int                  `conf:"default_spotlight_number"`
	SpotlightFocusRID      string               `conf:"spotlight_focus_rid"`
	SpotlightUnfocusRID    string               `conf:"spotlight_unfocus_rid"`
	SpotlightFocusHold     time.Duration        `conf:"spotlight_focus_hold"`

	APITLSCertFile       string `conf:"api_tls_cert_file"`
	APITLSKeyFile        string `conf:"api_tls_key_file"`
	SignalingTLSCertFile string `conf:"signaling_tls_cert_file"`
	SignalingTLSKeyFile  string `conf:"signaling_tls_key_file"`

	SignalingAuthSecret        string `conf:"signaling_auth_secret" secret:"true"`
	SignalingAuthPublicKeyFile string `conf:"signaling_auth_public_key_file"`

	ClusterSecret         string `conf:"cluster_secret" secret:"true"`
	ClusterSecretFile     string `conf:"cluster_secret_file"`
	ClusterSecretPrevious string `conf:"cluster_secret_previous" secret:"true"`
	ClusterTLSCAFile      string `conf:"cluster_tls_ca_file"`
	ClusterTLSCertFile    string `conf:"cluster_tls_cert_file"`
	ClusterTLSKeyFile     string `conf:"cluster_tls_key_file"`
	ClusterInsecure       bool   `conf:"cluster_insecure"`

	PprofAddress string `conf:"pprof_address"`
}

// errHelp is returned by loadConfig after the usage text was printed because
// of --help or -h. It is flag.ErrHelp itself, so callers may test for either.
var errHelp = flag.ErrHelp

const (
	// defaultConfigFile is read when no config path is given and it exists.
	defaultConfigFile = "sorad.conf"
	// envPrefix prefixes the upper-cased key of every environment variable.
	envPrefix = "SORAD_"
	// configKey is the flag (and, upper-cased, the env suffix) naming the config file.
	configKey = "config"
	// maxSizeSetting bounds every size setting: large enough for any real
	// use, small enough that sizes computed from it cannot overflow.
	maxSizeSetting = 64 << 20
	// minRaftTimeout mirrors the lower bound hashicorp/raft enforces.
	minRaftTimeout = 5 * time.Millisecond
)

// keySpec describes one configuration key. The table of specs is never mutated.
type keySpec struct {
	name    string
	def     string // literal default; unused when derive is set
	defHelp string // default as shown by --help
	desc    string
	// derive computes the default from already resolved keys; it is only
	// called when no source gave the key.
	derive func(c *Config, hostname func() (string, error)) (string, error)
	// set parses and validates v and stores it into c.
	set func(c *Config, v string) error
}

// keySpecs lists every key in --help order. Derived keys come after the keys
// they depend on, except node_name which only depends on listen_address and
// is resolved in a second pass together with the other derived keys.
var keySpecs = []keySpec{
	{
		name:    "node_name",
		defHelp: "sorad@<host of listen_address>",
		desc:    "name@host of this node; host is where peers reach the cluster port (hostname when listen_address is 0.0.0.0 or ::)",
		derive:  deriveNodeName,
		set:     setNodeName,
	},
	{
		name: "data_dir",
		def:  "./data",
		desc: "directory of the Raft log, stable store and snapshots",
		set: stringField(func(c *Config) *string { return &c.DataDir }, func(v string) error {
			if v == "" {
				return errors.New("must not be empty")
			}
			return nil
		}),
	},
	{
		name: "listen_address",
		def:  "127.0.0.1",
		desc: "IP address the API, signaling and cluster listeners bind",
		set: stringField(func(c *Config) *string { return &c.ListenAddress }, func(v string) error {
			if net.ParseIP(v) == nil {
				return fmt.Errorf("%q is not an IP address", v)
			}
			return nil
		}),
	},
	{
		name: "api_port",
		def:  "3000",
		desc: "port of the Sora HTTP API (POST / with x-sora-target)",
		set:  portField(func(c *Config) *int { return &c.APIPort }),
	},
	{
		name: "signaling_port",
		def:  "5000",
		desc: "port of the WebSocket signaling (/signaling)",
		set:  portField(func(c *Config) *int { return &c.SignalingPort }),
	},
	{
		name: "cluster_port",
		def:  "5890",
		desc: "port of Raft and internal cluster traffic; must be the same on every node",
		set:  portField(func(c *Config) *int { return &c.ClusterPort }),
	},
	{
		name: "media_udp_port",
		def:  "5000",
		desc: "the one UDP port of every WebRTC connection (ICE UDP mux); may equal signaling_port, which is TCP",
		set:  portField(func(c *Config) *int { return &c.MediaUDPPort }),
	},
	{
		name:    "media_public_ip_list",
		defHelp: "(empty)",
		desc:    "comma-separated IPs announced in ICE candidates instead of listen_address (NAT 1:1, containers)",
		set:     setIPList,
	},
	{
		name: "default_video_codec_type",
		def:  "VP9",
		desc: "video codec of connections that name none: VP8, VP9, AV1 or H264",
		set:  enumField(func(c *Config) *string { return &c.DefaultVideoCodecType }, "VP8", "VP9", "AV1", "H264"),
	},
	{
		name: "default_video_bit_rate",
		def:  "1000",
		desc: "video bit rate in kbps of connections that name none (1-50000); offered as the sender's cap",
		set:  rangeField(func(c *Config) *int { return &c.DefaultVideoBitRate }, 1, 50000),
	},
	{
		name: "signaling_max_message_size",
		def:  "262144",
		desc: "largest signaling message in bytes (1024 to 64 MiB); larger ones close the WebSocket with 4490",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMaxMessageSize }, 1024, maxSizeSetting),
	},
	{
		name: "signaling_message_rate",
		def:  "50",
		desc: "signaling messages per second one connection may send (beyond the burst: 4490)",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMessageRate }, 1, 1_000_000),
	},
	{
		name: "signaling_message_burst",
		def:  "200",
		desc: "signaling messages one connection may send at once above the rate",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMessageBurst }, 1, 1_000_000),
	},
	{
		name: "signaling_max_pending_connections",
		def:  "1000",
		desc: "signaling WebSockets that may be open before their connect is admitted; more are answered 503",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMaxPending }, 1, 1_000_000),
	},
	{
		name: "signaling_max_pending_connections_per_ip",
		def:  "100",
		desc: "of those, how many one client address may hold",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMaxPendingPerIP }, 1, 1_000_000),
	},
	{
		name: "signaling_new_channel_rate",
		def:  "5",
		desc: "new channels one client address may create per second (beyond the burst the connect is closed with 4503 TOO-MANY-NEW-CHANNELS)",
		set:  rangeField(func(c *Config) *int { return &c.SignalingNewChannelRate }, 1, 1_000_000),
	},
	{
		name: "signaling_new_channel_burst",
		def:  "50",
		desc: "new channels one client address may create at once above the rate",
		set:  rangeField(func(c *Config) *int { return &c.SignalingNewChannelBurst }, 1, 1_000_000),
	},
	{
		name: "signaling_max_metadata_size",
		def:  "65536",
		desc: "largest metadata, and largest signaling_notify_metadata, of one connection in bytes (larger: 4490 METADATA-TOO-LARGE)",
		set:  rangeField(func(c *Config) *int { return &c.SignalingMaxMetadataSize }, 16, maxSizeSetting),
	},
	{
		name: "rtp_forwarding_allowed_networks",
		def:  "127.0.0.0/8,::1/128",
		desc: "comma-separated networks (CIDR) StartForwardingRtp may send RTP to; others are refused with 400",
		set:  setNetworks,
	},
	{
		name: "user_agent_stats_interval",
		def:  "5s",
		desc: "how often clients are asked for their WebRTC statistics (the stats flag of ping; 0 never), served by the *UserAgentStats APIs",
		set:  durationField(func(c *Config) *time.Duration { return &c.UserAgentStatsInterval }),
	},
	{
		name: "user_agent_stats_max_size",
		def:  "262144",
		desc: "largest client statistics report kept, in bytes (larger ones are dropped and counted)",
		set:  rangeField(func(c *Config) *int { return &c.UserAgentStatsMaxSize }, 1024, maxSizeSetting),
	},
	{
		name:    "auth_webhook_url",
		defHelp: "(empty: off)",
		desc:    "http(s) URL asked about every connect on the node that admits it; its answer allows or denies it and may change it (empty: everyone is admitted)",
		set:     webhookURLField(func(c *Config) *string { return &c.AuthWebhookURL }),
	},
	{
		name:    "session_webhook_url",
		defHelp: "(empty: off)",
		desc:    "http(s) URL told of session.created (its answer may set session_metadata and spotlight_number), session.updated and session.destroyed",
		set:     webhookURLField(func(c *Config) *string { return &c.SessionWebhookURL }),
	},
	{
		name:    "event_webhook_url",
		defHelp: "(empty: off)",
		desc:    "http(s) URL told of connection.created/updated/destroyed/failed and spotlight.focused/unfocused",
		set:     webhookURLField(func(c *Config) *string { return &c.EventWebhookURL }),
	},
	{
		name:    "stats_webhook_url",
		defHelp: "(empty: off)",
		desc:    "http(s) URL given every client statistics report (header sora-stats-webhook-type: connection.rtc)",
		set:     webhookURLField(func(c *Config) *string { return &c.StatsWebhookURL }),
	},
	{
		name: "webhook_response_timeout",
		def:  "5s",
		desc: "bound on one webhook call, connecting to reading its answer; an auth webhook that takes longer refuses the connect",
		set:  durationField(func(c *Config) *time.Duration { return &c.WebhookResponseTimeout }),
	},
	{
		name: "webhook_max_retries",
		def:  "0",
		desc: "retries of a failed session or event webhook, with backoff from 500ms (auth and stats are never retried)",
		set:  rangeField(func(c *Config) *int { return &c.WebhookMaxRetries }, 0, 10),
	},
	{
		name: "webhook_queue_size",
		def:  "1024",
		desc: "session, event and stats webhooks waiting per kind; beyond it they are dropped, logged and counted as failed",
		set:  rangeField(func(c *Config) *int { return &c.WebhookQueueSize }, 1, 1000000),
	},
	{
		name: "webhook_updated_interval",
		def:  "1m",
		desc: "how often session.updated and connection.updated are sent",
		set:  durationField(func(c *Config) *time.Duration { return &c.WebhookUpdateInterval }),
	},
	{
		name:    "webhook_tls_ca_file",
		defHelp: "(empty: the system's roots)",
		desc:    "PEM CA certificates https webhook receivers are verified with",
		set:     stringField(func(c *Config) *string { return &c.WebhookTLSCAFile }, nil),
	},
	{
		name:    "webhook_tls_cert_file",
		defHelp: "(empty: none)",
		desc:    "PEM client certificate sorad presents to https webhook receivers",
		set:     stringField(func(c *Config) *string { return &c.WebhookTLSCertFile }, nil),
	},
	{
		name:    "webhook_tls_key_file",
		defHelp: "(empty)",
		desc:    "the key of webhook_tls_cert_file",
		set:     stringField(func(c *Config) *string { return &c.WebhookTLSKeyFile }, nil),
	},
	{
		name: "skip_redact_sensitive_data",
		def:  "false",
		desc: "log webhook bodies' metadata, event_metadata and session_metadata as they are instead of REDACTED",
		set:  boolField(func(c *Config) *bool { return &c.SkipRedactSensitiveData }),
	},
	{
		name: "label",
		def:  "WebRTC SFU sorad",
		desc: "the label every webhook carries",
		set:  stringField(func(c *Config) *string { return &c.Label }, nil),
	},
	{
		name: "data_channel_compress",
		def:  "false",
		desc: "whether DataChannels carry zlib-compressed payloads when the connect's data_channels entry does not say",
		set:  boolField(func(c *Config) *bool { return &c.DataChannelCompress }),
	},
	{
		name: "data_channel_max_buffered_amount",
		def:  "1048576",
		desc: "unsent bytes one DataChannel may hold; beyond it messaging drops messages (counted) and signaling ends the connection",
		set:  rangeField(func(c *Config) *int { return &c.DataChannelMaxBuffered }, 16<<10, maxSizeSetting),
	},
	{
		name: "messaging_max_message_size",
		def:  "65536",
		desc: "largest message on a # messaging label, in bytes (larger ones are dropped and counted)",
		set:  rangeField(func(c *Config) *int { return &c.MessagingMaxMessageSize }, 1024, maxSizeSetting),
	},
	{
		name: "messaging_message_rate",
		def:  "500",
		desc: "messages per second one connection may send on its # labels (beyond the burst, dropped and counted)",
		set:  rangeField(func(c *Config) *int { return &c.MessagingMessageRate }, 1, 1000000),
	},
	{
		name: "messaging_message_burst",
		def:  "500",
		desc: "burst allowed above messaging_message_rate",
		set:  rangeField(func(c *Config) *int { return &c.MessagingMessageBurst }, 1, 1000000),
	},
	{
		name: "channel_max_metadata_size",
		def:  "1048576",
		desc: "bytes of metadata all of a channel's connections may hold together, bounding its notifications (beyond: 4490 CHANNEL-METADATA-TOO-LARGE)",
		set:  rangeField(func(c *Config) *int { return &c.ChannelMaxMetadataSize }, 16, maxSizeSetting),
	},
	{
		name: "signaling_connect_timeout",
		def:  "30s",
		desc: "bound on WebSocket open to connect, and on offer to connected",
		set:  durationField(func(c *Config) *time.Duration { return &c.SignalingConnectTimeout }),
	},
	{
		name: "signaling_ping_interval",
		def:  "5s",
		desc: "how often the server pings each client",
		set:  durationField(func(c *Config) *time.Duration { return &c.SignalingPingInterval }),
	},
	{
		name: "signaling_pong_timeout",
		def:  "15s",
		desc: "a client that sends no pong for this long is disconnected; more than signaling_ping_interval",
		set:  durationField(func(c *Config) *time.Duration { return &c.SignalingPongTimeout }),
	},
	{
		name: "channel_release_delay",
		def:  "5s",
		desc: "after a channel's last connection leaves, how long before the node releases the channel in the cluster",
		set:  durationField(func(c *Config) *time.Duration { return &c.ChannelReleaseDelay }),
	},
	{
		name: "keyframe_request_interval",
		def:  "300ms",
		desc: "least time between a key frame request sent to one publisher track and the last request or key frame (a sooner request waits for it)",
		set:  durationField(func(c *Config) *time.Duration { return &c.KeyframeRequestInterval }),
	},
	{
		name: "simulcast_encodings",
		def:  defaultSimulcastEncodings,
		desc: "JSON array of the encodings a simulcast sender is told to send (rid r0 first, active, scaleResolutionDownBy, maxBitrate, maxFramerate, scalabilityMode)",
		set:  setSimulcastEncodings,
	},
	{
		name: "default_spotlight_number",
		def:  "1",
		desc: "senders a spotlight channel focuses when its first connect names no spotlight_number (1-8)",
		set:  rangeField(func(c *Config) *int { return &c.DefaultSpotlightNumber }, 1, 8),
	},
	{
		name: "spotlight_focus_rid",
		def:  "r1",
		desc: "layer receivers get from focused senders unless they ask otherwise: none, r0, r1 or r2",
		set:  enumField(func(c *Config) *string { return &c.SpotlightFocusRID }, "none", "r0", "r1", "r2"),
	},
	{
		name: "spotlight_unfocus_rid",
		def:  "r0",
		desc: "layer receivers get from unfocused senders unless they ask otherwise: none, r0, r1 or r2",
		set:  enumField(func(c *Config) *string { return &c.SpotlightUnfocusRID }, "none", "r0", "r1", "r2"),
	},
	{
		name: "spotlight_focus_hold",
		def:  "2s",
		desc: "least time a focused sender keeps the focus before a new speaker may take its place",
		set:  durationField(func(c *Config) *time.Duration { return &c.SpotlightFocusHold }),
	},
	{
		name: "nack_buffer_size",
		def:  "1024",
		desc: "RTP packets kept per published video stream, shared by its receivers, to answer NACKs; a power of two, 1 to 32768",
		set:  setNACKBufferSize,
	},
	{
		name:    "contact_node_name_list",
		defHelp: "(empty)",
		desc:    "comma-separated node names (name@host) to join at start",
		set:     setContactList,
	},
	{
		name:    "external_api_url",
		defHelp: "http://<node host>:<api_port>/",
		desc:    "API URL other nodes and operators use; shown in ListClusterNodes",
		derive: func(c *Config, _ func() (string, error)) (string, error) {
			return scheme(c.APITLSCertFile, "http") + "://" + net.JoinHostPort(nodeHost(c.NodeName), strconv.Itoa(c.APIPort)) + "/", nil
		},
		set: urlField(func(c *Config) *string { return &c.ExternalAPIURL }, "http", "https"),
	},
	{
		name:    "external_signaling_url",
		defHelp: "ws://<node host>:<signaling_port>/signaling",
		desc:    "signaling URL clients are redirected to in order to reach this node",
		derive: func(c *Config, _ func() (string, error)) (string, error) {
			return scheme(c.SignalingTLSCertFile, "ws") + "://" + net.JoinHostPort(nodeHost(c.NodeName), strconv.Itoa(c.SignalingPort)) + "/signaling", nil
		},
		set: urlField(func(c *Config) *string { return &c.ExternalSignalingURL }, "ws", "wss"),
	},
	{
		name:    "api_bearer_token",
		defHelp: "(empty)",
		desc:    "when set, every API call needs Authorization: Bearer <token>",
		set:     stringField(func(c *Config) *string { return &c.APIBearerToken }, nil),
	},
	{
		name:    "api_cors_origin",
		defHelp: "http://<node host>:<signaling_port>",
		desc:    "value of the access-control-allow-origin header of API responses",
		derive: func(c *Config, _ func() (string, error)) (string, error) {
			return scheme(c.SignalingTLSCertFile, "http") + "://" + net.JoinHostPort(nodeHost(c.NodeName), strconv.Itoa(c.SignalingPort)), nil
		},
		set: stringField(func(c *Config) *string { return &c.APICORSOrigin }, noWhitespace),
	},
	{
		name: "devtools",
		def:  "true",
		desc: "serve the devtools page at /devtools/ on the signaling port (it uses only the public signaling and API)",
		set:  boolField(func(c *Config) *bool { return &c.Devtools }),
	},
	{
		name: "api_max_body_size",
		def:  "1048576",
		desc: "largest accepted API request body in bytes (1024 to 64 MiB)",
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			if n < 1024 || n > maxSizeSetting {
				return fmt.Errorf("%d is out of range 1024-%d", n, maxSizeSetting)
			}
			c.APIMaxBodySize = n
			return nil
		},
	},
	{
		name: "license_max_connections",
		def:  "500",
		desc: "admission limit of this node, shown in ListClusterNodes",
		set:  rangeField(func(c *Config) *int { return &c.LicenseMaxConnections }, 1, 10_000_000),
	},
	{
		name: "license_max_nodes",
		def:  "0",
		desc: "label shown in ListClusterNodes",
		set:  rangeField(func(c *Config) *int { return &c.LicenseMaxNodes }, 0, 1_000_000),
	},
	{
		name:    "license_serial_code",
		defHelp: "(empty)",
		desc:    "label shown in ListClusterNodes",
		set:     stringField(func(c *Config) *string { return &c.LicenseSerialCode }, nil),
	},
	{
		name: "license_type",
		def:  "sorad",
		desc: "label shown in ListClusterNodes",
		set:  stringField(func(c *Config) *string { return &c.LicenseType }, nil),
	},
	{
		name: "log_level",
		def:  "info",
		desc: "debug, info, warn or error",
		set:  enumField(func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error"),
	},
	{
		name: "log_format",
		def:  "json",
		desc: "json or text",
		set:  enumField(func(c *Config) *string { return &c.LogFormat }, "json", "text"),
	},
	{
		name: "cluster_probe_interval",
		def:  "1s",
		desc: "how often each node probes its peers; less than cluster_peer_timeout",
		set:  durationField(func(c *Config) *time.Duration { return &c.ProbeInterval }),
	},
	{
		name: "cluster_peer_timeout",
		def:  "3s",
		desc: "a peer with no successful probe for this long is shown connected: false",
		set:  durationField(func(c *Config) *time.Duration { return &c.PeerTimeout }),
	},
	{
		name: "cluster_failover_timeout",
		def:  "3s",
		desc: "a channel's node in charge that the leader has not heard from for this long may be replaced by a live node on the next connect",
		set:  durationField(func(c *Config) *time.Duration { return &c.FailoverTimeout }),
	},
	{
		name: "cluster_lease_timeout",
		def:  "2s",
		desc: "a node that has made no round trip to the Raft leader for this long closes its clients (4503 CLUSTER-QUORUM-LOST) and refuses connects until it has; less than cluster_failover_timeout minus twice raft_leader_lease_timeout, so that it stops before its channels can move",
		set:  durationField(func(c *Config) *time.Duration { return &c.LeaseTimeout }),
	},
	{
		name: "raft_heartbeat_timeout",
		def:  "500ms",
		desc: "Raft heartbeat timeout (at least 5ms)",
		set:  durationField(func(c *Config) *time.Duration { return &c.RaftHeartbeatTimeout }),
	},
	{
		name: "raft_election_timeout",
		def:  "500ms",
		desc: "Raft election timeout; at least raft_heartbeat_timeout",
		set:  durationField(func(c *Config) *time.Duration { return &c.RaftElectionTimeout }),
	},
	{
		name: "raft_leader_lease_timeout",
		def:  "250ms",
		desc: "Raft leader lease timeout; at most raft_heartbeat_timeout (at least 5ms)",
		set:  durationField(func(c *Config) *time.Duration { return &c.RaftLeaderLeaseTimeout }),
	},
	{
		name: "raft_snapshot_threshold",
		def:  "8192",
		desc: "Raft log entries since the last snapshot after which the next check takes one",
		set:  rangeField(func(c *Config) *int { return &c.RaftSnapshotThreshold }, 1, 1<<30),
	},
	{
		name: "raft_snapshot_interval",
		def:  "2m",
		desc: "how often Raft checks whether to take a snapshot (randomly between this and twice this)",
		set:  durationField(func(c *Config) *time.Duration { return &c.RaftSnapshotInterval }),
	},
	{
		name: "raft_trailing_logs",
		def:  "10240",
		desc: "Raft log entries kept after a snapshot: a follower less far behind catches up from the log, one further behind gets the snapshot",
		set:  rangeField(func(c *Config) *int { return &c.RaftTrailingLogs }, 1, 1<<30),
	},
	{
		name: "cluster_request_timeout",
		def:  "5s",
		desc: "bound on internal requests and on Raft writes",
		set:  durationField(func(c *Config) *time.Duration { return &c.ClusterRequestTimeout }),
	},
	{
		name: "cluster_idle_timeout",
		def:  "2m",
		desc: "a cluster-port connection that carries nothing for this long is closed",
		set:  durationField(func(c *Config) *time.Duration { return &c.ClusterIdleTimeout }),
	},
	{
		name: "shutdown_timeout",
		def:  "10s",
		desc: "graceful shutdown bound",
		set:  durationField(func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
	},
	{
		name:    "api_tls_cert_file",
		defHelp: "(empty: http)",
		desc:    "PEM certificate (and chain) the API port serves https with (re-read on SIGHUP)",
		set:     stringField(func(c *Config) *string { return &c.APITLSCertFile }, nil),
	},
	{
		name:    "api_tls_key_file",
		defHelp: "(empty)",
		desc:    "the key of api_tls_cert_file",
		set:     stringField(func(c *Config) *string { return &c.APITLSKeyFile }, nil),
	},
	{
		name:    "signaling_tls_cert_file",
		defHelp: "(empty: ws)",
		desc:    "PEM certificate (and chain) the signaling port serves wss with (re-read on SIGHUP)",
		set:     stringField(func(c *Config) *string { return &c.SignalingTLSCertFile }, nil),
	},
	{
		name:    "signaling_tls_key_file",
		defHelp: "(empty)",
		desc:    "the key of signaling_tls_cert_file",
		set:     stringField(func(c *Config) *string { return &c.SignalingTLSKeyFile }, nil),
	},
	{
		name:    "signaling_auth_secret",
		defHelp: "(empty: off)",
		desc:    "admit only connects whose metadata.access_token is a JWT (HS256) signed with this secret (at least 32 bytes), naming the channel; sorad token create makes one",
		set:     stringField(func(c *Config) *string { return &c.SignalingAuthSecret }, nil),
	},
	{
		name:    "signaling_auth_public_key_file",
		defHelp: "(empty: off)",
		desc:    "as signaling_auth_secret, for JWTs (EdDSA) signed with the private key of this Ed25519 public key (PEM; sorad token keygen)",
		set:     stringField(func(c *Config) *string { return &c.SignalingAuthPublicKeyFile }, nil),
	},
	{
		name:    "cluster_secret",
		defHelp: "(empty)",
		desc:    "shared secret of the cluster (at least 32 bytes; sorad tls secret makes one): the cluster port becomes mutual TLS and only nodes given it are members",
		set:     stringField(func(c *Config) *string { return &c.ClusterSecret }, nil),
	},
	{
		name:    "cluster_secret_file",
		defHelp: "(empty)",
		desc:    "file holding cluster_secret on its first line (re-read on SIGHUP)",
		set:     stringField(func(c *Config) *string { return &c.ClusterSecretFile }, nil),
	},
	{
		name:    "cluster_secret_previous",
		defHelp: "(empty)",
		desc:    "the secret being rotated out: its members stay trusted while every node moves to the new cluster_secret",
		set:     stringField(func(c *Config) *string { return &c.ClusterSecretPrevious }, nil),
	},
	{
		name:    "cluster_tls_ca_file",
		defHelp: "(empty)",
		desc:    "operator PKI instead of cluster_secret: PEM file of the trusted cluster CAs (re-read on SIGHUP)",
		set:     stringField(func(c *Config) *string { return &c.ClusterTLSCAFile }, nil),
	},
	{
		name:    "cluster_tls_cert_file",
		defHelp: "(empty)",
		desc:    "operator PKI: this node's certificate, common name = node_name (sorad tls cert create)",
		set:     stringField(func(c *Config) *string { return &c.ClusterTLSCertFile }, nil),
	},
	{
		name:    "cluster_tls_key_file",
		defHelp: "(empty)",
		desc:    "operator PKI: the key of cluster_tls_cert_file",
		set:     stringField(func(c *Config) *string { return &c.ClusterTLSKeyFile }, nil),
	},
	{
		name: "cluster_insecure",
		def:  "false",
		desc: "run the cluster port without authentication on a non-loopback address (anyone who reaches it controls the cluster)",
		set:  boolField(func(c *Config) *bool { return &c.ClusterInsecure }),
	},
	{
		name:    "pprof_address",
		defHelp: "(empty: off)",
		desc:    "host:port serving Go's /debug/pprof profiles, for developers; unauthenticated, so keep it on loopback",
		set: stringField(func(c *Config) *string { return &c.PprofAddress }, func(v string) error {
			if _, _, err := net.SplitHostPort(v); v != "" && err != nil {
				return fmt.Errorf("%q is not host:port", v)
			}
			return nil
		}),
	},
}

// lookupSpec returns the spec of key, or nil when key is unknown.
func lookupSpec(key string) *keySpec {
	for i := range keySpecs {
		if keySpecs[i].name == key {
			return &keySpecs[i]
		}
	}
	return nil
}

func envName(key string) string { return envPrefix + strings.ToUpper(key) }

// sourceKind orders the configuration sources by increasing precedence.
type sourceKind int

const (
	fromDefault sourceKind = iota
	fromFile
	fromEnv
	fromFlag
)

// source records where the value of one key came from, for error messages.
type source struct {
	kind sourceKind
	file string // fromFile only
	line int    // fromFile only
}

// describe returns the error prefix for key coming from s, e.g.
// `flag --api_port` or `sorad.conf:7: api_port`.
func (s source) describe(key string) string {
	switch s.kind {
	case fromFile:
		return fmt.Sprintf("%s:%d: %s", s.file, s.line, key)
	case fromEnv:
		return "env " + envName(key)
	case fromFlag:
		return "flag --" + key
	default:
		return "default " + key
	}
}

// setting is a raw value of one key and its origin.
type setting struct {
	value string
	src   source
}

// loadConfig resolves the configuration from args (without the program name),
// the environment lookup function and the file system.
func loadConfig(args []string, getenv func(string) (string, bool), stdout io.Writer) (Config, error) {
	return resolveConfig(args, getenv, stdout, os.Hostname)
}

// resolveConfig is loadConfig with an injectable hostname function.
func resolveConfig(args []string, getenv func(string) (string, bool), stdout io.Writer, hostname func() (string, error)) (Config, error) {
	// 1. Flags, collected raw; validation happens once every source is known.
	flagValues := map[string]string{}
	fset := flag.NewFlagSet("sorad", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	fset.Usage = func() {}
	var configFlag *string
	fset.Func(configKey, "config file path", func(v string) error {
		configFlag = &v
		return nil
	})
	for _, spec := range keySpecs {
		fset.Func(spec.name, spec.desc, func(v string) error {
			flagValues[spec.name] = v
			return nil
		})
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(stdout)
			return Config{}, errHelp
		}
		return Config{}, fmt.Errorf("%w (see sorad --help)", err)
	}
	if fset.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (see sorad --help)", fset.Arg(0))
	}

	// 2. The config file: --config, then SORAD_CONFIG, then ./sorad.conf if present.
	var (
		path     string
		explicit bool
	)
	if configFlag != nil {
		path, explicit = *configFlag, true
	} else if v, ok := getenv(envName(configKey)); ok {
		path, explicit = v, true
	} else {
		path = defaultConfigFile
	}
	var fileValues map[string]setting
	cfg := Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			fileValues, err = parseConfigFile(path, data)
			if err != nil {
				return Config{}, err
			}
			cfg.ConfigFile = path
		case !explicit && errors.Is(err, fs.ErrNotExist):
			// No default config file: fine.
		case explicit:
			how := "flag --" + configKey
			if configFlag == nil {
				how = "env " + envName(configKey)
			}
			return Config{}, fmt.Errorf("%s: config file: %w", how, err)
		default:
			return Config{}, fmt.Errorf("config file: %w", err)
		}
	}

	// 3. Merge: flag > env > file; keys given nowhere are left to defaults.
	// Flag and env values are trimmed like unquoted file values.
	given := map[string]setting{}
	for _, spec := range keySpecs {
		if v, ok := flagValues[spec.name]; ok {
			given[spec.name] = setting{value: strings.TrimSpace(v), src: source{kind: fromFlag}}
		} else if v, ok := getenv(envName(spec.name)); ok {
			given[spec.name] = setting{value: strings.TrimSpace(v), src: source{kind: fromEnv}}
		} else if s, ok := fileValues[spec.name]; ok {
			given[spec.name] = s
		}
	}

	// 4. Apply given values and literal defaults, then derived defaults, which
	// may depend on any non-derived key and on node_name.
	sources := map[string]source{}
	apply := func(spec *keySpec, s setting) error {
		sources[spec.name] = s.src
		if err := spec.set(&cfg, s.value); err != nil {
			return fmt.Errorf("%s: %w", s.src.describe(spec.name), err)
		}
		return nil
	}
	for pass := range 2 {
		for i := range keySpecs {
			spec := &keySpecs[i]
			s, ok := given[spec.name]
			switch {
			case (spec.derive != nil) != (pass == 1):
				continue
			case ok:
			case spec.derive != nil:
				v, err := spec.derive(&cfg, hostname)
				if err != nil {
					return Config{}, fmt.Errorf("default %s: %w", spec.name, err)
				}
				s = setting{value: v, src: source{kind: fromDefault}}
			default:
				s = setting{value: spec.def, src: source{kind: fromDefault}}
			}
			if err := apply(spec, s); err != nil {
				return Config{}, err
			}
		}
	}

	if err := crossCheck(&cfg, sources); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// crossCheck validates constraints between keys. The error names the first
// key and its source, and the other key with its value and source.
func crossCheck(c *Config, sources map[string]source) error {
	fail := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s", sources[key].describe(key), fmt.Sprintf(format, args...))
	}
	other := func(key string, v any) string {
		return fmt.Sprintf("%s (%v, %s)", key, v, sources[key].describe(key))
	}
	if c.ProbeInterval >= c.PeerTimeout {
		return fail("cluster_probe_interval", "%s must be less than %s",
			c.ProbeInterval, other("cluster_peer_timeout", c.PeerTimeout))
	}
	if c.SignalingPingInterval >= c.SignalingPongTimeout {
		return fail("signaling_ping_interval", "%s must be less than %s",
			c.SignalingPingInterval, other("signaling_pong_timeout", c.SignalingPongTimeout))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"raft_heartbeat_timeout", c.RaftHeartbeatTimeout},
		{"raft_election_timeout", c.RaftElectionTimeout},
		{"raft_leader_lease_timeout", c.RaftLeaderLeaseTimeout},
	} {
		if d.v < minRaftTimeout {
			return fail(d.key, "%s is less than %s", d.v, minRaftTimeout)
		}
	}
	if c.RaftElectionTimeout < c.RaftHeartbeatTimeout {
		return fail("raft_election_timeout", "%s must not be less than %s",
			c.RaftElectionTimeout, other("raft_heartbeat_timeout", c.RaftHeartbeatTimeout))
	}
	if c.RaftSnapshotInterval < minRaftTimeout {
		return fail("raft_snapshot_interval", "%s is less than %s", c.RaftSnapshotInterval, minRaftTimeout)
	}
	if c.RaftLeaderLeaseTimeout > c.RaftHeartbeatTimeout {
		return fail("raft_leader_lease_timeout", "%s must not be greater than %s",
			c.RaftLeaderLeaseTimeout, other("raft_heartbeat_timeout", c.RaftHeartbeatTimeout))
	}
	if c.LeaseTimeout < 4*minRaftTimeout {
		return fail("cluster_lease_timeout", "%s is less than %s", c.LeaseTimeout, 4*minRaftTimeout)
	}
	// A deposed leader may renew leases for up to about twice its Raft
	// leader lease before it notices (cluster/lease.go).
	if c.LeaseTimeout+2*c.RaftLeaderLeaseTimeout >= c.FailoverTimeout {
		return fail("cluster_lease_timeout", "%s plus twice %s must be less than %s: a node cut off must stop serving before its channels can move",
			c.LeaseTimeout, other("raft_leader_lease_timeout", c.RaftLeaderLeaseTimeout), other("cluster_failover_timeout", c.FailoverTimeout))
	}
	if err := checkClusterTrust(c, fail); err != nil {
		return err
	}
	for _, p := range []struct{ certKey, keyKey, cert, key string }{
		{"api_tls_cert_file", "api_tls_key_file", c.APITLSCertFile, c.APITLSKeyFile},
		{"signaling_tls_cert_file", "signaling_tls_key_file", c.SignalingTLSCertFile, c.SignalingTLSKeyFile},
		{"webhook_tls_cert_file", "webhook_tls_key_file", c.WebhookTLSCertFile, c.WebhookTLSKeyFile},
	} {
		if (p.cert == "") != (p.key == "") {
			return fail(p.certKey, "%s and %s go together", p.certKey, p.keyKey)
		}
	}
	if c.SignalingAuthSecret != "" && c.SignalingAuthPublicKeyFile != "" {
		return fail("signaling_auth_secret", "give signaling_auth_secret or signaling_auth_public_key_file, not both")
	}
	if c.SignalingAuthSecret != "" && len(c.SignalingAuthSecret) < authtoken.MinSecretLength {
		return fail("signaling_auth_secret", "is %d bytes; at least %d are needed", len(c.SignalingAuthSecret), authtoken.MinSecretLength)
	}
	ports := []struct {
		key string
		v   int
	}{
		{"api_port", c.APIPort},
		{"signaling_port", c.SignalingPort},
		{"cluster_port", c.ClusterPort},
	}
	for i := range ports {
		for j := range i {
			if ports[i].v == ports[j].v {
				return fail(ports[i].key, "port %d is already used by %s",
					ports[i].v, other(ports[j].key, ports[j].v))
			}
		}
	}
	return nil
}

// parseConfigFile parses the flat `key = value` format of sorad.conf.
func parseConfigFile(path string, data []byte) (map[string]setting, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	values := map[string]setting{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected key = value, got %q", path, n, line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if key == "" {
			return nil, fmt.Errorf("%s:%d: missing key before =", path, n)
		}
		if lookupSpec(key) == nil {
			return nil, fmt.Errorf("%s:%d: unknown key %q", path, n, key)
		}
		if prev, dup := values[key]; dup {
			return nil, fmt.Errorf("%s:%d: duplicate key %q (first set at line %d)", path, n, key, prev.src.line)
		}
		if strings.HasPrefix(value, `"`) {
			if len(value) < 2 || !strings.HasSuffix(value, `"`) {
				return nil, fmt.Errorf("%s:%d: %s: unterminated quoted value", path, n, key)
			}
			value = value[1 : len(value)-1]
		}
		values[key] = setting{value: value, src: source{kind: fromFile, file: path, line: n}}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return values, nil
}

// writeUsage prints the --help text: every key in table order with its
// default and a one-line description.
func writeUsage(w io.Writer) {
	fmt.Fprintf(w, `Usage: sorad [--config <path>] [--<key>=<value> ...]

sorad is a WebRTC SFU cluster compatible with Sora.

Every key below can be set, by increasing precedence, in the config file
(key = value lines, # comments), in the environment (%s<KEY>) or as a
flag (--<key> <value> or --<key>=<value>).

  --config <path>  config file (env %s); when not given, ./%s
                   is read if it exists; an empty path reads no file
  -h, --help       print this text and exit

Subcommands (each has its own --help):
  sorad status | nodes | channels | version   ask a running node's API
  sorad tls ...     cluster secrets, CA and node certificates
  sorad token ...   signed access tokens for signaling

Keys:
`, envPrefix, envName(configKey), defaultConfigFile)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, spec := range keySpecs {
		def := spec.defHelp
		if def == "" {
			def = spec.def
		}
		fmt.Fprintf(tw, "  --%s\t%s\t%s\n", spec.name, def, spec.desc)
	}
	tw.Flush()
}

// LogValue renders the configuration for slog without its secrets (the
// bearer token, the cluster secrets), which appear only as "set" or "unset".
func (c Config) LogValue() slog.Value {
	v := reflect.ValueOf(c)
	attrs := make([]slog.Attr, 0, v.NumField())
	for i := 0; i < v.NumField(); i++ {
		key := v.Type().Field(i).Tag.Get("conf")
		switch f := v.Field(i).Interface().(type) {
		case string:
			if v.Type().Field(i).Tag.Get("secret") != "" { // never log a secret itself
				f = redactToken(f)
			}
			attrs = append(attrs, slog.String(key, f))
		case time.Duration:
			attrs = append(attrs, slog.String(key, f.String()))
		case []string:
			if f == nil {
				f = []string{}
			}
			attrs = append(attrs, slog.Any(key, f))
		default:
			attrs = append(attrs, slog.Any(key, f))
		}
	}
	return slog.GroupValue(attrs...)
}

func redactToken(token string) string {
	if token == "" {
		return "unset"
	}
	return "set"
}

// String renders the configuration as key=value pairs without the bearer
// token, so that printing a Config with %v or %s cannot leak it either.
func (c Config) String() string {
	var b strings.Builder
	for i, a := range c.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
	}
	return b.String()
}

// GoString keeps %#v from printing the bearer token.
func (c Config) GoString() string { return "main.Config{" + c.String() + "}" }

// --- key parsers ---

func deriveNodeName(c *Config, hostname func() (string, error)) (string, error) {
	host := c.ListenAddress
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		h, err := hostname()
		if err != nil {
			return "", fmt.Errorf("listen_address %s is unspecified and the hostname is unknown: %w", host, err)
		}
		host = h
	}
	return "sorad@" + host, nil
}

func setNodeName(c *Config, v string) error {
	if err := checkNodeName(v); err != nil {
		return err
	}
	c.NodeName = v
	return nil
}

func setNetworks(c *Config, v string) error {
	var list []netip.Prefix
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return fmt.Errorf("%q is not a network in CIDR notation (e.g. 10.0.0.0/8)", item)
		}
		list = append(list, p.Masked())
	}
	c.RTPForwardingNetworks = list
	return nil
}

func setContactList(c *Config, v string) error {
	var list []string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if err := checkNodeName(item); err != nil {
			return err
		}
		list = append(list, item)
	}
	c.ContactNodeNameList = list
	return nil
}

// checkNodeName accepts name@host with non-empty parts, a single @ and no
// whitespace.
func setIPList(c *Config, v string) error {
	c.MediaPublicIPList = nil
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if net.ParseIP(item) == nil {
			return fmt.Errorf("%q is not an IP address", item)
		}
		c.MediaPublicIPList = append(c.MediaPublicIPList, item)
	}
	return nil
}

// defaultSimulcastEncodings is media.DefaultSimulcastEncodings as JSON.
const defaultSimulcastEncodings = `[{"rid":"r0","active":true,"scaleResolutionDownBy":4},{"rid":"r1","active":true,"scaleResolutionDownBy":2},{"rid":"r2","active":true,"scaleResolutionDownBy":1}]`

// setSimulcastEncodings reads a JSON array of encodings.
func setSimulcastEncodings(c *Config, v string) error {
	var encs []signaling.Encoding
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&encs); err != nil {
		return fmt.Errorf("not a JSON array of encodings: %v", err)
	}
	if err := media.CheckSimulcastEncodings(encs); err != nil {
		return err
	}
	c.SimulcastEncodings = encs
	return nil
}

// setNACKBufferSize takes a power of two (sequence numbers index the
// history) up to 32768.
func setNACKBufferSize(c *Config, v string) error {
	n, err := parseInt(v)
	if err != nil {
		return err
	}
	if n < 1 || n > 32768 || n&(n-1) != 0 {
		return fmt.Errorf("%d is not a power of two from 1 to 32768", n)
	}
	c.NACKBufferSize = n
	return nil
}

func checkNodeName(v string) error {
	name, host, ok := strings.Cut(v, "@")
	switch {
	case !ok || name == "" || host == "" || strings.Contains(host, "@"):
		return fmt.Errorf("%q is not a node name of the form name@host", v)
	case strings.ContainsFunc(v, unicode.IsSpace):
		return fmt.Errorf("node name %q contains whitespace", v)
	}
	return nil
}

// nodeHost returns the host part of a validated node name.
func nodeHost(nodeName string) string {
	_, host, _ := strings.Cut(nodeName, "@")
	return host
}

func noWhitespace(v string) error {
	if strings.ContainsFunc(v, unicode.IsSpace) {
		return fmt.Errorf("%q contains whitespace", v)
	}
	return nil
}

func stringField(field func(*Config) *string, check func(string) error) func(*Config, string) error {
	return func(c *Config, v string) error {
		if check != nil {
			if err := check(v); err != nil {
				return err
			}
		}
		*field(c) = v
		return nil
	}
}

func boolField(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*field(c) = b
		return nil
	}
}

func enumField(field func(*Config) *string, allowed ...string) func(*Config, string) error {
	return func(c *Config, v string) error {
		for _, a := range allowed {
			if v == a {
				*field(c) = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func parseInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", v)
	}
	return n, nil
}

// rangeField takes an integer from min to max.
func rangeField(field func(*Config) *int, min, max int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		if n < min || n > max {
			return fmt.Errorf("%d is not from %d to %d", n, min, max)
		}
		*field(c) = n
		return nil
	}
}

func portField(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := parseInt(v)
		if err != nil {
			return err
		}
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %d out of range 1-65535", n)
		}
		*field(c) = n
		return nil
	}
}

func durationField(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 500ms, 3s)", v)
		}
		if d <= 0 {
			return fmt.Errorf("duration %s must be greater than 0", d)
		}
		*field(c) = d
		return nil
	}
}

// webhookURLField is an http or https URL; empty turns the webhook off.
func webhookURLField(field func(*Config) *string) func(*Config, string) error {
	check := urlField(field, "http", "https")
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = ""
			return nil
		}
		return check(c, v)
	}
}

func urlField(field func(*Config) *string, schemes ...string) func(*Config, string) error {
	return func(c *Config, v string) error {
		u, err := url.Parse(v)
		if err != nil {
			return fmt.Errorf("%q is not a URL: %w", v, err)
		}
		ok := false
		for _, s := range schemes {
			ok = ok || u.Scheme == s
		}
		if !ok {
			return fmt.Errorf("URL %q must have scheme %s", v, strings.Join(schemes, " or "))
		}
		if u.Host == "" {
			return fmt.Errorf("URL %q has no host", v)
		}
		*field(c) = v
		return nil
	}
}

// checkClusterTrust makes the cluster port secure by default: a node that
// listens beyond loopback needs one way to authenticate its peers, unless
// the operator says the network is trusted.
func checkClusterTrust(c *Config, fail func(key, format string, args ...any) error) error {
	pki := c.ClusterTLSCAFile != "" || c.ClusterTLSCertFile != "" || c.ClusterTLSKeyFile != ""
	ways := 0
	for _, set := range []bool{c.ClusterSecret != "", c.ClusterSecretFile != "", pki} {
		if set {
			ways++
		}
	}
	switch {
	case ways > 1:
		return fail("cluster_secret", "give one of cluster_secret, cluster_secret_file and the cluster_tls_* files")
	case pki && (c.ClusterTLSCAFile == "" || c.ClusterTLSCertFile == "" || c.ClusterTLSKeyFile == ""):
		return fail("cluster_tls_ca_file", "cluster_tls_ca_file, cluster_tls_cert_file and cluster_tls_key_file go together")
	case c.ClusterSecretPrevious != "" && c.ClusterSecret == "":
		return fail("cluster_secret_previous", "is only used with cluster_secret (with cluster_secret_file, put previous secrets on its next lines)")
	case ways == 1 && c.ClusterInsecure:
		return fail("cluster_insecure", "true contradicts the cluster authentication also configured")
	case ways == 0 && !c.ClusterInsecure && !isLoopback(c.ListenAddress):
		return fail("listen_address", "%s is reachable from other machines, so the cluster port needs authentication: set cluster_secret (sorad tls secret makes one), or cluster_tls_ca_file/cert/key (sorad tls), or cluster_insecure = true if only trusted machines can reach port %d", c.ListenAddress, c.ClusterPort)
	}
	return nil
}

// isLoopback reports whether an address only this machine can reach.
func isLoopback(address string) bool {
	ip := net.ParseIP(address)
	return ip != nil && ip.IsLoopback()
}

// ClusterTrusted reports whether the cluster port authenticates its peers.
func (c Config) ClusterTrusted() bool {
	return c.ClusterSecret != "" || c.ClusterSecretFile != "" || c.ClusterTLSCAFile != ""
}

// scheme is plain, or its TLS form (https, wss) when certFile is set.
func scheme(certFile, plain string) string {
	if certFile == "" {
		return plain
	}
	return plain + "s"
}
