package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestClustersStartedApartMerge: two three-node clusters form apart, each
// serving a channel; one node of cluster B lists a node of cluster A, which
// starts later. B must merge into A (same size; A has the name that sorts
// first), but its other nodes list nobody of A: B waits, and
// ListClusterNodes on the node that sees A says what the operator must do.
// Once the operator has restarted those nodes with A in their contacts, B
// merges: its clients are closed, its channels released, all six nodes form
// one cluster, A's clients never notice, and B's channel is served again in
// the merged cluster.
func TestClustersStartedApartMerge(t *testing.T) {
	h := harness.New(t, soradBin)
	clusterA := []*harness.Node{h.NewNode("apart-a1"), h.NewNode("apart-a2"), h.NewNode("apart-a3")}
	clusterB := []*harness.Node{h.NewNode("apart-b1"), h.NewNode("apart-b2"), h.NewNode("apart-b3")}
	a1, b1 := clusterA[0], clusterB[0]
	setContacts := func(n *harness.Node, list []*harness.Node) {
		n.Args = slices.DeleteFunc(n.Args, func(a string) bool { return strings.HasPrefix(a, "--contact_node_name_list=") })
		n.Args = append(n.Args, "--contact_node_name_list="+strings.Join(names(except(list, n)), ","))
	}
	for _, n := range clusterA {
		setContacts(n, clusterA)
	}
	for _, n := range clusterB[1:] {
		setContacts(n, clusterB)
	}
	setContacts(b1, append(slices.Clone(clusterB), a1)) // a1 is not up yet
	for _, n := range clusterB {
		n.Start()
	}
	waitFormed(t, clusterB, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	pubB, subB, err := pair(ctx, []string{signalingURL(b1)}, "apart-b")
	if err != nil {
		t.Fatal(err)
	}
	defer pubB.Close()
	defer subB.Close()
	harness.Eventually(t, 5*time.Second, "apart-b held by "+b1.Name, func() bool { return ownerOf(b1, "apart-b") == b1.Name })

	for _, n := range clusterA {
		n.Start()
	}
	waitFormed(t, clusterA, 20*time.Second)
	pubA, subA, err := pair(ctx, urlsOf(clusterA), "apart-a")
	if err != nil {
		t.Fatal(err)
	}
	defer pubA.Close()
	defer subA.Close()

	// The clusters meet through b1, but b2 and b3 have nowhere to go.
	var action string
	harness.Eventually(t, 30*time.Second, b1.Name+" showing A, waiting for the operator", func() bool {
		for _, e := range knownNodes(b1) {
			if e["node_name"] == a1.Name && e["other_cluster"] == true && e["merge"] == "waiting_for_operator" {
				action, _ = e["operator_action"].(string)
				return true
			}
		}
		return false
	})
	t.Logf("operator_action: %s", action)
	for _, want := range []string{clusterB[1].Name, clusterB[2].Name, a1.Name} {
		if !strings.Contains(action, want) {
			t.Fatalf("operator_action %q does not name %s", action, want)
		}
	}
	if !strings.Contains(b1.Log(), "the operator must act") {
		t.Fatalf("%s logged no instruction", b1.Name)
	}
	time.Sleep(6 * time.Second) // a check round or more: nothing moves while waiting
	for _, side := range [][]*harness.Node{clusterA, clusterB} {
		for _, n := range side {
			if got := members(n); !slices.Equal(got, names(side)) {
				t.Fatalf("%s lists %v while B waits, want %v", n.Name, got, names(side))
			}
		}
	}

	// The operator acts: b2 and b3, one at a time, list a1 too. Then B
	// merges into A.
	for _, n := range clusterB[1:] {
		n.Stop()
		setContacts(n, append(slices.Clone(clusterB), a1))
		n.Start()
		if n != clusterB[2] {
			waitMembers(t, clusterB)
			select {
			case <-subB.Closed():
				t.Fatalf("B's subscriber closed while the operator restarted %s: %+v", n.Name, subB.CloseInfo())
			default:
			}
		}
	}
	all := append(slices.Clone(clusterA), clusterB...)
	waitFormed(t, all, 60*time.Second)
	for _, c := range []*soraclient.Client{pubB, subB} {
		info := waitClose(t, ctx, c)
		if info.Code != 4503 || (info.Reason != "NODE-PURGED" && info.Reason != "CLUSTER-QUORUM-LOST") {
			t.Fatalf("a client of the merged cluster closed with %+v, want 4503 NODE-PURGED (a member purged by its leader) or CLUSTER-QUORUM-LOST (the leader leaving)", info)
		}
		t.Logf("B's client closed: %d %s", info.Code, info.Reason)
	}
	select {
	case <-subA.Closed():
		t.Fatalf("A's subscriber was closed by the merge: %+v", subA.CloseInfo())
	default:
	}
	before := subA.Received()[pubA.ConnectionID()+"/video"].Packets
	if err := subA.WaitPackets(ctx, pubA.ConnectionID(), "video", before+20); err != nil {
		t.Fatalf("A's media stopped: %v", err)
	}
	for _, ch := range listChannels(a1) {
		if ch.ChannelID == "apart-b" {
			t.Fatalf("apart-b is still assigned after the merge: %+v", ch)
		}
	}
	pubB2, subB2, err := pair(ctx, urlsOf(all), "apart-b")
	if err != nil {
		t.Fatalf("apart-b in the merged cluster: %v", err)
	}
	defer pubB2.Close()
	defer subB2.Close()
	for _, n := range all {
		harness.Eventually(t, 15*time.Second, n.Name+" showing no other cluster", func() bool {
			for _, e := range knownNodes(n) {
				if e["other_cluster"] == true {
					return false
				}
			}
			return true
		})
	}
}

// members lists the connected members n lists, by name.
func members(n *harness.Node) []string {
	var got []string
	for _, e := range listNodes(n, false) {
		if e.Connected && e.Mode != "initial" {
			got = append(got, e.NodeName)
		}
	}
	return got
}

// waitMembers waits until every node of side lists exactly side, all
// connected (nodes of another cluster aside).
func waitMembers(t *testing.T, side []*harness.Node) {
	t.Helper()
	for _, n := range side {
		harness.Eventually(t, 20*time.Second, n.Name+" listing "+strings.Join(names(side), ","), func() bool {
			return slices.Equal(members(n), names(side))
		})
	}
}

// knownNodes is ListClusterNodes with include_all_known_nodes, raw.
func knownNodes(n *harness.Node) []map[string]any {
	r, err := n.Call(targetListClusterNodes, map[string]any{"include_all_known_nodes": true})
	if err != nil || r.Status != 200 {
		return nil
	}
	var out []map[string]any
	if r.JSON(&out) != nil {
		return nil
	}
	return out
}
