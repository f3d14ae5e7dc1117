package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/soraclient"
)

// The load against real sorad nodes is tested in package integration
// (TestLoadTester*): these are the parts that need no server.

func valid() Config {
	return Config{URLs: []string{"ws://127.0.0.1:5000/signaling"}, Channels: 2, Publishers: 1, Subscribers: 3, Audio: true, Video: true}.WithDefaults()
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for none
	}{
		{"defaults", func(*Config) {}, ""},
		{"api url instead of urls", func(c *Config) { c.URLs, c.APIURL = nil, "http://127.0.0.1:3000/" }, ""},
		{"no url", func(c *Config) { c.URLs = nil }, "no signaling URL"},
		{"http signaling url", func(c *Config) { c.URLs = []string{"http://127.0.0.1:5000/signaling"} }, "want a ws or wss URL"},
		{"api url not http", func(c *Config) { c.APIURL = "ws://x/" }, "API URL"},
		{"no channels", func(c *Config) { c.Channels = 0 }, "channels 0"},
		{"too many channels", func(c *Config) { c.Channels = MaxChannels + 1 }, "channels"},
		{"too many publishers", func(c *Config) { c.Publishers = MaxPublishersPerChannel + 1 }, "publishers per channel"},
		{"negative subscribers", func(c *Config) { c.Subscribers = -1 }, "subscribers per channel"},
		{"no clients", func(c *Config) { c.Publishers, c.Subscribers = 0, 0 }, "no clients"},
		{"too many clients", func(c *Config) { c.Channels, c.Subscribers = 100, 100 }, "at most 5000 clients"},
		{"no media", func(c *Config) { c.Audio, c.Video = false, false }, "neither audio nor video"},
		{"duration too long", func(c *Config) { c.Duration = MaxDuration + time.Second }, "duration"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "duration"},
		{"join rate too high", func(c *Config) { c.JoinRate = MaxJoinRate + 1 }, "join rate"},
		{"join rate negative", func(c *Config) { c.JoinRate = -1 }, "join rate"},
		{"join timeout", func(c *Config) { c.JoinTimeout = MaxJoinTimeout + 1 }, "join timeout"},
		{"unknown codec", func(c *Config) { c.VideoCodec = "H265" }, "video codec"},
		{"codec ignored without video", func(c *Config) { c.Video, c.VideoCodec = false, "none" }, ""},
		{"video bit rate", func(c *Config) { c.VideoKbps = MaxVideoKbps + 1 }, "video bit rate"},
		{"audio bit rate", func(c *Config) { c.AudioKbps = 5 }, "audio bit rate"},
		{"simulcast needs VP8", func(c *Config) { c.Simulcast, c.VideoCodec = true, "VP9" }, "simulcast needs video in VP8"},
		{"rid without simulcast", func(c *Config) { c.SimulcastRID = "r1" }, "without simulcast"},
		{"bad rid", func(c *Config) { c.Simulcast, c.SimulcastRID = true, "r3" }, "simulcast rid"},
		{"metadata not JSON", func(c *Config) { c.Metadata = []byte("{") }, "not valid JSON"},
		{"metadata too large", func(c *Config) { c.Metadata = []byte(`"` + strings.Repeat("a", maxMetadataBytes) + `"`) }, "metadata of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestRunRefusesBadConfig: Run checks the configuration before it
// connects anything.
func TestRunRefusesBadConfig(t *testing.T) {
	c := valid()
	c.Channels = 0
	if rep, err := Run(context.Background(), c, nil); err == nil || rep != nil {
		t.Fatalf("Run = %v, %v; want an error", rep, err)
	}
}

// TestPlan: publishers join first, and client i (channel by channel, its
// publishers then its subscribers) contacts URL i mod the number of URLs,
// so every channel's clients come through every URL.
func TestPlan(t *testing.T) {
	c := valid()
	r := &runner{cfg: c, urls: []string{"ws://a/", "ws://b/"}}
	r.plan()
	var got []string
	for _, m := range r.members {
		got = append(got, fmt.Sprintf("%s%d@%s", m.role[:3], m.channel, m.url[5:6]))
	}
	want := "pub0@a pub1@a sub0@b sub1@b sub0@a sub1@a sub0@b sub1@b"
	if strings.Join(got, " ") != want {
		t.Fatalf("plan %q, want %q", strings.Join(got, " "), want)
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&soraclient.CloseError{Code: 4503, Reason: "TOO-MANY-NEW-CHANNELS"}, "4503 TOO-MANY-NEW-CHANNELS"},
		{fmt.Errorf("soraclient: signaling closed before the peer connection connected: %w", &soraclient.CloseError{Code: 4408, Reason: "ICE-CONNECTION-TIMEOUT"}), "4408 ICE-CONNECTION-TIMEOUT"},
		{&soraclient.CloseError{Code: 1006}, "1006 (no reason)"},
		{fmt.Errorf("soraclient: waiting for offer: %w", context.DeadlineExceeded), "JOIN-TIMEOUT"},
		{fmt.Errorf("soraclient: dial ws://x: %w", syscall.ECONNREFUSED), "connection refused"},
		{fmt.Errorf("soraclient: waiting: %w", soraclient.ErrClosed), "signaling closed without a close frame"},
		{&soraclient.RedirectError{Location: "ws://x"}, "redirect not followed"},
		{errors.New(strings.Repeat("x", 200)), strings.Repeat("x", 120) + "..."},
	} {
		if got := failureReason(tc.err); got != tc.want {
			t.Errorf("failureReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		values []float64
		q      float64
		want   float64
	}{
		{nil, 0.5, 0},
		{[]float64{7}, 0.99, 7},
		{v, 0.5, 50},
		{v, 0.99, 99},
		{v, 1, 100},
		{[]float64{1, 2, 3}, 0.5, 2},
	} {
		if got := percentile(tc.values, tc.q); got != tc.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tc.values), tc.q, got, tc.want)
		}
	}
}

