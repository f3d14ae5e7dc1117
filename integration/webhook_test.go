package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// webhookSink receives the webhooks of every node of a test, on loopback,
// allowing every connect.
type webhookSink struct {
	url string
	mu  sync.Mutex
	got []sinkCall
}

type sinkCall struct {
	path string
	body map[string]any
}

func newWebhookSink(t *testing.T) *webhookSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &webhookSink{url: "http://" + ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		s.mu.Lock()
		s.got = append(s.got, sinkCall{path: r.URL.Path, body: body})
		s.mu.Unlock()
		if r.URL.Path == "/auth" {
			_, _ = io.WriteString(w, `{"allowed":true}`)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// args point a node's webhooks at the sink.
func (s *webhookSink) args() []string {
	return []string{"--auth_webhook_url=" + s.url + "/auth", "--session_webhook_url=" + s.url + "/session",
		"--event_webhook_url=" + s.url + "/event", "--webhook_updated_interval=1h"}
}

// calls returns the webhooks on path whose body matches.
func (s *webhookSink) calls(path string, match func(map[string]any) bool) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, c := range s.got {
		if c.path == path && match(c.body) {
			out = append(out, c.body)
		}
	}
	return out
}

func sessionEvent(typ, sessionID string) func(map[string]any) bool {
	return func(b map[string]any) bool { return b["type"] == typ && b["session_id"] == sessionID }
}

// TestWebhooksInACluster: on three real nodes, a connect redirected to the
// node in charge is authorised once, there; when that node is killed with
// its sessions, each session's end is reported exactly once: a busy
// channel's when a live node takes it over, an idle one's when the dead
// node is purged; never a second time, never as session.destroyed.
func TestWebhooksInACluster(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, sink.args()...)
	dead, live := nodes[0], nodes[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Both channels start on the doomed node: the others take no new
	// session meanwhile.
	for _, n := range live {
		setMode(t, nodes, n, "block_new_session")
	}
	pub, sub, err := pair(ctx, []string{signalingURL(dead)}, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	idle := connectClient(t, ctx, dead, soraclient.Options{ChannelID: "idle", Role: "sendrecv", Audio: true})
	harness.Eventually(t, 5*time.Second, "both channels held by the doomed node", func() bool {
		return ownerOf(live[0], "busy") == dead.Name && ownerOf(live[0], "idle") == dead.Name
	})
	for _, n := range live {
		setMode(t, nodes, n, "normal")
	}
	// A connect through another node is redirected to the node in charge,
	// which alone asks the auth webhook.
	third := connectClient(t, ctx, live[1], soraclient.Options{ChannelID: "busy", Role: "recvonly", Audio: true})
	for _, c := range []*soraclient.Client{pub, sub, idle, third} {
		auths := sink.calls("/auth", func(b map[string]any) bool { return b["connection_id"] == c.ConnectionID() })
		if len(auths) != 1 || auths[0]["node_name"] != dead.Name {
			t.Fatalf("auth webhooks for %s: %v, want one from %s", c.ConnectionID(), auths, dead.Name)
		}
	}
	if n := len(sink.calls("/auth", func(map[string]any) bool { return true })); n != 4 {
		t.Errorf("%d auth webhooks for 4 admitted connects", n)
	}
	sessionOf := func(channel string) string {
		var id string
		harness.Eventually(t, 5*time.Second, "session.created of "+channel, func() bool {
			cs := sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == channel })
			if len(cs) == 1 {
				id, _ = cs[0]["session_id"].(string)
			}
			return len(cs) == 1
		})
		return id
	}
	// session.created goes once the session is recorded in the cluster.
	busy, idleSession := sessionOf("busy"), sessionOf("idle")

	dead.Kill()
	pub2, sub2 := pairAgain(t, ctx, live, "busy", 20*time.Second)
	defer pub2.Close()
	defer sub2.Close()
	harness.Eventually(t, 10*time.Second, "the killed busy session reported ended", func() bool {
		return len(sink.calls("/session", sessionEvent("session.vanished", busy))) > 0
	})
	live[1].MustCall(200, targetPurge20220629, map[string]string{"target_node_name": dead.Name})
	harness.Eventually(t, 10*time.Second, "the killed idle session reported ended", func() bool {
		return len(sink.calls("/session", sessionEvent("session.vanished", idleSession))) > 0
	})
	time.Sleep(2 * time.Second) // a duplicate would be here by now
	for _, id := range []string{busy, idleSession} {
		if n := len(sink.calls("/session", sessionEvent("session.vanished", id))); n != 1 {
			t.Errorf("session %s reported ended %d times", id, n)
		}
		if n := len(sink.calls("/session", sessionEvent("session.destroyed", id))); n != 0 {
			t.Errorf("session %s of the killed node got %d session.destroyed", id, n)
		}
		if n := len(sink.calls("/session", sessionEvent("session.created", id))); n != 1 {
			t.Errorf("session %s created %d times", id, n)
		}
	}
	v := sink.calls("/session", sessionEvent("session.vanished", busy))[0]
	if v["channel_id"] != "busy" || v["node_in_charge"] != dead.Name {
		t.Errorf("session.vanished %v", v)
	}
}

