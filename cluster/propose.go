package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/fsm"
)

// propose commits cmd through Raft from any node and waits until this node's
// state machine has applied it, so a read after a write on the same node sees
// the write. Retryable failures (no leader yet, leadership changing, a peer
// restarting) are retried until RequestTimeout; every command is idempotent
// or compare-and-set, so a retry after an ambiguous failure is harmless.
// A refused command is not an error here: its Result carries Err.
func (c *Cluster) propose(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, inst, err := c.commit(ctx, cmd)
	if err == nil {
		// The write is committed; waiting for the local copy only makes
		// reads consistent, so a slow follower does not fail the write.
		_ = inst.waitApplied(ctx, res.Index)
	}
	return res, err
}

// commit is propose without the wait for the local copy: for callers that
// use the Result and need no read of their own write (a follower learns the
// commit with the leader's next message, which under load is most of the
// latency of a forwarded write).
func (c *Cluster) commit(ctx context.Context, cmd fsm.Command) (fsm.Result, *instance, error) {
	encoded, err := fsm.Encode(cmd)
	if err != nil {
		return fsm.Result{}, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		inst := c.current()
		res, err := c.proposeOnce(ctx, inst, encoded, attempt)
		if err == nil {
			return res, inst, nil
		}
		if !retryable(err) {
			return fsm.Result{}, nil, err
		}
		lastErr = err
		if !sleepCtx(ctx, backoff(attempt)) {
			var e *Error
			if errors.As(lastErr, &e) && e.Type == TypeNodeNotReady {
				return fsm.Result{}, nil, lastErr
			}
			return fsm.Result{}, nil, unavailable(TypeNoQuorum, "no leader could commit the change in time", lastErr)
		}
	}
}

