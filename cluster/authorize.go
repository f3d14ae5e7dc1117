package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/fsm"
)

// Who may do what on the cluster port. With cluster authentication on, the
// multiplexer has already dropped every peer without a member's certificate;
// these rules then say which member may ask for what, so that no path on the
// cluster port does more than the public API allows:
//   - status (GET) answers anyone who passed the handshake: a node about to
//     join probes its contact first;
//   - join adds the node named in the caller's certificate, at the address
//     that name implies, and no other;
//   - every other internal call comes from a node in the Raft configuration;
//   - a node changes only its own registration, mode and channel releases,
//     and renews only its own lease;
//     a live channel moves only through takeover, where the leader probes
//     its holder; a node leaves only through purge, where the leader
//     probes it.
// Without authentication (cluster_insecure) there is no caller identity: the
// network is trusted, and only the rules that need no identity apply.

// TypeNotMember refuses a member that acts for another node.
const TypeNotMember = "NOT-A-CLUSTER-MEMBER"

// callerKey carries the name of the member a connection came from in the
// contexts of its requests.
type callerKey struct{}

// withCaller is the internal server's ConnContext.
func withCaller(ctx context.Context, conn net.Conn) context.Context {
	if mc, ok := conn.(*memberConn); ok {
		return context.WithValue(ctx, callerKey{}, mc.name)
	}
	return ctx
}

// caller is the node name a request on the cluster port proved, or "" on an
// unauthenticated port.
func caller(r *http.Request) string {
	name, _ := r.Context().Value(callerKey{}).(string)
	return name
}

// authenticated reports whether the cluster port checks identities.
func (c *Cluster) authenticated() bool { return c.cfg.Trust != nil }

// requireMember wraps an internal handler that only members may call.
func (c *Cluster) requireMember(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := c.checkMember(caller(r)); err != nil {
			writeError(w, err)
			return
		}
		h(w, r)
	}
}

// checkMember accepts name if it is in this node's copy of the Raft
// configuration. A follower's copy may lag behind a membership change, so
// only the leader's refusal is final: a follower answers with a retryable
// error, and the caller tries the leader.
func (c *Cluster) checkMember(name string) error {
	if !c.authenticated() {
		return nil
	}
	inst := c.current()
	if inst == nil {
		return unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil)
	}
	if hasServer(inst.servers(), name) {
		return nil
	}
	if inst.raft.State() == raft.Leader {
		return invalid(TypeNodeNotMember, fmt.Sprintf("%s is not a member of this cluster", name))
	}
	return unavailable(TypeNotLeader, fmt.Sprintf("%s is not a member as far as %s knows; ask the leader", name, c.cfg.NodeName), nil)
}

// vouched reports whether r was forwarded by a member, which checked the
// original caller's identity itself.
func (c *Cluster) vouched(r *http.Request) bool {
	return r.Header.Get(headerForwarded) != "" && c.checkMember(caller(r)) == nil
}

// checkOwnCommand applies the rules of a command a peer sent to apply. Rules
// on the caller's identity are checked where the command enters the cluster
// (a forwarding member has checked them already).
func (c *Cluster) checkOwnCommand(r *http.Request, cmd fsm.Command) error {
	if _, ok := cmd.(fsm.PurgeNode); ok {
		return invalid(TypeInvalidCommand, "a node is purged through PurgeClusterNode, which checks that it is down")
	}
	from := caller(r)
	if !c.authenticated() || c.vouched(r) {
		return nil
	}
	var subject string
	switch cmd := cmd.(type) {
	case fsm.RegisterNode:
		subject = cmd.Info.Name
	case fsm.SetMode:
		subject = cmd.Node
	case fsm.ReleaseChannel:
		subject = cmd.Node
	case fsm.SetChannelSession:
		subject = cmd.Node
	default:
		return nil
	}
	if subject != from {
		return invalid(TypeNotMember, fmt.Sprintf("%s cannot act for %s", from, subject))
	}
	return nil
}

// checkAssignOnLeader refuses, on the leader, an assignment that would take
// a channel from a holder still running the epoch it was assigned under:
// that is a takeover, which probes the holder first.
func checkAssignOnLeader(inst *instance, cmd fsm.Command) error {
	a, ok := cmd.(fsm.AssignChannel)
	if !ok || a.ExpectedNode == "" {
		return nil
	}
	holder, ok := inst.fsm.Node(a.ExpectedNode)
	if ok && holder.Epoch == a.ExpectedEpoch {
		return invalid(TypeNodeIsAlive, targetNode{TargetNode: a.ExpectedNode})
	}
	return nil
}

// checkJoin applies the join rules: the caller joins as itself, at the
// address its name gives.
func (c *Cluster) checkJoin(r *http.Request, reg fsm.RegisterNode) error {
	if reg.Info.RaftAddress != c.addressOf(reg.Info.Name) {
		return invalid(TypeInvalidNodeName, fmt.Sprintf("%s must be reached at %s, not %s", reg.Info.Name, c.addressOf(reg.Info.Name), reg.Info.RaftAddress))
	}
	if !c.authenticated() || c.vouched(r) {
		return nil
	}
	if from := caller(r); from != reg.Info.Name {
		return invalid(TypeNotMember, fmt.Sprintf("%s cannot join as %s", from, reg.Info.Name))
	}
	return nil
}
