package integration

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestSeedConnectionAndMetadataAPIs replays the examples of seeds 001 (the
// connection APIs) and 003 (signaling notify metadata) on live connections:
// each request as the seed shows it, with the live channel and IDs put in,
// and each answer and push compared with the seed's: exactly where the
// seed's answer follows from its request, by keys and JSON types where it
// holds per-connection values.
func TestSeedConnectionAndMetadataAPIs(t *testing.T) {
	h := harness.New(t, soradBin)
	n := startNode(t, h, "--api_cors_origin=http://127.0.0.1:5000")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	headers := seedHeaders(t)
	join := func(opts soraclient.Options) *soraclient.Client {
		opts.ChannelID, opts.Audio, opts.Video = "sora", true, true
		c := connectClient(t, ctx, n, opts)
		waitNotify(t, ctx, c, "connection.created", c.ConnectionID())
		return c
	}
	a := join(soraclient.Options{Role: "sendrecv", SignalingNotifyMetadata: map[string]int{"abc": 10}})
	b := join(soraclient.Options{Role: "sendrecv", ClientID: "client-b", SignalingNotifyMetadata: map[string]int{"abc": 10}})

	// request loads a seed request and puts the live values in.
	request := func(dir, api string, set map[string]any) map[string]any {
		req := seedIn(t, dir, api+".request.json").(map[string]any)
		for k, v := range set {
			req[k] = v
		}
		return req
	}
	call := func(target string, body any) any {
		t.Helper()
		r := n.MustCall(200, target, body)
		checkHeaders(t, target, r, headers)
		return decode(t, r)
	}
	same := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s = %v, seed %v", what, got, want)
		}
	}
	// seedAnswer loads a seed answer with the live connection ID put in.
	seedAnswer := func(dir, file, connectionID string) any {
		v := seedIn(t, dir, file)
		if m, ok := v.(map[string]any); ok {
			if _, has := m["connection_id"]; has {
				m["connection_id"] = connectionID
			}
			if d, ok := m["data"].(map[string]any); ok {
				d["connection_id"] = connectionID
			}
		}
		return v
	}
	pushOf := func(c *soraclient.Client, action string) any {
		t.Helper()
		m, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
			var p struct {
				Data struct{ Action string } `json:"data"`
			}
			return m.Type == "push" && json.Unmarshal(m.Raw, &p) == nil && p.Data.Action == action
		})
		if err != nil {
			t.Fatalf("no %s push: %v", action, err)
		}
		var v any
		_ = json.Unmarshal(m.Raw, &v)
		return v
	}

	t.Run("ListConnections and ListChannelConnections", func(t *testing.T) {
		got := call("Sora_20201013.ListConnections", nil)
		checkShape(t, "ListConnections", seedIn(t, "seed001", "ListConnections.response.json"), got, "session_id")
		got = call("Sora_20201013.ListChannelConnections", request("seed001", "ListChannelConnections", nil))
		checkShape(t, "ListChannelConnections", seedIn(t, "seed001", "ListChannelConnections.response.json"), got, "session_id")
		if len(got.([]any)) != 2 {
			t.Fatalf("ListChannelConnections = %v", got)
		}
	})

	t.Run("signaling notify metadata", func(t *testing.T) {
		const dir = "seed003"
		id := a.ConnectionID()
		got := call("Sora_20201124.ListSignalingNotifyMetadata", request(dir, "ListSignalingNotifyMetadata", nil))
		checkShape(t, "ListSignalingNotifyMetadata", seedIn(t, dir, "ListSignalingNotifyMetadata.response.json"), got)
		for _, api := range []string{"PutSignalingNotifyMetadata", "GetSignalingNotifyMetadata", "PutSignalingNotifyMetadataItem", "DeleteSignalingNotifyMetadataItem", "PutSignalingNotifyMetadata", "DeleteSignalingNotifyMetadata"} {
			got := call("Sora_20201124."+api, request(dir, api, map[string]any{"connection_id": id}))
			same(api, got, seedAnswer(dir, api+".response.json", id))
		}
		// With push: true the whole channel gets the seed's push.
		for _, p := range []struct{ api, action string }{
			{"PutSignalingNotifyMetadata", "PutMetadata"},
			{"DeleteSignalingNotifyMetadata", "DeleteMetadata"},
			{"PutSignalingNotifyMetadataItem", "PutMetadataItem"},
			{"DeleteSignalingNotifyMetadataItem", "DeleteMetadataItem"},
		} {
			for _, c := range []*soraclient.Client{a, b} {
				same(p.api+" push to "+c.ConnectionID(), pushOf(c, p.action), seedAnswer(dir, p.api+".push.json", id))
			}
		}
	})

	t.Run("Disconnect", func(t *testing.T) {
		const dir = "seed001"
		got := call("Sora_20151104.DisconnectConnection", request(dir, "DisconnectConnection", map[string]any{"connection_id": a.ConnectionID()}))
		same("DisconnectConnection", got, seedAnswer(dir, "DisconnectConnection.response.json", a.ConnectionID()))
		waitClose(t, ctx, a)
		got = call("Sora_20151104.DisconnectClient", request(dir, "DisconnectClient", map[string]any{"client_id": "client-b"}))
		want := seedIn(t, dir, "DisconnectClient.response.json").(map[string]any)
		want["client_id"] = "client-b"
		same("DisconnectClient", got, any(want))
		waitClose(t, ctx, b)
		c := join(soraclient.Options{Role: "sendrecv"})
		got = call("Sora_20201120.DisconnectChannelByRole", request(dir, "DisconnectChannelByRole", nil))
		same("DisconnectChannelByRole", got, seedIn(t, dir, "DisconnectChannelByRole.response.json"))
		waitClose(t, ctx, c)
		d := join(soraclient.Options{Role: "recvonly"})
		got = call("Sora_20151104.DisconnectChannel", request(dir, "DisconnectChannel", nil))
		same("DisconnectChannel", got, seedIn(t, dir, "DisconnectChannel.response.json"))
		waitClose(t, ctx, d)
	})
	harness.Eventually(t, 5*time.Second, "channel empty", func() bool {
		r, err := n.Call("Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "sora"})
		return err == nil && string(r.Body) == "[]"
	})
}
