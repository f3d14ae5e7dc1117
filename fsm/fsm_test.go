package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
)

func info(name string) NodeInfo {
	return NodeInfo{
		Name:                 name,
		RaftAddress:          name + ":5890",
		ExternalAPIURL:       "http://" + name + ":3000/",
		ExternalSignalingURL: "ws://" + name + ":5000/signaling",
		Version:              "test",
		License:              License{MaxConnections: 500},
	}
}

func register(name, incarnation string, t int64) RegisterNode {
	return RegisterNode{Info: info(name), Incarnation: incarnation, TimeMicros: t}
}

// applyAll applies cmds in order at indexes 1..n and returns the FSM and the
// last result.
func applyAll(t *testing.T, cmds ...Command) (*FSM, Result) {
	t.Helper()
	f := New()
	var last Result
	for i, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("encode %T: %v", c, err)
		}
		last, err = f.Apply(uint64(i+1), b)
		if err != nil {
			t.Fatalf("apply %T: %v", c, err)
		}
	}
	return f, last
}

func TestApply(t *testing.T) {
	a, b := "a@h1", "b@h2"
	tests := []struct {
		name    string
		cmds    []Command
		wantErr *Error // sentinel for the last command's result, nil for success
		check   func(t *testing.T, s *State, last Result)
	}{
		{
			name: "first registration creates epoch 1 in mode normal",
			cmds: []Command{register(a, "p1", 1000)},
			check: func(t *testing.T, s *State, last Result) {
				n := s.Nodes[a]
				if n.Epoch != 1 || n.Mode != ModeNormal || n.MemberSinceMicros != 1000 || n.RaftAddress != a+":5890" {
					t.Fatalf("node = %+v", n)
				}
				if last.Node == nil || last.Node.Epoch != 1 {
					t.Fatalf("result node = %+v", last.Node)
				}
			},
		},
		{
			name: "repeated registration by the same process keeps the epoch",
			cmds: []Command{register(a, "p1", 1000), register(a, "p1", 2000)},
			check: func(t *testing.T, s *State, _ Result) {
				if n := s.Nodes[a]; n.Epoch != 1 || n.MemberSinceMicros != 1000 {
					t.Fatalf("node = %+v", n)
				}
			},
		},
		{
			name: "registration by a new process bumps the epoch and keeps mode and member_since",
			cmds: []Command{register(a, "p1", 1000), SetMode{Node: a, Mode: ModeBlockNewSession}, register(a, "p2", 5000)},
			check: func(t *testing.T, s *State, _ Result) {
				n := s.Nodes[a]
				if n.Epoch != 2 || n.Mode != ModeBlockNewSession || n.MemberSinceMicros != 1000 || n.Incarnation != "p2" {
					t.Fatalf("node = %+v", n)
				}
			},
		},
		{
			name:    "registration without a name is refused",
			cmds:    []Command{RegisterNode{Incarnation: "p"}},
			wantErr: ErrInvalid,
		},
		{
			name:    "set mode of an unknown node",
			cmds:    []Command{SetMode{Node: a, Mode: ModeNormal}},
			wantErr: ErrNodeNotFound,
		},
		{
			name:    "set mode to initial is refused",
			cmds:    []Command{register(a, "p1", 1), SetMode{Node: a, Mode: ModeInitial}},
			wantErr: ErrInvalid,
		},
		{
			name: "assign an unassigned channel",
			cmds: []Command{register(a, "p1", 1), AssignChannel{Channel: "sora", Node: a, Multistream: true}},
			check: func(t *testing.T, s *State, last Result) {
				ch := s.Channels["sora"]
				want := Channel{ID: "sora", NodeInCharge: a, NodeInChargeEpoch: 1, AssignedIndex: 2, Multistream: true}
				if ch != want || last.Channel == nil || *last.Channel != want {
					t.Fatalf("channel = %+v, result = %+v", ch, last.Channel)
				}
				if s.Stale(ch) {
					t.Fatal("fresh assignment is stale")
				}
			},
		},
		{
			name:    "assign with an expectation on an unassigned channel conflicts",
			cmds:    []Command{register(a, "p1", 1), AssignChannel{Channel: "sora", Node: a, ExpectedNode: b, ExpectedEpoch: 1}},
			wantErr: ErrConflict,
		},
		{
			name: "second unconditional assign conflicts and reports the holder",
			cmds: []Command{
				register(a, "p1", 1), register(b, "p1", 1),
				AssignChannel{Channel: "sora", Node: a},
				AssignChannel{Channel: "sora", Node: b},
			},
			wantErr: ErrConflict,
			check: func(t *testing.T, s *State, last Result) {
				if last.Channel == nil || last.Channel.NodeInCharge != a {
					t.Fatalf("conflict result = %+v", last.Channel)
				}
				if last.Node == nil || last.Node.Name != a || last.Node.Epoch != 1 {
					t.Fatalf("conflict result does not carry the holder's record: %+v", last.Node)
				}
				if s.Channels["sora"].NodeInCharge != a {
					t.Fatal("holder changed on conflict")
				}
			},
		},
		{
			name: "restart makes the channel stale and a CAS on the old epoch takes it over",
			cmds: []Command{
				register(a, "p1", 1), register(b, "p1", 1),
				AssignChannel{Channel: "sora", Node: a},
				register(a, "p2", 9),
				AssignChannel{Channel: "sora", Node: b, ExpectedNode: a, ExpectedEpoch: 1},
			},
			check: func(t *testing.T, s *State, _ Result) {
				ch := s.Channels["sora"]
				if ch.NodeInCharge != b || ch.NodeInChargeEpoch != 1 || ch.AssignedIndex != 5 {
					t.Fatalf("channel = %+v", ch)
				}
			},
		},
		{
			name:    "assign to an unknown node",
			cmds:    []Command{AssignChannel{Channel: "sora", Node: a}},
			wantErr: ErrNodeNotFound,
		},
		{
			name:    "assign to a node in block_new_session",
			cmds:    []Command{register(a, "p1", 1), SetMode{Node: a, Mode: ModeBlockNewSession}, AssignChannel{Channel: "sora", Node: a}},
			wantErr: ErrNodeNotNormal,
		},
		{
			name:    "assign an empty channel id",
			cmds:    []Command{register(a, "p1", 1), AssignChannel{Node: a}},
			wantErr: ErrInvalid,
		},
		{
			name: "release by the holder",
			cmds: []Command{register(a, "p1", 1), AssignChannel{Channel: "sora", Node: a}, ReleaseChannel{Channel: "sora", Node: a, Epoch: 1}},
			check: func(t *testing.T, s *State, _ Result) {
				if _, ok := s.Channels["sora"]; ok {
					t.Fatal("channel still assigned")
				}
			},
		},
		{
			name:    "release by an old epoch conflicts",
			cmds:    []Command{register(a, "p1", 1), AssignChannel{Channel: "sora", Node: a}, ReleaseChannel{Channel: "sora", Node: a, Epoch: 7}},
			wantErr: ErrConflict,
		},
		{
			name: "release of an unknown channel is a no-op",
			cmds: []Command{ReleaseChannel{Channel: "nope", Node: a, Epoch: 1}},
		},
		{
			name: "purge removes the node and frees its channels only",
			cmds: []Command{
				register(a, "p1", 1), register(b, "p1", 1),
				AssignChannel{Channel: "x", Node: a}, AssignChannel{Channel: "y", Node: b}, AssignChannel{Channel: "z", Node: a},
				PurgeNode{Node: a},
			},
			check: func(t *testing.T, s *State, _ Result) {
				if _, ok := s.Nodes[a]; ok {
					t.Fatal("purged node still present")
				}
				if len(s.Channels) != 1 || s.Channels["y"].NodeInCharge != b {
					t.Fatalf("channels = %+v", s.Channels)
				}
			},
		},
		{
			name: "purge of an unknown node is a no-op",
			cmds: []Command{register(a, "p1", 1), PurgeNode{Node: b}},
			check: func(t *testing.T, s *State, _ Result) {
				if len(s.Nodes) != 1 {
					t.Fatalf("nodes = %+v", s.Nodes)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, last := applyAll(t, tt.cmds...)
			switch {
			case tt.wantErr == nil && last.Err != nil:
				t.Fatalf("unexpected error %v", last.Err)
			case tt.wantErr != nil && !errors.Is(last.Err, tt.wantErr):
				t.Fatalf("error = %v, want code %s", last.Err, tt.wantErr.Code)
			}
			if last.Index != uint64(len(tt.cmds)) || f.AppliedIndex() != uint64(len(tt.cmds)) {
				t.Fatalf("index = %d/%d, want %d", last.Index, f.AppliedIndex(), len(tt.cmds))
			}
			if tt.check != nil {
				tt.check(t, f.State(), last)
			}
		})
	}
}

func TestStaleWhenOwnerGone(t *testing.T) {
	f, _ := applyAll(t, register("a@h", "p1", 1), AssignChannel{Channel: "c", Node: "a@h"})
	if _, stale, ok := f.Channel("c"); !ok || stale {
		t.Fatalf("ok=%v stale=%v, want a live assignment", ok, stale)
	}
	s := f.State()
	delete(s.Nodes, "a@h") // as if purged without freeing (a snapshot from an older build)
	if !s.Stale(s.Channels["c"]) {
		t.Fatal("channel of a missing node is not stale")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	cmds := []Command{
		register("a@h", "p", 42),
		SetMode{Node: "a@h", Mode: ModeBlockNewConnection},
		AssignChannel{Channel: "c", Node: "a@h", ExpectedNode: "b@h", ExpectedEpoch: 3, Multistream: true, Spotlight: true},
		ReleaseChannel{Channel: "c", Node: "a@h", Epoch: 2},
		PurgeNode{Node: "a@h"},
	}
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != EncodingVersion || CommandType(b[1]) != c.Type() {
			t.Fatalf("%T header = %v", c, b[:2])
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %T: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip: got %#v, want %#v", got, c)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrCorruptCommand},
		{"header only version", []byte{EncodingVersion}, ErrCorruptCommand},
		{"future encoding version", []byte{9, byte(TypeSetMode), '{', '}'}, ErrCorruptCommand},
		{"unknown type", []byte{EncodingVersion, 77, '{', '}'}, ErrUnknownCommand},
		{"bad payload", []byte{EncodingVersion, byte(TypeSetMode), '['}, ErrCorruptCommand},
		{"wrong payload type", append([]byte{EncodingVersion, byte(TypeSetMode)}, `{"node":1}`...), ErrCorruptCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestApplyUnknownCommandFailsLoudly(t *testing.T) {
	f, _ := applyAll(t, register("a@h", "p", 1))
	before := f.State()
	if _, err := f.Apply(2, []byte{EncodingVersion, 0x33, '{', '}'}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("Apply(unknown) = %v, want ErrUnknownCommand", err)
	}
	if !reflect.DeepEqual(before, f.State()) {
		t.Fatal("unknown command changed the state")
	}
}

func TestApplySkipsIgnorableUnknownCommand(t *testing.T) {
	f, _ := applyAll(t, register("a@h", "p", 1))
	before := f.State()
	res, err := f.Apply(2, []byte{EncodingVersion, byte(IgnorableFlag | 0x33), '{', '}'})
	if err != nil || res.Err != nil {
		t.Fatalf("Apply(ignorable) = %+v, %v", res, err)
	}
	if !reflect.DeepEqual(before, f.State()) || f.AppliedIndex() != 2 {
		t.Fatal("ignorable command changed the state or did not advance the index")
	}
}

// randomCommand draws from a small universe of names so that commands collide
// often: conflicts, re-registrations, purges of owners.
func randomCommand(r *rand.Rand) Command {
	nodes := []string{"a@h", "b@h", "c@h", "d@h"}
	chans := []string{"sora", "akane", "kohaku", "hisui", "zakuro"}
	modes := []Mode{ModeNormal, ModeBlockNewSession, ModeBlockNewConnection, "bogus"}
	node := nodes[r.IntN(len(nodes))]
	ch := chans[r.IntN(len(chans))]
	switch r.IntN(7) {
	case 0:
		return register(node, fmt.Sprintf("p%d", r.IntN(3)), r.Int64N(1e12))
	case 1:
		return SetMode{Node: node, Mode: modes[r.IntN(len(modes))]}
	case 2, 3:
		c := AssignChannel{Channel: ch, Node: node, Multistream: r.IntN(2) == 0}
		if r.IntN(2) == 0 {
			c.ExpectedNode = nodes[r.IntN(len(nodes))]
			c.ExpectedEpoch = uint64(r.IntN(3))
		}
		return c
	case 4:
		return ReleaseChannel{Channel: ch, Node: node, Epoch: uint64(r.IntN(3))}
	case 5:
		sessions := []string{"", "s1", "s2"}
		return SetChannelSession{Channel: ch, Node: node, Epoch: uint64(r.IntN(3)), SessionID: sessions[r.IntN(3)],
			CreatedMicros: r.Int64N(1e12), ExpectedSessionID: sessions[r.IntN(3)]}
	default:
		return PurgeNode{Node: node}
	}
}

func encodeState(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	s, index := f.Snapshot()
	if err := EncodeSnapshot(&buf, s, index); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPropertyReplicasConverge(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		f1, f2 := New(), New()
		for i := 1; i <= 300; i++ {
			b, err := Encode(randomCommand(r))
			if err != nil {
				t.Fatal(err)
			}
			r1, err1 := f1.Apply(uint64(i), b)
			r2, err2 := f2.Apply(uint64(i), b)
			if err1 != nil || err2 != nil {
				t.Fatalf("seed %d: apply: %v, %v", seed, err1, err2)
			}
			if !reflect.DeepEqual(r1, r2) {
				t.Fatalf("seed %d step %d: results differ: %+v vs %+v", seed, i, r1, r2)
			}
		}
		if !reflect.DeepEqual(f1.State(), f2.State()) {
			t.Fatalf("seed %d: states differ", seed)
		}
		if !bytes.Equal(encodeState(t, f1), encodeState(t, f2)) {
			t.Fatalf("seed %d: snapshots differ", seed)
		}
	}
}

func TestPropertySnapshotRestore(t *testing.T) {
	for seed := uint64(0); seed < 100; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		orig := New()
		var restored *FSM
		cut := 1 + r.IntN(200)
		for i := 1; i <= 250; i++ {
			b, _ := Encode(randomCommand(r))
			if _, err := orig.Apply(uint64(i), b); err != nil {
				t.Fatal(err)
			}
			if restored != nil {
				if _, err := restored.Apply(uint64(i), b); err != nil {
					t.Fatal(err)
				}
			}
			if i == cut {
				s, index, err := DecodeSnapshot(bytes.NewReader(encodeState(t, orig)))
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if !reflect.DeepEqual(s, orig.State()) || index != uint64(i) {
					t.Fatalf("seed %d: restored state (index %d) differs from the saved one (index %d)", seed, index, i)
				}
				restored = New()
				restored.Restore(s, index)
			}
		}
		if !reflect.DeepEqual(orig.State(), restored.State()) || orig.AppliedIndex() != restored.AppliedIndex() {
			t.Fatalf("seed %d: snapshot at %d then replay diverged", seed, cut)
		}
	}
}

func TestDecodeSnapshotRejects(t *testing.T) {
	const head = `{"format":"sorad-fsm-snapshot","version":2,"min_reader":2,"index":1}` + "\n"
	for name, in := range map[string]string{
		"not json":                    "{",
		"no header":                   `{"version":3,"nodes":[],"channels":[]}`,
		"another format":              `{"format":"something-else","version":2,"min_reader":1}`,
		"v1 duplicate node":           `{"version":1,"nodes":[{"name":"a"},{"name":"a"}],"channels":[]}`,
		"v1 nameless node":            `{"version":1,"nodes":[{"name":""}],"channels":[]}`,
		"v1 duplicate chan":           `{"version":1,"nodes":[],"channels":[{"channel_id":"x"},{"channel_id":"x"}]}`,
		"v1 wrong field type":         `{"version":"1"}`,
		"needs a newer reader":        `{"format":"sorad-fsm-snapshot","version":5,"min_reader":3,"index":1}` + "\n" + `{"record":"end","records":0}`,
		"truncated: no end":           head + `{"record":"node","data":{"name":"a"}}`,
		"end counts other records":    head + `{"record":"node","data":{"name":"a"}}` + "\n" + `{"record":"end","records":2}`,
		"required unknown record":     head + `{"record":"quota","required":true,"data":{}}` + "\n" + `{"record":"end","records":1}`,
		"duplicate node":              head + `{"record":"node","data":{"name":"a"}}` + "\n" + `{"record":"node","data":{"name":"a"}}` + "\n" + `{"record":"end","records":2}`,
		"channel without an id":       head + `{"record":"channel","data":{"channel_id":""}}` + "\n" + `{"record":"end","records":1}`,
		"node data of the wrong type": head + `{"record":"node","data":[1]}` + "\n" + `{"record":"end","records":1}`,
	} {
		if _, _, err := DecodeSnapshot(bytes.NewReader([]byte(in))); err == nil {
			t.Errorf("%s: DecodeSnapshot accepted %s", name, in)
		}
	}
}

// TestDecodeSnapshotSkipsWhatANewerVersionAdded: a snapshot of a later
// format that older readers may read (min_reader 2), with a record type
// and fields this version does not know, decodes to what it does know.
func TestDecodeSnapshotSkipsWhatANewerVersionAdded(t *testing.T) {
	in := `{"format":"sorad-fsm-snapshot","version":3,"min_reader":2,"index":9,"written_by":"sorad 2027.1"}
{"record":"node","data":{"name":"a","epoch":2,"mode":"normal","rack":"r1"}}
{"record":"quota","data":{"node":"a","max":5}}
{"record":"channel","data":{"channel_id":"x","node_in_charge":"a","node_in_charge_epoch":2,"region":"eu"},"checksum":"ab"}
{"record":"end","records":3}
`
	s, index, err := DecodeSnapshot(bytes.NewReader([]byte(in)))
	if err != nil {
		t.Fatal(err)
	}
	want := NewState()
	want.Nodes["a"] = Node{NodeInfo: NodeInfo{Name: "a"}, Epoch: 2, Mode: ModeNormal}
	want.Channels["x"] = Channel{ID: "x", NodeInCharge: "a", NodeInChargeEpoch: 2}
	if index != 9 || !reflect.DeepEqual(s, want) {
		t.Fatalf("got index %d %+v, want 9 %+v", index, s, want)
	}
}

// TestConcurrentAssignOneWinner has many proposers race for one channel. Raft
// serialises their commands in some order; whatever the order, exactly one
// assignment wins and every loser learns the winner.
func TestConcurrentAssignOneWinner(t *testing.T) {
	const proposers = 64
	for round := 0; round < 20; round++ {
		f := New()
		var idx uint64
		apply := func(c Command) Result {
			b, _ := Encode(c)
			idx++
			res, err := f.Apply(idx, b)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		nodes := make([]string, 8)
		for i := range nodes {
			nodes[i] = fmt.Sprintf("n%d@h", i)
			apply(register(nodes[i], "p", 1))
		}
		// The log: proposers send concurrently, one applier serialises.
		log := make(chan AssignChannel)
		results := make(chan Result, proposers)
		var wg sync.WaitGroup
		for i := 0; i < proposers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				log <- AssignChannel{Channel: "sora", Node: nodes[i%len(nodes)]}
			}()
		}
		go func() { wg.Wait(); close(log) }()
		for c := range log {
			results <- apply(c)
		}
		close(results)
		winners, owner := 0, f.State().Channels["sora"].NodeInCharge
		for res := range results {
			switch {
			case res.Err == nil:
				winners++
			case !errors.Is(res.Err, ErrConflict):
				t.Fatalf("loser got %v, want a conflict", res.Err)
			case res.Channel == nil || res.Channel.NodeInCharge != owner:
				t.Fatalf("loser was told %+v, owner is %s", res.Channel, owner)
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, winners)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range []Command{register("a@h", "p", 1), AssignChannel{Channel: "c", Node: "a@h"}, PurgeNode{Node: "x"}} {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		fm := New()
		res, err := fm.Apply(1, b) // must never panic
		if err == nil && res.Index != 1 {
			t.Fatalf("index = %d", res.Index)
		}
	})
}

// FuzzDecodeSnapshot: a snapshot read from disk or sent by a leader never
// makes the decoder panic, and what it accepts encodes back to a snapshot
// it reads as the same state.
func FuzzDecodeSnapshot(f *testing.F) {
	s := NewState()
	s.Nodes["a@h"] = Node{NodeInfo: NodeInfo{Name: "a@h"}, Epoch: 2, Mode: ModeNormal}
	s.Channels["c"] = Channel{ID: "c", NodeInCharge: "a@h", NodeInChargeEpoch: 2}
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, s, 7); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"index":1,"nodes":null,"channels":null}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, index, err := DecodeSnapshot(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := EncodeSnapshot(&out, st, index); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, index2, err := DecodeSnapshot(&out)
		if err != nil || index2 != index || !reflect.DeepEqual(again, st) {
			t.Fatalf("round trip of %q: %v, index %d/%d", b, err, index, index2)
		}
	})
}

func TestChannelsHeldBy(t *testing.T) {
	f, _ := applyAll(t,
		register("a@h", "p1", 1), register("b@h", "p2", 2),
		AssignChannel{Channel: "c1", Node: "a@h"}, AssignChannel{Channel: "c2", Node: "b@h"}, AssignChannel{Channel: "c3", Node: "a@h"},
		register("b@h", "p3", 3), // b restarts: epoch 2, its channel is stale
	)
	tests := []struct {
		node  string
		epoch uint64
		want  []string
	}{
		{"a@h", 1, []string{"c1", "c3"}},
		{"a@h", 2, nil},
		{"b@h", 1, []string{"c2"}},
		{"b@h", 2, nil},
		{"x@h", 1, nil},
	}
	for _, tt := range tests {
		got := f.ChannelsHeldBy(tt.node, tt.epoch)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("ChannelsHeldBy(%s, %d) = %v, want %v", tt.node, tt.epoch, got, tt.want)
		}
	}
}

