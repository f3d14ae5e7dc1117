package cluster

import (
	"context"
	"errors"
	"fmt"

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
// mode normal. Concurrent calls on any nodes agree on one owner.
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
		if exists && !stale {
			return Assignment{Channel: cur, Owner: *holder, Local: holder.Name == c.cfg.NodeName}, nil
		}
		target, ok := place(c.candidates(inst), c.cfg.NodeName)
		if !ok {
			return Assignment{}, unavailable(TypeNoNodeAvailable, errNoLiveNode.Error(), nil)
		}
		cmd := fsm.AssignChannel{Channel: channelID, Node: target, Multistream: opts.Multistream, Spotlight: opts.Spotlight}
		if exists {
			cmd.ExpectedNode, cmd.ExpectedEpoch = cur.NodeInCharge, cur.NodeInChargeEpoch
		}
		res, _, err := c.commit(ctx, cmd)
		if err != nil {
			return Assignment{}, fmt.Errorf("assign channel %q: %w", channelID, err)
		}
		switch {
		case res.Err == nil:
			owner, _ := inst.fsm.Node(target)
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
		if n.Mode != fsm.ModeNormal || !c.Connected(n.Name) {
			continue
		}
		out = append(out, candidate{Name: n.Name, Connections: c.peerConnections(n.Name), MaxConnections: n.License.MaxConnections})
	}
	return out
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
