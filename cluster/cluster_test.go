package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
)

func TestMain(m *testing.M) {
	// bbolt leaves a goroutine behind when a corrupt file makes it panic
	// (TestCorruptStoreIsReportedAsCorrupt); sorad exits on that error.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.etcd.io/bbolt.(*DB).freepages.func2"))
}

// Every in-process node listens on its own loopback address (127.0.2.x) and
// the same cluster port, as real nodes do. With SORAD_TEST_ADDRESS_BASE=N
// (as the integration tests read it) they use 127.0.N+5.x instead, so
// that a developer's run can go beside CI's.
const testPort = 25890

var nextHost atomic.Int32

var hostBase = sync.OnceValue(func() int {
	n, err := strconv.Atoi(os.Getenv("SORAD_TEST_ADDRESS_BASE"))
	if err != nil || n < 11 || n > 200 {
		return 2
	}
	return n + 5
})

func newHostName(short string) string {
	n := nextHost.Add(1)
	return fmt.Sprintf("%s@127.0.%d.%d", short, hostBase()+int(n)/250, 1+n%250)
}

type testNode struct {
	*Cluster
	cfg Config
	t   *testing.T
}

func testLogger() *slog.Logger {
	if os.Getenv("SORAD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(t *testing.T, name string, contacts ...string) Config {
	_, host, _ := SplitNodeName(name)
	return Config{
		NodeName:             name,
		BindAddress:          host,
		Port:                 testPort,
		DataDir:              t.TempDir(),
		ExternalAPIURL:       "http://" + host + ":3000/",
		ExternalSignalingURL: "ws://" + host + ":5000/signaling",
		Version:              "test",
		License:              fsm.License{MaxConnections: 100},
		ContactNodeNames:     contacts,
		ProbeInterval:        200 * time.Millisecond,
		PeerTimeout:          time.Second,
		FailoverTimeout:      time.Second,
		RequestTimeout:       3 * time.Second,
		Raft:                 RaftTiming{HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond},
		Trust:                memberTrust(t, name, testSecret),
		Logger:               testLogger(),
	}
}

// testSecret is the cluster secret of every in-process test cluster: their
// cluster ports run mutual TLS as real ones do.
const testSecret = "sorad cluster package test secret, 32+ bytes"

// memberTrust is the trust store of a node named name given secret.
func memberTrust(t testing.TB, name, secret string, previous ...string) *trust.Store {
	t.Helper()
	ts, err := trust.NewStore(func() (*trust.Material, error) { return trust.FromSecret(name, secret, previous...) })
	if err != nil {
		t.Fatalf("trust for %s: %v", name, err)
	}
	return ts
}

// startNode opens a node and closes it when the test ends (unless the test
// stopped it already).
func startNode(t *testing.T, cfg Config) *testNode {
	t.Helper()
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.NodeName, err)
	}
	n := &testNode{Cluster: c, cfg: cfg, t: t}
	t.Cleanup(func() { n.stop() })
	return n
}

// NodeName works on a stopped node too.
func (n *testNode) NodeName() string { return n.cfg.NodeName }

func (n *testNode) stop() {
	if n.Cluster != nil {
		if err := n.Cluster.Close(); err != nil {
			n.t.Errorf("close %s: %v", n.cfg.NodeName, err)
		}
		n.Cluster = nil
	}
}

// crash stops the node as a dying process does: its port closes, and a
// leader hands nothing over.
func (n *testNode) crash() {
	if n.Cluster != nil {
		if err := n.Cluster.shutdown(false); err != nil {
			n.t.Errorf("crash %s: %v", n.cfg.NodeName, err)
		}
		n.Cluster = nil
	}
}

