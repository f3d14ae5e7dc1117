package integration

import (
	"context"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

type uaEntry struct {
	ChannelID      string           `json:"channel_id"`
	ConnectionID   string           `json:"connection_id"`
	Timestamp      string           `json:"timestamp"`
	UserAgentStats []map[string]any `json:"user_agent_stats"`
}

// TestUserAgentStats: clients' own statistics, sent in their pongs, are
// served by the three APIs of seed 000 on every node: the channel's calls
// are answered by the node in charge, the node-wide listing with
// "local": false gathers the cluster's.
func TestUserAgentStats(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2, "--signaling_ping_interval=500ms", "--user_agent_stats_interval=500ms")
	owner, other := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := connectClient(t, ctx, owner, soraclient.Options{ChannelID: "ua", Role: "sendonly", Audio: true, Video: true})
	sub := connectClient(t, ctx, owner, soraclient.Options{ChannelID: "ua", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 30); err != nil {
		t.Fatal(err)
	}

	harness.Eventually(t, 15*time.Second, "the subscriber's inbound video in GetUserAgentStats, asked on the other node", func() bool {
		var got struct {
			ChannelID    string           `json:"channel_id"`
			ConnectionID string           `json:"connection_id"`
			Stats        []map[string]any `json:"stats"`
			Timestamp    string           `json:"timestamp"`
		}
		r := other.MustCall(200, "Sora_20211215.GetUserAgentStats", map[string]string{"channel_id": "ua", "connection_id": sub.ConnectionID()})
		if r.JSON(&got) != nil || got.ConnectionID != sub.ConnectionID() || got.ChannelID != "ua" || got.Timestamp == "" {
			return false
		}
		for _, s := range got.Stats {
			if s["type"] == "inbound-rtp" && s["kind"] == "video" && s["packetsReceived"].(float64) > 0 {
				return true
			}
		}
		return false
	})
	var channel []uaEntry
	if err := other.MustCall(200, "Sora_20211215.ListChannelUserAgentStats", map[string]string{"channel_id": "ua"}).JSON(&channel); err != nil || len(channel) != 2 {
		t.Fatalf("ListChannelUserAgentStats on the other node: %+v %v", channel, err)
	}
	var local, all []uaEntry
	if err := other.MustCall(200, "Sora_20211215.ListUserAgentStats", nil).JSON(&local); err != nil || len(local) != 0 {
		t.Fatalf("the other node's own listing: %+v %v", local, err)
	}
	if err := other.MustCall(200, "Sora_20211215.ListUserAgentStats", map[string]bool{"local": false}).JSON(&all); err != nil || len(all) != 2 {
		t.Fatalf("the cluster's listing: %+v %v", all, err)
	}
	r, err := other.Call("Sora_20211215.GetUserAgentStats", map[string]string{"channel_id": "ua", "connection_id": "NOBODY"})
	if err != nil {
		t.Fatal(err)
	}
	apiError(t, r, 404, "CONNECTION-NOT-FOUND")
}
