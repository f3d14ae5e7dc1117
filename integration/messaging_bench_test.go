package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// BenchmarkMessaging: one sender to N receivers on a # label, all pion
// clients with DataChannel signaling on loopback. The sender sends
// 100-byte messages at messagingRate per second; over a 10 s window the
// benchmark counts the messages the receivers get and sorad's CPU time. The
// baseline, measured in the same run, is the floor of one DataChannel
// message: sent and received between two pion PeerConnections in the
// benchmark process (both ends' CPU).
func BenchmarkMessaging(b *testing.B) {
	floor := dataChannelFloor(b)
	type row struct {
		n                             int
		sentPS, deliveredPS, cpuPerUS float64
		loss                          float64
	}
	var rows []row
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("receivers=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				sent, delivered, cpu, elapsed := messagingOnce(b, n)
				r := row{n: n, sentPS: sent / elapsed, deliveredPS: delivered / elapsed}
				if delivered > 0 {
					r.cpuPerUS = cpu / delivered * 1e6
				}
				if sent > 0 {
					r.loss = max(0, 1-delivered/(sent*float64(n)))
				}
				rows = append(rows, r)
				b.ReportMetric(r.cpuPerUS, "cpu-us/delivered-msg")
				b.ReportMetric(r.deliveredPS, "delivered-msg/s")
			}
		})
	}
	fmt.Printf("\nMessaging, one sender to N receivers on a # label, 100-byte messages, 10 s window (%s)\n", machine())
	fmt.Printf("baseline (one DataChannel message sent and received between two pion PeerConnections in one process): %.2f us\n\n", floor)
	fmt.Println("| receivers | messages sent/s | messages delivered/s | sorad CPU us per delivered message | CPU per message / baseline | lost |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %d | %.0f | %.0f | %.2f | %.2f | %.2f%% |\n", r.n, r.sentPS, r.deliveredPS, r.cpuPerUS, r.cpuPerUS/floor, r.loss*100)
	}
}

// messagingRate is how many messages per second the sender sends.
const messagingRate = 500

