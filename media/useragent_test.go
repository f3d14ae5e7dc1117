package media

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestUserAgentStatsFromPongs: the node asks for statistics with its pings
// and serves the latest report per connection; reports that are too large
// or not an array are dropped and counted.
func TestUserAgentStatsFromPongs(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, PingInterval: 100 * time.Millisecond,
		PongTimeout: 5 * time.Second, UserAgentStatsInterval: 100 * time.Millisecond, MaxUserAgentStats: 4096})
	pub, sub := publishAndReceive(t, url, "ua")
	// The subscriber's report lists its inbound video with packets.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := m.GetUserAgentStats("ua", sub.ConnectionID())
		if err != nil {
			t.Fatal(err)
		}
		var stats []struct {
			Type            string `json:"type"`
			Kind            string `json:"kind"`
			PacketsReceived int64  `json:"packetsReceived"`
		}
		if err := json.Unmarshal(got.Stats, &stats); err != nil {
			t.Fatalf("stats %s: %v", got.Stats, err)
		}
		found := false
		for _, s := range stats {
			found = found || s.Type == "inbound-rtp" && s.Kind == "video" && s.PacketsReceived > 0
		}
		if found {
			if _, err := time.Parse("2006-01-02T15:04:05.000Z", got.Timestamp); err != nil || got.ConnectionID != sub.ConnectionID() {
				t.Fatalf("answer %+v: %v", got, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inbound video in the subscriber's statistics: %s", got.Stats)
		}
		time.Sleep(50 * time.Millisecond)
	}
	list, err := m.ListChannelUserAgentStats("ua")
	if err != nil || len(list) != 2 {
		t.Fatalf("channel list: %+v %v", list, err)
	}
	if all := m.ListUserAgentStats(); len(all) != 2 || all[0].ChannelID != "ua" {
		t.Fatalf("node list: %+v", all)
	}
	if _, err := m.GetUserAgentStats("ua", "nobody"); err == nil {
		t.Fatal("stats of an unknown connection")
	}

	// Bad reports are dropped and counted; the last good one stays.
	for _, bad := range []string{
		`{"type":"pong","stats":"not an array"}`,
		`{"type":"pong","stats":[` + strings.Repeat(`{"id":"x"},`, 1000) + `{}]}`, // over MaxUserAgentStats
	} {
		if err := pub.Send(json.RawMessage(bad)); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for m.Counters().UserAgentStatsDropped < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d bad reports, want 2", m.Counters().UserAgentStatsDropped)
		}
		time.Sleep(20 * time.Millisecond)
	}
	kept, err := m.GetUserAgentStats("ua", pub.ConnectionID())
	var entries []map[string]any
	if err != nil || json.Unmarshal(kept.Stats, &entries) != nil || len(entries) > 100 {
		t.Fatalf("the sender's kept report is not its own good one: %.200s, %v", kept.Stats, err)
	}
}
