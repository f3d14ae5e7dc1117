// Package cluster runs sorad's control plane: hashicorp/raft over the
// cluster port with raft-boltdb/v2 stores, joining and purging nodes, epochs,
// peer liveness, node modes, and the placement of channels on nodes.
//
// Every write goes through Raft and may be issued on any node: a follower
// sends it to the leader over the internal HTTP protocol that shares the
// cluster port with Raft. Reads come from the local copy of the replicated
// state (package fsm). This package knows nothing of HTTP APIs or media; it
// offers Go methods to the packages above it.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
)

// RaftTiming holds the Raft timeouts. Followers start an election after
// HeartbeatTimeout without hearing from a leader.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
}

// RaftSnapshots says when Raft compacts its log into a snapshot: after
// Threshold entries, checked every Interval, keeping TrailingLogs entries
// for followers that lag a little. Zero values are hashicorp/raft's
// defaults.
type RaftSnapshots struct {
	Threshold    uint64
	Interval     time.Duration
	TrailingLogs uint64
}

// Config configures a node's control plane.
type Config struct {
	// NodeName is the node's Erlang-style name, name@host. host is where
	// peers reach this node's cluster port.
	NodeName string
	// BindAddress is the IP the cluster port listens on.
	BindAddress string
	// Port is the cluster port, the same on every node of a cluster.
	Port int
	// DataDir holds the Raft state under DataDir/raft.
	DataDir string

	ExternalAPIURL       string
	ExternalSignalingURL string
	Version              string
	License              fsm.License

	// ContactNodeNames are nodes to join at start (see autoJoinLoop).
	ContactNodeNames []string

	// ProbeInterval is how often peers are probed; a peer with no successful
	// probe for PeerTimeout is not connected.
	ProbeInterval time.Duration
	PeerTimeout   time.Duration
	// FailoverTimeout is how long the leader must have had no answer from
	// a channel's node in charge before another node may take it over.
	FailoverTimeout time.Duration
	// LeaseTimeout is how long this node serves its channels after its
	// last round trip to the Raft leader began (see lease.go); shorter
	// than FailoverTimeout by more than twice Raft's LeaderLeaseTimeout.
	// Zero is two thirds of FailoverTimeout.
	LeaseTimeout time.Duration
	// RequestTimeout bounds internal requests and Raft writes.
	RequestTimeout time.Duration
	// IdleTimeout closes a cluster-port connection that carried nothing
	// for this long (a leader's heartbeats keep its connections busy).
	IdleTimeout time.Duration
	Raft        RaftTiming
	Snapshots   RaftSnapshots

	// Trust authenticates the cluster port: every connection is mutual TLS
	// and only members are served. Nil leaves the port unauthenticated,
	// for a cluster whose network is trusted (cluster_insecure).
	Trust *trust.Store

	Logger *slog.Logger
	// Connections reports the number of live connections on this node, for
	// placement. Nil counts as zero.
	Connections func() int

	// holdRegistration, when set (by this package's tests), keeps this
	// process from registering until it is closed: a restarted node whose
	// new process answers its peers before it registers.
	holdRegistration <-chan struct{}
}

func (cfg *Config) setDefaults() {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = time.Second
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = 3 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 3 * time.Second
	}
	if cfg.LeaseTimeout <= 0 {
		cfg.LeaseTimeout = cfg.FailoverTimeout * 2 / 3
	}
	if cfg.Raft.HeartbeatTimeout <= 0 {
		cfg.Raft.HeartbeatTimeout = 500 * time.Millisecond
	}
	if cfg.Raft.ElectionTimeout <= 0 {
		cfg.Raft.ElectionTimeout = 500 * time.Millisecond
	}
	if cfg.Raft.LeaderLeaseTimeout <= 0 {
		cfg.Raft.LeaderLeaseTimeout = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Connections == nil {
		cfg.Connections = func() int { return 0 }
	}
}

