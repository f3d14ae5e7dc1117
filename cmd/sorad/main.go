// Command sorad runs one node of a sorad cluster: a Sora-compatible WebRTC
// SFU whose control plane is replicated with Raft. With no configuration it
// forms a one-node cluster on 127.0.0.1 with its state in ./data.
//
// Configuration comes from flags, SORAD_* environment variables and a
// sorad.conf file, in that order of precedence; see sorad --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/httpapi"
)

// version is sorad's version, reported in ListClusterNodes and
// GetStatsReport. Release builds set it with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	cfg, err := loadConfig(os.Args[1:], os.LookupEnv, os.Stdout)
	if errors.Is(err, errHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sorad:", err)
		os.Exit(2)
	}
	log := newLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
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
		RequestTimeout:   cfg.ClusterRequestTimeout,
		Raft: cluster.RaftTiming{
			HeartbeatTimeout:   cfg.RaftHeartbeatTimeout,
			ElectionTimeout:    cfg.RaftElectionTimeout,
			LeaderLeaseTimeout: cfg.RaftLeaderLeaseTimeout,
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	api := &http.Server{
		Addr: net.JoinHostPort(cfg.ListenAddress, strconv.Itoa(cfg.APIPort)),
		Handler: httpapi.New(httpapi.Config{
			CORSOrigin:     cfg.APICORSOrigin,
			BearerToken:    cfg.APIBearerToken,
			MaxBodySize:    cfg.APIMaxBodySize,
			Version:        version,
			RequestTimeout: cfg.ClusterRequestTimeout,
			Logger:         log.With("component", "api"),
		}, cl),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ln, err := net.Listen("tcp", api.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on api port: %w", err), cl.Close())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- api.Serve(ln) }()
	log.Info("sorad is serving", "api", "http://"+api.Addr+"/", "cluster_port", cfg.ClusterPort, "data_dir", cfg.DataDir)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		runErr = fmt.Errorf("api server: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := api.Shutdown(shutdownCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shut down api server: %w", err))
	}
	if err := cl.Close(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("close cluster: %w", err))
	}
	if runErr == nil {
		log.Info("sorad stopped")
	}
	return runErr
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
