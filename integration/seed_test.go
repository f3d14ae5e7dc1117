package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// seed loads one example body of seed 000 from testdata.
func seed(t *testing.T, file string) any {
	t.Helper()
	return seedIn(t, "seed000", file)
}

// seedIn loads one example body of a seed from testdata/<dir>.
func seedIn(t *testing.T, dir, file string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", dir, file))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

// shape describes a JSON value by its keys and types: "string", "number",
// "boolean", "null", {"key": shape...} for objects and [shape] for arrays
// (every element must have one shape).
func shape(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			s, err := shape(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = s
		}
		return out, nil
	case []any:
		if len(x) == 0 {
			return []any{}, nil
		}
		first, err := shape(x[0])
		if err != nil {
			return nil, err
		}
		for i, e := range x[1:] {
			s, err := shape(e)
			if err != nil {
				return nil, err
			}
			if !reflect.DeepEqual(s, first) {
				return nil, fmt.Errorf("element %d has shape %v, element 0 has %v", i+1, s, first)
			}
		}
		return []any{first}, nil
	case string:
		return "string", nil
	case float64:
		return "number", nil
	case bool:
		return "boolean", nil
	case nil:
		return "null", nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

// checkShape fails unless got has every key of want with the same JSON type,
// recursively, and no keys beyond want's and extra (documented keys the
// seed's example omits).
func checkShape(t *testing.T, what string, want, got any, extra ...string) {
	t.Helper()
	ws, err := shape(want)
	if err != nil {
		t.Fatalf("%s: seed: %v", what, err)
	}
	gs, err := shape(got)
	if err != nil {
		t.Fatalf("%s: answer: %v", what, err)
	}
	if msg := shapeDiff(ws, gs, extra); msg != "" {
		t.Fatalf("%s: answer does not have the seed's keys and types: %s\nseed:   %v\nanswer: %v", what, msg, ws, gs)
	}
}

func shapeDiff(want, got any, extra []string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("want object, got %v", got)
		}
		for k, ws := range w {
			gs, ok := g[k]
			if !ok {
				return "missing key " + k
			}
			if d := shapeDiff(ws, gs, extra); d != "" {
				return k + ": " + d
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok && !slices.Contains(extra, k) {
				return "unexpected key " + k
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("want array, got %v", got)
		}
		if len(w) == 1 && len(g) == 1 {
			return shapeDiff(w[0], g[0], extra)
		}
		if len(g) == 0 && len(w) == 1 {
			return "empty array; the test must produce elements"
		}
	default:
		if want != got {
			return fmt.Sprintf("want %v, got %v", want, got)
		}
	}
	return ""
}

func decode(t *testing.T, r harness.Response) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("answer is not JSON: %q", r.Body)
	}
	return v
}

// seedHeaders are the response headers every API example of the seed shows.
func seedHeaders(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "seed000", "cors-headers.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok {
			out[k] = v
		}
	}
	return out
}

// checkHeaders fails unless r carries the seed's CORS and content-type
// headers with the seed's values.
func checkHeaders(t *testing.T, what string, r harness.Response, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got := r.Header.Get(k); got != want[k] {
			t.Fatalf("%s: header %s = %q, seed shows %q", what, k, got, want[k])
		}
	}
}

