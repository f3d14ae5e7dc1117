package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
)

// The devtools page (media/devtools) as an operator meets it: served by the
// real sorad at /devtools/ on the signaling port, off with devtools = false,
// and driven in Chromium (the browser driver's "devtools", "devtools-cluster"
// and "devtools-simulcast" scenarios) against a node whose API needs a
// bearer token typed into the page. The screenshots of the two views are
// kept in SORAD_TEST_ARTIFACTS/devtools (else the test's temporary
// directory).

// devtoolsRun is the driver's account of a devtools scenario.
type devtoolsRun struct {
	Devtools *struct {
		PageURL       string              `json:"page_url"`
		ConnectionIDs map[string]string   `json:"connection_ids"`
		FramesDecoded map[string]int      `json:"frames_decoded"`
		TileLabels    map[string][]string `json:"tile_labels"`
		Switched      map[string]string   `json:"switched"`
		Messages      map[string][]string `json:"messages"`
		RPC           []string            `json:"rpc"`
		RefusedPush   *string             `json:"refused_push"`
		PushesSeen    map[string][]string `json:"pushes_seen"`
		Closed        map[string]string   `json:"closed"`

		NodeName            string       `json:"node_name"`
		Dialogs             []dialogSeen `json:"dialogs"`
		ModeAfterDismiss    string       `json:"mode_after_dismiss"`
		ModeAfterChange     string       `json:"mode_after_change"`
		ModeShown           string       `json:"mode_shown"`
		ModeAfterReset      string       `json:"mode_after_reset"`
		ModeShownAfterReset string       `json:"mode_shown_after_reset"`

		Screenshots []string `json:"screenshots"`
		Errors      []string `json:"errors"`
	} `json:"devtools"`
}

type dialogSeen struct {
	Message  string `json:"message"`
	Accepted bool   `json:"accepted"`
}

