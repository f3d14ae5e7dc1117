package signaling

import (
	"encoding/json"
	"testing"
)

func TestParseRPC(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		code     int // 0: a request
		method   string
		id       string // as raw JSON; "" for a notification
		answerID string // the id an error answer carries
	}{
		{"request", `{"jsonrpc":"2.0","id":1,"method":"2025.2.0/RequestSimulcastRid","params":{"rid":"r1"}}`, 0, "2025.2.0/RequestSimulcastRid", "1", ""},
		{"string id", `{"jsonrpc":"2.0","id":"a","method":"m"}`, 0, "m", `"a"`, ""},
		{"notification", `{"jsonrpc":"2.0","method":"m","params":[]}`, 0, "m", "", ""},
		{"not JSON", `{"jsonrpc":`, RPCParseError, "", "", "null"},
		{"not an object", `[1,2]`, RPCParseError, "", "", "null"},
		{"old version", `{"jsonrpc":"1.0","id":2,"method":"m"}`, RPCInvalidRequest, "", "2", "2"},
		{"no method", `{"jsonrpc":"2.0","id":3}`, RPCInvalidRequest, "", "3", "3"},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"m"}`, RPCInvalidRequest, "", "null", "null"},
		{"scalar params", `{"jsonrpc":"2.0","id":4,"method":"m","params":5}`, RPCInvalidRequest, "", "4", "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, rerr := ParseRPC([]byte(tt.in))
			if tt.code != 0 {
				if rerr == nil || rerr.Code != tt.code {
					t.Fatalf("error %v, want code %d", rerr, tt.code)
				}
				b, err := EncodeRPCResponse(req.ID, nil, rerr)
				if err != nil {
					t.Fatal(err)
				}
				var resp struct {
					JSONRPC string          `json:"jsonrpc"`
					ID      json.RawMessage `json:"id"`
					Error   *RPCError       `json:"error"`
					Result  json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal(b, &resp); err != nil || resp.JSONRPC != "2.0" || string(resp.ID) != tt.answerID || resp.Error == nil || resp.Error.Code != tt.code || resp.Result != nil {
					t.Fatalf("answer %s", b)
				}
				return
			}
			if rerr != nil {
				t.Fatalf("error %v", rerr)
			}
			if req.Method != tt.method || string(req.ID) != tt.id {
				t.Fatalf("got method %q id %s", req.Method, req.ID)
			}
		})
	}
}

// A result of nil is still a result: JSON-RPC needs result or error.
func TestEncodeRPCResponseResult(t *testing.T) {
	b, err := EncodeRPCResponse(json.RawMessage("7"), nil, nil)
	if err != nil || string(b) != `{"jsonrpc":"2.0","id":7,"result":null}` {
		t.Fatalf("%s %v", b, err)
	}
	b, err = EncodeRPCResponse(json.RawMessage(`"x"`), map[string]string{"a": "b"}, nil)
	if err != nil || string(b) != `{"jsonrpc":"2.0","id":"x","result":{"a":"b"}}` {
		t.Fatalf("%s %v", b, err)
	}
}

func FuzzParseRPC(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"2025.2.0/RequestSimulcastRid","params":{"rid":"r1"}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"m"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, rerr := ParseRPC(b)
		if rerr == nil && req.Method == "" {
			t.Fatal("a request without a method")
		}
		if _, err := EncodeRPCResponse(req.ID, nil, rerr); err != nil {
			t.Fatalf("answer to %q: %v", b, err)
		}
	})
}
