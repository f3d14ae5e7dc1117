package fsm

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The compatibility rules of doc.go, tested: every snapshot format and
// command encoding this package ever wrote is kept in testdata as written
// by the version that introduced it, and must still decode to the same
// state and commands. -update writes the current version's files (never an
// earlier version's).
var update = flag.Bool("update", false, "write the golden files of the current snapshot format and command encoding")

// goldenIndex is the Raft index the golden snapshots were taken at.
const goldenIndex = 42

// goldenState is the state every golden snapshot holds: every field of
// every record set, modes of each kind, channels with and without a
// session.
func goldenState() *State {
	s := NewState()
	for i, mode := range []Mode{ModeNormal, ModeBlockNewSession, ModeBlockNewConnection} {
		name := fmt.Sprintf("node%d@127.0.0.%d", i+1, i+1)
		s.Nodes[name] = Node{
			NodeInfo: NodeInfo{
				Name: name, RaftAddress: fmt.Sprintf("127.0.0.%d:5690", i+1),
				ExternalAPIURL:       fmt.Sprintf("http://127.0.0.%d:3000/", i+1),
				ExternalSignalingURL: fmt.Sprintf("ws://127.0.0.%d:5000/signaling", i+1),
				Version:              "2026.12.0",
				License:              License{MaxConnections: 100 * (i + 1), MaxNodes: 3, SerialCode: "SORAD-GOLDEN", Type: "open"},
			},
			Epoch: uint64(i + 1), Incarnation: fmt.Sprintf("inc-%d", i+1),
			MemberSinceMicros: 1764547200000000 + int64(i), Mode: mode,
		}
	}
	s.Channels["room-a"] = Channel{ID: "room-a", NodeInCharge: "node1@127.0.0.1", NodeInChargeEpoch: 1, AssignedIndex: 10, Multistream: true,
		SessionID: "4PW7D9KFPBJZKA2VVZJ010JNFN", SessionCreatedMicros: 1764547300000000}
	s.Channels["room-b"] = Channel{ID: "room-b", NodeInCharge: "node2@127.0.0.2", NodeInChargeEpoch: 2, AssignedIndex: 20, Spotlight: true}
	s.Channels["room-c"] = Channel{ID: "room-c", NodeInCharge: "gone@127.0.0.9", NodeInChargeEpoch: 3, AssignedIndex: 30}
	return s
}

// goldenCommands are one command of each type, every field set.
func goldenCommands() []Command {
	return []Command{
		RegisterNode{Info: goldenState().Nodes["node1@127.0.0.1"].NodeInfo, Incarnation: "inc-1", TimeMicros: 1764547200000000},
		SetMode{Node: "node2@127.0.0.2", Mode: ModeBlockNewSession},
		AssignChannel{Channel: "room-a", Node: "node1@127.0.0.1", ExpectedNode: "node3@127.0.0.3", ExpectedEpoch: 3, Multistream: true, Spotlight: true},
		ReleaseChannel{Channel: "room-b", Node: "node2@127.0.0.2", Epoch: 2},
		PurgeNode{Node: "gone@127.0.0.9"},
		SetChannelSession{Channel: "room-a", Node: "node1@127.0.0.1", Epoch: 1, SessionID: "4PW7D9KFPBJZKA2VVZJ010JNFN", CreatedMicros: 1764547300000000, ExpectedSessionID: "0ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
	}
}

func snapshotGolden(version int) string {
	return filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.golden", version))
}

func commandsGolden(version byte) string {
	return filepath.Join("testdata", fmt.Sprintf("commands-v%d.golden", version))
}

// TestSnapshotGoldenIsCurrent: the snapshot format is what the current
// version's golden file holds. A change of format fails here: give it a
// new version, keep the old file, and make the decoder read both.
func TestSnapshotGoldenIsCurrent(t *testing.T) {
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, goldenState(), goldenIndex); err != nil {
		t.Fatal(err)
	}
	path := snapshotGolden(snapshotVersion)
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./fsm -run Golden -update to write the current format's file)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("the snapshot format of version %d changed; see doc.go.\ngot:\n%s\nwant (%s):\n%s", snapshotVersion, buf.Bytes(), path, want)
	}
}

