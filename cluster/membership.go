package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/fsm"
)

// Joining works as Sora's JoinCluster: called on node X with contact Y, X
// becomes a member of Y's cluster (Y's cluster is a one-node cluster if Y is
// alone). Raft cannot merge two logs, so X must give up its own state: only a
// node that is alone in its cluster (or was purged from one) may join
// another, and it starts over with an empty Raft state that the leader of
// Y's cluster fills. A node already in a multi-node cluster refuses.
//
// Nodes that start together with each other in contact_node_name_list join
// by this rule (autoJoinLoop): a lone node joins a contact that is in a
// multi-node cluster, or a lone contact whose name sorts before its own. The
// node whose name sorts first never joins another lone node, so nodes
// converge on one cluster: any cluster with two members was formed by a lone
// node joining one that never leaves, and every remaining lone node then
// joins a multi-node cluster.

// Join makes this node join the cluster of contact and returns the names of
// the cluster's nodes.
func (c *Cluster) Join(ctx context.Context, contact string) ([]string, error) {
	if _, _, err := SplitNodeName(contact); err != nil {
		return nil, invalid(TypeInvalidNodeName, err.Error())
	}
	if contact == c.cfg.NodeName {
		return nil, invalid(TypeCannotJoinSelf, "contact_node_name is this node; name a node of the cluster to join")
	}
	if err := c.lockMembership(ctx); err != nil {
		return nil, err
	}
	defer c.unlockMembership()

	st, err := c.contactStatus(ctx, contact)
	if err != nil {
		return nil, err
	}
	if inst := c.current(); inst != nil && !c.Purged() && hasServer(inst.servers(), contact) {
		return c.memberNames(), nil // already in that cluster
	}
	if !c.joinable() {
		return nil, invalid(TypeAlreadyInCluster, map[string]any{
			"message":        fmt.Sprintf("%s is already a member of a cluster; call JoinCluster on %s with this node as contact_node_name to add it", c.cfg.NodeName, contact),
			"node_name_list": c.memberNames(),
		})
	}
	if st.Joining || !st.Registered {
		return nil, unavailable(TypeContactNodeBusy, map[string]string{"contact_node": contact}, nil)
	}
	if err := c.joinVia(ctx, contact); err != nil {
		return nil, err
	}
	return c.memberNames(), nil
}

// contactStatus asks contact for its status and checks that it is the node
// it was named as.
func (c *Cluster) contactStatus(ctx context.Context, contact string) (nodeStatus, error) {
	var st nodeStatus
	probeCtx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	if err := c.client.get(probeCtx, c.addressOf(contact), pathStatus, &st); err != nil {
		return st, unavailable(TypeContactNodeUnreachable, map[string]string{"contact_node": contact}, err)
	}
	if st.NodeName != contact {
		return st, invalid(TypeContactNodeMismatch, map[string]string{"contact_node": contact, "answered_as": st.NodeName})
	}
	return st, nil
}

// joinable reports whether this node may leave its current state to join
// another cluster: it is alone in its cluster, or was purged.
func (c *Cluster) joinable() bool {
	inst := c.current()
	if inst == nil || c.isJoining() {
		return false
	}
	if c.Purged() {
		return true
	}
	servers := inst.servers()
	return len(servers) == 1 && string(servers[0].ID) == c.cfg.NodeName
}

// memberNames lists the names of the registered nodes, sorted.
func (c *Cluster) memberNames() []string {
	var names []string
	for _, n := range c.Nodes() {
		if n.Record != nil {
			names = append(names, n.Name)
		}
	}
	return names
}

// joinVia replaces this node's Raft state with an empty one and asks contact
// to add it. On failure the node forms a fresh one-node cluster again, so it
// stays usable. The caller holds the membership lock.
func (c *Cluster) joinVia(ctx context.Context, contact string) error {
	c.log.Info("joining cluster", "contact_node", contact)
	// The channels of the cluster this node leaves are not the new
	// cluster's: their clients go first.
	c.dropLease()
	if err := c.replaceInstance(false); err != nil {
		return c.recoverAlone(unavailable(TypeJoinFailed, "cannot reset raft state", err))
	}
	ctx, cancel := context.WithTimeout(ctx, 3*c.cfg.RequestTimeout)
	defer cancel()
	req, _ := json.Marshal(joinRequest{Register: fsm.RegisterNode{
		Info: c.info(), Incarnation: c.incarnation, TimeMicros: time.Now().UnixMicro(),
	}})
	var lastErr error
	for attempt := 0; ; attempt++ {
		_, _, err := c.client.post(ctx, c.addressOf(contact), pathJoin, req, false)
		if err == nil {
			break
		}
		lastErr = err
		if !retryable(err) || !sleepCtx(ctx, backoff(attempt)) {
			if c.reachedByLeader() {
				break // the leader added us but its answer was lost
			}
			return c.recoverAlone(unavailable(TypeJoinFailed, map[string]string{"contact_node": contact}, lastErr))
		}
	}
	// The leader has added and registered us; wait for our copy of the
	// state to show it before answering.
	err := errClosed
	if inst := c.current(); inst != nil {
		err = inst.applied.wait(ctx, func() bool {
			n, ok := inst.fsm.Node(c.cfg.NodeName)
			return ok && n.Incarnation == c.incarnation
		})
	}
	c.mu.Lock()
	c.joining = false
	c.mu.Unlock()
	if err != nil {
		return unavailable(TypeJoinFailed, "joined, but the cluster state did not reach this node in time", err)
	}
	c.log.Info("joined cluster", "contact_node", contact)
	return nil
}

