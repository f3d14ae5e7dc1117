package cluster

import (
	"time"

	"github.com/hashicorp/raft"
)

// A follower that finds the Raft leader's cluster port closed (its process
// died: the port refuses connections) stands for election at once, as a
// leadership transfer makes a node do, instead of waiting for its heartbeat
// timeout: writes (a dead node's channels moving, above all) resume within
// an election round trip. Only one follower does, the live voter whose name
// sorts first, so that two do not split the vote. An election is always
// safe in Raft; at worst it costs a term.

// standForElection is called when a probe finds the port of the node named
// name closed.
func (c *Cluster) standForElection(name string) {
	inst := c.current()
	if inst == nil {
		return
	}
	// A follower of the dead node stands; so does a candidate whose round
	// came to nothing (a vote lost to a log ahead of its own), again once
	// the rate limit below allows, while the old leader's port refuses.
	switch inst.raft.State() {
	case raft.Follower:
		if _, leader := inst.raft.LeaderWithID(); string(leader) != name {
			return
		}
	case raft.Candidate:
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
		} else if id < c.cfg.NodeName && c.Connected(id) {
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
