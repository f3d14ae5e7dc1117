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

// spotlightNotify decodes a spotlight.* notify.
type spotlightNotify struct {
	EventType    string `json:"event_type"`
	ConnectionID string `json:"connection_id"`
	SpotlightID  string `json:"spotlight_id"`
	Fixed        bool   `json:"fixed"`
	Number       int    `json:"spotlight_number"`
}

// waitSpotlight waits for c's spotlight notify of event about subject.
func waitSpotlight(t *testing.T, ctx context.Context, c *soraclient.Client, event, subject string) spotlightNotify {
	t.Helper()
	return waitSpotlightSince(t, ctx, c, time.Time{}, event, subject)
}

// waitSpotlightSince is waitSpotlight for notifies received after since.
func waitSpotlightSince(t *testing.T, ctx context.Context, c *soraclient.Client, since time.Time, event, subject string) spotlightNotify {
	t.Helper()
	var s spotlightNotify
	_, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
		return m.Type == "notify" && m.At.After(since) && json.Unmarshal(m.Raw, &s) == nil && s.EventType == event && s.ConnectionID == subject
	})
	if err != nil {
		t.Fatalf("%s got no %s about %s: %v; notifies %+v", c.ConnectionID(), event, subject, err, notifies(t, c))
	}
	return s
}

// audioSilent asserts that c gets no audio from sender while it keeps
// getting audio from live (which proves time passed with audio flowing).
func audioSilent(t *testing.T, ctx context.Context, c, sender, live *soraclient.Client) {
	t.Helper()
	before := c.Received()[sender.ConnectionID()+"/audio"].Packets
	base := c.Received()[live.ConnectionID()+"/audio"].Packets
	if err := c.WaitPackets(ctx, live.ConnectionID(), "audio", base+25); err != nil {
		t.Fatal(err)
	}
	if after := c.Received()[sender.ConnectionID()+"/audio"].Packets; after != before {
		t.Fatalf("%s got %d audio packets from %s, which should be silent", c.ConnectionID(), after-before, sender.ConnectionID())
	}
}