// reachedByLeader reports whether the empty instance of a join has received
// a configuration naming this node: then some leader counts it as a voter,
// and forming a cluster of its own would split the cluster.
func (c *Cluster) reachedByLeader() bool {
	inst := c.current()
	return inst != nil && hasServer(inst.servers(), c.cfg.NodeName)
}

// recoverAlone forms a fresh one-node cluster after a failed join and
// returns cause.
func (c *Cluster) recoverAlone(cause error) error {
	c.log.Error("join failed; continuing as a one-node cluster", "error", cause)
	if err := c.replaceInstance(true); err != nil {
		c.log.Error("cannot form a one-node cluster after a failed join", "error", err)
	}
	c.mu.Lock()
	c.joining = false
	c.mu.Unlock()
	return cause
}

// replaceInstance stops the current Raft instance, deletes its state and
// starts an empty one, bootstrapped as a one-node cluster if bootstrap is
// set. Until the caller clears joining, the node reports mode initial.
func (c *Cluster) replaceInstance(bootstrap bool) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	old := c.inst
	c.inst, c.joining, c.purged = nil, true, false
	c.mu.Unlock()
	c.lastLeader.Store(nil) // a leader of the state given up
	c.setApart(nil)
	if old != nil {
		if err := old.close(); err != nil {
			c.log.Warn("closing raft instance", "error", err)
		}
	}
	if err := os.RemoveAll(raftDir(c.cfg.DataDir)); err != nil {
		return fmt.Errorf("remove raft state: %w", err)
	}
	inst, err := c.openInstance(bootstrap)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed { // Close ran while the instance started: it is ours to stop
		c.mu.Unlock()
		return errors.Join(errClosed, inst.close())
	}
	c.inst = inst
	c.mu.Unlock()
	return nil
}

// errClosed is returned by membership changes that race with Close.
var errClosed = errors.New("cluster node closed")

// lockMembership takes the membership lock, giving up when ctx ends.
func (c *Cluster) lockMembership(ctx context.Context) error {
	select {
	case c.membership <- struct{}{}:
		return nil
	case <-ctx.Done():
		return unavailable(TypeContactNodeBusy, "another membership change is in progress on "+c.cfg.NodeName, ctx.Err())
	}
}

func (c *Cluster) unlockMembership() { <-c.membership }

// addMember runs on the leader: it adds the node as a Raft voter and
// registers it.
func (c *Cluster) addMember(ctx context.Context, inst *instance, reg fsm.RegisterNode) (fsm.Result, error) {
	if _, _, err := SplitNodeName(reg.Info.Name); err != nil {
		return fsm.Result{}, invalid(TypeInvalidNodeName, err.Error())
	}
	if reg.Info.Name == c.cfg.NodeName {
		return fsm.Result{}, invalid(TypeInvalidNodeName, reg.Info.Name+" is the name of the leader itself")
	}
	if err := c.lockMembership(ctx); err != nil {
		return fsm.Result{}, err
	}
	defer c.unlockMembership()
	if c.isJoining() {
		return fsm.Result{}, unavailable(TypeContactNodeBusy, c.cfg.NodeName+" is joining another cluster", nil)
	}
	timeout := c.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := inst.raft.AddVoter(raft.ServerID(reg.Info.Name), raft.ServerAddress(reg.Info.RaftAddress), 0, timeout)
	if err := f.Error(); err != nil {
		return fsm.Result{}, raftWriteError(fmt.Errorf("add voter %s: %w", reg.Info.Name, err))
	}
	encoded, err := fsm.Encode(reg)
	if err != nil {
		return fsm.Result{}, err
	}
	res, err := c.applyAsLeader(ctx, inst, encoded)
	if err == nil {
		err = resultErr(res)
	}
	if err != nil {
		return res, fmt.Errorf("register %s: %w", reg.Info.Name, err)
	}
	c.log.Info("added cluster member", "member", reg.Info.Name, "epoch", res.Node.Epoch)
	return res, nil
}

