package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// The media benchmarks run the real sorad binary with real pion clients on
// loopback:
//
//	go test -run '^$' -bench 'Fanout|JoinLatency|Failover|APIForwarding' -benchtime 1x -timeout 30m ./integration
//
// Each prints the table docs/benchmarks.md quotes.

// cpuSeconds returns a process's user+system CPU time from /proc.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks, nil
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s", model, runtime.NumCPU(), runtime.Version())
}

// BenchmarkFanout: one publisher (VP8 at about 1.5 Mbit/s and Opus) to N
// recvonly subscribers. Over a 10 s window it measures sorad's CPU per
// forwarded packet (one packet to one subscriber), forwarded packets per
// second per core, and receiver loss. The baseline, measured in the same
// run, is the floor of forwarding a packet: SRTP-encrypting it and sending
// it over UDP on loopback, in one goroutine of this process.
func BenchmarkFanout(b *testing.B) {
	fanoutBenchmark(b, benchSizes(b, []int{50, 100, 150, 200}), fanoutOnce,
		"Fan-out, one publisher to N recvonly subscribers", "packets in/s")
}

// sizesEnv overrides the numbers of subscribers of the fan-out benchmarks:
// a comma-separated list.
const sizesEnv = "SORAD_BENCH_SUBSCRIBERS"

// benchSizes returns the numbers of subscribers sizesEnv lists, else def.
func benchSizes(b *testing.B, def []int) []int {
	v := os.Getenv(sizesEnv)
	if v == "" {
		return def
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want numbers of subscribers, comma-separated", sizesEnv, v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkAudioFanout: ten Opus publishers to N recvonly audio
// subscribers of the same channel, each of which gets all ten, measured as
// BenchmarkFanout.
func BenchmarkAudioFanout(b *testing.B) {
	fanoutBenchmark(b, benchSizes(b, []int{100}), audioFanoutOnce,
		"Audio fan-out, ten Opus publishers to N recvonly subscribers", "packets in/s (all publishers)")
}

// fanoutBenchmark runs once for each number of subscribers and prints the
// table docs/benchmarks.md quotes, beside the forwarding floor.
func fanoutBenchmark(b *testing.B, sizes []int, once func(*testing.B, int) fanoutResult, title, inColumn string) {
	// The floor is measured before each row as well, and the least of
	// them is the baseline of every row: the machine's other load (the
	// subscribers, whatever else runs) can only make a measurement slower.
	floors := []float64{forwardingFloor(b)}
	type row struct {
		n int
		fanoutResult
	}
	var rows []row
	for _, n := range sizes {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				floors = append(floors, forwardingFloor(b))
				r := once(b, n)
				rows = append(rows, row{n, r})
				b.ReportMetric(r.cpuPerPacketUS, "cpu-us/forwarded-pkt")
				b.ReportMetric(r.perCore, "forwarded-pkt/s/core")
				b.ReportMetric(r.loss*100, "loss-%")
			}
		})
	}
	fmt.Printf("\n%s, 10 s window (%s)\n", title, machine())
	floor := slices.Min(floors)
	fmt.Printf("baseline (SRTP encrypt + UDP send of one packet): %.2f us, the least of %d measurements in this run (%s us)\n\n", floor, len(floors), formatFloats(floors))
	fmt.Printf("| subscribers | %s | packets out/s | sorad CPU us per forwarded packet | forwarded packets/s per core | receiver loss | CPU per packet / baseline | RSS MiB | RSS per subscriber MiB |\n", inColumn)
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %d | %.0f | %.0f | %.2f | %.0f | %.2f%% | %.2f | %.0f | %.2f |\n", r.n, r.inPPS, r.outPPS, r.cpuPerPacketUS, r.perCore, r.loss*100, r.cpuPerPacketUS/floor,
			r.rssMiB, (r.rssMiB-r.rssBeforeMiB)/float64(r.n))
	}
}

// formatFloats lists figures with two decimals.
func formatFloats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.2f", f)
	}
	return strings.Join(s, ", ")
}

type fanoutResult struct {
	inPPS, outPPS, cpuPerPacketUS, perCore, loss float64
	// sorad's resident memory with the publishers alone and at the end of
	// the window with every subscriber.
	rssBeforeMiB, rssMiB float64
}

