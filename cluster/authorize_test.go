package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
)

const strangerSecret = "a secret of some other cluster, 32+ bytes long"

// clientAs speaks the internal protocol with the credentials ts (nil: none,
// as on an unauthenticated port).
func clientAs(t *testing.T, ts *trust.Store) *peerClient {
	t.Helper()
	p := newPeerClient(&dialer{trust: ts}, 3*time.Second)
	t.Cleanup(p.close)
	return p
}

func applyAs(t *testing.T, p *peerClient, address string, cmd fsm.Command) (fsm.Result, error) {
	t.Helper()
	encoded, err := fsm.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return p.apply(ctxT(t), address, encoded)
}

func leaderOf(t *testing.T, nodes []*testNode) *testNode {
	t.Helper()
	var leader *testNode
	waitFor(t, 5*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if inst := n.current(); inst != nil && inst.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// TestClusterPortRefusesOutsiders replays, against a cluster with
// authentication on, the attacks of a machine on the same network that
// does not hold the cluster's credentials.
func TestClusterPortRefusesOutsiders(t *testing.T) {
	nodes := formCluster(t, 3)
	leader := leaderOf(t, nodes)
	addr := leader.selfAddress()
	stranger := memberTrust(t, "attacker@127.0.9.9", strangerSecret)
	modeBefore := leader.Mode()

	for _, tc := range []struct {
		name string
		ts   *trust.Store
	}{{"plain connection", nil}, {"another cluster's certificate", stranger}} {
		t.Run(tc.name, func(t *testing.T) {
			p := clientAs(t, tc.ts)
			if _, err := applyAs(t, p, addr, fsm.SetMode{Node: leader.NodeName(), Mode: fsm.ModeBlockNewConnection}); err == nil {
				t.Fatal("a forged apply was answered")
			}
			if _, err := applyAs(t, p, addr, fsm.PurgeNode{Node: nodes[2].NodeName()}); err == nil {
				t.Fatal("a forged purge was answered")
			}
			join, _ := json.Marshal(joinRequest{Register: fsm.RegisterNode{Info: fsm.NodeInfo{Name: "attacker@127.0.9.9", RaftAddress: "127.0.9.9:25890"}, Incarnation: "x"}})
			if _, _, err := p.post(ctxT(t), addr, pathJoin, join, false); err == nil {
				t.Fatal("a forged join was answered")
			}
			var st nodeStatus
			if err := p.get(ctxT(t), addr, pathStatus, &st); err == nil {
				t.Fatal("a probe was answered")
			}
		})
	}

	t.Run("forged AppendEntries with the highest term", func(t *testing.T) {
		for _, ts := range []*trust.Store{nil, stranger} {
			layer := newRaftStreamLayer(advertiseAddr("127.0.9.9:1"), "127.0.9.9:1", &dialer{trust: ts})
			tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 1, Timeout: 2 * time.Second})
			var resp raft.AppendEntriesResponse
			err := tr.AppendEntries(raft.ServerID(leader.NodeName()), raft.ServerAddress(addr), &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ID: []byte("attacker@127.0.9.9"), Addr: []byte("127.0.9.9:1")},
				Term:      math.MaxUint64,
			}, &resp)
			tr.Close()
			if err == nil {
				t.Fatalf("the forged AppendEntries was answered: %+v", resp)
			}
		}
		if term := leader.current().raft.Stats()["term"]; term == fmt.Sprint(uint64(math.MaxUint64)) {
			t.Fatalf("the leader took the forged term %s", term)
		}
	})

	// The cluster is as it was and keeps taking writes.
	if got := leader.Mode(); got != modeBefore {
		t.Fatalf("leader mode %s, was %s", got, modeBefore)
	}
	if err := nodes[1].SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatalf("a member's write after the attacks: %v", err)
	}
	want := []string{nodes[0].NodeName(), nodes[1].NodeName(), nodes[2].NodeName()}
	slices.Sort(want)
	if got := registeredNames(leader); !slices.Equal(got, want) {
		t.Fatalf("members %v, want %v", got, want)
	}
}

