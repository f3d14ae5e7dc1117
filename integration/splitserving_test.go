package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestNoSplitServing cuts the node in charge of a channel off from the
// cluster while its clients still reach it, first a follower, then the Raft
// leader, and meanwhile keeps trying to serve the channel through the other
// nodes. The cut-off node closes its clients with 4503 CLUSTER-QUORUM-LOST
// and refuses connects; the channel is served elsewhere only afterwards:
// the last packet the old node's subscriber received came before the first
// packet a subscriber got from the new node in charge. After the heal the
// old session's end is reported exactly once.
func TestNoSplitServing(t *testing.T) {
	sink := newWebhookSink(t)
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3, sink.args()...)
	for _, round := range []struct{ name, channel string }{
		{"follower", "split-follower"},
		{"leader", "split-leader"},
	} {
		holder := leader(t, nodes)
		if round.name == "follower" {
			holder = except(nodes, holder)[0]
		}
		t.Logf("%s: cutting off %s, in charge of %s", round.name, holder.Name, round.channel)
		cutOffStopsServing(t, nodes, holder, round.channel, sink)
	}
}

func cutOffStopsServing(t *testing.T, nodes []*harness.Node, holder *harness.Node, channel string, sink *webhookSink) {
	t.Helper()
	others := except(nodes, holder)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, sub, err := pair(ctx, []string{signalingURL(holder)}, channel)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	harness.Eventually(t, 5*time.Second, channel+" held by "+holder.Name, func() bool { return ownerOf(others[0], channel) == holder.Name })
	time.Sleep(time.Second) // the session's record reaches the cluster

	p := newPartition(t, holder)
	cut := time.Now()
	// The other side tries to serve the channel from the start of the cut;
	// it may only succeed once the leader lets the channel move.
	type served struct {
		pub, sub *soraclient.Client
		err      error
	}
	elsewhere := make(chan served, 1)
	go func() {
		for {
			attempt, stop := context.WithTimeout(ctx, 8*time.Second)
			pub2, sub2, err := pair(attempt, urlsOf(others), channel)
			stop()
			if err == nil || ctx.Err() != nil {
				elsewhere <- served{pub2, sub2, err}
				return
			}
		}
	}()

	for _, c := range []*soraclient.Client{pub, sub} {
		info := waitClose(t, ctx, c)
		if info.Code != 4503 || info.Reason != "CLUSTER-QUORUM-LOST" {
			t.Fatalf("the cut-off node closed its client with %+v, want 4503 CLUSTER-QUORUM-LOST", info)
		}
	}
	t.Logf("the cut-off node closed its clients %v after the cut", time.Since(cut).Round(time.Millisecond))
	// Cut off, it refuses connects (its clients still reach it).
	_, err = soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(holder), ChannelID: channel, Role: "recvonly", Audio: true, NoRedirect: true})
	var ce *soraclient.CloseError
	if !errors.As(err, &ce) || ce.Code != 4503 || ce.Reason != "CLUSTER-QUORUM-LOST" {
		t.Fatalf("a connect to the cut-off node: %v, want 4503 CLUSTER-QUORUM-LOST", err)
	}

	s := <-elsewhere
	if s.err != nil {
		t.Fatalf("the channel was not served by the other nodes: %v", s.err)
	}
	defer s.pub.Close()
	defer s.sub.Close()
	old := sub.Received()[pub.ConnectionID()+"/video"]
	fresh := s.sub.Received()[s.pub.ConnectionID()+"/video"]
	if old.LastPacket.IsZero() || fresh.FirstPacket.IsZero() {
		t.Fatalf("no packet times: old %+v, new %+v", old, fresh)
	}
	if !old.LastPacket.Before(fresh.FirstPacket) {
		t.Fatalf("two nodes forwarded %s at once: the cut-off node's last packet at %v, the new node's first at %v",
			channel, old.LastPacket.Format(time.StampMicro), fresh.FirstPacket.Format(time.StampMicro))
	}
	t.Logf("old node's last packet %v after the cut, new node's first %v after it (gap %v)",
		old.LastPacket.Sub(cut).Round(time.Millisecond), fresh.FirstPacket.Sub(cut).Round(time.Millisecond),
		fresh.FirstPacket.Sub(old.LastPacket).Round(time.Millisecond))
	newHolder := ownerOf(others[0], channel)
	if newHolder == holder.Name || newHolder == "" {
		t.Fatalf("%s is held by %q after the takeover", channel, newHolder)
	}

	p.heal()
	waitFormed(t, nodes, 20*time.Second)
	// Back, the node serves again: a connect there for the channel goes
	// to its new node in charge.
	harness.Eventually(t, 10*time.Second, holder.Name+" serving again", func() bool {
		attempt, stop := context.WithTimeout(ctx, 3*time.Second)
		defer stop()
		c, err := soraclient.Connect(attempt, soraclient.Options{SignalingURL: signalingURL(holder), ChannelID: channel, Role: "recvonly", Audio: true, Video: true})
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	created := sink.calls("/session", func(b map[string]any) bool { return b["type"] == "session.created" && b["channel_id"] == channel })
	if len(created) < 2 {
		t.Fatalf("session.created for %s: %d, want the old node's and at least the new one's", channel, len(created))
	}
	oldSession, _ := created[0]["session_id"].(string)
	time.Sleep(time.Second) // a late report would be here by now
	ends := func(typ string) int { return len(sink.calls("/session", sessionEvent(typ, oldSession))) }
	if n := ends("session.vanished") + ends("session.destroyed"); n != 1 {
		t.Errorf("the cut-off session's end reported %d times (vanished %d, destroyed %d), want once",
			n, ends("session.vanished"), ends("session.destroyed"))
	}
}

// TestShortClusterFlapDropsNothing: a cut of the cluster link of a node in
// charge of a channel shorter than a quarter of cluster_lease_timeout
// closes nobody, and media keeps flowing.
func TestShortClusterFlapDropsNothing(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 3)
	holder := except(nodes, leader(t, nodes))[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, sub, err := pair(ctx, []string{signalingURL(holder)}, "flap")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	harness.Eventually(t, 5*time.Second, "flap held by "+holder.Name, func() bool { return ownerOf(holder, "flap") == holder.Name })
	const flaps, cut = 3, 500 * time.Millisecond // the lease is 2 s
	for i := range flaps {
		p := newPartition(t, holder)
		time.Sleep(cut)
		p.heal()
		time.Sleep(2 * time.Second) // longer than the lease: a lost lease would show
		select {
		case <-sub.Closed():
			t.Fatalf("flap %d of %v closed the subscriber: %+v", i+1, cut, sub.CloseInfo())
		case <-pub.Closed():
			t.Fatalf("flap %d of %v closed the publisher: %+v", i+1, cut, pub.CloseInfo())
		default:
		}
	}
	before := sub.Received()[pub.ConnectionID()+"/video"].Packets
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", before+20); err != nil {
		t.Fatalf("media stopped after the flaps: %v", err)
	}
	if got := ownerOf(nodes[0], "flap"); got != holder.Name {
		t.Fatalf("flap moved to %q", got)
	}
}
