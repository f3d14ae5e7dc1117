// Command sorad runs one node of a sorad cluster: a Sora-compatible WebRTC
// SFU whose control plane is replicated with Raft. With no configuration it
// forms a one-node cluster on 127.0.0.1 with its state in ./data.
//
// Configuration comes from flags, SORAD_* environment variables and a
// sorad.conf file, in that order of precedence; see sorad --help.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/httpapi"
	"github.com/sorad/sorad/media"
	"github.com/sorad/sorad/media/devtools"
)

// version is sorad's version, reported in ListClusterNodes and
// GetStatsReport. Release builds set it with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "tls" {
		if err := runTLS(os.Args[2:], os.Stdout); err != nil && !errors.Is(err, errHelp) {
			fmt.Fprintln(os.Stderr, "sorad tls:", err)
			os.Exit(2)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := runToken(os.Args[2:], os.LookupEnv, os.Stdout); err != nil && !errors.Is(err, errHelp) {
			fmt.Fprintln(os.Stderr, "sorad token:", err)
			os.Exit(2)
		}
		return
	}
	if len(os.Args) > 1 && slices.Contains(opsCommands, os.Args[1]) {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		err := runOps(ctx, os.Args[1], os.Args[2:], os.LookupEnv, os.Stdout)
		stop()
		if err != nil && !errors.Is(err, errHelp) {
			fmt.Fprintf(os.Stderr, "sorad %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	cfg, err := loadConfig(os.Args[1:], os.LookupEnv, os.Stdout)
	if errors.Is(err, errHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sorad:", err)
		os.Exit(2)
	}
	// Every line carries the node's name, so that a cluster's logs can be
	// read together; see the README's "Logs".
	log := newLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat).With("node_name", cfg.NodeName)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("sorad stopped with an error", "error", err)
		os.Exit(1)
	}
}

