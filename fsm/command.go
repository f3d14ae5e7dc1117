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
// reported in the Result's Ended.
type SetChannelSession struct {
	Channel           string `json:"channel_id"`
	Node              string `json:"node"`
	Epoch             uint64 `json:"epoch"`
	SessionID         string `json:"session_id"`
	CreatedMicros     int64  `json:"created_us"`
	ExpectedSessionID string `json:"expected_session_id"`
}

func (SetChannelSession) Type() CommandType { return TypeSetChannelSession }

func (RegisterNode) Type() CommandType   { return TypeRegisterNode }
func (SetMode) Type() CommandType        { return TypeSetMode }
func (AssignChannel) Type() CommandType  { return TypeAssignChannel }
func (ReleaseChannel) Type() CommandType { return TypeReleaseChannel }
func (PurgeNode) Type() CommandType      { return TypePurgeNode }

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
	var c Command
	switch t {
	case TypeRegisterNode:
		c = &RegisterNode{}
	case TypeSetMode:
		c = &SetMode{}
	case TypeAssignChannel:
		c = &AssignChannel{}
	case TypeReleaseChannel:
		c = &ReleaseChannel{}
	case TypePurgeNode:
		c = &PurgeNode{}
	case TypeSetChannelSession:
		c = &SetChannelSession{}
	default:
		if t&IgnorableFlag != 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %d", ErrUnknownCommand, t)
	}
	if err := json.Unmarshal(b[2:], c); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrCorruptCommand, t, err)
	}
	return deref(c), nil
}

// deref turns the pointer Decode filled into the value type that Encode and
// Apply use, so a decoded command compares equal to the one encoded.
func deref(c Command) Command {
	switch v := c.(type) {
	case *RegisterNode:
		return *v
	case *SetMode:
		return *v
	case *AssignChannel:
		return *v
	case *ReleaseChannel:
		return *v
	case *PurgeNode:
		return *v
	case *SetChannelSession:
		return *v
	}
	return c
}
