package cluster

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/fsm"
)

// A channel stays with a live holder whoever asks; once the holder is dead
// (no answer to the leader for FailoverTimeout) a connect elsewhere takes it
// over without a purge, and the old holder, back on its data, sees that the
// channel moved.
func TestTakeoverOnlyFromADeadHolder(t *testing.T) {
	nodes := formCluster(t, 3)
	holder, other := nodes[1], nodes[0]
	id := acquireOnTie(t, holder, "busy")
	waitFor(t, 3*time.Second, "assignment replicated", func() bool {
		owner, ok := other.ChannelOwner(id)
		return ok && owner == holder.NodeName()
	})

	a, err := other.AcquireChannel(ctxT(t), id, ChannelOptions{})
	if err != nil || a.Assigned || a.Local || a.Owner.Name != holder.NodeName() {
		t.Fatalf("acquire of a live node's channel = %+v, %v; want its holder, unchanged", a, err)
	}
	if ok, reason := holder.InCharge(id); !ok {
		t.Fatalf("holder not in charge of its channel: %s", reason)
	}

	holder.stop()
	// Without waiting for the peer timeout: a holder not heard from for a
	// moment is probed before anyone is sent to it.
	time.Sleep(redirectFreshness)
	a, err = other.AcquireChannel(ctxT(t), id, ChannelOptions{})
	if err != nil || !a.Assigned || !a.Local || a.Owner.Name != other.NodeName() {
		t.Fatalf("acquire after the holder died = %+v, %v; want a takeover by %s", a, err, other.NodeName())
	}

	holder.restart()
	waitFor(t, 5*time.Second, "the old holder sees the channel moved", func() bool {
		ok, reason := holder.InCharge(id)
		return !ok && reason == "CHANNEL-MOVED"
	})
}

// No node places a new channel on a draining node, and once it is gone its
// channels move on the next connect without waiting for FailoverTimeout.
func TestDrainingNodeTakesNoNewChannelAndHandsOverAtOnce(t *testing.T) {
	nodes := formCluster(t, 3, func(cfg *Config) { cfg.FailoverTimeout = time.Hour })
	asker, draining, other := nodes[0], nodes[1], nodes[2]
	held := acquireOnTie(t, draining, "held")
	for _, n := range nodes {
		waitFor(t, 3*time.Second, n.NodeName()+" reaches its peers", func() bool { return len(n.ConnectedPeers()) == 2 })
	}
	// asker takes nothing itself, so placement chooses between draining
	// and other, which tie; draining's name sorts first.
	if err := asker.SetMode(ctxT(t), fsm.ModeBlockNewSession); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "mode replicated", func() bool { return asker.Mode() == fsm.ModeBlockNewSession })

	if missed := draining.Drain(ctxT(t)); len(missed) != 0 {
		t.Fatalf("peers %v were not told", missed)
	}
	for i, n := range []*testNode{draining, asker} {
		a, err := n.AcquireChannel(ctxT(t), fmt.Sprint("new-", i), ChannelOptions{})
		if err != nil || a.Owner.Name != other.NodeName() {
			t.Fatalf("new channel asked of %s went to %q (%v), want %s", n.NodeName(), a.Owner.Name, err, other.NodeName())
		}
	}

	draining.stop()
	a, err := asker.AcquireChannel(ctxT(t), held, ChannelOptions{})
	if err != nil || !a.Assigned || a.Owner.Name != other.NodeName() {
		t.Fatalf("channel of the stopped draining node = %+v, %v; want it moved to %s", a, err, other.NodeName())
	}
}

// A holder whose cluster port refuses connections died with its process:
// its channel moves on the next connect at once, without waiting
// FailoverTimeout (an hour here), and it is no longer connected.
func TestRefusedPortIsDeadAtOnce(t *testing.T) {
	nodes := formCluster(t, 3, func(cfg *Config) { cfg.FailoverTimeout = time.Hour })
	holder, other := nodes[1], nodes[0]
	id := acquireOnTie(t, holder, "busy")
	waitFor(t, 3*time.Second, "assignment replicated", func() bool {
		owner, ok := other.ChannelOwner(id)
		return ok && owner == holder.NodeName()
	})
	holder.stop()
	// A holder heard from within redirectFreshness is trusted without a
	// probe; after that it is probed, and found gone.
	time.Sleep(redirectFreshness)
	a, err := other.AcquireChannel(ctxT(t), id, ChannelOptions{})
	if err != nil || !a.Assigned || a.Owner.Name == holder.NodeName() {
		t.Fatalf("acquire after the holder's process died = %+v, %v; want a takeover at once", a, err)
	}
	if other.Connected(holder.NodeName()) {
		t.Error("a peer whose port refuses connections is still listed connected")
	}
}