// TestSeedClusterAndModeAPIs replays every request of the cluster and mode
// sections of seed 000 (plus ListChannels and GetStatsReport, which it also
// shows) on a real three-node cluster and compares each answer with the
// seed's: status, keys and JSON types, exact bodies where the seed's are not
// per node, and headers.
func TestSeedClusterAndModeAPIs(t *testing.T) {
	h := harness.New(t, soradBin)
	// The seed's examples come from a node whose CORS origin is
	// http://127.0.0.1:5000.
	cors := "--api_cors_origin=http://127.0.0.1:5000"
	nodes := startCluster(t, h, 3, cors)
	headers := seedHeaders(t)
	call := func(n *harness.Node, status int, target string, body any) any {
		t.Helper()
		r := n.MustCall(status, target, body)
		checkHeaders(t, target, r, headers)
		return decode(t, r)
	}

	t.Run("JoinCluster", func(t *testing.T) {
		fourth := h.NewNode("node-04", cors)
		fourth.Start()
		harness.Eventually(t, 10*time.Second, "standalone fourth node", func() bool { return formed(fourth, []string{fourth.Name}) })
		req := seed(t, "JoinCluster.request.json").(map[string]any)
		req["contact_node_name"] = nodes[2].Name
		got := call(fourth, 200, targetJoinCluster, req)
		checkShape(t, "JoinCluster", seed(t, "JoinCluster.response.json"), got)
		list := got.(map[string]any)["node_name_list"].([]any)
		all := append(slices.Clone(nodes), fourth)
		if len(list) != 4 {
			t.Fatalf("node_name_list = %v, want the 4 members", list)
		}
		waitFormed(t, all, 10*time.Second)
		nodes = all
	})

	t.Run("ListClusterNodes", func(t *testing.T) {
		for _, n := range nodes {
			got := call(n, 200, targetListClusterNodes, nil)
			checkShape(t, "ListClusterNodes", seed(t, "ListClusterNodes.response.json"), got, "license_max_nodes")
			if len(got.([]any)) != len(nodes) {
				t.Fatalf("%s lists %d nodes", n.Name, len(got.([]any)))
			}
			for _, e := range got.([]any) {
				ms := e.(map[string]any)["member_since"].(string)
				if _, err := time.Parse("2006-01-02T15:04:05.000000Z", ms); err != nil {
					t.Fatalf("member_since %q is not RFC 3339 UTC with microseconds", ms)
				}
			}
		}
		if ok, msg := sameJSON(t, nodes, targetListClusterNodes, nil); !ok {
			t.Fatal(msg)
		}
	})

	t.Run("ListClusterChannels", func(t *testing.T) {
		assign(t, nodes[0], "tobi", nodes[3])
		assign(t, nodes[1], "sora", nodes[0])
		for _, n := range nodes {
			harness.Eventually(t, 5*time.Second, "channels on "+n.Name, func() bool { return len(listChannels(n)) == 2 })
			got := call(n, 200, targetListClusterChannels, nil)
			checkShape(t, "ListClusterChannels", seed(t, "ListClusterChannels.response.json"), got)
		}
		if ok, msg := sameJSON(t, nodes, targetListClusterChannels, nil); !ok {
			t.Fatal(msg)
		}
	})

	t.Run("ListChannels", func(t *testing.T) {
		// Local listings show live sessions: start one in sora, which
		// nodes[0] is in charge of.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		connectClient(t, ctx, nodes[0], soraclient.Options{ChannelID: "sora", Role: "recvonly", Audio: true, Video: true})
		connectClient(t, ctx, nodes[3], soraclient.Options{ChannelID: "tobi", Role: "recvonly", Audio: true, Video: true})
		got := call(nodes[0], 200, targetListChannels, nil)
		checkShape(t, "ListChannels", seed(t, "ListChannels.response.json"), got)
		if l := got.([]any); len(l) != 1 || l[0].(map[string]any)["channel_id"] != "sora" {
			t.Fatalf("local ListChannels on the owner of sora = %v", l)
		}
		all := call(nodes[2], 200, targetListChannels, map[string]bool{"local": false})
		checkShape(t, "ListChannels local=false", seed(t, "ListChannels.response.json"), all)
		if len(all.([]any)) != 2 {
			t.Fatalf("cluster-wide ListChannels = %v", all)
		}
	})

	t.Run("ChangeMode and GetMode", func(t *testing.T) {
		got := call(nodes[0], 200, targetGetMode, nil)
		if !reflect.DeepEqual(got, seed(t, "GetMode.response.json")) {
			t.Fatalf("GetMode = %v, seed %v", got, seed(t, "GetMode.response.json"))
		}
		got = call(nodes[1], 200, targetChangeMode, seed(t, "ChangeMode.request.json"))
		if !reflect.DeepEqual(got, seed(t, "ChangeMode.response.json")) {
			t.Fatalf("ChangeMode = %v, seed %v", got, seed(t, "ChangeMode.response.json"))
		}
		if got := call(nodes[1], 200, targetGetMode, nil); got.(map[string]any)["mode"] != "block_new_connection" {
			t.Fatalf("GetMode after ChangeMode = %v", got)
		}
		for _, n := range nodes {
			harness.Eventually(t, 5*time.Second, "mode on "+n.Name, func() bool {
				e, _ := entry(listNodes(n, false), nodes[1].Name)
				return e.Mode == "block_new_connection"
			})
		}
	})

	t.Run("GetStatsReport", func(t *testing.T) {
		got := call(nodes[0], 200, targetGetStatsReport, nil)
		// Beyond the seed: the cluster's state, and the webhook counters
		// of Sora's full report (sora-protocol.md section 8).
		extra := []string{"cluster"}
		for _, kind := range []string{"session", "event", "stats"} {
			for _, outcome := range []string{"successful", "failed", "ignored"} {
				extra = append(extra, "total_"+outcome+"_"+kind+"_webhook")
			}
		}
		extra = append(extra, "total_auth_webhook_allowed", "total_auth_webhook_denied", "total_successful_auth_webhook", "total_failed_auth_webhook")
		checkShape(t, "GetStatsReport", seed(t, "GetStatsReport.response.json"), got, extra...)
		// The webhook counters are not only allowed but required: every
		// one is there, a number, from the node's start (cluster is
		// checked below).
		for _, key := range extra[1:] {
			if s, _ := shape(got.(map[string]any)[key]); s != "number" {
				t.Fatalf("GetStatsReport %s = %v, want a number", key, got.(map[string]any)[key])
			}
		}
		cl, _ := got.(map[string]any)["cluster"].(map[string]any)
		for key, typ := range map[string]string{"raft_state": "string", "raft_term": "number", "raft_commit_index": "number"} {
			if s, _ := shape(cl[key]); s != typ {
				t.Fatalf("GetStatsReport cluster.%s = %v, want a %s", key, cl[key], typ)
			}
		}
	})

	t.Run("PurgeClusterNode", func(t *testing.T) {
		for _, target := range []string{targetPurge20211215, targetPurge20220629} {
			got := call(nodes[0], 400, target, map[string]string{"target_node_name": nodes[3].Name})
			want := seed(t, "PurgeClusterNode.node-is-alive.json").(map[string]any)
			want["error_reason"].(map[string]any)["target_node"] = nodes[3].Name
			if !reflect.DeepEqual(got, any(want)) {
				t.Fatalf("%s of a live node = %v, seed %v", target, got, want)
			}
		}
		nodes[3].Kill()
		harness.Eventually(t, 5*time.Second, "dead node disconnected", func() bool {
			e, ok := entry(listNodes(nodes[1], true), nodes[3].Name)
			return ok && !e.Connected
		})
		req := seed(t, "PurgeClusterNode.request.json").(map[string]any)
		req["target_node_name"] = nodes[3].Name
		got := call(nodes[1], 200, targetPurge20220629, req)
		want := seed(t, "PurgeClusterNode.response.json").(map[string]any)
		want["target_node_name"] = nodes[3].Name
		if !reflect.DeepEqual(got, any(want)) {
			t.Fatalf("PurgeClusterNode = %v, seed %v", got, want)
		}
		for _, n := range nodes[:3] {
			harness.Eventually(t, 5*time.Second, "purged node gone from "+n.Name, func() bool {
				_, ok := entry(listNodes(n, true), nodes[3].Name)
				return !ok
			})
		}
	})

	t.Run("OPTIONS preflight", func(t *testing.T) {
		r, err := nodes[0].Options()
		if err != nil || r.Status != 200 {
			t.Fatalf("OPTIONS / = %d, %v", r.Status, err)
		}
		for k, v := range headers {
			if k != "content-type" && r.Header.Get(k) != v {
				t.Fatalf("OPTIONS header %s = %q, want %q", k, r.Header.Get(k), v)
			}
		}
	})
}