// run starts the node and serves until ctx is cancelled, then shuts down in
// order: stop taking API calls, then leave Raft.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	log.Info("starting sorad", "version", version, "config", cfg)
	memberTrust, err := clusterTrust(cfg)
	if err != nil {
		return err
	}
	if memberTrust == nil && !isLoopback(cfg.ListenAddress) {
		log.Warn("the cluster port has no authentication (cluster_insecure = true): anyone who reaches it controls the cluster", "cluster_port", cfg.ClusterPort)
	}
	tokens, err := signalingTokens(cfg)
	if err != nil {
		return err
	}
	apiTLS, err := loadKeyPair(cfg.APITLSCertFile, cfg.APITLSKeyFile)
	if err != nil {
		return fmt.Errorf("api_tls_cert_file: %w", err)
	}
	signalingTLS, err := loadKeyPair(cfg.SignalingTLSCertFile, cfg.SignalingTLSKeyFile)
	if err != nil {
		return fmt.Errorf("signaling_tls_cert_file: %w", err)
	}
	reloadable := []reloader{{"api certificate", apiTLS.reloadFunc()}, {"signaling certificate", signalingTLS.reloadFunc()}}
	if memberTrust != nil {
		reloadable = append(reloadable, reloader{"cluster authentication", memberTrust.Reload})
	}
	hooks, err := newWebhooks(cfg, log)
	if err != nil {
		return err
	}
	if hooks != nil {
		defer hooks.Close() // after the media plane, whose last events it delivers
	}
	// The client ports listen before this process joins its cluster: peers
	// send clients here as soon as it registers, and the kernel holds
	// such a connection until the servers below accept it, instead of
	// refusing it.
	listeners, err := listenClientPorts(cfg)
	if err != nil {
		return err
	}
	defer closeListeners(listeners) // those never served
	stats := &media.Stats{}
	cl, err := cluster.Open(cluster.Config{
		NodeName:             cfg.NodeName,
		BindAddress:          cfg.ListenAddress,
		Port:                 cfg.ClusterPort,
		DataDir:              cfg.DataDir,
		ExternalAPIURL:       cfg.ExternalAPIURL,
		ExternalSignalingURL: cfg.ExternalSignalingURL,
		Version:              version,
		License: fsm.License{
			MaxConnections: cfg.LicenseMaxConnections,
			MaxNodes:       cfg.LicenseMaxNodes,
			SerialCode:     cfg.LicenseSerialCode,
			Type:           cfg.LicenseType,
		},
		ContactNodeNames: cfg.ContactNodeNameList,
		ProbeInterval:    cfg.ProbeInterval,
		PeerTimeout:      cfg.PeerTimeout,
		FailoverTimeout:  cfg.FailoverTimeout,
		LeaseTimeout:     cfg.LeaseTimeout,
		RequestTimeout:   cfg.ClusterRequestTimeout,
		IdleTimeout:      cfg.ClusterIdleTimeout,
		Raft: cluster.RaftTiming{
			HeartbeatTimeout:   cfg.RaftHeartbeatTimeout,
			ElectionTimeout:    cfg.RaftElectionTimeout,
			LeaderLeaseTimeout: cfg.RaftLeaderLeaseTimeout,
		},
		Snapshots: cluster.RaftSnapshots{
			Threshold:    uint64(cfg.RaftSnapshotThreshold),
			Interval:     cfg.RaftSnapshotInterval,
			TrailingLogs: uint64(cfg.RaftTrailingLogs),
		},
		Trust:       memberTrust,
		Logger:      log,
		Connections: func() int { return int(stats.Ongoing()) },
	})
	if err != nil {
		return err
	}
	med, err := media.New(media.Config{
		ListenAddress:           cfg.ListenAddress,
		UDPPort:                 cfg.MediaUDPPort,
		PublicIPs:               cfg.MediaPublicIPList,
		Version:                 version,
		MaxMessageSize:          cfg.SignalingMaxMessageSize,
		MessageRate:             float64(cfg.SignalingMessageRate),
		MessageBurst:            cfg.SignalingMessageBurst,
		ConnectTimeout:          cfg.SignalingConnectTimeout,
		PingInterval:            cfg.SignalingPingInterval,
		PongTimeout:             cfg.SignalingPongTimeout,
		ReleaseDelay:            cfg.ChannelReleaseDelay,
		KeyframeThrottle:        cfg.KeyframeRequestInterval,
		NACKBufferSize:          uint16(cfg.NACKBufferSize),
		MaxConnections:          cfg.LicenseMaxConnections,
		MaxPending:              cfg.SignalingMaxPending,
		MaxPendingPerIP:         cfg.SignalingMaxPendingPerIP,
		NewChannelRate:          float64(cfg.SignalingNewChannelRate),
		NewChannelBurst:         cfg.SignalingNewChannelBurst,
		MaxMetadataSize:         cfg.SignalingMaxMetadataSize,
		MaxChannelMetadata:      cfg.ChannelMaxMetadataSize,
		Tokens:                  tokens,
		UserAgentStatsInterval:  cfg.UserAgentStatsInterval,
		RTPForwardNetworks:      cfg.RTPForwardingNetworks,
		MaxUserAgentStats:       cfg.UserAgentStatsMaxSize,
		DataChannelCompress:     cfg.DataChannelCompress,
		DataChannelMaxBuffered:  cfg.DataChannelMaxBuffered,
		MessagingMaxMessageSize: cfg.MessagingMaxMessageSize,
		MessagingRate:           float64(cfg.MessagingMessageRate),
		MessagingBurst:          cfg.MessagingMessageBurst,
		Webhooks:                hooks,
		WebhookUpdateInterval:   cfg.WebhookUpdateInterval,
		ExternalSignalingURL:    cfg.ExternalSignalingURL,
		RecordSessions:          cfg.SessionWebhookURL != "",
		DefaultVideoCodec:       cfg.DefaultVideoCodecType,
		DefaultVideoBitRate:     cfg.DefaultVideoBitRate,
		SimulcastEncodings:      cfg.SimulcastEncodings,
		SpotlightNumber:         cfg.DefaultSpotlightNumber,
		SpotlightFocusRID:       media.RID(cfg.SpotlightFocusRID),
		SpotlightUnfocusRID:     media.RID(cfg.SpotlightUnfocusRID),
		SpotlightFocusHold:      cfg.SpotlightFocusHold,
		Logger:                  log,
	}, cl, stats)
	if err != nil {
		return errors.Join(err, cl.Close())
	}
	// The end of a session that died with its node is reported by the
	// node that committed the change that ended it.
	cl.OnSessionsEnded(med.SessionsEnded)
	cl.OnLeaseLost(med.StopServing)
	api := httpapi.New(httpapi.Config{
		CORSOrigin:     cfg.APICORSOrigin,
		BearerToken:    cfg.APIBearerToken,
		MaxBodySize:    cfg.APIMaxBodySize,
		Version:        version,
		RequestTimeout: cfg.ClusterRequestTimeout,
		Logger:         log.With("component", "api"),
	}, cl, med)
	// Other nodes forward calls about channels this node is in charge of.
	cl.ServeAPI(api.AnswerForwarded)
	signalingHandler := med.Handler()
	if cfg.Devtools {
		page, err := devtools.New(devtools.Config{
			NodeName:     cfg.NodeName,
			Version:      version,
			APIURL:       cfg.ExternalAPIURL,
			SignalingURL: cfg.ExternalSignalingURL,
			ClusterURLs:  func() []string { return clusterURLs(cl) },
		})
		if err != nil {
			return errors.Join(err, med.Close(), cl.Close())
		}
		signalingHandler = devtools.Mount(signalingHandler, page)
	}
	servers := []*namedServer{
		{name: "api", srv: newHTTPServer(hostPort(cfg.ListenAddress, cfg.APIPort), api, log), tls: apiTLS, ln: listeners.api},
		{name: "signaling", srv: newHTTPServer(hostPort(cfg.ListenAddress, cfg.SignalingPort), signalingHandler, log), tls: signalingTLS, ln: listeners.signaling},
	}
	if listeners.pprof != nil {
		servers = append(servers, &namedServer{name: "pprof", srv: newHTTPServer(cfg.PprofAddress, pprofHandler(), log), ln: listeners.pprof})
	}
	serveErr := make(chan error, len(servers))
	for _, s := range servers {
		ln := s.ln
		if s.tls != nil {
			ln = tls.NewListener(ln, s.tls.config())
		}
		s.started = true
		go func() { serveErr <- fmt.Errorf("%s server: %w", s.name, s.srv.Serve(ln)) }()
	}
	apiScheme, sigScheme := "http", "ws"
	if apiTLS != nil {
		apiScheme = "https"
	}
	if signalingTLS != nil {
		sigScheme = "wss"
	}
	devtoolsURL := "off"
	if cfg.Devtools {
		devtoolsURL = strings.Replace(sigScheme, "ws", "http", 1) + "://" + servers[1].srv.Addr + devtools.Prefix
	}
	log.Info("sorad is serving", "api", apiScheme+"://"+servers[0].srv.Addr+"/", "signaling", sigScheme+"://"+servers[1].srv.Addr+"/signaling",
		"devtools", devtoolsURL, "media_udp_port", cfg.MediaUDPPort, "cluster_port", cfg.ClusterPort, "data_dir", cfg.DataDir)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			break wait
		case runErr = <-serveErr:
			break wait
		case <-hup:
			reload(log, reloadable)
		}
	}
	if err := shutdown(servers, med, cl, cfg.ShutdownTimeout); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr == nil {
		log.Info("sorad stopped")
	}
	return runErr
}