// autoJoinLoop joins the configured contact nodes while this node is alone
// (see the rule at the top of this file).
func (c *Cluster) autoJoinLoop(ctx context.Context) {
	var lastApartCheck time.Time
	for {
		if c.joinable() {
			c.tryAutoJoin(ctx)
		} else if time.Since(lastApartCheck) >= apartCheckInterval {
			c.checkApart(ctx)
			lastApartCheck = time.Now()
		}
		// Jitter keeps nodes started together from probing in lockstep.
		if !sleepCtx(ctx, c.cfg.ProbeInterval/2+rand.N(c.cfg.ProbeInterval)) {
			return
		}
	}
}

// tryAutoJoin joins, of the clusters its contacts are in, the one every
// other would merge into (see apart.go): the largest, then the one with the
// name that sorts first; a lone contact only if its name sorts before this
// node's.
func (c *Cluster) tryAutoJoin(ctx context.Context) {
	var (
		best    []string
		contact string
	)
	for _, name := range c.cfg.ContactNodeNames {
		if ctx.Err() != nil {
			return
		}
		if name == c.cfg.NodeName {
			continue
		}
		st, err := c.contactStatus(ctx, name)
		if err != nil || !st.Registered || st.Joining {
			continue
		}
		members := st.Members
		if len(members) == 0 {
			members = []string{name}
		}
		if len(members) == 1 && name > c.cfg.NodeName {
			continue // that node joins us, or someone sorting before both
		}
		if best == nil || mergesInto(best, members) {
			best, contact = members, name
		}
	}
	if best == nil {
		return
	}
	if err := c.lockMembership(ctx); err != nil {
		return
	}
	defer c.unlockMembership()
	if !c.joinable() { // someone joined us meanwhile
		return
	}
	if err := c.joinVia(ctx, contact); err != nil {
		c.log.Warn("automatic join failed", "contact_node", contact, "error", err)
	}
}

// Purge removes a node that is down from the cluster: from Raft membership
// and from the replicated state, freeing its channels. A node that answers
// is refused with NODE-IS-ALIVE: one this node sees as connected is probed
// again first (it may have died since its last probe; the leader probes it
// once more before removing it).
func (c *Cluster) Purge(ctx context.Context, target string) error {
	if target == c.cfg.NodeName {
		return invalid(TypeCannotPurgeSelf, map[string]string{"target_node": target, "message": "a node cannot purge itself; call PurgeClusterNode on another node"})
	}
	inst := c.current()
	if inst == nil || c.Mode() == fsm.ModeInitial {
		return unavailable(TypeNodeNotReady, c.cfg.NodeName+" is not a registered member of a cluster", nil)
	}
	if _, ok := inst.fsm.Node(target); !ok && !hasServer(inst.servers(), target) {
		return invalid(TypeNodeNotFound, targetNode{TargetNode: target})
	}
	if c.Connected(target) && c.probeNow(ctx, inst, target) {
		return invalid(TypeNodeIsAlive, targetNode{TargetNode: target})
	}
	body, _ := json.Marshal(purgeRequest{Node: target})
	_, err := c.onLeader(ctx, pathPurge, body, func(ctx context.Context, inst *instance) (any, error) {
		return struct{}{}, c.purgeAsLeader(ctx, inst, target)
	})
	return err
}

// onLeader runs op on the leader: here when this node leads, else by
// posting body to path on the leader, which runs the same op. Retryable
// failures (no leader yet, leadership moving) are retried within
// RequestTimeout. It returns the encoded answer, and once it has one, waits
// until this node's copy of the state has caught up with the leader's
// commits so that reads here see the change.
func (c *Cluster) onLeader(ctx context.Context, path string, body []byte, op func(context.Context, *instance) (any, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		raw, err := c.onLeaderOnce(ctx, path, body, op)
		if err == nil || !retryable(err) || !sleepCtx(ctx, backoff(attempt)) {
			return raw, err
		}
	}
}

func (c *Cluster) onLeaderOnce(ctx context.Context, path string, body []byte, op func(context.Context, *instance) (any, error)) ([]byte, error) {
	inst := c.current()
	if inst == nil || c.isJoining() {
		return nil, unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	if inst.raft.State() == raft.Leader {
		out, err := op(ctx, inst)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
	leader, _ := inst.raft.LeaderWithID()
	if leader == "" {
		return nil, unavailable(TypeNoQuorum, "no leader elected", nil)
	}
	raw, _, err := c.client.post(ctx, string(leader), path, body, false)
	if err != nil {
		return nil, err
	}
	_ = inst.waitApplied(ctx, inst.raft.CommitIndex())
	return raw, nil
}

// purgeAsLeader runs on the leader. Before purging it probes the target
// itself, now: a node that answers is alive whatever the caller's view was,
// and a dead one is purged without waiting for the leader's own view of it
// to time out.
func (c *Cluster) purgeAsLeader(ctx context.Context, inst *instance, target string) error {
	if target == c.cfg.NodeName || c.probeNow(ctx, inst, target) {
		return invalid(TypeNodeIsAlive, targetNode{TargetNode: target})
	}
	if err := c.waitLeaseOver(ctx, inst, target); err != nil {
		return err
	}
	return c.removeMember(ctx, inst, target)
}
