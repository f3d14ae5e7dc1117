package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
)

// EncodingVersion is the first byte of every encoded command.
const EncodingVersion byte = 1

// CommandType is the second byte of every encoded command.
type CommandType byte

// IgnorableFlag marks a command type that a node which does not know it may
// skip. Set it only on commands whose absence cannot make states diverge in a
// way that matters (for example, optional metadata during a rolling upgrade).
const IgnorableFlag CommandType = 0x80

const (
	TypeRegisterNode   CommandType = 1
	TypeSetMode        CommandType = 2
	TypeAssignChannel  CommandType = 3
	TypeReleaseChannel CommandType = 4
	TypePurgeNode      CommandType = 5
	// TypeSetChannelSession is ignorable: a node that skips it only loses
	// the report of a session that ends with its node.
	TypeSetChannelSession CommandType = 6 | IgnorableFlag
)

// Command is a change to the replicated state.
type Command interface {
	Type() CommandType
}

// RegisterNode records a node's (re)start as a member. The first registration
// of a name creates the node with epoch 1; every later registration from a new
// Incarnation (a new process) bumps the epoch and refreshes the node's info,
// keeping its mode and member_since. A repeated registration from the same
// Incarnation changes nothing, so a retried proposal is harmless.
type RegisterNode struct {
	Info        NodeInfo `json:"info"`
	Incarnation string   `json:"incarnation"`
	// TimeMicros is the proposer's clock, in Unix microseconds; it becomes
	// member_since for a new node.
	TimeMicros int64 `json:"time_us"`
}

// SetMode sets a node's mode.
type SetMode struct {
	Node string `json:"node"`
	Mode Mode   `json:"mode"`
}

// AssignChannel makes Node the node in charge of Channel, compare-and-set: it
// succeeds only if the channel is unassigned and ExpectedNode is empty, or the
// channel's current owner and epoch equal ExpectedNode and ExpectedEpoch. The
// target node must exist and be in mode normal. On a mismatch the result
// carries the current record and ErrConflict.
type AssignChannel struct {
	Channel       string `json:"channel_id"`
	Node          string `json:"node"`
	ExpectedNode  string `json:"expected_node"`
	ExpectedEpoch uint64 `json:"expected_epoch"`
	Multistream   bool   `json:"multistream"`
	Spotlight     bool   `json:"spotlight"`
}

// ReleaseChannel removes a channel's assignment if Node at Epoch still holds
// it. Releasing an unknown channel succeeds and changes nothing.
type ReleaseChannel struct {
	Channel string `json:"channel_id"`
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
}

// PurgeNode removes a node and frees every channel it was in charge of.
// Purging an unknown node succeeds and changes nothing.
type PurgeNode struct {
	Node string `json:"node"`
}

// SetChannelSession records the session that the channel's node in charge
// runs (SessionID, started at CreatedMicros), or with SessionID empty
// forgets it, if Node at Epoch holds the channel and, when
// ExpectedSessionID is set, the recorded session is that one (so a late
// forget cannot erase the next session). A recorded session that ends
// without its node, when the channel is taken over or the node purged, is
// reported in the Result's Ended. Node and Epoch are the holder as the
// channel records it: after its node restarted, an epoch before the
// node's, which is how the node's next process forgets (and then reports)
// the sessions that died with the process before.
type SetChannelSession struct {
	Channel           string `json:"channel_id"`
	Node              string `json:"node"`
	Epoch             uint64 `json:"epoch"`
	SessionID         string `json:"session_id"`
	CreatedMicros     int64  `json:"created_us"`
	ExpectedSessionID string `json:"expected_session_id"`
}

func (RegisterNode) Type() CommandType      { return TypeRegisterNode }
func (SetMode) Type() CommandType           { return TypeSetMode }
func (AssignChannel) Type() CommandType     { return TypeAssignChannel }
func (ReleaseChannel) Type() CommandType    { return TypeReleaseChannel }
func (PurgeNode) Type() CommandType         { return TypePurgeNode }
func (SetChannelSession) Type() CommandType { return TypeSetChannelSession }

// commandKind is what this version knows of one command type: its name,
// how to decode its payload, and how to apply it. Whether an older version
// may skip it is in its type byte (IgnorableFlag), which travels with it.
type commandKind struct {
	name   string
	decode func(payload []byte) (Command, error)
	apply  func(s *State, index uint64, c Command) Result
}

// commandKinds registers every command type, once. It is built at start and
// never changed. See doc.go for what a change to it may do.
var commandKinds = map[CommandType]commandKind{
	TypeRegisterNode:      kindOf("register_node", func(s *State, _ uint64, c RegisterNode) Result { return s.registerNode(c) }),
	TypeSetMode:           kindOf("set_mode", func(s *State, _ uint64, c SetMode) Result { return s.setMode(c) }),
	TypeAssignChannel:     kindOf("assign_channel", (*State).assignChannel),
	TypeReleaseChannel:    kindOf("release_channel", func(s *State, _ uint64, c ReleaseChannel) Result { return s.releaseChannel(c) }),
	TypePurgeNode:         kindOf("purge_node", func(s *State, _ uint64, c PurgeNode) Result { return s.purgeNode(c) }),
	TypeSetChannelSession: kindOf("set_channel_session", func(s *State, _ uint64, c SetChannelSession) Result { return s.setChannelSession(c) }),
}

// kindOf is the commandKind of the command type C: its payload is C in
// JSON, in which fields this version does not know are ignored (doc.go
// says when a new field may be added).
func kindOf[C Command](name string, apply func(s *State, index uint64, c C) Result) commandKind {
	return commandKind{
		name: name,
		decode: func(payload []byte) (Command, error) {
			var c C
			if err := json.Unmarshal(payload, &c); err != nil {
				return nil, err
			}
			return c, nil
		},
		apply: func(s *State, index uint64, c Command) Result { return apply(s, index, c.(C)) },
	}
}

// ErrUnknownCommand is returned by Decode and Apply for a command type this
// build does not know and may not ignore.
var ErrUnknownCommand = errors.New("unknown command type")

// ErrCorruptCommand is returned by Decode and Apply for bytes that are not a
// valid command.
var ErrCorruptCommand = errors.New("corrupt command")

// Encode serialises a command: version byte, type byte, JSON payload.
func Encode(c Command) ([]byte, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", c.Type(), err)
	}
	out := make([]byte, 0, len(payload)+2)
	out = append(out, EncodingVersion, byte(c.Type()))
	return append(out, payload...), nil
}

// Decode parses bytes written by Encode. An unknown type with IgnorableFlag
// set decodes to (nil, nil): the caller skips it.
func Decode(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrCorruptCommand, len(b))
	}
	if b[0] != EncodingVersion {
		return nil, fmt.Errorf("%w: encoding version %d", ErrCorruptCommand, b[0])
	}
	t := CommandType(b[1])
	kind, ok := commandKinds[t]
	if !ok {
		if t&IgnorableFlag != 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %d", ErrUnknownCommand, t)
	}
	c, err := kind.decode(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorruptCommand, kind.name, err)
	}
	return c, nil
}
