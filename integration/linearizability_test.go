package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	"github.com/sorad/sorad/integration/soraclient"
)

// The control plane's linearizability, checked with porcupine: clients
// change nodes' modes and read them back (GetMode and ListClusterNodes with
// "consistent": true), get channels assigned by connecting to them and read
// the assignments back (ListClusterChannels with "consistent": true), on
// random nodes, while a seeded fault schedule kills nodes (the leader among
// them) with SIGKILL and restarts them, kills a node and purges it
// (PurgeClusterNode) before it rejoins through its contacts (JoinCluster's
// path), cuts nodes off the cluster port with iptables, drops a fifth of a
// node's cluster packets (iptables statistic), and delays a node's cluster
// packets by 50-250 ms each way (a netfilter queue, package nfdelay: this
// kernel has no netem); the recorded history must be linearizable against a
// model of three mode registers and four channel holders.
//
//	SORAD_LINEARIZABILITY_SEED=7 SORAD_LINEARIZABILITY_DURATION=5m \
//	  go test -run TestControlPlaneLinearizable -timeout 30m ./integration
//
// runs a longer schedule (the defaults: seed 1, 15 s).

// linChannels is how many channels the clients assign.
const linChannels = 4

// cpState is the model's state: each node's mode ("" once purged, until it
// joins again) and each channel's node in charge (-1: none).
type cpState struct {
	modes  [3]string
	holder [linChannels]int8
}

// cpOp is one operation of the history.
type cpOp struct {
	// set, get (one node's mode), list (every listed node's), assign (a
	// connect to a channel), channels (every channel's holder), purge (a
	// dead node) or join (a purged node back through its contacts).
	kind    string
	node    int
	mode    string // set
	channel int    // assign
}

// cpResult is what an operation returned.
type cpResult struct {
	unknown bool           // a write whose outcome is not known: it may or may not have happened
	mode    string         // get
	modes   map[int]string // list: the nodes listed with a mode
	holder  int            // assign: the node that admitted the connect
	holders map[int]int    // channels: the channels listed, with their node in charge
}

