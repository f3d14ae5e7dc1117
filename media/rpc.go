package media

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
)

// The rpc DataChannel: JSON-RPC 2.0 calls a connection makes about itself,
// the same operations the HTTP API offers about any connection. A
// connection changes only what it receives and its own metadata: a
// receiver ID other than its own is refused.

// rpcMethod handles one method for connection c; params are raw.
type rpcMethod func(c *connection, params json.RawMessage) (any, *signaling.RPCError)

// rpcMethodList names the methods sorad serves, without their version
// prefix; lookupRPC has their handlers.
var rpcMethodList = []string{
	"PutSignalingNotifyMetadata",
	"PutSignalingNotifyMetadataItem",
	"RequestSimulcastRid",
	"RequestSpotlightRid",
	"ResetSpotlightRid",
}

// lookupRPC is the handler of a method, nil for one sorad does not serve.
func lookupRPC(name string) rpcMethod {
	switch name {
	case "RequestSimulcastRid":
		return rpcRequestSimulcastRID
	case "RequestSpotlightRid":
		return rpcRequestSpotlightRID
	case "ResetSpotlightRid":
		return rpcResetSpotlightRID
	case "PutSignalingNotifyMetadata":
		return rpcPutSignalingNotifyMetadata
	case "PutSignalingNotifyMetadataItem":
		return rpcPutSignalingNotifyMetadataItem
	}
	return nil
}

// rpcMethodNames are the names the offer's rpc_methods lists.
func rpcMethodNames() []string {
	out := make([]string, len(rpcMethodList))
	for i, name := range rpcMethodList {
		out[i] = signaling.RPCMethodVersion + name
	}
	return out
}

// rpcMethods are the methods this connection may call: those the auth
// webhook granted, else every one.
func (c *connection) rpcMethods() []string {
	if c.grant.rpcMethods != nil {
		return c.grant.rpcMethods
	}
	return rpcMethodNames()
}

// serveRPC answers one message of DC rpc. Notifications (no id) are
// carried out and get no response.
func (c *connection) serveRPC(b []byte) {
	req, rerr := signaling.ParseRPC(b)
	var result any
	if rerr == nil {
		result, rerr = c.callRPC(req)
		if req.ID == nil {
			return
		}
	}
	out, err := signaling.EncodeRPCResponse(req.ID, result, rerr)
	if err != nil {
		c.log.Error("encode JSON-RPC response", "method", req.Method, "error", err)
		out, _ = signaling.EncodeRPCResponse(req.ID, nil, signaling.RPCErrorf(signaling.RPCInternalError, "internal error"))
	}
	c.sendEncoded(viaRPC, out)
}

func (c *connection) callRPC(req signaling.RPCRequest) (any, *signaling.RPCError) {
	name, ok := cutVersion(req.Method)
	method := lookupRPC(name)
	if !ok || method == nil || !slices.Contains(c.rpcMethods(), req.Method) {
		return nil, signaling.RPCErrorf(signaling.RPCMethodNotFound, "method not found: %s", clip(req.Method, 64))
	}
	return method(c, req.Params)
}