func TestShapeDiff(t *testing.T) {
	obj := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		sh, err := shape(v)
		if err != nil {
			t.Fatal(err)
		}
		return sh
	}
	tests := []struct {
		want, got string
		extra     []string
		ok        bool
	}{
		{`{"a":1,"b":"x"}`, `{"b":"y","a":2}`, nil, true},
		{`{"a":1}`, `{"a":"1"}`, nil, false},
		{`{"a":1,"b":true}`, `{"a":1}`, nil, false},
		{`{"a":1}`, `{"a":1,"c":2}`, nil, false},
		{`{"a":1}`, `{"a":1,"c":2}`, []string{"c"}, true},
		{`[{"a":1}]`, `[{"a":1},{"a":2}]`, nil, true},
		{`[{"a":1}]`, `[{"a":false}]`, nil, false},
		{`[{"a":1}]`, `[]`, nil, false},
		{`{"l":["x"]}`, `{"l":[1]}`, nil, false},
	}
	for _, tt := range tests {
		if d := shapeDiff(obj(tt.want), obj(tt.got), tt.extra); (d == "") != tt.ok {
			t.Errorf("shapeDiff(%s, %s) = %q, want ok=%v", tt.want, tt.got, d, tt.ok)
		}
	}
	if _, err := shape([]any{1.0, "x"}); err == nil {
		t.Error("an array of mixed shapes was accepted")
	}
}
