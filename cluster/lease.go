package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The serving lease: a node serves its channels only while it has recently
// made a round trip to the Raft leader, so that a node cut off from the
// cluster stops serving before anyone may take its channels over.
//
// A follower renews its lease with a request to the leader it knows; a
// leader renews its own by confirming its leadership with a quorum
// (VerifyLeader). Either way the lease runs for LeaseTimeout from the moment
// the request was sent, so it never outlives what the answer proves. The
// leader notes when it last answered each node (a grant).
//
// The leader takes a channel over (takeOverAsLeader) only when its holder
// has been silent for FailoverTimeout, counted from the latest of its last
// probe answer, its last grant, and the moment this node became leader (a
// grant of an earlier leader is never later than that, up to the time a
// deposed leader takes to notice: at most about twice the Raft leader
// lease). With LeaseTimeout shorter than FailoverTimeout by more than that,
// the holder's lease has ended, and it has closed its clients, before the
// channel can move. A purge of a node the leader cannot reach waits the
// same way (waitLeaseOver).
//
// An older leader answers the lease request with 404: its answer still
// proves the round trip, and it takes channels over by probes only, as it
// always did (mixed versions during a rolling upgrade).

// pathLease is where a follower renews its lease, on the leader.
const pathLease = "/internal/v1/lease"

type leaseRequest struct {
	NodeName string `json:"node_name"`
}

// lease is this node's serving lease.
type lease struct {
	timeout time.Duration
	// changed is called, outside the lock, when the lease is gained or
	// lost.
	changed func(held bool)

	mu    sync.Mutex
	until time.Time // the lease is held before this instant
	held  bool      // as last reported through changed
	// gained is closed while held, and replaced by an open one when the
	// lease is lost: WaitLease waits on it.
	gained chan struct{}
	timer  *time.Timer
}

func newLease(timeout time.Duration, changed func(held bool)) *lease {
	return &lease{timeout: timeout, changed: changed, gained: make(chan struct{})}
}

// lost marks the lease not held. l.mu is held.
func (l *lease) lost() {
	if l.held {
		l.held = false
		l.gained = make(chan struct{})
	}
}

// renew extends the lease to LeaseTimeout after sent, the moment the round
// trip that proved it began.
func (l *lease) renew(sent time.Time) {
	until := sent.Add(l.timeout)
	l.mu.Lock()
	left := time.Until(until)
	if left <= 0 || !until.After(l.until) {
		l.mu.Unlock()
		return
	}
	l.until = until
	if l.timer == nil {
		l.timer = time.AfterFunc(left, l.expire)
	} else {
		l.timer.Reset(left)
	}
	gained := !l.held
	if gained {
		l.held = true
		close(l.gained)
	}
	l.mu.Unlock()
	if gained {
		l.changed(true)
	}
}

// expire runs when the lease may have run out.
func (l *lease) expire() {
	l.mu.Lock()
	if time.Now().Before(l.until) || !l.held {
		l.mu.Unlock()
		return
	}
	l.lost()
	l.mu.Unlock()
	l.changed(false)
}

// valid reports whether the lease is held at this instant.
func (l *lease) valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until)
}

// drop ends the lease now and reports whether it was held.
func (l *lease) drop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := l.held
	l.until = time.Time{}
	l.lost()
	return held
}

func (l *lease) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.until = time.Time{}
	l.lost()
}

// state reports whether the lease is held now, and the channel closed
// once it is gained (already closed while held).
func (l *lease) state() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until), l.gained
}

// LeaseHeld reports whether this node may serve its channels now: it made
// a round trip to the Raft leader less than LeaseTimeout ago.
func (c *Cluster) LeaseHeld() bool { return c.lease.valid() }

// WaitLease waits, within ctx, until this node holds its lease (a node just
// started, or back from a partition, gets it within a renewal).
func (c *Cluster) WaitLease(ctx context.Context) bool {
	for {
		valid, gained := c.lease.state()
		if valid {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-gained:
			// Gained, or held until the expiry that is due: look again
			// once that has run.
			if !sleepCtx(ctx, time.Millisecond) {
				return false
			}
		}
	}
}

// OnLeaseLost sets what this node does when its lease ends: close the
// clients of its channels. It is called synchronously, before anything
// else may happen to the channels, and must not block for long.
func (c *Cluster) OnLeaseLost(f func()) { c.leaseLost.Store(&f) }

// leaseChanged is the lease's changed callback.
func (c *Cluster) leaseChanged(held bool) {
	if held {
		c.log.Info("cluster lease held: serving channels")
	} else {
		c.log.Warn("cluster lease lost: no round trip to the Raft leader for cluster_lease_timeout; closing this node's clients and refusing connects until the cluster answers again",
			"cluster_lease_timeout", c.cfg.LeaseTimeout.String())
		if f := c.leaseLost.Load(); f != nil {
			(*f)()
		}
	}
	c.signalChange()
}

