package media

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/soraclient"
)

// In-process tests of the media plane against a fake cluster: real pion
// PeerConnections and soraclient on loopback, no Raft.

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("media tests: goroutines leaked: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// fakeCluster is the node alone, in charge of every channel but those
// given an owner elsewhere; releasing a channel moves it to handOver.
type fakeCluster struct {
	mu       sync.Mutex
	mode     fsm.Mode
	owners   map[string]fsm.Node // channels another node is in charge of
	handOver *fsm.Node           // where a released channel goes
	release  func()              // called by ReleaseChannel, unlocked
	calls    []string
	changes  chan struct{}
	held     []string // reported by ChannelsHeld
	noLease  bool     // the node is cut off from the cluster
	// recordErr, if set, is what RecordSession returns for a channel.
	recordErr func(channelID string) error
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{mode: fsm.ModeNormal, owners: map[string]fsm.Node{}, changes: make(chan struct{})}
}

func (f *fakeCluster) record(s string) {
	f.calls = append(f.calls, s)
}

func (f *fakeCluster) AcquireChannel(_ context.Context, id string, opts cluster.ChannelOptions) (cluster.Assignment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("acquire " + id)
	if n, ok := f.owners[id]; ok {
		return cluster.Assignment{Channel: fsm.Channel{ID: id, NodeInCharge: n.Name}, Owner: n}, nil
	}
	return cluster.Assignment{Channel: fsm.Channel{ID: id, NodeInCharge: "self", Spotlight: opts.Spotlight}, Local: true}, nil
}

func (f *fakeCluster) ReleaseChannel(_ context.Context, id string) error {
	f.mu.Lock()
	hook := f.release
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("release " + id)
	if f.handOver != nil {
		f.owners[id] = *f.handOver
	}
	return nil
}

func (f *fakeCluster) InCharge(id string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, elsewhere := f.owners[id]; elsewhere {
		return false, "CHANNEL-MOVED"
	}
	return true, ""
}

func (f *fakeCluster) Mode() fsm.Mode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

func (f *fakeCluster) setMode(m fsm.Mode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = m
}

func (f *fakeCluster) ChannelsHeld() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.held)
}

func (f *fakeCluster) Assigned(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, elsewhere := f.owners[id]
	return elsewhere || slices.Contains(f.held, id)
}

func (f *fakeCluster) RecordSession(_ context.Context, ch, session string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("record-session " + ch + " " + session)
	if f.recordErr != nil {
		return f.recordErr(ch)
	}
	return nil
}

func (f *fakeCluster) ForgetSession(_ context.Context, ch, session string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("forget-session " + ch + " " + session)
	return nil
}

func (f *fakeCluster) Purged() bool             { return false }
func (f *fakeCluster) Changes() <-chan struct{} { return f.changes }
func (f *fakeCluster) LeaseHeld() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.noLease
}
func (f *fakeCluster) WaitLease(ctx context.Context) bool {
	for !f.LeaseHeld() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}
func (f *fakeCluster) Drain(context.Context) []string { return nil }
func (f *fakeCluster) callsOf(prefix string) (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// startMedia runs a media plane on loopback with the fake cluster and
// returns its signaling URL.
func startMedia(t *testing.T, fc *fakeCluster) (*Media, string) {
	t.Helper()
	return startMediaWith(t, fc, Config{ReleaseDelay: time.Hour})
}

func startMediaWith(t *testing.T, fc *fakeCluster, cfg Config) (*Media, string) {
	t.Helper()
	cfg.ListenAddress, cfg.Version = "127.0.0.1", "test"
	m, err := New(cfg, fc, &Stats{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close media: %v", err)
		}
		srv.Close()
	})
	return m, "ws" + strings.TrimPrefix(srv.URL, "http") + "/signaling"
}