// TestWriteTable: the table names the load, both roles' joins, the bit
// rates, and the failures grouped by reason, most first.
func TestWriteTable(t *testing.T) {
	rep := &Report{
		URLs: []string{"ws://a/", "ws://b/"}, Channels: 2, PublishersPerChannel: 1, SubscribersPerChannel: 3,
		Media: "VP8 500 kbit/s + Opus 32 kbit/s", Seconds: 5, ExpectedKbps: 532,
		Publishers:      RoleReport{Planned: 2, Connected: 1, Failed: 1, JoinP50Ms: 12.25, JoinP99Ms: 20, JoinMaxMs: 20},
		Subscribers:     RoleReport{Planned: 6, Connected: 2, Failed: 4},
		ReceivedKbps:    Spread{Min: 500, P50: 520.5, Max: 530},
		ConnectFailures: map[string]int{"4503 BLOCK-NEW-SESSION": 2, "4503 BLOCK-NEW-CONNECTION": 3},
		ClosedByServer:  map[string]int{},
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2 channels x (1 publisher + 3 subscribers), VP8 500 kbit/s + Opus 32 kbit/s, simulcast off, 2 URLs, ran 5.0 s",
		"publishers        2          1       1         12.2         20.0         20.0",
		"received per subscriber  500.0  520.5  530.0",
		"connect failures:\n  4503 BLOCK-NEW-CONNECTION: 3\n  4503 BLOCK-NEW-SESSION: 2\n",
		"closed by the server during the run: none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestWriteTableNothingConnected: figures measured over no client are
// shown as "-", not as zeros.
func TestWriteTableNothingConnected(t *testing.T) {
	rep := &Report{Channels: 1, PublishersPerChannel: 1, SubscribersPerChannel: 1, Media: "Opus 32 kbit/s",
		Publishers: RoleReport{Planned: 1, Failed: 1}, Subscribers: RoleReport{Planned: 1, Failed: 1},
		ConnectFailures: map[string]int{"connection refused": 2}}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"publishers        1          0       1            -            -            -", "sent per publisher    -    -    -", "  connection refused: 2\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestICEFilter(t *testing.T) {
	c := valid()
	if c.iceFilter() != nil {
		t.Fatal("a filter without ICE networks")
	}
	c.ICENetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")}
	f := c.iceFilter()
	for ip, want := range map[string]bool{"127.0.100.3": true, "10.1.2.3": true, "10.2.0.1": false, "192.0.2.2": false, "::1": false, "::ffff:127.0.0.1": true} {
		if got := f(net.ParseIP(ip)); got != want {
			t.Errorf("filter(%s) = %v, want %v", ip, got, want)
		}
	}
}

func TestReadMetric(t *testing.T) {
	body := "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total_other 9\nprocess_cpu_seconds_total 12.5\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprint(w, body)
		case "/empty":
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if v, err := readMetric(ctx, srv.URL+"/metrics", cpuMetric, nil); err != nil || v != 12.5 {
		t.Errorf("readMetric = %v, %v; want 12.5", v, err)
	}
	for path, want := range map[string]string{"/empty": "no process_cpu_seconds_total", "/nothing": "status 404"} {
		if _, err := readMetric(ctx, srv.URL+path, cpuMetric, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("readMetric(%s): %v, want an error with %q", path, err, want)
		}
	}
}

func TestSteady(t *testing.T) {
	at := time.Now()
	from := sample{at: at, t: totals{packets: 100, received: 1000}, cpu: 10}
	to := sample{at: at.Add(2 * time.Second), t: totals{packets: 2100, received: 251000}, cpu: 10.5}
	s := steady(from, to)
	if s.Seconds != 2 || s.PacketsPerSecond != 1000 || s.ReceivedKbps != 1000 ||
		*s.ServerCPUSeconds != 0.5 || *s.ServerCPUPercent != 25 || *s.ServerCPUUsPerPacket != 250 {
		t.Errorf("steady = %+v", s)
	}
	noMetrics := steady(sample{at: at}, sample{at: at.Add(time.Second)})
	if noMetrics.ServerCPUSeconds != nil || noMetrics.ServerCPUError != "" {
		t.Errorf("steady without metrics = %+v", noMetrics)
	}
	failed := steady(sample{at: at, cpuError: errors.New("read x: status 404")}, sample{at: at.Add(time.Second)})
	if failed.ServerCPUError != "read x: status 404" || failed.ServerCPUSeconds != nil {
		t.Errorf("steady with a failed read = %+v", failed)
	}
	rep := &Report{Steady: s}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if want := "after the joins (2.0 s): subscribers received 1000 packets/s, 1.00 Mbit/s; server CPU 0.50 s (25% of a core), 250.00 us per packet received"; !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}
}