// fanout is one run of a fan-out benchmark: a node, its publishers and
// their subscribers.
type fanout struct {
	node       *harness.Node
	pubs       []*soraclient.Client
	subs       []*soraclient.Client
	profileDir string
	rssBefore  float64 // MiB, with the publishers alone
}

// newFanout starts a node, connects the publishers (pubOpts) and, once
// published says the node has their media, n subscribers (subOpts(i)) ten
// at a time, and waits until every subscriber gets packets of kind from
// every publisher and the caches settle. Close releases it all.
func newFanout(b *testing.B, ctx context.Context, n int, kind string, pubOpts []soraclient.Options, published func(*fanout) bool, subOpts func(i int) soraclient.Options) *fanout {
	h := harness.New(b, soradBin)
	f := &fanout{node: h.NewNode("bench", "--log_level=info", fmt.Sprintf("--license_max_connections=%d", n+len(pubOpts)+10)), profileDir: os.Getenv(profileDirEnv)}
	if f.profileDir != "" {
		f.node.Args = append(f.node.Args, "--pprof_address="+f.node.Address+":6060")
	}
	f.node.Start()
	harness.Eventually(b, 10*time.Second, "node ready", func() bool { return formed(f.node, []string{f.node.Name}) })
	url := signalingURL(f.node)
	for _, opts := range pubOpts {
		opts.SignalingURL = url
		pub, err := soraclient.Connect(ctx, opts)
		if err != nil {
			f.Close()
			b.Fatal(err)
		}
		f.pubs = append(f.pubs, pub)
	}
	if published != nil {
		harness.Eventually(b, 10*time.Second, "the publishers' media at the node", func() bool { return published(f) })
	}
	time.Sleep(time.Second)
	var err error
	if f.rssBefore, err = rssMiB(f.node.Pid()); err != nil {
		f.Close()
		b.Fatal(err)
	}
	f.subs = make([]*soraclient.Client, n)
	for i := 0; i < n; i += 10 {
		var wg sync.WaitGroup
		for j := i; j < min(i+10, n); j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				opts := subOpts(j)
				opts.SignalingURL = url
				c, err := soraclient.Connect(ctx, opts)
				if err != nil {
					b.Error(err)
					return
				}
				f.subs[j] = c
			}()
		}
		wg.Wait()
		if b.Failed() {
			f.Close()
			b.FailNow()
		}
	}
	for _, c := range f.subs {
		for _, pub := range f.pubs {
			if err := c.WaitPackets(ctx, pub.ConnectionID(), kind, 10); err != nil {
				f.Close()
				b.Fatal(err)
			}
		}
	}
	time.Sleep(2 * time.Second) // settle: key frames, NACK caches
	return f
}

// Close closes the clients.
func (f *fanout) Close() {
	for _, c := range f.subs {
		if c != nil {
			_ = c.Close()
		}
	}
	for _, c := range f.pubs {
		_ = c.Close()
	}
}

// received is how many packets of the publishers the subscribers got.
func (f *fanout) received() int64 {
	var total int64
	for _, c := range f.subs {
		for k, st := range c.Received() {
			for _, pub := range f.pubs {
				if strings.HasPrefix(k, pub.ConnectionID()+"/") {
					total += st.Packets
				}
			}
		}
	}
	return total
}

// rssMiB reads a process's resident memory from /proc, in MiB.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// measure runs the 10 s window. counts returns how many packets the node
// has received from the publisher (in) and sent to subscribers (out) so
// far; profile names the CPU profile saved when profiling.
func (f *fanout) measure(b *testing.B, profile string, counts func() (in, out float64)) fanoutResult {
	in0, out0 := counts()
	cpu0, err := cpuSeconds(f.node.Pid())
	if err != nil {
		b.Fatal(err)
	}
	recv0, t0 := f.received(), time.Now()
	b.ResetTimer()
	var profiled sync.WaitGroup
	if f.profileDir != "" {
		// Allocations over the window: go tool pprof -sample_index=alloc_space
		// -base <profile>-allocs-before.pprof <profile>-allocs.pprof.
		allocs := strings.TrimSuffix(profile, ".pprof") + "-allocs"
		saveProfile(b, f.node, "allocs", filepath.Join(f.profileDir, allocs+"-before.pprof"))
		defer saveProfile(b, f.node, "allocs", filepath.Join(f.profileDir, allocs+".pprof"))
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			cpuProfile(b, f.node, 9*time.Second, filepath.Join(f.profileDir, profile))
		}()
	}
	time.Sleep(10 * time.Second)
	b.StopTimer()
	profiled.Wait()
	in1, out1 := counts()
	cpu1, _ := cpuSeconds(f.node.Pid())
	recv1, elapsed := f.received(), time.Since(t0).Seconds()
	rss, err := rssMiB(f.node.Pid())
	if err != nil {
		b.Fatal(err)
	}
	in, out, cpu := in1-in0, out1-out0, cpu1-cpu0
	r := fanoutResult{inPPS: in / elapsed, outPPS: out / elapsed, rssBeforeMiB: f.rssBefore, rssMiB: rss}
	if out > 0 {
		r.cpuPerPacketUS = cpu / out * 1e6
		r.loss = max(0, 1-float64(recv1-recv0)/out)
	}
	if cpu > 0 {
		r.perCore = out / cpu
	}
	return r
}