// When the Raft leader's process dies (its port refuses connections), a
// follower stands for election at once. The followers here would otherwise
// wait an hour: their heartbeat and election timeouts are set to that.
func TestLeaderProcessDeathElectsAtOnce(t *testing.T) {
	nodes := formCluster(t, 3)
	var lead *testNode
	waitFor(t, 5*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if inst := n.current(); inst != nil && inst.raft.State() == raft.Leader {
				lead = n
				return true
			}
		}
		return false
	})
	var followers []*testNode
	for _, n := range nodes {
		if n == lead {
			continue
		}
		followers = append(followers, n)
		inst := n.current()
		rc := inst.raft.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = time.Hour, time.Hour
		if err := inst.raft.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	lead.crash()
	waitFor(t, 10*time.Second, "a follower elected leader", func() bool {
		for _, n := range followers {
			if n.current().raft.State() == raft.Leader {
				return true
			}
		}
		return false
	})
	if _, err := followers[0].AcquireChannel(ctxT(t), "after", ChannelOptions{}); err != nil {
		t.Fatalf("a write after the election: %v", err)
	}
}

// Only a refused connection says a peer's process is gone: a reset may come
// from a live node's handshake bound, a timeout from a partition.
func TestPortClosed(t *testing.T) {
	wrap := func(err error) error {
		return unavailable(TypeContactNodeUnreachable, "cannot reach", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)})
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", wrap(syscall.ECONNREFUSED), true},
		{"reset", wrap(syscall.ECONNRESET), false},
		{"timeout", wrap(os.ErrDeadlineExceeded), false},
		{"no error", nil, false},
	}
	for _, tt := range tests {
		if got := portClosed(tt.err); got != tt.want {
			t.Errorf("%s: portClosed = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A node restarted after a crash answers its peers before its new process
// registers. The process that held its channels is gone: a connect
// elsewhere takes them over at once (FailoverTimeout is an hour here)
// rather than sending clients to the new process, which serves nobody
// until it registers, and placement gives the new process no channel
// before then.
func TestRestartedHolderIsTakenOverBeforeItRegisters(t *testing.T) {
	nodes := formCluster(t, 3, func(cfg *Config) { cfg.FailoverTimeout = time.Hour })
	asker, holder := nodes[0], nodes[1]
	id := acquireOnTie(t, holder, "busy")
	for _, n := range []*testNode{asker, nodes[2]} {
		waitFor(t, 3*time.Second, "assignment replicated on "+n.NodeName(), func() bool {
			owner, ok := n.ChannelOwner(id)
			return ok && owner == holder.NodeName()
		})
	}
	hold := make(chan struct{})
	holder.crash()
	holder.cfg.holdRegistration = hold
	holder.restart()
	defer close(hold)
	for _, n := range []*testNode{asker, nodes[2]} {
		waitFor(t, 5*time.Second, n.NodeName()+" hears the new process", func() bool {
			p, ok := n.liveness.get(holder.NodeName())
			return ok && p.status.Incarnation == holder.incarnation && !p.gone()
		})
	}
	if r := asker.record(holder.NodeName()); r == nil || r.Epoch != 1 {
		t.Fatalf("record of the held-back node = %+v, want epoch 1 (not registered again)", r)
	}

	a, err := asker.AcquireChannel(ctxT(t), id, ChannelOptions{})
	if err != nil || !a.Assigned || a.Owner.Name == holder.NodeName() {
		t.Fatalf("acquire of the restarted holder's channel = %+v, %v; want a takeover at once", a, err)
	}
	for i := range 4 {
		a, err := asker.AcquireChannel(ctxT(t), fmt.Sprint("new-", i), ChannelOptions{})
		if err != nil || a.Owner.Name == holder.NodeName() {
			t.Fatalf("new channel went to %q (%v); want a node whose process is registered", a.Owner.Name, err)
		}
	}
}