// cpModel is the control plane's specification. A connect may move a
// channel only to a node in mode normal (placement, and takeover of a dead
// or stale holder); a holder that is not normal may let its channel go for
// the connect to be placed elsewhere (so a connect that failed may leave
// the channel unassigned); a purge frees the node's channels.
var cpModel = porcupine.NondeterministicModel{
	Init: func() []any {
		s := cpState{modes: [3]string{"normal", "normal", "normal"}}
		for i := range s.holder {
			s.holder[i] = -1
		}
		return []any{s}
	},
	Step: func(state, input, output any) []any {
		s, in, out := state.(cpState), input.(cpOp), output.(cpResult)
		switch in.kind {
		case "set":
			next := s
			next.modes[in.node] = in.mode
			if out.unknown {
				return []any{s, next}
			}
			if s.modes[in.node] == "" {
				return nil // a node that is not a member cannot change its mode
			}
			return []any{next}
		case "get":
			if s.modes[in.node] != out.mode {
				return nil
			}
			return []any{s}
		case "list":
			for i, m := range out.modes {
				if s.modes[i] != m {
					return nil
				}
			}
			return []any{s}
		case "assign":
			if out.unknown {
				outcomes := []any{s}
				if h := s.holder[in.channel]; h >= 0 && s.modes[h] != "normal" {
					// A holder that takes no new session lets the channel
					// go for the connect to be placed elsewhere; the
					// connect may fail before it is.
					next := s
					next.holder[in.channel] = -1
					outcomes = append(outcomes, next)
				}
				for h, m := range s.modes {
					if m == "normal" && int(s.holder[in.channel]) != h {
						next := s
						next.holder[in.channel] = int8(h)
						outcomes = append(outcomes, next)
					}
				}
				return outcomes
			}
			if int(s.holder[in.channel]) == out.holder {
				return []any{s}
			}
			if s.modes[out.holder] != "normal" {
				return nil
			}
			next := s
			next.holder[in.channel] = int8(out.holder)
			return []any{next}
		case "channels":
			for ch, h := range s.holder {
				got, ok := out.holders[ch]
				if !ok {
					got = -1
				}
				if int(h) != got {
					return nil
				}
			}
			return []any{s}
		case "purge":
			next := s
			next.modes[in.node] = ""
			for ch, h := range next.holder {
				if int(h) == in.node {
					next.holder[ch] = -1
				}
			}
			if out.unknown {
				return []any{s, next}
			}
			return []any{next}
		default: // join
			if s.modes[in.node] != "" {
				return []any{s}
			}
			next := s
			next.modes[in.node] = "normal"
			return []any{next}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(cpOp), output.(cpResult)
		unknown := map[bool]string{true: " ?"}[out.unknown]
		switch in.kind {
		case "set":
			return fmt.Sprintf("set(%d, %s)%s", in.node, in.mode, unknown)
		case "get":
			return fmt.Sprintf("get(%d) -> %s", in.node, out.mode)
		case "list":
			return fmt.Sprintf("list -> %v", out.modes)
		case "assign":
			if out.unknown {
				return fmt.Sprintf("assign(ch%d) ?", in.channel)
			}
			return fmt.Sprintf("assign(ch%d) -> %d", in.channel, out.holder)
		case "channels":
			return fmt.Sprintf("channels -> %v", out.holders)
		}
		return fmt.Sprintf("%s(%d)%s", in.kind, in.node, unknown)
	},
	DescribeState: func(state any) string {
		s := state.(cpState)
		return fmt.Sprintf("%v %v", s.modes, s.holder)
	},
}

// TestControlPlaneModelRejectsWhatItMust: the model can fail: a read that misses
// an acknowledged write before it is not linearizable, one concurrent with
// it is; a channel moves only to a node in mode normal, and a purge frees
// the purged node's channels.
func TestControlPlaneModelRejectsWhatItMust(t *testing.T) {
	set := porcupine.Operation{ClientId: 0, Input: cpOp{kind: "set", node: 1, mode: "block_new_session"}, Call: 0, Output: cpResult{}, Return: 10}
	assign := porcupine.Operation{ClientId: 2, Input: cpOp{kind: "assign", channel: 0}, Call: 0, Output: cpResult{holder: 2}, Return: 10}
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"a read after the write sees it", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "get", node: 1}, Call: 20, Output: cpResult{mode: "block_new_session"}, Return: 30}}, porcupine.Ok},
		{"a read after the write misses it", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "get", node: 1}, Call: 20, Output: cpResult{mode: "normal"}, Return: 30}}, porcupine.Illegal},
		{"a concurrent read may miss it", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "get", node: 1}, Call: 5, Output: cpResult{mode: "normal"}, Return: 30}}, porcupine.Ok},
		{"a listing after the write misses it", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "list"}, Call: 20, Output: cpResult{modes: map[int]string{0: "normal", 1: "normal"}}, Return: 30}}, porcupine.Illegal},
		{"an assignment is read back", []porcupine.Operation{assign, {ClientId: 1, Input: cpOp{kind: "channels"}, Call: 20, Output: cpResult{holders: map[int]int{0: 2}}, Return: 30}}, porcupine.Ok},
		{"an assignment read as missing", []porcupine.Operation{assign, {ClientId: 1, Input: cpOp{kind: "channels"}, Call: 20, Output: cpResult{holders: map[int]int{}}, Return: 30}}, porcupine.Illegal},
		{"a channel moved to a blocked node", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "assign", channel: 1}, Call: 20, Output: cpResult{holder: 1}, Return: 30}}, porcupine.Illegal},
		{"a failed connect may hand a blocked holder's channel over", []porcupine.Operation{assign, {ClientId: 0, Input: cpOp{kind: "set", node: 2, mode: "block_new_session"}, Call: 20, Output: cpResult{}, Return: 30}, {ClientId: 1, Input: cpOp{kind: "assign", channel: 0}, Call: 40, Output: cpResult{unknown: true}, Return: 50}, {ClientId: 3, Input: cpOp{kind: "channels"}, Call: 60, Output: cpResult{holders: map[int]int{}}, Return: 70}}, porcupine.Ok},
		{"but not a normal holder's", []porcupine.Operation{assign, {ClientId: 1, Input: cpOp{kind: "assign", channel: 0}, Call: 40, Output: cpResult{unknown: true}, Return: 50}, {ClientId: 3, Input: cpOp{kind: "channels"}, Call: 60, Output: cpResult{holders: map[int]int{}}, Return: 70}}, porcupine.Illegal},
		{"a purge frees the node's channels", []porcupine.Operation{assign, {ClientId: 1, Input: cpOp{kind: "purge", node: 2}, Call: 20, Output: cpResult{}, Return: 30}, {ClientId: 3, Input: cpOp{kind: "channels"}, Call: 40, Output: cpResult{holders: map[int]int{0: 2}}, Return: 50}}, porcupine.Illegal},
		{"a purged node rejoins normal", []porcupine.Operation{set, {ClientId: 1, Input: cpOp{kind: "purge", node: 1}, Call: 20, Output: cpResult{}, Return: 30}, {ClientId: 1, Input: cpOp{kind: "join", node: 1}, Call: 40, Output: cpResult{}, Return: 50}, {ClientId: 3, Input: cpOp{kind: "get", node: 1}, Call: 60, Output: cpResult{mode: "normal"}, Return: 70}}, porcupine.Ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(cpModel.ToModel(), tt.ops, 10*time.Second); got != tt.want {
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
	// Assignments stay until a connect moves them or a purge frees them:
	// no release while the test runs.
	nodes := startCluster(t, h, 3, "--channel_release_delay=1h")
	index := map[string]int{}
	byURL := map[string]int{}
	for i, n := range nodes {
		index[n.Name] = i
		byURL[signalingURL(n)] = i
	}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
	)
	record := func(client int, in cpOp, call int64, out cpResult, ret int64) {
		mu.Lock()
		defer mu.Unlock()
		history = append(history, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	}
	// A write that failed may still take effect, but not forever after:
	// the node that proposed it gives up within its own bounds
	// (cluster_request_timeout, connect_timeout), and an entry left in a
	// log is committed or dropped by the next leader, which the schedule
	// (one fault of at most 3 s at a time) always lets the cluster elect
	// within seconds. unknownFor bounds the window in which its effect may
	// land; an endless one (porcupine's usual) left the checker's search
	// no end within minutes on 60 s histories.
	const unknownFor = int64(30 * time.Second)
	var failures reasonCounts // connects of unknown outcome, by why they failed
	unknown := func(client int, in cpOp, call int64) {
		record(client, in, call, cpResult{unknown: true}, now()+unknownFor)
	}
	// notReady: the call was refused before anything was proposed (the
	// node is not a registered member: restarting, or purged).
	notReady := func(resp harness.Response) bool {
		return resp.Status == 503 && strings.Contains(string(resp.Body), "NODE-NOT-READY")
	}
	// Mostly normal: a connect refused by a node's mode is of unknown
	// outcome, and each unknown outcome widens the checker's search. No
	// block_new_session: a node in it that holds a channel without a
	// session hands it over to a connect, a release then a placement, two
	// commits a concurrent read may fall between, which one operation
	// cannot model.
	modes := []string{"normal", "normal", "normal", "block_new_connection", "block_new_connection"}
	// One operation by client c, with its own random source.
	operate := func(c int, r *rand.Rand) {
		i := r.IntN(len(nodes))
		n := nodes[i]
		call := now()
		switch k := r.IntN(20); {
		case k < 7:
			in := cpOp{kind: "set", node: i, mode: modes[r.IntN(len(modes))]}
			resp, err := n.Call(targetChangeMode, map[string]string{"mode": in.mode})
			switch {
			case err == nil && resp.Status == 200:
				record(c, in, call, cpResult{}, now())
			case err == nil && resp.Status == 400:
				t.Errorf("ChangeMode %s on %s: 400 %s", in.mode, n.Name, resp.Body)
			case errors.Is(err, syscall.ECONNREFUSED), err == nil && notReady(resp):
				// The call never reached the cluster.
			default: // it may have been committed
				unknown(c, in, call)
			}
		case k < 11:
			resp, err := n.Call(targetGetMode, map[string]bool{"consistent": true})
			var m struct {
				Mode string `json:"mode"`
			}
			// "initial" is a node's own answer while its new process has
			// not registered yet: it reads nothing of the replicated state.
			if err == nil && resp.Status == 200 && resp.JSON(&m) == nil && m.Mode != "initial" {
				record(c, cpOp{kind: "get", node: i}, call, cpResult{mode: m.Mode}, now())
			}
		case k < 14:
			resp, err := n.Call(targetListClusterNodes, map[string]bool{"consistent": true})
			var list []nodeEntry
			if err == nil && resp.Status == 200 && resp.JSON(&list) == nil {
				out := cpResult{modes: map[int]string{}}
				for _, e := range list {
					if j, ok := index[e.NodeName]; ok && e.Mode != "" && e.Mode != "initial" {
						out.modes[j] = e.Mode
					}
				}
				record(c, cpOp{kind: "list"}, call, out, now())
			}
		case k < 16:
			in := cpOp{kind: "assign", channel: r.IntN(linChannels)}
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			cl, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(n), ChannelID: fmt.Sprintf("lin-%d", in.channel), Role: "recvonly", Audio: true})
			cancel()
			if err == nil {
				holder, ok := byURL[cl.URL()]
				_ = cl.Close()
				if !ok {
					t.Errorf("a connect admitted by %q, not a node of the cluster", cl.URL())
					return
				}
				record(c, in, call, cpResult{holder: holder}, now())
				return
			}
			var ce *soraclient.CloseError
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				// The node is down.
			case errors.As(err, &ce) && ce.Code == 4503 && (ce.Reason == "NODE-NOT-READY" || ce.Reason == "NODE-PURGED"):
				// Refused before placement: nothing was proposed.
			default:
				failures.Add(closeReason(err))
				unknown(c, in, call)
			}
		default:
			resp, err := n.Call(targetListClusterChannels, map[string]bool{"consistent": true})
			var list []channelEntry
			if err == nil && resp.Status == 200 && resp.JSON(&list) == nil {
				out := cpResult{holders: map[int]int{}}
				for _, e := range list {
					var ch int
					if _, err := fmt.Sscanf(e.ChannelID, "lin-%d", &ch); err != nil {
						continue
					}
					j, ok := index[e.NodeInCharge]
					if !ok {
						t.Errorf("channel %s held by %q, not a node of the cluster", e.ChannelID, e.NodeInCharge)
						return
					}
					out.holders[ch] = j
				}
				record(c, cpOp{kind: "channels"}, call, out, now())
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
	// The fault schedule: one fault at a time, then a pause. The schedule
	// records purges and joins as client 3.
	faults := rand.New(rand.NewPCG(seed, 0))
	var log []string
	for time.Since(start) < duration {
		time.Sleep(time.Duration(1000+faults.IntN(2000)) * time.Millisecond)
		victim := nodes[faults.IntN(len(nodes))]
		kind := faults.IntN(6)
		if kind == 1 {
			victim = leader(t, nodes)
		}
		hold := time.Duration(1000+faults.IntN(2000)) * time.Millisecond
		at := time.Since(start).Round(time.Millisecond)
		switch kind {
		case 0, 1:
			log = append(log, fmt.Sprintf("%v kill -9 %s%s for %v", at, victim.Name, map[bool]string{true: " (leader)"}[kind == 1], hold))
			victim.Kill()
			time.Sleep(hold)
			victim.Start()
		case 2:
			log = append(log, fmt.Sprintf("%v cut %s off the cluster port for %v", at, victim.Name, hold))
			p := newPartition(t, victim)
			time.Sleep(hold)
			p.heal()
		case 3:
			log = append(log, fmt.Sprintf("%v drop 20%% of %s's cluster packets for %v", at, victim.Name, hold))
			p := newLossyLink(t, victim, 0.2)
			time.Sleep(hold)
			p.heal()
		case 4:
			delay := time.Duration(50+faults.IntN(200)) * time.Millisecond
			log = append(log, fmt.Sprintf("%v delay %s's cluster packets by %v each way for %v", at, victim.Name, delay, hold))
			p := newDelayedLink(t, victim, delay)
			time.Sleep(hold)
			p.heal()
		default:
			log = append(log, fmt.Sprintf("%v kill -9 %s, purge it, start it: it rejoins", at, victim.Name))
			purgeAndRejoin(t, nodes, victim, index[victim.Name], now, record, unknown)
		}
	}
	waitFormed(t, nodes, 30*time.Second)
	time.Sleep(time.Second) // operations on the healed cluster
	close(stop)
	clients.Wait()
	t.Logf("faults:\n%s", strings.Join(log, "\n"))
	counts := map[string]int{}
	for _, op := range history {
		k := op.Input.(cpOp).kind
		if op.Output.(cpResult).unknown {
			k += " (outcome unknown)"
		}
		counts[k]++
	}
	var summary []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		summary = append(summary, fmt.Sprintf("%s %d", k, counts[k]))
	}
	t.Logf("%d operations: %s", len(history), strings.Join(summary, ", "))
	t.Logf("connects of unknown outcome, by why they failed: %s", failures.String())
	for _, k := range []string{"get", "list", "set", "assign", "channels"} {
		if counts[k] == 0 {
			t.Fatalf("the history lacks %s operations: %v", k, counts)
		}
	}
	model := cpModel.ToModel()
	// Each write of unknown outcome widens the search; a long schedule
	// gets more time.
	result, info := porcupine.CheckOperationsVerbose(model, history, max(2*time.Minute, 5*duration))
	if result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("sorad-linearizability-seed%d-%d.html", seed, time.Now().Unix()))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Logf("visualize: %v", err)
		}
		var dump strings.Builder
		for _, op := range history {
			fmt.Fprintf(&dump, "%d %d %d %s\n", op.ClientId, op.Call, op.Return, model.DescribeOperation(op.Input, op.Output))
		}
		_ = os.WriteFile(strings.TrimSuffix(path, ".html")+".txt", []byte(dump.String()), 0o644)
		t.Fatalf("the history is %s (seed %d); visualization: %s", result, seed, path)
	}
}