// restart stops the node and opens it again on the same data directory.
func (n *testNode) restart() {
	n.t.Helper()
	n.stop()
	c, err := Open(n.cfg)
	if err != nil {
		n.t.Fatalf("reopen %s: %v", n.cfg.NodeName, err)
	}
	n.Cluster = c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (n *testNode) record(name string) *fsm.Node {
	for _, s := range n.Nodes() {
		if s.Name == name {
			return s.Record
		}
	}
	return nil
}

func registeredNames(n *testNode) []string {
	var out []string
	for _, s := range n.Nodes() {
		if s.Record != nil && s.Record.Mode != fsm.ModeInitial {
			out = append(out, s.Name)
		}
	}
	return out
}

// acquireOnTie acquires a new channel on n while every node is idle: on
// that tie placement must choose the contacted node.
func acquireOnTie(t *testing.T, n *testNode, id string) string {
	t.Helper()
	a, err := n.AcquireChannel(ctxT(t), id, ChannelOptions{})
	if err != nil {
		t.Fatalf("acquire %s on %s: %v", id, n.NodeName(), err)
	}
	if !a.Local || !a.Assigned || a.Owner.Name != n.NodeName() {
		t.Fatalf("on a tie, %s went to %s, not the contacted node %s", id, a.Owner.Name, n.NodeName())
	}
	return id
}

func errType(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Type
	}
	return ""
}

// formCluster starts n nodes, each with its config passed through the
// optional adjust, and joins them all through the first.
func formCluster(t *testing.T, size int, adjust ...func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	for i := range nodes {
		cfg := testConfig(t, newHostName(fmt.Sprintf("node-%02d", i+1)))
		for _, f := range adjust {
			f(&cfg)
		}
		nodes[i] = startNode(t, cfg)
	}
	waitFor(t, 5*time.Second, "first node ready", func() bool { return nodes[0].Mode() == fsm.ModeNormal })
	for _, n := range nodes[1:] {
		waitFor(t, 5*time.Second, n.NodeName()+" ready", func() bool { return n.Mode() == fsm.ModeNormal })
		if _, err := n.Join(ctxT(t), nodes[0].NodeName()); err != nil {
			t.Fatalf("%s joins %s: %v", n.NodeName(), nodes[0].NodeName(), err)
		}
	}
	want := make([]string, 0, size)
	for _, n := range nodes {
		want = append(want, n.NodeName())
	}
	slices.Sort(want)
	for _, n := range nodes {
		waitFor(t, 5*time.Second, n.NodeName()+" sees every member", func() bool {
			return slices.Equal(registeredNames(n), want)
		})
	}
	return nodes
}

func TestStandaloneRestartBumpsEpochAndKeepsState(t *testing.T) {
	n := startNode(t, testConfig(t, newHostName("solo")))
	waitFor(t, 5*time.Second, "standalone node registered", func() bool { return n.Mode() == fsm.ModeNormal })
	first := *n.record(n.NodeName())
	if first.Epoch != 1 {
		t.Fatalf("epoch = %d, want 1", first.Epoch)
	}
	if err := n.SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AcquireChannel(ctxT(t), "sora", ChannelOptions{}); !errors.Is(err, err) || errType(err) != TypeNoNodeAvailable {
		t.Fatalf("acquire on a block_new_session node: %v, want %s", err, TypeNoNodeAvailable)
	}
	if err := n.SetMode(ctxT(t), fsm.ModeNormal); err != nil {
		t.Fatal(err)
	}
	a, err := n.AcquireChannel(ctxT(t), "sora", ChannelOptions{Multistream: true})
	if err != nil || !a.Local || !a.Assigned {
		t.Fatalf("acquire = %+v, %v", a, err)
	}
	if err := n.SetMode(ctxT(t), fsm.ModeBlockNewConnection); err != nil {
		t.Fatal(err)
	}

	n.restart()
	waitFor(t, 5*time.Second, "restarted node registered", func() bool {
		r := n.record(n.NodeName())
		return r != nil && r.Epoch == 2 && n.Mode() != fsm.ModeInitial
	})
	again := *n.record(n.NodeName())
	if again.MemberSinceMicros != first.MemberSinceMicros || again.Mode != fsm.ModeBlockNewConnection {
		t.Fatalf("after restart: %+v, want member_since %d and mode kept", again, first.MemberSinceMicros)
	}
	chans := n.Channels()
	if len(chans) != 1 || chans[0].ID != "sora" || !chans[0].Stale || chans[0].NodeInChargeEpoch != 1 {
		t.Fatalf("channels after restart = %+v, want sora stale at epoch 1", chans)
	}
}

