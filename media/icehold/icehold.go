// Package icehold keeps the connectivity checks a client sends before
// sorad knows its ICE credentials, and hands them to the ICE agent once it
// does.
//
// sorad offers and the client answers. A client starts its checks the
// moment it has applied the offer and written its answer, so its first
// checks often reach sorad's UDP port before the answer has crossed the
// WebSocket. pion's ICE agent cannot verify their username yet and drops
// them; the client repeats an unanswered check only after its retransmit
// interval (200 ms for pion, similar for browsers), which dominated the
// join time. Conn wraps the media UDP socket under pion's UDP mux: a
// binding request for a local ufrag whose answer is awaited, and whose
// integrity checks out against that ufrag's password, is copied aside
// instead of being read; Release puts those packets back at the head of
// the read stream once the agent has the answer.
//
// Holding is bounded per ufrag and in total, only ever for a ufrag sorad
// registered, and only for packets authenticated with its password, so a
// stranger can neither fill the hold nor make sorad answer for it.
package icehold

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// Limits bound what a Conn holds.
type Limits struct {
	PerUfrag int // packets held for one awaited ufrag; 0 means 16
	Total    int // packets held for all of them together; 0 means 4096
}

// Counters report what a Conn did, for statistics.
type Counters struct {
	Held     uint64 // early checks held
	Replayed uint64 // held checks handed to the ICE agent
	Dropped  uint64 // early checks dropped: over a limit, or their connection ended first
}

// Conn is the media UDP socket with early checks held. It implements
// net.PacketConn and the allocation-free ReadFromAddrPort/WriteToAddrPort
// pair pion's UDP mux prefers.
type Conn struct {
	udp    *net.UDPConn
	limits Limits

	awaited atomic.Int32 // how many ufrags are awaited: the read path's fast check
	queued  atomic.Bool  // replay is not empty

	mu      sync.Mutex
	waits   map[string]*Wait // by local ufrag
	held    int              // packets held over all waits
	replay  []packet
	counter Counters
}

type packet struct {
	data []byte
	from netip.AddrPort
}

// Wrap returns udp with early checks held within limits.
func Wrap(udp *net.UDPConn, limits Limits) *Conn {
	if limits.PerUfrag <= 0 {
		limits.PerUfrag = 16
	}
	if limits.Total <= 0 {
		limits.Total = 4096
	}
	return &Conn{udp: udp, limits: limits, waits: map[string]*Wait{}}
}

// Wait is one awaited set of credentials.
type Wait struct {
	c     *Conn
	ufrag string
	pwd   string
	held  []packet
	done  bool
}

// Await starts holding the checks addressed to the local ufrag (those
// whose USERNAME starts with "ufrag:") that carry a valid integrity for
// pwd. Call Release once the ICE agent has the remote credentials, or
// Cancel when the connection ends first; either ends the wait.
func (c *Conn) Await(ufrag, pwd string) *Wait {
	w := &Wait{c: c, ufrag: ufrag, pwd: pwd}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.waits[ufrag]; ok {
		c.endLocked(old, false)
	}
	c.waits[ufrag] = w
	c.awaited.Add(1)
	return w
}

// Release hands the held checks to the reader, in their order of arrival,
// and stops holding.
func (w *Wait) Release() { w.end(true) }

// Cancel drops the held checks and stops holding.
func (w *Wait) Cancel() { w.end(false) }

func (w *Wait) end(replay bool) {
	c := w.c
	c.mu.Lock()
	poke := c.endLocked(w, replay)
	c.mu.Unlock()
	if poke {
		// Wake the reader, which may be blocked on the socket: its read
		// times out at once and it serves the replay queue first.
		_ = c.udp.SetReadDeadline(time.Unix(1, 0))
	}
}

// endLocked ends w and reports whether packets were queued for replay.
func (c *Conn) endLocked(w *Wait, replay bool) bool {
	if w.done {
		return false
	}
	w.done = true
	if c.waits[w.ufrag] == w {
		delete(c.waits, w.ufrag)
	}
	c.awaited.Add(-1)
	c.held -= len(w.held)
	if !replay || len(w.held) == 0 {
		c.counter.Dropped += uint64(len(w.held))
		w.held = nil
		return false
	}
	c.replay = append(c.replay, w.held...)
	c.counter.Replayed += uint64(len(w.held))
	w.held = nil
	c.queued.Store(true)
	return true
}

