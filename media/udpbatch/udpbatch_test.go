package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// pair is a batching sender and a receiver on loopback.
func pair(t *testing.T, network, address string) (*Conn, *net.UDPConn) {
	t.Helper()
	tx, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(address)})
	if err != nil {
		t.Skipf("no %s socket on %s here: %v", network, address, err)
	}
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Close(); _ = rx.Close() })
	return Wrap(tx), rx
}

// receive reads n packets from rx (a deadline keeps a lost one from
// hanging the test) and returns them in arrival order.
func receive(t *testing.T, rx *net.UDPConn, n int) [][]byte {
	t.Helper()
	_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out [][]byte
	buf := make([]byte, 4096)
	for range n {
		m, _, err := rx.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d of %d packets: %v", len(out), n, err)
		}
		out = append(out, bytes.Clone(buf[:m]))
	}
	return out
}

func packet(i int) []byte { return []byte(fmt.Sprintf("packet %03d", i)) }

func TestHeldWritesGoOutTogetherInOrder(t *testing.T) {
	tests := []struct {
		name    string
		writes  int
		pending int // in the batch before Release
	}{
		{"one", 1, 1},
		{"a few", 5, 5},
		{"a full batch goes out at once", MaxBatch, 0},
		{"more than a batch", MaxBatch*2 + 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rx := pair(t, "udp4", "127.0.0.1")
			to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
			c.Hold()
			for i := range tt.writes {
				if n, err := c.WriteToUDPAddrPort(packet(i), to); err != nil || n != len(packet(i)) {
					t.Fatalf("write %d: %d, %v", i, n, err)
				}
			}
			if c.n != tt.pending {
				t.Fatalf("%d packets in the batch before Release, want %d", c.n, tt.pending)
			}
			c.Release()
			if c.n != 0 {
				t.Fatalf("%d packets left in the batch after Release", c.n)
			}
			for i, got := range receive(t, rx, tt.writes) {
				if !bytes.Equal(got, packet(i)) {
					t.Fatalf("packet %d is %q, want %q", i, got, packet(i))
				}
			}
		})
	}
}

func TestUnheldWritesGoOutAtOnce(t *testing.T) {
	c, rx := pair(t, "udp4", "127.0.0.1")
	if _, err := c.WriteTo(packet(1), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if c.n != 0 {
		t.Fatalf("an unheld write joined the batch")
	}
	if got := receive(t, rx, 1); !bytes.Equal(got[0], packet(1)) {
		t.Fatalf("got %q", got[0])
	}
}

func TestARefusedPacketDoesNotStopTheBatch(t *testing.T) {
	c, rx := pair(t, "udp4", "127.0.0.1")
	c.Hold()
	_, _ = c.WriteToUDPAddrPort(packet(0), rx.LocalAddr().(*net.UDPAddr).AddrPort())
	// An IPv6 destination from an IPv4 socket: the kernel refuses it.
	_, _ = c.WriteToUDPAddrPort(packet(1), netip.MustParseAddrPort("[::1]:9"))
	_, _ = c.WriteTo(packet(2), rx.LocalAddr())
	c.Release()
	got := receive(t, rx, 2)
	if !bytes.Equal(got[0], packet(0)) || !bytes.Equal(got[1], packet(2)) {
		t.Fatalf("got %q, want packets 0 and 2", got)
	}
	if c.Failed() != 1 {
		t.Fatalf("Failed() = %d, want 1", c.Failed())
	}
}

func TestDualStackSocketSendsToIPv4(t *testing.T) {
	c, rx := pair(t, "udp", "::")
	to := netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), rx.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	c.Hold()
	_, _ = c.WriteToUDPAddrPort(packet(7), to)
	c.Release()
	if got := receive(t, rx, 1); !bytes.Equal(got[0], packet(7)) {
		t.Fatalf("got %q", got[0])
	}
}

func TestConcurrentHoldersLoseNothing(t *testing.T) {
	c, rx := pair(t, "udp4", "127.0.0.1")
	if err := rx.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const writers, rounds, perRound = 4, 20, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				held := r%2 == 0
				if held {
					c.Hold()
				}
				for i := range perRound {
					_, _ = c.WriteToUDPAddrPort(packet(w*1000+r*perRound+i), to)
				}
				if held {
					c.Release()
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, p := range receive(t, rx, writers*rounds*perRound) {
		seen[string(p)] = true
	}
	if len(seen) != writers*rounds*perRound {
		t.Fatalf("%d distinct packets arrived, want %d", len(seen), writers*rounds*perRound)
	}
	if c.n != 0 || c.holders.Load() != 0 {
		t.Fatalf("batch %d, holders %d after every Release", c.n, c.holders.Load())
	}
}
