// Package udpbatch sends many UDP packets with one system call. A Conn
// wraps the media socket: while a goroutine holds it (Hold, Release), what
// is written to it is copied into a batch that goes out with one sendmmsg
// when it is full and when the holder releases it; otherwise every write
// is one sendto, as before.
//
// The forwarding path holds the socket while it hands one incoming packet
// to every receiver: N packets to N addresses, which cost N system calls
// and now cost N/64. Packets of other goroutines written meanwhile join
// the batch, so nothing waits longer than one batch, and the batch is
// always empty while nobody holds the socket, which keeps the packets to
// one address in the order they were written.
package udpbatch

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

const (
	// MaxBatch is the most packets one system call sends.
	MaxBatch = 64
	// slotSize is the largest packet a batch takes; larger ones (none on
	// a path of MTU 1500) are written at once.
	slotSize = 2048
)

// Conn is a UDP socket that batches writes while held. Reads and
// everything else go to the socket as they are.
type Conn struct {
	*net.UDPConn
	batch *ipv4.PacketConn // sendmmsg; it marshals IPv6 destinations too

	holders atomic.Int32 // changed under mu; read without it by the fast path
	mu      sync.Mutex
	n       int                         // packets in the batch
	msgs    [MaxBatch]ipv4.Message      // msgs[:n] are the batch
	bufs    [MaxBatch][]byte            // each message's one buffer
	addrs   [MaxBatch]net.UDPAddr       // each message's destination,
	ips     [MaxBatch][net.IPv6len]byte // whose IP is kept here
	failed  atomic.Int64                // packets the kernel refused
}

// Wrap returns udp batching writes while held.
func Wrap(udp *net.UDPConn) *Conn {
	c := &Conn{UDPConn: udp, batch: ipv4.NewPacketConn(udp)}
	for i := range c.msgs {
		c.bufs[i] = make([]byte, 0, slotSize)
		c.msgs[i].Buffers = [][]byte{nil}
		c.msgs[i].Addr = &c.addrs[i]
	}
	return c
}

// Hold makes writes join the batch until the matching Release.
func (c *Conn) Hold() {
	c.mu.Lock()
	c.holders.Add(1)
	c.mu.Unlock()
}

// Release sends the batch and ends one Hold.
func (c *Conn) Release() {
	c.mu.Lock()
	c.flush()
	c.holders.Add(-1)
	c.mu.Unlock()
}

// Failed is how many batched packets the kernel refused to send. (A write
// that is not batched reports its error to its caller.)
func (c *Conn) Failed() int64 { return c.failed.Load() }

// WriteToUDPAddrPort writes b to addr, or adds it to the batch while the
// socket is held.
func (c *Conn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.holders.Load() == 0 {
		return c.UDPConn.WriteToUDPAddrPort(b, addr)
	}
	c.mu.Lock()
	if c.holders.Load() == 0 || len(b) > slotSize {
		c.flush()
		c.mu.Unlock()
		return c.UDPConn.WriteToUDPAddrPort(b, addr)
	}
	i := c.n
	c.bufs[i] = append(c.bufs[i][:0], b...)
	c.msgs[i].Buffers[0] = c.bufs[i]
	ip := addr.Addr().Unmap()
	c.ips[i] = ip.As16()
	if ip.Is4() {
		c.addrs[i].IP = c.ips[i][12:16]
	} else {
		c.addrs[i].IP = c.ips[i][:]
	}
	c.addrs[i].Port, c.addrs[i].Zone = int(addr.Port()), ip.Zone()
	c.n++
	if c.n == MaxBatch {
		c.flush()
	}
	c.mu.Unlock()
	return len(b), nil
}

// WriteTo writes b to addr, through the batch while the socket is held.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if a, ok := addr.(*net.UDPAddr); ok && c.holders.Load() > 0 {
		return c.WriteToUDPAddrPort(b, a.AddrPort())
	}
	return c.UDPConn.WriteTo(b, addr)
}

// flush sends the batch. c.mu is held.
func (c *Conn) flush() {
	ms := c.msgs[:c.n]
	for len(ms) > 0 {
		sent, err := c.batch.WriteBatch(ms, 0)
		if err != nil || sent <= 0 {
			// The message after those sent failed (a destination the
			// kernel will not route, say): it is lost, as a single write's
			// would be; the rest go on.
			c.failed.Add(1)
			sent = max(sent, 0) + 1
		}
		ms = ms[min(sent, len(ms)):]
	}
	for i := range c.n {
		c.msgs[i].Buffers[0] = nil
	}
	c.n = 0
}
