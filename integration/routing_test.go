package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// callWithToken posts to a node's API with a bearer token.
func callWithToken(t *testing.T, n *harness.Node, token, target string, body any) harness.Response {
	t.Helper()
	r, err := tryWithToken(n, token, target, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryWithToken is callWithToken for polling: a node that does not answer is
// an error, not a failure.
func tryWithToken(n *harness.Node, token, target string, body any) (harness.Response, error) {
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	req, err := http.NewRequest(http.MethodPost, n.APIURL(), bytesReader(raw))
	if err != nil {
		return harness.Response{}, err
	}
	req.Header.Set("x-sora-target", target)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return harness.Response{}, err
	}
	defer resp.Body.Close()
	b, err := readAll(resp)
	return harness.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// TestChannelAPIsAnswerTheSameOnEveryNode: a channel-scoped call made on a
// node that is not in charge is forwarded to the node in charge, whose answer
// comes back unchanged; cluster-wide listings merge every node's.
func TestChannelAPIsAnswerTheSameOnEveryNode(t *testing.T) {
	h := harness.New(t, soradBin)
	const token = "s3cret"
	nodes := startClusterWithToken(t, h, 3, token)
	owner := nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := connectClient(t, ctx, owner, soraclient.Options{ChannelID: "fwd", Role: "sendrecv", Audio: true, Video: true, ClientID: "alice"})
	sub := connectClient(t, ctx, owner, soraclient.Options{ChannelID: "fwd", Role: "recvonly", Audio: true, Video: true})
	elsewhere := connectClient(t, ctx, nodes[2], soraclient.Options{ChannelID: "other", Role: "recvonly", Audio: true, Video: true})
	for _, c := range []*soraclient.Client{pub, sub, elsewhere} {
		waitNotify(t, ctx, c, "connection.created", c.ConnectionID())
	}
	harness.Eventually(t, 5*time.Second, "assignments replicated", func() bool {
		for _, n := range nodes {
			if len(listChannelsWithToken(t, n, token)) != 2 {
				return false
			}
		}
		return true
	})

	t.Run("same answer everywhere", func(t *testing.T) {
		var first string
		for _, n := range nodes {
			r := callWithToken(t, n, token, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "fwd"})
			if r.Status != 200 {
				t.Fatalf("%s: %d %s", n.Name, r.Status, r.Body)
			}
			if first == "" {
				first = string(r.Body)
			} else if string(r.Body) != first {
				t.Fatalf("%s answers %s\nthe owner answers %s", n.Name, r.Body, first)
			}
		}
		r := callWithToken(t, nodes[1], token, "Sora_20201124.GetSignalingNotifyMetadata", map[string]string{"channel_id": "fwd", "connection_id": "NOPE"})
		if r.Status != 404 {
			t.Fatalf("unknown connection through a non-owner: %d %s", r.Status, r.Body)
		}
	})

	t.Run("pause and resume through a non-owner", func(t *testing.T) {
		pair := map[string]string{"channel_id": "fwd", "recv_connection_id": sub.ConnectionID(), "send_connection_id": pub.ConnectionID()}
		if r := callWithToken(t, nodes[1], token, "Sora_20200401.PauseRtpStream", pair); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, pair)) {
			t.Fatalf("PauseRtpStream through a non-owner: %d %s", r.Status, r.Body)
		}
		want := `[{"channel_id":"fwd","recv_connection_id":"` + sub.ConnectionID() + `","role":"recvonly","send_connection_id":"` + pub.ConnectionID() + `"}]`
		for _, n := range nodes {
			if r := callWithToken(t, n, token, "Sora_20200401.ListPauseRtpStreams", map[string]string{"channel_id": "fwd"}); r.Status != 200 || !jsonEqual(r.Body, []byte(want)) {
				t.Fatalf("ListPauseRtpStreams on %s: %d %s, want %s", n.Name, r.Status, r.Body, want)
			}
		}
		if r := callWithToken(t, nodes[2], token, "Sora_20200401.ResumeRtpStream", pair); r.Status != 200 {
			t.Fatalf("ResumeRtpStream through a non-owner: %d %s", r.Status, r.Body)
		}
		if r := callWithToken(t, nodes[1], token, "Sora_20200401.ListPauseRtpStreams", map[string]string{"channel_id": "fwd"}); r.Status != 200 || string(r.Body) != "[]" {
			t.Fatalf("ListPauseRtpStreams after resume: %d %s", r.Status, r.Body)
		}
	})

	t.Run("push and disconnect through a non-owner", func(t *testing.T) {
		r := callWithToken(t, nodes[1], token, "Sora_20160711.PushChannel", map[string]any{"channel_id": "fwd", "data": map[string]string{"via": "node-02"}})
		if r.Status != 200 {
			t.Fatalf("PushChannel through a non-owner: %d %s", r.Status, r.Body)
		}
		waitPush(t, ctx, pub, `{"via":"node-02"}`)
		waitPush(t, ctx, sub, `{"via":"node-02"}`)
		r = callWithToken(t, nodes[2], token, "Sora_20151104.DisconnectConnection", map[string]string{"channel_id": "fwd", "connection_id": sub.ConnectionID()})
		if r.Status != 200 || !jsonEqual(r.Body, []byte(`{"channel_id":"fwd","connection_id":"`+sub.ConnectionID()+`"}`)) {
			t.Fatalf("DisconnectConnection through a non-owner: %d %s", r.Status, r.Body)
		}
		if info := waitClose(t, ctx, sub); info.Code != 1000 || info.Reason != "DISCONNECTED-API" {
			t.Fatalf("closed with %+v", info)
		}
	})

	t.Run("cluster-wide listings", func(t *testing.T) {
		for _, n := range nodes {
			var all []map[string]any
			r := callWithToken(t, n, token, "Sora_20201013.ListConnections", map[string]bool{"local": false})
			if err := r.JSON(&all); err != nil || len(all) != 2 {
				t.Fatalf("%s lists %s, want the 2 live connections of the cluster", n.Name, r.Body)
			}
			var chans []map[string]any
			r = callWithToken(t, n, token, targetListChannels, map[string]bool{"local": false})
			if err := r.JSON(&chans); err != nil || len(chans) != 2 {
				t.Fatalf("%s lists channels %s", n.Name, r.Body)
			}
		}
		var local []any
		if err := callWithToken(t, nodes[1], token, "Sora_20201013.ListConnections", nil).JSON(&local); err != nil || len(local) != 0 {
			t.Fatalf("node-02 has no connection of its own, lists %v", local)
		}
	})

	t.Run("the token is checked at the edge; the internal hop admits members only", func(t *testing.T) {
		r := callWithToken(t, nodes[1], "", "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "fwd"})
		if r.Status != 401 {
			t.Fatalf("no token at the edge: %d", r.Status)
		}
		header := http.Header{}
		header.Set("x-sora-target", "Sora_20201013.ListChannelConnections")
		header.Set("Authorization", "Bearer "+token)
		if r, err := owner.InternalPost("/internal/v1/api", header, []byte(`{"channel_id":"fwd"}`), nil); err == nil {
			t.Fatalf("a caller without cluster credentials, even with the token, got an answer on the cluster port: %d %s", r.Status, r.Body)
		}
		stranger, err := trust.NewStore(func() (*trust.Material, error) {
			return trust.FromSecret(nodes[1].Name, "another cluster's secret, 32 bytes or more")
		})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := owner.InternalPost("/internal/v1/api", header, []byte(`{"channel_id":"fwd"}`), stranger); err == nil {
			t.Fatalf("a member of another cluster got an answer: %d %s", r.Status, r.Body)
		}
		member, err := harness.MemberTrust(nodes[1].Name)
		if err != nil {
			t.Fatal(err)
		}
		header.Del("Authorization") // members forward calls without the operator's token
		if r, err := owner.InternalPost("/internal/v1/api", header, []byte(`{"channel_id":"fwd"}`), member); err != nil || r.Status != 200 {
			t.Fatalf("a member's forwarded call: %d %s %v", r.Status, r.Body, err)
		}
	})

	t.Run("an unreachable node in charge is a 503", func(t *testing.T) {
		owner.Kill()
		r := callWithToken(t, nodes[1], token, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "fwd"})
		var e struct {
			Type string `json:"error_type"`
		}
		if r.Status != 503 || r.JSON(&e) != nil || e.Type != "NODE-IN-CHARGE-UNREACHABLE" {
			t.Fatalf("call about a dead owner's channel: %d %s", r.Status, r.Body)
		}
	})
}