// purgeAndRejoin kills victim, purges it through a live node once that node
// sees it down, and starts it again: purged, it joins the cluster again
// through its contact_node_name_list. The purge and the join are recorded
// as operations (the join from the start to when a live node lists it
// registered).
func purgeAndRejoin(t *testing.T, nodes []*harness.Node, victim *harness.Node, node int, now func() int64,
	record func(int, cpOp, int64, cpResult, int64), unknown func(int, cpOp, int64)) {
	t.Helper()
	const client = 3
	victim.Kill()
	live := except(nodes, victim)[0]
	harness.Eventually(t, 15*time.Second, live.Name+" seeing "+victim.Name+" down", func() bool {
		e, ok := entry(listNodes(live, true), victim.Name)
		return ok && !e.Connected
	})
	call := now()
	resp, err := live.Call(targetPurge20220629, map[string]string{"target_node_name": victim.Name})
	switch {
	case err == nil && resp.Status == 200:
		record(client, cpOp{kind: "purge", node: node}, call, cpResult{}, now())
	case err == nil && resp.Status == 400:
		t.Logf("purge of %s refused: %s", victim.Name, resp.Body) // nothing proposed
	default:
		unknown(client, cpOp{kind: "purge", node: node}, call)
	}
	call = now()
	victim.Start()
	harness.Eventually(t, 30*time.Second, victim.Name+" registered again", func() bool {
		r, err := live.Call(targetListClusterNodes, map[string]bool{"consistent": true})
		var list []nodeEntry
		if err != nil || r.Status != 200 || r.JSON(&list) != nil {
			return false
		}
		e, ok := entry(list, victim.Name)
		return ok && e.Mode != "" && e.Mode != "initial"
	})
	record(client, cpOp{kind: "join", node: node}, call, cpResult{}, now())
}

// reasonCounts counts failures by reason, from several goroutines.
type reasonCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *reasonCounts) Add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
}

func (r *reasonCounts) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(r.n)) {
		out = append(out, fmt.Sprintf("%s %d", k, r.n[k]))
	}
	return strings.Join(out, ", ")
}

// closeReason names why a connect failed: the close code and reason, or
// the kind of error.
func closeReason(err error) string {
	var ce *soraclient.CloseError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("%d %s", ce.Code, ce.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}