// TestMembersActOnlyForThemselves checks what a holder of the cluster's
// credentials may do on the internal protocol beyond what the public API
// allows.
func TestMembersActOnlyForThemselves(t *testing.T) {
	nodes := formCluster(t, 3)
	leader := leaderOf(t, nodes)
	var follower, other *testNode
	for _, n := range nodes {
		switch {
		case n == leader:
		case follower == nil:
			follower = n
		default:
			other = n
		}
	}
	acquireOnTie(t, other, "live-channel")
	asFollower := clientAs(t, memberTrust(t, follower.NodeName(), testSecret))
	asOutsider := clientAs(t, memberTrust(t, "outsider@127.0.9.8", testSecret))
	otherRec := other.record(other.NodeName())

	tests := []struct {
		name     string
		p        *peerClient
		via      *testNode
		cmd      fsm.Command
		wantType string
	}{
		{"set another node's mode", asFollower, leader, fsm.SetMode{Node: other.NodeName(), Mode: fsm.ModeBlockNewConnection}, TypeNotMember},
		{"set another node's mode through a follower", asFollower, other, fsm.SetMode{Node: other.NodeName(), Mode: fsm.ModeBlockNewConnection}, TypeNotMember},
		{"purge a live node", asFollower, leader, fsm.PurgeNode{Node: other.NodeName()}, TypeInvalidCommand},
		{"release another node's channel", asFollower, leader, fsm.ReleaseChannel{Channel: "live-channel", Node: other.NodeName(), Epoch: otherRec.Epoch}, TypeNotMember},
		{"move a live channel", asFollower, leader, fsm.AssignChannel{Channel: "live-channel", Node: follower.NodeName(), ExpectedNode: other.NodeName(), ExpectedEpoch: otherRec.Epoch}, TypeNodeIsAlive},
		{"register as another node", asFollower, leader, fsm.RegisterNode{Info: fsm.NodeInfo{Name: other.NodeName()}, Incarnation: "forged"}, TypeNotMember},
		{"a non-member applies anything", asOutsider, leader, fsm.AssignChannel{Channel: "new", Node: other.NodeName()}, TypeNodeNotMember},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := applyAs(t, tt.p, tt.via.selfAddress(), tt.cmd)
			if errType(err) != tt.wantType {
				t.Fatalf("apply = %+v, %v; want %s", res, err, tt.wantType)
			}
		})
	}

	t.Run("a non-member joins only as itself, at its own address", func(t *testing.T) {
		for _, reg := range []fsm.RegisterNode{
			{Info: fsm.NodeInfo{Name: "victim@127.0.9.7", RaftAddress: "127.0.9.7:25890"}},
			{Info: fsm.NodeInfo{Name: "outsider@127.0.9.8", RaftAddress: "127.0.9.99:25890"}},
		} {
			body, _ := json.Marshal(joinRequest{Register: reg})
			if _, _, err := asOutsider.post(ctxT(t), leader.selfAddress(), pathJoin, body, false); errType(err) != TypeNotMember && errType(err) != TypeInvalidNodeName {
				t.Fatalf("join as %+v: %v", reg.Info, err)
			}
		}
	})

	t.Run("a forwarded mark from a non-member is not trusted", func(t *testing.T) {
		body, _ := json.Marshal(joinRequest{Register: fsm.RegisterNode{Info: fsm.NodeInfo{Name: "victim@127.0.9.7", RaftAddress: "127.0.9.7:25890"}}})
		if _, _, err := asOutsider.post(ctxT(t), leader.selfAddress(), pathJoin, body, true); errType(err) != TypeNotMember {
			t.Fatalf("join marked forwarded: %v", err)
		}
	})

	t.Run("a purge through the internal protocol still refuses a live node", func(t *testing.T) {
		body, _ := json.Marshal(purgeRequest{Node: other.NodeName()})
		if _, _, err := asFollower.post(ctxT(t), leader.selfAddress(), pathPurge, body, false); errType(err) != TypeNodeIsAlive {
			t.Fatalf("purge of a live node: %v", err)
		}
	})

	// Nothing changed.
	if m := other.record(other.NodeName()).Mode; m != fsm.ModeNormal {
		t.Fatalf("other's mode is %s", m)
	}
	if owner, _ := leader.ChannelOwner("live-channel"); owner != other.NodeName() {
		t.Fatalf("live-channel moved to %q", owner)
	}
	// A member acting for itself still works.
	if _, err := applyAs(t, asFollower, leader.selfAddress(), fsm.SetMode{Node: follower.NodeName(), Mode: fsm.ModeBlockNewSession}); err != nil {
		t.Fatalf("a member setting its own mode: %v", err)
	}
}

func TestWrongSecretCannotJoin(t *testing.T) {
	nodes := formCluster(t, 2)
	cfg := testConfig(t, newHostName("wrong"))
	cfg.Trust = memberTrust(t, cfg.NodeName, strangerSecret)
	wrong := startNode(t, cfg)
	waitFor(t, 5*time.Second, "the wrong node ready", func() bool { return wrong.Mode() == fsm.ModeNormal })
	if _, err := wrong.Join(ctxT(t), nodes[0].NodeName()); err == nil {
		t.Fatal("a node with another secret joined")
	}
	if names := registeredNames(nodes[0]); len(names) != 2 {
		t.Fatalf("members after the attempt: %v", names)
	}
}

