package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/nfdelay"
	"github.com/sorad/sorad/integration/soraclient"
)

// connectVia connects through the first of urls that takes the connect, as
// SDKs given several signaling URLs do: a node that does not answer (down,
// or a redirect to a node that is down) moves on to the next URL; a node
// that answers and refuses (a close frame) is a failure.
func connectVia(ctx context.Context, urls []string, opts soraclient.Options) (*soraclient.Client, error) {
	var errs []error
	for _, u := range urls {
		opts.SignalingURL = u
		c, err := soraclient.Connect(ctx, opts)
		if err == nil {
			return c, nil
		}
		var ce *soraclient.CloseError
		if errors.As(err, &ce) && ce.Code != 1006 {
			return nil, fmt.Errorf("%s refused: %w", u, err)
		}
		errs = append(errs, fmt.Errorf("via %s: %w", u, err))
	}
	return nil, fmt.Errorf("no node took the connect: %w", errors.Join(errs...))
}

func urlsOf(nodes []*harness.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, signalingURL(n))
	}
	return out
}

// ownerOf returns the node in charge of a channel as n lists it.
func ownerOf(n *harness.Node, channelID string) string {
	for _, ch := range listChannels(n) {
		if ch.ChannelID == channelID {
			return ch.NodeInCharge
		}
	}
	return ""
}

// pair connects a publisher and a subscriber to a channel through urls and
// waits until the subscriber receives the publisher's video.
func pair(ctx context.Context, urls []string, channel string) (pub, sub *soraclient.Client, err error) {
	pub, err = connectVia(ctx, urls, soraclient.Options{ChannelID: channel, Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		return nil, nil, fmt.Errorf("publisher: %w", err)
	}
	sub, err = connectVia(ctx, urls, soraclient.Options{ChannelID: channel, Role: "recvonly", Audio: true, Video: true})
	if err != nil {
		_ = pub.Close()
		return nil, nil, fmt.Errorf("subscriber: %w", err)
	}
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 5); err != nil {
		_ = pub.Close()
		_ = sub.Close()
		return nil, nil, fmt.Errorf("no media from publisher to subscriber: %w", err)
	}
	return pub, sub, nil
}

// TestModesRedirectOrRefuse: a block_new_session node hands new sessions to
// normal nodes but serves joiners of its live sessions; a
// block_new_connection node redirects what is held elsewhere and refuses the
// rest, with the mode as the reason.
func TestModesRedirectOrRefuse(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, "--channel_release_delay=30s")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Placement follows load; to put channels where the test wants them,
	// the other nodes are blocked while they are placed.
	setMode(t, nodes, b, "block_new_session")
	setMode(t, nodes, c, "block_new_session")
	onA := connectClient(t, ctx, a, soraclient.Options{ChannelID: "on-a", Role: "sendonly", Audio: true, Video: true})
	idle := connectClient(t, ctx, a, soraclient.Options{ChannelID: "idle-a", Role: "recvonly", Audio: true})
	_ = idle.Close() // its channel stays held by a for channel_release_delay
	setMode(t, nodes, a, "block_new_session")
	setMode(t, nodes, b, "normal")
	connectClient(t, ctx, b, soraclient.Options{ChannelID: "on-b", Role: "sendonly", Audio: true, Video: true})
	setMode(t, nodes, c, "normal")
	for _, ch := range []struct{ id, node string }{{"on-a", a.Name}, {"on-b", b.Name}, {"idle-a", a.Name}} {
		harness.Eventually(t, 5*time.Second, ch.id+" held by "+ch.node, func() bool { return ownerOf(c, ch.id) == ch.node })
	}
	harness.Eventually(t, 5*time.Second, "idle-a's session gone", func() bool {
		var chans []map[string]any
		return a.MustCall(200, targetListChannels, nil).JSON(&chans) == nil && len(chans) == 1
	})

	// A joiner of a live session on a is admitted there, with media.
	joiner := connectClient(t, ctx, a, soraclient.Options{ChannelID: "on-a", Role: "recvonly", Audio: true, Video: true})
	if err := joiner.WaitPackets(ctx, onA.ConnectionID(), "video", 5); err != nil {
		t.Fatal(err)
	}
	// A new session asked of a goes to a normal node.
	for _, channel := range []string{"fresh", "idle-a"} {
		pub, sub, err := pair(ctx, []string{signalingURL(a)}, channel)
		if err != nil {
			t.Fatalf("%s through a block_new_session node: %v", channel, err)
		}
		if owner := ownerOf(c, channel); owner == a.Name || owner == "" {
			t.Fatalf("%s is held by %q, want a normal node", channel, owner)
		}
		_ = pub.Close()
		_ = sub.Close()
	}

	setMode(t, nodes, a, "block_new_connection")
	refusedWith(t, ctx, a, soraclient.Options{ChannelID: "on-a", Role: "recvonly", Audio: true}, 4503, "BLOCK-NEW-CONNECTION")
	// What another node holds, or a new channel, is redirected.
	for _, channel := range []string{"on-b", "fresh-2"} {
		cl := connectClient(t, ctx, a, soraclient.Options{ChannelID: channel, Role: "recvonly", Audio: true})
		if owner := ownerOf(c, channel); owner == a.Name {
			t.Fatalf("%s landed on the block_new_connection node", channel)
		}
		_ = cl.Close()
	}
}

