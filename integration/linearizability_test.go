package integration

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/sorad/sorad/integration/harness"
)

// The control plane's linearizability, checked with porcupine: clients
// change nodes' modes and read them back (GetMode and ListClusterNodes with
// "consistent": true) on random nodes while a seeded fault schedule kills
// nodes (the leader among them) with SIGKILL and restarts them, cuts nodes
// off the cluster port with iptables, and drops a fifth of a node's cluster
// packets (iptables statistic; this kernel has no netem for delay); the
// recorded history must be
// linearizable against a model of three mode registers.
//
//	SORAD_LINEARIZABILITY_SEED=7 SORAD_LINEARIZABILITY_DURATION=5m \
//	  go test -run TestControlPlaneLinearizable -timeout 30m ./integration
//
// runs a longer schedule (the defaults: seed 1, 15 s).

// modeOp is one operation of the history.
type modeOp struct {
	kind string // "set", "get" (one node's mode) or "list" (every listed node's)
	node int    // the node set or read (set, get)
	mode string // the mode set
}

// modeResult is what an operation returned.
type modeResult struct {
	unknown bool           // a set whose outcome is not known: it may or may not have happened
	mode    string         // get
	modes   map[int]string // list: the nodes listed with a mode
}

// modeModel is three mode registers, one per node, all "normal" at first.
var modeModel = porcupine.Model{
	Init: func() any { return [3]string{"normal", "normal", "normal"} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.([3]string), input.(modeOp), output.(modeResult)
		switch in.kind {
		case "set":
			s[in.node] = in.mode // acknowledged, or unknown and placed here
			return true, s
		case "get":
			return s[in.node] == out.mode, s
		default:
			for i, m := range out.modes {
				if s[i] != m {
					return false, s
				}
			}
			return true, s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(modeOp), output.(modeResult)
		switch {
		case in.kind == "set" && out.unknown:
			return fmt.Sprintf("set(%d, %s) ?", in.node, in.mode)
		case in.kind == "set":
			return fmt.Sprintf("set(%d, %s)", in.node, in.mode)
		case in.kind == "get":
			return fmt.Sprintf("get(%d) -> %s", in.node, out.mode)
		}
		return fmt.Sprintf("list -> %v", out.modes)
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.([3]string)) },
}

