package fsm

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// ErrorCode names a domain error that a command can end with. Domain errors
// are part of the deterministic outcome of a command: every node reaches the
// same one.
type ErrorCode string

const (
	// CodeConflict: a compare-and-set did not match the current record.
	CodeConflict ErrorCode = "CONFLICT"
	// CodeNodeNotFound: the command names a node that is not a member.
	CodeNodeNotFound ErrorCode = "NODE-NOT-FOUND"
	// CodeNodeNotNormal: a channel cannot be assigned to a node whose mode is
	// not normal.
	CodeNodeNotNormal ErrorCode = "NODE-NOT-NORMAL"
	// CodeInvalidCommand: the command's fields are not acceptable.
	CodeInvalidCommand ErrorCode = "INVALID-COMMAND"
)

// Error is a domain error returned inside a Result.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is makes errors.Is match any *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrConflict      = &Error{Code: CodeConflict}
	ErrNodeNotFound  = &Error{Code: CodeNodeNotFound}
	ErrNodeNotNormal = &Error{Code: CodeNodeNotNormal}
	ErrInvalid       = &Error{Code: CodeInvalidCommand}
)

func domainErr(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Result is the outcome of applying one command.
type Result struct {
	// Index is the Raft index the command was applied at.
	Index uint64 `json:"index"`
	// Node is the node the command concerned, after it was applied: the
	// registered or changed node, or, when an assignment conflicts, the
	// current holder (absent if the holder is gone).
	Node *Node `json:"node,omitempty"`
	// Channel is the channel record after the command: the new assignment on
	// success, the current holder on a conflict, nil once released.
	Channel *Channel `json:"channel,omitempty"`
	// Err is the domain error, if the command was refused.
	Err *Error `json:"error,omitempty"`
	// Ended are the channel records, as they were, whose recorded session
	// this command ended without their node in charge: an assignment that
	// replaced them, or a purge of their node.
	Ended []Channel `json:"ended,omitempty"`
}

// FSM holds the replicated state and applies commands to it. It is safe for
// concurrent use: Apply is serialised by the caller (Raft), reads may run at
// any time.
type FSM struct {
	mu    sync.RWMutex
	state *State
	index uint64
}

// New returns an FSM with an empty state.
func New() *FSM {
	return &FSM{state: NewState()}
}

// Apply decodes and applies one encoded command at the given Raft index. The
// error is non-nil only when the bytes cannot be applied at all
// (ErrUnknownCommand, ErrCorruptCommand); that means this node's log diverged
// from the cluster's and the caller must stop. Refusals that are part of the
// command's meaning come back in Result.Err.
func (f *FSM) Apply(index uint64, data []byte) (Result, error) {
	cmd, err := Decode(data)
	if err != nil {
		return Result{Index: index}, fmt.Errorf("apply index %d: %w", index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.index {
		f.index = index
	}
	if cmd == nil { // an ignorable command this build does not know
		return Result{Index: index}, nil
	}
	res := f.state.apply(index, cmd)
	res.Index = index
	return res, nil
}

// AppliedIndex returns the Raft index of the last applied command or restored
// snapshot.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// State returns a deep copy of the current state.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Snapshot returns a deep copy of the state and the index it was applied up
// to, taken atomically.
func (f *FSM) Snapshot() (*State, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone(), f.index
}

// Nodes returns every node, sorted by name, without copying the channels.
func (f *FSM) Nodes() []Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.SortedNodes()
}

// Counts returns the number of nodes and of assigned channels.
func (f *FSM) Counts() (nodes, channels int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.state.Nodes), len(f.state.Channels)
}

// Node returns one node's record.
func (f *FSM) Node(name string) (Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.state.Nodes[name]
	return n, ok
}

// ChannelsHeldBy returns the IDs of the channels node holds at epoch, in no
// particular order, without copying the state.
func (f *FSM) ChannelsHeldBy(node string, epoch uint64) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var ids []string
	for id, ch := range f.state.Channels {
		if ch.NodeInCharge == node && ch.NodeInChargeEpoch == epoch {
			ids = append(ids, id)
		}
	}
	return ids
}

