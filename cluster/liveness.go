package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/sorad/sorad/fsm"
)

// liveness is this node's view of which peers it can reach. A probe is a GET
// of the peer's status over the internal protocol; a peer whose last good
// probe is older than PeerTimeout is not connected. Readers never wait on the
// network: they read the latest results.
type liveness struct {
	mu    sync.Mutex
	peers map[string]peerProbe
}

type peerProbe struct {
	lastOK time.Time
	status nodeStatus
	// refused is when a probe last found the peer's cluster port closed
	// (connection refused): its process is gone, a stronger sign than
	// silence. Zero, or before lastOK, when it answered since.
	refused time.Time
}

// gone reports whether the peer's port refused a probe since its last
// answer: the process died, the machine did not (a lost machine or a
// partition is silent instead).
func (p peerProbe) gone() bool { return p.refused.After(p.lastOK) }

func newLiveness() *liveness {
	return &liveness{peers: map[string]peerProbe{}}
}

func (l *liveness) record(name string, st nodeStatus, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.peers[name] = peerProbe{lastOK: at, status: st}
}

// tried notes that a peer was probed without an answer: it is known, and
// not connected.
func (l *liveness) tried(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.peers[name]; !ok {
		l.peers[name] = peerProbe{}
	}
}

// refusedAt notes that a probe found the peer's port closed.
func (l *liveness) refusedAt(name string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[name]
	p.refused = at
	l.peers[name] = p
}

func (l *liveness) forget(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.peers, name)
}

// keepOnly drops peers that are no longer targets.
func (l *liveness) keepOnly(names map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := range l.peers {
		if _, ok := names[n]; !ok {
			delete(l.peers, n)
		}
	}
}

func (l *liveness) get(name string) (peerProbe, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[name]
	return p, ok
}

// Connected reports whether this node currently reaches the named node. A
// node is always connected to itself.
func (c *Cluster) Connected(name string) bool {
	if name == c.cfg.NodeName {
		return true
	}
	p, ok := c.liveness.get(name)
	return ok && time.Since(p.lastOK) < c.cfg.PeerTimeout && !p.gone()
}

// redirectFreshness: a channel's holder whose last answer is older than
// this is probed before a client is sent to it, so that a node that died
// since the last probe is seen at once (its channel then fails over instead
// of the client being redirected to a dead node).
const redirectFreshness = 250 * time.Millisecond

// reachableNow reports whether a channel's holder can take a client now:
// this node, or a connected peer that is not stopping, runs the process the
// cluster's records registered for it, and answered recently or answers a
// probe.
func (c *Cluster) reachableNow(ctx context.Context, inst *instance, holder fsm.Node) bool {
	if holder.Name == c.cfg.NodeName {
		return true
	}
	p, ok := c.liveness.get(holder.Name)
	if !ok || time.Since(p.lastOK) >= c.cfg.PeerTimeout || p.status.Draining || p.gone() {
		return false
	}
	if time.Since(p.lastOK) < redirectFreshness && p.status.Incarnation == holder.Incarnation {
		return true
	}
	if !c.probeNow(ctx, inst, holder.Name) {
		return false
	}
	p, _ = c.liveness.get(holder.Name)
	return !p.status.Draining && p.status.Incarnation == holder.Incarnation
}

// replaced reports whether the process that answers as a node is not the
// one its record (n, from this node's copy of the state) registered: the
// node restarted, and its new process has not registered yet. The earlier
// process, and with it every channel it held, is gone; until the new one
// registers it serves nobody.
func (c *Cluster) replaced(n fsm.Node) bool {
	if n.Name == c.cfg.NodeName {
		return false
	}
	p, ok := c.liveness.get(n.Name)
	return ok && !p.lastOK.IsZero() && p.status.Incarnation != n.Incarnation
}

// isDraining reports whether a node is stopping: this node after Drain, a
// peer by the status it last pushed or answered.
func (c *Cluster) isDraining(name string) bool {
	if name == c.cfg.NodeName {
		return c.draining.Load()
	}
	p, ok := c.liveness.get(name)
	return ok && p.status.Draining
}

// probeTargets maps every peer this node knows of (replicated node records
// and Raft configuration) to its cluster address.
func (c *Cluster) probeTargets() map[string]string {
	targets := map[string]string{}
	inst := c.current()
	if inst == nil {
		return targets
	}
	for _, n := range inst.fsm.Nodes() {
		targets[n.Name] = n.RaftAddress
	}
	for _, s := range inst.servers() {
		targets[string(s.ID)] = string(s.Address)
	}
	delete(targets, c.cfg.NodeName)
	return targets
}

// probeLoop probes every peer each ProbeInterval, all in parallel, each probe
// bounded by the interval so rounds never pile up.
func (c *Cluster) probeLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		targets := c.probeTargets()
		c.liveness.keepOnly(targets)
		c.probeEach(ctx, targets)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeEach probes the given peers (name to address) once, in parallel.
func (c *Cluster) probeEach(ctx context.Context, targets map[string]string) {
	var wg sync.WaitGroup
	for name, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.probe(ctx, name, addr)
		}()
	}
	wg.Wait()
}

// probedOnce probes, before this node places a channel, the peers it has
// never probed: a node that has just started (or just learnt its peers
// from the replicated state) knows none of them as connected yet, and
// would find no node to place on.
func (c *Cluster) probedOnce(ctx context.Context) {
	unknown := map[string]string{}
	for name, addr := range c.probeTargets() {
		if _, ok := c.liveness.get(name); !ok {
			unknown[name] = addr
		}
	}
	if len(unknown) > 0 {
		c.probeEach(ctx, unknown)
	}
}

// probeNow probes one peer at once, bounded by ProbeInterval, and reports
// whether it answered.
func (c *Cluster) probeNow(ctx context.Context, inst *instance, name string) bool {
	addr := c.addressOf(name)
	if n, ok := inst.fsm.Node(name); ok {
		addr = n.RaftAddress
	}
	return c.probe(ctx, name, addr)
}

// probe asks a peer for its status, records the answer, and reports whether
// there was one.
func (c *Cluster) probe(ctx context.Context, name, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeInterval)
	defer cancel()
	var st nodeStatus
	if err := c.client.get(ctx, addr, pathStatus, &st); err != nil || st.NodeName != name {
		if portClosed(err) {
			c.liveness.refusedAt(name, time.Now())
			c.standForElection(name)
		} else {
			c.liveness.tried(name)
		}
		return false
	}
	c.liveness.record(name, st, time.Now())
	// A leader that no longer lists this node has purged it (for example
	// while this node was cut off). Stop acting as a member.
	if st.RaftState == "Leader" && !slices.Contains(st.Members, c.cfg.NodeName) && !c.isJoining() && !c.joinable() {
		if inst := c.current(); inst != nil && hasServer(inst.servers(), name) {
			c.markPurged()
		}
	}
	return true
}

// portClosed reports whether a probe failed because nothing listens on the
// peer's port any more: the connection was refused. A reset is not enough:
// a live node's cluster port resets connections beyond its handshake
// bound, which anyone who reaches the port can fill.
func portClosed(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// peerConnections returns the connection count a peer last reported.
func (c *Cluster) peerConnections(name string) int {
	if name == c.cfg.NodeName {
		return c.cfg.Connections()
	}
	p, _ := c.liveness.get(name)
	return p.status.Connections
}