// TestModeModelRejectsAStaleRead: the model can fail: a read that misses
// an acknowledged write before it is not linearizable, one concurrent with
// it is.
func TestModeModelRejectsAStaleRead(t *testing.T) {
	set := porcupine.Operation{ClientId: 0, Input: modeOp{kind: "set", node: 1, mode: "block_new_session"}, Call: 0, Output: modeResult{}, Return: 10}
	tests := []struct {
		name string
		read porcupine.Operation
		want porcupine.CheckResult
	}{
		{"a read after the write sees it", porcupine.Operation{ClientId: 1, Input: modeOp{kind: "get", node: 1}, Call: 20, Output: modeResult{mode: "block_new_session"}, Return: 30}, porcupine.Ok},
		{"a read after the write misses it", porcupine.Operation{ClientId: 1, Input: modeOp{kind: "get", node: 1}, Call: 20, Output: modeResult{mode: "normal"}, Return: 30}, porcupine.Illegal},
		{"a concurrent read may miss it", porcupine.Operation{ClientId: 1, Input: modeOp{kind: "get", node: 1}, Call: 5, Output: modeResult{mode: "normal"}, Return: 30}, porcupine.Ok},
		{"a listing after the write misses it", porcupine.Operation{ClientId: 1, Input: modeOp{kind: "list"}, Call: 20, Output: modeResult{modes: map[int]string{0: "normal", 1: "normal"}}, Return: 30}, porcupine.Illegal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(modeModel, []porcupine.Operation{set, tt.read}, 10*time.Second); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestControlPlaneLinearizable(t *testing.T) {
	seed, duration := uint64(1), 15*time.Second
	if v := os.Getenv("SORAD_LINEARIZABILITY_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SORAD_LINEARIZABILITY_SEED=%q: %v", v, err)
		}
		seed = n
	}
	if v := os.Getenv("SORAD_LINEARIZABILITY_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SORAD_LINEARIZABILITY_DURATION=%q: %v", v, err)
		}
		duration = d
	}
	t.Logf("seed %d, %v of faults", seed, duration)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	index := map[string]int{}
	for i, n := range nodes {
		index[n.Name] = i
	}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
	)
	record := func(client int, in modeOp, call int64, out modeResult, ret int64) {
		mu.Lock()
		defer mu.Unlock()
		history = append(history, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	}
	modes := []string{"normal", "block_new_session", "block_new_connection"}
	// One operation by client c, with its own random source.
	operate := func(c int, r *rand.Rand) {
		i := r.IntN(len(nodes))
		n := nodes[i]
		call := now()
		switch k := r.IntN(10); {
		case k < 4:
			in := modeOp{kind: "set", node: i, mode: modes[r.IntN(len(modes))]}
			resp, err := n.Call(targetChangeMode, map[string]string{"mode": in.mode})
			switch {
			case err == nil && resp.Status == 200:
				record(c, in, call, modeResult{}, now())
			case err == nil && resp.Status == 400:
				t.Errorf("ChangeMode %s on %s: 400 %s", in.mode, n.Name, resp.Body)
			case errors.Is(err, syscall.ECONNREFUSED):
				// The node is down: the call never reached it.
			default: // it may have been committed
				record(c, in, call, modeResult{unknown: true}, math.MaxInt64)
			}
		case k < 7:
			resp, err := n.Call(targetGetMode, map[string]bool{"consistent": true})
			var m struct {
				Mode string `json:"mode"`
			}
			// "initial" is a node's own answer while its new process has
			// not registered yet: it reads nothing of the replicated state.
			if err == nil && resp.Status == 200 && resp.JSON(&m) == nil && m.Mode != "initial" {
				record(c, modeOp{kind: "get", node: i}, call, modeResult{mode: m.Mode}, now())
			}
		default:
			resp, err := n.Call(targetListClusterNodes, map[string]bool{"consistent": true})
			var list []nodeEntry
			if err == nil && resp.Status == 200 && resp.JSON(&list) == nil {
				out := modeResult{modes: map[int]string{}}
				for _, e := range list {
					if j, ok := index[e.NodeName]; ok && e.Mode != "" && e.Mode != "initial" {
						out.modes[j] = e.Mode
					}
				}
				record(c, modeOp{kind: "list"}, call, out, now())
			}
		}
	}
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 3 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			r := rand.New(rand.NewPCG(seed, uint64(c)+1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				operate(c, r)
				time.Sleep(time.Duration(10+r.IntN(40)) * time.Millisecond)
			}
		}()
	}
	// The fault schedule: one fault at a time, then a pause.
	faults := rand.New(rand.NewPCG(seed, 0))
	var log []string
	for time.Since(start) < duration {
		time.Sleep(time.Duration(1000+faults.IntN(2000)) * time.Millisecond)
		victim := nodes[faults.IntN(len(nodes))]
		kind := faults.IntN(4)
		if kind == 1 {
			victim = leader(t, nodes)
		}
		hold := time.Duration(1000+faults.IntN(2000)) * time.Millisecond
		switch kind {
		case 0, 1:
			log = append(log, fmt.Sprintf("%v kill -9 %s%s for %v", time.Since(start).Round(time.Millisecond), victim.Name, map[bool]string{true: " (leader)"}[kind == 1], hold))
			victim.Kill()
			time.Sleep(hold)
			victim.Start()
		case 2:
			log = append(log, fmt.Sprintf("%v cut %s off the cluster port for %v", time.Since(start).Round(time.Millisecond), victim.Name, hold))
			p := newPartition(t, victim)
			time.Sleep(hold)
			p.heal()
		default:
			log = append(log, fmt.Sprintf("%v drop 20%% of %s's cluster packets for %v", time.Since(start).Round(time.Millisecond), victim.Name, hold))
			p := newLossyLink(t, victim, 0.2)
			time.Sleep(hold)
			p.heal()
		}
	}
	waitFormed(t, nodes, 30*time.Second)
	time.Sleep(time.Second) // operations on the healed cluster
	close(stop)
	clients.Wait()
	t.Logf("faults:\n%s", strings.Join(log, "\n"))
	counts := map[string]int{}
	for _, op := range history {
		k := op.Input.(modeOp).kind
		if op.Output.(modeResult).unknown {
			k += " (outcome unknown)"
		}
		counts[k]++
	}
	var summary []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		summary = append(summary, fmt.Sprintf("%s %d", k, counts[k]))
	}
	t.Logf("%d operations: %s", len(history), strings.Join(summary, ", "))
	if counts["get"] == 0 || counts["list"] == 0 || counts["set"] == 0 {
		t.Fatalf("the history lacks an operation kind: %v", counts)
	}
	result, info := porcupine.CheckOperationsVerbose(modeModel, history, 2*time.Minute)
	if result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("sorad-linearizability-seed%d-%d.html", seed, time.Now().Unix()))
		if err := porcupine.VisualizePath(modeModel, info, path); err != nil {
			t.Logf("visualize: %v", err)
		}
		var dump strings.Builder
		for _, op := range history {
			fmt.Fprintf(&dump, "%d %d %d %s\n", op.ClientId, op.Call, op.Return, modeModel.DescribeOperation(op.Input, op.Output))
		}
		_ = os.WriteFile(strings.TrimSuffix(path, ".html")+".txt", []byte(dump.String()), 0o644)
		t.Fatalf("the history is %s (seed %d); visualization: %s", result, seed, path)
	}
}
