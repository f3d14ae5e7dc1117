package integration

import (
	"fmt"
	"slices"
	"testing"
)

// BenchmarkBrowserJoin: sora-js-sdk in Chromium joins a channel with a
// live sendonly (Chromium's fake camera) 20 times in a row, each timed from
// the call of connect() to its resolution and to the first video frame the
// page decodes and presents. Run beside BenchmarkJoinLatency (pion clients)
// in docs/benchmarks.md; it needs what the browser tests need.
func BenchmarkBrowserJoin(b *testing.B) {
	s := browserPrereqs(b)
	var connect, frame []float64
	for i := 0; i < b.N; i++ {
		run := runBrowserScenario(b, s, "join-latency", browserNodes(1))
		if len(run.Joins) != 20 {
			b.Fatalf("%d timed joins; want 20", len(run.Joins))
		}
		connect, frame = connect[:0], frame[:0]
		for _, j := range run.Joins {
			connect = append(connect, j.ConnectMS)
			frame = append(frame, j.FirstFrameMS)
			b.Logf("join: connect %.1f ms, track %.1f ms, first frame %.1f ms, %d key frame requests from the browser", j.ConnectMS, j.TrackMS, j.FirstFrameMS, j.KeyFrameRequests)
		}
	}
	slices.Sort(connect)
	slices.Sort(frame)
	q := func(d []float64, q float64) float64 { return d[int(q*float64(len(d)-1))] }
	b.ReportMetric(q(frame, 0.5), "first-frame-p50-ms")
	fmt.Printf("\nJoin latency in Chromium (sora-js-sdk, 20 joins one after another, %s)\n\n", machine())
	fmt.Println("| sora-js-sdk in Chromium | p50 ms | max ms |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| connect() called to resolved | %.1f | %.1f |\n", q(connect, 0.5), connect[len(connect)-1])
	fmt.Printf("| connect() called to first decoded video frame | %.1f | %.1f |\n", q(frame, 0.5), frame[len(frame)-1])
}