// TestFailoverDrill: kill -9 the node in charge of a busy channel; new
// clients get the channel on a live node within seconds (automatic
// failover, no purge needed), then PurgeClusterNode of the dead node
// succeeds from any live node and the listings agree everywhere.
func TestFailoverDrill(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	dead, live := nodes[0], nodes[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, sub, err := pair(ctx, []string{signalingURL(dead)}, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	harness.Eventually(t, 5*time.Second, "busy held by the doomed node", func() bool { return ownerOf(live[0], "busy") == dead.Name })

	dead.Kill()
	killed := time.Now()
	pub2, sub2 := pairAgain(t, ctx, live, "busy", 15*time.Second)
	defer pub2.Close()
	defer sub2.Close()
	took := time.Since(killed)
	t.Logf("busy channel served with media again %v after kill -9 of its node", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("failover took %v", took)
	}
	newOwner := ownerOf(live[0], "busy")
	if newOwner == dead.Name || newOwner == "" {
		t.Fatalf("busy is held by %q", newOwner)
	}
	live[1].MustCall(200, targetPurge20220629, map[string]string{"target_node_name": dead.Name})
	for _, target := range []string{targetListClusterNodes, targetListClusterChannels, "Sora_20201013.ListConnections"} {
		body := map[string]any{"include_all_known_nodes": true, "local": false}
		harness.Eventually(t, 5*time.Second, target+" agrees on the live nodes", func() bool {
			ok, _ := sameJSON(t, live, target, body)
			return ok
		})
	}
	var conns []map[string]any
	if err := live[0].MustCall(200, "Sora_20201013.ListConnections", map[string]bool{"local": false}).JSON(&conns); err != nil || len(conns) != 2 {
		t.Fatalf("cluster connections after the drill: %v, %v", conns, err)
	}
}

// TestLeaderLossDuringChurn: kill -9 the Raft leader while clients create
// channels on every node. Afterwards no channel has live sessions on two
// nodes, and every channel whose connect was answered with an offer is
// still assigned.
func TestLeaderLossDuringChurn(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	lead := leader(t, nodes)
	others := except(nodes, lead)
	// Channels are placed on the other nodes (the leader takes no new
	// session) but every assignment is still written through the leader.
	setMode(t, nodes, lead, "block_new_session")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		accepted []string // channels whose connect got an offer from a live node
		clients  []*soraclient.Client
		seq      atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				channel := fmt.Sprintf("churn-%d", seq.Add(1))
				c, err := connectVia(ctx, urlsOf(others), soraclient.Options{ChannelID: channel, Role: "sendonly", Audio: true})
				if err != nil {
					continue // refused or timed out while there was no leader
				}
				mu.Lock()
				accepted = append(accepted, channel)
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	lead.Kill()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if len(accepted) < 5 {
		t.Fatalf("only %d channels created during the drill", len(accepted))
	}
	// Every accepted channel is assigned to the surviving node serving it,
	// and lives on one node only.
	harness.Eventually(t, 5*time.Second, "assignments replicated", func() bool {
		held := map[string]string{}
		for _, ch := range listChannels(others[0]) {
			held[ch.ChannelID] = ch.NodeInCharge
		}
		for _, id := range accepted {
			if held[id] != others[0].Name && held[id] != others[1].Name {
				return false
			}
		}
		return true
	})
	sessions := map[string][]string{}
	for _, n := range others {
		var chans []map[string]any
		if err := n.MustCall(200, targetListChannels, nil).JSON(&chans); err != nil {
			t.Fatal(err)
		}
		for _, ch := range chans {
			id := ch["channel_id"].(string)
			sessions[id] = append(sessions[id], n.Name)
		}
	}
	for _, id := range accepted {
		on := sessions[id]
		if len(on) != 1 || on[0] != ownerOf(others[0], id) {
			t.Fatalf("channel %s has sessions on %v, held by %s", id, on, ownerOf(others[0], id))
		}
	}
	t.Logf("%d channels created around the leader's death, each on one node", len(accepted))
}

// TestRollingUpgradeDrill: clients connect and disconnect continuously (a
// publisher and a subscriber that must receive its video) across several
// channels, while each node in turn goes block_new_session, drains, stops,
// restarts on its data and returns to normal. No connect attempt fails
// (redirects are fine), and every node ends normal with epoch + 1.
func TestRollingUpgradeDrill(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, "--channel_release_delay=500ms")
	rollingUpgrade(t, nodes, "", nil, nil)
}

// previousVersions are the sorads that TestRollingUpgradeFromPreviousVersion
// upgrades from. Add one (and keep the last) when a change alters what
// nodes exchange or keep.
var previousVersions = []struct {
	name, rev string
	// knobs: the version has raft_snapshot_* settings, so that a drill can
	// make it snapshot and send snapshots.
	knobs bool
	// readsCurrentSnapshots: it reads the snapshots this version writes;
	// if not, it must refuse to start on them.
	readsCurrentSnapshots bool
}{
	// The last commit before snapshot format 2 (fsm) and the framed
	// forwarded-API protocol (cluster).
	{name: "snapshot-format-1", rev: "9714fee655ce8c536b7bf96f0d3f076a22709536"},
	// The last stop before the serving lease and clusters started apart:
	// no lease endpoint on its leader (a current follower renews its
	// lease on the 404), snapshot format 2.
	{name: "before-lease", rev: "bd85f6b533d822efc38555a455483460c163ccee", knobs: true, readsCurrentSnapshots: true},
}

// TestRollingUpgradeFromPreviousVersion: the rolling upgrade drill from a
// previous version (built from the repository's history) to this one, on
// the same data directories, with clients connecting throughout: no connect
// fails, every node rejoins with its next epoch, the nodes' listings agree
// after every step. Every node snapshots often; a node down while the
// others take writes comes back behind their compacted logs and installs
// the leader's snapshot, across versions when the previous version can
// snapshot on demand (its leader's to the first node upgraded). Then one
// node, once it has a snapshot in this version's format, goes back to the
// previous version while the others take writes: a version that reads
// that format installs the current leader's snapshot and rejoins; one
// that cannot must refuse to start, saying so, rather than run on data it
// misreads. Started on this version again, it rejoins with the cluster
// intact.
func TestRollingUpgradeFromPreviousVersion(t *testing.T) {
	for _, pv := range previousVersions {
		t.Run(pv.name, func(t *testing.T) { upgradeFrom(t, pv.rev, pv.knobs, pv.readsCurrentSnapshots) })
	}
}

func upgradeFrom(t *testing.T, rev string, knobs, readsCurrentSnapshots bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prev, err := harness.BuildRevision(ctx, rev, t.TempDir())
	if err != nil {
		skipOrFail(t, "cannot build the previous version: "+err.Error())
	}
	// Both versions snapshot after a few entries and keep few behind, so
	// that a node down for a moment installs a snapshot when it returns.
	snapshots := []string{"--raft_snapshot_threshold=16", "--raft_snapshot_interval=100ms", "--raft_trailing_logs=4"}
	h := harness.New(t, soradBin)
	args := []string{"--channel_release_delay=500ms"}
	if knobs {
		args = append(args, snapshots...)
	}
	nodes := clusterNodes(h, 3, args...)
	for _, n := range nodes {
		n.Bin = prev
		n.Start()
	}
	waitFormed(t, nodes, 20*time.Second)
	checkBinaries(t, nodes, prev)
	prevArgs := slices.Clone(nodes[1].Args)
	var toArgs []string
	if !knobs {
		toArgs = snapshots
	}
	firstLeader := leader(t, nodes)
	rollingUpgrade(t, nodes, soradBin, toArgs, writeWhileDown(t, nodes))
	checkBinaries(t, nodes, soradBin)
	if knobs {
		// The first node upgraded came back to a leader on the previous
		// version (the first node is never the leader by then: a leader
		// hands leadership over when it stops).
		first := nodes[0]
		if !strings.Contains(first.Log(), "Installed remote snapshot") {
			t.Fatalf("%s (upgraded first; leader before the drill %s) installed no snapshot of the previous version's leader", first.Name, firstLeader.Name)
		}
		for _, n := range nodes {
			if !strings.Contains(n.Log(), "Installed remote snapshot") {
				t.Fatalf("%s installed no snapshot on its way back", n.Name)
			}
		}
	}

	// One node back to the previous version, once it has a snapshot, and
	// behind the others' compacted logs.
	n := nodes[1]
	for i := range 40 {
		n.MustCall(200, targetChangeMode, map[string]string{"mode": []string{"block_new_session", "normal"}[i%2]})
	}
	harness.Eventually(t, 20*time.Second, n.Name+" took a snapshot", func() bool {
		return strings.Contains(n.Log(), "snapshot complete")
	})
	before, _ := entry(listNodes(nodes[0], false), n.Name)
	currentArgs := n.Args
	n.Stop()
	writeWhileDown(t, nodes)(n)
	n.Bin, n.Args = prev, prevArgs
	logBefore := len(n.Log())
	n.Start()
	var refused bool
	harness.Eventually(t, 30*time.Second, n.Name+" on the previous version: running with the cluster, or refusing to start", func() bool {
		if exited, _ := n.Exited(); exited {
			refused = true
			return true
		}
		return formed(n, names(nodes))
	})
	switch {
	case refused && readsCurrentSnapshots:
		t.Fatalf("the previous version refused to start on a snapshot it should read:\n%s", n.LogTail(20))
	case refused:
		if !strings.Contains(n.LogTail(40), "snapshot") {
			t.Fatalf("the previous version refused to start without saying why:\n%s", n.LogTail(40))
		}
		t.Logf("the previous version refused the newer snapshot at start, as it should; its log ends:\n%s", n.LogTail(3))
	case !readsCurrentSnapshots:
		t.Fatalf("the previous version started on a data directory with a snapshot format it cannot read")
	default:
		listingsAgree(t, nodes)
		if !strings.Contains(n.Log()[logBefore:], "Installed remote snapshot") {
			t.Fatalf("%s, back on the previous version, installed no snapshot of the current leader", n.Name)
		}
		t.Logf("the previous version installed the current leader's snapshot and rejoined")
	}
	n.Stop()
	n.Bin, n.Args = soradBin, currentArgs
	n.Start()
	waitFormed(t, nodes, 20*time.Second)
	listingsAgree(t, nodes)
	for _, o := range nodes {
		e, ok := entry(listNodes(o, false), n.Name)
		if !ok || e.Mode != "normal" || e.Epoch <= before.Epoch {
			t.Fatalf("%s lists %s as %+v after the downgrade and upgrade, want normal past epoch %d", o.Name, n.Name, e, before.Epoch)
		}
	}
}

// writeWhileDown returns what the drill does while a node is down: 40
// writes on a live node (its mode set to normal, as it is), so that the
// leader snapshots and compacts past what the node has.
func writeWhileDown(t *testing.T, nodes []*harness.Node) func(down *harness.Node) {
	return func(down *harness.Node) {
		t.Helper()
		live := except(nodes, down)[0]
		for range 40 {
			// normal again and again: each is a Raft entry, and the
			// drill's clients never meet a live node that takes no new
			// session while another is down.
			live.MustCall(200, targetChangeMode, map[string]string{"mode": "normal"})
		}
	}
}

// checkBinaries checks that every node's process runs the binary bin.
func checkBinaries(t *testing.T, nodes []*harness.Node, bin string) {
	t.Helper()
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", n.Pid()))
		if err != nil || got != want {
			t.Fatalf("%s runs %q (%v), want %s", n.Name, got, err, want)
		}
	}
}