// createdSessions returns the ids of channel's sessions, in the order of
// their session.created.
func (s *webhookSink) createdSessions(channel string) []string {
	var ids []string
	for _, b := range s.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == channel }) {
		id, _ := b["session_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// newSession waits for channel's session.created number n (from 1) and
// returns its id.
func (s *webhookSink) newSession(t *testing.T, channel string, n int) string {
	t.Helper()
	harness.Eventually(t, 10*time.Second, fmt.Sprintf("session.created number %d of %s", n, channel), func() bool {
		return len(s.createdSessions(channel)) >= n
	})
	return s.createdSessions(channel)[n-1]
}

// count returns how many session webhooks of type typ name the session.
func (s *webhookSink) count(typ, sessionID string) int {
	return len(s.calls("/session", sessionEvent(typ, sessionID)))
}

// checkOnce fails unless every session in ids was created once and ended
// once, by the webhook type end (and never by the other).
func (s *webhookSink) checkOnce(t *testing.T, ids []string, end string) {
	t.Helper()
	other := map[string]string{"session.destroyed": "session.vanished", "session.vanished": "session.destroyed"}[end]
	for _, id := range ids {
		for typ, want := range map[string]int{"session.created": 1, end: 1, other: 0} {
			if n := s.count(typ, id); n != want {
				t.Errorf("session %s: %d %s, want %d", id, n, typ, want)
			}
		}
	}
}

// settle waits long enough for a webhook that a node sent in error to
// arrive: the checks after it assert that none did.
func settle() { time.Sleep(2 * time.Second) }

// TestWebhooksKilledNodeRestarted: a node killed with its sessions and
// restarted (not purged), with nobody connecting to their channels again,
// reports each session's end once, as session.vanished, after its
// restart; restarting another node, or that one again, reports nothing
// more.
func TestWebhooksKilledNodeRestarted(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, sink.args()...)
	dead, live := nodes[0], nodes[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	for _, n := range live {
		setMode(t, nodes, n, "block_new_session")
	}
	pub, sub, err := pair(ctx, []string{signalingURL(dead)}, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	connectClient(t, ctx, dead, soraclient.Options{ChannelID: "idle", Role: "sendrecv", Audio: true})
	for _, n := range live {
		setMode(t, nodes, n, "normal")
	}
	// session.created goes once the session is recorded in the cluster.
	ids := []string{sink.newSession(t, "busy", 1), sink.newSession(t, "idle", 1)}

	dead.Kill()
	dead.Start()
	waitFormed(t, nodes, 20*time.Second)
	for _, id := range ids {
		harness.Eventually(t, 10*time.Second, "session "+id+" reported ended after its node's restart", func() bool {
			return sink.count("session.vanished", id) > 0
		})
		v := sink.calls("/session", sessionEvent("session.vanished", id))[0]
		if v["node_in_charge"] != dead.Name || v["created_timestamp"] == nil || v["destroyed_timestamp"] == nil {
			t.Errorf("session.vanished %v, want node_in_charge %s and both timestamps", v, dead.Name)
		}
	}
	// Nobody came back to the channels: they stay with the restarted
	// node's old epoch, stale, until a connect takes them.
	for _, ch := range []string{"busy", "idle"} {
		if owner := ownerOf(live[0], ch); owner != dead.Name {
			t.Errorf("%s held by %q, want still %s (stale)", ch, owner, dead.Name)
		}
	}

	live[0].Kill()
	live[0].Start()
	waitFormed(t, nodes, 20*time.Second)
	dead.Restart()
	waitFormed(t, nodes, 20*time.Second)
	settle()
	sink.checkOnce(t, ids, "session.vanished")
}

// TestWebhooksKilledStandaloneNodeRestarted: a standalone node killed with
// its session reports its end once, after it restarts.
func TestWebhooksKilledStandaloneNodeRestarted(t *testing.T) {
	sink := newWebhookSink(t)
	n, ctx := mediaNode(t, 60*time.Second, sink.args()...)
	pub, sub, err := pair(ctx, []string{signalingURL(n)}, "solo")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	id := sink.newSession(t, "solo", 1)

	n.Kill()
	n.Start()
	harness.Eventually(t, 10*time.Second, "the node back", func() bool { return formed(n, []string{n.Name}) })
	harness.Eventually(t, 10*time.Second, "the killed session reported ended", func() bool { return sink.count("session.vanished", id) > 0 })
	n.Restart()
	harness.Eventually(t, 10*time.Second, "the node back again", func() bool { return formed(n, []string{n.Name}) })
	settle()
	sink.checkOnce(t, []string{id}, "session.vanished")
}

// TestWebhooksRollingUpgrade: all three nodes are upgraded one at a time
// (block_new_session, the clients of its sessions leave, restart, normal)
// while the sessions on the other nodes go on and the drained channels
// start again wherever placement puts them. Every session is created
// once and ended once with session.destroyed; nothing is reported as
// vanished.
func TestWebhooksRollingUpgrade(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, append(sink.args(), "--channel_release_delay=500ms")...)
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()

	type flow struct{ pub, sub *soraclient.Client }
	channels := []string{"roll-a", "roll-b", "roll-c"}
	flows := map[string]flow{}
	var sessions []string
	start := func(ch string, urls []string) {
		t.Helper()
		next := len(sink.createdSessions(ch)) + 1
		pub, sub, err := pair(ctx, urls, ch)
		if err != nil {
			t.Fatalf("%s: %v", ch, err)
		}
		flows[ch] = flow{pub, sub}
		sessions = append(sessions, sink.newSession(t, ch, next))
	}
	defer func() {
		for _, f := range flows {
			_ = f.pub.Close()
			_ = f.sub.Close()
		}
	}()
	// Placement follows load: one channel per node.
	for i, ch := range channels {
		start(ch, []string{signalingURL(nodes[i])})
	}

	for _, up := range nodes {
		others := except(nodes, up)
		setMode(t, nodes, up, "block_new_session")
		var drained []string
		for _, ch := range channels {
			if ownerOf(others[0], ch) != up.Name {
				continue
			}
			drained = append(drained, ch)
			last := sink.createdSessions(ch)
			_ = flows[ch].pub.Close()
			_ = flows[ch].sub.Close()
			delete(flows, ch)
			harness.Eventually(t, 10*time.Second, "session.destroyed of "+ch+" drained from "+up.Name, func() bool {
				return sink.count("session.destroyed", last[len(last)-1]) == 1
			})
		}
		// Placement puts each channel on the least loaded node, so every
		// node upgraded has a session to drain.
		if len(drained) == 0 {
			t.Fatalf("no session on %s to drain", up.Name)
		}
		t.Logf("%s drained %v", up.Name, drained)
		up.Restart()
		waitFormed(t, nodes, 20*time.Second)
		setMode(t, nodes, up, "normal")
		// The sessions on the other nodes went on meanwhile.
		for ch, f := range flows {
			had := f.sub.Received()[f.pub.ConnectionID()+"/video"].Packets
			wait, cancelWait := context.WithTimeout(ctx, 10*time.Second)
			err := f.sub.WaitPackets(wait, f.pub.ConnectionID(), "video", had+5)
			cancelWait()
			if err != nil {
				t.Fatalf("%s stopped while %s was upgraded: %v", ch, up.Name, err)
			}
		}
		for _, ch := range drained {
			start(ch, urlsOf(nodes))
		}
	}

	for ch, f := range flows {
		_ = f.pub.Close()
		_ = f.sub.Close()
		delete(flows, ch)
	}
	for _, id := range sessions {
		harness.Eventually(t, 10*time.Second, "session.destroyed of "+id, func() bool { return sink.count("session.destroyed", id) > 0 })
	}
	settle()
	if len(sessions) != 6 {
		t.Errorf("%d sessions, want 6: three channels, each drained once", len(sessions))
	}
	sink.checkOnce(t, sessions, "session.destroyed")
	if n := len(sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" })); n != len(sessions) {
		t.Errorf("%d session.created for %d sessions", n, len(sessions))
	}
	if n := len(sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.vanished" })); n != 0 {
		t.Errorf("%d session.vanished in a rolling upgrade", n)
	}
}
