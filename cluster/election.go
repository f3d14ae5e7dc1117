package cluster

import (
	"time"

	"github.com/hashicorp/raft"
)

// A follower that finds the Raft leader's cluster port closed (its process
// died: the port refuses connections) stands for election at once, as a
// leadership transfer makes a node do, instead of waiting for its heartbeat
// timeout: writes (a dead node's channels moving, above all) resume within
// an election round trip.
//
// The first time, only one follower stands, the voter whose name sorts
// first among those not known to be down, so that two do not split the vote
// (a split vote would cost an election timeout). Its election can come to
// nothing: a voter whose log is ahead of the candidate's refuses its vote.
// Raft would then wait for an election timeout (a candidate does not stand
// again before it, whatever it is told), so once an election has left the
// cluster without a leader while the dead leader's port still refuses, every
// follower stands, each at most once per two election timeouts. The one
// with the longest log wins. An election is always safe in Raft; at worst
// it costs a term.

// standForElection is called when a probe finds the port of the node named
// name closed.
func (c *Cluster) standForElection(name string) {
	inst := c.current()
	if inst == nil || inst.raft.State() != raft.Follower {
		return
	}
	firstTry := false
	switch _, leader := inst.raft.LeaderWithID(); string(leader) {
	case name:
		c.deadLeader.Store(&name)
		firstTry = true
	case "":
		// An election since the leader died found no winner yet.
		if dead := c.deadLeader.Load(); dead == nil || *dead != name {
			return
		}
	default:
		return
	}
	voter := false
	for _, s := range inst.servers() {
		id := string(s.ID)
		if s.Suffrage != raft.Voter || id == name {
			continue
		}
		if id == c.cfg.NodeName {
			voter = true
		} else if firstTry && id < c.cfg.NodeName && c.mayBeUp(id) {
			return // that one stands
		}
	}
	if !voter {
		return
	}
	now := time.Now().UnixNano()
	last := c.electionAsked.Load()
	if now-last < int64(2*c.cfg.Raft.ElectionTimeout) || !c.electionAsked.CompareAndSwap(last, now) {
		return
	}
	self, addr := raft.ServerID(c.cfg.NodeName), raft.ServerAddress(c.selfAddress())
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(self), Addr: []byte(addr)}}
	if err := inst.transport.TimeoutNow(self, addr, req, &raft.TimeoutNowResponse{}); err != nil {
		c.log.Warn("could not stand for election after the leader's process died", "leader", name, "error", err)
		return
	}
	c.log.Info("the leader's process died (its cluster port refuses connections); standing for election", "leader", name)
}

// mayBeUp reports whether a peer may be up as far as this node knows: it
// answered within PeerTimeout, or it has not been probed yet (a node just
// joined knows nobody).
func (c *Cluster) mayBeUp(name string) bool {
	p, ok := c.liveness.get(name)
	if !ok {
		return true
	}
	return !p.gone() && time.Since(p.lastOK) < c.cfg.PeerTimeout
}