// SplitNodeName splits name@host. It fails unless both parts are present.
func SplitNodeName(name string) (short, host string, err error) {
	short, host, ok := strings.Cut(name, "@")
	if !ok || short == "" || host == "" || strings.ContainsAny(name, " \t\r\n/") || strings.Contains(host, "@") {
		return "", "", fmt.Errorf("node name %q is not of the form name@host", name)
	}
	return short, host, nil
}

// Cluster is one node's view of, and handle on, the cluster.
type Cluster struct {
	cfg         Config
	log         *slog.Logger
	incarnation string // identifies this process in RegisterNode
	mux         *mux
	dialer      *dialer
	internal    *http.Server
	client      *peerClient
	apiClient   *apiClient // forwards API calls to peers
	apiServer   *apiServer // answers API calls peers forward here
	liveness    *liveness
	api         atomic.Pointer[APIHandler]          // answers forwarded API calls
	ended       atomic.Pointer[func([]fsm.Channel)] // see OnSessionsEnded
	// staleSessions: this process registered and has not yet ended the
	// sessions recorded for its earlier processes (endStaleSessions).
	staleSessions atomic.Bool
	// electionAsked is when this node last stood for election after the
	// leader's process died (Unix nanoseconds); see standForElection.
	electionAsked atomic.Int64
	// deadLeader names the last leader this node found dead; see
	// standForElection.
	deadLeader atomic.Pointer[string]
	changed    chan struct{}                      // see Changes
	draining   atomic.Bool                        // see Drain
	lease      *lease                             // this node's serving lease
	lastLeader atomic.Pointer[raft.ServerAddress] // see renewLease
	leaseLost  atomic.Pointer[func()]             // see OnLeaseLost
	apart      apart                              // other clusters reached; see apart.go
	grants     grants                             // as leader: the leases it renewed

	mu      sync.RWMutex
	inst    *instance // nil while being replaced, and after Close
	joining bool      // a join is replacing the instance
	purged  bool      // the cluster removed this node
	closed  bool      // Close was called: no new instance may start

	// membership serialises membership changes that involve this node:
	// joining another cluster, and adding a member while leader.
	membership chan struct{}

	ctx     context.Context
	cancel  context.CancelFunc
	loops   sync.WaitGroup
	serving sync.WaitGroup
}

