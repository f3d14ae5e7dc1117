package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sorad/sorad/fsm"
)

// The sessions the nodes in charge record in the replicated state, so that
// a session that ends with its node (killed, then its channel taken over,
// the node purged or the node restarted) is reported once: by the node
// whose command ended it, right after the commit. A node records its
// sessions only when someone listens (session webhooks); without a record
// nothing is reported.
//
// Each record is ended by exactly one command, whichever commits first:
// the assignment that takes its channel over (a connect to the channel
// anywhere), the purge of its node, the forget of its node when the
// session ends there, or, after its node restarted, the forget that the
// node's next process sends for every session recorded at its earlier
// epochs (endStaleSessions). Each of these is compare-and-set on the
// channel's node and epoch (and the forgets on the session), so the others
// find nothing left to end.

// OnSessionsEnded sets what this node does with the recorded sessions that
// a command it committed ended without their node: the records as they
// were. It is called at most once per ended session cluster-wide (by the
// node that committed the change), and must not block. A restarted node
// ends the sessions of its earlier processes only once f is set.
func (c *Cluster) OnSessionsEnded(f func([]fsm.Channel)) { c.ended.Store(&f) }

// staleSessionWorkers bounds the forgets endStaleSessions has in flight.
const staleSessionWorkers = 8

// endStaleSessions ends the sessions the cluster still records for earlier
// processes of this node (killed with their sessions, then restarted): it
// forgets each record with the command the node in charge uses when a
// session ends there, at the record's old epoch and for its session, and
// reports the sessions whose record it removed. A record whose channel was
// taken over or whose node was purged meanwhile is refused (the command
// that did so reported it). It runs after this process registered, and
// reports whether no record is left to end.
func (c *Cluster) endStaleSessions(ctx context.Context) bool {
	inst := c.current()
	if inst == nil || c.isJoining() {
		return false
	}
	self, ok := inst.fsm.Node(c.cfg.NodeName)
	if !ok {
		return true // purged: the purge reported them
	}
	if self.Incarnation != c.incarnation {
		return false // registered again first
	}
	stale := inst.fsm.RecordedSessionsBefore(c.cfg.NodeName, self.Epoch)
	if len(stale) == 0 {
		return true
	}
	c.log.Info("ending the sessions recorded for this node's earlier processes", "sessions", len(stale), "epoch", self.Epoch)
	var (
		mu     sync.Mutex
		ended  []fsm.Channel
		failed int
		wg     sync.WaitGroup
	)
	slots := make(chan struct{}, staleSessionWorkers)
	for _, ch := range stale {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			cmd := fsm.SetChannelSession{Channel: ch.ID, Node: ch.NodeInCharge, Epoch: ch.NodeInChargeEpoch, ExpectedSessionID: ch.SessionID}
			res, _, err := c.commit(ctx, cmd)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
				c.log.Warn("cannot end a session of an earlier process of this node yet; retrying", "channel_id", ch.ID, "session_id", ch.SessionID, "error", err)
			case res.Err == nil:
				// Also when the leader is of a version that skips the
				// command (it records no sessions): then no replica
				// that records sessions keeps this one either.
				ended = append(ended, ch)
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(ended, func(a, b fsm.Channel) int { return strings.Compare(a.ID, b.ID) })
	c.reportEnded(ended)
	return failed == 0
}

func (c *Cluster) reportEnded(ended []fsm.Channel) {
	if len(ended) == 0 {
		return
	}
	for _, ch := range ended {
		c.log.Info("a session ended with its node", "channel_id", ch.ID, "session_id", ch.SessionID, "node_in_charge", ch.NodeInCharge)
	}
	if f := c.ended.Load(); f != nil {
		(*f)(ended)
	}
}

// RecordSession records that this node runs session sessionID (started at
// created) for a channel it is in charge of. It fails with
// ErrChannelTakenOver when this node no longer holds the channel: the
// session is about to be fenced off, and nothing recorded it.
func (c *Cluster) RecordSession(ctx context.Context, channelID, sessionID string, created time.Time) error {
	return c.setSession(ctx, fsm.SetChannelSession{Channel: channelID, SessionID: sessionID, CreatedMicros: created.UnixMicro()})
}

// ForgetSession removes the record of a session that ended on this node (it
// reported its end itself), unless another session replaced it. It fails
// with ErrChannelTakenOver when the channel went to another node or this
// node was purged: the command that did so reported the session's end.
func (c *Cluster) ForgetSession(ctx context.Context, channelID, sessionID string) error {
	if c.Purged() {
		return ErrChannelTakenOver
	}
	return c.setSession(ctx, fsm.SetChannelSession{Channel: channelID, ExpectedSessionID: sessionID})
}

// ErrChannelTakenOver: see RecordSession and ForgetSession.
var ErrChannelTakenOver = errors.New("the channel was taken over or its node purged; the cluster reported its recorded session")

func (c *Cluster) setSession(ctx context.Context, cmd fsm.SetChannelSession) error {
	inst := c.current()
	if inst == nil {
		return unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	cur, stale, exists := inst.fsm.Channel(cmd.Channel)
	forget := cmd.SessionID == ""
	if forget && exists && cur.NodeInCharge != c.cfg.NodeName {
		return ErrChannelTakenOver
	}
	if !exists || stale || cur.NodeInCharge != c.cfg.NodeName {
		if !forget {
			return ErrChannelTakenOver
		}
		return nil
	}
	cmd.Node, cmd.Epoch = cur.NodeInCharge, cur.NodeInChargeEpoch
	res, _, err := c.commit(ctx, cmd)
	if err != nil {
		return fmt.Errorf("record session of channel %q: %w", cmd.Channel, err)
	}
	if forget && res.Channel != nil && res.Channel.NodeInCharge != c.cfg.NodeName {
		return ErrChannelTakenOver
	}
	if !forget && res.Err != nil && errors.Is(res.Err, fsm.ErrConflict) {
		return ErrChannelTakenOver
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrConflict) {
		return fmt.Errorf("record session of channel %q: %w", cmd.Channel, resultErr(res))
	}
	return nil
}