func TestDataDirBelongsToOneNodeName(t *testing.T) {
	cfg := testConfig(t, newHostName("owner"))
	n := startNode(t, cfg)
	n.stop()
	other := cfg
	other.NodeName = "someone-else@" + cfg.BindAddress
	if _, err := Open(other); err == nil {
		t.Fatal("opened a data_dir that belongs to another node name")
	}
}

func TestJoinFormsClusterAndReplicatesModes(t *testing.T) {
	nodes := formCluster(t, 3)
	if err := nodes[2].SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 3*time.Second, "mode replicated to "+n.NodeName(), func() bool {
			r := n.record(nodes[2].NodeName())
			return r != nil && r.Mode == fsm.ModeBlockNewSession
		})
	}
	for _, n := range nodes {
		waitFor(t, 3*time.Second, n.NodeName()+" connected to all", func() bool {
			for _, s := range n.Nodes() {
				if !s.Connected {
					return false
				}
			}
			return true
		})
	}
	// Joining again through a member is idempotent.
	names, err := nodes[1].Join(ctxT(t), nodes[2].NodeName())
	if err != nil || len(names) != 3 {
		t.Fatalf("repeated join = %v, %v", names, err)
	}
}

func TestJoinRefusals(t *testing.T) {
	nodes := formCluster(t, 2)
	outsider := startNode(t, testConfig(t, newHostName("outsider")))
	waitFor(t, 5*time.Second, "outsider ready", func() bool { return outsider.Mode() == fsm.ModeNormal })
	tests := []struct {
		name    string
		node    *testNode
		contact string
		want    string
	}{
		{"self", nodes[0], nodes[0].NodeName(), TypeCannotJoinSelf},
		{"malformed name", nodes[0], "no-at-sign", TypeInvalidNodeName},
		{"unreachable contact", outsider, "ghost@127.0.1.254", TypeContactNodeUnreachable},
		{"member of a multi-node cluster", nodes[0], outsider.NodeName(), TypeAlreadyInCluster},
		{"contact answers under another name", outsider, "impostor@" + nodes[0].cfg.BindAddress, TypeContactNodeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.node.Join(ctxT(t), tt.contact)
			if errType(err) != tt.want {
				t.Fatalf("Join = %v, want %s", err, tt.want)
			}
		})
	}
	// The refusals left everyone where they were.
	if got := registeredNames(outsider); !slices.Equal(got, []string{outsider.NodeName()}) {
		t.Fatalf("outsider sees %v", got)
	}
}

// TestAutoJoinConverges starts three nodes at once, each listing the other
// two, and checks that they always end up in exactly one cluster.
func TestAutoJoinConverges(t *testing.T) {
	rounds := 5
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			names := []string{newHostName("auto-a"), newHostName("auto-b"), newHostName("auto-c")}
			nodes := make([]*testNode, len(names))
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i, name := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var contacts []string
					for _, other := range names {
						if other != name {
							contacts = append(contacts, other)
						}
					}
					cfg := testConfig(t, name, contacts...)
					c, err := Open(cfg)
					if err != nil {
						t.Errorf("open %s: %v", name, err)
						return
					}
					mu.Lock()
					nodes[i] = &testNode{Cluster: c, cfg: cfg, t: t}
					mu.Unlock()
				}()
			}
			wg.Wait()
			for _, n := range nodes {
				if n == nil {
					t.FailNow()
				}
				t.Cleanup(n.stop)
			}
			want := sortedCopy(names)
			for _, n := range nodes {
				waitFor(t, 15*time.Second, n.NodeName()+" in the one cluster", func() bool {
					return slices.Equal(registeredNames(n), want) && n.Mode() == fsm.ModeNormal
				})
			}
			leaders := map[string]bool{}
			for _, n := range nodes {
				leaders[n.Stats().Leader] = true
			}
			if len(leaders) != 1 {
				t.Fatalf("nodes follow different leaders: %v", leaders)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	nodes := formCluster(t, 3)
	a, b, dead := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		waitFor(t, 3*time.Second, "all connected", func() bool { return len(n.Nodes()) == 3 && n.Connected(dead.NodeName()) })
	}
	if err := a.Purge(ctxT(t), dead.NodeName()); errType(err) != TypeNodeIsAlive {
		t.Fatalf("purge of a live node = %v, want NODE-IS-ALIVE", err)
	}
	var e *Error
	if err := a.Purge(ctxT(t), dead.NodeName()); !errors.As(err, &e) || e.Reason != (targetNode{TargetNode: dead.NodeName()}) || e.Kind != KindInvalid {
		t.Fatalf("NODE-IS-ALIVE reason = %#v", e)
	}
	if err := a.Purge(ctxT(t), a.NodeName()); errType(err) != TypeCannotPurgeSelf {
		t.Fatalf("purge self = %v", err)
	}
	if err := a.Purge(ctxT(t), "nobody@127.0.1.1"); errType(err) != TypeNodeNotFound {
		t.Fatalf("purge unknown = %v", err)
	}

	// Give the doomed node a channel, then let it die.
	owned := acquireOnTie(t, dead, "doomed")
	dead.stop()
	waitFor(t, 3*time.Second, "dead node disconnected", func() bool {
		return !a.Connected(dead.NodeName()) && !b.Connected(dead.NodeName())
	})
	if err := b.Purge(ctxT(t), dead.NodeName()); err != nil {
		t.Fatalf("purge dead node: %v", err)
	}
	for _, n := range []*testNode{a, b} {
		waitFor(t, 3*time.Second, "purge visible on "+n.NodeName(), func() bool {
			if len(n.Nodes()) != 2 {
				return false
			}
			for _, ch := range n.Channels() {
				if ch.ID == owned {
					return false
				}
			}
			return n.Stats().Voters == 2
		})
	}
	// The two survivors still form a majority and accept writes.
	if err := a.SetMode(ctxT(t), fsm.ModeBlockNewConnection); err != nil {
		t.Fatalf("write after purge: %v", err)
	}
}