// TestSecretRotation moves a three-node cluster from one secret to another
// one node at a time, reloading each in place, with writes going on.
func TestSecretRotation(t *testing.T) {
	const oldSecret, newSecret = testSecret, "the cluster's next secret, 32 or more bytes"
	secrets := map[string]*[]string{}
	var mu sync.Mutex
	nodes := formCluster(t, 3, func(cfg *Config) {
		s := &[]string{oldSecret}
		secrets[cfg.NodeName] = s
		name := cfg.NodeName
		ts, err := trust.NewStore(func() (*trust.Material, error) {
			mu.Lock()
			cur := slices.Clone(*s)
			mu.Unlock()
			return trust.FromSecret(name, cur[0], cur[1:]...)
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Trust = ts
	})
	setSecrets := func(n *testNode, list ...string) {
		mu.Lock()
		*secrets[n.NodeName()] = list
		mu.Unlock()
		if err := n.cfg.Trust.Reload(); err != nil {
			t.Fatal(err)
		}
		// New handshakes use the new material; drop pooled connections so
		// the test exercises them.
		n.client.close()
	}
	write := func(step string) {
		t.Helper()
		for i, n := range nodes {
			id := fmt.Sprintf("%s-%d", step, i)
			if _, err := n.AcquireChannel(ctxT(t), id, ChannelOptions{}); err != nil {
				t.Fatalf("%s: acquire on %s: %v", step, n.NodeName(), err)
			}
			for _, m := range nodes {
				if m != n && !peerAnswers(t, m, n) {
					t.Fatalf("%s: %s cannot reach %s", step, m.NodeName(), n.NodeName())
				}
			}
		}
	}
	write("before")
	for i, n := range nodes {
		setSecrets(n, newSecret, oldSecret)
		write(fmt.Sprintf("phase1-%d", i))
	}
	for i, n := range nodes {
		setSecrets(n, newSecret)
		write(fmt.Sprintf("phase2-%d", i))
	}
	// Only the new secret opens the cluster now.
	var st nodeStatus
	if err := clientAs(t, memberTrust(t, nodes[0].NodeName(), oldSecret)).get(ctxT(t), nodes[1].selfAddress(), pathStatus, &st); err == nil {
		t.Fatal("the old secret still opens the cluster port")
	}
}

// peerAnswers reports whether from reaches to's cluster port now, on a
// fresh connection.
func peerAnswers(t *testing.T, from, to *testNode) bool {
	t.Helper()
	p := clientAs(t, from.cfg.Trust)
	var st nodeStatus
	return p.get(ctxT(t), to.selfAddress(), pathStatus, &st) == nil && st.NodeName == to.NodeName()
}

// TestForwardedAPICallsArriveAsSent: the node in charge gets a forwarded
// call's target, content type and body, and nothing else (APICall has no
// place for a credential), over the framed protocol and over HTTP (a body
// larger than a frame).
func TestForwardedAPICallsArriveAsSent(t *testing.T) {
	nodes := formCluster(t, 2)
	var mu sync.Mutex
	var got []APICall
	nodes[1].ServeAPI(func(_ context.Context, call APICall) APIAnswer {
		mu.Lock()
		got = append(got, call)
		mu.Unlock()
		return APIAnswer{Status: http.StatusOK, ContentType: "application/json", Body: []byte(`{"ok":true}`)}
	})
	large := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), maxInternalBody)...), '"', '}')
	for _, body := range [][]byte{[]byte(`{"channel_id":"c"}`), large} {
		call := APICall{Target: "Sora_20201013.ListChannelConnections", ContentType: "application/json", Body: body}
		ans, err := nodes[0].ForwardAPI(ctxT(t), nodes[1].NodeName(), call)
		if err != nil || ans.Status != http.StatusOK || string(ans.Body) != `{"ok":true}` || ans.ContentType != "application/json" {
			t.Fatalf("forward a body of %d bytes: %+v %v", len(body), ans, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Target != "Sora_20201013.ListChannelConnections" || got[0].ContentType != "application/json" ||
		string(got[0].Body) != `{"channel_id":"c"}` || !bytes.Equal(got[1].Body, large) {
		t.Fatalf("the node in charge got %d calls, %+v", len(got), got[0])
	}
}

// TestSilentConnectionsAreDropped opens connections to the cluster port that
// never finish their handshake, and checks that the port closes them and
// stays usable.
func TestSilentConnectionsAreDropped(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the handshake timeout")
	}
	n := startNode(t, testConfig(t, newHostName("silent")))
	waitFor(t, 5*time.Second, "node ready", func() bool { return n.Mode() == fsm.ModeNormal })
	var conns []net.Conn
	for range maxPendingHandshakes + 8 {
		c, err := net.Dial("tcp", n.selfAddress())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(muxHandshakeTimeout + 3*time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a silent connection got data")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a silent connection was kept past the handshake timeout")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st nodeStatus
	if err := clientAs(t, memberTrust(t, "peer@127.0.9.6", testSecret)).get(ctx, n.selfAddress(), pathStatus, &st); err != nil {
		t.Fatalf("the port after the silent connections: %v", err)
	}
}

// TestSilentPeersOfAnUnauthenticatedPortAreDropped: on a port without
// authentication, a connection that names its protocol and then says
// nothing is closed after the idle timeout (Raft) or the header timeout
// (internal HTTP), instead of holding a goroutine for good.
func TestSilentPeersOfAnUnauthenticatedPortAreDropped(t *testing.T) {
	cfg := testConfig(t, newHostName("insecure"))
	cfg.Trust = nil
	cfg.IdleTimeout = time.Second
	n := startNode(t, cfg)
	waitFor(t, 5*time.Second, "node ready", func() bool { return n.Mode() == fsm.ModeNormal })
	for _, proto := range []protocol{protoRaft, protoHTTP} {
		t.Run(proto.name, func(t *testing.T) {
			c, err := net.Dial("tcp", n.selfAddress())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte{proto.b}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(cfg.RequestTimeout + 5*time.Second))
			_, err = c.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("a silent %s connection was still open after %v", proto.name, time.Since(start))
			}
		})
	}
}

