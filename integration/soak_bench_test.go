package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// BenchmarkResourceSoak is the resource soak: a three-node cluster where, for
// SORAD_SOAK_DURATION (2m by default; the documented run is 30m), simulcast
// publishers join and leave two channels, short-lived subscribers come and
// go, long-lived subscribers stay and switch layers (RequestSimulcastRid),
// and the listing and statistics APIs are called, all through random
// nodes. It samples each node's goroutines, heap in use and open file
// descriptors (from /metrics) and the m-lines of each long-lived
// subscriber's latest offer, prints them, and fails if one kept growing:
// if even the least sample of the last quarter of the run is above the
// greatest of its second quarter by more than a tenth (and a small
// absolute slack). It stops by itself.
//
//	SORAD_SOAK_DURATION=30m go test -run '^$' -bench BenchmarkResourceSoak -benchtime 1x -timeout 40m ./integration
func BenchmarkResourceSoak(b *testing.B) {
	duration := 2 * time.Minute
	if v := os.Getenv("SORAD_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 20*time.Second {
			b.Fatalf("SORAD_SOAK_DURATION=%q: want a duration of at least 20s", v)
		}
		duration = d
	}
	for range b.N {
		soak(b, duration)
	}
}

// soakSeries is one sampled quantity and how much it may wander.
type soakSeries struct {
	name    string
	slack   float64
	samples []float64
}

func (s *soakSeries) grew() (bool, string) {
	n := len(s.samples)
	if n < 8 {
		return false, "too few samples"
	}
	second, last := s.samples[n/4:n/2], s.samples[n*3/4:]
	hi, lo := second[0], last[0]
	for _, v := range second {
		hi = max(hi, v)
	}
	for _, v := range last {
		lo = min(lo, v)
	}
	return lo > hi*1.1+s.slack, fmt.Sprintf("second quarter max %.0f, last quarter min %.0f", hi, lo)
}

