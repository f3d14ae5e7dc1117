package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/load"
)

// The load tester (cmd/sorad-load, integration/load) against a real
// two-node cluster: every client is told both nodes' URLs, so half of each
// channel's clients come through the node not in charge and follow its
// redirect.

// loadCluster starts a two-node cluster whose channels stay assigned for a
// while after their clients leave, so a test can ask who held them.
func loadCluster(t *testing.T) []*harness.Node {
	t.Helper()
	return startCluster(t, harness.New(t, soradBin), 2, "--channel_release_delay=60s")
}

// checkLoadReport asserts that a load of 2 channels x (1 publisher + 3
// subscribers) all connected, that every subscriber received media from
// its channel's publisher on the node in charge of the channel, and that
// nothing failed.
func checkLoadReport(t *testing.T, nodes []*harness.Node, rep *load.Report) {
	t.Helper()
	if rep.Publishers.Connected != 2 || rep.Subscribers.Connected != 6 {
		t.Errorf("connected %d publishers and %d subscribers, want 2 and 6", rep.Publishers.Connected, rep.Subscribers.Connected)
	}
	if len(rep.ConnectFailures) != 0 || len(rep.ClosedByServer) != 0 {
		t.Errorf("connect failures %v, closed by the server %v; want none", rep.ConnectFailures, rep.ClosedByServer)
	}
	if rep.SubscribersWithAll != 6 || len(rep.SubscriberDetails) != 6 {
		t.Errorf("%d subscribers received every publisher, %d listed; want 6", rep.SubscribersWithAll, len(rep.SubscriberDetails))
	}
	urlOf := map[string]string{}
	for _, n := range nodes {
		urlOf[n.Name] = signalingURL(n)
	}
	for _, s := range rep.SubscriberDetails {
		if s.Publishers != 1 || s.Packets <= 0 || s.Kbps <= 0 {
			t.Errorf("subscriber %s of %s: %d publishers, %d packets, %.1f kbit/s; want media from its publisher", s.ConnectionID, s.Channel, s.Publishers, s.Packets, s.Kbps)
		}
		if owner := ownerOf(nodes[0], s.Channel); s.URL != urlOf[owner] {
			t.Errorf("subscriber of %s admitted by %s, but %q is in charge of it", s.Channel, s.URL, owner)
		}
	}
	if rep.SentKbps.Min <= 0 || rep.ReceivedKbps.Min <= 0 {
		t.Errorf("bit rates sent %+v, received %+v; want more than 0", rep.SentKbps, rep.ReceivedKbps)
	}
	// Clients 0, 2, 4, 6 contact the first node and 1, 3, 5, 7 the second;
	// each channel's four span both, so two of them were redirected.
	if rep.Redirected != 4 {
		t.Errorf("%d clients joined through a redirect, want 4", rep.Redirected)
	}
}

