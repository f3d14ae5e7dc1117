package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// Per-receiver forwarding on the real binary: simulcast layers, spotlight,
// RTP stream pause and resume, and the upstream bit rate. The clients speak
// only the wire protocol; which layer a receiver gets is read off the
// packets themselves (soraclient marks every frame body with its layer).

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// videoFrom is c's packet log of sender's video.
func videoFrom(c, sender *soraclient.Client) []soraclient.PacketInfo {
	return c.Packets(sender.ConnectionID(), "video")
}

// waitLayer waits until the last n video packets c got from sender are all
// of layer (-1: none arrive at all for a second), and returns the log.
func waitLayer(t *testing.T, ctx context.Context, c, sender *soraclient.Client, layer, n int) []soraclient.PacketInfo {
	t.Helper()
	var log []soraclient.PacketInfo
	for {
		log = videoFrom(c, sender)
		if layer >= 0 && len(log) >= n {
			ok := true
			for _, p := range log[len(log)-n:] {
				ok = ok && p.Layer == layer
			}
			if ok {
				return log
			}
		}
		if layer < 0 && (len(log) == 0 || time.Since(log[len(log)-1].At) > time.Second) {
			return log
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: the last %d video packets from %s are not of layer %d; %s", c.ConnectionID(), n, sender.ConnectionID(), layer, describeLayers(log))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// describeLayers summarises a packet log as runs of layers.
func describeLayers(log []soraclient.PacketInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d packets:", len(log))
	for i := 0; i < len(log); {
		j := i
		for j < len(log) && log[j].Layer == log[i].Layer {
			j++
		}
		fmt.Fprintf(&b, " %d x layer %d (seq %d..%d, key %v)", j-i, log[i].Layer, log[i].Seq, log[j-1].Seq, log[i].KeyFrame)
		i = j
	}
	return b.String()
}

// checkOneStream asserts that a receiver saw one video stream: one SSRC,
// sequence numbers one apart, timestamps never going back, and each change
// of layer starting with a key frame. It returns the layers in order.
func checkOneStream(t *testing.T, who string, log []soraclient.PacketInfo) []int {
	t.Helper()
	if len(log) == 0 {
		t.Fatalf("%s: no video packets", who)
	}
	layers := []int{log[0].Layer}
	for i := 1; i < len(log); i++ {
		prev, p := log[i-1], log[i]
		if p.SSRC != prev.SSRC {
			t.Fatalf("%s: packet %d changed SSRC %d -> %d", who, i, prev.SSRC, p.SSRC)
		}
		if p.Seq != prev.Seq+1 {
			t.Fatalf("%s: packet %d has sequence number %d after %d; %s", who, i, p.Seq, prev.Seq, describeLayers(log))
		}
		if int32(p.Timestamp-prev.Timestamp) < 0 {
			t.Fatalf("%s: packet %d has timestamp %d after %d", who, i, p.Timestamp, prev.Timestamp)
		}
		if p.Layer != prev.Layer {
			if !p.KeyFrame {
				t.Fatalf("%s: the switch from layer %d to %d at packet %d (seq %d) is not at a key frame; %s", who, prev.Layer, p.Layer, i, p.Seq, describeLayers(log))
			}
			layers = append(layers, p.Layer)
		}
	}
	return layers
}

// simulcastSwitched decodes a simulcast.switched notify.
type simulcastSwitched struct {
	EventType          string `json:"event_type"`
	SenderConnectionID string `json:"sender_connection_id"`
	Priority           string `json:"priority"`
	Trigger            string `json:"trigger"`
	RequestRID         string `json:"request_rid"`
	CurrentRID         string `json:"current_rid"`
	PreviousRID        string `json:"previous_rid"`
}

// waitSwitched waits for c's simulcast.switched notify to current.
func waitSwitched(t *testing.T, ctx context.Context, c *soraclient.Client, current string) simulcastSwitched {
	t.Helper()
	var s simulcastSwitched
	_, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
		return m.Type == "notify" && json.Unmarshal(m.Raw, &s) == nil && s.EventType == "simulcast.switched" && s.CurrentRID == current
	})
	if err != nil {
		t.Fatalf("%s got no simulcast.switched to %s: %v", c.ConnectionID(), current, err)
	}
	return s
}

// waitPublishing waits until the node receives every simulcast layer of c.
func waitPublishing(t *testing.T, n *harness.Node, channelID string, c *soraclient.Client, layers int) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, "every simulcast layer at the node", func() bool {
		var st struct {
			Simulcast bool `json:"simulcast"`
			Tracks    []struct {
				Direction string `json:"direction"`
				Kind      string `json:"kind"`
				Layers    []struct {
					RID     string `json:"rid"`
					Packets int    `json:"total_received_rtp"`
				} `json:"layers"`
			} `json:"tracks"`
		}
		r := mustCall(t, n, "Sora_20170529.GetStatsConnection", map[string]string{"channel_id": channelID, "connection_id": c.ConnectionID()})
		if r.JSON(&st) != nil || !st.Simulcast {
			return false
		}
		for _, tr := range st.Tracks {
			if tr.Direction == "recv" && tr.Kind == "video" && len(tr.Layers) == layers {
				for i, l := range tr.Layers {
					if l.RID != fmt.Sprintf("r%d", i) || l.Packets == 0 {
						return false
					}
				}
				return true
			}
		}
		return false
	})
}

