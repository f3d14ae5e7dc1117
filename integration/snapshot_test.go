package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
)

// TestSnapshotsInstalledAndRestored: with snapshots taken after a few
// dozen entries, a follower that was down while the leader compacted its
// log catches up by installing the leader's snapshot, and a node restarted
// restores its own; both end with the same nodes, modes and channels as the
// others. This is the path a rolling upgrade takes when a node comes back
// far behind.
func TestSnapshotsInstalledAndRestored(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, "--raft_snapshot_threshold=16", "--raft_snapshot_interval=100ms", "--raft_trailing_logs=4",
		"--channel_release_delay=1h")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A channel in the replicated state, held while the follower is away.
	pub, sub, err := pair(ctx, urlsOf(nodes), "snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()

	lead := leader(t, nodes)
	var behind *harness.Node
	for _, n := range nodes {
		if n != lead && ownerOf(lead, "snapshot") != n.Name {
			behind = n
			break
		}
	}
	if behind == nil {
		t.Fatal("no follower free of the channel to stop")
	}
	behind.Stop()
	// Enough writes for the leader to snapshot and drop the entries the
	// stopped follower lacks.
	modes := []string{"block_new_session", "block_new_connection", "normal"}
	for i := range 60 {
		lead.MustCall(200, targetChangeMode, map[string]string{"mode": modes[i%len(modes)]})
	}
	lead.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
	harness.Eventually(t, 20*time.Second, "the leader took a snapshot", func() bool {
		return strings.Contains(lead.Log(), "snapshot complete")
	})
	behind.Start()
	harness.Eventually(t, 30*time.Second, behind.Name+" installed the leader's snapshot", func() bool {
		return strings.Contains(behind.Log(), "Installed remote snapshot")
	})
	waitFormed(t, nodes, 20*time.Second)
	listingsAgree(t, nodes)
	if e, _ := entry(listNodes(behind, false), lead.Name); e.Mode != "block_new_session" {
		t.Fatalf("%s lists the leader in mode %q after the snapshot, want block_new_session", behind.Name, e.Mode)
	}
	if got := ownerOf(behind, "snapshot"); got == "" {
		t.Fatal("the channel held meanwhile is missing from the installed snapshot")
	}

	// A restart restores the node's own snapshot.
	restored := strings.Count(behind.Log(), "restored from snapshot")
	behind.Restart()
	harness.Eventually(t, 20*time.Second, behind.Name+" restored its own snapshot at start", func() bool {
		return strings.Count(behind.Log(), "restored from snapshot") > restored
	})
	waitFormed(t, nodes, 20*time.Second)
	listingsAgree(t, nodes)
}
