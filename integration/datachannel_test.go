package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// TestDataChannelSignalingInACluster: on real sorad processes, two clients
// with DataChannel signaling that closed their WebSockets on switched (as
// the C++ SDK does) exchange messages on #chat through the node in charge,
// and a Disconnect API call made on the other node (forwarded there)
// reaches the client as a close message on DC signaling.
func TestDataChannelSignalingInACluster(t *testing.T) {
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2)
	owner, other := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := func(header bool) soraclient.Options {
		return soraclient.Options{ChannelID: "dc-cluster", Role: "sendrecv", Audio: true,
			DataChannelSignaling: true, IgnoreDisconnectWebSocket: true, CloseWebSocketOnSwitch: true,
			DataChannels: []soraclient.DataChannelOption{{Label: "#chat", Direction: "sendrecv", SenderConnectionIDHeader: header}}}
	}
	a := connectClient(t, ctx, owner, opts(false))
	b := connectClient(t, ctx, owner, opts(true))
	for _, c := range []*soraclient.Client{a, b} {
		select {
		case <-c.Switched():
		case <-ctx.Done():
			t.Fatal("no switched")
		}
		select {
		case <-c.Closed():
		case <-ctx.Done():
			t.Fatal("the client kept its WebSocket")
		}
	}
	if err := a.SendMessage("#chat", []byte("to b")); err != nil {
		t.Fatal(err)
	}
	if err := b.SendMessage("#chat", []byte("to a")); err != nil {
		t.Fatal(err)
	}
	if got, err := b.WaitLabelMessages(ctx, "#chat", 1); err != nil || string(got[0]) != a.ConnectionID()+"to b" {
		t.Fatalf("b got %q, %v", got, err)
	}
	if got, err := a.WaitLabelMessages(ctx, "#chat", 1); err != nil || string(got[0]) != "to a" {
		t.Fatalf("a got %q, %v", got, err)
	}
	other.MustCall(200, "Sora_20151104.DisconnectConnection", map[string]string{"channel_id": "dc-cluster", "connection_id": a.ConnectionID()})
	msg, err := a.WaitMessage(ctx, func(m soraclient.Message) bool { return m.Label == "signaling" && m.Type == "close" })
	if err != nil || !strings.Contains(string(msg.Raw), `"reason":"DISCONNECTED-API"`) {
		t.Fatalf("close over DC signaling: %s %v", msg.Raw, err)
	}
	select {
	case <-a.DataChannelsClosed():
	case <-ctx.Done():
		t.Fatal("the DataChannels stayed open after close")
	}
	harness.Eventually(t, 10*time.Second, "one connection left in the channel", func() bool {
		var conns []map[string]any
		return other.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "dc-cluster"}).JSON(&conns) == nil && len(conns) == 1
	})
}
