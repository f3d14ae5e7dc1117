package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// whose two ends both stay inside it (198.18.0.1/30, 198.18.0.2/30), sorad
// on 198.18.0.1 with its default ports, and the node driver
// (integration/browser/driver.mjs) that opens one page per SDK peer and
// prints one JSON object of what the SDK reported. Nothing leaves the
// namespace; see integration/browser/netns.sh.

// sdkVersion is the sora-js-sdk the lock file pins.
const sdkVersion = "2026.1.0"

// browserSetup is what the scenarios need from the machine.
type browserSetup struct {
	dir      string // integration/browser, absolute
	chromium string
}

// browserPrereqs finds chromium, node, unshare, ip, the npm packages and
// the right to make a namespace. When something is missing the test is
// skipped, loudly, unless CI is set: then it fails.
func browserPrereqs(t *testing.T) browserSetup {
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
	for _, f := range []string{"node_modules/sora-js-sdk/dist/sora.js", "node_modules/playwright-core/package.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, "integration/browser/"+f+" (cd integration/browser && npm ci)")
			break
		}
	}
	if len(missing) == 0 {
		var pkg struct{ Version string }
		if b, err := os.ReadFile(filepath.Join(dir, "node_modules/sora-js-sdk/package.json")); err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version != sdkVersion {
			missing = append(missing, fmt.Sprintf("sora-js-sdk %s in integration/browser/node_modules (found %q; run npm ci)", sdkVersion, pkg.Version))
		}
	}
	if len(missing) == 0 {
		out, err := exec.Command("unshare", "--net", "--pid", "--fork", "--kill-child", "ip", "link", "set", "lo", "up").CombinedOutput()
		if err != nil {
			missing = append(missing, fmt.Sprintf("a network namespace of our own (unshare --net needs root or CAP_SYS_ADMIN): %v %s", err, bytes.TrimSpace(out)))
		}
	}
	if len(missing) > 0 {
		msg := "SKIPPED: the browser end-to-end tests need: " + strings.Join(missing, "; ")
		if os.Getenv("CI") == "" {
			t.Skip(msg)
		}
		t.Fatalf("CI is set, so this is a failure, not a skip. %s", msg)
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
	APICalls []struct {
		MS       int             `json:"ms"`
		Target   string          `json:"target"`
		Body     json.RawMessage `json:"body"`
		Status   int             `json:"status"`
		Response json.RawMessage `json:"response"`
	} `json:"api_calls"`
	Peers map[string]*browserPeer `json:"peers"`
}

type browserPeer struct {
	Name              string          `json:"name"`
	SDKVersion        string          `json:"sdk_version"`
	Role              string          `json:"role"`
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
}

type statsSample struct {
	MS              int           `json:"ms"`
	Error           string        `json:"error"`
	ConnectionState string        `json:"connection_state"`
	Inbound         []inboundStat `json:"inbound"`
	Outbound        []struct {
		Kind          string `json:"kind"`
		Codec         string `json:"codec"`
		PacketsSent   int    `json:"packets_sent"`
		FramesEncoded *int   `json:"frames_encoded"`
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

// runBrowserScenario runs one driver scenario in a fresh namespace with a
// fresh sorad and returns the driver's observations. If the test fails, the
// sorad log, the driver's stderr and a summary of every peer are printed.
func runBrowserScenario(t *testing.T, s browserSetup, scenario string) *browserRun {
	t.Helper()
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--pid", "--fork", "--kill-child",
		"bash", filepath.Join(s.dir, "netns.sh"), soradBin, work, scenario, s.chromium)
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
		soradLog, _ := os.ReadFile(filepath.Join(work, "sorad.log"))
		if bytes.Contains(soradLog, []byte("WARNING: DATA RACE")) {
			t.Errorf("sorad reported a data race")
		}
		if !t.Failed() {
			return
		}
		driverErr, _ := os.ReadFile(filepath.Join(work, "driver.stderr"))
		t.Logf("--- sorad log ---\n%s", soradLog)
		t.Logf("--- driver stderr ---\n%s", driverErr)
		if stderr.Len() > 0 {
			t.Logf("--- netns.sh stderr ---\n%s", stderr.Bytes())
		}
		if decodeErr == nil {
			t.Logf("--- what each peer saw ---\n%s", run.summary())
		}
	})
	if status, err := os.ReadFile(filepath.Join(work, "sorad.status")); err != nil || strings.TrimSpace(string(status)) != "exit status 0" {
		t.Errorf("sorad after SIGTERM: %q %v (want exit status 0)", bytes.TrimSpace(status), err)
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
	return &run
}

// summary is a readable account of each peer, SDPs included, for failures.
func (r *browserRun) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s ok=%v error=%q\n", r.Scenario, r.OK, r.Error)
	for _, c := range r.APICalls {
		fmt.Fprintf(&b, "API %s %s -> %d %s\n", c.Target, c.Body, c.Status, c.Response)
	}
	for name, p := range r.Peers {
		fmt.Fprintf(&b, "== %s (%s) %s connected_callback=%v pc=%s remote=%v\n", name, p.Role, p.ConnectionID, p.ConnectedCallback, p.PCState, p.RemoteConnectionIDs)
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
	if len(p.Stats) != 2 {
		t.Errorf("%s has %d stats samples, want 2", p.Name, len(p.Stats))
		return
	}
	s1, s2 := p.Stats[0], p.Stats[1]
	v1, v2 := s1.inbound(streamID, "video"), s2.inbound(streamID, "video")
	switch {
	case v1 == nil || v2 == nil:
		t.Errorf("%s has no inbound video from %s: %+v", p.Name, streamID, s2.Inbound)
	case v1.FramesDecoded <= 0 || v2.FramesDecoded <= v1.FramesDecoded:
		t.Errorf("%s decoded %d then %d video frames from %s, want > 0 and growing", p.Name, v1.FramesDecoded, v2.FramesDecoded, streamID)
	default:
		t.Logf("%s decodes %s video from %s: %d -> %d frames in %d ms, %dx%d", p.Name, v2.Codec, streamID, v1.FramesDecoded, v2.FramesDecoded, s2.MS-s1.MS, v2.FrameWidth, v2.FrameHeight)
	}
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
		check func(*testing.T, *browserRun)
	}{
		{"sendonly-recvonly", func(t *testing.T, r *browserRun) {
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
		{"sendrecv-3", func(t *testing.T, r *browserRun) {
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
		{"disconnect-api", func(t *testing.T, r *browserRun) {
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
		{"push", func(t *testing.T, r *browserRun) {
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
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			run := runBrowserScenario(t, s, sc.name)
			sc.check(t, run)
		})
	}
}