// Open starts the node: it listens on the cluster port, starts Raft on the
// state in DataDir (forming a one-node cluster on first start), and begins
// registering itself, probing peers and, with contact nodes configured,
// joining them. It returns without waiting for any of that.
func Open(cfg Config) (*Cluster, error) {
	cfg.setDefaults()
	if _, _, err := SplitNodeName(cfg.NodeName); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	for _, n := range cfg.ContactNodeNames {
		if _, _, err := SplitNodeName(n); err != nil {
			return nil, fmt.Errorf("open cluster: contact: %w", err)
		}
	}
	if err := claimDataDir(cfg.DataDir, cfg.NodeName); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("open cluster: listen on cluster port: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dialer{localIP: sourceIP(cfg.BindAddress), trust: cfg.Trust}
	c := &Cluster{
		cfg:         cfg,
		log:         cfg.Logger,
		incarnation: newIncarnation(),
		mux:         newMux(ln, cfg.Logger, cfg.Trust, cfg.IdleTimeout),
		dialer:      d,
		client:      newPeerClient(d, cfg.RequestTimeout),
		apiClient:   newAPIClient(d, cfg.Logger, cfg.RequestTimeout),
		liveness:    newLiveness(),
		membership:  make(chan struct{}, 1),
		changed:     make(chan struct{}, 1),
		ctx:         ctx,
		cancel:      cancel,
	}
	c.lease = newLease(cfg.LeaseTimeout, c.leaseChanged)
	c.internal = &http.Server{
		Handler:           c.internalHandler(),
		ReadHeaderTimeout: cfg.RequestTimeout,
		ReadTimeout:       2 * cfg.RequestTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    internalMaxHeaderBytes,
		ConnContext:       withCaller,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	c.apiServer = &apiServer{c: c, conns: map[net.Conn]struct{}{}}
	c.serving.Add(3)
	go func() {
		defer c.serving.Done()
		c.mux.serve()
	}()
	go func() {
		defer c.serving.Done()
		c.apiServer.serve(c.mux.api)
	}()
	go func() {
		defer c.serving.Done()
		if err := c.internal.Serve(c.mux.http); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			c.log.Error("internal http server stopped", "error", err)
		}
	}()

	inst, err := c.openInstance(true)
	if err != nil {
		c.stopServing()
		cancel()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	c.mu.Lock()
	c.inst = inst
	c.mu.Unlock()
	c.startLoop(c.registerLoop)
	c.startLoop(c.probeLoop)
	c.startLoop(c.leaseLoop)
	if len(cfg.ContactNodeNames) > 0 {
		c.startLoop(c.autoJoinLoop)
	}
	return c, nil
}

func (c *Cluster) startLoop(loop func(ctx context.Context)) {
	c.loops.Add(1)
	go func() {
		defer c.loops.Done()
		loop(c.ctx)
	}()
}

// Close stops the node. A leader first hands leadership to another voter so
// the cluster does not wait for an election timeout.
func (c *Cluster) Close() error { return c.shutdown(true) }

// shutdown stops the node, handing leadership over first when handOver is
// set; without it the node stops as a crashing process does.
func (c *Cluster) shutdown(handOver bool) error {
	if inst := c.current(); handOver && inst != nil && inst.raft.State() == raft.Leader && len(inst.servers()) > 1 {
		if err := inst.raft.LeadershipTransfer().Error(); err != nil {
			c.log.Warn("leadership transfer before shutdown failed", "error", err)
		}
	}
	c.cancel()
	c.loops.Wait()
	c.lease.stop()
	c.mu.Lock()
	inst := c.inst
	c.inst, c.closed = nil, true
	c.mu.Unlock()
	var err error
	if inst != nil {
		err = inst.close()
	}
	c.stopServing()
	return err
}

func (c *Cluster) stopServing() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.internal.Shutdown(ctx)
	_ = c.mux.close()
	c.apiServer.close()
	c.serving.Wait()
	c.client.close()
	c.apiClient.close()
}

// NodeName returns this node's name.
func (c *Cluster) NodeName() string { return c.cfg.NodeName }

// current returns the running Raft instance, or nil while it is replaced.
func (c *Cluster) current() *instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.inst
}

// selfAddress is where peers reach this node's cluster port.
func (c *Cluster) selfAddress() string { return c.addressOf(c.cfg.NodeName) }

// addressOf maps a node name to its cluster address: the host of the name
// and the cluster port, which is the same on every node.
func (c *Cluster) addressOf(name string) string {
	_, host, _ := strings.Cut(name, "@")
	return net.JoinHostPort(host, strconv.Itoa(c.cfg.Port))
}

// info is what this node registers about itself.
func (c *Cluster) info() fsm.NodeInfo {
	return fsm.NodeInfo{
		Name:                 c.cfg.NodeName,
		RaftAddress:          c.selfAddress(),
		ExternalAPIURL:       c.cfg.ExternalAPIURL,
		ExternalSignalingURL: c.cfg.ExternalSignalingURL,
		Version:              c.cfg.Version,
		License:              c.cfg.License,
	}
}