// cutVersion takes the version prefix off a method name.
func cutVersion(method string) (string, bool) {
	if len(method) <= len(signaling.RPCMethodVersion) || method[:len(signaling.RPCMethodVersion)] != signaling.RPCMethodVersion {
		return "", false
	}
	return method[len(signaling.RPCMethodVersion):], true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// rpcParams decodes params into T; absent params are T's zero value.
func rpcParams[T any](params json.RawMessage) (T, *signaling.RPCError) {
	var p T
	if len(params) == 0 || string(params) == "null" {
		return p, nil
	}
	if err := json.Unmarshal(params, &p); err != nil {
		return p, signaling.RPCErrorf(signaling.RPCInvalidParams, "invalid params: %s", signaling.JSONProblem(err))
	}
	return p, nil
}

// rpcFailure maps an error of the operation to a JSON-RPC error whose data
// carries the API's error_type and error_reason.
func rpcFailure(err error) *signaling.RPCError {
	if err == nil {
		return nil
	}
	var nf *NotFoundError
	var inv *InvalidError
	switch {
	case errors.As(err, &nf):
		return &signaling.RPCError{Code: signaling.RPCInvalidParams, Message: nf.Type, Data: map[string]any{"error_type": nf.Type, "error_reason": nf.Reason}}
	case errors.As(err, &inv):
		return &signaling.RPCError{Code: signaling.RPCInvalidParams, Message: inv.Type, Data: map[string]any{"error_type": inv.Type, "error_reason": inv.Reason}}
	}
	return signaling.RPCErrorf(signaling.RPCInternalError, "internal error")
}

// self checks that a receiver ID in params, when given, is the caller's.
func (c *connection) self(field, id string) *signaling.RPCError {
	if id != "" && id != c.id {
		return signaling.RPCErrorf(signaling.RPCInvalidParams, "%s must be this connection's own ID (or absent)", field)
	}
	return nil
}

// rpcRID reads a rid parameter: none, r0, r1 or r2.
func rpcRID(field, v string) (channel.RID, *signaling.RPCError) {
	rid, ok := channel.ParseRID(v)
	if !ok {
		return "", signaling.RPCErrorf(signaling.RPCInvalidParams, "%s must be none, r0, r1 or r2", field)
	}
	return rid, nil
}

type simulcastRIDParams struct {
	RID                  string `json:"rid"`
	SenderConnectionID   string `json:"sender_connection_id,omitempty"`
	ReceiverConnectionID string `json:"receiver_connection_id"`
}

// rpcRequestSimulcastRID asks for the layer the caller receives from one
// sender, or from every sender.
func rpcRequestSimulcastRID(c *connection, params json.RawMessage) (any, *signaling.RPCError) {
	p, rerr := rpcParams[simulcastRIDParams](params)
	if rerr != nil {
		return nil, rerr
	}
	if rerr := c.self("receiver_connection_id", p.ReceiverConnectionID); rerr != nil {
		return nil, rerr
	}
	rid, rerr := rpcRID("rid", p.RID)
	if rerr != nil {
		return nil, rerr
	}
	if err := c.m.RequestRtpStream(c.req.ChannelID, c.id, p.SenderConnectionID, rid); err != nil {
		return nil, rpcFailure(err)
	}
	p.ReceiverConnectionID = c.id
	return p, nil
}

type spotlightRIDParams struct {
	RecvConnectionID    string `json:"recv_connection_id"`
	SendConnectionID    string `json:"send_connection_id,omitempty"`
	SpotlightFocusRID   string `json:"spotlight_focus_rid"`
	SpotlightUnfocusRID string `json:"spotlight_unfocus_rid"`
}

// rpcRequestSpotlightRID asks for the layers the caller receives from
// focused and unfocused senders.
func rpcRequestSpotlightRID(c *connection, params json.RawMessage) (any, *signaling.RPCError) {
	p, rerr := rpcParams[spotlightRIDParams](params)
	if rerr != nil {
		return nil, rerr
	}
	if rerr := c.self("recv_connection_id", p.RecvConnectionID); rerr != nil {
		return nil, rerr
	}
	focus, rerr := rpcRID("spotlight_focus_rid", p.SpotlightFocusRID)
	if rerr != nil {
		return nil, rerr
	}
	unfocus, rerr := rpcRID("spotlight_unfocus_rid", p.SpotlightUnfocusRID)
	if rerr != nil {
		return nil, rerr
	}
	r := SpotlightRIDRequest{Recv: c.id, Send: p.SendConnectionID, FocusRID: focus, UnfocusRID: unfocus}
	if err := c.m.BatchRequestSpotlightRID(c.req.ChannelID, []SpotlightRIDRequest{r}); err != nil {
		return nil, rpcFailure(err)
	}
	p.RecvConnectionID = c.id
	return p, nil
}

type resetSpotlightRIDParams struct {
	RecvConnectionID string `json:"recv_connection_id"`
	SendConnectionID string `json:"send_connection_id,omitempty"`
}

// rpcResetSpotlightRID forgets RequestSpotlightRid.
func rpcResetSpotlightRID(c *connection, params json.RawMessage) (any, *signaling.RPCError) {
	p, rerr := rpcParams[resetSpotlightRIDParams](params)
	if rerr != nil {
		return nil, rerr
	}
	if rerr := c.self("recv_connection_id", p.RecvConnectionID); rerr != nil {
		return nil, rerr
	}
	if err := c.m.ResetSpotlightRID(c.req.ChannelID, c.id, p.SendConnectionID); err != nil {
		return nil, rpcFailure(err)
	}
	p.RecvConnectionID = c.id
	return p, nil
}

type notifyMetadataParams struct {
	Metadata json.RawMessage `json:"metadata"`
	Push     bool            `json:"push"`
}

// rpcPutSignalingNotifyMetadata replaces the caller's signaling notify
// metadata and returns it; with push, the channel is told.
func rpcPutSignalingNotifyMetadata(c *connection, params json.RawMessage) (any, *signaling.RPCError) {
	p, rerr := rpcParams[notifyMetadataParams](params)
	if rerr != nil {
		return nil, rerr
	}
	if len(p.Metadata) == 0 {
		return nil, signaling.RPCErrorf(signaling.RPCInvalidParams, "metadata is missing")
	}
	meta, err := c.m.PutSignalingNotifyMetadata(c.req.ChannelID, c.id, p.Metadata, p.Push)
	if err != nil {
		return nil, rpcFailure(err)
	}
	return meta, nil
}

type notifyMetadataItemParams struct {
	Key   *string         `json:"key"`
	Value json.RawMessage `json:"value"`
	Push  bool            `json:"push"`
}

// rpcPutSignalingNotifyMetadataItem sets one key of the caller's metadata
// and returns the metadata.
func rpcPutSignalingNotifyMetadataItem(c *connection, params json.RawMessage) (any, *signaling.RPCError) {
	p, rerr := rpcParams[notifyMetadataItemParams](params)
	if rerr != nil {
		return nil, rerr
	}
	if p.Key == nil || len(p.Value) == 0 {
		return nil, signaling.RPCErrorf(signaling.RPCInvalidParams, "key and value are required")
	}
	meta, err := c.m.PutSignalingNotifyMetadataItem(c.req.ChannelID, c.id, *p.Key, p.Value, p.Push)
	if err != nil {
		return nil, rpcFailure(err)
	}
	return meta, nil
}
