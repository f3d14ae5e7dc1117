package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Browser end-to-end tests: the official sora-js-sdk (integration/browser,
// pinned by its package-lock.json) in Debian's Chromium, driven by
// playwright-core, against the real sorad binary.
//
// Chromium gathers no ICE candidates on a loopback-only host, so every
// scenario runs in a network namespace of its own (unshare --net; --pid and
// --kill-child so that nothing it started outlives it): lo plus a veth pair
// whose two ends both stay inside it (veth-a 198.18.0.1/24, veth-b
// 198.18.0.2/24), sorad on 198.18.0.1 with its default ports (a scenario
// that needs a cluster gets a second node on 198.18.0.3/24, also on veth-a),
// and the node driver (integration/browser/driver.mjs) that opens one page
// per SDK peer and prints one JSON object of what the SDK reported. Nothing
// leaves the namespace; see integration/browser/netns.sh.

// sdkVersion is the sora-js-sdk the lock file pins.
const sdkVersion = "2026.1.0"

// browserSetup is what the scenarios need from the machine.
type browserSetup struct {
	dir      string // integration/browser, absolute
	chromium string
}

// browserPrereqs finds chromium, node, unshare, ip, the npm packages
// (which TestMain installs when npm is there) and the right to make a
// namespace. When something is missing the test is skipped, loudly,
// unless CI is set: then it fails.
func browserPrereqs(t testing.TB) browserSetup {
	t.Helper()
	var missing []string
	dir, err := filepath.Abs("browser")
	if err != nil {
		t.Fatal(err)
	}
	s := browserSetup{dir: dir}
	if s.chromium, err = exec.LookPath("chromium"); err != nil {
		missing = append(missing, "chromium (apt-get install chromium)")
	}
	for _, tool := range []string{"node", "unshare", "ip", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if browserPackagesErr != nil {
		missing = append(missing, browserPackagesErr.Error())
	}
	if len(missing) == 0 {
		out, err := exec.Command("unshare", "--net", "--pid", "--fork", "--kill-child", "ip", "link", "set", "lo", "up").CombinedOutput()
		if err != nil {
			missing = append(missing, fmt.Sprintf("a network namespace of our own (unshare --net needs root or CAP_SYS_ADMIN): %v %s", err, bytes.TrimSpace(out)))
		}
	}
	if len(missing) > 0 {
		skipOrFail(t, "the browser end-to-end tests need: "+strings.Join(missing, "; "))
	}
	return s
}

// The driver's JSON (integration/browser/driver.mjs).
type browserRun struct {
	Scenario       string `json:"scenario"`
	OK             bool   `json:"ok"`
	Error          string `json:"error"`
	ElapsedMS      int    `json:"elapsed_ms"`
	BrowserVersion string `json:"browser_version"`
	Steps          []struct {
		MS   int    `json:"ms"`
		What string `json:"what"`
	} `json:"steps"`
	APICalls     []browserAPICall        `json:"api_calls"`
	Peers        map[string]*browserPeer `json:"peers"`
	ClusterNodes [][]nodeEntry           `json:"cluster_nodes"` // per node, once all were ready
	work         string                  // netns.sh's WORK_DIR
	RPC          *struct {
		Put, Unknown struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
				Code    *int   `json:"code"`
			} `json:"error"`
		}
	} `json:"rpc"`
	Messaging *struct {
		PlainID      string `json:"plain_id"`
		WithHeaderID string `json:"with_header_id"`
	} `json:"messaging"`
	Churn []struct {
		Publisher    string `json:"publisher"`
		Tracks       bool   `json:"tracks"`
		FramesBefore int    `json:"frames_before"`
		FramesAfter  int    `json:"frames_after"`
		MLines       int    `json:"mlines"`
		Removed      bool   `json:"removed"`
	} `json:"churn"`
	Joins []struct {
		ConnectMS        float64 `json:"connect_ms"`
		TrackMS          float64 `json:"track_ms"`
		FirstFrameMS     float64 `json:"first_frame_ms"`
		KeyFrameRequests int     `json:"key_frame_requests"`
	} `json:"joins"`
	Redirect *struct {
		RecvonlyConnectionID  string   `json:"recvonly_connection_id"`
		GivenSignalingURL     string   `json:"given_signaling_url"`
		ContactSignalingURL   string   `json:"contact_signaling_url"`
		ConnectedSignalingURL string   `json:"connected_signaling_url"`
		Location              string   `json:"location"`
		WebSockets            []string `json:"websockets"`
		ConnectMessages       []struct {
			MS       int   `json:"ms"`
			Redirect *bool `json:"redirect"`
		} `json:"connect_messages"`
		MSToRedirect          *int `json:"ms_to_redirect"`
		MSToSecondWebSocket   *int `json:"ms_to_second_websocket"`
		MSToOffer             *int `json:"ms_to_offer"`
		MSToConnectResolved   int  `json:"ms_to_connect_resolved"`
		MSToConnectedCallback int  `json:"ms_to_connected_callback"`
	} `json:"redirect"`
}