func fanoutOnce(b *testing.B, n int) fanoutResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := newFanout(b, ctx, n, "video",
		[]soraclient.Options{{ChannelID: "fanout", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", VideoBitrateKbps: 1500}},
		nil,
		func(int) soraclient.Options {
			return soraclient.Options{ChannelID: "fanout", Role: "recvonly", Audio: true, Video: true}
		})
	defer f.Close()
	// Every subscriber gets every packet the node receives.
	return f.measure(b, fmt.Sprintf("fanout-%d.pprof", n), func() (float64, float64) {
		in, err := f.node.Metric("sorad_forwarded_packets_total")
		if err != nil {
			b.Fatal(err)
		}
		return in, in * float64(n)
	})
}

func audioFanoutOnce(b *testing.B, n int) fanoutResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pubs := make([]soraclient.Options, 10)
	for i := range pubs {
		pubs[i] = soraclient.Options{ChannelID: "audio-fanout", Role: "sendonly", Audio: true}
	}
	f := newFanout(b, ctx, n, "audio", pubs, nil,
		func(int) soraclient.Options {
			return soraclient.Options{ChannelID: "audio-fanout", Role: "recvonly", Audio: true}
		})
	defer f.Close()
	// Every subscriber gets every packet of every publisher.
	return f.measure(b, fmt.Sprintf("audio-fanout-%d.pprof", n), func() (float64, float64) {
		in, err := f.node.Metric("sorad_forwarded_packets_total")
		if err != nil {
			b.Fatal(err)
		}
		return in, in * float64(n)
	})
}

// profileDirEnv names a directory where the media benchmarks save a CPU
// profile of sorad over their measurement window (go tool pprof reads it);
// unset, nothing is profiled.
const profileDirEnv = "SORAD_BENCH_PROFILE_DIR"

// cpuProfile saves a CPU profile of node over d, taken from its
// pprof_address (node.Address:6060).
func cpuProfile(b *testing.B, node *harness.Node, d time.Duration, path string) {
	saveProfile(b, node, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())), path)
}

// saveProfile saves node's /debug/pprof/<which> to path.
func saveProfile(b *testing.B, node *harness.Node, which, path string) {
	url := fmt.Sprintf("http://%s:6060/debug/pprof/%s", node.Address, which)
	resp, err := http.Get(url)
	if err != nil {
		b.Errorf("profile %s: %v", which, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Errorf("profile %s: %s %v", which, resp.Status, err)
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Errorf("profile %s: %v", which, err)
		return
	}
	b.Logf("sorad profile %s: %s", which, path)
}

// forwardingFloor measures, in microseconds, SRTP-encrypting a 1200-byte
// RTP packet and sending it over UDP on loopback to a socket that drains
// it: the least of five runs, since whatever else the machine does can only
// make a run slower.
func forwardingFloor(b *testing.B) float64 {
	floor := forwardingFloorOnce(b)
	for range 4 {
		floor = min(floor, forwardingFloorOnce(b))
	}
	return floor
}

func forwardingFloorOnce(b *testing.B) float64 {
	key, salt := make([]byte, 16), make([]byte, 14)
	ctx, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		b.Fatal(err)
	}
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	var drained atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, err := rx.Read(buf); err != nil {
				return
			}
			drained.Add(1)
		}
	}()
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	payload := make([]byte, 1200)
	dst := make([]byte, 0, 1500)
	const packets = 50000
	start := time.Now()
	for i := 0; i < packets; i++ {
		h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), SSRC: 1}
		out, err := ctx.EncryptRTP(dst[:0], payload, &h)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Write(out); err != nil {
			b.Fatal(err)
		}
	}
	us := float64(time.Since(start).Microseconds()) / packets
	rx.Close()
	<-done
	return us
}

