// Package fsm is sorad's replicated state machine: the cluster's nodes, their
// modes and epochs, and which node is in charge of each channel.
//
// Everything here is pure and deterministic: no I/O, no clocks, no goroutines.
// Time and identity arrive inside commands, so the same sequence of commands
// gives the same state on every node, and a snapshot restored gives the state
// that was saved. The Raft wiring lives in package cluster; this package only
// knows how to encode, decode and apply commands.
//
// # Commands
//
// Commands are encoded as a two-byte header (encoding version, command type)
// followed by a JSON payload. Every command type is registered once, in
// commandKinds (command.go), with its name, its decoder and its apply. A
// command type with IgnorableFlag set may be skipped by an older node that
// does not know it; any other unknown type is a divergence and Apply reports
// ErrUnknownCommand, which the caller must treat as fatal.
//
// # Snapshots
//
// A snapshot is written in the newest format (snapshot.go): a header naming
// the format, its version and the oldest reader version that may read it,
// then one typed record per node and channel, then an end record that counts
// them. A reader skips record types it does not know (unless a record is
// marked required) and fields it does not know, refuses a snapshot whose
// min_reader is above its own version with an error that says so, and reads
// every earlier format.
//
// # Compatibility rules
//
// A cluster is upgraded one node at a time, so for a while nodes of version
// N and N+1 replicate the same log and install each other's snapshots. A
// change to this package must keep the following; the tests in
// compat_test.go hold the golden files (testdata/commands-vK.golden,
// testdata/snapshot-vK.golden) that check it.
//
// A change MAY:
//   - add a command type, with IgnorableFlag if a node that skips it stays
//     right (it only loses something no decision depends on, such as the
//     session record SetChannelSession keeps), without it otherwise; a
//     non-ignorable new command may be proposed only once every node runs a
//     version that knows it (the operator's rolling upgrade must finish
//     first; say so in the release notes);
//   - add a field to a command or a record when a node that ignores it
//     reaches the same state and the same Result (for instance a hint, or a
//     field whose zero value is what older nodes do anyway); anything else
//     is a new command type;
//   - add a snapshot record type for state that only new command types
//     change; an older reader skips it, which is right exactly when the
//     commands that fill it are ignorable; mark it required otherwise;
//   - add a snapshot format version: keep the old golden file, add the new
//     one with go test ./fsm -run Golden -update, keep reading every earlier
//     format, and raise min_reader only when an older reader would read the
//     new format wrongly.
//
// A change MUST NOT:
//   - change the meaning, the JSON name or the type of an existing field,
//     or the number of an existing command type;
//   - change what apply does with a command an older node also applies
//     (every replica must reach the same state from the same log: a fix to
//     apply is a new command type);
//   - remove a command type or a record type while a supported version may
//     still write it (the log and old snapshots hold it);
//   - edit a golden file of an earlier version.
//
// Downgrades: a node of version N reads what N+1 writes only where the rules
// above make it so. Format 1 readers (sorad before snapshot format 2) refuse
// a format 2 snapshot with a decode error ("unknown field"): restoring its
// own snapshot at start, such a node does not start; sent one by a leader,
// it refuses to install it and stays behind. Neither changes its data
// directory; upgrading the node again resumes it.
package fsm
