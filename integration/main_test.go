// Package integration holds black-box tests of the sorad binary: real
// processes on 127.0.x.y addresses, real Raft over TCP, driven through the
// Sora API exactly as an operator drives it.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/harness"
)

var soradBin string

// browserPackagesErr says what is wrong with the browser tests' npm
// packages after TestMain's attempt to install them; nil when in place.
var browserPackagesErr error

// prepareBrowserTests installs the browser tests' npm packages when
// Chromium is there to use them.
func prepareBrowserTests() error {
	if _, err := exec.LookPath("chromium"); err != nil {
		return nil // browserPrereqs reports the missing browser
	}
	dir, err := filepath.Abs("browser")
	if err != nil {
		return err
	}
	return installBrowserPackages(context.Background(), dir)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sorad-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	soradBin, err = harness.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	browserPackagesErr = prepareBrowserTests()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Targets, as operators type them.
const (
	targetJoinCluster         = "Sora_20211215.JoinCluster"
	targetListClusterNodes    = "Sora_20211215.ListClusterNodes"
	targetListClusterChannels = "Sora_20211215.ListClusterChannels"
	targetPurge20211215       = "Sora_20211215.PurgeClusterNode"
	targetPurge20220629       = "Sora_20220629.PurgeClusterNode"
	targetChangeMode          = "Sora_20211215.ChangeMode"
	targetGetMode             = "Sora_20211215.GetMode"
	targetListChannels        = "Sora_20201013.ListChannels"
	targetGetStatsReport      = "Sora_20171010.GetStatsReport"
)

// nodeEntry is one element of ListClusterNodes.
type nodeEntry struct {
	NodeName             string `json:"node_name"`
	Connected            bool   `json:"connected"`
	Mode                 string `json:"mode"`
	Epoch                uint64 `json:"epoch"`
	MemberSince          string `json:"member_since"`
	ExternalAPIURL       string `json:"external_api_url"`
	ExternalSignalingURL string `json:"external_signaling_url"`
}

// channelEntry is one element of ListClusterChannels.
type channelEntry struct {
	ChannelID              string `json:"channel_id"`
	NodeInCharge           string `json:"node_in_charge"`
	NodeInChargeEpoch      uint64 `json:"node_in_charge_epoch"`
	NodeInChargeEpochStale bool   `json:"node_in_charge_epoch_stale"`
	NodeInChargeConnected  bool   `json:"node_in_charge_connected"`
}

type statsReport struct {
	Cluster struct {
		RaftState  string `json:"raft_state"`
		RaftLeader string `json:"raft_leader"`
	} `json:"cluster"`
}

// listNodes calls ListClusterNodes; it returns nil if the node does not
// answer 200 (it may be down or starting).
func listNodes(n *harness.Node, includeAll bool) []nodeEntry {
	r, err := n.Call(targetListClusterNodes, map[string]bool{"include_all_known_nodes": includeAll})
	if err != nil || r.Status != 200 {
		return nil
	}
	var out []nodeEntry
	if r.JSON(&out) != nil {
		return nil
	}
	return out
}

func listChannels(n *harness.Node) []channelEntry {
	r, err := n.Call(targetListClusterChannels, nil)
	if err != nil || r.Status != 200 {
		return nil
	}
	var out []channelEntry
	if r.JSON(&out) != nil {
		return nil
	}
	return out
}

func entry(list []nodeEntry, name string) (nodeEntry, bool) {
	for _, e := range list {
		if e.NodeName == name {
			return e, true
		}
	}
	return nodeEntry{}, false
}

func names(nodes []*harness.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	slices.Sort(out)
	return out
}

// formed reports whether n lists exactly want, all connected, in mode other
// than initial.
func formed(n *harness.Node, want []string) bool {
	list := listNodes(n, true)
	got := make([]string, 0, len(list))
	for _, e := range list {
		if !e.Connected || e.Mode == "initial" || e.Epoch == 0 {
			return false
		}
		got = append(got, e.NodeName)
	}
	slices.Sort(got)
	return slices.Equal(got, want)
}

// except returns nodes without n.
func except(nodes []*harness.Node, n *harness.Node) []*harness.Node {
	var out []*harness.Node
	for _, o := range nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// startCluster starts size nodes at once, each listing all the others in
// contact_node_name_list, and waits until every node sees every other.
func startCluster(t testing.TB, h *harness.Harness, size int, args ...string) []*harness.Node {
	t.Helper()
	nodes := clusterNodes(h, size, args...)
	for _, n := range nodes {
		n.Start()
	}
	waitFormed(t, nodes, 20*time.Second)
	return nodes
}

// clusterNodes makes size nodes that contact each other, not yet started.
func clusterNodes(h *harness.Harness, size int, args ...string) []*harness.Node {
	nodes := make([]*harness.Node, size)
	for i := range nodes {
		nodes[i] = h.NewNode(fmt.Sprintf("node-%02d", i+1), args...)
	}
	for i, n := range nodes {
		var contacts []string
		for j, o := range nodes {
			if j != i {
				contacts = append(contacts, o.Name)
			}
		}
		n.Args = append(n.Args, "--contact_node_name_list="+strings.Join(contacts, ","))
	}
	return nodes
}

func waitFormed(t testing.TB, nodes []*harness.Node, timeout time.Duration) {
	t.Helper()
	want := names(nodes)
	for _, n := range nodes {
		harness.Eventually(t, timeout, n.Name+" sees the whole cluster "+strings.Join(want, ","), func() bool { return formed(n, want) })
	}
}

// leader returns the node that reports itself Raft leader.
func leader(t *testing.T, nodes []*harness.Node) *harness.Node {
	t.Helper()
	var found *harness.Node
	harness.Eventually(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if !n.Running() {
				continue
			}
			r, err := n.Call(targetGetStatsReport, nil)
			var st statsReport
			if err == nil && r.Status == 200 && r.JSON(&st) == nil && st.Cluster.RaftState == "leader" {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// assign gives channelID to owner through the cluster's internal protocol,
// entering through via, as the media plane's connect will.
func assign(t *testing.T, via *harness.Node, channelID string, owner *harness.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts, err := harness.MemberTrust(via.Name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cluster.ProposeTo(ctx, via.ClusterAddress(), fsm.AssignChannel{Channel: channelID, Node: owner.Name, Multistream: true}, ts)
	if err != nil || res.Err != nil {
		t.Fatalf("assign %s to %s via %s: %v %v", channelID, owner.Name, via.Name, err, res.Err)
	}
}

// sameJSON reports whether every node answers target with the same JSON.
func sameJSON(t *testing.T, nodes []*harness.Node, target string, body any) (bool, string) {
	t.Helper()
	var first string
	for i, n := range nodes {
		r, err := n.Call(target, body)
		if err != nil || r.Status != 200 {
			return false, fmt.Sprintf("%s: %v %d", n.Name, err, r.Status)
		}
		var v any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			return false, err.Error()
		}
		canon, _ := json.Marshal(v)
		if i == 0 {
			first = string(canon)
		} else if string(canon) != first {
			return false, fmt.Sprintf("%s answers %s\n%s answers %s", nodes[0].Name, first, n.Name, canon)
		}
	}
	return true, first
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func readAll(resp *http.Response) ([]byte, error) { return io.ReadAll(resp.Body) }