// listingsAgree waits until every node lists the same nodes (name, mode,
// epoch, connected) and the same channels (id, node in charge, epoch).
func listingsAgree(t *testing.T, nodes []*harness.Node) {
	t.Helper()
	view := func(n *harness.Node) string {
		var b strings.Builder
		list := listNodes(n, true)
		slices.SortFunc(list, func(a, b nodeEntry) int { return strings.Compare(a.NodeName, b.NodeName) })
		for _, e := range list {
			fmt.Fprintf(&b, "%s %s %d %v;", e.NodeName, e.Mode, e.Epoch, e.Connected)
		}
		chans := listChannels(n)
		slices.SortFunc(chans, func(a, b channelEntry) int { return strings.Compare(a.ChannelID, b.ChannelID) })
		for _, c := range chans {
			fmt.Fprintf(&b, "%s %s %d;", c.ChannelID, c.NodeInCharge, c.NodeInChargeEpoch)
		}
		return b.String()
	}
	var last []string
	harness.Eventually(t, 20*time.Second, "the nodes' listings agree", func() bool {
		last = last[:0]
		for _, n := range nodes {
			last = append(last, view(n))
		}
		for _, v := range last[1:] {
			if v != last[0] {
				return false
			}
		}
		return last[0] != ""
	})
}

