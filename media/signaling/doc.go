// Package signaling is Sora's signaling protocol as sorad speaks it: the
// typed messages a client sends (connect, answer, re-answer, candidate,
// pong, disconnect) and those sorad sends (offer, re-offer, ping, push,
// notify, redirect), their validation, the close codes, and one dispatch
// table from a message type to its handler.
//
// It knows nothing of transports: the WebSocket today, and the signaling
// DataChannel later, read bytes and hand them to Dispatch, and send what
// Encode produces. Every decoder of client input here is fuzzed; any
// refusal is an *Error whose Reason fits a WebSocket close frame and names
// the field at fault. See protocol.md beside this file for the wire rules
// sorad follows and where they come from.
package signaling

// Close codes sorad sends, on the WebSocket close frame (and, in a later
// transport, in the DataChannel close message).
const (
	CloseNormal      = 1000 // TYPE-DISCONNECT, DISCONNECTED-API
	CloseSignaling   = 4490 // a bad or contradictory message (Sora's code)
	CloseUnavailable = 4503 // refused for a reason of the node: mode, license, cluster
	CloseForbidden   = 4403 // the connect did not prove it may join (access token)
	CloseTimeout     = 4408 // the client stopped answering
)