// BenchmarkJoinLatency: WebSocket open to the first RTP packet at a new
// subscriber of a channel with a publisher, p50 and p99 over 50 joins one
// at a time and over 100 joins with 10 in flight; beside the same for two
// bare pion PeerConnections connecting to each other on loopback in this
// process.
func BenchmarkJoinLatency(b *testing.B) {
	for _, level := range []struct{ joins, inFlight int }{{50, 1}, {100, 10}} {
		var sorad []joinPhases
		var bare []time.Duration
		for i := 0; i < b.N; i++ {
			sorad = joinLatencies(b, level.joins, level.inFlight)
			bare = bareLatencies(b, level.joins, level.inFlight)
		}
		reportJoins(b, level.joins, level.inFlight, sorad, bare)
	}
}

// reportJoins prints one table of BenchmarkJoinLatency.
func reportJoins(b *testing.B, joins, inFlight int, sorad []joinPhases, bare []time.Duration) {
	p := func(d []time.Duration, q float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[int(q*float64(len(d)-1))].Microseconds()) / 1000
	}
	phase := func(f func(joinPhases) time.Duration) []time.Duration {
		out := make([]time.Duration, len(sorad))
		for i, j := range sorad {
			out[i] = f(j)
		}
		return out
	}
	offer, connected, first := phase(func(j joinPhases) time.Duration { return j.offer }),
		phase(func(j joinPhases) time.Duration { return j.connected }),
		phase(func(j joinPhases) time.Duration { return j.firstPacket })
	b.ReportMetric(p(first, 0.5), fmt.Sprintf("sorad-p50-ms/%d-in-flight", inFlight))
	b.ReportMetric(p(first, 0.99), fmt.Sprintf("sorad-p99-ms/%d-in-flight", inFlight))
	b.ReportMetric(p(bare, 0.5), fmt.Sprintf("bare-p50-ms/%d-in-flight", inFlight))
	fmt.Printf("\nJoin latency, WebSocket open to first RTP packet, %d joins with %d in flight (%s)\n\n", joins, inFlight, machine())
	fmt.Println("| | p50 ms | p99 ms |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| sorad: WebSocket open to offer received | %.1f | %.1f |\n", p(offer, 0.5), p(offer, 0.99))
	fmt.Printf("| sorad: to PeerConnection connected (ICE, DTLS) | %.1f | %.1f |\n", p(connected, 0.5), p(connected, 0.99))
	fmt.Printf("| sorad: to first forwarded RTP packet | %.1f | %.1f |\n", p(first, 0.5), p(first, 0.99))
	fmt.Printf("| baseline: two bare pion PeerConnections on loopback, creation to first RTP packet | %.1f | %.1f |\n", p(bare, 0.5), p(bare, 0.99))
	fmt.Printf("| ratio sorad / baseline | %.2f | %.2f |\n", p(first, 0.5)/p(bare, 0.5), p(first, 0.99)/p(bare, 0.99))
}

// joinPhases times one join from the WebSocket open.
type joinPhases struct {
	offer, connected, firstPacket time.Duration
}

// parallel runs f n times with at most k at once and returns the results.
func parallel(b *testing.B, n, k int, f func() (time.Duration, error)) []time.Duration {
	out := make([]time.Duration, n)
	sem := make(chan struct{}, k)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := f()
			if err != nil {
				b.Error(err)
			}
			out[i] = d
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return out
}

