package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
)

// TestClusterFormation starts three nodes at the same moment, each listing
// the other two, many times over: they must always end in exactly one
// cluster with one leader.
func TestClusterFormation(t *testing.T) {
	rounds := 10
	if v, err := strconv.Atoi(os.Getenv("SORAD_FORMATION_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		t.Run(fmt.Sprint("round-", round), func(t *testing.T) {
			h := harness.New(t, soradBin)
			nodes := startCluster(t, h, 3)
			lead := leader(t, nodes)
			for _, n := range nodes {
				r := n.MustCall(200, targetGetStatsReport, nil)
				var st statsReport
				if err := r.JSON(&st); err != nil {
					t.Fatal(err)
				}
				if st.Cluster.RaftLeader != lead.Name {
					t.Fatalf("%s follows %q, %s leads", n.Name, st.Cluster.RaftLeader, lead.Name)
				}
			}
		})
	}
}

// TestListingsAgreeAndModesReplicate checks that every node gives the same
// ListClusterNodes and ListClusterChannels, and that ChangeMode on one node
// shows on all.
func TestListingsAgreeAndModesReplicate(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	for i, id := range []string{"sora", "tobi", "kohaku", "hisui", "zakuro"} {
		assign(t, nodes[(i+1)%3], id, nodes[i%3])
	}
	for _, target := range []string{targetListClusterNodes, targetListClusterChannels} {
		var last string
		harness.Eventually(t, 5*time.Second, target+" equal on every node", func() bool {
			ok, msg := sameJSON(t, nodes, target, nil)
			last = msg
			return ok
		})
		t.Logf("%s: %s", target, last)
	}
	if got := listChannels(nodes[2]); len(got) != 5 {
		t.Fatalf("channels = %+v", got)
	}
	nodes[1].MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
	for _, n := range nodes {
		harness.Eventually(t, 5*time.Second, "mode visible on "+n.Name, func() bool {
			e, ok := entry(listNodes(n, false), nodes[1].Name)
			return ok && e.Mode == "block_new_session"
		})
	}
	var mode struct{ Mode string }
	if err := nodes[1].MustCall(200, targetGetMode, nil).JSON(&mode); err != nil || mode.Mode != "block_new_session" {
		t.Fatalf("GetMode = %+v, %v", mode, err)
	}
}

// TestFailureDrill kills a follower with SIGKILL, sees it disconnected
// everywhere, purges it, and checks that the cluster still accepts writes.
func TestFailureDrill(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	lead := leader(t, nodes)
	var victim, survivor *harness.Node
	for _, n := range nodes {
		switch {
		case n == lead:
		case victim == nil:
			victim = n
		default:
			survivor = n
		}
	}
	assign(t, lead, "doomed", victim)
	assign(t, lead, "kept", survivor)

	// A live node cannot be purged.
	r := lead.MustCall(400, targetPurge20220629, map[string]string{"target_node_name": victim.Name})
	var e struct {
		Type   string            `json:"error_type"`
		Reason map[string]string `json:"error_reason"`
	}
	if err := r.JSON(&e); err != nil || e.Type != "NODE-IS-ALIVE" || e.Reason["target_node"] != victim.Name {
		t.Fatalf("purge of live node = %s", r.Body)
	}

	victim.Kill()
	killed := time.Now()
	for _, n := range []*harness.Node{lead, survivor} {
		harness.Eventually(t, 5*time.Second-time.Since(killed), n.Name+" shows the victim disconnected", func() bool {
			e, ok := entry(listNodes(n, true), victim.Name)
			return ok && !e.Connected
		})
		// Without include_all_known_nodes, only connected nodes are listed.
		if _, listed := entry(listNodes(n, false), victim.Name); listed {
			t.Fatalf("%s lists the dead node without include_all_known_nodes", n.Name)
		}
	}
	t.Logf("victim seen disconnected on all survivors %v after kill -9", time.Since(killed).Round(time.Millisecond))

	survivor.MustCall(200, targetPurge20220629, map[string]string{"target_node_name": victim.Name})
	for _, n := range []*harness.Node{lead, survivor} {
		harness.Eventually(t, 5*time.Second, "victim gone from "+n.Name, func() bool {
			if _, ok := entry(listNodes(n, true), victim.Name); ok {
				return false
			}
			for _, ch := range listChannels(n) {
				if ch.ChannelID == "doomed" {
					return false
				}
			}
			return len(listChannels(n)) == 1
		})
	}
	// Purging it again: it is unknown now.
	survivor.MustCall(400, targetPurge20211215, map[string]string{"target_node_name": victim.Name})
	// Two of three remain: a majority, so writes go on.
	survivor.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_connection"})
	assign(t, survivor, "after-purge", lead)
	waitFormed(t, []*harness.Node{lead, survivor}, 5*time.Second)
}