func TestPurgedNodeRestartingIsNotListedAgain(t *testing.T) {
	nodes := formCluster(t, 3)
	victim := nodes[2]
	victim.stop()
	waitFor(t, 3*time.Second, "victim disconnected", func() bool { return !nodes[0].Connected(victim.NodeName()) })
	if err := nodes[0].Purge(ctxT(t), victim.NodeName()); err != nil {
		t.Fatal(err)
	}
	victim.restart()
	waitFor(t, 5*time.Second, "restarted victim learns it was purged", func() bool { return victim.Purged() })
	if victim.Mode() != fsm.ModeInitial {
		t.Fatalf("purged node reports mode %s", victim.Mode())
	}
	time.Sleep(500 * time.Millisecond) // let any wrong re-registration land
	if r := nodes[0].record(victim.NodeName()); r != nil {
		t.Fatalf("purged node reappeared: %+v", r)
	}
	// It may join again, as a new member.
	if _, err := victim.Join(ctxT(t), nodes[1].NodeName()); err != nil {
		t.Fatalf("rejoin after purge: %v", err)
	}
	waitFor(t, 5*time.Second, "rejoined member listed with epoch 1", func() bool {
		r := nodes[0].record(victim.NodeName())
		return r != nil && r.Epoch == 1 && r.Mode == fsm.ModeNormal
	})
}