func joinLatencies(b *testing.B, joins, inFlight int) []joinPhases {
	h := harness.New(b, soradBin)
	node := h.NewNode("bench", "--log_level=info", "--license_max_connections=1000")
	profileDir := os.Getenv(profileDirEnv)
	if profileDir != "" {
		node.Args = append(node.Args, "--pprof_address="+node.Address+":6060")
	}
	node.Start()
	harness.Eventually(b, 10*time.Second, "node ready", func() bool { return formed(node, []string{node.Name}) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	url := signalingURL(node)
	pub, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: url, ChannelID: "join", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8"})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	var profiled sync.WaitGroup
	defer profiled.Wait()
	if profileDir != "" {
		// The joins take about a second: the profile covers them and the
		// publisher's forwarding around them. Allocations are counted from
		// the start: the joins' are the difference of the two profiles
		// (go tool pprof -base join-N-allocs-before.pprof join-N-allocs.pprof).
		saveProfile(b, node, "allocs", filepath.Join(profileDir, fmt.Sprintf("join-%d-allocs-before.pprof", inFlight)))
		defer saveProfile(b, node, "allocs", filepath.Join(profileDir, fmt.Sprintf("join-%d-allocs.pprof", inFlight)))
		profiled.Go(func() {
			cpuProfile(b, node, 2*time.Second, filepath.Join(profileDir, fmt.Sprintf("join-%d.pprof", inFlight)))
		})
	}
	phases := make([]joinPhases, joins)
	var next atomic.Int64
	parallel(b, joins, inFlight, func() (time.Duration, error) {
		start := time.Now()
		c, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: url, ChannelID: "join", Role: "recvonly", Audio: true, Video: true})
		if err != nil {
			return 0, err
		}
		connected := time.Since(start)
		defer c.Close()
		// Audio flows every 20 ms: the first packet of either kind.
		if err := c.WaitPackets(ctx, pub.ConnectionID(), "audio", 1); err != nil {
			return 0, err
		}
		first := time.Time{}
		for k, st := range c.Received() {
			if strings.HasPrefix(k, pub.ConnectionID()+"/") && (first.IsZero() || st.FirstPacket.Before(first)) {
				first = st.FirstPacket
			}
		}
		var offer time.Duration
		for _, m := range c.Messages() {
			if m.Type == "offer" {
				offer = m.At.Sub(start)
			}
		}
		phases[next.Add(1)-1] = joinPhases{offer: offer, connected: connected, firstPacket: first.Sub(start)}
		return first.Sub(start), nil
	})
	return phases
}

// bareLatencies connects pairs of pion PeerConnections in this process (the
// offer and answer passed directly), the sender writing Opus-sized samples
// every 20 ms, and times creation to the receiver's first RTP packet.
func bareLatencies(b *testing.B, joins, inFlight int) []time.Duration {
	api, err := loopbackAPI()
	if err != nil {
		b.Fatal(err)
	}
	return parallel(b, joins, inFlight, func() (time.Duration, error) {
		start := time.Now()
		tx, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return 0, err
		}
		defer tx.Close()
		rx, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return 0, err
		}
		defer rx.Close()
		track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "bare")
		if err != nil {
			return 0, err
		}
		if _, err := tx.AddTrack(track); err != nil {
			return 0, err
		}
		first := make(chan time.Time, 1)
		rx.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			if _, _, err := t.ReadRTP(); err == nil {
				first <- time.Now()
			}
		})
		if err := connectPair(tx, rx); err != nil {
			return 0, err
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case at := <-first:
				return at.Sub(start), nil
			case <-tick.C:
				_ = track.WriteSample(media.Sample{Data: make([]byte, 80), Duration: 20 * time.Millisecond})
			case <-timeout:
				return 0, fmt.Errorf("bare pion pair: no packet in 30 s")
			}
		}
	})
}