// Counters returns the counts so far.
func (c *Conn) Counters() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counter
}

// ReadFromAddrPort reads the next packet, serving replayed checks first and
// keeping early checks aside.
func (c *Conn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		if c.queued.Load() {
			if p, ok := c.nextReplay(); ok {
				return copy(b, p.data), p.from, nil
			}
		}
		n, from, err := c.udp.ReadFromUDPAddrPort(b)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Only Release sets a read deadline: serve the replay.
				_ = c.udp.SetReadDeadline(time.Time{})
				continue
			}
			return n, from, err
		}
		if c.awaited.Load() > 0 && c.hold(b[:n], from) {
			continue
		}
		return n, from, nil
	}
}

func (c *Conn) nextReplay() (packet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.replay) == 0 {
		c.queued.Store(false)
		return packet{}, false
	}
	p := c.replay[0]
	c.replay[0] = packet{}
	c.replay = c.replay[1:]
	if len(c.replay) == 0 {
		c.replay = nil
		c.queued.Store(false)
	}
	return p, true
}

// hold keeps b aside when it is an authenticated binding request for an
// awaited ufrag, and reports whether it did (or dropped it over a limit).
func (c *Conn) hold(b []byte, from netip.AddrPort) bool {
	ufrag, ok := bindingRequestUfrag(b)
	if !ok {
		return false
	}
	c.mu.Lock()
	w, ok := c.waits[ufrag]
	var pwd string
	if ok {
		pwd = w.pwd
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	msg := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := msg.Decode(); err != nil {
		return false
	}
	if err := stun.NewShortTermIntegrity(pwd).Check(msg); err != nil {
		return false // not ours to keep; the agent drops it as before
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.done {
		// Released meanwhile: the agent has the answer now.
		return false
	}
	if len(w.held) >= c.limits.PerUfrag || c.held >= c.limits.Total {
		c.counter.Dropped++
		return true
	}
	w.held = append(w.held, packet{data: msg.Raw, from: from})
	c.held++
	c.counter.Held++
	return true
}

// bindingRequestUfrag returns the local part of a STUN binding request's
// USERNAME ("local:remote"), without allocating; ok is false for anything
// else (media, DTLS, responses).
func bindingRequestUfrag(b []byte) (string, bool) {
	const header = 20
	if len(b) < header || binary.BigEndian.Uint16(b[0:2]) != 0x0001 || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return "", false
	}
	end := header + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return "", false
	}
	for i := header; i+4 <= end; {
		typ, size := binary.BigEndian.Uint16(b[i:i+2]), int(binary.BigEndian.Uint16(b[i+2:i+4]))
		i += 4
		if i+size > end {
			return "", false
		}
		if stun.AttrType(typ) == stun.AttrUsername {
			v := b[i : i+size]
			for j, ch := range v {
				if ch == ':' {
					return string(v[:j]), true
				}
			}
			return "", false
		}
		i += (size + 3) &^ 3
	}
	return "", false
}

// ReadFrom is ReadFromAddrPort for net.PacketConn.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToAddrPort writes to the socket.
func (c *Conn) WriteToAddrPort(b []byte, to netip.AddrPort) (int, error) {
	return c.udp.WriteToUDPAddrPort(b, to)
}

// WriteTo writes to the socket.
func (c *Conn) WriteTo(b []byte, to net.Addr) (int, error) { return c.udp.WriteTo(b, to) }

// Close closes the socket.
func (c *Conn) Close() error { return c.udp.Close() }

// LocalAddr is the socket's address.
func (c *Conn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline sets the write deadline only: the read deadline belongs to
// Release.
func (c *Conn) SetDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// SetReadDeadline is not supported: Release uses the read deadline to wake
// the reader.
func (c *Conn) SetReadDeadline(time.Time) error { return errReadDeadline }

// SetWriteDeadline sets the socket's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

var errReadDeadline = errors.New("icehold: the read deadline is reserved")

// magicCookie is the fixed value of a STUN header's bytes 4 to 8 (RFC 5389).
const magicCookie = 0x2112A442
