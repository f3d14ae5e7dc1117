package fsm

import (
	"sort"
	"time"
)

// Mode is a node's admission mode, as Sora's ChangeMode and GetMode APIs name it.
type Mode string

const (
	// ModeNormal admits every new connection.
	ModeNormal Mode = "normal"
	// ModeBlockNewSession refuses connections that would start a new session.
	ModeBlockNewSession Mode = "block_new_session"
	// ModeBlockNewConnection refuses every new connection.
	ModeBlockNewConnection Mode = "block_new_connection"
	// ModeInitial is reported by a node that is not (yet) a registered member
	// of a cluster. It is never stored.
	ModeInitial Mode = "initial"
)

// Settable reports whether m is a mode that ChangeMode may set.
func (m Mode) Settable() bool {
	switch m {
	case ModeNormal, ModeBlockNewSession, ModeBlockNewConnection:
		return true
	}
	return false
}

// License holds the license-shaped fields of a node, filled from its
// configuration. MaxConnections is a real admission limit; the rest are labels.
type License struct {
	MaxConnections int    `json:"max_connections"`
	MaxNodes       int    `json:"max_nodes"`
	SerialCode     string `json:"serial_code"`
	Type           string `json:"type"`
}

// NodeInfo is what a node says about itself when it registers: its
// configuration, not its cluster history.
type NodeInfo struct {
	Name string `json:"name"`
	// RaftAddress is host:port of the node's cluster port, which carries
	// both Raft and the internal HTTP protocol (forwarding, probes): it is
	// the node's internal address too.
	RaftAddress          string  `json:"raft_address"`
	ExternalAPIURL       string  `json:"external_api_url"`
	ExternalSignalingURL string  `json:"external_signaling_url"`
	Version              string  `json:"version"`
	License              License `json:"license"`
}

// Node is a cluster member as replicated state records it.
type Node struct {
	NodeInfo
	// Epoch counts the process starts with which this node (re)joined the
	// cluster: 1 on the first join, +1 on every restart that rejoins.
	Epoch uint64 `json:"epoch"`
	// Incarnation identifies the process that registered last; a repeated
	// registration by the same process does not bump the epoch.
	Incarnation string `json:"incarnation"`
	// MemberSinceMicros is when the node first joined, in Unix microseconds.
	MemberSinceMicros int64 `json:"member_since_us"`
	Mode              Mode  `json:"mode"`
}

// MemberSince returns the time the node first joined the cluster, in UTC.
func (n Node) MemberSince() time.Time {
	return time.UnixMicro(n.MemberSinceMicros).UTC()
}

// Channel records which node is in charge of a channel.
type Channel struct {
	ID                string `json:"channel_id"`
	NodeInCharge      string `json:"node_in_charge"`
	NodeInChargeEpoch uint64 `json:"node_in_charge_epoch"`
	// AssignedIndex is the Raft index of the assignment. It grows with every
	// new assignment of the channel, so it serves as a fencing token.
	AssignedIndex uint64 `json:"assigned_index"`
	Multistream   bool   `json:"multistream"`
	Spotlight     bool   `json:"spotlight"`
	// SessionID is the session the node in charge runs, when it records
	// it (SetChannelSession), and SessionCreatedMicros when it started.
	SessionID            string `json:"session_id,omitempty"`
	SessionCreatedMicros int64  `json:"session_created_us,omitempty"`
}

// State is the whole replicated state. The zero value is not usable; call
// NewState.
type State struct {
	Nodes    map[string]Node
	Channels map[string]Channel
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Nodes: map[string]Node{}, Channels: map[string]Channel{}}
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := &State{
		Nodes:    make(map[string]Node, len(s.Nodes)),
		Channels: make(map[string]Channel, len(s.Channels)),
	}
	for k, v := range s.Nodes {
		c.Nodes[k] = v
	}
	for k, v := range s.Channels {
		c.Channels[k] = v
	}
	return c
}

// Stale reports whether ch's node in charge has restarted since the
// assignment (its epoch moved on) or no longer exists. A stale channel's
// sessions died with the old process, so the channel may be taken over.
func (s *State) Stale(ch Channel) bool {
	n, ok := s.Nodes[ch.NodeInCharge]
	return !ok || n.Epoch != ch.NodeInChargeEpoch
}

// SortedNodes returns the nodes ordered by name.
func (s *State) SortedNodes() []Node {
	out := make([]Node, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SortedChannels returns the channels ordered by channel ID.
func (s *State) SortedChannels() []Channel {
	out := make([]Channel, 0, len(s.Channels))
	for _, c := range s.Channels {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