// BenchmarkFailover: kill -9 the node in charge of a channel with a
// publisher, then time from the kill to the first media packet of a new
// subscriber of that channel (a new publisher and subscriber pair connecting
// through the live nodes), p50 over 10 runs. The baseline, in the same runs,
// is the same pair joining a healthy channel. The killed node is restarted
// on its data after each run. Runs alternate between killing the Raft
// leader (the cluster must elect another before it can move the channel)
// and killing a follower; both are reported.
func BenchmarkFailover(b *testing.B) {
	const runs = 10
	var failover, healthy, leaderKilled, followerKilled []time.Duration
	for i := 0; i < b.N; i++ {
		h := harness.New(b, soradBin)
		nodes := startCluster(b, h, 3, "--log_level=info")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		for r := 0; r < runs; r++ {
			lead := raftLeader(b, nodes)
			owner := lead
			if r%2 == 1 {
				owner = except(nodes, lead)[(r/2)%2]
			}
			live := except(nodes, owner)
			start := time.Now()
			pub, sub, err := pair(ctx, []string{signalingURL(owner)}, fmt.Sprintf("healthy-%d", r))
			if err != nil {
				b.Fatal(err)
			}
			healthy = append(healthy, firstPacket(sub, pub).Sub(start))
			_ = sub.Close()
			_ = pub.Close()
			pub, sub, err = pair(ctx, []string{signalingURL(owner)}, fmt.Sprintf("failover-%d", r))
			if err != nil {
				b.Fatal(err)
			}
			owner.Kill()
			killed := time.Now()
			_ = sub.Close()
			_ = pub.Close()
			var pub2, sub2 *soraclient.Client
			for {
				// A connect waits on the live node until the leader lets it
				// take the channel over: one attempt normally suffices.
				attempt, cancelAttempt := context.WithTimeout(ctx, 10*time.Second)
				pub2, sub2, err = pair(attempt, urlsOf(live), fmt.Sprintf("failover-%d", r))
				cancelAttempt()
				if err == nil {
					break
				}
				if time.Since(killed) > 30*time.Second {
					b.Fatalf("run %d: no failover in 30 s: %v", r, err)
				}
			}
			took := firstPacket(sub2, pub2).Sub(killed)
			failover = append(failover, took)
			if owner == lead {
				leaderKilled = append(leaderKilled, took)
			} else {
				followerKilled = append(followerKilled, took)
			}
			_ = sub2.Close()
			_ = pub2.Close()
			owner.Start()
			waitFormed(b, nodes, 30*time.Second)
		}
		cancel()
	}
	p := func(d []time.Duration, q float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[int(q*float64(len(d)-1))].Milliseconds())
	}
	b.ReportMetric(p(failover, 0.5), "failover-p50-ms")
	fmt.Printf("\nFailover, kill -9 of a channel's node to the first media packet of a new subscriber, %d runs (%s)\n\n", runs, machine())
	fmt.Println("| | p50 ms | max ms |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| failover: kill -9 to first packet on a live node | %.0f | %.0f |\n", p(failover, 0.5), p(failover, 1))
	fmt.Printf("| of which the node killed led Raft (%d runs) | %.0f | %.0f |\n", len(leaderKilled), p(leaderKilled, 0.5), p(leaderKilled, 1))
	fmt.Printf("| of which the node killed followed (%d runs) | %.0f | %.0f |\n", len(followerKilled), p(followerKilled, 0.5), p(followerKilled, 1))
	fmt.Printf("| baseline: a publisher and subscriber joining a healthy channel, connect to first packet | %.0f | %.0f |\n", p(healthy, 0.5), p(healthy, 1))
	fmt.Printf("| difference (p50) | %.0f | |\n", p(failover, 0.5)-p(healthy, 0.5))
}

// raftLeader is the node the others follow, once they agree on one.
func raftLeader(b *testing.B, nodes []*harness.Node) *harness.Node {
	var found *harness.Node
	harness.Eventually(b, 10*time.Second, "a Raft leader", func() bool {
		found = nil
		for _, n := range nodes {
			var st statsReport
			if r, err := n.Call(targetGetStatsReport, nil); err != nil || r.Status != 200 || r.JSON(&st) != nil || st.Cluster.RaftLeader == "" {
				return false
			}
			for _, c := range nodes {
				if c.Name == st.Cluster.RaftLeader && (found == nil || found == c) {
					found = c
				} else if c.Name == st.Cluster.RaftLeader {
					return false
				}
			}
		}
		return found != nil
	})
	return found
}

// firstPacket is when sub first received media from pub.
func firstPacket(sub, pub *soraclient.Client) time.Time {
	var first time.Time
	for k, st := range sub.Received() {
		if strings.HasPrefix(k, pub.ConnectionID()+"/") && (first.IsZero() || st.FirstPacket.Before(first)) {
			first = st.FirstPacket
		}
	}
	return first
}