// messagingOnce runs one window with n receivers: it returns the messages
// sent and delivered in it, sorad's CPU seconds and the window's length.
func messagingOnce(b *testing.B, n int) (sent, delivered, cpu, elapsed float64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := harness.New(b, soradBin)
	node := h.NewNode("bench", "--log_level=info", fmt.Sprintf("--license_max_connections=%d", n+10),
		"--messaging_message_rate=100000", "--messaging_message_burst=1000")
	profileDir := os.Getenv(profileDirEnv)
	if profileDir != "" {
		node.Args = append(node.Args, "--pprof_address="+node.Address+":6060")
	}
	node.Start()
	harness.Eventually(b, 10*time.Second, "node ready", func() bool { return formed(node, []string{node.Name}) })
	url := signalingURL(node)
	dcOpts := func(direction string) soraclient.Options {
		return soraclient.Options{SignalingURL: url, ChannelID: "messaging", Role: "sendrecv", DataChannelSignaling: true,
			DataChannels: []soraclient.DataChannelOption{{Label: "#bench", Direction: direction}}}
	}
	var clients []*soraclient.Client
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	var mu sync.Mutex
	for i := 0; i < n; i += 10 {
		var wg sync.WaitGroup
		for range min(10, n-i) {
			wg.Go(func() {
				c, err := soraclient.Connect(ctx, dcOpts("recvonly"))
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
	}
	receivers := clients[:n:n]
	sender, err := soraclient.Connect(ctx, dcOpts("sendonly"))
	if err != nil {
		b.Fatal(err)
	}
	clients = append(clients, sender)
	for _, c := range clients {
		select {
		case <-c.Switched():
		case <-ctx.Done():
			b.Fatal("a client did not switch to DataChannels")
		}
	}
	count := func() (total int) {
		for _, c := range receivers {
			total += c.LabelMessageCount("#bench")
		}
		return total
	}
	// Send for the whole window and a second on each side of it.
	var sentCount atomic.Int64
	stop := make(chan struct{})
	var sending sync.WaitGroup
	sending.Go(func() {
		msg := make([]byte, 100)
		t := time.NewTicker(time.Second / messagingRate)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := sender.SendMessage("#bench", msg); err != nil {
					b.Error(err)
					return
				}
				sentCount.Add(1)
			}
		}
	})
	time.Sleep(time.Second)
	cpu0, err := cpuSeconds(node.Pid())
	if err != nil {
		b.Fatal(err)
	}
	sent0, got0, t0 := sentCount.Load(), count(), time.Now()
	b.ResetTimer()
	var profiled sync.WaitGroup
	if profileDir != "" {
		profiled.Go(func() {
			cpuProfile(b, node, 9*time.Second, filepath.Join(profileDir, fmt.Sprintf("messaging-%d.pprof", n)))
		})
	}
	time.Sleep(10 * time.Second)
	b.StopTimer()
	profiled.Wait()
	cpu1, _ := cpuSeconds(node.Pid())
	sent1, got1 := sentCount.Load(), count()
	elapsed = time.Since(t0).Seconds()
	close(stop)
	sending.Wait()
	return float64(sent1 - sent0), float64(got1 - got0), cpu1 - cpu0, elapsed
}

// dataChannelFloor is the CPU, in microseconds, of one 100-byte message
// sent and received on a pion DataChannel between two PeerConnections of
// this process on loopback.
func dataChannelFloor(b *testing.B) float64 {
	a, z, err := pcPair()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	defer z.Close()
	const messages = 50000
	var got atomic.Int64
	done := make(chan struct{})
	opened := make(chan *webrtc.DataChannel, 1)
	z.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(webrtc.DataChannelMessage) {
			if got.Add(1) == messages {
				close(done)
			}
		})
	})
	dc, err := a.CreateDataChannel("floor", nil)
	if err != nil {
		b.Fatal(err)
	}
	dc.OnOpen(func() { opened <- dc })
	if err := connectPair(a, z); err != nil {
		b.Fatal(err)
	}
	select {
	case <-opened:
	case <-time.After(10 * time.Second):
		b.Fatal("the floor's DataChannel did not open")
	}
	msg := make([]byte, 100)
	cpu0 := processCPU()
	for range messages {
		for dc.BufferedAmount() > 1<<20 {
			time.Sleep(time.Millisecond)
		}
		if err := dc.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("the floor delivered %d of %d messages", got.Load(), messages)
	}
	return (processCPU() - cpu0) / messages * 1e6
}

// processCPU is this process's user+system CPU seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// loopbackAPI makes pion PeerConnections that connect over loopback, with
// the default codecs.
func loopbackAPI() (*webrtc.API, error) {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)), nil
}

// pcPair is two PeerConnections on loopback.
func pcPair() (*webrtc.PeerConnection, *webrtc.PeerConnection, error) {
	api, err := loopbackAPI()
	if err != nil {
		return nil, nil, err
	}
	a, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, nil, err
	}
	z, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		_ = a.Close()
		return nil, nil, err
	}
	return a, z, nil
}

// connectPair runs offer and answer between a and z with complete ICE
// gathering (no trickle).
func connectPair(a, z *webrtc.PeerConnection) error {
	offer, err := a.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(a)
	if err := a.SetLocalDescription(offer); err != nil {
		return err
	}
	<-gathered
	if err := z.SetRemoteDescription(*a.LocalDescription()); err != nil {
		return err
	}
	answer, err := z.CreateAnswer(nil)
	if err != nil {
		return err
	}
	gathered = webrtc.GatheringCompletePromise(z)
	if err := z.SetLocalDescription(answer); err != nil {
		return err
	}
	<-gathered
	return a.SetRemoteDescription(*z.LocalDescription())
}
