package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sorad/sorad/fsm"
)

// The sessions the nodes in charge record in the replicated state, so that
// a session that ends with its node (killed, then its channel taken over
// or the node purged) is reported once: by the node whose command ended
// it, right after the commit. A node records its sessions only when
// someone listens (session webhooks); without a record nothing is
// reported.

// OnSessionsEnded sets what this node does with the recorded sessions that
// a command it committed ended without their node: the records as they
// were. It is called at most once per ended session cluster-wide (by the
// node that committed the change), and must not block.
func (c *Cluster) OnSessionsEnded(f func([]fsm.Channel)) { c.ended.Store(&f) }

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
// created) for a channel it is in charge of. A channel this node no longer
// holds is left alone.
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

// ErrChannelTakenOver: see ForgetSession.
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
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrConflict) {
		return fmt.Errorf("record session of channel %q: %w", cmd.Channel, resultErr(res))
	}
	return nil
}