// TestLoadTester runs the load in process and then as the built command,
// stopped with SIGINT once everything is connected.
func TestLoadTester(t *testing.T) {
	buildCtx, cancelBuild := context.WithTimeout(context.Background(), 5*time.Minute)
	bin, err := harness.BuildCommand(buildCtx, t.TempDir(), "sorad-load")
	cancelBuild()
	if err != nil {
		t.Fatal(err)
	}
	nodes := loadCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := load.Config{
		URLs:     []string{signalingURL(nodes[0]), signalingURL(nodes[1])},
		Channels: 2, Publishers: 1, Subscribers: 3,
		Audio: true, Video: true, VideoCodec: "VP8", VideoKbps: 300,
		Duration: 8 * time.Second, JoinRate: 20,
		ICENetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MetricsURLs: []string{nodes[0].APIURL() + "metrics", nodes[1].APIURL() + "metrics"},
	}

	t.Run("in process", func(t *testing.T) {
		var progress bytes.Buffer
		rep, err := load.Run(ctx, cfg, &progress)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Interrupted {
			t.Error("report says interrupted")
		}
		checkLoadReport(t, nodes, rep)
		if s := rep.Steady; s == nil || s.ServerCPUError != "" || s.ServerCPUSeconds == nil || s.PacketsPerSecond <= 0 {
			t.Errorf("after the joins: %+v; want packets and the nodes' CPU time", s)
		}
		lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
		if last := lines[len(lines)-1]; !strings.Contains(last, "pubs 2/2  subs 6/6") || !strings.Contains(last, "failed 0  closed 0") {
			t.Errorf("last progress line %q, want every client connected", last)
		}
		var table strings.Builder
		if err := rep.WriteTable(&table); err != nil {
			t.Fatal(err)
		}
		t.Logf("progress:\n%s\nreport:\n%s", progress.String(), table.String())
	})

	t.Run("command", func(t *testing.T) {
		// The URLs come from the cluster's ListClusterNodes; the run is
		// long, and SIGINT ends it once every client has been connected
		// for a few progress lines (so that each has received media).
		cmd := exec.CommandContext(ctx, bin, "-api-url", nodes[0].APIURL(), "-channels", "2", "-publishers", "1", "-subscribers", "3",
			"-video-codec", "H264", "-video-bitrate", "300", "-duration", "40s", "-join-rate", "20", "-ice-networks", "127.0.0.0/8", "-json")
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var (
			mu        sync.Mutex
			errLines  []string
			connected = make(chan struct{})
			drained   = make(chan struct{})
		)
		go func() {
			defer close(drained)
			sc := bufio.NewScanner(stderr)
			all := 0
			for sc.Scan() {
				mu.Lock()
				errLines = append(errLines, sc.Text())
				mu.Unlock()
				if strings.Contains(sc.Text(), "pubs 2/2  subs 6/6") {
					if all++; all == 3 {
						close(connected)
					}
				}
			}
		}()
		select {
		case <-connected:
			_ = cmd.Process.Signal(syscall.SIGINT)
		case <-drained:
		case <-ctx.Done():
		}
		<-drained
		if err := cmd.Wait(); err != nil {
			t.Errorf("sorad-load: %v", err)
		}
		mu.Lock()
		t.Logf("stderr:\n%s", strings.Join(errLines, "\n"))
		mu.Unlock()
		var rep load.Report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("-json output: %v\n%s", err, stdout.Bytes())
		}
		if !rep.Interrupted || len(rep.URLs) != 2 || rep.Media != "H264 300 kbit/s + Opus 32 kbit/s" {
			t.Errorf("report: interrupted %v, URLs %v, media %q; want interrupted, both nodes, H264", rep.Interrupted, rep.URLs, rep.Media)
		}
		checkLoadReport(t, nodes, &rep)
	})
}

// TestLoadTesterGroupsFailures: with the first node in
// block_new_connection and the second in block_new_session, no node takes
// a new channel; each refuses with its mode, and the report groups the
// refusals by close code and reason.
func TestLoadTesterGroupsFailures(t *testing.T) {
	nodes := loadCluster(t)
	setMode(t, nodes, nodes[0], "block_new_connection")
	setMode(t, nodes, nodes[1], "block_new_session")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := load.Run(ctx, load.Config{
		URLs:     []string{signalingURL(nodes[0]), signalingURL(nodes[1])},
		Channels: 2, Publishers: 1, Subscribers: 1, Audio: true,
		Duration: 4 * time.Second, JoinRate: 20,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", table.String())
	// Clients 0 and 2 contacted the first node, 1 and 3 the second.
	want := map[string]int{"4503 BLOCK-NEW-CONNECTION": 2, "4503 BLOCK-NEW-SESSION": 2}
	if len(rep.ConnectFailures) != len(want) || rep.ConnectFailures["4503 BLOCK-NEW-CONNECTION"] != 2 || rep.ConnectFailures["4503 BLOCK-NEW-SESSION"] != 2 {
		t.Errorf("connect failures %v, want %v", rep.ConnectFailures, want)
	}
	if rep.Publishers.Connected+rep.Subscribers.Connected != 0 || rep.Publishers.Failed != 2 || rep.Subscribers.Failed != 2 {
		t.Errorf("publishers %+v, subscribers %+v; want every connect failed", rep.Publishers, rep.Subscribers)
	}
	for reason, n := range want {
		if line := fmt.Sprintf("  %s: %d\n", reason, n); !strings.Contains(table.String(), line) {
			t.Errorf("table lacks %q", line)
		}
	}
}
