package media

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sorad/sorad/integration/soraclient"
)

// TestUnusedChannelIsReleased: a channel assigned to this node that no
// client comes to (another node redirected one here, and it never
// arrived) is given back after ReleaseDelay.
func TestUnusedChannelIsReleased(t *testing.T) {
	fc := newFakeCluster()
	fc.held = []string{"never-joined", "in-use"}
	_, url := startMediaWith(t, fc, Config{ReleaseDelay: 50 * time.Millisecond})
	if _, err := connect(t, url, soraclient.Options{ChannelID: "in-use", Role: "sendonly", Audio: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fc.callsOf("release never-joined") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unused channel was not released")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // several sweeps
	if n := fc.callsOf("release in-use"); n != 0 {
		t.Fatalf("the channel in use was released %d times", n)
	}
}

func closeOf(err error) (int, string) {
	var ce *soraclient.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return 0, ""
}

func TestMetadataLimits(t *testing.T) {
	fc := newFakeCluster()
	_, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, MaxMetadataSize: 1000, MaxChannelMetadata: 1200})
	big := map[string]string{"blob": strings.Repeat("x", 1000)}
	half := map[string]string{"blob": strings.Repeat("y", 600)}
	tests := []struct {
		name       string
		opts       soraclient.Options
		wantReason string // "" admitted
	}{
		{"metadata over the limit", soraclient.Options{ChannelID: "m", Role: "sendonly", Audio: true, Metadata: big}, "METADATA-TOO-LARGE"},
		{"notify metadata over the limit", soraclient.Options{ChannelID: "m", Role: "sendonly", Audio: true, SignalingNotifyMetadata: big}, "METADATA-TOO-LARGE"},
		{"first within the limits", soraclient.Options{ChannelID: "m", Role: "sendonly", Audio: true, Metadata: half}, ""},
		{"second within the limits", soraclient.Options{ChannelID: "m", Role: "sendonly", Audio: true, SignalingNotifyMetadata: map[string]int{"n": 1}}, ""},
		{"third would pass the channel's limit", soraclient.Options{ChannelID: "m", Role: "sendonly", Audio: true, SignalingNotifyMetadata: half}, "CHANNEL-METADATA-TOO-LARGE"},
		{"another channel has its own", soraclient.Options{ChannelID: "other", Role: "sendonly", Audio: true, SignalingNotifyMetadata: half}, ""},
	}
	outer := t // admitted connections stay until the whole test ends
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connect(outer, url, tt.opts)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if code, reason := closeOf(err); code != 4490 || !strings.HasPrefix(reason, tt.wantReason) {
				t.Fatalf("err %v, want 4490 %s", err, tt.wantReason)
			}
		})
	}
}

func TestPendingConnectionsPerAddress(t *testing.T) {
	fc := newFakeCluster()
	_, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, MaxPending: 50, MaxPendingPerIP: 3})
	var open []*websocket.Conn
	defer func() {
		for _, ws := range open {
			ws.Close()
		}
	}()
	for i := range 4 {
		ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if i < 3 {
			if err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
			open = append(open, ws)
			continue
		}
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("a fourth waiting socket from one address: %v %v", resp, err)
		}
	}
	open[0].Close()
	open = open[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err == nil {
			open = append(open, ws)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed socket was not given back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewChannelsPerAddressAreRateLimited(t *testing.T) {
	fc := newFakeCluster()
	_, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, NewChannelRate: 0.001, NewChannelBurst: 2})
	for i, ch := range []string{"a", "b"} {
		if _, err := connect(t, url, soraclient.Options{ChannelID: ch, Role: "sendonly", Audio: true}); err != nil {
			t.Fatalf("new channel %d: %v", i, err)
		}
	}
	_, err := connect(t, url, soraclient.Options{ChannelID: "c", Role: "sendonly", Audio: true})
	if code, reason := closeOf(err); code != 4503 || reason != "TOO-MANY-NEW-CHANNELS" {
		t.Fatalf("a third new channel: %v", err)
	}
	if _, err := connect(t, url, soraclient.Options{ChannelID: "a", Role: "recvonly", Audio: true}); err != nil {
		t.Fatalf("joining an existing channel: %v", err)
	}
}
