// Command sorad-load puts a bounded load on a Sora-compatible server (sorad,
// or Sora itself): publishers sending synthetic video and Opus, subscribers
// receiving them, spread over channels and signaling URLs, for a fixed
// time. It prints a progress line every second on stderr and, at the end
// (or on Ctrl-C), a table of what it saw on stdout: join latencies, bit
// rates sent and received, packet loss, and connect failures grouped by
// close code and reason.
//
//	go run ./cmd/sorad-load -url ws://127.0.0.1:5000/signaling -subscribers 50 -duration 30s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sorad/sorad/integration/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // the load stops and reports; a second Ctrl-C ends the process at once
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, runs the load and prints the report; it returns the
// exit status: 0 once a load ran (its failures are in the report), 1 when
// it could not start, 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, jsonOut, quiet, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sorad-load:", err)
		return 2
	}
	var progress io.Writer = stderr
	if quiet {
		progress = nil
	}
	rep, err := load.Run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(stderr, "sorad-load:", err)
		return 1
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sorad-load: write report:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (cfg load.Config, jsonOut, quiet bool, err error) {
	fs := flag.NewFlagSet("sorad-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: sorad-load [flags]

Puts a bounded load on a Sora-compatible server and reports what it saw.
Client i (channel by channel, its publishers then its subscribers) contacts
URL i mod the number of URLs and follows redirects. Publishers join first,
then subscribers, at -join-rate. The run ends after -duration (joins
included) or on Ctrl-C, and prints its report either way.

Flags:
`)
		fs.PrintDefaults()
	}
	urls := fs.String("url", "", "signaling URLs, comma-separated (ws:// or wss://); clients spread over them round-robin")
	fs.StringVar(&cfg.APIURL, "api-url", "", "Sora API endpoint (http://host:3000/): without -url, the signaling URLs are the external_signaling_url of the nodes its ListClusterNodes lists as connected")
	fs.IntVar(&cfg.Channels, "channels", 1, fmt.Sprintf("number of channels (1-%d)", load.MaxChannels))
	fs.StringVar(&cfg.ChannelPrefix, "channel-prefix", "", `channels are named <prefix>-0, <prefix>-1, ... (default "sorad-load-" and 8 random hex digits)`)
	fs.IntVar(&cfg.Publishers, "publishers", 1, fmt.Sprintf("sendonly publishers PER CHANNEL (0-%d)", load.MaxPublishersPerChannel))
	fs.IntVar(&cfg.Subscribers, "subscribers", 10, fmt.Sprintf("recvonly subscribers PER CHANNEL (0-%d); at most %d clients in all", load.MaxSubscribersPerChannel, load.MaxClients))
	fs.StringVar(&cfg.VideoCodec, "video-codec", load.DefaultVideoCodec, "video codec: "+strings.Join(load.VideoCodecs, ", ")+", or none for audio only")
	fs.IntVar(&cfg.VideoKbps, "video-bitrate", load.DefaultVideoKbps, fmt.Sprintf("video bit rate per publisher, kbit/s (1-%d): sent as the connect's bit_rate and the size of the synthetic frames", load.MaxVideoKbps))
	fs.BoolVar(&cfg.Audio, "audio", true, "publishers send Opus and subscribers receive it")
	fs.IntVar(&cfg.AudioKbps, "audio-bitrate", load.DefaultAudioKbps, fmt.Sprintf("Opus bit rate per publisher, kbit/s (%d-%d)", load.MinAudioKbps, load.MaxAudioKbps))
	fs.BoolVar(&cfg.Simulcast, "simulcast", false, "publishers send three VP8 layers (r0, r1, r2 sharing -video-bitrate); needs -video-codec VP8")
	fs.StringVar(&cfg.SimulcastRID, "simulcast-rid", "", "with -simulcast, the layer subscribers ask for (r0, r1, r2; default: the server's)")
	fs.DurationVar(&cfg.Duration, "duration", load.DefaultDuration, fmt.Sprintf("whole run, joins included (at most %v)", load.MaxDuration))
	fs.Float64Var(&cfg.JoinRate, "join-rate", load.DefaultJoinRate, fmt.Sprintf("clients that start connecting per second (at most %d)", load.MaxJoinRate))
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", load.DefaultJoinTimeout, fmt.Sprintf("bound on one connect, WebSocket open to PeerConnection connected (at most %v)", load.MaxJoinTimeout))
	metadata := fs.String("metadata", "", `JSON sent as every connect's "metadata", e.g. '{"access_token":"..."}' (never printed)`)
	metadataFile := fs.String("metadata-file", "", "file holding the -metadata JSON (keeps a token out of the process list)")
	metricsURLs := fs.String("metrics-url", "", "Prometheus endpoints of the servers, comma-separated (sorad: http://<node>:3000/metrics): their process_cpu_seconds_total gives the servers' CPU once every client has joined")
	iceNetworks := fs.String("ice-networks", "", "CIDR networks, comma-separated: the clients' ICE candidates only on local addresses in them (default: every interface)")
	fs.BoolVar(&cfg.InsecureSkipVerify, "insecure", false, "accept any TLS certificate on wss:// and https:// URLs")
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON (with every subscriber's figures) instead of the table")
	fs.BoolVar(&quiet, "quiet", false, "no progress line on stderr")
	if err = fs.Parse(args); err != nil {
		return cfg, false, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for u := range strings.SplitSeq(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	for u := range strings.SplitSeq(*metricsURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.MetricsURLs = append(cfg.MetricsURLs, u)
		}
	}
	for n := range strings.SplitSeq(*iceNetworks, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return cfg, false, false, fmt.Errorf("-ice-networks: %w", err)
		}
		cfg.ICENetworks = append(cfg.ICENetworks, p.Masked())
	}
	cfg.Video = !strings.EqualFold(cfg.VideoCodec, "none")
	if cfg.Video {
		cfg.VideoCodec = strings.ToUpper(cfg.VideoCodec)
	}
	switch {
	case *metadata != "" && *metadataFile != "":
		return cfg, false, false, errors.New("-metadata and -metadata-file: give one")
	case *metadata != "":
		cfg.Metadata = json.RawMessage(*metadata)
	case *metadataFile != "":
		b, err := os.ReadFile(*metadataFile)
		if err != nil {
			return cfg, false, false, fmt.Errorf("-metadata-file: %w", err)
		}
		cfg.Metadata = json.RawMessage(strings.TrimSpace(string(b)))
	}
	if cfg.ChannelPrefix == "" {
		cfg = cfg.WithDefaults() // the random prefix
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return cfg, false, false, err
	}
	return cfg, jsonOut, quiet, nil
}
