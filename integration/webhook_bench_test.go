package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// BenchmarkAuthWebhookJoin: what an auth webhook adds to a connect. Two
// standalone nodes in one run, one asking an auth webhook on loopback (a
// receiver in this process that allows at once), one without; joins
// alternate between them. Each join is a recvonly client: connect sent to
// offer received (the signaling part, where the webhook sits) and to the
// PeerConnection connected; p50 and p99 over authJoins joins per node.
func BenchmarkAuthWebhookJoin(b *testing.B) {
	const authJoins = 60
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"allowed":true}`)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	h := harness.New(b, soradBin)
	// Each join opens a channel of its own: the per-address limit on new
	// channels (5 a second by default) is lifted, or it would pace the joins.
	limits := []string{"--log_level=warn", "--signaling_new_channel_rate=1000", "--signaling_new_channel_burst=1000"}
	plain := h.NewNode("plain", limits...)
	hooked := h.NewNode("hooked", append(limits, "--auth_webhook_url=http://"+ln.Addr().String()+"/auth")...)
	for _, n := range []*harness.Node{plain, hooked} {
		n.Start()
		harness.Eventually(b, 10*time.Second, n.Name+" ready", func() bool { return formed(n, []string{n.Name}) })
	}
	type phases struct{ offer, connected []time.Duration }
	res := map[*harness.Node]*phases{plain: {}, hooked: {}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range authJoins {
			for _, n := range []*harness.Node{plain, hooked} {
				start := time.Now()
				c, err := soraclient.Connect(ctx, soraclient.Options{SignalingURL: signalingURL(n), ChannelID: fmt.Sprintf("join-%d", j), Role: "recvonly", Audio: true})
				if err != nil {
					b.Fatal(err)
				}
				connected := time.Since(start)
				for _, m := range c.Messages() {
					if m.Type == "offer" {
						res[n].offer = append(res[n].offer, m.At.Sub(start))
					}
				}
				res[n].connected = append(res[n].connected, connected)
				_ = c.Close()
			}
		}
	}
	b.StopTimer()
	p := func(d []time.Duration, q float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[int(q*float64(len(d)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(res[hooked].offer, 0.5)-p(res[plain].offer, 0.5), "added-ms-p50")
	fmt.Printf("\nAuth webhook on loopback, %d recvonly joins per node, alternating (%s)\n\n", len(res[plain].offer), machine())
	fmt.Println("| node | to offer p50 ms | to offer p99 ms | to connected p50 ms | to connected p99 ms |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, row := range []struct {
		name string
		n    *harness.Node
	}{{"no webhook (baseline)", plain}, {"auth webhook", hooked}} {
		r := res[row.n]
		fmt.Printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", row.name, p(r.offer, 0.5), p(r.offer, 0.99), p(r.connected, 0.5), p(r.connected, 0.99))
	}
	fmt.Printf("| added by the webhook | %.2f | %.2f | %.2f | %.2f |\n",
		p(res[hooked].offer, 0.5)-p(res[plain].offer, 0.5), p(res[hooked].offer, 0.99)-p(res[plain].offer, 0.99),
		p(res[hooked].connected, 0.5)-p(res[plain].connected, 0.5), p(res[hooked].connected, 0.99)-p(res[plain].connected, 0.99))
}
