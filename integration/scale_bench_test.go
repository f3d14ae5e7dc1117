package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// BenchmarkNodeScale: what one node sustains. 50 channels each get one
// sendonly publisher (synthetic VP8 at 100 kbit/s and Opus). First,
// subscribers join at rising rates (3 s at each rate, spread over the
// channels; each leaves once connected) and it reports the p50 and p99 join
// time (WebSocket open to PeerConnection connected) at each rate: the rate
// a node admits is the highest whose p99 stays under a second. Then
// recvonly subscribers join and stay, in steps up to 400; after each step,
// once every subscriber receives video, it reads the node's resident memory
// and goroutine count: memory and goroutines per connection are the slopes
// between steps. The load generator shares the machine with sorad.
func BenchmarkNodeScale(b *testing.B) {
	const channels = 50
	steps := []int{0, 100, 200, 300, 400}
	rates := []int{25, 50, 100, 200, 400}
	h := harness.New(b, soradBin)
	node := h.NewNode("bench", "--log_level=warn", "--license_max_connections=2000", "--signaling_max_pending_connections_per_ip=1000", "--signaling_new_channel_burst=100")
	profileDir := os.Getenv(profileDirEnv)
	if profileDir != "" {
		node.Args = append(node.Args, "--pprof_address="+node.Address+":6060")
	}
	node.Start()
	harness.Eventually(b, 10*time.Second, "node ready", func() bool { return formed(node, []string{node.Name}) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	url := signalingURL(node)
	var clients []*soraclient.Client
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	connect := func(opts soraclient.Options) (*soraclient.Client, error) {
		opts.SignalingURL = url
		return soraclient.Connect(ctx, opts)
	}
	pubs := make([]*soraclient.Client, channels)
	for i := range pubs {
		c, err := connect(soraclient.Options{ChannelID: fmt.Sprintf("scale-%d", i), Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", VideoBitrateKbps: 100})
		if err != nil {
			b.Fatal(err)
		}
		pubs[i] = c
		clients = append(clients, c)
	}
	metric := func(name string) float64 {
		v, err := node.Metric(name)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	type rateRow struct {
		rate     int
		joins    int
		failed   int
		p50, p99 time.Duration
	}
	var rows []rateRow
	for _, rate := range rates {
		var mu sync.Mutex
		var took []time.Duration
		failed := 0
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		for i := 0; i < 3*rate; i++ {
			<-tick.C
			wg.Go(func() {
				start := time.Now()
				c, err := connect(soraclient.Options{ChannelID: fmt.Sprintf("scale-%d", i%channels), Role: "recvonly", Audio: true, Video: true})
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					return
				}
				took = append(took, d)
				_ = c.Close()
			})
		}
		tick.Stop()
		wg.Wait()
		slices.Sort(took)
		r := rateRow{rate: rate, joins: len(took), failed: failed}
		if len(took) > 0 {
			r.p50, r.p99 = took[len(took)/2], took[int(0.99*float64(len(took)-1))]
		}
		rows = append(rows, r)
		time.Sleep(2 * time.Second) // the leavers' teardown
	}

	type sample struct {
		subscribers   int
		rssMB, heapMB float64 // resident; Go heap in use
		goroutines    float64
	}
	var samples []sample
	var subs []*soraclient.Client
	for _, target := range steps {
		for len(subs) < target {
			var wg sync.WaitGroup
			batch := make([]*soraclient.Client, min(10, target-len(subs)))
			for j := range batch {
				i := len(subs) + j
				wg.Go(func() {
					c, err := connect(soraclient.Options{ChannelID: fmt.Sprintf("scale-%d", i%channels), Role: "recvonly", Audio: true, Video: true})
					if err != nil {
						b.Error(err)
						return
					}
					batch[j] = c
				})
			}
			wg.Wait()
			for _, c := range batch {
				if c != nil {
					subs = append(subs, c)
					clients = append(clients, c)
				}
			}
			if b.Failed() {
				b.FailNow()
			}
		}
		for i, c := range subs {
			if err := c.WaitPackets(ctx, pubs[i%channels].ConnectionID(), "video", 5); err != nil {
				b.Fatalf("subscriber %d of %d: %v", i, len(subs), err)
			}
		}
		time.Sleep(2 * time.Second) // settle: packet caches, GC
		samples = append(samples, sample{target, metric("process_resident_memory_bytes") / (1 << 20), metric("go_memstats_heap_inuse_bytes") / (1 << 20), metric("go_goroutines")})
	}
	if profileDir != "" {
		// What each goroutine runs, at the last step (go tool pprof reads
		// it; the slope per subscriber is in the table).
		saveProfile(b, node, "goroutine", filepath.Join(profileDir, "scale-goroutines.pprof"))
		saveProfile(b, node, "heap", filepath.Join(profileDir, "scale-heap.pprof"))
	}
	first, last := samples[0], samples[len(samples)-1]
	perConnMB := (last.rssMB - first.rssMB) / float64(last.subscribers-first.subscribers)
	perConnHeapMB := (last.heapMB - first.heapMB) / float64(last.subscribers-first.subscribers)
	perConnG := (last.goroutines - first.goroutines) / float64(last.subscribers-first.subscribers)
	b.ReportMetric(perConnMB*1024, "KiB-rss/subscriber")
	b.ReportMetric(perConnHeapMB*1024, "KiB-heap/subscriber")
	b.ReportMetric(perConnG, "goroutines/subscriber")

	fmt.Printf("\nOne node: %d channels, one publisher each (VP8 100 kbit/s + Opus), recvonly subscribers spread over them (%s)\n\n", channels, machine())
	fmt.Println("| subscribers | connections | sorad RSS MiB | Go heap in use MiB | goroutines |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	for _, s := range samples {
		fmt.Printf("| %d | %d | %.0f | %.0f | %.0f |\n", s.subscribers, s.subscribers+channels, s.rssMB, s.heapMB, s.goroutines)
	}
	fmt.Printf("\nper subscriber (slope %d to %d): %.0f KiB RSS, %.0f KiB of Go heap, %.1f goroutines\n\n", first.subscribers, last.subscribers, perConnMB*1024, perConnHeapMB*1024, perConnG)
	fmt.Println("| joins per second (3 s) | joined | failed | join p50 ms | join p99 ms |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %d | %d | %d | %.1f | %.1f |\n", r.rate, r.joins, r.failed, float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000)
	}
}
