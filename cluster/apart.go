package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/fsm"
)

// Clusters started apart: nodes whose contact_node_name_list overlaps can
// still form two multi-node clusters (started while the network between
// them was cut, or with lists that only met later). Raft cannot merge two
// logs, so one cluster gives its nodes up to the other, by this rule:
//
//   - the cluster with fewer members merges into the larger one; between
//     two of one size, the one without the name that sorts first of all
//     their members merges into the other;
//   - the merging cluster's leader purges its other members one at a time
//     (their channels are released and their clients closed, as a purge
//     does; the sessions' ends are reported then), each then joins the
//     other cluster through its own contact_node_name_list, and last the
//     leader, alone, gives up its own channels and joins too;
//   - it does so only when every one of its members lists a node of the
//     other cluster in contact_node_name_list, so that none is left alone
//     with nowhere to go. Otherwise it changes nothing and says, in its log
//     and in ListClusterNodes, which node lists what is missing.
//
// Every node that reaches a node of another cluster through its contacts
// shows it in ListClusterNodes with include_all_known_nodes (other_cluster:
// true, and what happens next).

// apartCheckInterval is how often a node asks its contacts outside its
// cluster which cluster they are in.
const apartCheckInterval = 5 * time.Second

// Merge, the state of a node of another cluster this node reaches.
const (
	MergeIntoOther     = "this_cluster_merges_into_it" // this cluster gives its nodes up
	MergeIntoThis      = "it_merges_into_this_cluster" // its cluster gives its nodes up
	MergeWaitsOperator = "waiting_for_operator"        // see ApartNode.Instruction
)

// ApartNode is a node of another cluster that this node reaches through its
// contact_node_name_list.
type ApartNode struct {
	Name    string
	Members []string // of its cluster
	Merge   string   // one of the Merge constants
	// Instruction says what the operator must do when Merge is
	// MergeWaitsOperator.
	Instruction string
}

// apart is what this node last learnt of other clusters.
type apart struct {
	mu     sync.Mutex
	nodes  map[string]ApartNode
	logged map[string]string // node name -> the last state logged
}

// mergesInto reports whether the cluster of members ours merges into the
// cluster of members theirs (both non-empty and disjoint).
func mergesInto(ours, theirs []string) bool {
	if len(ours) != len(theirs) {
		return len(ours) < len(theirs)
	}
	return slices.Min(theirs) < slices.Min(ours)
}

// ApartNodes lists the nodes of other clusters this node reaches, by name.
func (c *Cluster) ApartNodes() []ApartNode {
	c.apart.mu.Lock()
	defer c.apart.mu.Unlock()
	out := make([]ApartNode, 0, len(c.apart.nodes))
	for _, n := range c.apart.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b ApartNode) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// checkApart asks each contact outside this node's cluster which cluster it
// is in; the leader of a cluster that must merge into another one starts
// the merge.
func (c *Cluster) checkApart(ctx context.Context) {
	inst := c.current()
	if inst == nil || c.isJoining() || c.Purged() {
		return
	}
	ours := serverNames(inst.servers())
	if len(ours) < 2 {
		c.setApart(nil) // a lone node joins by autoJoinLoop's rule
		return
	}
	found := map[string]ApartNode{}
	var target *ApartNode
	for _, contact := range c.cfg.ContactNodeNames {
		if slices.Contains(ours, contact) || ctx.Err() != nil {
			continue
		}
		st, err := c.contactStatus(ctx, contact)
		if err != nil || !st.Registered || st.Joining || st.Purged || len(st.Members) < 2 || overlaps(ours, st.Members) {
			continue
		}
		n := ApartNode{Name: contact, Members: slices.Sorted(slices.Values(st.Members)), Merge: MergeIntoThis}
		if mergesInto(ours, st.Members) {
			n.Merge = MergeIntoOther
			if missing := c.membersWithoutContactIn(inst, st.Members); len(missing) > 0 {
				n.Merge = MergeWaitsOperator
				n.Instruction = fmt.Sprintf("this cluster (%s) must merge into the cluster of %s (%s), but %s list(s) none of its nodes in contact_node_name_list: add %s there and restart them, or stop them, delete their data directories and start them with it",
					strings.Join(ours, ","), contact, strings.Join(n.Members, ","), strings.Join(missing, ","), contact)
			} else if target == nil {
				target = &n
			}
		}
		found[contact] = n
	}
	c.setApart(found)
	if target != nil && inst.raft.State() == raft.Leader {
		c.mergeInto(ctx, inst, *target)
	}
}

