package cluster

import "github.com/sorad/sorad/fsm"

// The placement policy, in one place: which nodes take new channels, and
// what a node does with a connect given its mode and the channel's
// assignment. Placement (place, candidates) and the media plane's admission
// both ask these functions.

// TakesNewSessions reports whether a node in mode, stopping (draining) or
// not, may start a session: take a new channel, or start a session of a
// channel it holds without one.
func TakesNewSessions(mode fsm.Mode, draining bool) bool {
	return mode == fsm.ModeNormal && !draining
}

// Verdict is what a node does with a connect.
type Verdict int

// The verdicts.
const (
	// Serve: this node serves the connection.
	Serve Verdict = iota + 1
	// Redirect: another node is in charge; send the client there.
	Redirect
	// HandOver: this node holds the channel but may not start its session;
	// release it and place it again (on a node that takes new sessions).
	HandOver
	// Refuse: this node's mode turns the connect away.
	Refuse
)

func (v Verdict) String() string {
	switch v {
	case Serve:
		return "serve"
	case Redirect:
		return "redirect"
	case HandOver:
		return "hand over"
	case Refuse:
		return "refuse"
	}
	return "unknown"
}

// Admission is what the verdict on a connect depends on.
type Admission struct {
	Local      bool     // this node is in charge of the channel
	Mode       fsm.Mode // this node's mode
	Draining   bool     // this node is stopping
	HasSession bool     // this node has a live session of the channel
}

// Decide is the verdict on a connect: a channel held elsewhere goes there
// whatever the mode; a node that takes new sessions serves its own
// channels; a block_new_session node serves joiners of its live sessions
// and hands a channel it holds without one to another node, as a stopping
// node does with all of its channels; a block_new_connection node serves
// nothing of its own.
func Decide(a Admission) Verdict {
	switch {
	case !a.Local:
		return Redirect
	case TakesNewSessions(a.Mode, a.Draining):
		return Serve
	case a.Mode == fsm.ModeBlockNewSession && !a.Draining && a.HasSession:
		return Serve
	case a.Mode == fsm.ModeBlockNewSession, a.Draining:
		return HandOver
	default:
		return Refuse
	}
}
