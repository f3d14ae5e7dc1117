// Package fsm is sorad's replicated state machine: the cluster's nodes, their
// modes and epochs, and which node is in charge of each channel.
//
// Everything here is pure and deterministic: no I/O, no clocks, no goroutines.
// Time and identity arrive inside commands, so the same sequence of commands
// gives the same state on every node, and a snapshot restored gives the state
// that was saved. The Raft wiring lives in package cluster; this package only
// knows how to encode, decode and apply commands.
//
// Commands are encoded as a two-byte header (encoding version, command type)
// followed by a JSON payload. A command type with IgnorableFlag set may be
// skipped by an older node that does not know it; any other unknown type is a
// divergence and Apply reports ErrUnknownCommand, which the caller must treat
// as fatal.
package fsm