func listChannelsWithToken(t *testing.T, n *harness.Node, token string) []channelEntry {
	var out []channelEntry
	_ = callWithToken(t, n, token, targetListClusterChannels, nil).JSON(&out)
	return out
}

// startClusterWithToken is startCluster with an API bearer token; the
// formation check asks with the token too.
func startClusterWithToken(t *testing.T, h *harness.Harness, size int, token string) []*harness.Node {
	t.Helper()
	nodes := make([]*harness.Node, size)
	for i := range nodes {
		nodes[i] = h.NewNode("node-0"+string(rune('1'+i)), "--api_bearer_token="+token)
	}
	for i, n := range nodes {
		var contacts string
		for j, o := range nodes {
			if j != i {
				if contacts != "" {
					contacts += ","
				}
				contacts += o.Name
			}
		}
		n.Args = append(n.Args, "--contact_node_name_list="+contacts)
	}
	for _, n := range nodes {
		n.Start()
	}
	for _, n := range nodes {
		harness.Eventually(t, 20*time.Second, n.Name+" sees the whole cluster", func() bool {
			var list []nodeEntry
			r, err := tryWithToken(n, token, targetListClusterNodes, nil)
			return err == nil && r.Status == 200 && r.JSON(&list) == nil && len(list) == size
		})
	}
	return nodes
}