func TestSpotlight(t *testing.T) {
	n, ctx := mediaNode(t, 120*time.Second, "--spotlight_focus_hold=300ms")
	join := func(role string, extra map[string]any) *soraclient.Client {
		e := map[string]any{"spotlight": true}
		for k, v := range extra {
			e[k] = v
		}
		c := connectClient(t, ctx, n, soraclient.Options{ChannelID: "spot", Role: role, Audio: true, Video: true, VideoCodec: "VP8", Simulcast: true, RecordPackets: true, Extra: e})
		waitNotify(t, ctx, c, "connection.created", c.ConnectionID())
		return c
	}
	a := join("sendrecv", map[string]any{"spotlight_number": 2})
	b := join("sendrecv", nil)
	c := join("sendrecv", nil)
	d := join("sendrecv", nil)
	for _, s := range []*soraclient.Client{a, b, c, d} {
		waitPublishing(t, n, "spot", s, 3)
	}
	o := join("recvonly", nil)

	t.Run("the first senders take the focus places", func(t *testing.T) {
		// A newcomer learns who is focused once it is connected.
		waitSpotlight(t, ctx, o, "spotlight.focused", a.ConnectionID())
		waitSpotlight(t, ctx, o, "spotlight.focused", b.ConnectionID())
		// Members saw the focus taken as it happened.
		if s := waitSpotlight(t, ctx, a, "spotlight.changed", b.ConnectionID()); s.SpotlightID == "" || s.Number != 2 {
			t.Errorf("spotlight.changed = %+v", s)
		}
		checkOneStream(t, "o from a", waitLayer(t, ctx, o, a, 1, 40)) // focused: spotlight_focus_rid r1
		checkOneStream(t, "o from c", waitLayer(t, ctx, o, c, 0, 40)) // unfocused: r0
		if err := o.WaitPackets(ctx, a.ConnectionID(), "audio", 30); err != nil {
			t.Fatal(err)
		}
		audioSilent(t, ctx, o, c, a)
	})

	t.Run("a speaker takes the focus of the sender quiet longest", func(t *testing.T) {
		c.SetAudioLevel(20) // -20 dBov: speech
		waitSpotlight(t, ctx, o, "spotlight.focused", c.ConnectionID())
		waitSpotlight(t, ctx, o, "spotlight.unfocused", a.ConnectionID())
		waitSpotlight(t, ctx, b, "spotlight.focused", c.ConnectionID())
		if err := o.WaitPackets(ctx, c.ConnectionID(), "audio", 30); err != nil {
			t.Fatalf("no audio from the new speaker: %v", err)
		}
		if got := checkOneStream(t, "o from c", waitLayer(t, ctx, o, c, 1, 40)); !reflect.DeepEqual(got, []int{0, 1}) {
			t.Errorf("layers from c: %v, want r0 then r1", got)
		}
		checkOneStream(t, "o from a", waitLayer(t, ctx, o, a, 0, 40))
		audioSilent(t, ctx, o, a, c)
	})

	t.Run("focus APIs", func(t *testing.T) {
		var since time.Time
		call := func(target string, body map[string]any) {
			t.Helper()
			since = time.Now()
			if r := mustCall(t, n, target, body); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, body)) {
				t.Fatalf("%s: %d %s", target, r.Status, r.Body)
			}
		}
		waitSpotlight := func(t *testing.T, ctx context.Context, c *soraclient.Client, event, subject string) spotlightNotify {
			t.Helper()
			return waitSpotlightSince(t, ctx, c, since, event, subject)
		}
		call("Sora_20200807.FocusSpotlightFixed", map[string]any{"channel_id": "spot", "connection_id": d.ConnectionID()})
		if s := waitSpotlight(t, ctx, o, "spotlight.focused", d.ConnectionID()); !s.Fixed {
			t.Errorf("FocusSpotlightFixed: %+v", s)
		}
		waitSpotlight(t, ctx, o, "spotlight.unfocused", b.ConnectionID()) // quiet longer than the speaker
		call("Sora_20200807.ChangeSpotlightNumber", map[string]any{"channel_id": "spot", "spotlight_number": 1})
		waitSpotlight(t, ctx, o, "spotlight.unfocused", c.ConnectionID()) // the fixed focus stays
		c.SetAudioLevel(127)
		call("Sora_20200807.UnfocusSpotlight", map[string]any{"channel_id": "spot", "connection_id": d.ConnectionID()})
		if s := waitSpotlight(t, ctx, o, "spotlight.unfocused", d.ConnectionID()); !s.Fixed {
			t.Errorf("UnfocusSpotlight of a fixed focus: %+v", s)
		}
		// The place goes to the most recent speaker.
		if got := waitSpotlight(t, ctx, o, "spotlight.focused", c.ConnectionID()); got.Number != 1 {
			t.Errorf("spotlight.focused after the number changed: %+v", got)
		}
		call("Sora_20200807.FocusSpotlight", map[string]any{"channel_id": "spot", "connection_id": a.ConnectionID()})
		waitSpotlight(t, ctx, o, "spotlight.focused", a.ConnectionID())
		checkOneStream(t, "o from a", waitLayer(t, ctx, o, a, 1, 40))
	})

	t.Run("spotlight rid requests", func(t *testing.T) {
		req := map[string]any{"channel_id": "spot", "recv_connection_id": o.ConnectionID(), "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "none"}
		if r := mustCall(t, n, "Sora_20211215.RequestSpotlightRid", req); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, req)) {
			t.Fatalf("RequestSpotlightRid: %d %s", r.Status, r.Body)
		}
		checkOneStream(t, "o from a", waitLayer(t, ctx, o, a, 2, 40))
		waitLayer(t, ctx, o, b, -1, 0) // unfocused: none
		batch := map[string]any{"channel_id": "spot", "item_list": []map[string]any{
			{"recv_connection_id": o.ConnectionID(), "send_connection_id": b.ConnectionID(), "spotlight_focus_rid": "r1", "spotlight_unfocus_rid": "r1"},
			{"recv_connection_id": o.ConnectionID(), "send_connection_id": a.ConnectionID(), "spotlight_focus_rid": "r0", "spotlight_unfocus_rid": "r0"},
		}}
		if r := mustCall(t, n, "Sora_20211215.BatchRequestSpotlightRid", batch); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, batch)) {
			t.Fatalf("BatchRequestSpotlightRid: %d %s", r.Status, r.Body)
		}
		waitLayer(t, ctx, o, b, 1, 40)
		waitLayer(t, ctx, o, a, 0, 40)
		reset := map[string]any{"channel_id": "spot", "recv_connection_id": o.ConnectionID()}
		if r := mustCall(t, n, "Sora_20211215.ResetSpotlightRid", reset); r.Status != 200 || !jsonEqual(r.Body, mustJSON(t, reset)) {
			t.Fatalf("ResetSpotlightRid: %d %s", r.Status, r.Body)
		}
		waitLayer(t, ctx, o, a, 1, 40) // focused, default r1 again
		// A batch with one bad item changes nothing.
		bad := map[string]any{"channel_id": "spot", "item_list": []map[string]any{
			{"recv_connection_id": o.ConnectionID(), "send_connection_id": a.ConnectionID(), "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "r2"},
			{"recv_connection_id": "GONE", "spotlight_focus_rid": "r2", "spotlight_unfocus_rid": "r2"},
		}}
		apiError(t, mustCall(t, n, "Sora_20211215.BatchRequestSpotlightRid", bad), 404, "CONNECTION-NOT-FOUND")
		time.Sleep(500 * time.Millisecond)
		waitLayer(t, ctx, o, a, 1, 10)
	})

	t.Run("channel listing and refusals", func(t *testing.T) {
		var chans []map[string]any
		if err := n.MustCall(200, targetListChannels, nil).JSON(&chans); err != nil || len(chans) != 1 || chans[0]["spotlight"] != true {
			t.Fatalf("ListChannels = %v %v", chans, err)
		}
		refusedWith(t, ctx, n, soraclient.Options{ChannelID: "spot", Role: "recvonly", Audio: true, Video: true}, 4490, "SPOTLIGHT-MISMATCH: a spotlight channel: connect with spotlight true")
		plain := connectClient(t, ctx, n, soraclient.Options{ChannelID: "plain", Role: "sendrecv", Audio: true, Video: true})
		for _, c := range []struct {
			target string
			body   map[string]any
			status int
			typ    string
		}{
			{"Sora_20200807.FocusSpotlight", map[string]any{"channel_id": "plain", "connection_id": plain.ConnectionID()}, 400, "NOT-SPOTLIGHT-CHANNEL"},
			{"Sora_20200807.ChangeSpotlightNumber", map[string]any{"channel_id": "plain", "spotlight_number": 2}, 400, "NOT-SPOTLIGHT-CHANNEL"},
			{"Sora_20211215.RequestSpotlightRid", map[string]any{"channel_id": "plain", "recv_connection_id": plain.ConnectionID(), "spotlight_focus_rid": "r1", "spotlight_unfocus_rid": "r0"}, 400, "NOT-SPOTLIGHT-CHANNEL"},
			{"Sora_20200807.FocusSpotlight", map[string]any{"channel_id": "spot", "connection_id": o.ConnectionID()}, 400, "NOT-A-SENDER"},
			{"Sora_20200807.FocusSpotlight", map[string]any{"channel_id": "spot", "connection_id": "NOPE"}, 404, "CONNECTION-NOT-FOUND"},
			{"Sora_20200807.UnfocusSpotlight", map[string]any{"channel_id": "gone", "connection_id": "NOPE"}, 404, "CHANNEL-NOT-FOUND"},
			{"Sora_20200807.ChangeSpotlightNumber", map[string]any{"channel_id": "spot", "spotlight_number": 9}, 400, "INVALID-FIELD-VALUE"},
		} {
			apiError(t, mustCall(t, n, c.target, c.body), c.status, c.typ)
		}
	})
}