// rollingUpgrade runs the rolling upgrade drill on a formed cluster: each
// node in turn goes block_new_session, drains, stops, starts again on its
// data (with the binary to, if set) and returns to normal, while clients
// connect and disconnect throughout. whileDown, if set, runs while each
// node is stopped.
func rollingUpgrade(t *testing.T, nodes []*harness.Node, to string, toArgs []string, whileDown func(*harness.Node)) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		attempts, failures atomic.Int64
		firstFailure       atomic.Value
		stop               = make(chan struct{})
		wg                 sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				urls := slices.Clone(urlsOf(nodes))
				r.Shuffle(len(urls), func(i, j int) { urls[i], urls[j] = urls[j], urls[i] })
				attempt, cancel := context.WithTimeout(ctx, 15*time.Second)
				pub, sub, err := pair(attempt, urls, fmt.Sprintf("rolling-%d", r.IntN(6)))
				attempts.Add(1)
				if err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				} else {
					time.Sleep(time.Duration(200+r.IntN(500)) * time.Millisecond)
					_ = sub.Close()
					_ = pub.Close()
				}
				cancel()
				time.Sleep(time.Duration(100+r.IntN(300)) * time.Millisecond)
			}
		}()
	}
	before := map[string]uint64{}
	for _, e := range listNodes(nodes[0], false) {
		before[e.NodeName] = e.Epoch
	}
	for _, n := range nodes {
		n.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
		drained := harness.Eventually(t, 60*time.Second, n.Name+" drained", func() bool {
			var conns []any
			return n.MustCall(200, "Sora_20201013.ListConnections", nil).JSON(&conns) == nil && len(conns) == 0
		})
		n.Stop()
		if whileDown != nil {
			whileDown(n)
		}
		if to != "" {
			n.Bin = to
			n.Args = append(slices.Clone(n.Args), toArgs...)
		}
		n.Start()
		harness.Eventually(t, 20*time.Second, n.Name+" back with its next epoch", func() bool {
			e, ok := entry(listNodes(nodes[(slices.Index(nodes, n)+1)%3], false), n.Name)
			return ok && e.Epoch == before[n.Name]+1 && e.Mode == "block_new_session"
		})
		// The node answers ChangeMode once its own copy of the state shows
		// its new registration (until then: 503 NODE-NOT-READY).
		harness.Eventually(t, 10*time.Second, n.Name+" ready itself", func() bool {
			r, err := n.Call(targetGetMode, nil)
			return err == nil && r.Status == 200 && strings.Contains(string(r.Body), "block_new_session")
		})
		n.MustCall(200, targetChangeMode, map[string]string{"mode": "normal"})
		listingsAgree(t, nodes)
		t.Logf("%s upgraded (drained in %v)", n.Name, drained.Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second) // churn on the upgraded cluster
	close(stop)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d connect attempts failed during the upgrade; first: %v", f, attempts.Load(), firstFailure.Load())
	}
	for _, n := range nodes {
		waitFormed(t, nodes, 10*time.Second)
		for _, e := range listNodes(n, false) {
			if e.Mode != "normal" || e.Epoch != before[e.NodeName]+1 {
				t.Fatalf("%s lists %s in mode %s at epoch %d, want normal at %d", n.Name, e.NodeName, e.Mode, e.Epoch, before[e.NodeName]+1)
			}
		}
	}
	t.Logf("%d connect attempts with media, none failed", attempts.Load())
}