// TestLeaderKill kills the Raft leader with SIGKILL: a new leader must be
// elected and writes must resume within 5 s.
func TestLeaderKill(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	lead := leader(t, nodes)
	survivors := except(nodes, lead)
	lead.Kill()
	killed := time.Now()
	newLeader := leader(t, survivors)
	elected := time.Since(killed)
	harness.Eventually(t, 5*time.Second-time.Since(killed), "a write through a survivor", func() bool {
		r, err := survivors[0].Call(targetChangeMode, map[string]string{"mode": "block_new_session"})
		return err == nil && r.Status == 200
	})
	t.Logf("new leader %s after %v, write committed %v after kill -9", newLeader.Name, elected.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if newLeader == lead {
		t.Fatal("the killed node is still reported leader")
	}
	harness.Eventually(t, 5*time.Second, "write visible on the other survivor", func() bool {
		e, ok := entry(listNodes(survivors[1], false), survivors[0].Name)
		return ok && e.Mode == "block_new_session"
	})
}

// TestRestartBumpsEpochAndStalesChannels restarts a node on its data
// directory, gracefully and with kill -9: each time its epoch goes up by one
// on every node and its channels turn stale.
func TestRestartBumpsEpochAndStalesChannels(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	n := nodes[1]
	epochOf := func(on *harness.Node) uint64 {
		e, _ := entry(listNodes(on, false), n.Name)
		return e.Epoch
	}
	if got := epochOf(nodes[0]); got != 1 {
		t.Fatalf("initial epoch = %d", got)
	}
	for i, restart := range []func(){n.Restart, func() { n.Kill(); n.Start() }} {
		wantEpoch := uint64(i + 2)
		channel := fmt.Sprint("owned-", i)
		assign(t, nodes[0], channel, n)
		restart()
		for _, on := range nodes {
			harness.Eventually(t, 10*time.Second, fmt.Sprintf("epoch %d of %s on %s", wantEpoch, n.Name, on.Name), func() bool {
				return epochOf(on) == wantEpoch
			})
			harness.Eventually(t, 5*time.Second, channel+" stale on "+on.Name, func() bool {
				for _, ch := range listChannels(on) {
					if ch.ChannelID == channel {
						return ch.NodeInChargeEpochStale && ch.NodeInChargeEpoch == wantEpoch-1
					}
				}
				return false
			})
		}
	}
}

// TestWholeClusterRestartKeepsState stops every node and starts them again:
// nodes, channels and modes survive.
func TestWholeClusterRestartKeepsState(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	assign(t, nodes[0], "sora", nodes[0])
	assign(t, nodes[1], "akane", nodes[2])
	nodes[2].MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_connection"})
	before := map[string]nodeEntry{}
	for _, e := range listNodes(nodes[0], false) {
		before[e.NodeName] = e
	}
	harness.Eventually(t, 5*time.Second, "mode replicated before the stop", func() bool {
		e, _ := entry(listNodes(nodes[0], false), nodes[2].Name)
		return e.Mode == "block_new_connection"
	})
	for _, n := range nodes {
		n.Stop()
	}
	for _, n := range nodes {
		n.Start()
	}
	waitFormed(t, nodes, 20*time.Second)
	for _, n := range nodes {
		harness.Eventually(t, 5*time.Second, "state after restart on "+n.Name, func() bool {
			list := listNodes(n, false)
			for _, e := range list {
				b := before[e.NodeName]
				if e.Epoch != b.Epoch+1 || e.MemberSince != b.MemberSince {
					return false
				}
			}
			e, _ := entry(list, nodes[2].Name)
			chans := listChannels(n)
			return len(list) == 3 && e.Mode == "block_new_connection" && len(chans) == 2 &&
				chans[0].ChannelID == "akane" && chans[0].NodeInCharge == nodes[2].Name &&
				chans[1].ChannelID == "sora" && chans[1].NodeInCharge == nodes[0].Name
		})
	}
}

// TestDefaultStandaloneNode runs sorad as `go run ./cmd/sorad` does on a
// fresh clone: no flags, no environment, an empty working directory. It must
// answer ListClusterNodes on 127.0.0.1:3000 with itself in mode normal, keep
// its state in ./data, and come back with that state after a restart.
func TestDefaultStandaloneNode(t *testing.T) {
	h := harness.New(t, soradBin)
	n := h.NewBareNode()
	ready := func() bool {
		list := listNodes(n, false)
		return len(list) == 1 && list[0].NodeName == "sorad@127.0.0.1" && list[0].Mode == "normal"
	}
	n.Start()
	took := harness.Eventually(t, 10*time.Second, "default node serving itself in mode normal", ready)
	t.Logf("default node answered with itself in mode normal %v after start (issue target: 2s)", took.Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(n.WorkDir, "data", "raft", "raft.db")); err != nil {
		t.Fatalf("no Raft state in ./data: %v", err)
	}
	n.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
	first, _ := entry(listNodes(n, false), n.Name)
	n.Restart()
	harness.Eventually(t, 10*time.Second, "restarted default node", func() bool {
		e, ok := entry(listNodes(n, false), n.Name)
		return ok && e.Epoch == first.Epoch+1 && e.Mode == "block_new_session" && e.MemberSince == first.MemberSince
	})
}