func newIncarnation() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// claimDataDir creates dataDir and records the node name in it, refusing a
// data directory that belongs to another node name: its Raft state names a
// different server and would confuse the cluster.
func claimDataDir(dataDir, nodeName string) error {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return fmt.Errorf("create data_dir: %w", err)
	}
	path := filepath.Join(dataDir, "node_name")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != nodeName {
			return fmt.Errorf("data_dir %s belongs to node %q, not %q: use another data_dir or the same node_name", dataDir, got, nodeName)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(path, []byte(nodeName+"\n"), 0o640); err != nil {
			return fmt.Errorf("record node name in data_dir: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("read data_dir node name: %w", err)
	}
}

// NodeStatus is one known node as this node sees it.
type NodeStatus struct {
	Name      string
	Connected bool
	// Record is the replicated record, or nil for a node known only from the
	// Raft configuration (joining, or partly purged).
	Record *fsm.Node
}

// Nodes lists every node this node knows of, itself included, by name. This
// node is always connected; before it is registered its record shows mode
// initial.
func (c *Cluster) Nodes() []NodeStatus {
	inst := c.current()
	known := map[string]*fsm.Node{}
	if inst != nil && !c.Purged() {
		for _, n := range inst.fsm.Nodes() {
			known[n.Name] = &n
		}
		for _, s := range inst.servers() {
			if _, ok := known[string(s.ID)]; !ok {
				known[string(s.ID)] = nil
			}
		}
	}
	// This node shows its own configuration with mode initial until this
	// process is registered (keeping epoch and member_since if it had them).
	if self := known[c.cfg.NodeName]; self == nil {
		known[c.cfg.NodeName] = &fsm.Node{NodeInfo: c.info(), Mode: fsm.ModeInitial}
	} else if c.modeOf(self) == fsm.ModeInitial {
		rec := *self
		rec.Mode = fsm.ModeInitial
		known[c.cfg.NodeName] = &rec
	}
	out := make([]NodeStatus, 0, len(known))
	for name, rec := range known {
		out = append(out, NodeStatus{Name: name, Connected: c.Connected(name), Record: rec})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ChannelOwner returns the node in charge of a channel when another live
// member holds it: the node an API call about the channel goes to. It
// reports false when this node is in charge, when nobody is, or when the
// holder restarted or left (stale: its sessions are gone).
func (c *Cluster) ChannelOwner(channelID string) (string, bool) {
	inst := c.current()
	if inst == nil {
		return "", false
	}
	ch, stale, ok := inst.fsm.Channel(channelID)
	if !ok || stale || ch.NodeInCharge == c.cfg.NodeName {
		return "", false
	}
	return ch.NodeInCharge, true
}

// ConnectedPeers returns the registered nodes other than this one that this
// node is connected to, by name.
func (c *Cluster) ConnectedPeers() []string {
	var out []string
	for _, n := range c.Nodes() {
		if n.Name != c.cfg.NodeName && n.Connected && n.Record != nil {
			out = append(out, n.Name)
		}
	}
	return out
}

// Changes returns a channel that receives a value whenever the replicated
// state, or this node's standing in the cluster, changes. Values coalesce
// (one pending at most), so a slow reader never blocks the cluster; it is
// meant for one reader.
func (c *Cluster) Changes() <-chan struct{} { return c.changed }

func (c *Cluster) signalChange() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// InCharge reports whether this node may go on serving a channel it has
// sessions in, and if not, why: the cluster gave the channel to another
// node (CHANNEL-MOVED), or removed this node (NODE-PURGED). A channel with
// no assignment is not taken away: that is a channel this node released.
func (c *Cluster) InCharge(channelID string) (bool, string) {
	if c.Purged() {
		return false, "NODE-PURGED"
	}
	inst := c.current()
	if inst == nil {
		return true, ""
	}
	ch, _, ok := inst.fsm.Channel(channelID)
	if ok && ch.NodeInCharge != c.cfg.NodeName {
		return false, "CHANNEL-MOVED"
	}
	return true, ""
}

// ChannelsHeld lists the channels assigned to this node's current process
// (its epoch now), in no particular order. A purged node or one that is not
// registered holds none. It is called on every change of the state, so it
// copies nothing but the IDs.
func (c *Cluster) ChannelsHeld() []string {
	inst := c.current()
	if inst == nil || c.Purged() {
		return nil
	}
	self, ok := inst.fsm.Node(c.cfg.NodeName)
	if !ok || self.Incarnation != c.incarnation {
		return nil
	}
	return inst.fsm.ChannelsHeldBy(c.cfg.NodeName, self.Epoch)
}

// Assigned reports whether some node is in charge of a channel, as this
// node's copy of the state says.
func (c *Cluster) Assigned(channelID string) bool {
	inst := c.current()
	if inst == nil {
		return false
	}
	_, _, ok := inst.fsm.Channel(channelID)
	return ok
}

// ChannelStatus is one channel's assignment as this node sees it.
type ChannelStatus struct {
	fsm.Channel
	Stale     bool
	Connected bool // the node in charge is connected to this node
}

// Channels lists every assigned channel by channel ID.
func (c *Cluster) Channels() []ChannelStatus {
	inst := c.current()
	if inst == nil {
		return nil
	}
	s := inst.fsm.State()
	out := make([]ChannelStatus, 0, len(s.Channels))
	for _, ch := range s.SortedChannels() {
		out = append(out, ChannelStatus{Channel: ch, Stale: s.Stale(ch), Connected: c.Connected(ch.NodeInCharge)})
	}
	return out
}

// Mode returns this node's mode: initial until it is a registered member.
func (c *Cluster) Mode() fsm.Mode {
	inst := c.current()
	if inst == nil {
		return fsm.ModeInitial
	}
	n, ok := inst.fsm.Node(c.cfg.NodeName)
	if !ok {
		return fsm.ModeInitial
	}
	return c.modeOf(&n)
}

// modeOf reports initial for this node's own record while this process has
// not registered yet, or after the cluster purged it.
func (c *Cluster) modeOf(n *fsm.Node) fsm.Mode {
	if n.Name == c.cfg.NodeName && (n.Incarnation != c.incarnation || c.Purged() || c.isJoining()) {
		return fsm.ModeInitial
	}
	return n.Mode
}

// SetMode changes this node's mode through Raft.
func (c *Cluster) SetMode(ctx context.Context, mode fsm.Mode) error {
	if !mode.Settable() {
		return invalid(TypeInvalidMode, fmt.Sprintf("mode must be normal, block_new_session or block_new_connection, not %q", mode))
	}
	if c.Mode() == fsm.ModeInitial {
		return unavailable(TypeNodeNotReady, "this node has not joined a cluster yet", nil)
	}
	res, err := c.propose(ctx, fsm.SetMode{Node: c.cfg.NodeName, Mode: mode})
	if err != nil {
		return fmt.Errorf("set mode %s: %w", mode, err)
	}
	return resultErr(res)
}

// RaftStats is the Raft status shown in GetStatsReport and metrics.
type RaftStats struct {
	State        string // leader, follower, candidate, shutdown
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64
	Leader       string // the leader's node name, "" if unknown
	Voters       int
	Nodes        int // registered nodes
	Channels     int // assigned channels
}

// Stats returns the current Raft status.
func (c *Cluster) Stats() RaftStats {
	inst := c.current()
	if inst == nil {
		return RaftStats{State: "shutdown"}
	}
	_, leader := inst.raft.LeaderWithID()
	nodes, channels := inst.fsm.Counts()
	return RaftStats{
		State:        strings.ToLower(inst.raft.State().String()),
		Term:         inst.raft.CurrentTerm(),
		CommitIndex:  inst.raft.CommitIndex(),
		AppliedIndex: inst.raft.AppliedIndex(),
		LastIndex:    inst.raft.LastIndex(),
		Leader:       string(leader),
		Voters:       len(inst.servers()),
		Nodes:        nodes,
		Channels:     channels,
	}
}

// Purged reports whether the cluster removed this node (it then serves
// nothing until it joins again).
func (c *Cluster) Purged() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.purged
}

func (c *Cluster) isJoining() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.joining
}

// resultErr turns a refused command's domain error into an API error.
func resultErr(res fsm.Result) error {
	if res.Err == nil {
		return nil
	}
	switch res.Err.Code {
	case fsm.CodeNodeNotFound:
		return invalid(TypeNodeNotFound, res.Err.Message)
	case fsm.CodeInvalidCommand:
		return invalid(TypeInvalidCommand, res.Err.Message)
	default:
		return &Error{Kind: KindInvalid, Type: string(res.Err.Code), Reason: res.Err.Message, Err: res.Err}
	}
}