// dropLease gives the lease up now: this node is leaving its cluster (to
// join another), whose channels it may no longer serve.
func (c *Cluster) dropLease() {
	if !c.lease.drop() {
		return
	}
	c.log.Info("leaving this cluster: its lease is given up and this node's clients closed")
	if f := c.leaseLost.Load(); f != nil {
		(*f)()
	}
	c.signalChange()
}

// leaseLoop renews the lease four times per LeaseTimeout, each attempt
// bounded by that period so attempts never pile up.
func (c *Cluster) leaseLoop(ctx context.Context) {
	period := c.cfg.LeaseTimeout / 4
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		c.renewLease(ctx, period)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) renewLease(ctx context.Context, bound time.Duration) {
	inst := c.current()
	if inst == nil || c.isJoining() || c.Purged() {
		return
	}
	sent := time.Now()
	if inst.raft.State() == raft.Leader {
		c.leaderSince(inst)
		if inst.raft.VerifyLeader().Error() == nil {
			c.lease.renew(sent)
		}
		return
	}
	// A follower that missed heartbeats (a short cut) may have stood for
	// election and know no leader for a while: it asks the last one it
	// knew, which answers only if it still leads.
	addr, _ := inst.raft.LeaderWithID()
	if addr != "" {
		c.lastLeader.Store(&addr)
	} else if last := c.lastLeader.Load(); last != nil {
		addr = *last
	} else {
		return
	}
	body, err := json.Marshal(leaseRequest{NodeName: c.cfg.NodeName})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	_, status, err := c.client.post(ctx, string(addr), pathLease, body, false)
	if err == nil || status == http.StatusNotFound {
		c.lease.renew(sent)
	}
}

// serveLease answers a follower's renewal, on the leader.
func (c *Cluster) serveLease(w http.ResponseWriter, r *http.Request) {
	var req leaseRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInternalBody)).Decode(&req); err != nil {
		writeError(w, invalid(TypeInvalidCommand, "lease request: "+err.Error()))
		return
	}
	if from := caller(r); c.authenticated() && from != req.NodeName {
		writeError(w, invalid(TypeNotMember, from+" cannot renew the lease of "+req.NodeName))
		return
	}
	inst := c.current()
	if inst == nil || inst.raft.State() != raft.Leader {
		writeError(w, unavailable(TypeNotLeader, c.cfg.NodeName+" is not the leader", nil))
		return
	}
	c.grants.grant(req.NodeName, time.Now())
	writeJSON(w, http.StatusOK, struct{}{})
}

// grants is, on the leader, when it last renewed each node's lease.
type grants struct {
	mu   sync.Mutex
	last map[string]time.Time
	// term and since: the Raft term this node led in last, and when it
	// found itself leading it.
	term  uint64
	since time.Time
}

func (g *grants) grant(name string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]time.Time{}
	}
	g.last[name] = at
}

func (g *grants) lastGrant(name string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last[name]
}

func (g *grants) forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.last, name)
}

// leaderSince returns when this node found itself leading its current
// term; the first call in a term says now, later than the election, which
// only makes the waits it bounds longer.
func (c *Cluster) leaderSince(inst *instance) time.Time {
	term := inst.raft.CurrentTerm()
	c.grants.mu.Lock()
	defer c.grants.mu.Unlock()
	if c.grants.term != term {
		c.grants.term, c.grants.since = term, time.Now()
		clear(c.grants.last) // grants of an earlier term of ours are older than since
	}
	return c.grants.since
}

// heardFrom is, on the leader, the latest sign that a node may still hold a
// lease or serve: its last probe answer, its last grant, and, as a bound
// on grants by earlier leaders, when this node became leader.
func (c *Cluster) heardFrom(inst *instance, name string) time.Time {
	last := c.leaderSince(inst)
	if g := c.grants.lastGrant(name); g.After(last) {
		last = g
	}
	if p, ok := c.liveness.get(name); ok && p.lastOK.After(last) {
		last = p.lastOK
	}
	return last
}

// waitLeaseOver waits, on the leader, before a node that does not answer is
// purged: it may be cut off with its clients, and serves them until its
// lease ends, which it has once FailoverTimeout has passed since
// heardFrom. A node whose process is gone serves nobody.
func (c *Cluster) waitLeaseOver(ctx context.Context, inst *instance, name string) error {
	if p, ok := c.liveness.get(name); ok && p.gone() {
		return nil
	}
	wait := time.Until(c.heardFrom(inst, name).Add(c.cfg.FailoverTimeout))
	if wait <= 0 {
		return nil
	}
	c.log.Info("waiting for the lease of a node cut off from the cluster to end before purging it", "node", name, "wait", wait.Round(time.Millisecond).String())
	select {
	case <-ctx.Done():
		return unavailable(TypeHolderNotDeadYet, fmt.Sprintf("%s may still serve its clients for %v", name, wait.Round(time.Millisecond)), ctx.Err())
	case <-time.After(wait):
		return nil
	}
}