func TestSimulcast(t *testing.T) {
	n, ctx := mediaNode(t, 120*time.Second)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "simulcast", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", VideoBitrateKbps: 700, Simulcast: true})

	t.Run("the offer asks a sender for three layers", func(t *testing.T) {
		offer := pub.Offer()
		if offer["simulcast"] != true {
			t.Fatalf("offer simulcast = %v", offer["simulcast"])
		}
		want := []any{
			map[string]any{"rid": "r0", "active": true, "scaleResolutionDownBy": 4.0},
			map[string]any{"rid": "r1", "active": true, "scaleResolutionDownBy": 2.0},
			map[string]any{"rid": "r2", "active": true, "scaleResolutionDownBy": 1.0},
		}
		if !reflect.DeepEqual(offer["encodings"], want) {
			t.Fatalf("offer encodings = %v, want %v", offer["encodings"], want)
		}
		sdp := offer["sdp"].(string)
		for _, line := range []string{"a=rid:r0 recv", "a=rid:r1 recv", "a=rid:r2 recv", "a=simulcast:recv r0;r1;r2"} {
			if !strings.Contains(sdp, "\r\n"+line+"\r\n") {
				t.Fatalf("offer SDP has no %q:\n%s", line, sdp)
			}
		}
	})
	waitPublishing(t, n, "simulcast", pub, 3)

	recv := func(extra map[string]any) *soraclient.Client {
		return connectClient(t, ctx, n, soraclient.Options{ChannelID: "simulcast", Role: "recvonly", Audio: true, Video: true, Simulcast: true, RecordPackets: true, Extra: extra})
	}
	dflt := recv(nil)
	mid := recv(map[string]any{"simulcast_request_rid": "r1"})
	top := recv(map[string]any{"simulcast_rid": "r2"})

	t.Run("each receiver gets the layer it asked for", func(t *testing.T) {
		for _, c := range []struct {
			c     *soraclient.Client
			layer int
		}{{dflt, 0}, {mid, 1}, {top, 2}} {
			log := waitLayer(t, ctx, c.c, pub, c.layer, 60)
			if got := checkOneStream(t, c.c.ConnectionID(), log); !reflect.DeepEqual(got, []int{c.layer}) {
				t.Errorf("receiver asking r%d got layers %v", c.layer, got)
			}
			if err := c.c.WaitPackets(ctx, pub.ConnectionID(), "audio", 20); err != nil {
				t.Errorf("receiver asking r%d: %v", c.layer, err)
			}
		}
	})

	t.Run("RequestRtpStream switches at a key frame", func(t *testing.T) {
		req := map[string]string{"channel_id": "simulcast", "recv_connection_id": dflt.ConnectionID(), "send_connection_id": pub.ConnectionID(), "rid": "r2"}
		r := mustCall(t, n, "Sora_20201005.RequestRtpStream", req)
		if r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, req)) {
			t.Fatalf("RequestRtpStream: %d %s", r.Status, r.Body)
		}
		log := waitLayer(t, ctx, dflt, pub, 2, 60)
		if got := checkOneStream(t, dflt.ConnectionID(), log); !reflect.DeepEqual(got, []int{0, 2}) {
			t.Fatalf("layers %v, want r0 then r2", got)
		}
		s := waitSwitched(t, ctx, dflt, "r2")
		if want := (simulcastSwitched{"simulcast.switched", pub.ConnectionID(), "higher", "receiver", "r2", "r2", "r0"}); s != want {
			t.Errorf("simulcast.switched = %+v, want %+v", s, want)
		}
		// The others did not move.
		checkOneStream(t, mid.ConnectionID(), waitLayer(t, ctx, mid, pub, 1, 30))

		reset := map[string]string{"channel_id": "simulcast", "recv_connection_id": dflt.ConnectionID()}
		if r := mustCall(t, n, "Sora_20201005.ResetRtpStream", reset); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, reset)) {
			t.Fatalf("ResetRtpStream: %d %s", r.Status, r.Body)
		}
		log = waitLayer(t, ctx, dflt, pub, 0, 60)
		if got := checkOneStream(t, dflt.ConnectionID(), log); !reflect.DeepEqual(got, []int{0, 2, 0}) {
			t.Fatalf("layers %v, want r0, r2, r0", got)
		}
		if s := waitSwitched(t, ctx, dflt, "r0"); s.Priority != "lower" || s.PreviousRID != "r2" {
			t.Errorf("simulcast.switched = %+v", s)
		}

		// Without send_connection_id the request is for every sender.
		every := map[string]string{"channel_id": "simulcast", "recv_connection_id": top.ConnectionID(), "rid": "r1"}
		if r := mustCall(t, n, "Sora_20201005.RequestRtpStream", every); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, every)) {
			t.Fatalf("RequestRtpStream for every sender: %d %s", r.Status, r.Body)
		}
		checkOneStream(t, top.ConnectionID(), waitLayer(t, ctx, top, pub, 1, 60))
	})

	t.Run("a layer the sender does not send falls back to the nearest lower one", func(t *testing.T) {
		two := connectClient(t, ctx, n, soraclient.Options{ChannelID: "simulcast-2", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", Simulcast: true, SimulcastLayers: 2})
		waitPublishing(t, n, "simulcast-2", two, 2)
		c := connectClient(t, ctx, n, soraclient.Options{ChannelID: "simulcast-2", Role: "recvonly", Audio: true, Video: true, Simulcast: true, RecordPackets: true,
			Extra: map[string]any{"simulcast_request_rid": "r2"}})
		if got := checkOneStream(t, c.ConnectionID(), waitLayer(t, ctx, c, two, 1, 60)); !reflect.DeepEqual(got, []int{1}) {
			t.Fatalf("asking r2 of a sender of r0 and r1: layers %v, want r1", got)
		}
		none := connectClient(t, ctx, n, soraclient.Options{ChannelID: "simulcast-2", Role: "recvonly", Audio: true, Video: true, Simulcast: true, RecordPackets: true,
			Extra: map[string]any{"simulcast_request_rid": "none"}})
		if err := none.WaitPackets(ctx, two.ConnectionID(), "audio", 50); err != nil {
			t.Fatal(err)
		}
		if log := videoFrom(none, two); len(log) != 0 {
			t.Fatalf("simulcast_request_rid none got %d video packets", len(log))
		}
	})

	t.Run("listings and statistics", func(t *testing.T) {
		var conns []map[string]any
		if err := n.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "simulcast"}).JSON(&conns); err != nil || len(conns) != 4 {
			t.Fatalf("ListChannelConnections = %v %v", conns, err)
		}
		for _, c := range conns {
			if c["simulcast"] != true {
				t.Errorf("%s lists simulcast %v", c["connection_id"], c["simulcast"])
			}
		}
		var st struct {
			Tracks []struct {
				Direction string `json:"direction"`
				Kind      string `json:"kind"`
				RID       string `json:"rid"`
				Sent      int    `json:"total_sent_rtp"`
			} `json:"tracks"`
		}
		if err := n.MustCall(200, "Sora_20170529.GetStatsConnection", map[string]string{"channel_id": "simulcast", "connection_id": mid.ConnectionID()}).JSON(&st); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, tr := range st.Tracks {
			if tr.Direction == "send" && tr.Kind == "video" {
				found = tr.RID == "r1" && tr.Sent > 0
			}
		}
		if !found {
			t.Errorf("GetStatsConnection of the r1 receiver: %+v", st.Tracks)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, c := range []struct {
			body   map[string]string
			status int
			typ    string
		}{
			{map[string]string{"channel_id": "nope", "recv_connection_id": dflt.ConnectionID(), "rid": "r1"}, 404, "CHANNEL-NOT-FOUND"},
			{map[string]string{"channel_id": "simulcast", "recv_connection_id": "NOPE", "rid": "r1"}, 404, "CONNECTION-NOT-FOUND"},
			{map[string]string{"channel_id": "simulcast", "recv_connection_id": dflt.ConnectionID(), "send_connection_id": "NOPE", "rid": "r1"}, 404, "CONNECTION-NOT-FOUND"},
			{map[string]string{"channel_id": "simulcast", "recv_connection_id": pub.ConnectionID(), "send_connection_id": dflt.ConnectionID(), "rid": "r1"}, 400, "NOT-FORWARDED"},
			{map[string]string{"channel_id": "simulcast", "recv_connection_id": dflt.ConnectionID(), "rid": "r3"}, 400, "INVALID-FIELD-VALUE"},
		} {
			apiError(t, mustCall(t, n, "Sora_20201005.RequestRtpStream", c.body), c.status, c.typ)
		}
		var e struct {
			Reason map[string]string `json:"error_reason"`
		}
		_ = mustCall(t, n, "Sora_20201005.ResetRtpStream", map[string]string{"channel_id": "simulcast", "recv_connection_id": dflt.ConnectionID(), "send_connection_id": "GONE"}).JSON(&e)
		if e.Reason["send_connection_id"] != "GONE" {
			t.Errorf("an unknown sender is not named by its field: %v", e.Reason)
		}
	})
}