// FuzzClusterHandshake feeds arbitrary bytes to the cluster port's
// handshake, as a peer on the network could: with authentication on,
// nothing but a member's TLS handshake gets through, and nothing panics or
// hangs; without, only the protocol bytes name a protocol.
func FuzzClusterHandshake(f *testing.F) {
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte{0x01})
	f.Add([]byte{0x02, 'G', 'E', 'T', ' ', '/'})
	f.Add([]byte("POST /internal/v1/apply HTTP/1.1\r\n\r\n"))
	ts, err := trust.NewStore(func() (*trust.Material, error) { return trust.FromSecret("fuzz@127.0.0.1", testSecret) })
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	secure := newMux(ln, testLogger(), ts, time.Second)
	insecure := newMux(ln, testLogger(), nil, time.Second)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []*mux{secure, insecure} {
			client, server := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				go func() { _, _ = io.Copy(io.Discard, client) }() // take what the server answers
				_ = client.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = client.Write(b)
				client.Close() // the peer is done: the server reads EOF next
			}()
			proto, conn, err := m.handshake(server)
			conn.Close()
			<-done
			if m.trust != nil && err == nil {
				t.Fatalf("%q passed the authenticated handshake as %s", b, proto.name)
			}
			if m.trust == nil && err == nil && (len(b) == 0 || b[0] != proto.b) {
				t.Fatalf("%q named protocol %s", b, proto.name)
			}
		}
	})
}

// TestUnauthenticatedClusterStillWorks: with cluster_insecure (no Trust) a
// cluster forms, places channels and forwards writes as before, and the
// rules that need no identity still hold.
func TestUnauthenticatedClusterStillWorks(t *testing.T) {
	nodes := formCluster(t, 2, func(cfg *Config) { cfg.Trust = nil })
	acquireOnTie(t, nodes[1], "plain")
	if err := nodes[1].SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatal(err)
	}
	p := clientAs(t, nil)
	if _, err := applyAs(t, p, nodes[0].selfAddress(), fsm.PurgeNode{Node: nodes[1].NodeName()}); errType(err) != TypeInvalidCommand {
		t.Fatalf("a purge through apply on an unauthenticated port: %v", err)
	}
}

// countingHandler counts the records logged with a message.
type countingHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

// TestRefusalsDoNotFloodTheLog: a burst of refused connections logs a
// bounded number of lines.
func TestRefusalsDoNotFloodTheLog(t *testing.T) {
	var logged atomic.Int64
	cfg := testConfig(t, newHostName("flooded"))
	cfg.Logger = slog.New(countingHandler{Handler: slog.DiscardHandler, msg: "cluster port: refused a connection", n: &logged})
	n := startNode(t, cfg)
	waitFor(t, 5*time.Second, "node ready", func() bool { return n.Mode() == fsm.ModeNormal })
	const attempts = 200
	for range attempts {
		c, err := net.Dial("tcp", n.selfAddress())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // not a TLS handshake
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 64)) // until the node closes it
		c.Close()
	}
	if got := logged.Load(); got == 0 || got > 40 {
		t.Fatalf("%d refused connections logged %d lines, want some and at most 40", attempts, got)
	}
}