// BenchmarkAPIForwarding: ListChannelConnections of a channel with two
// connections, answered by the node in charge (the baseline) and by a node
// that forwards it there, in the same run: latency p50/p99, throughput with
// 8 concurrent callers for 3 s each, and the CPU the sorad processes spent
// per call (and the part of it the nodes spend idle: the publisher's media,
// Raft, probes). With SORAD_BENCH_PROFILE_DIR set, the last pass of each saves
// 2 s CPU profiles: apifwd-direct-owner.pprof, and apifwd-forwarded-edge.pprof
// and apifwd-forwarded-owner.pprof.
func BenchmarkAPIForwarding(b *testing.B) {
	var owner, other result
	profileDir := os.Getenv(profileDirEnv)
	for i := 0; i < b.N; i++ {
		h := harness.New(b, soradBin)
		nodes := clusterNodes(h, 3, "--log_level=info")
		for _, n := range nodes {
			if profileDir != "" {
				n.Args = append(n.Args, "--pprof_address="+n.Address+":6060")
			}
			n.Start()
		}
		waitFormed(b, nodes, 20*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		pub, sub, err := pair(ctx, []string{signalingURL(nodes[0])}, "fwd")
		if err != nil {
			b.Fatal(err)
		}
		body := map[string]string{"channel_id": "fwd"}
		for _, n := range nodes {
			harness.Eventually(b, 5*time.Second, "assignment on "+n.Name, func() bool {
				r, err := n.Call("Sora_20201013.ListChannelConnections", body)
				return err == nil && r.Status == 200 && strings.Count(string(r.Body), "connection_id") == 2
			})
		}
		// What the nodes spend with no call (media, Raft, probes), to
		// tell it from what the calls cost.
		idle0, t0 := clusterCPU(b, nodes), time.Now()
		time.Sleep(2 * time.Second)
		idle := (clusterCPU(b, nodes) - idle0) / time.Since(t0).Seconds()
		for _, run := range []struct {
			n        *harness.Node
			out      *result
			profiles map[*harness.Node]string
		}{
			{nodes[0], &owner, nil},
			{nodes[1], &other, nil},
			{nodes[0], &owner, map[*harness.Node]string{nodes[0]: "apifwd-direct-owner.pprof"}},
			{nodes[1], &other, map[*harness.Node]string{nodes[1]: "apifwd-forwarded-edge.pprof", nodes[0]: "apifwd-forwarded-owner.pprof"}},
		} {
			var profiled sync.WaitGroup
			if profileDir != "" {
				for n, name := range run.profiles {
					profiled.Add(1)
					go func() {
						defer profiled.Done()
						time.Sleep(500 * time.Millisecond)
						cpuProfile(b, n, 2*time.Second, filepath.Join(profileDir, name))
					}()
				}
			}
			cpu0 := clusterCPU(b, nodes)
			*run.out = callLoad(b, run.n, "Sora_20201013.ListChannelConnections", body, 8, 3*time.Second)
			run.out.cpuPerCallUS = (clusterCPU(b, nodes) - cpu0) / (run.out.rate * 3) * 1e6
			run.out.idlePerCallUS = idle / run.out.rate * 1e6
			profiled.Wait()
		}
		_ = sub.Close()
		_ = pub.Close()
		cancel()
	}
	b.ReportMetric(other.rate/owner.rate, "forwarded/direct-throughput")
	fmt.Printf("\nAPI forwarding, ListChannelConnections with 8 concurrent callers for 3 s (%s)\n\n", machine())
	fmt.Println("| answered by | calls/s | p50 ms | p99 ms | sorad CPU us per call (all nodes) | of which idle |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| the node in charge (baseline) | %.0f | %.2f | %.2f | %.0f | %.0f |\n", owner.rate, owner.p50, owner.p99, owner.cpuPerCallUS, owner.idlePerCallUS)
	fmt.Printf("| another node, forwarding to it | %.0f | %.2f | %.2f | %.0f | %.0f |\n", other.rate, other.p50, other.p99, other.cpuPerCallUS, other.idlePerCallUS)
	fmt.Printf("| ratio forwarded / direct | %.2f | %.2f | %.2f | %.2f | |\n", other.rate/owner.rate, other.p50/owner.p50, other.p99/owner.p99, other.cpuPerCallUS/owner.cpuPerCallUS)
	fmt.Printf("| added p50 ms | | %.2f | | | |\n", other.p50-owner.p50)
}

// clusterCPU is the CPU time, in seconds, the nodes' processes have used.
func clusterCPU(b *testing.B, nodes []*harness.Node) float64 {
	var sum float64
	for _, n := range nodes {
		s, err := cpuSeconds(n.Pid())
		if err != nil {
			b.Fatal(err)
		}
		sum += s
	}
	return sum
}

// callLoad calls a target on n from k goroutines for d and measures.
func callLoad(b *testing.B, n *harness.Node, target string, body any, k int, d time.Duration) result {
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < k; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				r, err := n.Call(target, body)
				if err != nil || r.Status != 200 {
					b.Errorf("%s on %s: %v %d", target, n.Name, err, r.Status)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	q := func(x float64) float64 { return float64(lat[int(x*float64(len(lat)-1))].Microseconds()) / 1000 }
	return result{rate: float64(len(lat)) / d.Seconds(), p50: q(0.5), p99: q(0.99)}
}

// result is one pass of callLoad; the CPU figures are filled in by
// BenchmarkAPIForwarding.
type result struct{ rate, p50, p99, cpuPerCallUS, idlePerCallUS float64 }

// BenchmarkSimulcastFanout: one simulcast publisher (VP8 r0, r1, r2 at a
// seventh, two sevenths and four sevenths of 1.5 Mbit/s, and Opus) to N
// recvonly subscribers, a third asking each layer. Over a 10 s window it
// measures sorad's CPU per forwarded packet (each subscriber gets the audio
// and its layer's video), forwarded packets per second per core, and
// receiver loss, beside the same floor as BenchmarkFanout.
func BenchmarkSimulcastFanout(b *testing.B) {
	fanoutBenchmark(b, benchSizes(b, []int{30, 90, 150}), simulcastFanoutOnce,
		"Simulcast fan-out, one publisher of three layers to N recvonly subscribers (a third on each layer)", "packets in/s (all layers)")
}

// publishedPackets reads, from GetStatsConnection, the audio packets and the
// video packets of each layer the node received from a connection.
func publishedPackets(b *testing.B, node *harness.Node, channelID, connectionID string) (audio float64, layers [3]float64) {
	var st struct {
		Tracks []struct {
			Direction string  `json:"direction"`
			Kind      string  `json:"kind"`
			Packets   float64 `json:"total_received_rtp"`
			Layers    []struct {
				RID     string  `json:"rid"`
				Packets float64 `json:"total_received_rtp"`
			} `json:"layers"`
		} `json:"tracks"`
	}
	r, err := node.Call("Sora_20170529.GetStatsConnection", map[string]string{"channel_id": channelID, "connection_id": connectionID})
	if err != nil || r.JSON(&st) != nil {
		b.Fatalf("GetStatsConnection: %v %s", err, r.Body)
	}
	for _, tr := range st.Tracks {
		switch {
		case tr.Direction == "recv" && tr.Kind == "audio":
			audio = tr.Packets
		case tr.Direction == "recv" && tr.Kind == "video":
			for _, l := range tr.Layers {
				if i, ok := map[string]int{"r0": 0, "r1": 1, "r2": 2}[l.RID]; ok {
					layers[i] = l.Packets
				}
			}
		}
	}
	return audio, layers
}

func simulcastFanoutOnce(b *testing.B, n int) fanoutResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := newFanout(b, ctx, n, "video",
		[]soraclient.Options{{ChannelID: "simulcast", Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", VideoBitrateKbps: 1500, Simulcast: true}},
		func(f *fanout) bool {
			_, layers := publishedPackets(b, f.node, "simulcast", f.pubs[0].ConnectionID())
			return layers[0] > 0 && layers[1] > 0 && layers[2] > 0
		},
		func(i int) soraclient.Options {
			return soraclient.Options{ChannelID: "simulcast", Role: "recvonly", Audio: true, Video: true, Simulcast: true,
				Extra: map[string]any{"simulcast_request_rid": fmt.Sprintf("r%d", i%3)}}
		})
	defer f.Close()
	var perLayer [3]float64
	for i := range f.subs {
		perLayer[i%3]++
	}
	// Every subscriber gets the audio and its layer's video.
	return f.measure(b, fmt.Sprintf("simulcast-fanout-%d.pprof", n), func() (float64, float64) {
		audio, layers := publishedPackets(b, f.node, "simulcast", f.pubs[0].ConnectionID())
		in, out := audio, audio*float64(n)
		for l, p := range layers {
			in += p
			out += p * perLayer[l]
		}
		return in, out
	})
}