// A recorded session is reported as ended by the command that ends it
// without its node (a takeover, a purge), once; its node forgets it when
// it ends there, and a late forget cannot erase the next session.
func TestChannelSessions(t *testing.T) {
	a, b := "a@h", "b@h"
	rec := func(session, expected string) SetChannelSession {
		return SetChannelSession{Channel: "c", Node: a, Epoch: 1, SessionID: session, CreatedMicros: 7, ExpectedSessionID: expected}
	}
	base := []Command{register(a, "p1", 1), register(b, "p1", 1), AssignChannel{Channel: "c", Node: a}}
	tests := []struct {
		name      string
		cmds      []Command
		wantErr   *Error
		session   string   // recorded for c afterwards ("" none, or c gone)
		lastEnded []string // sessions the last command reports ended
	}{
		{"recorded", []Command{rec("s1", "")}, nil, "s1", nil},
		{"only by the node in charge", []Command{SetChannelSession{Channel: "c", Node: b, Epoch: 1, SessionID: "s1"}}, ErrConflict, "", nil},
		{"forgotten by its node", []Command{rec("s1", ""), rec("", "s1")}, nil, "", nil},
		{"a late forget keeps the next session", []Command{rec("s1", ""), rec("s2", ""), rec("", "s1")}, ErrConflict, "s2", nil},
		{"a takeover ends it", []Command{rec("s1", ""), AssignChannel{Channel: "c", Node: b, ExpectedNode: a, ExpectedEpoch: 1}}, nil, "", []string{"s1"}},
		{"the holder's restart and a new assignment end it", []Command{rec("s1", ""), register(a, "p2", 2), AssignChannel{Channel: "c", Node: a, ExpectedNode: a, ExpectedEpoch: 1}}, nil, "", []string{"s1"}},
		{"a purge ends it", []Command{rec("s1", ""), PurgeNode{Node: a}}, nil, "", []string{"s1"}},
		{"a release by its node reports nothing", []Command{rec("s1", ""), ReleaseChannel{Channel: "c", Node: a, Epoch: 1}}, nil, "", nil},
		{"its node's next process forgets it at the old epoch", []Command{rec("s1", ""), register(a, "p2", 2), rec("", "s1")}, nil, "", nil},
		{"a takeover after that forget reports nothing", []Command{rec("s1", ""), register(a, "p2", 2), rec("", "s1"), AssignChannel{Channel: "c", Node: b, ExpectedNode: a, ExpectedEpoch: 1}}, nil, "", nil},
		{"that forget after a takeover is refused", []Command{rec("s1", ""), register(a, "p2", 2), AssignChannel{Channel: "c", Node: b, ExpectedNode: a, ExpectedEpoch: 1}, rec("", "s1")}, ErrConflict, "", nil},
		{"that forget after a purge is refused", []Command{rec("s1", ""), PurgeNode{Node: a}, rec("", "s1")}, ErrConflict, "", nil},
		{"a forgotten session is not reported", []Command{rec("s1", ""), rec("", "s1"), AssignChannel{Channel: "c", Node: b, ExpectedNode: a, ExpectedEpoch: 1}}, nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, last := applyAll(t, append(slices.Clone(base), tt.cmds...)...)
			if (tt.wantErr == nil) != (last.Err == nil) || tt.wantErr != nil && !errors.Is(last.Err, tt.wantErr) {
				t.Fatalf("error %v, want %v", last.Err, tt.wantErr)
			}
			if ch := f.State().Channels["c"]; ch.SessionID != tt.session {
				t.Errorf("recorded session %q, want %q", ch.SessionID, tt.session)
			}
			var ended []string
			for _, ch := range last.Ended {
				ended = append(ended, ch.SessionID)
				if ch.SessionCreatedMicros != 7 || ch.NodeInCharge != a {
					t.Errorf("ended record %+v", ch)
				}
			}
			if !slices.Equal(ended, tt.lastEnded) {
				t.Errorf("ended %v, want %v", ended, tt.lastEnded)
			}
		})
	}
}

