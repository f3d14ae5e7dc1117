package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// attackerStream is a raft.StreamLayer of a machine that reaches the cluster
// port: it speaks Raft's wire protocol over plain TCP (announcing Raft with
// its byte, as an unauthenticated port expects) or over TLS with a
// certificate of its own making.
type attackerStream struct {
	ts *trust.Store // nil: plain TCP
}

func (a attackerStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	if a.ts == nil {
		if _, err := c.Write([]byte{0x01}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	tc := tls.Client(c, a.ts.ClientConfig(trust.ProtoRaft))
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func (attackerStream) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (attackerStream) Close() error              { return nil }
func (attackerStream) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// helloFrame is what a node sends first on the forwarded-API protocol of
// the cluster port (sorad-api/1): length 9, kind 1, call id 0.
var helloFrame = []byte{0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0}

// forwardedAPIProtocolCall speaks the forwarded-API protocol to a cluster
// port as an attacker would: announced by its byte over plain TCP (ts nil)
// or by ALPN with a certificate the node does not trust, not checking the
// node's certificate. It sends one call of target and returns all the
// node sent back until it closed the connection.
func forwardedAPIProtocolCall(t *testing.T, address string, ts *trust.Store, target string) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var conn net.Conn = c
	if ts == nil {
		if _, err := c.Write([]byte{0x03}); err != nil {
			return nil
		}
	} else {
		cfg := ts.ClientConfig(trust.ProtoAPI)
		cfg.VerifyConnection = nil
		tc := tls.Client(c, cfg)
		if tc.Handshake() != nil {
			return nil
		}
		conn = tc
	}
	frame := []byte{0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1}
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(target)))
	frame = append(frame, target...)
	frame = binary.BigEndian.AppendUint16(frame, 0)
	frame = append(frame, "{}"...)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	_, _ = conn.Write(frame)
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s kept a non-member's forwarded-API connection open", address)
	}
	return got
}