// partition cuts a node's cluster traffic (its cluster port, both ways)
// with iptables, in a chain of the test's own; heal undoes it.
type partition struct {
	t     *testing.T
	chain string
	queue *nfdelay.Queue // newDelayedLink's
}

func newPartition(t *testing.T, n *harness.Node) *partition {
	t.Helper()
	return newLossyLink(t, n, 1)
}

// newLossyLink drops each of a node's cluster-port packets, both ways, with
// the given probability (1: a partition), in a chain of the test's own.
func newLossyLink(t *testing.T, n *harness.Node, probability float64) *partition {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		skipOrFail(t, "iptables is not installed")
	}
	drop := []string{"-j", "DROP"}
	if probability < 1 {
		drop = []string{"-m", "statistic", "--mode", "random", "--probability", fmt.Sprint(probability), "-j", "DROP"}
	}
	return linkRules(t, n, drop, nil)
}

// newDelayedLink holds each of a node's cluster-port packets, both ways,
// for delay (a netfilter queue of the test's own, package nfdelay; this
// kernel has no netem).
func newDelayedLink(t *testing.T, n *harness.Node, delay time.Duration) *partition {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		skipOrFail(t, "iptables is not installed")
	}
	num := uint16(1000 + delayQueues.Add(1)%30000)
	q, err := nfdelay.Open(num, delay)
	if err != nil {
		skipOrFail(t, fmt.Sprintf("netfilter queue for the delay: %v", err))
	}
	return linkRules(t, n, []string{"-j", "NFQUEUE", "--queue-num", fmt.Sprint(num), "--queue-bypass"}, q)
}