// The sessions recorded for earlier processes of a node are those of the
// channels it holds at an older epoch; the current process's are not.
func TestRecordedSessionsBefore(t *testing.T) {
	a, b := "a@h", "b@h"
	f, _ := applyAll(t,
		register(a, "p1", 1), register(b, "p1", 1),
		AssignChannel{Channel: "old2", Node: a}, AssignChannel{Channel: "old1", Node: a}, AssignChannel{Channel: "bare", Node: a},
		AssignChannel{Channel: "other", Node: b},
		SetChannelSession{Channel: "old1", Node: a, Epoch: 1, SessionID: "s1"},
		SetChannelSession{Channel: "old2", Node: a, Epoch: 1, SessionID: "s2"},
		SetChannelSession{Channel: "other", Node: b, Epoch: 1, SessionID: "s3"},
		register(a, "p2", 2),
		AssignChannel{Channel: "new", Node: a},
		SetChannelSession{Channel: "new", Node: a, Epoch: 2, SessionID: "s4"},
	)
	var got []string
	for _, ch := range f.RecordedSessionsBefore(a, 2) {
		got = append(got, ch.ID+"/"+ch.SessionID)
	}
	if want := []string{"old1/s1", "old2/s2"}; !slices.Equal(got, want) {
		t.Fatalf("recorded sessions of a before epoch 2: %v, want %v", got, want)
	}
	if got := f.RecordedSessionsBefore(a, 1); len(got) != 0 {
		t.Fatalf("recorded sessions of a before epoch 1: %v, want none", got)
	}
}