// RecordedSessionsBefore returns, sorted by channel ID, the channels that
// node held at an epoch before epoch and that still record a session: the
// sessions that died with an earlier process of node.
func (f *FSM) RecordedSessionsBefore(node string, epoch uint64) []Channel {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Channel
	for _, ch := range f.state.Channels {
		if ch.NodeInCharge == node && ch.NodeInChargeEpoch < epoch && ch.SessionID != "" {
			out = append(out, ch)
		}
	}
	slices.SortFunc(out, func(a, b Channel) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Channel returns one channel's record and whether it is stale.
func (f *FSM) Channel(id string) (ch Channel, stale bool, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ch, ok = f.state.Channels[id]
	if !ok {
		return Channel{}, false, false
	}
	return ch, f.state.Stale(ch), true
}

// Restore replaces the state with s, recorded as applied up to index.
func (f *FSM) Restore(s *State, index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
	f.index = index
}

// apply runs one decoded command. It must stay deterministic: no clocks, no
// randomness, no map iteration whose order leaks into the result.
func (s *State) apply(index uint64, cmd Command) Result {
	kind, ok := commandKinds[cmd.Type()]
	if !ok {
		// Decode only returns the types registered.
		panic(fmt.Sprintf("fsm: command %T is not registered", cmd))
	}
	return kind.apply(s, index, cmd)
}

func (s *State) registerNode(c RegisterNode) Result {
	if c.Info.Name == "" || c.Incarnation == "" {
		return Result{Err: domainErr(CodeInvalidCommand, "register node: name and incarnation are required")}
	}
	n, ok := s.Nodes[c.Info.Name]
	switch {
	case !ok:
		n = Node{Epoch: 1, MemberSinceMicros: c.TimeMicros, Mode: ModeNormal}
	case n.Incarnation == c.Incarnation:
		return Result{Node: &n}
	default:
		n.Epoch++
	}
	n.NodeInfo = c.Info
	n.Incarnation = c.Incarnation
	s.Nodes[n.Name] = n
	return Result{Node: &n}
}

func (s *State) setMode(c SetMode) Result {
	if !c.Mode.Settable() {
		return Result{Err: domainErr(CodeInvalidCommand, "set mode: %q is not a mode", c.Mode)}
	}
	n, ok := s.Nodes[c.Node]
	if !ok {
		return Result{Err: domainErr(CodeNodeNotFound, "set mode: node %q is not a member", c.Node)}
	}
	n.Mode = c.Mode
	s.Nodes[n.Name] = n
	return Result{Node: &n}
}

func (s *State) assignChannel(index uint64, c AssignChannel) Result {
	if c.Channel == "" {
		return Result{Err: domainErr(CodeInvalidCommand, "assign channel: empty channel id")}
	}
	cur, exists := s.Channels[c.Channel]
	matches := (!exists && c.ExpectedNode == "") ||
		(exists && cur.NodeInCharge == c.ExpectedNode && cur.NodeInChargeEpoch == c.ExpectedEpoch)
	if !matches {
		if !exists {
			return Result{Err: domainErr(CodeConflict, "assign channel %q: it is unassigned, expected %q", c.Channel, c.ExpectedNode)}
		}
		res := Result{Channel: &cur, Err: domainErr(CodeConflict, "assign channel %q: held by %q at epoch %d", c.Channel, cur.NodeInCharge, cur.NodeInChargeEpoch)}
		if holder, ok := s.Nodes[cur.NodeInCharge]; ok {
			res.Node = &holder // lets the proposer tell a live holder from a stale one
		}
		return res
	}
	n, ok := s.Nodes[c.Node]
	if !ok {
		return Result{Err: domainErr(CodeNodeNotFound, "assign channel %q: node %q is not a member", c.Channel, c.Node)}
	}
	if n.Mode != ModeNormal {
		return Result{Err: domainErr(CodeNodeNotNormal, "assign channel %q: node %q is in mode %s", c.Channel, c.Node, n.Mode)}
	}
	ch := Channel{
		ID:                c.Channel,
		NodeInCharge:      n.Name,
		NodeInChargeEpoch: n.Epoch,
		AssignedIndex:     index,
		Multistream:       c.Multistream,
		Spotlight:         c.Spotlight,
	}
	s.Channels[ch.ID] = ch
	res := Result{Channel: &ch}
	if exists && cur.SessionID != "" {
		res.Ended = []Channel{cur}
	}
	return res
}

func (s *State) releaseChannel(c ReleaseChannel) Result {
	cur, exists := s.Channels[c.Channel]
	if !exists {
		return Result{}
	}
	if cur.NodeInCharge != c.Node || cur.NodeInChargeEpoch != c.Epoch {
		return Result{Channel: &cur, Err: domainErr(CodeConflict, "release channel %q: held by %q at epoch %d", c.Channel, cur.NodeInCharge, cur.NodeInChargeEpoch)}
	}
	delete(s.Channels, c.Channel)
	return Result{}
}

func (s *State) purgeNode(c PurgeNode) Result {
	delete(s.Nodes, c.Node)
	var res Result
	for id, ch := range s.Channels {
		if ch.NodeInCharge == c.Node {
			delete(s.Channels, id)
			if ch.SessionID != "" {
				res.Ended = append(res.Ended, ch)
			}
		}
	}
	slices.SortFunc(res.Ended, func(a, b Channel) int { return strings.Compare(a.ID, b.ID) })
	return res
}

func (s *State) setChannelSession(c SetChannelSession) Result {
	cur, exists := s.Channels[c.Channel]
	switch {
	case !exists:
		return Result{Err: domainErr(CodeConflict, "set channel session %q: the channel is unassigned", c.Channel)}
	case cur.NodeInCharge != c.Node || cur.NodeInChargeEpoch != c.Epoch:
		return Result{Channel: &cur, Err: domainErr(CodeConflict, "set channel session %q: held by %q at epoch %d", c.Channel, cur.NodeInCharge, cur.NodeInChargeEpoch)}
	case c.ExpectedSessionID != "" && cur.SessionID != c.ExpectedSessionID:
		return Result{Channel: &cur, Err: domainErr(CodeConflict, "set channel session %q: session %q is not recorded", c.Channel, c.ExpectedSessionID)}
	}
	cur.SessionID, cur.SessionCreatedMicros = c.SessionID, c.CreatedMicros
	if c.SessionID == "" {
		cur.SessionCreatedMicros = 0
	}
	s.Channels[c.Channel] = cur
	return Result{Channel: &cur}
}