func TestPauseRtpStream(t *testing.T) {
	n, ctx := mediaNode(t, 90*time.Second, "--api_cors_origin=http://127.0.0.1:5000")
	headers := seedHeaders(t)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "sendrecv", Audio: true, Video: true, VideoCodec: "VP8"})
	paused := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "sendrecv", Audio: true, Video: true, RecordPackets: true})
	other := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "recvonly", Audio: true, Video: true, RecordPackets: true})
	for _, c := range []*soraclient.Client{paused, other} {
		if err := c.WaitPackets(ctx, pub.ConnectionID(), "video", 30); err != nil {
			t.Fatal(err)
		}
	}
	// seedCall replays a seed example with the live IDs and compares the
	// answer with the seed's: the request echoed, with its headers.
	seedCall := func(dir, api string, set map[string]any) any {
		t.Helper()
		req := seedIn(t, dir, api+".request.json").(map[string]any)
		for k, v := range set {
			req[k] = v
		}
		r := n.MustCall(200, "Sora_20200401."+api, req)
		checkHeaders(t, api, r, headers)
		return decode(t, r)
	}
	ids := map[string]any{"recv_connection_id": paused.ConnectionID(), "send_connection_id": pub.ConnectionID()}
	for _, dir := range []string{"seed000", "seed002"} {
		want := seedIn(t, dir, "PauseRtpStream.response.json").(map[string]any)
		for k, v := range ids {
			want[k] = v
		}
		if got := seedCall(dir, "PauseRtpStream", ids); !reflect.DeepEqual(got, any(want)) {
			t.Fatalf("%s PauseRtpStream = %v, want %v", dir, got, want)
		}
	}
	got := seedCall("seed002", "ListPauseRtpStreams", nil)
	checkShape(t, "ListPauseRtpStreams", seedIn(t, "seed002", "ListPauseRtpStreams.response.json"), got)
	wantList := []any{map[string]any{"channel_id": "sora", "recv_connection_id": paused.ConnectionID(), "role": "sendrecv", "send_connection_id": pub.ConnectionID()}}
	if !reflect.DeepEqual(got, any(wantList)) {
		t.Fatalf("ListPauseRtpStreams = %v, want %v", got, wantList)
	}

	// The paused receiver gets no video and still gets audio; the other
	// receiver gets both.
	waitLayer(t, ctx, paused, pub, -1, 0)
	stopped := len(videoFrom(paused, pub))
	audio := paused.Received()[pub.ConnectionID()+"/audio"].Packets
	base := len(videoFrom(other, pub))
	if err := paused.WaitPackets(ctx, pub.ConnectionID(), "audio", audio+50); err != nil {
		t.Fatalf("audio stopped too: %v", err)
	}
	if now := len(videoFrom(paused, pub)); now != stopped {
		t.Fatalf("the paused receiver got %d more video packets", now-stopped)
	}
	if now := len(videoFrom(other, pub)); now < base+30 {
		t.Fatalf("the other receiver got %d video packets meanwhile", now-base)
	}

	want := seedIn(t, "seed000", "ResumeRtpStream.response.json").(map[string]any)
	for k, v := range ids {
		want[k] = v
	}
	if got := seedCall("seed000", "ResumeRtpStream", ids); !reflect.DeepEqual(got, any(want)) {
		t.Fatalf("ResumeRtpStream = %v, want %v", got, want)
	}
	harness.Eventually(t, 10*time.Second, "video again after resume", func() bool { return len(videoFrom(paused, pub)) > stopped+30 })
	log := videoFrom(paused, pub)
	checkOneStream(t, "resumed", log)
	if !log[stopped].KeyFrame {
		t.Fatalf("the first packet after resume (seq %d) is not a key frame", log[stopped].Seq)
	}
	if r := n.MustCall(200, "Sora_20200401.ListPauseRtpStreams", map[string]string{"channel_id": "sora"}); string(r.Body) != "[]" {
		t.Fatalf("ListPauseRtpStreams after resume = %s", r.Body)
	}

	for _, c := range []struct {
		target string
		body   map[string]string
		status int
		typ    string
	}{
		{"Sora_20200401.PauseRtpStream", map[string]string{"channel_id": "nope", "recv_connection_id": paused.ConnectionID(), "send_connection_id": pub.ConnectionID()}, 404, "CHANNEL-NOT-FOUND"},
		{"Sora_20200401.PauseRtpStream", map[string]string{"channel_id": "sora", "recv_connection_id": "NOPE", "send_connection_id": pub.ConnectionID()}, 404, "CONNECTION-NOT-FOUND"},
		{"Sora_20200401.ResumeRtpStream", map[string]string{"channel_id": "sora", "recv_connection_id": paused.ConnectionID(), "send_connection_id": "NOPE"}, 404, "CONNECTION-NOT-FOUND"},
		{"Sora_20200401.PauseRtpStream", map[string]string{"channel_id": "sora", "recv_connection_id": pub.ConnectionID(), "send_connection_id": other.ConnectionID()}, 400, "NOT-FORWARDED"},
		{"Sora_20200401.PauseRtpStream", map[string]string{"channel_id": "sora", "recv_connection_id": paused.ConnectionID()}, 400, "MISSING-FIELD"},
		{"Sora_20200401.ListPauseRtpStreams", map[string]string{"channel_id": "nope"}, 404, "CHANNEL-NOT-FOUND"},
	} {
		apiError(t, mustCall(t, n, c.target, c.body), c.status, c.typ)
	}
	// A pause ends with either connection.
	_ = n.MustCall(200, "Sora_20200401.PauseRtpStream", map[string]string{"channel_id": "sora", "recv_connection_id": other.ConnectionID(), "send_connection_id": pub.ConnectionID()})
	_ = n.MustCall(200, "Sora_20151104.DisconnectConnection", map[string]string{"channel_id": "sora", "connection_id": other.ConnectionID()})
	harness.Eventually(t, 5*time.Second, "the pause gone with its receiver", func() bool {
		return string(n.MustCall(200, "Sora_20200401.ListPauseRtpStreams", map[string]string{"channel_id": "sora"}).Body) == "[]"
	})
}

