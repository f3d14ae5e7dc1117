// Package load runs a bounded load against a Sora-compatible signaling
// server (sorad, or Sora itself): publishers sending synthetic video and
// Opus and subscribers receiving them, spread over channels and over the
// given signaling URLs, for a fixed time. It reports what it saw: join
// latencies, bit rates sent and received, packet loss, and the reasons
// connects failed or connections were closed. cmd/sorad-load is its
// command line; tests and benchmarks may call Run directly.
//
// Every client is an integration/soraclient client: it speaks only Sora's
// wire protocol and follows redirects, as the official SDKs do.
package load

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Bounds of a load: Validate refuses anything beyond them.
const (
	MaxChannels              = 1000
	MaxPublishersPerChannel  = 50
	MaxSubscribersPerChannel = 1000
	// MaxClients bounds publishers and subscribers of all channels
	// together.
	MaxClients       = 5000
	MaxDuration      = time.Hour
	MaxJoinRate      = 500 // joins per second
	MaxJoinTimeout   = 2 * time.Minute
	MaxVideoKbps     = 50000
	MaxAudioKbps     = 510
	MinAudioKbps     = 6
	MaxURLs          = 100
	maxMetadataBytes = 64 << 10
)

// Defaults of Config's zero fields (see WithDefaults).
const (
	DefaultDuration    = 30 * time.Second
	DefaultJoinRate    = 10
	DefaultJoinTimeout = 15 * time.Second
	DefaultVideoCodec  = "VP8"
	DefaultVideoKbps   = 500
	DefaultAudioKbps   = 32
)

// VideoCodecs are the codecs publishers can send synthetic frames of.
var VideoCodecs = []string{"VP8", "VP9", "H264", "AV1"}

// Config describes one load. Publishers and Subscribers are per channel.
type Config struct {
	// URLs are signaling URLs (ws:// or wss://). Client i of the load
	// (channel by channel, its publishers then its subscribers) contacts
	// URLs[i % len(URLs)] and follows any redirect from there.
	URLs []string
	// APIURL, when URLs is empty, is a Sora API endpoint whose
	// ListClusterNodes gives the URLs: the external_signaling_url of
	// every connected node.
	APIURL string
	// ChannelPrefix names the channels <prefix>-0, <prefix>-1, ...; empty:
	// "sorad-load-" and eight random hex digits, so two runs do not share
	// channels.
	ChannelPrefix string
	Channels      int
	Publishers    int // per channel, role sendonly
	Subscribers   int // per channel, role recvonly

	// Video says whether publishers send and subscribers receive video;
	// VideoCodec (VP8, VP9, H264, AV1) and VideoKbps are sent as the
	// connect's video codec_type and bit_rate, and VideoKbps also sizes
	// the synthetic frames.
	Video      bool
	VideoCodec string
	VideoKbps  int
	// Audio says whether publishers send and subscribers receive Opus;
	// AudioKbps is sent as the connect's audio bit_rate and sizes the
	// frames.
	Audio     bool
	AudioKbps int
	// Simulcast makes publishers send three VP8 layers (the video bit
	// rate shared among them as soraclient does) and subscribers ask for
	// SimulcastRID (r0, r1, r2; empty: the server's default).
	Simulcast    bool
	SimulcastRID string

	// Duration is the whole run, joins included: at its end every client
	// disconnects and the report is made.
	Duration time.Duration
	// JoinRate is how many clients start connecting per second.
	JoinRate float64
	// JoinTimeout bounds one client's connect, from opening its WebSocket
	// to its PeerConnection connected.
	JoinTimeout time.Duration
	// Metadata is sent as every connect's "metadata" (JSON; e.g. an
	// access token for a server that needs one). It is never printed.
	Metadata json.RawMessage
	// InsecureSkipVerify accepts any certificate on wss:// URLs.
	InsecureSkipVerify bool
	// ICENetworks, when not empty, limits the clients' ICE candidates to
	// local addresses in these networks (e.g. 127.0.0.0/8, or the
	// interface that reaches the server).
	ICENetworks []netip.Prefix
	// MetricsURLs are Prometheus text endpoints of the servers (sorad's
	// http://<node>:3000/metrics): their process_cpu_seconds_total, read
	// when every client has joined and at the end, gives the servers' CPU
	// time under the steady load.
	MetricsURLs []string
}

// WithDefaults returns c with its zero durations, rates, bit rates and
// codec set to the defaults.
func (c Config) WithDefaults() Config {
	c.Duration = cmp.Or(c.Duration, DefaultDuration)
	c.JoinRate = cmp.Or(c.JoinRate, DefaultJoinRate)
	c.JoinTimeout = cmp.Or(c.JoinTimeout, DefaultJoinTimeout)
	c.VideoCodec = cmp.Or(c.VideoCodec, DefaultVideoCodec)
	c.VideoKbps = cmp.Or(c.VideoKbps, DefaultVideoKbps)
	c.AudioKbps = cmp.Or(c.AudioKbps, DefaultAudioKbps)
	if c.ChannelPrefix == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.ChannelPrefix = "sorad-load-" + hex.EncodeToString(b)
	}
	return c
}