type browserAPICall struct {
	MS       int             `json:"ms"`
	Node     int             `json:"node"` // index into the nodes
	URL      string          `json:"url"`
	Target   string          `json:"target"`
	Body     json.RawMessage `json:"body"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

type browserPeer struct {
	Name              string          `json:"name"`
	SDKVersion        string          `json:"sdk_version"`
	Role              string          `json:"role"`
	SignalingURL      string          `json:"signaling_url"`           // given to the SDK
	ContactURL        string          `json:"contact_signaling_url"`   // conn.contactSignalingUrl
	ConnectedURL      string          `json:"connected_signaling_url"` // conn.connectedSignalingUrl
	ConnectionID      string          `json:"connection_id"`
	ConnectStartedMS  int             `json:"connect_started_ms"`
	ConnectResolvedMS int             `json:"connect_resolved_ms"`
	ConnectError      json.RawMessage `json:"connect_error"`
	ConnectedCallback bool            `json:"connected_callback"`
	ConnectedMS       int             `json:"connected_callback_ms"`
	Notifies          []struct {
		MS        int    `json:"ms"`
		Transport string `json:"transport"`
		Message   notify `json:"message"`
	} `json:"notifies"`
	Pushes []struct {
		MS        int             `json:"ms"`
		Transport string          `json:"transport"`
		Message   json.RawMessage `json:"message"`
	} `json:"pushes"`
	Tracks []struct {
		MS       int    `json:"ms"`
		Kind     string `json:"kind"`
		StreamID string `json:"stream_id"`
		TrackID  string `json:"track_id"`
	} `json:"tracks"`
	Disconnects []struct {
		MS     int    `json:"ms"`
		Type   string `json:"type"`
		Title  string `json:"title"`
		Code   *int   `json:"code"`
		Reason string `json:"reason"`
	} `json:"disconnects"`
	Signaling []struct {
		MS        int             `json:"ms"`
		Type      string          `json:"type"`
		Transport string          `json:"transport"`
		Data      json.RawMessage `json:"data"`
	} `json:"signaling"`
	Timeline []struct {
		MS   int             `json:"ms"`
		Log  string          `json:"log"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"timeline"`
	Errors              []string      `json:"errors"`
	RemoteConnectionIDs []string      `json:"remote_connection_ids"`
	PCState             string        `json:"pc_connection_state"`
	LocalSDP            string        `json:"local_sdp"`
	RemoteSDP           string        `json:"remote_sdp"`
	Stats               []statsSample `json:"stats"`
	Switched            *struct {
		MS            int             `json:"ms"`
		Message       json.RawMessage `json:"message"`
		WebSocketOpen bool            `json:"websocket_open"`
	} `json:"switched"`
	WebSocketOpen *bool `json:"websocket_open"`
	DataChannels  []struct {
		Label     string          `json:"label"`
		Direction string          `json:"direction"`
		Header    json.RawMessage `json:"header"`
	} `json:"datachannels"`
	Messages []struct {
		MS    int    `json:"ms"`
		Label string `json:"label"`
		Raw   []int  `json:"bytes"`
	} `json:"messages"`
}

type statsSample struct {
	MS              int           `json:"ms"`
	Error           string        `json:"error"`
	ConnectionState string        `json:"connection_state"`
	Inbound         []inboundStat `json:"inbound"`
	Outbound        []struct {
		Kind          string `json:"kind"`
		RID           string `json:"rid"`
		Codec         string `json:"codec"`
		PacketsSent   int    `json:"packets_sent"`
		FramesEncoded *int   `json:"frames_encoded"`
		FrameWidth    int    `json:"frame_width"`
	} `json:"outbound"`
}

type inboundStat struct {
	Kind                 string `json:"kind"`
	Mid                  string `json:"mid"`
	StreamID             string `json:"stream_id"`
	Codec                string `json:"codec"`
	PacketsReceived      int    `json:"packets_received"`
	FramesDecoded        int    `json:"frames_decoded"`
	FrameWidth           int    `json:"frame_width"`
	FrameHeight          int    `json:"frame_height"`
	TotalSamplesReceived int    `json:"total_samples_received"`
}

// inbound returns the inbound-rtp of kind from streamID in s, or nil.
func (s statsSample) inbound(streamID, kind string) *inboundStat {
	for i := range s.Inbound {
		if s.Inbound[i].StreamID == streamID && s.Inbound[i].Kind == kind {
			return &s.Inbound[i]
		}
	}
	return nil
}

// browserNode is one sorad of a scenario, as netns.sh starts it.
type browserNode struct {
	name, signalingURL, apiURL string
	tag                        string // WORK_DIR/sorad<tag>.log, sorad<tag>.status
}

// browserNodes are the sorad nodes netns.sh starts for a scenario of n.
func browserNodes(n int) []browserNode {
	node := func(name, addr, tag string) browserNode {
		return browserNode{name + "@" + addr, "ws://" + addr + ":5000/signaling", "http://" + addr + ":3000/", tag}
	}
	if n == 2 {
		return []browserNode{node("browser-a", "198.18.0.1", "-a"), node("browser-b", "198.18.0.3", "-b")}
	}
	return []browserNode{node("browser", "198.18.0.1", "")}
}

// runBrowserScenario runs one driver scenario in a fresh namespace with
// fresh sorad nodes (one, or a cluster of two) and returns the driver's
// observations. If the test fails, every sorad log, the driver's stderr and
// a summary of every peer are printed.
func runBrowserScenario(t testing.TB, s browserSetup, scenario string, nodes []browserNode) *browserRun {
	t.Helper()
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--pid", "--fork", "--kill-child",
		"bash", filepath.Join(s.dir, "netns.sh"), soradBin, work, scenario, s.chromium, strconv.Itoa(len(nodes)))
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SORAD_") { // the developer's settings stay out of sorad
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start)

	var run browserRun
	decodeErr := json.Unmarshal(stdout.Bytes(), &run)
	t.Cleanup(func() {
		logs := make([][]byte, len(nodes))
		for i, n := range nodes {
			logs[i], _ = os.ReadFile(filepath.Join(work, "sorad"+n.tag+".log"))
			if bytes.Contains(logs[i], []byte("WARNING: DATA RACE")) {
				t.Errorf("sorad %s reported a data race", n.name)
			}
		}
		if !t.Failed() {
			return
		}
		driverErr, _ := os.ReadFile(filepath.Join(work, "driver.stderr"))
		for i, n := range nodes {
			t.Logf("--- sorad log of %s ---\n%s", n.name, logs[i])
		}
		t.Logf("--- driver stderr ---\n%s", driverErr)
		if stderr.Len() > 0 {
			t.Logf("--- netns.sh stderr ---\n%s", stderr.Bytes())
		}
		if decodeErr == nil {
			t.Logf("--- what each peer saw ---\n%s", run.summary())
		}
	})
	for _, n := range nodes {
		status, err := os.ReadFile(filepath.Join(work, "sorad"+n.tag+".status"))
		first, rest, _ := strings.Cut(strings.TrimSpace(string(status)), "\n")
		if err != nil || first != "exit status 0" {
			t.Errorf("sorad %s after SIGTERM: %q %v (want exit status 0)", n.name, bytes.TrimSpace(status), err)
		} else {
			t.Logf("sorad %s: %s, %s", n.name, first, rest)
		}
	}
	if decodeErr != nil {
		t.Fatalf("%s: driver output is not JSON (%v; run: %v; stdout %q)", scenario, decodeErr, runErr, stdout.Bytes())
	}
	if runErr != nil || !run.OK {
		t.Fatalf("%s did not run to the end: %v: %s", scenario, runErr, run.Error)
	}
	for _, st := range run.Steps {
		t.Logf("  +%5d ms  %s", st.MS, st.What)
	}
	t.Logf("%s: driver %d ms, namespace + sorad + driver %v; %s", scenario, run.ElapsedMS, took.Round(time.Millisecond), run.BrowserVersion)
	for name, p := range run.Peers {
		if p.SDKVersion != sdkVersion {
			t.Errorf("%s runs sora-js-sdk %q, want %s", name, p.SDKVersion, sdkVersion)
		}
		if len(p.ConnectError) > 0 && string(p.ConnectError) != "null" {
			t.Errorf("%s: connect() failed: %s", name, p.ConnectError)
		}
		if p.ConnectionID == "" {
			t.Errorf("%s has no connection id", name)
		}
		if !p.ConnectedCallback {
			t.Errorf("%s: the connected callback never fired", name)
		}
		if len(p.Errors) > 0 {
			t.Errorf("%s: page errors: %q", name, p.Errors)
		}
	}
	run.work = work
	return &run
}

// soradLog is the log of node so far.
func (r *browserRun) soradLog(t *testing.T, n browserNode) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.work, "sorad"+n.tag+".log"))
	if err != nil {
		t.Errorf("log of %s: %v", n.name, err)
	}
	return string(b)
}

// summary is a readable account of each peer, SDPs included, for failures.
func (r *browserRun) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s ok=%v error=%q\n", r.Scenario, r.OK, r.Error)
	for _, c := range r.APICalls {
		fmt.Fprintf(&b, "API %s %s %s -> %d %s\n", c.URL, c.Target, c.Body, c.Status, c.Response)
	}
	for name, p := range r.Peers {
		fmt.Fprintf(&b, "== %s (%s) %s connected_callback=%v pc=%s remote=%v signaling given=%s contact=%s connected=%s\n", name, p.Role, p.ConnectionID, p.ConnectedCallback, p.PCState, p.RemoteConnectionIDs, p.SignalingURL, p.ContactURL, p.ConnectedURL)
		for _, s := range p.Signaling {
			fmt.Fprintf(&b, "  signaling +%d %s %s\n", s.MS, s.Transport, s.Type)
		}
		for _, e := range p.Timeline {
			if e.Log != "websocket" || !strings.HasPrefix(e.Type, "send-") && !strings.HasPrefix(e.Type, "onmessage-") {
				fmt.Fprintf(&b, "  timeline +%d %s %s %s\n", e.MS, e.Log, e.Type, e.Data)
			}
		}
		for _, n := range p.Notifies {
			fmt.Fprintf(&b, "  notify +%d %s %s\n", n.MS, n.Message.EventType, n.Message.ConnectionID)
		}
		for _, x := range p.Pushes {
			fmt.Fprintf(&b, "  push +%d %s %s\n", x.MS, x.Transport, x.Message)
		}
		for _, tr := range p.Tracks {
			fmt.Fprintf(&b, "  track +%d %s %s\n", tr.MS, tr.Kind, tr.StreamID)
		}
		for _, d := range p.Disconnects {
			fmt.Fprintf(&b, "  disconnect +%d %+v\n", d.MS, d)
		}
		for _, s := range p.Stats {
			fmt.Fprintf(&b, "  stats +%d %s %s inbound=%+v outbound=%+v\n", s.MS, s.ConnectionState, s.Error, s.Inbound, s.Outbound)
		}
		fmt.Fprintf(&b, "  remote SDP:\n%s\n  local SDP:\n%s\n", p.RemoteSDP, p.LocalSDP)
	}
	return b.String()
}

// peer returns the named peer or fails.
func (r *browserRun) peer(t *testing.T, name string) *browserPeer {
	t.Helper()
	p, ok := r.Peers[name]
	if !ok {
		t.Fatalf("no peer %s in the driver's output", name)
	}
	return p
}

// checkMediaFrom asserts that p decoded video from streamID, more between
// its two stats samples than before the first, and received audio likewise.
func checkMediaFrom(t *testing.T, p *browserPeer, streamID string) {
	t.Helper()
	if !checkVideoFrom(t, p, streamID) {
		return
	}
	s1, s2 := p.Stats[len(p.Stats)-2], p.Stats[len(p.Stats)-1]
	a1, a2 := s1.inbound(streamID, "audio"), s2.inbound(streamID, "audio")
	switch {
	case a1 == nil || a2 == nil:
		t.Errorf("%s has no inbound audio from %s: %+v", p.Name, streamID, s2.Inbound)
	case a1.PacketsReceived <= 0 || a2.PacketsReceived <= a1.PacketsReceived || a2.TotalSamplesReceived <= a1.TotalSamplesReceived:
		t.Errorf("%s audio from %s: packets %d -> %d, samples %d -> %d; want > 0 and growing", p.Name, streamID, a1.PacketsReceived, a2.PacketsReceived, a1.TotalSamplesReceived, a2.TotalSamplesReceived)
	default:
		t.Logf("%s receives %s audio from %s: %d -> %d packets, %d -> %d samples", p.Name, a2.Codec, streamID, a1.PacketsReceived, a2.PacketsReceived, a1.TotalSamplesReceived, a2.TotalSamplesReceived)
	}
	for _, k := range []string{"audio", "video"} {
		if !p.hasTrack(k, streamID) {
			t.Errorf("%s got no %s track event for stream %s", p.Name, k, streamID)
		}
	}
}

// checkVideoFrom asserts that p decoded video from streamID, more between
// its last two stats samples than before the first of them. It reports
// whether p has two samples.
func checkVideoFrom(t *testing.T, p *browserPeer, streamID string) bool {
	t.Helper()
	if len(p.Stats) < 2 {
		t.Errorf("%s has %d stats samples, want 2", p.Name, len(p.Stats))
		return false
	}
	s1, s2 := p.Stats[len(p.Stats)-2], p.Stats[len(p.Stats)-1]
	v1, v2 := s1.inbound(streamID, "video"), s2.inbound(streamID, "video")
	switch {
	case v1 == nil || v2 == nil:
		t.Errorf("%s has no inbound video from %s: %+v", p.Name, streamID, s2.Inbound)
	case v1.FramesDecoded <= 0 || v2.FramesDecoded <= v1.FramesDecoded:
		t.Errorf("%s decoded %d then %d video frames from %s, want > 0 and growing", p.Name, v1.FramesDecoded, v2.FramesDecoded, streamID)
	default:
		t.Logf("%s decodes %s video from %s: %d -> %d frames in %d ms, %dx%d", p.Name, v2.Codec, streamID, v1.FramesDecoded, v2.FramesDecoded, s2.MS-s1.MS, v2.FrameWidth, v2.FrameHeight)
	}
	return true
}

// offer is the first offer p got, as the SDK's signaling event carried it.
func (p *browserPeer) offer() map[string]any {
	for _, s := range p.Signaling {
		if s.Type == "onmessage-offer" {
			var m map[string]any
			_ = json.Unmarshal(s.Data, &m)
			return m
		}
	}
	return nil
}

func (p *browserPeer) hasTrack(kind, streamID string) bool {
	for _, tr := range p.Tracks {
		if tr.Kind == kind && tr.StreamID == streamID {
			return true
		}
	}
	return false
}

// checkNotOwnMedia asserts that p receives nothing of its own stream.
func checkNotOwnMedia(t *testing.T, p *browserPeer) {
	t.Helper()
	for _, s := range p.Stats {
		for _, in := range s.Inbound {
			if in.StreamID == p.ConnectionID {
				t.Errorf("%s receives its own %s (mid %s): %+v", p.Name, in.Kind, in.Mid, in)
			}
		}
	}
	if strings.Contains(p.RemoteSDP, "a=msid:"+p.ConnectionID+" ") {
		t.Errorf("%s is offered its own stream:\n%s", p.Name, p.RemoteSDP)
	}
}

func (p *browserPeer) createdAbout(id string) *notify {
	for i := range p.Notifies {
		if n := &p.Notifies[i].Message; n.EventType == "connection.created" && n.ConnectionID == id {
			return n
		}
	}
	return nil
}

func (p *browserPeer) destroyedAbout(id string) *notify {
	for i := range p.Notifies {
		if n := &p.Notifies[i].Message; n.EventType == "connection.destroyed" && n.ConnectionID == id {
			return n
		}
	}
	return nil
}

func checkNoDisconnect(t *testing.T, p *browserPeer) {
	t.Helper()
	if len(p.Disconnects) > 0 {
		t.Errorf("%s was disconnected during the scenario: %+v", p.Name, p.Disconnects)
	}
}

func TestBrowser(t *testing.T) {
	s := browserPrereqs(t)
	scenarios := []struct {
		name  string
		nodes int // sorad nodes: 1, or 2 forming one cluster
		check func(*testing.T, *browserRun)
	}{
		{"sendonly-recvonly", 1, func(t *testing.T, r *browserRun) {
			pub, sub := r.peer(t, "sendonly"), r.peer(t, "recvonly")
			checkMediaFrom(t, sub, pub.ConnectionID)
			checkNotOwnMedia(t, sub)
			for _, p := range []*browserPeer{pub, sub} {
				checkNoDisconnect(t, p)
			}
			if len(sub.RemoteConnectionIDs) != 1 || sub.RemoteConnectionIDs[0] != pub.ConnectionID {
				t.Errorf("recvonly's remoteConnectionIds = %v, want [%s]", sub.RemoteConnectionIDs, pub.ConnectionID)
			}
		}},
		{"sendrecv-3", 1, func(t *testing.T, r *browserRun) {
			ps := []*browserPeer{r.peer(t, "a"), r.peer(t, "b"), r.peer(t, "c")}
			for i, p := range ps {
				checkNoDisconnect(t, p)
				checkNotOwnMedia(t, p)
				self := p.createdAbout(p.ConnectionID)
				if self == nil || self.ChannelConnections != i+1 || len(self.Data) != i {
					t.Errorf("%s's own connection.created = %+v, want channel_connections %d and %d members in data", p.Name, self, i+1, i)
				}
				for j, o := range ps {
					if i == j {
						continue
					}
					checkMediaFrom(t, p, o.ConnectionID)
					// Sora tells a newcomer about the members already there
					// in the data of its own connection.created, and the
					// members about the newcomer with a connection.created
					// of its own.
					if j > i {
						if n := p.createdAbout(o.ConnectionID); n == nil || n.ChannelConnections != j+1 {
							t.Errorf("%s's connection.created about %s (joined later) = %+v", p.Name, o.Name, n)
						}
					} else if self != nil && (len(self.Data) <= j || self.Data[j]["connection_id"] != o.ConnectionID) {
						t.Errorf("%s's own connection.created does not list %s (joined earlier) at %d: %+v", p.Name, o.Name, j, self.Data)
					}
				}
			}
		}},
		{"disconnect-api", 1, func(t *testing.T, r *browserRun) {
			victim, other := r.peer(t, "victim"), r.peer(t, "other")
			if len(r.APICalls) != 1 || r.APICalls[0].Status != 200 {
				t.Fatalf("DisconnectConnection: %+v", r.APICalls)
			}
			// sora-js-sdk.md section 9: a WebSocket closed with 1000 is a
			// `normal` disconnect titled SHUTDOWN carrying the close code
			// and reason.
			if len(victim.Disconnects) != 1 {
				t.Fatalf("victim's disconnect events: %+v, want exactly one", victim.Disconnects)
			}
			d := victim.Disconnects[0]
			if d.Type != "normal" || d.Title != "SHUTDOWN" || d.Code == nil || *d.Code != 1000 || d.Reason != "DISCONNECTED-API" {
				t.Errorf("victim's disconnect event = %+v, want normal SHUTDOWN 1000 DISCONNECTED-API", d)
			}
			if n := other.destroyedAbout(victim.ConnectionID); n == nil || n.ChannelConnections != 1 {
				t.Errorf("other's connection.destroyed about the victim = %+v", n)
			}
			checkNoDisconnect(t, other)
			if other.PCState != "connected" {
				t.Errorf("other's PeerConnection is %q after the victim left", other.PCState)
			}
		}},
		{"push", 1, func(t *testing.T, r *browserRun) {
			if len(r.APICalls) != 1 || r.APICalls[0].Status != 200 {
				t.Fatalf("PushChannel: %+v", r.APICalls)
			}
			for _, name := range []string{"sendrecv", "sendonly", "recvonly"} {
				p := r.peer(t, name)
				checkNoDisconnect(t, p)
				if len(p.Pushes) != 1 || !jsonEqual(p.Pushes[0].Message, []byte(`{"type":"push","data":{"hello":"browser"}}`)) || p.Pushes[0].Transport != "websocket" {
					t.Errorf("%s's push callback got %+v, want one {\"type\":\"push\",\"data\":{\"hello\":\"browser\"}} over the websocket", name, p.Pushes)
				}
			}
		}},
		{"redirect", 2, checkRedirect},
		{"publisher-churn", 1, checkPublisherChurn},
		{"datachannel-signaling", 1, checkDataChannelSignaling},
		{"messaging", 1, checkMessaging},
		{"simulcast", 1, checkSimulcast},
		{"spotlight", 1, checkSpotlight},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			run := runBrowserScenario(t, s, sc.name, browserNodes(sc.nodes))
			sc.check(t, run)
		})
	}
}

// checkPublisherChurn judges the publisher-churn scenario: the recvonly got
// each publisher's tracks, decoded more of its video, saw its tracks
// removed when it left, and kept the m-lines it had with the first.
func checkPublisherChurn(t *testing.T, r *browserRun) {
	sub := r.peer(t, "recvonly")
	checkNoDisconnect(t, sub)
	if len(r.Churn) != 3 {
		t.Fatalf("churn results: %+v, want three publishers", r.Churn)
	}
	for i, c := range r.Churn {
		if !c.Tracks || c.FramesAfter <= c.FramesBefore+10 || !c.Removed {
			t.Errorf("publisher %d (%s): tracks %v, video frames decoded %d -> %d, tracks removed %v; want tracks, more than 10 frames more, removed",
				i, c.Publisher, c.Tracks, c.FramesBefore, c.FramesAfter, c.Removed)
		}
		if c.MLines != r.Churn[0].MLines {
			t.Errorf("publisher %d: the recvonly has %d m-lines, %d with the first: m-lines not reused", i, c.MLines, r.Churn[0].MLines)
		}
	}
	t.Logf("publisher churn: %+v", r.Churn)
}

// checkSimulcast judges the simulcast scenario: the publisher was offered
// simulcast with the three encodings and sends more than one layer; the
// recvonly asking r0 and the one asking r1 decode its video, r1 wider.
func checkSimulcast(t *testing.T, r *browserRun) {
	pub, r0, r1 := r.peer(t, "sendonly"), r.peer(t, "recv-r0"), r.peer(t, "recv-r1")
	for _, p := range []*browserPeer{pub, r0, r1} {
		checkNoDisconnect(t, p)
	}
	offer := pub.offer()
	if offer == nil || offer["simulcast"] != true {
		t.Fatalf("the publisher's offer: %v", offer)
	}
	if encs, _ := offer["encodings"].([]any); len(encs) != 3 {
		t.Errorf("the publisher was offered encodings %v, want r0, r1, r2", offer["encodings"])
	}
	if n := len(pub.Stats); n > 0 {
		rids := map[string]int{}
		for _, o := range pub.Stats[n-1].Outbound {
			if o.Kind == "video" && o.PacketsSent > 0 {
				rids[o.RID] = o.FrameWidth
			}
		}
		t.Logf("the publisher sends video layers (rid: width) %v", rids)
		if len(rids) < 2 {
			t.Errorf("the publisher sends %d video layers, want at least r0 and r1", len(rids))
		}
	}
	checkMediaFrom(t, r0, pub.ConnectionID)
	checkMediaFrom(t, r1, pub.ConnectionID)
	if len(r0.Stats) == 2 && len(r1.Stats) == 2 {
		w0, w1 := r0.Stats[1].inbound(pub.ConnectionID, "video"), r1.Stats[1].inbound(pub.ConnectionID, "video")
		if w0 == nil || w1 == nil || w0.FrameWidth <= 0 || w1.FrameWidth <= w0.FrameWidth {
			t.Errorf("decoded widths: r0 %+v, r1 %+v; want r1 wider than r0", w0, w1)
		}
	}
}

// checkSpotlight judges the spotlight scenario: each of three peers decodes
// the other two's video and got spotlight notifies, each naming a peer of
// the channel.
func checkSpotlight(t *testing.T, r *browserRun) {
	ps := []*browserPeer{r.peer(t, "a"), r.peer(t, "b"), r.peer(t, "c")}
	ids := map[string]bool{}
	for _, p := range ps {
		ids[p.ConnectionID] = true
	}
	for _, p := range ps {
		checkNoDisconnect(t, p)
		checkNotOwnMedia(t, p)
		if o := p.offer(); o == nil || o["spotlight"] != true || o["simulcast"] != true {
			t.Errorf("%s's offer: spotlight %v simulcast %v", p.Name, o["spotlight"], o["simulcast"])
		}
		for _, o := range ps {
			if o != p {
				checkVideoFrom(t, p, o.ConnectionID)
			}
		}
		var events []string
		for _, n := range p.Notifies {
			if strings.HasPrefix(n.Message.EventType, "spotlight.") {
				events = append(events, n.Message.EventType+" "+n.Message.ConnectionID)
				if !ids[n.Message.ConnectionID] {
					t.Errorf("%s got %s about %s, not a peer of the channel", p.Name, n.Message.EventType, n.Message.ConnectionID)
				}
			}
		}
		if len(events) == 0 {
			t.Errorf("%s got no spotlight notify", p.Name)
		}
		t.Logf("%s's spotlight notifies: %q", p.Name, events)
	}
}

// checkRedirect judges the redirect scenario (two nodes, A then B): the
// sendonly connected to A, which put A in charge of the channel; the
// recvonly, given only B's URL, was redirected by B to A, followed with
// "redirect": true, and gets the sendonly's media on A; both nodes' API list
// the channel's two connections.
func checkRedirect(t *testing.T, r *browserRun) {
	nodes := browserNodes(2)
	a, b := nodes[0], nodes[1]
	pub, sub := r.peer(t, "sendonly"), r.peer(t, "recvonly")

	// One cluster of the two, as each node saw it before the browser
	// started, with the URLs the redirect and the forwarding rely on.
	if len(r.ClusterNodes) != 2 {
		t.Errorf("ListClusterNodes of %d nodes in the driver's output, want 2", len(r.ClusterNodes))
	}
	for i, list := range r.ClusterNodes {
		var got []string
		for _, e := range list {
			got = append(got, e.NodeName+" "+e.ExternalSignalingURL+" "+e.ExternalAPIURL)
		}
		slices.Sort(got)
		want := []string{a.name + " " + a.signalingURL + " " + a.apiURL, b.name + " " + b.signalingURL + " " + b.apiURL}
		if !slices.Equal(got, want) {
			t.Errorf("%s's ListClusterNodes: %q, want %q", nodes[i].name, got, want)
		}
	}

	for _, p := range []*browserPeer{pub, sub} {
		checkNoDisconnect(t, p)
		if !p.ConnectedCallback {
			t.Errorf("%s: no connected callback", p.Name)
		}
	}
	checkMediaFrom(t, sub, pub.ConnectionID)
	checkNotOwnMedia(t, sub)
	if len(sub.RemoteConnectionIDs) != 1 || sub.RemoteConnectionIDs[0] != pub.ConnectionID {
		t.Errorf("recvonly's remoteConnectionIds = %v, want [%s]", sub.RemoteConnectionIDs, pub.ConnectionID)
	}

	// Where each SDK connection went (sora-js-sdk.md section 4).
	if pub.SignalingURL != a.signalingURL || pub.ContactURL != a.signalingURL || pub.ConnectedURL != a.signalingURL {
		t.Errorf("sendonly: given %q, contactSignalingUrl %q, connectedSignalingUrl %q; want node A's %s for all three",
			pub.SignalingURL, pub.ContactURL, pub.ConnectedURL, a.signalingURL)
	}
	if sub.SignalingURL != b.signalingURL || sub.ContactURL != b.signalingURL || sub.ConnectedURL != a.signalingURL {
		t.Errorf("recvonly: given %q, contactSignalingUrl %q, connectedSignalingUrl %q; want B's %s, B's, then A's %s",
			sub.SignalingURL, sub.ContactURL, sub.ConnectedURL, b.signalingURL, a.signalingURL)
	}
	wantSub := []string{
		"new-websocket " + b.signalingURL,
		"send-connect redirect=<none>",
		"onmessage-redirect location=" + a.signalingURL,
		"new-websocket " + a.signalingURL,
		"send-connect redirect=true",
		"onmessage-offer",
	}
	wantPub := []string{"new-websocket " + a.signalingURL, "send-connect redirect=<none>", "onmessage-offer"}
	for _, c := range []struct {
		p    *browserPeer
		want []string
	}{{sub, wantSub}, {pub, wantPub}} {
		if got := c.p.connectSteps(); !slices.Equal(got, c.want) {
			t.Errorf("%s's signaling up to the offer:\n  got  %q\n  want %q", c.p.Name, got, c.want)
		}
	}

	// Node A holds the channel, as both nodes tell.
	for i, n := range nodes {
		call := r.lastCall("Sora_20211215.ListClusterChannels", i)
		var chans []channelEntry
		if call == nil || call.Status != 200 || json.Unmarshal(call.Response, &chans) != nil {
			t.Errorf("ListClusterChannels on %s: %+v", n.name, call)
			continue
		}
		owner := "<none>"
		for _, c := range chans {
			if c.ChannelID == "browser-redirect" {
				owner = c.NodeInCharge
			}
		}
		if owner != a.name {
			t.Errorf("%s says %s is in charge of browser-redirect, want %s", n.name, owner, a.name)
		}
	}

	// ListChannelConnections: node A answers with both connections; node B,
	// which has none of them, forwards the call to A and gives A's answer.
	want := []string{pub.ConnectionID + " sendonly", sub.ConnectionID + " recvonly"}
	slices.Sort(want)
	var answers [2]json.RawMessage
	for i, n := range nodes {
		call := r.lastCall("Sora_20201013.ListChannelConnections", i)
		var conns []struct {
			ConnectionID string `json:"connection_id"`
			Role         string `json:"role"`
			ChannelID    string `json:"channel_id"`
		}
		if call == nil || call.Status != 200 || json.Unmarshal(call.Response, &conns) != nil {
			t.Errorf("ListChannelConnections on %s: %+v", n.name, call)
			continue
		}
		answers[i] = call.Response
		var got []string
		for _, c := range conns {
			got = append(got, c.ConnectionID+" "+c.Role)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("ListChannelConnections on %s lists %q, want %q", n.name, got, want)
		}
	}
	if answers[0] != nil && answers[1] != nil && !jsonEqual(answers[0], answers[1]) {
		t.Errorf("ListChannelConnections differs between the nodes:\n  %s: %s\n  %s: %s", a.name, answers[0], b.name, answers[1])
	}

	// The servers' side: B logged one redirect of this channel to A; A none.
	redirects := func(n browserNode) int {
		count := 0
		for _, line := range strings.Split(r.soradLog(t, n), "\n") {
			if strings.Contains(line, `msg="redirecting connect"`) && strings.Contains(line, "channel_id=browser-redirect ") {
				count++
				if !strings.Contains(line, "node_in_charge="+a.name+" ") || !strings.Contains(line, "location="+a.signalingURL) {
					t.Errorf("%s logged an unexpected redirect: %s", n.name, line)
				}
			}
		}
		return count
	}
	if na, nb := redirects(a), redirects(b); na != 0 || nb != 1 {
		t.Errorf("redirects logged: %d by %s, %d by %s; want 0 and 1", na, a.name, nb, b.name)
	}

	if rd := r.Redirect; rd == nil {
		t.Errorf("the driver recorded no redirect")
	} else {
		ms := func(p *int) string {
			if p == nil {
				return "never"
			}
			return strconv.Itoa(*p) + " ms"
		}
		var connects []string
		for _, c := range rd.ConnectMessages {
			r := "<none>"
			if c.Redirect != nil {
				r = strconv.FormatBool(*c.Redirect)
			}
			connects = append(connects, fmt.Sprintf("+%d ms redirect=%s", c.MS, r))
		}
		t.Logf("redirect of %s: given %s, contact %s, connected %s (location %s); websockets %q; connect messages %q",
			rd.RecvonlyConnectionID, rd.GivenSignalingURL, rd.ContactSignalingURL, rd.ConnectedSignalingURL, rd.Location, rd.WebSockets, connects)
		t.Logf("redirect timing from connect(): redirect received %s, second websocket %s, offer %s, connect() resolved %d ms, connected callback %d ms",
			ms(rd.MSToRedirect), ms(rd.MSToSecondWebSocket), ms(rd.MSToOffer), rd.MSToConnectResolved, rd.MSToConnectedCallback)
	}
}

// connectSteps is p's signaling up to the first offer: each WebSocket the
// SDK opened, each connect it sent (with its redirect field) and each
// redirect it was sent.
func (p *browserPeer) connectSteps() []string {
	var out []string
	for _, s := range p.Signaling {
		switch s.Type {
		case "new-websocket":
			var url string
			_ = json.Unmarshal(s.Data, &url)
			out = append(out, "new-websocket "+url)
		case "send-connect":
			var m struct {
				Redirect *bool `json:"redirect"`
			}
			_ = json.Unmarshal(s.Data, &m)
			r := "<none>"
			if m.Redirect != nil {
				r = strconv.FormatBool(*m.Redirect)
			}
			out = append(out, "send-connect redirect="+r)
		case "onmessage-redirect":
			var m struct {
				Location string `json:"location"`
			}
			_ = json.Unmarshal(s.Data, &m)
			out = append(out, "onmessage-redirect location="+m.Location)
		case "onmessage-offer":
			return append(out, "onmessage-offer")
		}
	}
	return out
}

// lastCall is the driver's last API call of target to node (an index into
// the nodes), or nil.
func (r *browserRun) lastCall(target string, node int) *browserAPICall {
	for i := len(r.APICalls) - 1; i >= 0; i-- {
		if c := &r.APICalls[i]; c.Target == target && c.Node == node {
			return c
		}
	}
	return nil
}

// checkDataChannelSignaling judges the datachannel-signaling scenario: a and
// b switched (the SDK's switched event, its WebSocket then closed), stayed
// connected, decoded each other and the later c, got the push and the
// notifies over DataChannels and c's re-offer over DC signaling; RPC
// answered a known method and refused an unknown one.
func checkDataChannelSignaling(t *testing.T, r *browserRun) {
	a, b, c := r.peer(t, "a"), r.peer(t, "b"), r.peer(t, "c")
	ids := map[string]string{"a": a.ConnectionID, "b": b.ConnectionID, "c": c.ConnectionID}
	for _, p := range []*browserPeer{a, b, c} {
		checkNoDisconnect(t, p)
		if p.Switched == nil || !jsonEqual(p.Switched.Message, []byte(`{"type":"switched","ignore_disconnect_websocket":true}`)) {
			t.Errorf("%s's switched event: %+v", p.Name, p.Switched)
		}
		if p.WebSocketOpen == nil || *p.WebSocketOpen {
			t.Errorf("%s's WebSocket is still open after switched with ignore_disconnect_websocket", p.Name)
		}
		if p.PCState != "connected" {
			t.Errorf("%s's PeerConnection is %q", p.Name, p.PCState)
		}
		offer := p.offer()
		if offer == nil || offer["data_channel_signaling"] != true || offer["ignore_disconnect_websocket"] != true {
			t.Errorf("%s's offer: %v", p.Name, offer)
		}
		for name, id := range ids {
			if id != p.ConnectionID {
				checkMediaFrom(t, p, id)
			} else if name != p.Name {
				t.Fatalf("peer names mixed up")
			}
		}
	}
	for _, p := range []*browserPeer{a, b} {
		if len(p.Pushes) == 0 || p.Pushes[0].Transport != "datachannel" || !jsonEqual(p.Pushes[0].Message, []byte(`{"type":"push","data":{"over":"datachannel"}}`)) {
			t.Errorf("%s's pushes: %+v, want the PushChannel data over the datachannel first", p.Name, p.Pushes)
		}
		var reoffers int
		for _, s := range p.Signaling {
			if s.Type == "onmessage-re-offer" && s.Transport == "datachannel" {
				reoffers++
			}
		}
		if reoffers == 0 {
			t.Errorf("%s got no re-offer over DC signaling when c joined", p.Name)
		}
		var created bool
		for _, n := range p.Notifies {
			if n.Message.EventType == "connection.created" && n.Message.ConnectionID == c.ConnectionID {
				created = n.Transport == "datachannel"
			}
		}
		if !created {
			t.Errorf("%s's connection.created about c did not come over the datachannel: %+v", p.Name, p.Notifies)
		}
	}
	if r.RPC == nil {
		t.Fatal("no RPC answers in the driver's output")
	}
	if r.RPC.Put.Error != nil || !jsonEqual(r.RPC.Put.Result, []byte(`{"hand":"up"}`)) {
		t.Errorf("PutSignalingNotifyMetadata over RPC: %+v %s", r.RPC.Put.Error, r.RPC.Put.Result)
	}
	if e := r.RPC.Unknown.Error; e == nil || e.Code == nil || *e.Code != -32601 {
		t.Errorf("an unknown RPC method: %+v, want the JSON-RPC method-not-found error", r.RPC.Unknown)
	}
}

// checkMessaging judges the messaging scenario: each peer got the other's
// one message on #chat, the header receiver with the sender's connection
// ID in front, and nothing else (no echo, no duplicate).
func checkMessaging(t *testing.T, r *browserRun) {
	plain, withHeader := r.peer(t, "plain"), r.peer(t, "with-header")
	for _, p := range []*browserPeer{plain, withHeader} {
		checkNoDisconnect(t, p)
		if p.Switched == nil {
			t.Errorf("%s did not switch", p.Name)
		}
	}
	bytesOf := func(raw []int) string {
		b := make([]byte, len(raw))
		for i, v := range raw {
			b[i] = byte(v)
		}
		return string(b)
	}
	if len(plain.Messages) != 1 || plain.Messages[0].Label != "#chat" || bytesOf(plain.Messages[0].Raw) != "hello from with-header" {
		t.Errorf("plain's messages: %+v, want one \"hello from with-header\" on #chat", plain.Messages)
	}
	want := plain.ConnectionID + "hello from plain"
	if len(withHeader.Messages) != 1 || withHeader.Messages[0].Label != "#chat" || bytesOf(withHeader.Messages[0].Raw) != want {
		t.Errorf("with-header's messages: %+v, want one %q on #chat (the sender's connection ID, then the message)", withHeader.Messages, want)
	}
}