// setApart records what checkApart found and logs each change once.
func (c *Cluster) setApart(found map[string]ApartNode) {
	c.apart.mu.Lock()
	defer c.apart.mu.Unlock()
	if c.apart.logged == nil {
		c.apart.logged = map[string]string{}
	}
	for name, n := range found {
		state := n.Merge + " " + strings.Join(n.Members, ",")
		if c.apart.logged[name] == state {
			continue
		}
		c.apart.logged[name] = state
		switch n.Merge {
		case MergeWaitsOperator:
			c.log.Error("another cluster started apart from this one; the operator must act", "contact_node", name, "its_members", n.Members, "instruction", n.Instruction)
		default:
			c.log.Warn("another cluster started apart from this one; the smaller one (or, same size, the one without the first name) merges into the other", "contact_node", name, "its_members", n.Members, "merge", n.Merge)
		}
	}
	for name := range c.apart.logged {
		if _, ok := found[name]; !ok {
			delete(c.apart.logged, name)
		}
	}
	c.apart.nodes = found
}

// membersWithoutContactIn lists the members of this cluster that do not
// list any of theirs in contact_node_name_list (as their last status said;
// an older node that does not say counts as missing).
func (c *Cluster) membersWithoutContactIn(inst *instance, theirs []string) []string {
	var missing []string
	for _, s := range inst.servers() {
		name := string(s.ID)
		contacts := c.cfg.ContactNodeNames
		if name != c.cfg.NodeName {
			p, ok := c.liveness.get(name)
			if !ok {
				missing = append(missing, name)
				continue
			}
			contacts = p.status.Contacts
		}
		if !overlaps(contacts, theirs) {
			missing = append(missing, name)
		}
	}
	return missing
}

// mergeInto runs on the leader of a cluster that merges into another: it
// purges its other members, which then join the other cluster by their
// contacts; once alone, this node joins it by autoJoinLoop.
func (c *Cluster) mergeInto(ctx context.Context, inst *instance, other ApartNode) {
	if err := c.lockMembership(ctx); err != nil {
		return
	}
	defer c.unlockMembership()
	c.log.Warn("merging this cluster into the cluster of a contact node that started apart: purging the other members, which join it, then joining it",
		"contact_node", other.Name, "its_members", other.Members)
	for _, s := range inst.servers() {
		name := string(s.ID)
		if name == c.cfg.NodeName {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		err := c.removeMember(opCtx, inst, name)
		cancel()
		if err != nil {
			c.log.Warn("merge: could not purge a member; trying again later", "member", name, "error", err)
			return
		}
	}
}

// removeMember purges a member, live or not, on the leader: its record and
// channels go (the sessions recorded on them are reported ended), then its
// Raft membership.
func (c *Cluster) removeMember(ctx context.Context, inst *instance, name string) error {
	encoded, err := fsm.Encode(fsm.PurgeNode{Node: name})
	if err != nil {
		return err
	}
	res, err := c.applyAsLeader(ctx, inst, encoded)
	if err != nil {
		return err
	}
	c.reportEnded(res.Ended)
	if hasServer(inst.servers(), name) {
		timeout := c.cfg.RequestTimeout
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		if err := inst.raft.RemoveServer(raft.ServerID(name), 0, timeout).Error(); err != nil {
			return raftWriteError(fmt.Errorf("remove server %s: %w", name, err))
		}
	}
	c.liveness.forget(name)
	c.grants.forget(name)
	c.log.Info("purged cluster node", "target_node", name)
	return nil
}

func serverNames(servers []raft.Server) []string {
	names := make([]string, 0, len(servers))
	for _, s := range servers {
		names = append(names, string(s.ID))
	}
	slices.Sort(names)
	return names
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
