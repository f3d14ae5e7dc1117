package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestLogsCarryIdentifiers holds the node's JSON log to the README's rule
// ("Logs"): every line names the node (node_name); a line about a
// connection names its channel (channel_id) and, once admitted, its
// session (session_id); session lines name both.
func TestLogsCarryIdentifiers(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "logs", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "logs", Role: "recvonly", Audio: true, Video: true})
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 5); err != nil {
		t.Fatal(err)
	}
	_ = sub.Close()
	_ = pub.Close()
	harness.Eventually(t, 10*time.Second, "the session destroyed", func() bool {
		return strings.Contains(n.Log(), `"msg":"session destroyed"`)
	})

	var sessionID string
	perConnection := map[string]int{} // connection ID -> lines with session_id
	lines := 0
	for _, line := range strings.Split(n.Log(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("not a JSON log line: %v: %s", err, line)
			continue
		}
		lines++
		if l["node_name"] != n.Name {
			t.Errorf("node_name %v, want %s: %s", l["node_name"], n.Name, line)
		}
		if keys := topLevelKeys(t, line); len(slices.DeleteFunc(keys, func(k string) bool { return k != "node_name" })) != 1 {
			t.Errorf("node_name more than once: %s", line)
		}
		connID, _ := l["connection_id"].(string)
		if connID != "" && l["channel_id"] == nil {
			t.Errorf("a connection's line without channel_id: %s", line)
		}
		if msg := l["msg"]; msg == "session created" || msg == "session destroyed" {
			id, _ := l["session_id"].(string)
			if l["channel_id"] != "logs" || id == "" || (sessionID != "" && id != sessionID) {
				t.Errorf("session line without its channel_id and session_id (%s so far): %s", sessionID, line)
			}
			sessionID = id
		}
		if connID != "" && l["session_id"] != nil {
			perConnection[connID]++
			if l["session_id"] != sessionID {
				t.Errorf("session_id %v, want %s: %s", l["session_id"], sessionID, line)
			}
		}
	}
	if lines < 10 {
		t.Fatalf("only %d JSON lines in the log", lines)
	}
	for _, c := range []*soraclient.Client{pub, sub} {
		if perConnection[c.ConnectionID()] == 0 {
			t.Errorf("no line of connection %s carries its session_id", c.ConnectionID())
		}
	}
}

// topLevelKeys returns the keys of a JSON object in order, duplicates kept
// (which json.Unmarshal into a map would hide).
func topLevelKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
	}
	return keys
}