// runDevtools runs scenario against a node whose API needs a token and
// returns the driver's account; the scenario's screenshots are copied to
// the artifacts directory.
func runDevtools(t *testing.T, scenario string, out any, screenshots ...string) {
	t.Helper()
	s := browserPrereqs(t)
	t.Setenv("BROWSER_API_BEARER_TOKEN", randomHex(t, 16))
	run := runBrowserScenario(t, s, scenario, browserNodes(1))
	b, err := os.ReadFile(filepath.Join(run.work, "driver.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("driver.json: %v", err)
	}
	if len(screenshots) == 0 {
		return
	}
	dir := os.Getenv("SORAD_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "devtools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range screenshots {
		png, err := os.ReadFile(filepath.Join(run.work, name))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			continue
		}
		if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10<<10 {
			t.Errorf("screenshot %s is not a PNG of a page (%d bytes)", name, len(png))
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", filepath.Join(dir, name))
	}
}

// TestDevtoolsPage runs the page in two tabs of Chromium: both connect
// with the page's test pattern on DataChannel signaling (one compressed,
// its WebSocket closed after switched) and decode each other's video,
// exchange messages on #chat, one calls JSON-RPC, and a push sent from
// the page's button shows in both logs (a tab without the token is
// refused).
func TestDevtoolsPage(t *testing.T) {
	var dr devtoolsRun
	runDevtools(t, "devtools", &dr, "devtools-connect.png")
	d := dr.Devtools
	if d == nil {
		t.Fatal("driver.json has no devtools account")
	}
	if len(d.Errors) > 0 {
		t.Errorf("page errors (a Content-Security-Policy violation shows here too): %q", d.Errors)
	}
	a, bID := d.ConnectionIDs["a"], d.ConnectionIDs["b"]
	if a == "" || bID == "" || a == bID {
		t.Fatalf("connection ids %v: want two different ones", d.ConnectionIDs)
	}
	for tab, other := range map[string]string{"a": bID, "b": a} {
		if d.FramesDecoded[tab] <= 30 {
			t.Errorf("tab %s decoded %d frames of %s's video, want more than 30", tab, d.FramesDecoded[tab], other)
		}
		if !slices.Contains(d.TileLabels[tab], other) {
			t.Errorf("tab %s: no video tile labelled %s among %q", tab, other, d.TileLabels[tab])
		}
		if !slices.Contains(d.TileLabels[tab], "local · "+d.ConnectionIDs[tab]) {
			t.Errorf("tab %s: no local tile labelled with its own connection id among %q", tab, d.TileLabels[tab])
		}
		if !strings.Contains(d.Switched[tab], "DataChannel signaling") {
			t.Errorf("tab %s never switched to DataChannel signaling: %q", tab, d.Switched[tab])
		}
		// Both tabs read the push on DC push (a's compressed).
		if !slices.Contains(d.PushesSeen[tab], `push (datachannel): {"devtools":"push-check"}`) {
			t.Errorf("tab %s's log shows pushes %q, want the channel push over the DataChannel", tab, d.PushesSeen[tab])
		}
		from := map[string]string{"a": "b", "b": "a"}[tab]
		var received []string
		for _, m := range d.Messages[tab] {
			if strings.HasPrefix(m, "← ") {
				received = append(received, m)
			}
		}
		if want := []string{"← #chat: hello from " + from}; !slices.Equal(received, want) {
			t.Errorf("tab %s's log shows messages %q, want to have received %q (once, and not its own)", tab, d.Messages[tab], want)
		}
		if !strings.Contains(d.Closed[tab], "TYPE-DISCONNECT") {
			t.Errorf("tab %s after Disconnect: %q", tab, d.Closed[tab])
		}
	}
	if want := `2025.2.0/PutSignalingNotifyMetadata: {"hand":"up"}`; !slices.Equal(d.RPC, []string{want}) {
		t.Errorf("tab a's RPC log %q, want %q", d.RPC, want)
	}
	if d.RefusedPush == nil || !strings.Contains(*d.RefusedPush, "401") || !strings.Contains(*d.RefusedPush, "UNAUTHORIZED") {
		t.Errorf("a push from the tab without the token: %v, want 401 UNAUTHORIZED", d.RefusedPush)
	}
}

// TestDevtoolsCluster: the cluster view changes the node's mode through
// its confirmation (a dismissed one changes nothing), as the API then
// says and the view shows, and back.
func TestDevtoolsCluster(t *testing.T) {
	var dr devtoolsRun
	runDevtools(t, "devtools-cluster", &dr, "devtools-cluster.png")
	d := dr.Devtools
	if d == nil {
		t.Fatal("driver.json has no devtools account")
	}
	if len(d.Errors) > 0 {
		t.Errorf("page errors: %q", d.Errors)
	}
	wantDialogs := []bool{false, true, true}
	if len(d.Dialogs) != len(wantDialogs) {
		t.Errorf("confirmations %+v, want three (dismissed, accepted, accepted)", d.Dialogs)
	}
	for i, dl := range d.Dialogs {
		if !strings.Contains(dl.Message, d.NodeName) || i < len(wantDialogs) && dl.Accepted != wantDialogs[i] {
			t.Errorf("confirmation %d %+v: want one naming %s, accepted %v", i, dl, d.NodeName, wantDialogs[min(i, len(wantDialogs)-1)])
		}
	}
	if d.ModeAfterDismiss != "normal" {
		t.Errorf("mode after a dismissed confirmation: %q, want normal", d.ModeAfterDismiss)
	}
	if d.ModeAfterChange != "block_new_connection" || d.ModeShown != "block_new_connection" {
		t.Errorf("after ChangeMode from the cluster view: API %q, page %q, want block_new_connection", d.ModeAfterChange, d.ModeShown)
	}
	if d.ModeAfterReset != "normal" || d.ModeShownAfterReset != "normal" {
		t.Errorf("after setting it back: API %q, page %q, want normal", d.ModeAfterReset, d.ModeShownAfterReset)
	}
}

// devtoolsSimulcastRun is the driver's account of devtools-simulcast.
type devtoolsSimulcastRun struct {
	Devtools *struct {
		ConnectionIDs map[string]string `json:"connection_ids"`
		OutboundRIDs  []string          `json:"outbound_rids"`
		Before, After *struct {
			Layer  string `json:"layer"`
			Width  int    `json:"width"`
			Frames int    `json:"frames"`
		}
		Notifies []string `json:"notifies"`
		Action   string   `json:"action"`
		Errors   []string `json:"errors"`
	} `json:"devtools"`
}

// TestDevtoolsSimulcast: a tab sending simulcast from the page applies the
// offer's encodings (its statistics list the layers it sends), and a
// receiving tab's r1 button (RequestRtpStream) switches what it decodes to
// r1, wider than the r0 it got first, as its statistics table shows.
func TestDevtoolsSimulcast(t *testing.T) {
	var dr devtoolsSimulcastRun
	runDevtools(t, "devtools-simulcast", &dr)
	if dr.Devtools == nil {
		t.Fatal("driver.json has no devtools account")
	}
	d := dr.Devtools
	if len(d.Errors) > 0 {
		t.Errorf("page errors: %q", d.Errors)
	}
	if !slices.Contains(d.OutboundRIDs, "r0") || !slices.Contains(d.OutboundRIDs, "r1") {
		t.Errorf("the sending tab sends layers %q, want r0 and r1 among them", d.OutboundRIDs)
	}
	if d.Before == nil || d.After == nil {
		t.Fatalf("the receiving tab's statistics of the sender: before %+v, after %+v", d.Before, d.After)
	}
	if d.Before.Layer == "r1" || d.Before.Width == 0 {
		t.Errorf("before asking: layer %q width %d, want a decoded lower layer", d.Before.Layer, d.Before.Width)
	}
	if d.After.Layer != "r1" || d.After.Width <= d.Before.Width {
		t.Errorf("after the r1 button (%s): layer %q width %d, want r1 wider than %d; notifies %q", d.Action, d.After.Layer, d.After.Width, d.Before.Width, d.Notifies)
	}
	if !slices.Contains(d.Notifies, "simulcast.switched (websocket)") {
		t.Errorf("the receiving tab's log has notifies %q, want simulcast.switched", d.Notifies)
	}
}

// TestDevtoolsServed: the real binary serves the page with its policy and
// its node's public URLs, the API's CORS admits the page's origin with the
// Authorization header, and devtools = false leaves /devtools/ a 404.
func TestDevtoolsServed(t *testing.T) {
	h := harness.New(t, soradBin)
	token := randomHex(t, 16)
	on := h.NewNode("devtools-on", "--api_bearer_token="+token)
	off := h.NewNode("devtools-off", "--devtools=false")
	on.Start()
	off.Start()
	base := func(n *harness.Node) string { return fmt.Sprintf("http://%s:%d", n.Address, harness.SignalingPort) }
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(url string) (*http.Response, string) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, n := range []*harness.Node{on, off} {
		harness.Eventually(t, 20*time.Second, n.Name+" serves signaling", func() bool {
			resp, _ := get(base(n) + "/signaling")
			return resp != nil
		})
	}

	resp, body := get(base(on) + "/devtools/")
	if resp == nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, "sorad devtools") {
		t.Fatalf("GET /devtools/ on %s: %v %.200s", on.Name, resp, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "connect-src 'self' ", "http://" + on.Address + fmt.Sprintf(":%d", harness.APIPort), "ws://" + on.Address + fmt.Sprintf(":%d", harness.SignalingPort)} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	resp, body = get(base(on) + "/devtools/config.json")
	var cfg map[string]string
	if resp == nil || resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &cfg) != nil {
		t.Fatalf("config.json: %v %q", resp, body)
	}
	if cfg["api_url"] != on.APIURL() || cfg["node_name"] != on.Name || strings.Contains(body, token) {
		t.Errorf("config.json %s: want api_url %s, node_name %s and no token", body, on.APIURL(), on.Name)
	}

	// The page calls the API from its origin with the token: the preflight
	// must admit both.
	req, _ := http.NewRequest(http.MethodOptions, on.APIURL(), nil)
	req.Header.Set("Origin", base(on))
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-sora-target")
	pre, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	allowed := strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers"))
	if pre.StatusCode != http.StatusOK || pre.Header.Get("Access-Control-Allow-Origin") != base(on) ||
		!strings.Contains(allowed, "authorization") || !strings.Contains(allowed, "x-sora-target") || !strings.Contains(allowed, "content-type") {
		t.Errorf("preflight from the page: %d, allow-origin %q, allow-headers %q", pre.StatusCode, pre.Header.Get("Access-Control-Allow-Origin"), allowed)
	}

	for _, p := range []string{"/devtools/", "/devtools/app.js", "/devtools/config.json", "/devtools"} {
		resp, body := get(base(off) + p)
		if resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("devtools = false: GET %s = %v %.100s, want 404", p, resp, body)
		}
	}
}
