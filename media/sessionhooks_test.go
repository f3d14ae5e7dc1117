package media

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/integration/soraclient"
	"github.com/sorad/sorad/media/webhook"
)

// With RecordSessions, session.created goes only once the session is
// recorded in the cluster, so the cluster can report the end of every
// session announced; a session whose channel moved before it was recorded
// is never announced, and neither is its end.
func TestSessionAnnouncedOnlyOnceRecorded(t *testing.T) {
	r := newReceiver(t)
	h, err := webhook.New(webhook.Config{SessionURL: r.srv.URL + "/session", Timeout: 2 * time.Second, Label: "WebRTC SFU sorad", Version: "test", NodeName: "sorad@127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close) // after the media plane's own cleanup (LIFO)
	fc := newFakeCluster()
	fc.recordErr = func(channelID string) error {
		if channelID == "moved" {
			return cluster.ErrChannelTakenOver
		}
		return nil
	}
	_, url := startMediaWith(t, fc, Config{Webhooks: h, RecordSessions: true, ReleaseDelay: time.Hour})

	for _, ch := range []string{"moved", "kept"} {
		c, err := connect(t, url, soraclient.Options{ChannelID: ch, Role: "sendrecv", Audio: true})
		if err != nil {
			t.Fatalf("connect to %s: %v", ch, err)
		}
		if ch == "kept" {
			r.find("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == ch })
		}
		_ = c.Close()
	}
	// Session webhooks leave in order: once kept's end is in, anything
	// about moved would be too.
	r.find("/session", func(b map[string]any) bool { return b["type"] == "session.destroyed" && b["channel_id"] == "kept" })
	if n := r.count("/session", func(b map[string]any) bool { return b["channel_id"] == "moved" }); n != 0 {
		t.Errorf("%d session webhooks about a session never recorded, want none", n)
	}
	if n := r.count("/session", func(b map[string]any) bool { return b["channel_id"] == "kept" }); n != 2 {
		t.Errorf("%d session webhooks about kept, want created and destroyed", n)
	}
	fc.mu.Lock()
	calls := slices.Clone(fc.calls)
	fc.mu.Unlock()
	for _, c := range calls {
		if strings.HasPrefix(c, "forget-session moved ") {
			t.Errorf("the unrecorded session was forgotten: %v", calls)
		}
	}
}