func connect(t *testing.T, url string, opts soraclient.Options) (*soraclient.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts.SignalingURL = url
	c, err := soraclient.Connect(ctx, opts)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// publishAndReceive connects a VP8 sender and a receiver to channel and
// waits until the receiver has the sender's video.
func publishAndReceive(t *testing.T, url, channel string) (pub, sub *soraclient.Client) {
	t.Helper()
	pub, err := connect(t, url, soraclient.Options{ChannelID: channel, Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err = connect(t, url, soraclient.Options{ChannelID: channel, Role: "recvonly", Audio: true, Video: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", 20); err != nil {
		t.Fatal(err)
	}
	return pub, sub
}

// TestAdmissionVerdicts: what a node does with a connect, by its mode and
// the channel's assignment, as cluster.Decide says.
func TestAdmissionVerdicts(t *testing.T) {
	other := fsm.Node{NodeInfo: fsm.NodeInfo{Name: "other@127.0.0.9", ExternalSignalingURL: "ws://127.0.0.9:5000/signaling"}}
	tests := []struct {
		name     string
		mode     fsm.Mode
		owner    bool // another node is in charge
		session  bool // a live session of the channel is here
		handOver bool
		// givenBack: placement gives the released channel back to this
		// node; normalMeanwhile: ChangeMode normal lands during the release.
		givenBack, normalMeanwhile bool
		wantOffer                  bool
		redirect                   string
		refusal                    string
	}{
		{name: "normal serves", mode: fsm.ModeNormal, wantOffer: true},
		{name: "held elsewhere is redirected", mode: fsm.ModeNormal, owner: true, redirect: other.ExternalSignalingURL},
		{name: "block_new_connection refuses its own channels", mode: fsm.ModeBlockNewConnection, refusal: "BLOCK-NEW-CONNECTION"},
		{name: "block_new_connection redirects channels held elsewhere", mode: fsm.ModeBlockNewConnection, owner: true, redirect: other.ExternalSignalingURL},
		{name: "block_new_session admits joiners", mode: fsm.ModeBlockNewSession, session: true, wantOffer: true},
		{name: "block_new_session hands a channel without a session over", mode: fsm.ModeBlockNewSession, handOver: true, redirect: other.ExternalSignalingURL},
		{name: "block_new_session refuses a channel placement gives back to it", mode: fsm.ModeBlockNewSession, givenBack: true, refusal: "BLOCK-NEW-SESSION"},
		{name: "block_new_session serves a channel given back once it is normal again", mode: fsm.ModeBlockNewSession, givenBack: true, normalMeanwhile: true, wantOffer: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := newFakeCluster()
			m, url := startMedia(t, fc)
			if tt.session {
				if _, err := connect(t, url, soraclient.Options{ChannelID: "ch", Role: "sendonly", Audio: true}); err != nil {
					t.Fatal(err)
				}
			}
			fc.setMode(tt.mode)
			if tt.owner {
				fc.owners["ch"] = other
			}
			if tt.handOver {
				fc.handOver = &other
			}
			if tt.normalMeanwhile {
				fc.release = func() { fc.setMode(fsm.ModeNormal) }
			}
			c, err := connect(t, url, soraclient.Options{ChannelID: "ch", Role: "recvonly", Audio: true, NoRedirect: true})
			var re *soraclient.RedirectError
			var ce *soraclient.CloseError
			switch {
			case tt.wantOffer:
				if err != nil {
					t.Fatalf("not admitted: %v", err)
				}
				if c.Offer()["type"] != "offer" {
					t.Fatalf("offer %v", c.Offer())
				}
			case tt.redirect != "":
				if !errors.As(err, &re) || re.Location != tt.redirect {
					t.Fatalf("err %v, want a redirect to %s", err, tt.redirect)
				}
			default:
				if !errors.As(err, &ce) || ce.Code != 4503 || ce.Reason != tt.refusal {
					t.Fatalf("err %v, want 4503 %s", err, tt.refusal)
				}
			}
			if got, want := fc.callsOf("release"), boolInt(tt.handOver || tt.givenBack); got != want {
				t.Errorf("%d releases, want %d", got, want)
			}
			if (tt.handOver || tt.givenBack) && !tt.wantOffer && m.hasSession("ch") {
				t.Errorf("a session was started on a block_new_session node")
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestConnectDuringAReleaseIsPlacedAgain: a connect that would start a
// session while this node gives the channel back waits for the release and
// is placed again, here on another node: it is redirected, not admitted
// and then fenced.
func TestConnectDuringAReleaseIsPlacedAgain(t *testing.T) {
	fc := newFakeCluster()
	other := fsm.Node{NodeInfo: fsm.NodeInfo{Name: "other@127.0.0.9", ExternalSignalingURL: "ws://127.0.0.9:5000/signaling"}}
	fc.handOver = &other // a released channel goes to another node
	m, url := startMediaWith(t, fc, Config{ReleaseDelay: 50 * time.Millisecond})
	opts := soraclient.Options{ChannelID: "ch", Role: "sendrecv", Audio: true, NoRedirect: true}
	first, err := connect(t, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	fc.mu.Lock()
	fc.release = func() {
		fc.mu.Lock()
		fc.release = nil
		fc.mu.Unlock()
		go func() {
			_, err := connect(t, url, opts)
			second <- err
		}()
		// Hold the release until the connect has been placed here and
		// reached its join.
		deadline := time.Now().Add(5 * time.Second)
		for fc.callsOf("acquire") < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
	}
	fc.mu.Unlock()
	_ = first.Close()
	var re *soraclient.RedirectError
	select {
	case err := <-second:
		if !errors.As(err, &re) || re.Location != other.ExternalSignalingURL {
			t.Fatalf("the connect during the release: %v, want a redirect to %s", err, other.ExternalSignalingURL)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the connect during the release never finished")
	}
	if m.hasSession("ch") {
		t.Fatal("a session was started on the node that released the channel")
	}
	if n := fc.callsOf("acquire"); n != 3 {
		t.Errorf("%d acquires, want 3: the first connect, and the second before and after the release", n)
	}
}

// TestFencing: a channel the cluster gives to another node is closed here.
func TestFencing(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMedia(t, fc)
	c, err := connect(t, url, soraclient.Options{ChannelID: "moved", Role: "sendrecv", Audio: true, Video: true})
	if err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.owners["moved"] = fsm.Node{NodeInfo: fsm.NodeInfo{Name: "other@127.0.0.9"}}
	fc.mu.Unlock()
	fc.changes <- struct{}{}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection of a moved channel is still open")
	}
	if ci := c.CloseInfo(); ci == nil || ci.Code != 4503 || ci.Reason != "CHANNEL-MOVED" {
		t.Fatalf("closed with %+v, want 4503 CHANNEL-MOVED", ci)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Connections() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := m.Connections(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

// TestLeaseLostStopsServing: when the node's cluster lease ends, its
// clients are closed with 4503 CLUSTER-QUORUM-LOST and connects are refused
// the same way until the lease is back; then they are admitted again.
func TestLeaseLostStopsServing(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMedia(t, fc)
	opts := soraclient.Options{ChannelID: "cut", Role: "sendrecv", Audio: true, Video: true}
	c, err := connect(t, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.noLease = true
	fc.mu.Unlock()
	fc.changes <- struct{}{}
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("a connection is still open after the lease ended")
	}
	if ci := c.CloseInfo(); ci == nil || ci.Code != 4503 || ci.Reason != "CLUSTER-QUORUM-LOST" {
		t.Fatalf("closed with %+v, want 4503 CLUSTER-QUORUM-LOST", ci)
	}
	_, err = connect(t, url, opts)
	var ce *soraclient.CloseError
	if !errors.As(err, &ce) || ce.Code != 4503 || ce.Reason != "CLUSTER-QUORUM-LOST" {
		t.Fatalf("a connect without the lease: %v, want 4503 CLUSTER-QUORUM-LOST", err)
	}
	if n := m.Connections(); n != 0 {
		t.Fatalf("%d connections without the lease", n)
	}
	fc.mu.Lock()
	fc.noLease = false
	fc.mu.Unlock()
	again, err := connect(t, url, opts)
	if err != nil {
		t.Fatalf("a connect once the lease is back: %v", err)
	}
	_ = again.Close()
}

// TestMLinesReused: a receiver that stays while publishers come and go one
// after another keeps the m-lines of the most tracks it received at once:
// a publisher's m-lines are parked when it leaves and carry the next one's
// tracks, whose media arrives under the new publisher's stream id.
func TestMLinesReused(t *testing.T) {
	fc := newFakeCluster()
	_, url := startMedia(t, fc)
	sub, err := connect(t, url, soraclient.Options{ChannelID: "reuse", Role: "recvonly", Audio: true, Video: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mlines := func() int { return strings.Count(sub.PeerConnection().RemoteDescription().SDP, "\nm=") }
	first := 0
	for round := range 5 {
		pub, err := connect(t, url, soraclient.Options{ChannelID: "reuse", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"audio", "video"} {
			if err := sub.WaitPackets(ctx, pub.ConnectionID(), kind, 5); err != nil {
				t.Fatalf("round %d: no %s from the publisher: %v (received: %v)", round, kind, err, sub.Received())
			}
		}
		if round == 0 {
			first = mlines()
		} else if got := mlines(); got != first {
			t.Fatalf("round %d: %d m-lines, want %d as in the first round: parked m-lines not reused", round, got, first)
		}
		_ = pub.Close()
		// The re-offer that parks the publisher's m-lines, answered.
		for strings.Contains(sub.PeerConnection().RemoteDescription().SDP, pub.ConnectionID()) {
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: the publisher's tracks are still offered", round)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	t.Logf("%d m-lines after five publishers", mlines())
}

// TestPauseAndLayersInProcess drives the channel operations on live
// connections without a cluster: a pause stops the video one receiver
// gets, and the model refuses what it must.
func TestPauseAndLayersInProcess(t *testing.T) {
	fc := newFakeCluster()
	m, url := startMedia(t, fc)
	pub, sub := publishAndReceive(t, url, "c")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := m.PauseRtpStream("c", sub.ConnectionID(), pub.ConnectionID()); err != nil {
		t.Fatal(err)
	}
	paused, err := m.ListPauseRtpStreams("c")
	if err != nil || !slices.Equal(paused, []PausedStream{{ChannelID: "c", RecvConnectionID: sub.ConnectionID(), Role: RoleRecvonly, SendConnectionID: pub.ConnectionID()}}) {
		t.Fatalf("ListPauseRtpStreams = %+v %v", paused, err)
	}
	time.Sleep(300 * time.Millisecond) // packets in flight arrive
	video := sub.Received()[pub.ConnectionID()+"/video"].Packets
	audio := sub.Received()[pub.ConnectionID()+"/audio"].Packets
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "audio", audio+25); err != nil {
		t.Fatal(err)
	}
	if now := sub.Received()[pub.ConnectionID()+"/video"].Packets; now != video {
		t.Fatalf("%d video packets while paused", now-video)
	}
	if err := m.ResumeRtpStream("c", sub.ConnectionID(), pub.ConnectionID()); err != nil {
		t.Fatal(err)
	}
	if err := sub.WaitPackets(ctx, pub.ConnectionID(), "video", video+20); err != nil {
		t.Fatalf("no video after resume: %v", err)
	}
	var nf *NotFoundError
	var inv *InvalidError
	for _, c := range []struct {
		err  error
		want func(error) bool
	}{
		{m.PauseRtpStream("nope", sub.ConnectionID(), pub.ConnectionID()), func(e error) bool { return errors.As(e, &nf) && nf.Type == "CHANNEL-NOT-FOUND" }},
		{m.PauseRtpStream("c", "NOPE", pub.ConnectionID()), func(e error) bool {
			return errors.As(e, &nf) && nf.Type == "CONNECTION-NOT-FOUND" && nf.Reason["recv_connection_id"] == "NOPE"
		}},
		{m.PauseRtpStream("c", pub.ConnectionID(), sub.ConnectionID()), func(e error) bool { return errors.As(e, &inv) && inv.Type == "NOT-FORWARDED" }},
		{m.FocusSpotlight("c", pub.ConnectionID(), false), func(e error) bool { return errors.As(e, &inv) && inv.Type == "NOT-SPOTLIGHT-CHANNEL" }},
		{m.ChangeUpstreamVideoBitRate("c", sub.ConnectionID(), 100), func(e error) bool { return errors.As(e, &inv) && inv.Type == "NOT-A-VIDEO-SENDER" }},
	} {
		if !c.want(c.err) {
			t.Errorf("error %v", c.err)
		}
	}
}