// TestEveryEarlierSnapshotFormatDecodes: each golden snapshot, as the
// version that wrote it wrote it, decodes to the golden state.
func TestEveryEarlierSnapshotFormatDecodes(t *testing.T) {
	for v := 1; v <= snapshotVersion; v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			b, err := os.ReadFile(snapshotGolden(v))
			if err != nil {
				t.Fatalf("every format ever written keeps its golden file: %v", err)
			}
			s, index, err := DecodeSnapshot(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if index != goldenIndex || !reflect.DeepEqual(s, goldenState()) {
				t.Fatalf("decoded index %d state %+v, want %d %+v", index, s, goldenIndex, goldenState())
			}
		})
	}
}

// TestCommandEncodingGolden: every command encodes to the bytes its
// golden file holds, and every earlier encoding decodes to the same
// command.
func TestCommandEncodingGolden(t *testing.T) {
	var cur strings.Builder
	for _, c := range goldenCommands() {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cur, "%02x %02x %s\n", b[0], b[1], b[2:])
	}
	path := commandsGolden(EncodingVersion)
	if *update {
		if err := os.WriteFile(path, []byte(cur.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for v := byte(1); v <= EncodingVersion; v++ {
		raw, err := os.ReadFile(commandsGolden(v))
		if err != nil {
			t.Fatalf("every command encoding ever written keeps its golden file: %v", err)
		}
		if v == EncodingVersion && string(raw) != cur.String() {
			t.Fatalf("the encoding of commands changed; see doc.go.\ngot:\n%s\nwant (%s):\n%s", cur.String(), commandsGolden(v), raw)
		}
		lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
		want := goldenCommands()
		if len(lines) != len(want) {
			t.Fatalf("%s holds %d commands, want %d", commandsGolden(v), len(lines), len(want))
		}
		for i, line := range lines {
			// "<encoding version> <type> <payload>", the bytes in hex.
			head, payload, ok := strings.Cut(line[min(len(line), 3):], " ")
			b, err := hex.DecodeString(line[:min(len(line), 2)] + head)
			if !ok || err != nil || len(b) != 2 {
				t.Fatalf("%s line %d: %q is not <version> <type> <payload>", commandsGolden(v), i+1, line)
			}
			b = append(b, payload...)
			got, err := Decode(b)
			if err != nil || !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("v%d command %d decodes to %#v, %v; want %#v", v, i, got, err, want[i])
			}
		}
	}
}

// TestEveryCommandTypeIsRegisteredOnce: each command type has one entry,
// named, that decodes its own payload; only the types documented as
// ignorable carry IgnorableFlag.
func TestEveryCommandTypeIsRegisteredOnce(t *testing.T) {
	ignorable := map[CommandType]bool{TypeSetChannelSession: true}
	names := map[string]CommandType{}
	for _, c := range goldenCommands() {
		kind, ok := commandKinds[c.Type()]
		if !ok || kind.name == "" {
			t.Fatalf("%T (type %d) is not registered", c, c.Type())
		}
		if other, dup := names[kind.name]; dup {
			t.Fatalf("types %d and %d share the name %q", other, c.Type(), kind.name)
		}
		names[kind.name] = c.Type()
		if got := c.Type()&IgnorableFlag != 0; got != ignorable[c.Type()] {
			t.Errorf("%s: ignorable %v, want %v", kind.name, got, ignorable[c.Type()])
		}
	}
	if len(commandKinds) != len(goldenCommands()) {
		t.Fatalf("%d kinds registered, %d golden commands: give every type a golden command", len(commandKinds), len(goldenCommands()))
	}
}

// TestCommandsIgnoreFieldsTheyDoNotKnow: a command from a newer version
// with a field this one does not know applies as if the field were absent
// (doc.go: a field may be added only where that is right).
func TestCommandsIgnoreFieldsTheyDoNotKnow(t *testing.T) {
	got, err := Decode(append([]byte{EncodingVersion, byte(TypeSetMode)}, `{"node":"a","mode":"normal","reason":"upgrade"}`...))
	if err != nil || !reflect.DeepEqual(got, SetMode{Node: "a", Mode: ModeNormal}) {
		t.Fatalf("got %#v, %v", got, err)
	}
}