// Validate reports the first setting out of its bounds.
func (c Config) Validate() error {
	if len(c.URLs) == 0 && c.APIURL == "" {
		return errors.New("no signaling URL: give URLs or an API URL")
	}
	if len(c.URLs) > MaxURLs {
		return fmt.Errorf("%d URLs: at most %d", len(c.URLs), MaxURLs)
	}
	for _, u := range c.URLs {
		if err := checkURL(u, "ws", "wss"); err != nil {
			return fmt.Errorf("signaling URL: %w", err)
		}
	}
	for _, u := range c.MetricsURLs {
		if err := checkURL(u, "http", "https"); err != nil {
			return fmt.Errorf("metrics URL: %w", err)
		}
	}
	if c.APIURL != "" {
		if err := checkURL(c.APIURL, "http", "https"); err != nil {
			return fmt.Errorf("API URL: %w", err)
		}
	}
	switch {
	case c.Channels < 1 || c.Channels > MaxChannels:
		return fmt.Errorf("channels %d: want 1-%d", c.Channels, MaxChannels)
	case c.Publishers < 0 || c.Publishers > MaxPublishersPerChannel:
		return fmt.Errorf("publishers per channel %d: want 0-%d", c.Publishers, MaxPublishersPerChannel)
	case c.Subscribers < 0 || c.Subscribers > MaxSubscribersPerChannel:
		return fmt.Errorf("subscribers per channel %d: want 0-%d", c.Subscribers, MaxSubscribersPerChannel)
	case c.Publishers+c.Subscribers == 0:
		return errors.New("no clients: want publishers or subscribers")
	case c.Channels*(c.Publishers+c.Subscribers) > MaxClients: // each factor is bounded: no overflow
		return fmt.Errorf("%d channels x %d clients: at most %d clients in all", c.Channels, c.Publishers+c.Subscribers, MaxClients)
	case !c.Audio && !c.Video:
		return errors.New("neither audio nor video")
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("duration %v: want more than 0 and at most %v", c.Duration, MaxDuration)
	case !(c.JoinRate > 0) || c.JoinRate > MaxJoinRate:
		return fmt.Errorf("join rate %v: want more than 0 and at most %d per second", c.JoinRate, MaxJoinRate)
	case c.JoinTimeout <= 0 || c.JoinTimeout > MaxJoinTimeout:
		return fmt.Errorf("join timeout %v: want more than 0 and at most %v", c.JoinTimeout, MaxJoinTimeout)
	case c.Video && !slices.Contains(VideoCodecs, c.VideoCodec):
		return fmt.Errorf("video codec %q: want one of %s", c.VideoCodec, strings.Join(VideoCodecs, ", "))
	case c.Video && (c.VideoKbps < 1 || c.VideoKbps > MaxVideoKbps):
		return fmt.Errorf("video bit rate %d kbit/s: want 1-%d", c.VideoKbps, MaxVideoKbps)
	case c.Audio && (c.AudioKbps < MinAudioKbps || c.AudioKbps > MaxAudioKbps):
		return fmt.Errorf("audio bit rate %d kbit/s: want %d-%d", c.AudioKbps, MinAudioKbps, MaxAudioKbps)
	case c.Simulcast && (!c.Video || c.VideoCodec != "VP8"):
		return errors.New("simulcast needs video in VP8")
	case c.SimulcastRID != "" && !c.Simulcast:
		return errors.New("a simulcast rid without simulcast")
	case c.SimulcastRID != "" && !slices.Contains([]string{"r0", "r1", "r2"}, c.SimulcastRID):
		return fmt.Errorf("simulcast rid %q: want r0, r1 or r2", c.SimulcastRID)
	case len(c.MetricsURLs) > MaxURLs:
		return fmt.Errorf("%d metrics URLs: at most %d", len(c.MetricsURLs), MaxURLs)
	case len(c.ICENetworks) > MaxURLs:
		return fmt.Errorf("%d ICE networks: at most %d", len(c.ICENetworks), MaxURLs)
	case len(c.Metadata) > maxMetadataBytes:
		return fmt.Errorf("metadata of %d bytes: at most %d", len(c.Metadata), maxMetadataBytes)
	case len(c.Metadata) > 0 && !json.Valid(c.Metadata):
		return errors.New("metadata is not valid JSON")
	case strings.TrimSpace(c.ChannelPrefix) != c.ChannelPrefix || len(c.ChannelPrefix) > 200:
		return fmt.Errorf("channel prefix %q: no surrounding spaces, at most 200 bytes", c.ChannelPrefix)
	}
	return nil
}

func checkURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return fmt.Errorf("%q: want a %s URL with a host", raw, strings.Join(schemes, " or "))
	}
	return nil
}

// iceFilter admits the local addresses of ICENetworks; nil when it is
// empty.
func (c Config) iceFilter() func(net.IP) bool {
	if len(c.ICENetworks) == 0 {
		return nil
	}
	return func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return false
		}
		a = a.Unmap()
		for _, p := range c.ICENetworks {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
}

// channelID is the name of channel i.
func (c Config) channelID(i int) string { return fmt.Sprintf("%s-%d", c.ChannelPrefix, i) }
