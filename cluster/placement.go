package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sorad/sorad/fsm"
)

// errNoLiveNode is returned by placement when no node may take a channel.
var errNoLiveNode = errors.New("no connected node in mode normal")

// candidate is a node that placement may choose for a new channel.
type candidate struct {
	Name           string
	Connections    int
	MaxConnections int
}

// place chooses the node for a new channel: the candidate with the lowest
// connections / max_connections ratio, self on a tie with others, else the
// name that sorts first among the tied. Candidates must already be filtered
// (connected, mode normal). It reports false if there is none.
func place(cands []candidate, self string) (string, bool) {
	best := -1
	for i, c := range cands {
		if c.MaxConnections <= 0 {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := cands[best]
		// Compare c.Connections/c.Max with b.Connections/b.Max without floats.
		lhs, rhs := c.Connections*b.MaxConnections, b.Connections*c.MaxConnections
		switch {
		case lhs < rhs:
			best = i
		case lhs == rhs && b.Name != self && (c.Name == self || c.Name < b.Name):
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	return cands[best].Name, true
}

// ChannelOptions are the channel properties recorded with an assignment.
type ChannelOptions struct {
	Multistream bool
	Spotlight   bool
}

// Assignment is the answer to AcquireChannel.
type Assignment struct {
	Channel fsm.Channel
	// Owner is the record of the node in charge; its ExternalSignalingURL is
	// where clients are redirected when it is not this node.
	Owner fsm.Node
	// Local is true when this node is in charge.
	Local bool
	// Assigned is true when this call created or took over the assignment.
	Assigned bool
}

// maxAcquireAttempts bounds the compare-and-set retries of AcquireChannel.
const maxAcquireAttempts = 5

// AcquireChannel returns the node in charge of channelID. A channel that
// nobody holds, or whose holder restarted or left (stale), is first assigned
// through Raft to the node that placement chooses among connected nodes in
// mode normal. A channel whose holder this node cannot reach is taken over
// the same way if the leader finds the holder dead (failover); if the
// leader still hears from it, the holder stays in charge. Concurrent calls
// on any nodes agree on one owner.
func (c *Cluster) AcquireChannel(ctx context.Context, channelID string, opts ChannelOptions) (Assignment, error) {
	if channelID == "" {
		return Assignment{}, invalid(TypeInvalidCommand, "empty channel_id")
	}
	inst := c.current()
	if inst == nil || c.Mode() == fsm.ModeInitial {
		return Assignment{}, unavailable(TypeNodeNotReady, c.cfg.NodeName+" is not a registered member of a cluster", nil)
	}
	// The first look is at the local copy; after a conflict, at the
	// leader's answer, which a lagging local copy may not show yet.
	var holder *fsm.Node
	cur, stale, exists := inst.fsm.Channel(channelID)
	if exists {
		if n, ok := inst.fsm.Node(cur.NodeInCharge); ok {
			holder = &n
		}
	}
	for attempt := 0; attempt < maxAcquireAttempts; attempt++ {
		live := exists && !stale && c.reachableNow(ctx, inst, *holder)
		if live {
			return Assignment{Channel: cur, Owner: *holder, Local: holder.Name == c.cfg.NodeName}, nil
		}
		c.probedOnce(ctx)
		target, ok := place(c.candidates(inst), c.cfg.NodeName)
		if !ok {
			return Assignment{}, unavailable(TypeNoNodeAvailable, errNoLiveNode.Error(), nil)
		}
		cmd := fsm.AssignChannel{Channel: channelID, Node: target, Multistream: opts.Multistream, Spotlight: opts.Spotlight}
		if exists {
			cmd.ExpectedNode, cmd.ExpectedEpoch = cur.NodeInCharge, cur.NodeInChargeEpoch
		}
		var res fsm.Result
		var err error
		if exists && !stale {
			// The holder is alive in the cluster's records but this node
			// cannot reach it: the leader decides whether it is dead.
			res, err = c.takeOver(ctx, cmd)
			var e *Error
			if errors.As(err, &e) && e.Type == TypeNodeIsAlive {
				return Assignment{Channel: cur, Owner: *holder}, nil
			}
		} else {
			res, _, err = c.commit(ctx, cmd)
		}
		if err != nil {
			return Assignment{}, fmt.Errorf("assign channel %q: %w", channelID, err)
		}
		switch {
		case res.Err == nil:
			c.reportEnded(res.Ended)
			owner, _ := inst.fsm.Node(target)
			if target == c.cfg.NodeName {
				// This node will serve the channel: its own copy must show
				// the assignment before it does, or fencing would read the
				// previous holder there.
				_ = inst.waitApplied(ctx, res.Index)
			}
			return Assignment{Channel: *res.Channel, Owner: owner, Local: target == c.cfg.NodeName, Assigned: true}, nil
		case errors.Is(res.Err, fsm.ErrConflict):
			// Someone else holds it now: take the leader's view of it.
			exists = res.Channel != nil
			if exists {
				cur, holder = *res.Channel, res.Node
				stale = holder == nil || holder.Epoch != cur.NodeInChargeEpoch
			}
		case errors.Is(res.Err, fsm.ErrNodeNotNormal), errors.Is(res.Err, fsm.ErrNodeNotFound):
			// The target changed mode or left since this node looked: wait
			// for the local copy to catch up, then place again.
			_ = inst.waitApplied(ctx, res.Index)
		default:
			return Assignment{}, fmt.Errorf("assign channel %q: %w", channelID, resultErr(res))
		}
	}
	return Assignment{}, unavailable(TypeNoQuorum, fmt.Sprintf("channel %q: assignment kept changing", channelID), nil)
}

// candidates lists the nodes that may take a new channel.
func (c *Cluster) candidates(inst *instance) []candidate {
	var out []candidate
	for _, n := range inst.fsm.Nodes() {
		if !TakesNewSessions(n.Mode, c.isDraining(n.Name)) || !c.Connected(n.Name) || c.replaced(n) {
			continue
		}
		out = append(out, candidate{Name: n.Name, Connections: c.peerConnections(n.Name), MaxConnections: n.License.MaxConnections})
	}
	return out
}

// Drain tells the cluster that this node is about to stop: from now on no
// node places a new channel here, and once this node stops answering, its
// channels are taken over on the next connect without waiting for
// FailoverTimeout. It pushes its status to every connected peer (within
// ctx) and reports those that did not take it; they learn it from their
// next probe.
func (c *Cluster) Drain(ctx context.Context) []string {
	c.draining.Store(true)
	body, err := json.Marshal(c.status())
	if err != nil {
		return nil
	}
	inst := c.current()
	var (
		mu     sync.Mutex
		missed []string
		wg     sync.WaitGroup
	)
	for _, name := range c.ConnectedPeers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := c.addressOf(name)
			if inst != nil {
				if n, ok := inst.fsm.Node(name); ok {
					addr = n.RaftAddress
				}
			}
			if _, _, err := c.client.post(ctx, addr, pathStatus, body, false); err != nil {
				mu.Lock()
				missed = append(missed, name)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return missed
}

// ReleaseChannel gives up this node's assignment of channelID (after its last
// connection left). It is a no-op if another node holds the channel now.
func (c *Cluster) ReleaseChannel(ctx context.Context, channelID string) error {
	inst := c.current()
	if inst == nil {
		return unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	cur, _, exists := inst.fsm.Channel(channelID)
	if !exists || cur.NodeInCharge != c.cfg.NodeName {
		return nil
	}
	res, err := c.propose(ctx, fsm.ReleaseChannel{Channel: channelID, Node: cur.NodeInCharge, Epoch: cur.NodeInChargeEpoch})
	if err != nil {
		return fmt.Errorf("release channel %q: %w", channelID, err)
	}
	if res.Err != nil && !errors.Is(res.Err, fsm.ErrConflict) {
		return fmt.Errorf("release channel %q: %w", channelID, resultErr(res))
	}
	return nil
}

// takeOver asks the leader to move a channel from a holder that looks dead.
// The leader probes the holder itself and reassigns only if it does not
// answer and has not answered for FailoverTimeout; until then the answer is
// retryable and takeOver tries again, within the caller's deadline.
func (c *Cluster) takeOver(ctx context.Context, cmd fsm.AssignChannel) (fsm.Result, error) {
	body, err := json.Marshal(takeoverRequest{Assign: cmd})
	if err != nil {
		return fsm.Result{}, err
	}
	raw, err := c.onLeader(ctx, pathTakeover, body, func(ctx context.Context, inst *instance) (any, error) {
		return c.takeOverAsLeader(ctx, inst, cmd)
	})
	if err != nil {
		return fsm.Result{}, err
	}
	var res fsm.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return fsm.Result{}, unavailable(TypeInternal, "bad takeover answer", err)
	}
	return res, nil
}

type takeoverRequest struct {
	Assign fsm.AssignChannel `json:"assign"`
}

// takeOverAsLeader runs on the leader. A holder that said it is stopping
// (Drain) gives its channels up at once, even while it still answers: it
// serves no new session, and once its signaling listener closes a client
// sent there would find nobody.
func (c *Cluster) takeOverAsLeader(ctx context.Context, inst *instance, cmd fsm.AssignChannel) (fsm.Result, error) {
	holder := cmd.ExpectedNode
	alive := holder == c.cfg.NodeName || c.probeNow(ctx, inst, holder)
	// The process that held the channel is gone if another one answers in
	// its name (a restart not registered yet) or registered since.
	rec, registered := inst.fsm.Node(holder)
	restarted := !registered || rec.Epoch != cmd.ExpectedEpoch || c.replaced(rec)
	if alive && !c.isDraining(holder) && !restarted {
		return fsm.Result{}, invalid(TypeNodeIsAlive, targetNode{TargetNode: holder})
	}
	// A holder that said it was stopping and no longer answers has
	// stopped, one whose port refuses connections has died with its
	// process, and one that restarted is another process now: nothing to
	// wait for. A silent one may be cut off only. Silence counts from the
	// holder's last sign of life or lease (see lease.go): its lease has
	// ended before FailoverTimeout.
	if p, ok := c.liveness.get(holder); !restarted && (!ok || (!p.status.Draining && !p.gone())) {
		if silent := time.Since(c.heardFrom(inst, holder)); silent < c.cfg.FailoverTimeout {
			return fsm.Result{}, unavailable(TypeHolderNotDeadYet, map[string]any{"node_in_charge": holder, "silent_ms": silent.Milliseconds()}, nil)
		}
	}
	encoded, err := fsm.Encode(cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	res, err := c.applyAsLeader(ctx, inst, encoded)
	if err == nil && res.Err == nil {
		c.log.Info("channel taken over from a dead node", "channel_id", cmd.Channel, "from", holder, "to", cmd.Node)
	}
	return res, err
}