// TestConcurrentAcquireAgreesOnOneOwner: 30 concurrent acquires of one
// channel through three nodes agree on one owner. The property is
// agreement, not speed: an acquire refused as retryable (no leader could
// commit in time, as on a starved machine) is tried again, as clients do,
// within the test's deadline.
func TestConcurrentAcquireAgreesOnOneOwner(t *testing.T) {
	nodes := formCluster(t, 3)
	for round := 0; round < 10; round++ {
		id := fmt.Sprintf("race-%d", round)
		owners := make(chan string, 30)
		var wg sync.WaitGroup
		for i := 0; i < cap(owners); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := ctxT(t)
				for {
					a, err := nodes[i%len(nodes)].AcquireChannel(ctx, id, ChannelOptions{})
					if err == nil {
						owners <- a.Owner.Name
						return
					}
					if !retryable(err) || ctx.Err() != nil {
						t.Errorf("acquire: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(owners)
		seen := map[string]int{}
		for o := range owners {
			seen[o]++
		}
		if len(seen) != 1 {
			t.Fatalf("round %d: owners %v, want exactly one", round, seen)
		}
	}
}

func TestPlacementFollowsLoadAndModes(t *testing.T) {
	var loads [3]atomic.Int64
	nodes := make([]*testNode, 3)
	for i := range nodes {
		cfg := testConfig(t, newHostName(fmt.Sprintf("load-%d", i)))
		cfg.Connections = func() int { return int(loads[i].Load()) }
		nodes[i] = startNode(t, cfg)
		waitFor(t, 5*time.Second, "ready", func() bool { return nodes[i].Mode() == fsm.ModeNormal })
		if i > 0 {
			if _, err := nodes[i].Join(ctxT(t), nodes[0].NodeName()); err != nil {
				t.Fatal(err)
			}
		}
	}
	loads[0].Store(50)
	loads[1].Store(10)
	loads[2].Store(30)
	waitFor(t, 3*time.Second, "loads probed", func() bool {
		return nodes[0].peerConnections(nodes[1].NodeName()) == 10 && nodes[0].peerConnections(nodes[2].NodeName()) == 30
	})
	a, err := nodes[0].AcquireChannel(ctxT(t), "light", ChannelOptions{})
	if err != nil || a.Owner.Name != nodes[1].NodeName() || a.Local {
		t.Fatalf("new channel went to %s (%v), want the least loaded %s", a.Owner.Name, err, nodes[1].NodeName())
	}
	if a.Owner.ExternalSignalingURL != nodes[1].cfg.ExternalSignalingURL {
		t.Fatalf("owner signaling url = %q", a.Owner.ExternalSignalingURL)
	}
	if err := nodes[1].SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "mode replicated", func() bool { return nodes[0].record(nodes[1].NodeName()).Mode == fsm.ModeBlockNewSession })
	a, err = nodes[0].AcquireChannel(ctxT(t), "second", ChannelOptions{})
	if err != nil || a.Owner.Name != nodes[2].NodeName() {
		t.Fatalf("with the lightest node blocked, channel went to %s (%v), want %s", a.Owner.Name, err, nodes[2].NodeName())
	}
	// An existing channel stays where it is whatever the loads.
	a, err = nodes[2].AcquireChannel(ctxT(t), "light", ChannelOptions{})
	if err != nil || a.Owner.Name != nodes[1].NodeName() || a.Assigned {
		t.Fatalf("existing channel moved: %+v, %v", a, err)
	}
	if err := nodes[1].ReleaseChannel(ctxT(t), "light"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "release replicated", func() bool { return len(nodes[2].Channels()) == 1 })
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name  string
		cands []candidate
		self  string
		want  string
		ok    bool
	}{
		{"none", nil, "a", "", false},
		{"lowest ratio wins", []candidate{{"a", 5, 10}, {"b", 1, 10}, {"c", 3, 10}}, "a", "b", true},
		{"ratio, not count", []candidate{{"a", 10, 100}, {"b", 2, 10}}, "b", "a", true},
		{"self on a tie", []candidate{{"a", 0, 10}, {"b", 0, 10}, {"c", 0, 10}}, "b", "b", true},
		{"self not a candidate: first name among tied", []candidate{{"c", 0, 10}, {"a", 0, 10}}, "z", "a", true},
		{"tie with self not lowest", []candidate{{"a", 0, 10}, {"b", 1, 10}}, "b", "a", true},
		{"zero capacity is skipped", []candidate{{"a", 0, 0}, {"b", 9, 10}}, "a", "b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := place(tt.cands, tt.self)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("place = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRestartedMemberRejoinsWithNextEpoch(t *testing.T) {
	nodes := formCluster(t, 3)
	n := nodes[1]
	owned := acquireOnTie(t, n, "mine")
	n.restart()
	for _, other := range nodes {
		waitFor(t, 5*time.Second, "epoch 2 visible on "+other.NodeName(), func() bool {
			r := other.record(n.NodeName())
			return r != nil && r.Epoch == 2
		})
		waitFor(t, 3*time.Second, "channel stale on "+other.NodeName(), func() bool {
			for _, ch := range other.Channels() {
				if ch.ID == owned {
					return ch.Stale
				}
			}
			return false
		})
	}
	// A new connect on another node takes the stale channel over.
	a, err := nodes[0].AcquireChannel(ctxT(t), owned, ChannelOptions{})
	if err != nil || !a.Assigned {
		t.Fatalf("takeover of stale channel = %+v, %v", a, err)
	}
}

func TestLeaderLossElectsNewLeaderAndWritesResume(t *testing.T) {
	nodes := formCluster(t, 3)
	var leader *testNode
	waitFor(t, 3*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.Stats().State == "leader" {
				leader = n
				return true
			}
		}
		return false
	})
	leader.stop()
	var survivors []*testNode
	for _, n := range nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	start := time.Now()
	if err := survivors[0].SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatalf("write after leader loss: %v", err)
	}
	t.Logf("write committed %v after the leader stopped", time.Since(start))
	waitFor(t, 3*time.Second, "write visible on the other survivor", func() bool {
		r := survivors[1].record(survivors[0].NodeName())
		return r != nil && r.Mode == fsm.ModeBlockNewSession
	})
}

// sortedCopy returns a sorted copy of names.
func sortedCopy(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return out
}

// TestDrainingHolderIsTakenOverAtOnce: a node that said it is stopping
// gives its channels up to the next connect elsewhere even while it still
// answers probes, so no client is sent to a node about to close its
// listeners.
func TestDrainingHolderIsTakenOverAtOnce(t *testing.T) {
	nodes := formCluster(t, 3)
	holder := nodes[1]
	a, err := holder.AcquireChannel(ctxT(t), "leaving", ChannelOptions{})
	if err != nil || !a.Local {
		t.Fatalf("the holder did not take the channel: %+v %v", a, err)
	}
	for _, n := range []*testNode{nodes[0], nodes[2]} {
		waitFor(t, 3*time.Second, "assignment replicated", func() bool {
			owner, _ := n.ChannelOwner("leaving")
			return owner == holder.NodeName()
		})
	}
	holder.Drain(ctxT(t))
	other := nodes[2]
	for _, n := range []*testNode{nodes[0], other} {
		waitFor(t, 3*time.Second, n.NodeName()+" learns of the drain", func() bool { return n.isDraining(holder.NodeName()) })
	}
	// The test needs the draining holder to answer probes (each bounded by
	// the 200 ms probe interval, which a loaded machine can miss).
	waitFor(t, 3*time.Second, "the draining holder answers a probe", func() bool {
		return other.probeNow(ctxT(t), other.current(), holder.NodeName())
	})
	start := time.Now()
	a, err = other.AcquireChannel(ctxT(t), "leaving", ChannelOptions{})
	if err != nil || a.Owner.Name == holder.NodeName() || !a.Assigned {
		t.Fatalf("acquire from %s: %+v %v; want the channel taken from the draining holder", other.NodeName(), a, err)
	}
	if took := time.Since(start); took > other.cfg.FailoverTimeout {
		t.Fatalf("the takeover waited %v, as for a dead node", took)
	}
}

// TestCorruptStoreIsReportedAsCorrupt: a damaged raft.db stops the node
// with an error that says so (not a lock, not a panic).
func TestCorruptStoreIsReportedAsCorrupt(t *testing.T) {
	cfg := testConfig(t, newHostName("corrupt"))
	n := startNode(t, cfg)
	waitFor(t, 5*time.Second, "node registered", func() bool { return n.Mode() == fsm.ModeNormal })
	n.stop()
	path := filepath.Join(raftDir(cfg.DataDir), "raft.db")
	good, err := os.ReadFile(path)
	if err != nil || len(good) < 3*4096 {
		t.Fatalf("raft.db: %d bytes, %v", len(good), err)
	}
	tests := []struct {
		name string
		data func() []byte
	}{
		{"garbage", func() []byte { return bytes.Repeat([]byte{0x5a}, len(good)) }},
		{"meta pages kept, the rest garbage", func() []byte {
			b := slices.Clone(good)
			for i := 2 * 4096; i < len(b); i++ {
				b[i] = 0xff
			}
			return b
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, tt.data(), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Open(cfg)
			if err == nil {
				c.Close()
				t.Fatal("a corrupt raft.db opened")
			}
			if !strings.Contains(err.Error(), "corrupt") || strings.Contains(err.Error(), "locked") {
				t.Fatalf("error %q does not say the store is corrupt", err)
			}
		})
	}
}