// proposeOnce makes one attempt: apply locally when leading, else send to the
// leader, or, with no leader known, to some peer that may know one.
func (c *Cluster) proposeOnce(ctx context.Context, inst *instance, encoded []byte, attempt int) (fsm.Result, error) {
	if inst == nil || c.isJoining() {
		return fsm.Result{}, unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	if inst.raft.State() == raft.Leader {
		return c.applyAsLeader(ctx, inst, encoded)
	}
	target, _ := inst.raft.LeaderWithID()
	if target == "" {
		peers := otherServers(inst.servers(), c.cfg.NodeName)
		if len(peers) == 0 {
			return fsm.Result{}, unavailable(TypeNoQuorum, "no leader elected yet", nil)
		}
		target = peers[attempt%len(peers)].Address
	}
	return c.client.apply(ctx, string(target), encoded)
}

func otherServers(servers []raft.Server, self string) []raft.Server {
	out := make([]raft.Server, 0, len(servers))
	for _, s := range servers {
		if string(s.ID) != self {
			out = append(out, s)
		}
	}
	return out
}

// backoff is the pause before retry number attempt+1: 25 ms doubling up to
// 400 ms.
func backoff(attempt int) time.Duration {
	d := 25 * time.Millisecond << min(attempt, 4)
	return d
}

// sleepCtx sleeps for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// registerLoop keeps this process registered: after every start, and after
// joining a cluster, the node's record must carry this process's incarnation
// (which bumps its epoch exactly once per process).
func (c *Cluster) registerLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	warned := false
	// Until lateUntil the sessions of earlier processes are looked for
	// again on every tick: a record the previous process sent just before
	// it died may reach the leader after this process registered.
	var lateUntil time.Time
	if hold := c.cfg.holdRegistration; hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return
		}
	}
	for {
		if c.needsRegistration() {
			reg := fsm.RegisterNode{Info: c.info(), Incarnation: c.incarnation, TimeMicros: time.Now().UnixMicro()}
			res, err := c.propose(ctx, reg)
			if err == nil {
				err = resultErr(res)
			}
			var e *Error
			switch {
			case err == nil:
				if res.Node != nil {
					c.log.Info("registered in the cluster", "epoch", res.Node.Epoch)
				}
				warned = false
				c.staleSessions.Store(true)
				lateUntil = time.Now().Add(2 * c.cfg.RequestTimeout)
			case errors.As(err, &e) && e.Type == TypeNodeNotMember:
				c.markPurged()
			case ctx.Err() != nil:
				return
			case !warned:
				c.log.Warn("cannot register in the cluster yet; retrying", "error", err)
				warned = true
			}
		}
		// Once registered, this process ends what the cluster still
		// records of its predecessors' sessions (see sessions.go).
		if (c.staleSessions.Load() || time.Now().Before(lateUntil)) && c.ended.Load() != nil && !c.needsRegistration() && c.endStaleSessions(ctx) {
			c.staleSessions.Store(false)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) needsRegistration() bool {
	c.mu.RLock()
	inst, joining, purged := c.inst, c.joining, c.purged
	c.mu.RUnlock()
	if inst == nil || joining || purged {
		return false
	}
	n, ok := inst.fsm.Node(c.cfg.NodeName)
	return !ok || n.Incarnation != c.incarnation
}

// markPurged records that the cluster no longer counts this node as a
// member. The node reports mode initial and may join a cluster again.
func (c *Cluster) markPurged() {
	c.mu.Lock()
	already := c.purged
	c.purged = true
	c.mu.Unlock()
	if !already {
		c.log.Error("this node was purged from its cluster; it serves nothing until it joins a cluster again (JoinCluster, or contact_node_name_list)")
		c.signalChange()
	}
}

// readIndex is the leader's answer to a consistent read: the index of the
// last command its state machine applied after a barrier.
type readIndex struct {
	Index uint64 `json:"index"`
}

// ReadBarrier returns once this node's copy of the replicated state holds
// every write the cluster acknowledged before the call, so that a read
// after it is linearizable. It asks the leader, which passes a Raft barrier
// first (it commits only while it leads with a quorum), for the index it
// has applied, and waits until this node's state machine reaches it. Reads
// without it are served from this node's copy as it is, which on a
// follower may lag the leader by a heartbeat or, cut off from the cluster,
// indefinitely.
func (c *Cluster) ReadBarrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		inst := c.current()
		idx, err := c.readIndexOnce(ctx, inst)
		if err == nil {
			if err := inst.waitApplied(ctx, idx.Index); err != nil {
				return unavailable(TypeNoQuorum, "this node did not catch up with the leader in time", err)
			}
			return nil
		}
		if !retryable(err) {
			return err
		}
		lastErr = err
		if !sleepCtx(ctx, backoff(attempt)) {
			return unavailable(TypeNoQuorum, "no leader confirmed the read in time", lastErr)
		}
	}
}

func (c *Cluster) readIndexOnce(ctx context.Context, inst *instance) (readIndex, error) {
	if inst == nil || c.isJoining() {
		return readIndex{}, unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	if inst.raft.State() == raft.Leader {
		return c.readIndexAsLeader(ctx, inst)
	}
	leader, _ := inst.raft.LeaderWithID()
	if leader == "" {
		return readIndex{}, unavailable(TypeNoQuorum, "no leader elected yet", nil)
	}
	raw, _, err := c.client.post(ctx, string(leader), pathReadIndex, nil, false)
	if err != nil {
		return readIndex{}, err
	}
	var idx readIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return readIndex{}, unavailable(TypeInternal, "bad read index from "+string(leader), err)
	}
	return idx, nil
}

// readIndexAsLeader passes a Raft barrier, which commits only while this
// node leads with a quorum and returns once every earlier entry is applied,
// and returns the index its state machine has applied.
func (c *Cluster) readIndexAsLeader(ctx context.Context, inst *instance) (readIndex, error) {
	timeout := c.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := inst.raft.Barrier(timeout).Error(); err != nil {
		return readIndex{}, raftWriteError(err)
	}
	return readIndex{Index: inst.fsm.AppliedIndex()}, nil
}
