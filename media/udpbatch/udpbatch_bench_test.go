package udpbatch

import (
	"net"
	"net/netip"
	"testing"
)

// BenchmarkFanoutWrites: one 1200-byte packet to each of 200 receivers on
// loopback (sockets of this process, drained), as one forwarded packet
// makes at 200 subscribers: one sendto each (the baseline), or held and
// sent in batches.
//
//	go test -run '^$' -bench FanoutWrites -count 3 ./media/udpbatch
func BenchmarkFanoutWrites(b *testing.B) {
	const receivers = 200
	var to []netip.AddrPort
	for range receivers {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = rx.Close() })
		to = append(to, rx.LocalAddr().(*net.UDPAddr).AddrPort())
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, err := rx.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	c := Wrap(tx)
	payload := make([]byte, 1200)
	for _, held := range []bool{false, true} {
		name := "sendto"
		if held {
			name = "held"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if held {
					c.Hold()
				}
				for _, a := range to {
					if _, err := c.WriteToUDPAddrPort(payload, a); err != nil {
						b.Fatal(err)
					}
				}
				if held {
					c.Release()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*receivers), "ns/packet")
		})
	}
}
