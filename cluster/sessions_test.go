package cluster

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sorad/sorad/fsm"
)

// endedLog collects the sessions every node of a test reports ended, with
// the node that reported each.
type endedLog struct {
	mu  sync.Mutex
	got []string // "<session_id> by <node>"
}

// watch makes n report to the log; call it again after n restarts.
func (l *endedLog) watch(n *testNode) {
	name := n.NodeName()
	n.OnSessionsEnded(func(chs []fsm.Channel) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, ch := range chs {
			l.got = append(l.got, ch.SessionID+" by "+name)
		}
	})
}

func (l *endedLog) reports() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.got)
	slices.Sort(out)
	return out
}

// recordSession acquires channel on n and records session there.
func recordSession(t *testing.T, n *testNode, channel, session string) {
	t.Helper()
	acquireOnTie(t, n, channel)
	if err := n.RecordSession(ctxT(t), channel, session, time.Now()); err != nil {
		t.Fatalf("record %s on %s: %v", session, n.NodeName(), err)
	}
}

// restartAfterCrash reopens a crashed node on its data directory, as a new
// process, and makes it report to l.
func restartAfterCrash(t *testing.T, n *testNode, l *endedLog) {
	t.Helper()
	n.crash()
	n.restart()
	l.watch(n)
}

// staleSessionsDone waits until n's process registered and dealt with the
// sessions recorded for its earlier processes.
func staleSessionsDone(t *testing.T, n *testNode, epoch uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s registered at epoch %d, its predecessors' sessions ended", n.NodeName(), epoch), func() bool {
		r := n.record(n.NodeName())
		return r != nil && r.Epoch == epoch && !n.needsRegistration() && !n.staleSessions.Load()
	})
}

// A member killed with its sessions and restarted, with nobody coming
// back to their channels, reports their ends itself, once; a restart of
// another member reports nothing more, and neither does a later takeover
// of the channels.
func TestRestartedMemberEndsItsEarlierSessionsOnce(t *testing.T) {
	nodes := formCluster(t, 3)
	var log endedLog
	for _, n := range nodes {
		log.watch(n)
	}
	n := nodes[1]
	recordSession(t, n, "a", "session-a")
	recordSession(t, n, "b", "session-b")
	acquireOnTie(t, n, "unrecorded")

	restartAfterCrash(t, n, &log)
	want := []string{"session-a by " + n.NodeName(), "session-b by " + n.NodeName()}
	waitFor(t, 10*time.Second, "both sessions reported ended", func() bool { return len(log.reports()) >= 2 })
	staleSessionsDone(t, n, 2)
	for _, other := range nodes {
		waitFor(t, 5*time.Second, "records gone on "+other.NodeName(), func() bool {
			return len(other.current().fsm.RecordedSessionsBefore(n.NodeName(), 2)) == 0
		})
	}

	restartAfterCrash(t, nodes[2], &log)
	staleSessionsDone(t, nodes[2], 2)
	restartAfterCrash(t, n, &log)
	staleSessionsDone(t, n, 3)
	for _, ch := range []string{"a", "b", "unrecorded"} {
		if a, err := nodes[0].AcquireChannel(ctxT(t), ch, ChannelOptions{}); err != nil || !a.Assigned {
			t.Fatalf("takeover of stale %s = %+v, %v", ch, a, err)
		}
	}
	if got := log.reports(); !slices.Equal(got, want) {
		t.Fatalf("sessions reported ended: %v, want %v", got, want)
	}
}

// A standalone node killed and restarted reports its earlier sessions'
// ends after the restart, once.
func TestRestartedStandaloneNodeEndsItsEarlierSessions(t *testing.T) {
	n := startNode(t, testConfig(t, newHostName("solo")))
	waitFor(t, 5*time.Second, "standalone node registered", func() bool { return n.Mode() == fsm.ModeNormal })
	var log endedLog
	log.watch(n)
	recordSession(t, n, "sora", "session-1")
	restartAfterCrash(t, n, &log)
	staleSessionsDone(t, n, 2)
	restartAfterCrash(t, n, &log)
	staleSessionsDone(t, n, 3)
	if got, want := log.reports(), []string{"session-1 by " + n.NodeName()}; !slices.Equal(got, want) {
		t.Fatalf("sessions reported ended: %v, want %v", got, want)
	}
	chans := n.Channels()
	if len(chans) != 1 || !chans[0].Stale || chans[0].NodeInChargeEpoch != 1 {
		t.Fatalf("channels = %+v, want sora still assigned at epoch 1, stale", chans)
	}
}

// When another node takes a channel over before the restarted holder ends
// its session, the takeover reports it and the restarted node does not.
func TestTakeoverBeforeTheRestartedHolderReportsOnce(t *testing.T) {
	nodes := formCluster(t, 3)
	var log endedLog
	for _, n := range nodes {
		log.watch(n)
	}
	n := nodes[1]
	recordSession(t, n, "a", "session-a")
	n.crash()
	n.restart() // no handler yet: its process leaves the record alone
	waitFor(t, 10*time.Second, "the restarted node registered", func() bool {
		r := nodes[0].record(n.NodeName())
		return r != nil && r.Epoch == 2
	})
	if a, err := nodes[0].AcquireChannel(ctxT(t), "a", ChannelOptions{}); err != nil || !a.Assigned {
		t.Fatalf("takeover of stale a = %+v, %v", a, err)
	}
	log.watch(n)
	staleSessionsDone(t, n, 2)
	if got, want := log.reports(), []string{"session-a by " + nodes[0].NodeName()}; !slices.Equal(got, want) {
		t.Fatalf("sessions reported ended: %v, want %v", got, want)
	}
}
