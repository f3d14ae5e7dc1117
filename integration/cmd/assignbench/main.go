// Command assignbench measures channel assignment on a three-node sorad
// control plane and, in the same run, a baseline: raw hashicorp/raft Apply of
// no-op commands of the same size on the same kind of stores (raft-boltdb/v2
// on bbolt, TCP on loopback, the same Raft timeouts).
//
//	go run ./integration/cmd/assignbench [-ops 2000] [-proposers 1,16,64]
//
// sorad's figure is AcquireChannel of a new channel: placement, a
// compare-and-set AssignChannel through Raft, and the wait until the
// proposing node has applied it. Proposers are spread over the three nodes,
// so two thirds of them go through a follower that forwards to the leader;
// the "on leader" column runs every proposer on the leader to separate that
// hop. All traffic stays on 127.0.3.0/24.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
)

func main() {
	ops := flag.Int("ops", 2000, "assignments (and baseline applies) per proposer level")
	levels := flag.String("proposers", "1,16,64", "comma-separated numbers of concurrent proposers")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "assignbench:", err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "assignbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*ops, *levels); err != nil {
		fmt.Fprintln(os.Stderr, "assignbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// Raft timing shared by both sides: sorad's defaults.
var timing = cluster.RaftTiming{
	HeartbeatTimeout:   500 * time.Millisecond,
	ElectionTimeout:    500 * time.Millisecond,
	LeaderLeaseTimeout: 250 * time.Millisecond,
}

func run(ops int, levelList string) error {
	var levels []int
	for _, s := range strings.Split(levelList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -proposers entry %q", s)
		}
		levels = append(levels, n)
	}
	dir, err := os.MkdirTemp("", "assignbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	nodes, err := startSorad(filepath.Join(dir, "sorad"))
	if err != nil {
		return err
	}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	rafts, err := startRaw(filepath.Join(dir, "raw"))
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range rafts {
			r.close()
		}
	}()
	var soradLeader *cluster.Cluster
	for _, n := range nodes {
		if n.Stats().State == "leader" {
			soradLeader = n
		}
	}
	if soradLeader == nil {
		return errors.New("sorad cluster has no leader")
	}

	payload := len(mustEncode(fsm.AssignChannel{Channel: "bench-01-000000", Node: nodes[0].NodeName(), Multistream: true}))
	fmt.Printf("# channel assignment, 3-node cluster on loopback\n\n")
	fmt.Printf("machine: %s, %d cores (GOMAXPROCS %d), %s %s/%s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("command: go run ./integration/cmd/assignbench -ops %d -proposers %s\n", ops, levelList)
	fmt.Printf("command size: %d bytes; %d operations per row\n\n", payload, ops)
	fmt.Println("| proposers | sorad assign/s | p50 ms | p99 ms | sorad on leader assign/s | p50 ms | p99 ms | raw raft apply/s | p50 ms | p99 ms | sorad / raw | on leader / raw |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

	ctx := context.Background()
	// Each call of acquire makes a fresh run whose channel IDs are all new,
	// so every AcquireChannel commits an assignment.
	var runs atomic.Int64
	acquire := func(on []*cluster.Cluster) func(int, int) error {
		run := runs.Add(1)
		return func(worker, i int) error {
			id := fmt.Sprintf("bench-%02d-%06d", run, i)
			_, err := on[worker%len(on)].AcquireChannel(ctx, id, cluster.ChannelOptions{Multistream: true})
			return err
		}
	}
	// The baseline, like sorad's proposer, follows a change of leader.
	rawApply := func(_, _ int) error {
		buf := make([]byte, payload)
		_, _ = rand.Read(buf)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var err error = raft.ErrNotLeader
			for _, r := range rafts {
				if r.raft.State() == raft.Leader {
					err = r.raft.Apply(buf, 10*time.Second).Error()
					break
				}
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Warm up every path (connections, caches) before measuring.
	for _, f := range []func(int, int) error{acquire(nodes), acquire([]*cluster.Cluster{soradLeader}), rawApply} {
		if _, _, err := measure(16, 200, f); err != nil {
			return err
		}
	}
	terms := func() (uint64, uint64) { return soradLeader.Stats().Term, rafts[0].raft.CurrentTerm() }
	soradTerm, rawTerm := terms()
	for _, p := range levels {
		spread, err := row(p, ops, acquire(nodes))
		if err != nil {
			return fmt.Errorf("sorad, %d proposers: %w", p, err)
		}
		onLeader, err := row(p, ops, acquire([]*cluster.Cluster{soradLeader}))
		if err != nil {
			return fmt.Errorf("sorad on leader, %d proposers: %w", p, err)
		}
		raw, err := row(p, ops, rawApply)
		if err != nil {
			return fmt.Errorf("raw raft, %d proposers: %w", p, err)
		}
		fmt.Printf("| %d | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f | %.2f |\n",
			p, spread.rate, spread.p50, spread.p99, onLeader.rate, onLeader.p50, onLeader.p99, raw.rate, raw.p50, raw.p99,
			spread.rate/raw.rate, onLeader.rate/raw.rate)
	}
	// An election during the run shows as a jump in latency; say so.
	soradEnd, rawEnd := terms()
	fmt.Printf("\nelections during the measured rows: sorad %d, raw raft %d\n", soradEnd-soradTerm, rawEnd-rawTerm)
	return nil
}

type result struct{ rate, p50, p99 float64 }

func row(proposers, ops int, op func(worker, i int) error) (result, error) {
	lat, wall, err := measure(proposers, ops, op)
	if err != nil {
		return result{}, err
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	return result{rate: float64(len(lat)) / wall.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

// measure runs ops operations on proposers goroutines and returns each
// operation's latency and the wall time.
func measure(proposers, ops int, op func(worker, i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, ops)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < proposers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= ops {
					return
				}
				t0 := time.Now()
				if err := op(w, i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

// startSorad opens three sorad control-plane nodes on 127.0.3.1-3 and joins
// them into one cluster.
func startSorad(dir string) ([]*cluster.Cluster, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*cluster.Cluster
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("127.0.3.%d", i)
		c, err := cluster.Open(cluster.Config{
			NodeName:             fmt.Sprintf("bench-%d@%s", i, host),
			BindAddress:          host,
			Port:                 25893,
			DataDir:              filepath.Join(dir, strconv.Itoa(i)),
			ExternalAPIURL:       "http://" + host + ":3000/",
			ExternalSignalingURL: "ws://" + host + ":5000/signaling",
			Version:              "bench",
			License:              fsm.License{MaxConnections: 1000},
			Raft:                 timing,
			Logger:               log,
		})
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, c)
	}
	deadline := time.Now().Add(30 * time.Second)
	ready := func(c *cluster.Cluster) bool { return c.Mode() == fsm.ModeNormal }
	for _, n := range nodes {
		for !ready(n) {
			if time.Now().After(deadline) {
				return nodes, fmt.Errorf("%s never became ready", n.NodeName())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, n := range nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := n.Join(ctx, nodes[0].NodeName())
		cancel()
		if err != nil {
			return nodes, fmt.Errorf("join %s: %w", n.NodeName(), err)
		}
	}
	for _, n := range nodes {
		for n.Stats().Nodes != 3 || !ready(n) {
			if time.Now().After(deadline) {
				return nodes, fmt.Errorf("%s never saw the whole cluster", n.NodeName())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, nil
}

type rawNode struct {
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
}

func (r *rawNode) close() {
	_ = r.raft.Shutdown().Error()
	_ = r.transport.Close()
	_ = r.store.Close()
}

type noopFSM struct{}

func (noopFSM) Apply(*raft.Log) any                 { return nil }
func (noopFSM) Snapshot() (raft.FSMSnapshot, error) { return noopSnapshot{}, nil }
func (noopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type noopSnapshot struct{}

func (noopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (noopSnapshot) Release()                          {}

// startRaw starts three bare hashicorp/raft nodes on 127.0.3.4-6 with the
// stores sorad uses.
func startRaw(dir string) ([]*rawNode, error) {
	var servers []raft.Server
	for i := 4; i <= 6; i++ {
		addr := fmt.Sprintf("127.0.3.%d:25894", i)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(addr), Address: raft.ServerAddress(addr)})
	}
	var nodes []*rawNode
	for i, s := range servers {
		d := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nodes, err
		}
		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(d, "raft.db")})
		if err != nil {
			return nodes, err
		}
		logs, err := raft.NewLogCache(512, store)
		if err != nil {
			return nodes, err
		}
		snaps, err := raft.NewFileSnapshotStore(d, 2, io.Discard)
		if err != nil {
			return nodes, err
		}
		trans, err := raft.NewTCPTransport(string(s.Address), nil, 3, 5*time.Second, io.Discard)
		if err != nil {
			return nodes, err
		}
		rc := raft.DefaultConfig()
		rc.LocalID = s.ID
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = timing.HeartbeatTimeout, timing.ElectionTimeout, timing.LeaderLeaseTimeout
		rc.CommitTimeout = 20 * time.Millisecond
		rc.LogOutput = io.Discard
		r, err := raft.NewRaft(rc, noopFSM{}, logs, store, snaps, trans)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, &rawNode{raft: r, store: store, transport: trans})
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			return nodes, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				return nodes, nil
			}
		}
		if time.Now().After(deadline) {
			return nodes, errors.New("raw raft cluster elected no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustEncode(c fsm.Command) []byte {
	b, err := fsm.Encode(c)
	if err != nil {
		panic(err)
	}
	return b
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