func TestChangeUpstreamVideoBitRate(t *testing.T) {
	n, ctx := mediaNode(t, 60*time.Second, "--api_cors_origin=http://127.0.0.1:5000")
	headers := seedHeaders(t)
	pub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	sub := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "recvonly", Audio: true, Video: true})
	audioOnly := connectClient(t, ctx, n, soraclient.Options{ChannelID: "sora", Role: "sendonly", Audio: true})

	req := seedIn(t, "seed000", "ChangeUpstreamVideoBitRate.request.json").(map[string]any)
	req["connection_id"] = pub.ConnectionID()
	r := n.MustCall(200, "Sora_20190327.ChangeUpstreamVideoBitRate", req)
	checkHeaders(t, "ChangeUpstreamVideoBitRate", r, headers)
	want := seedIn(t, "seed000", "ChangeUpstreamVideoBitRate.response.json").(map[string]any)
	want["connection_id"] = pub.ConnectionID()
	if got := decode(t, r); !reflect.DeepEqual(got, any(want)) {
		t.Fatalf("ChangeUpstreamVideoBitRate = %v, want %v", got, want)
	}

	// The sender is re-offered with the new cap on its video m-line.
	mid := pub.Offer()["mid"].(map[string]any)["video"].(string)
	m, err := pub.WaitMessage(ctx, func(m soraclient.Message) bool {
		return m.Type == "re-offer" && strings.Contains(string(m.Raw), "b=AS:300")
	})
	if err != nil {
		t.Fatalf("no re-offer with b=AS:300: %v", err)
	}
	var reoffer struct {
		SDP string `json:"sdp"`
	}
	_ = json.Unmarshal(m.Raw, &reoffer)
	for _, block := range strings.Split(reoffer.SDP, "\r\nm=")[1:] {
		if strings.Contains(block, "\r\na=mid:"+mid+"\r\n") != strings.Contains(block, "\r\nb=AS:300\r\n") {
			t.Fatalf("b=AS:300 is not exactly on the upstream video m-line %s:\nm=%s", mid, block)
		}
	}
	var conns []map[string]any
	if err := n.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "sora"}).JSON(&conns); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if c["connection_id"] == pub.ConnectionID() && c["video"].(map[string]any)["bit_rate"] != 300.0 {
			t.Fatalf("ListChannelConnections shows %v", c["video"])
		}
	}
	// Media keeps flowing after the renegotiation.
	got := sub.Received()[pub.ConnectionID()+"/video"].Packets
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", got+30); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		body   map[string]any
		status int
		typ    string
	}{
		{map[string]any{"channel_id": "sora", "connection_id": sub.ConnectionID(), "bit_rate": 300}, 400, "NOT-A-VIDEO-SENDER"},
		{map[string]any{"channel_id": "sora", "connection_id": audioOnly.ConnectionID(), "bit_rate": 300}, 400, "NOT-A-VIDEO-SENDER"},
		{map[string]any{"channel_id": "sora", "connection_id": "NOPE", "bit_rate": 300}, 404, "CONNECTION-NOT-FOUND"},
		{map[string]any{"channel_id": "nope", "connection_id": pub.ConnectionID(), "bit_rate": 300}, 404, "CHANNEL-NOT-FOUND"},
		{map[string]any{"channel_id": "sora", "connection_id": pub.ConnectionID(), "bit_rate": 30001}, 400, "INVALID-FIELD-VALUE"},
		{map[string]any{"channel_id": "sora", "connection_id": pub.ConnectionID(), "bit_rate": "300"}, 400, "INVALID-FIELD-TYPE"},
	} {
		apiError(t, mustCall(t, n, "Sora_20190327.ChangeUpstreamVideoBitRate", c.body), c.status, c.typ)
	}
}