// clusterURLs are the external API and signaling URLs of the cluster's
// nodes, which the devtools page may reach.
func clusterURLs(cl *cluster.Cluster) []string {
	var out []string
	for _, n := range cl.Nodes() {
		if n.Record != nil {
			out = append(out, n.Record.ExternalAPIURL, n.Record.ExternalSignalingURL)
		}
	}
	return out
}

// reloader re-reads one set of files SIGHUP covers; a nil fn has none.
type reloader struct {
	what string
	fn   func() error
}

// reload re-reads the files that SIGHUP covers. A file that fails to load
// leaves the material in use unchanged.
func reload(log *slog.Logger, all []reloader) {
	n := 0
	for _, r := range all {
		if r.fn == nil {
			continue
		}
		n++
		if err := r.fn(); err != nil {
			log.Error("SIGHUP: "+r.what+" not reloaded; the previous one stays", "error", err)
			continue
		}
		log.Info("SIGHUP: " + r.what + " reloaded")
	}
	if n == 0 {
		log.Info("SIGHUP: nothing to reload")
	}
}

// pprofHandler serves Go's profiles under /debug/pprof/.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

type namedServer struct {
	name    string
	srv     *http.Server
	tls     *keyPair // nil: plain
	ln      net.Listener
	started bool
}

func newHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// shutdown hands the node's clients and channels over while it still
// answers (connects that arrive meanwhile are redirected), stops taking
// requests, stops the media plane, then leaves Raft.
func shutdown(servers []*namedServer, med *media.Media, cl *cluster.Cluster, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	med.Drain()
	var errs []error
	for _, s := range servers {
		if !s.started {
			continue
		}
		if err := s.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down %s server: %w", s.name, err))
		}
	}
	if err := med.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close media: %w", err))
	}
	if err := cl.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close cluster: %w", err))
	}
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by loadConfig
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