func strangerTrust(t *testing.T, name string) *trust.Store {
	t.Helper()
	ts, err := trust.NewStore(func() (*trust.Material, error) {
		return trust.FromSecret(name, "an attacker's own secret, 32 bytes or more")
	})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestClusterPortAttacks replays the attacks of a machine on the cluster's
// network that lacks the cluster secret, against three real nodes with an
// API bearer token set: forged writes, joins and AppendEntries, and an
// attempt to get the operator's token forwarded to it. All fail, and the
// cluster keeps serving.
func TestClusterPortAttacks(t *testing.T) {
	h := harness.New(t, soradBin)
	const token = "operator-token-never-forwarded"
	// The channel the attacker would move has no client: keep it assigned.
	nodes := startCluster(t, h, 3, "--api_bearer_token="+token, "--channel_release_delay=1h")
	lead := leaderWithToken(t, nodes, token)
	victim := except(nodes, lead)[0]
	attacker := "attacker@" + harness.NextAddress()
	stranger := strangerTrust(t, attacker)
	assign(t, lead, "live", victim) // a channel an attacker would move
	var liveEpoch uint64
	if live := listChannels(lead); len(live) == 1 {
		liveEpoch = live[0].NodeInChargeEpoch
	} else {
		t.Fatalf("channels: %+v", live)
	}

	for _, creds := range []struct {
		name string
		ts   *trust.Store
	}{{"plain HTTP", nil}, {"a certificate of another cluster", stranger}} {
		t.Run("forged apply and join with "+creds.name, func(t *testing.T) {
			for _, cmd := range []fsm.Command{
				fsm.SetMode{Node: victim.Name, Mode: fsm.ModeBlockNewConnection},
				fsm.PurgeNode{Node: victim.Name},
				fsm.AssignChannel{Channel: "hijacked", Node: victim.Name},
				fsm.AssignChannel{Channel: "live", Node: lead.Name, ExpectedNode: victim.Name, ExpectedEpoch: liveEpoch},
			} {
				body, err := fsm.Encode(cmd)
				if err != nil {
					t.Fatal(err)
				}
				if r, err := lead.InternalPost("/internal/v1/apply", nil, body, creds.ts); err == nil {
					t.Fatalf("forged %T answered: %d %s", cmd, r.Status, r.Body)
				}
			}
			// A join would have made the attacker a voter that gets every
			// client redirected to it and every forwarded call: it fails,
			// so nothing is ever forwarded to it.
			join := fmt.Sprintf(`{"register":{"info":{"node_name":%q,"raft_address":"%s:%d"},"incarnation":"x"}}`,
				attacker, strings.TrimPrefix(attacker, "attacker@"), harness.ClusterPort)
			if r, err := lead.InternalPost("/internal/v1/join", nil, []byte(join), creds.ts); err == nil {
				t.Fatalf("forged join answered: %d %s", r.Status, r.Body)
			}
			header := http.Header{}
			header.Set("x-sora-target", targetListClusterNodes)
			if r, err := victim.InternalPost("/internal/v1/api", header, []byte(`{}`), creds.ts); err == nil {
				t.Fatalf("an API call on the cluster port without membership answered: %d %s", r.Status, r.Body)
			}
			if got := forwardedAPIProtocolCall(t, victim.ClusterAddress(), creds.ts, targetListClusterNodes); bytes.HasPrefix(got, helloFrame) {
				t.Fatalf("the forwarded-API protocol greeted a non-member: %q", got)
			}
		})
		t.Run("forged AppendEntries with the highest term over "+creds.name, func(t *testing.T) {
			tr := raft.NewNetworkTransport(attackerStream{ts: creds.ts}, 1, 2*time.Second, nil)
			defer tr.Close()
			// A few rounds a second, as the attack that kept writes failing.
			for round := range 5 {
				if round > 0 {
					time.Sleep(200 * time.Millisecond)
				}
				if r := lead.MustCall(200, targetChangeMode, map[string]string{"mode": "normal"}); r.Status != 200 {
					t.Fatalf("a write during the forged AppendEntries: %d", r.Status)
				}
				for _, n := range nodes {
					var resp raft.AppendEntriesResponse
					err := tr.AppendEntries(raft.ServerID(n.Name), raft.ServerAddress(n.ClusterAddress()), &raft.AppendEntriesRequest{
						RPCHeader: raft.RPCHeader{ID: []byte(attacker), Addr: []byte(attacker)},
						Term:      math.MaxUint64,
					}, &resp)
					if err == nil {
						t.Fatalf("%s answered a forged AppendEntries: %+v", n.Name, resp)
					}
				}
			}
		})
	}

	// The cluster is whole and takes writes: a mode change through the API
	// replicates, the leader did not move, the live channel did not move,
	// listings agree.
	if live := listChannels(lead); len(live) != 1 || live[0].ChannelID != "live" || live[0].NodeInCharge != victim.Name {
		t.Fatalf("channels after the attacks: %+v", live)
	}
	if got := leaderWithToken(t, nodes, token); got != lead {
		t.Fatalf("leader moved from %s to %s during the attacks", lead.Name, got.Name)
	}
	if r := callWithToken(t, victim, token, targetChangeMode, map[string]string{"mode": "block_new_session"}); r.Status != 200 {
		t.Fatalf("ChangeMode after the attacks: %d %s", r.Status, r.Body)
	}
	for _, n := range nodes {
		harness.Eventually(t, 10*time.Second, n.Name+" lists the three members and the mode change", func() bool {
			var list []nodeEntry
			r := callWithToken(t, n, token, targetListClusterNodes, nil)
			if r.Status != 200 || r.JSON(&list) != nil || len(list) != 3 {
				return false
			}
			e, ok := entry(list, victim.Name)
			return ok && e.Mode == "block_new_session"
		})
	}
	for _, n := range nodes {
		// The harness's own line of each start redacts the token flag:
		// the whole log may not hold the token.
		for _, line := range strings.Split(n.Log(), "\n") {
			if strings.Contains(line, token) {
				t.Fatalf("%s logged the bearer token: %s", n.Name, line)
			}
		}
	}
}

// leaderWithToken is leader for a cluster whose API needs token.
func leaderWithToken(t *testing.T, nodes []*harness.Node, token string) *harness.Node {
	t.Helper()
	var found *harness.Node
	harness.Eventually(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			var st statsReport
			if r := callWithToken(t, n, token, targetGetStatsReport, nil); r.Status == 200 && r.JSON(&st) == nil && st.Cluster.RaftState == "leader" {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// TestWrongSecretCannotJoin starts a node with another secret that names the
// cluster's nodes as contacts: it stays alone, and the cluster is unchanged.
func TestWrongSecretCannotJoin(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2)
	outsider := h.NewNode("outsider", "--cluster_secret=another cluster's secret, 32 bytes or more",
		"--contact_node_name_list="+nodes[0].Name+","+nodes[1].Name)
	outsider.Start()
	harness.Eventually(t, 10*time.Second, "the outsider tries to reach its contacts", func() bool {
		return strings.Contains(nodes[0].Log(), "refused a connection") && strings.Contains(nodes[0].Log(), outsider.Address)
	})
	// A few more rounds of its automatic join.
	time.Sleep(2 * time.Second)
	if list := listNodes(nodes[0], true); len(list) != 2 {
		t.Fatalf("the cluster lists %d nodes after the outsider's attempts: %+v", len(list), list)
	}
	if list := listNodes(outsider, true); len(list) != 1 {
		t.Fatalf("the outsider lists %+v", list)
	}
}

// TestClusterSecretRotation rotates a running cluster's secret through
// cluster_secret_file and SIGHUP, one node at a time: first every node
// takes the new secret while accepting the old, then drops the old. Nodes
// restarted midway rejoin over fresh handshakes with nodes on either step;
// afterwards a node with only the old secret cannot join, and one with the
// new secret can.
func TestClusterSecretRotation(t *testing.T) {
	h := harness.New(t, soradBin)
	const oldSecret, newSecret = "the cluster's first secret, 32 bytes or more", "the cluster's second secret, 32 bytes or more"
	dir := t.TempDir()
	files := map[string]string{}
	writeSecrets := func(n *harness.Node, secrets ...string) {
		t.Helper()
		if err := os.WriteFile(files[n.Name], []byte(strings.Join(secrets, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodes := make([]*harness.Node, 3)
	for i := range nodes {
		nodes[i] = h.NewNode(fmt.Sprintf("node-%02d", i+1))
	}
	for i, n := range nodes {
		files[n.Name] = filepath.Join(dir, fmt.Sprintf("secret-%d", i))
		writeSecrets(n, oldSecret)
		n.Args = append(n.Args, "--cluster_secret=", "--cluster_secret_file="+files[n.Name],
			"--contact_node_name_list="+strings.Join(names(except(nodes, n)), ","))
		n.Start()
	}
	waitFormed(t, nodes, 20*time.Second)

	// Each node in turn takes the new secrets: restart picks the one node
	// that restarts (fresh handshakes with every peer, some of them still a
	// step behind); the others reload in place.
	phase := func(what string, restart *harness.Node, secrets ...string) {
		t.Helper()
		for _, n := range nodes {
			writeSecrets(n, secrets...)
			if n == restart {
				n.Restart()
			} else {
				n.Reload()
				harness.Eventually(t, 5*time.Second, what+": "+n.Name+" reloads its cluster authentication", func() bool {
					return strings.Contains(n.Log(), "SIGHUP: cluster authentication reloaded")
				})
			}
			waitFormed(t, nodes, 20*time.Second)
			harness.Eventually(t, 10*time.Second, what+": every node lists the same cluster", func() bool {
				ok, _ := sameJSON(t, nodes, targetListClusterNodes, nil)
				return ok
			})
		}
	}
	phase("new secret, old accepted", nodes[0], newSecret, oldSecret)
	phase("new secret only", nodes[1], newSecret)

	late := h.NewNode("late-old", "--cluster_secret="+oldSecret, "--contact_node_name_list="+nodes[2].Name)
	late.Start()
	harness.Eventually(t, 10*time.Second, "the old-secret node is refused", func() bool {
		return strings.Contains(nodes[2].Log(), "refused a connection") && strings.Contains(nodes[2].Log(), late.Address)
	})
	late.Stop()
	joiner := h.NewNode("late-new", "--cluster_secret="+newSecret, "--contact_node_name_list="+nodes[2].Name)
	joiner.Start()
	waitFormed(t, append(append([]*harness.Node{}, nodes...), joiner), 20*time.Second)
}

// TestChannelsOfClientsThatNeverArriveAreReleased: connects to a node that
// takes no new session are redirected to another node, which is assigned
// their new channels; the clients never follow. The node in charge gives
// each channel back after channel_release_delay, instead of holding it for
// good.
func TestChannelsOfClientsThatNeverArriveAreReleased(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2, "--channel_release_delay=1s")
	entry, other := nodes[0], nodes[1]
	entry.MustCall(200, targetChangeMode, map[string]string{"mode": "block_new_session"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 20
	for i := range n {
		_, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(entry), ChannelID: fmt.Sprintf("ghost-%02d", i), Role: "recvonly", Audio: true, NoRedirect: true})
		var re *soraclient.RedirectError
		if !errors.As(err, &re) || re.Location != signalingURL(other) {
			t.Fatalf("connect %d: %v, want a redirect to %s", i, err, signalingURL(other))
		}
	}
	if got := len(listChannels(entry)); got == 0 {
		t.Fatal("no channel was assigned: the test shows nothing")
	}
	harness.Eventually(t, 15*time.Second, "every unused channel released", func() bool {
		return len(listChannels(entry)) == 0 && len(listChannels(other)) == 0
	})
}

// TestSignalingBoundsPerClient checks the per-address and per-channel
// bounds on real nodes: new channels per address, waiting sockets per
// address, and a channel's metadata.
func TestSignalingBoundsPerClient(t *testing.T) {
	n, ctx := mediaNode(t, time.Minute, "--signaling_new_channel_rate=1", "--signaling_new_channel_burst=3",
		"--signaling_max_pending_connections_per_ip=2", "--signaling_max_metadata_size=4096", "--channel_max_metadata_size=6000")

	t.Run("new channels per address", func(t *testing.T) {
		for i := range 3 {
			connectClient(t, ctx, n, soraclient.Options{ChannelID: fmt.Sprintf("rate-%d", i), Role: "sendonly", Audio: true})
		}
		refusedWith(t, ctx, n, soraclient.Options{ChannelID: "rate-3", Role: "sendonly", Audio: true}, 4503, "TOO-MANY-NEW-CHANNELS")
		connectClient(t, ctx, n, soraclient.Options{ChannelID: "rate-0", Role: "recvonly", Audio: true}) // joining is not creating
	})

	t.Run("waiting sockets per address", func(t *testing.T) {
		var held []*websocket.Conn
		defer func() {
			for _, ws := range held {
				ws.Close()
			}
		}()
		for range 2 {
			ws, _, err := websocket.DefaultDialer.DialContext(ctx, signalingURL(n), nil)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, ws)
		}
		_, resp, err := websocket.DefaultDialer.DialContext(ctx, signalingURL(n), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("a third waiting socket: %v %v", resp, err)
		}
		// The node frees the places as it sees the sockets close.
		for _, ws := range held {
			ws.Close()
		}
		held = nil
		harness.Eventually(t, 5*time.Second, "the waiting places freed", func() bool {
			ws, _, err := websocket.DefaultDialer.DialContext(ctx, signalingURL(n), nil)
			if err != nil {
				return false
			}
			ws.Close()
			return true
		})
	})

	t.Run("metadata", func(t *testing.T) {
		closedWith := func(opts soraclient.Options, reason string) {
			t.Helper()
			opts.SignalingURL = signalingURL(n)
			c, err := soraclient.Connect(ctx, opts)
			if err == nil {
				_ = c.Close()
			}
			var ce *soraclient.CloseError
			if !errors.As(err, &ce) || ce.Code != 4490 || !strings.HasPrefix(ce.Reason, reason+":") {
				t.Fatalf("connect: %v, want 4490 %s", err, reason)
			}
		}
		big := map[string]string{"blob": strings.Repeat("m", 4096)}
		closedWith(soraclient.Options{ChannelID: "rate-0", Role: "recvonly", Audio: true, Metadata: big}, "METADATA-TOO-LARGE")
		three := map[string]string{"blob": strings.Repeat("m", 3000)}
		connectClient(t, ctx, n, soraclient.Options{ChannelID: "rate-1", Role: "recvonly", Audio: true, SignalingNotifyMetadata: three})
		closedWith(soraclient.Options{ChannelID: "rate-1", Role: "recvonly", Audio: true, SignalingNotifyMetadata: three}, "CHANNEL-METADATA-TOO-LARGE")
	})
}
