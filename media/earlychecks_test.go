package media

import (
	"context"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/soraclient"
)

// A client's connectivity checks that reach sorad before its answer are
// answered once the answer arrives, not dropped: the clients here send
// each check once and hold their answer back until sorad has one of their
// checks in hand, so a dropped check would fail the connection.
func TestChecksBeforeTheAnswerAreAnswered(t *testing.T) {
	m, url := startMedia(t, newFakeCluster())
	hold := m.engine.hold
	waitHeld := func(want uint64) func() {
		return func() {
			deadline := time.Now().Add(10 * time.Second)
			for hold.Counters().Held < want && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	pub, err := connect(t, url, soraclient.Options{ChannelID: "early", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8",
		SingleCheck: true, BeforeAnswer: waitHeld(1)})
	if err != nil {
		t.Fatalf("publisher: %v", err)
	}
	sub, err := connect(t, url, soraclient.Options{ChannelID: "early", Role: "recvonly", Audio: true, Video: true,
		SingleCheck: true, BeforeAnswer: waitHeld(2)})
	if err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	c := hold.Counters()
	if c.Held < 2 || c.Replayed < 2 {
		t.Fatalf("early checks %+v; want at least 2 held and replayed", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}
}