// delayQueues numbers the netfilter queues of newDelayedLink.
var delayQueues atomic.Uint32

// linkRules applies action to a node's cluster-port packets, both ways, in
// a chain of the test's own; heal removes it (and closes queue, if any).
func linkRules(t *testing.T, n *harness.Node, action []string, queue *nfdelay.Queue) *partition {
	t.Helper()
	p := &partition{t: t, chain: fmt.Sprintf("SORAD-TEST-%d", time.Now().UnixNano()%1e9), queue: queue}
	port := fmt.Sprint(harness.ClusterPort)
	cmds := [][]string{{"-N", p.chain}}
	for _, match := range [][]string{
		{"-s", n.Address, "--dport", port}, {"-s", n.Address, "--sport", port},
		{"-d", n.Address, "--dport", port}, {"-d", n.Address, "--sport", port},
	} {
		cmds = append(cmds, append(append([]string{"-A", p.chain, "-p", "tcp"}, match...), action...))
	}
	cmds = append(cmds, []string{"-I", "INPUT", "-j", p.chain})
	for _, c := range cmds {
		if out, err := exec.Command("iptables", c...).CombinedOutput(); err != nil {
			p.heal()
			skipOrFail(t, fmt.Sprintf("iptables %s: %v: %s", strings.Join(c, " "), err, out))
		}
	}
	t.Cleanup(p.heal)
	return p
}

func (p *partition) heal() {
	_ = exec.Command("iptables", "-D", "INPUT", "-j", p.chain).Run()
	_ = exec.Command("iptables", "-F", p.chain).Run()
	_ = exec.Command("iptables", "-X", p.chain).Run()
	if p.queue != nil {
		_ = p.queue.Close() // after the rules: nothing is queued any more
	}
}

