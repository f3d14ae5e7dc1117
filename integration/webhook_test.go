package integration

import (
	"context"
	"encoding/json"
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
	busy, idleSession := sessionOf("busy"), sessionOf("idle")
	// The nodes record their sessions in the cluster asynchronously.
	time.Sleep(time.Second)

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

// TestWebhooksRollingUpgrade: a node drained for an upgrade
// (block_new_session, its clients leave, restart, normal) ends its session
// with one session.destroyed; the channel's next session, wherever it
// starts, is created once; nothing is reported twice or as vanished.
func TestWebhooksRollingUpgrade(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, append(sink.args(), "--channel_release_delay=500ms")...)
	up, others := nodes[0], nodes[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, n := range others {
		setMode(t, nodes, n, "block_new_session")
	}
	pub, sub, err := pair(ctx, []string{signalingURL(up)}, "roll")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range others {
		setMode(t, nodes, n, "normal")
	}
	harness.Eventually(t, 5*time.Second, "roll on the node to upgrade", func() bool { return ownerOf(others[0], "roll") == up.Name })
	time.Sleep(time.Second) // the session's record reaches the cluster

	setMode(t, nodes, up, "block_new_session")
	_ = pub.Close()
	_ = sub.Close()
	harness.Eventually(t, 10*time.Second, "session.destroyed of the drained session", func() bool {
		return len(sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.destroyed" && b["channel_id"] == "roll" })) == 1
	})
	up.Restart()
	harness.Eventually(t, 15*time.Second, "the upgraded node back", func() bool { return formed(up, names(nodes)) })
	setMode(t, nodes, up, "normal")
	pub2, sub2, err := pair(ctx, urlsOf(nodes), "roll")
	if err != nil {
		t.Fatal(err)
	}
	defer pub2.Close()
	defer sub2.Close()
	time.Sleep(2 * time.Second) // anything duplicated would be here by now
	created := sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == "roll" })
	if len(created) != 2 || created[0]["session_id"] == created[1]["session_id"] {
		t.Fatalf("session.created for roll: %v, want two sessions, each once", created)
	}
	first, _ := created[0]["session_id"].(string)
	for typ, want := range map[string]int{"session.destroyed": 1, "session.vanished": 0, "session.created": 1} {
		if n := len(sink.calls("/session", sessionEvent(typ, first))); n != want {
			t.Errorf("%d %s for the drained session, want %d", n, typ, want)
		}
	}
	if n := len(sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.vanished" })); n != 0 {
		t.Errorf("%d session.vanished in a rolling upgrade", n)
	}
}
