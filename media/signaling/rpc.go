package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// JSON-RPC 2.0 on the rpc DataChannel: the client calls, the server
// answers. Methods are named "<version>/<Name>" and listed in the offer's
// rpc_methods.

// The JSON-RPC 2.0 error codes sorad answers with.
const (
	RPCParseError     = -32700
	RPCInvalidRequest = -32600
	RPCMethodNotFound = -32601
	RPCInvalidParams  = -32602
	RPCInternalError  = -32603
)

// RPCMethodVersion prefixes the methods sorad serves, as Sora names them.
const RPCMethodVersion = "2025.2.0/"

// RPCRequest is one call. ID is nil for a notification, which gets no
// response.
type RPCRequest struct {
	ID     json.RawMessage
	Method string
	Params json.RawMessage
}

// RPCError is a JSON-RPC error object.
type RPCError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *RPCError) Error() string { return fmt.Sprintf("json-rpc error %d: %s", e.Code, e.Message) }

// RPCErrorf is an error with code and a formatted message.
func RPCErrorf(code int, format string, args ...any) *RPCError {
	return &RPCError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// RPCResponse answers a request: Result or Error.
type RPCResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *RPCError       `json:"error,omitempty"`
}

// ParseRPC reads one request. A message that is no request gets the error
// to answer with (its ID null when none could be read).
func ParseRPC(b []byte) (RPCRequest, *RPCError) {
	var w struct {
		JSONRPC *string          `json:"jsonrpc"`
		ID      *json.RawMessage `json:"id"`
		Method  *string          `json:"method"`
		Params  json.RawMessage  `json:"params"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return RPCRequest{}, RPCErrorf(RPCParseError, "parse error: %s", JSONProblem(err))
	}
	var req RPCRequest
	if w.ID != nil {
		req.ID = *w.ID
		if id := bytes.TrimSpace(req.ID); len(id) == 0 || (id[0] != '"' && id[0] != '-' && (id[0] < '0' || id[0] > '9') && string(id) != "null") {
			req.ID = json.RawMessage("null")
			return req, RPCErrorf(RPCInvalidRequest, "id must be a string or a number")
		}
	}
	switch {
	case w.JSONRPC == nil || *w.JSONRPC != "2.0":
		return req, RPCErrorf(RPCInvalidRequest, `jsonrpc must be "2.0"`)
	case w.Method == nil || *w.Method == "":
		return req, RPCErrorf(RPCInvalidRequest, "method is missing")
	}
	req.Method = *w.Method
	if p := bytes.TrimSpace(w.Params); len(p) > 0 && p[0] != '{' && p[0] != '[' && string(p) != "null" {
		return req, RPCErrorf(RPCInvalidRequest, "params must be an object or an array")
	}
	req.Params = w.Params
	return req, nil
}

// EncodeRPCResponse marshals the response to req: result, or rpcErr when
// it is set.
func EncodeRPCResponse(id json.RawMessage, result any, rpcErr *RPCError) ([]byte, error) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	resp := RPCResponse{JSONRPC: "2.0", ID: id, Error: rpcErr}
	if rpcErr == nil {
		b, err := json.Marshal(result)
		if err != nil {
			return nil, fmt.Errorf("encode json-rpc result: %w", err)
		}
		resp.Result = b
	}
	return json.Marshal(resp)
}