// TestFencingAfterPartition: cut the node in charge of a channel off from
// the cluster (its clients can still reach it): its lease ends and it
// closes its clients. Purge it from the majority, serve the channel
// elsewhere, heal: the old node learns it was purged and refuses the
// channel. The session webhooks report the old session's end once (by the
// purge), never again from the cut-off node.
func TestFencingAfterPartition(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, sink.args()...)
	isolated, majority := nodes[0], nodes[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, sub, err := pair(ctx, []string{signalingURL(isolated)}, "split")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	harness.Eventually(t, 5*time.Second, "split held by the node to isolate", func() bool { return ownerOf(majority[0], "split") == isolated.Name })
	time.Sleep(time.Second) // the session's record reaches the cluster

	p := newPartition(t, isolated)
	harness.Eventually(t, 10*time.Second, "the majority sees the node disconnected", func() bool {
		e, ok := entry(listNodes(majority[0], true), isolated.Name)
		return ok && !e.Connected
	})
	// Cut off, the old node closes its clients when its lease ends.
	for _, c := range []*soraclient.Client{pub, sub} {
		info := waitClose(t, ctx, c)
		if info.Code != 4503 || info.Reason != "CLUSTER-QUORUM-LOST" {
			t.Fatalf("the cut-off node closed its client with %+v, want 4503 CLUSTER-QUORUM-LOST", info)
		}
	}
	majority[0].MustCall(200, targetPurge20220629, map[string]string{"target_node_name": isolated.Name})
	pub2, sub2, err := pair(ctx, urlsOf(majority), "split")
	if err != nil {
		t.Fatalf("the channel on the majority side: %v", err)
	}
	defer pub2.Close()
	defer sub2.Close()
	p.heal()
	if got := ownerOf(majority[1], "split"); got == isolated.Name || got == "" {
		t.Fatalf("split is held by %q", got)
	}
	// The purged node does not serve the channel again: until it joins
	// again it refuses the connect; once its contact_node_name_list has
	// made it rejoin (which may already have happened), it redirects the
	// connect to the majority's node in charge.
	// (Until it hears from the cluster it refuses as cut off.)
	harness.Eventually(t, 10*time.Second, "the purged node refusing as purged or redirecting", func() bool {
		_, err = soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(isolated), ChannelID: "split", Role: "recvonly", Audio: true, NoRedirect: true})
		var re *soraclient.RedirectError
		var ce *soraclient.CloseError
		switch {
		case errors.As(err, &ce) && ce.Code == 4503 && ce.Reason == "NODE-PURGED":
		case errors.As(err, &re) && re.Location != signalingURL(isolated):
		case errors.As(err, &ce) && ce.Code == 4503 && ce.Reason == "CLUSTER-QUORUM-LOST":
			return false
		default:
			t.Fatalf("a connect to the purged node: %v, want 4503 NODE-PURGED or a redirect to the majority", err)
		}
		return true
	})
	created := sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == "split" })
	if len(created) != 2 {
		t.Fatalf("session.created for split: %v, want the old node's and the majority's", created)
	}
	old, _ := created[0]["session_id"].(string)
	time.Sleep(time.Second) // a late report would be here by now
	ends := func(typ string) int { return len(sink.calls("/session", sessionEvent(typ, old))) }
	if ends("session.vanished") != 1 || ends("session.destroyed") != 0 {
		t.Errorf("the fenced session's end reported %d times as vanished and %d as destroyed, want once, by the purge", ends("session.vanished"), ends("session.destroyed"))
	}
}

// pairAgain connects a publisher and a subscriber of channel through nodes,
// trying again (each try bounded) until it works within d: a channel whose
// node died is served again once a live node takes it over.
func pairAgain(t *testing.T, ctx context.Context, nodes []*harness.Node, channel string, d time.Duration) (pub, sub *soraclient.Client) {
	t.Helper()
	harness.Eventually(t, d, channel+" served again by a live node", func() bool {
		attempt, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var err error
		pub, sub, err = pair(attempt, urlsOf(nodes), channel)
		return err == nil
	})
	return pub, sub
}

// setMode changes a node's mode and waits until every node lists it.
func setMode(t *testing.T, nodes []*harness.Node, n *harness.Node, mode string) {
	t.Helper()
	n.MustCall(200, targetChangeMode, map[string]string{"mode": mode})
	for _, o := range nodes {
		harness.Eventually(t, 5*time.Second, n.Name+" in mode "+mode+" on "+o.Name, func() bool {
			e, _ := entry(listNodes(o, false), n.Name)
			return e.Mode == mode
		})
	}
}
