package signaling

import (
	"encoding/json"
)

// The messages a client sends after connect, as sorad reads them.

// Answer is an answer or a re-answer: the client's SDP for sorad's offer.
type Answer struct {
	SDP string `json:"sdp"`
}

// Candidate is a trickled ICE candidate, in the shape of
// RTCIceCandidate.toJSON (sora-js-sdk) or with candidate only (the native
// SDKs).
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex"`
	UsernameFragment *string `json:"usernameFragment"`
}

// Pong answers a ping; Stats holds the client's RTCStats when the ping
// asked for them.
type Pong struct {
	Stats json.RawMessage `json:"stats"`
}

// Stats is the client's answer to req-stats on DC stats.
type Stats struct {
	Reports json.RawMessage `json:"reports"`
}

// Disconnect is the client leaving; Reason is NO-ERROR or the SDK's cause.
type Disconnect struct {
	Reason string `json:"reason"`
}

// Handlers are what a connection does with each message. A nil handler
// ignores its message.
type Handlers struct {
	Answer     func(Answer) error
	ReAnswer   func(Answer) error
	Candidate  func(Candidate) error
	Pong       func(Pong) error
	Disconnect func(Disconnect) error
	Stats      func(Stats) error
}

// handlerTable is the one table from a message type to its decoder and
// handler. It is never modified.
var handlerTable = map[string]func(b []byte, h *Handlers) error{
	"answer":     decodeTo(func(h *Handlers) func(Answer) error { return h.Answer }),
	"re-answer":  decodeTo(func(h *Handlers) func(Answer) error { return h.ReAnswer }),
	"candidate":  decodeTo(func(h *Handlers) func(Candidate) error { return h.Candidate }),
	"pong":       decodeTo(func(h *Handlers) func(Pong) error { return h.Pong }),
	"disconnect": decodeTo(func(h *Handlers) func(Disconnect) error { return h.Disconnect }),
	"stats":      decodeTo(func(h *Handlers) func(Stats) error { return h.Stats }),
}

// decodeTo builds a table entry: decode the message into T (a malformed one
// is an *Error naming the problem) and call the handler pick chooses.
func decodeTo[T any](pick func(*Handlers) func(T) error) func([]byte, *Handlers) error {
	return func(b []byte, h *Handlers) error {
		f := pick(h)
		if f == nil {
			return nil
		}
		var msg T
		if err := json.Unmarshal(b, &msg); err != nil {
			return Errorf("INVALID-MESSAGE", "%s", JSONProblem(err))
		}
		return f(msg)
	}
}

// Dispatch decodes one message after connect and calls its handler. It
// returns the message's type; a message that is not a JSON object with a
// string type is an *Error, a type sorad does not handle is ignored (as
// Sora's SDKs ignore what they do not know) and reported with known false.
func Dispatch(b []byte, h *Handlers) (typ string, known bool, err error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return "", false, Errorf("INVALID-MESSAGE", "%s", JSONProblem(err))
	}
	handle, ok := handlerTable[head.Type]
	if !ok {
		return head.Type, false, nil
	}
	return head.Type, true, handle(b, h)
}