func soak(b *testing.B, duration time.Duration) {
	h := harness.New(b, soradBin)
	nodes := startCluster(b, h, 3)
	ctx, cancel := context.WithTimeout(context.Background(), duration+2*time.Minute)
	defer cancel()
	channels := []string{"soak-a", "soak-b"}
	randomURLs := func(r *rand.Rand) []string {
		urls := urlsOf(nodes)
		r.Shuffle(len(urls), func(i, j int) { urls[i], urls[j] = urls[j], urls[i] })
		return urls
	}

	// Long-lived subscribers, two per channel.
	var stayers []*soraclient.Client
	for i, ch := range channels {
		for j := range 2 {
			c, err := connectVia(ctx, urlsOf(nodes)[(i+j)%3:], soraclient.Options{ChannelID: ch, Role: "recvonly", Audio: true, Video: true, Simulcast: true})
			if err != nil {
				b.Fatalf("long-lived subscriber: %v", err)
			}
			defer c.Close()
			stayers = append(stayers, c)
		}
	}

	stop := make(chan struct{})
	var (
		wg                 sync.WaitGroup
		mu                 sync.Mutex
		joins, joinErrors  int
		firstJoinError     string
		apiCalls, apiFails int
	)
	note := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		joins++
		if err != nil {
			joinErrors++
			if firstJoinError == "" {
				firstJoinError = err.Error()
			}
		}
	}
	churn := func(w int, opts func(r *rand.Rand) soraclient.Options, hold time.Duration) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(uint64(w), 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			attempt, done := context.WithTimeout(ctx, 15*time.Second)
			c, err := connectVia(attempt, randomURLs(r), opts(r))
			done()
			note(err)
			if err == nil {
				select {
				case <-stop:
				case <-time.After(hold + time.Duration(r.IntN(int(hold)))):
				}
				_ = c.Close()
			}
			time.Sleep(time.Duration(100+r.IntN(400)) * time.Millisecond)
		}
	}
	for w := range 2 { // publishers
		wg.Add(1)
		go churn(w, func(r *rand.Rand) soraclient.Options {
			return soraclient.Options{ChannelID: channels[r.IntN(2)], Role: "sendonly", Audio: true, Video: true, VideoCodec: "VP8", Simulcast: true}
		}, 2*time.Second)
	}
	for w := 2; w < 4; w++ { // short-lived subscribers
		wg.Add(1)
		go churn(w, func(r *rand.Rand) soraclient.Options {
			return soraclient.Options{ChannelID: channels[r.IntN(2)], Role: "recvonly", Audio: true, Video: true}
		}, time.Second)
	}
	wg.Add(1)
	go func() { // layer switches and API calls
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, 7))
		targets := []struct {
			target string
			body   func() any
		}{
			{"Sora_20201013.ListConnections", func() any { return nil }},
			{"Sora_20171010.GetStatsReport", func() any { return nil }},
			{targetListClusterChannels, func() any { return nil }},
			{targetListClusterNodes, func() any { return map[string]bool{"include_all_known_nodes": true} }},
			{"Sora_20220608.RequestSimulcastRid", func() any {
				s := stayers[r.IntN(len(stayers))]
				return map[string]string{"channel_id": channels[slices.Index(stayers, s)/2], "recv_connection_id": s.ConnectionID(), "rid": fmt.Sprintf("r%d", r.IntN(3))}
			}},
		}
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(50+r.IntN(150)) * time.Millisecond):
			}
			tg := targets[r.IntN(len(targets))]
			resp, err := nodes[r.IntN(3)].Call(tg.target, tg.body())
			mu.Lock()
			apiCalls++
			if err != nil || resp.Status >= 500 {
				apiFails++
			}
			mu.Unlock()
		}
	}()

	series := map[string]*soakSeries{
		"goroutines":             {name: "goroutines (sum of nodes)", slack: 60},
		"heap":                   {name: "heap in use, MiB (sum of nodes)", slack: 16},
		"fds":                    {name: "open fds (sum of nodes)", slack: 30},
		"mlines":                 {name: "m-lines of a long-lived subscriber (max)", slack: 4},
		"connections (observed)": {name: "connections (sum of nodes, for reading the others)", slack: 1e9},
	}
	order := []string{"goroutines", "heap", "fds", "mlines", "connections (observed)"}
	interval := duration / 40
	start := time.Now()
	fmt.Printf("\n| t (s) | goroutines | heap MiB | fds | m-lines | connections |\n|---:|---:|---:|---:|---:|---:|\n")
	for time.Since(start) < duration {
		select {
		case <-ctx.Done():
			b.Fatal("soak context ended early")
		case <-time.After(interval):
		}
		var g, heap, fds, conns float64
		for _, n := range nodes {
			for _, m := range []struct {
				name string
				into *float64
			}{{"go_goroutines", &g}, {"go_memstats_heap_inuse_bytes", &heap}, {"process_open_fds", &fds}, {"sorad_connections", &conns}} {
				v, err := n.Metric(m.name)
				if err != nil {
					b.Fatalf("%s on %s: %v", m.name, n.Name, err)
				}
				*m.into += v
			}
		}
		heap /= 1 << 20
		mlines := 0
		for _, s := range stayers {
			if pc := s.PeerConnection(); pc != nil && pc.RemoteDescription() != nil {
				mlines = max(mlines, strings.Count(pc.RemoteDescription().SDP, "\nm="))
			}
		}
		for _, kv := range []struct {
			key string
			v   float64
		}{{"goroutines", g}, {"heap", heap}, {"fds", fds}, {"mlines", float64(mlines)}, {"connections (observed)", conns}} {
			series[kv.key].samples = append(series[kv.key].samples, kv.v)
		}
		fmt.Printf("| %.0f | %.0f | %.1f | %.0f | %d | %.0f |\n", time.Since(start).Seconds(), g, heap, fds, mlines, conns)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	fmt.Printf("\nsoak of %v: %d connects (%d failed), %d API calls (%d failed)\n", duration, joins, joinErrors, apiCalls, apiFails)
	mu.Unlock()
	for _, s := range stayers {
		select {
		case <-s.Closed():
			b.Errorf("a long-lived subscriber was closed: %+v", s.CloseInfo())
		default:
		}
	}
	if joinErrors*20 > joins {
		b.Errorf("%d of %d connects failed; first: %s", joinErrors, joins, firstJoinError)
	}
	for _, key := range order[:4] {
		s := series[key]
		grew, detail := s.grew()
		fmt.Printf("%s: %s, growing: %v\n", s.name, detail, grew)
		if grew {
			b.Errorf("%s kept growing: %s", s.name, detail)
		}
	}
}
