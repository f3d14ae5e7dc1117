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
// A second wait follows. sorad is ICE-lite, so the client is the
// controlling agent and must nominate a pair. libwebrtc nominates at once
// when its peer is lite; pion nominates a pair whose check succeeded only on
// its next check tick (200 ms later) unless a check from the peer arrives on
// that pair first, which a lite agent never sends. So each time sorad has
// answered a connection's first check from an address, Conn sends the
// client one binding request of its own on that path (with ICE-CONTROLLED,
// authenticated with the client's password from the answer), until the
// connection is established: a pion client nominates its best pair on
// receiving it there, and any client just answers it. The answer is recognised by
// its transaction ID and not passed up (the lite agent has no use for it).
//
// Holding is bounded per ufrag and in total, only ever for a ufrag sorad
// registered, and only for packets authenticated with its password, so a
// stranger can neither fill the hold nor make sorad answer for it; a nudge
// goes only to an address that has just sent an authenticated check, once
// per address and for at most PerUfrag addresses per connection.
package icehold

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
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
	Nudged   uint64 // binding requests sent to clients after answering the first check from an address
}

// Conn is the media UDP socket with early checks held. It implements
// net.PacketConn and the allocation-free ReadFromAddrPort/WriteToAddrPort
// pair pion's UDP mux prefers.
type Conn struct {
	udp    Socket
	limits Limits

	awaited atomic.Int32 // how many waits are registered: the read path's fast check
	armed   atomic.Int32 // how many waits have a nudge ready: the write path's fast check
	queued  atomic.Bool  // replay is not empty

	mu      sync.Mutex
	waits   map[string]*Wait         // by local ufrag
	nudgeTo map[netip.AddrPort]*Wait // where armed waits' clients sent checks from
	held    int                      // packets held over all waits
	replay  []packet
	counter Counters
}

type packet struct {
	data []byte
	from netip.AddrPort
}

// Wrap returns udp with early checks held within limits.
func Wrap(udp Socket, limits Limits) *Conn {
	if limits.PerUfrag <= 0 {
		limits.PerUfrag = 16
	}
	if limits.Total <= 0 {
		limits.Total = 4096
	}
	return &Conn{udp: udp, limits: limits, waits: map[string]*Wait{}, nudgeTo: map[netip.AddrPort]*Wait{}}
}

// Socket is the UDP socket a Conn wraps: a *net.UDPConn, or a wrapper of
// one that changes how packets go out (media/udpbatch).
type Socket interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	LocalAddr() net.Addr
	Close() error
}

// Wait follows one connection's ICE start: its early checks, then the
// answers to its checks until Cancel.
type Wait struct {
	c        *Conn
	ufrag    string
	pwd      string
	held     []packet
	released bool
	// After the release: the client's credentials, and where its checks
	// came from (each nudged once).
	remoteUfrag, remotePwd string
	from                   []netip.AddrPort
	done                   bool
}

// Await starts holding the checks addressed to the local ufrag (those
// whose USERNAME starts with "ufrag:") that carry a valid integrity for
// pwd. Call Release once the ICE agent has the remote credentials, and
// Cancel once ICE is connected or the connection ends.
func (c *Conn) Await(ufrag, pwd string) *Wait {
	w := &Wait{c: c, ufrag: ufrag, pwd: pwd}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.waits[ufrag]; ok {
		c.endLocked(old)
	}
	c.waits[ufrag] = w
	c.awaited.Add(1)
	return w
}

// Release hands the held checks to the reader, in their order of arrival,
// and stops holding. With the client's ICE credentials (from its answer)
// it arms the nudges: the first binding success sorad writes to each
// address this client's checks come from is followed by one binding request
// of sorad's own, until Cancel. Without them the wait ends here.
func (w *Wait) Release(remoteUfrag, remotePwd string) {
	c := w.c
	c.mu.Lock()
	poke := false
	if !w.done && !w.released {
		w.released = true
		c.held -= len(w.held)
		if len(w.held) > 0 {
			c.replay = append(c.replay, w.held...)
			c.counter.Replayed += uint64(len(w.held))
			c.queued.Store(true)
			poke = true
		}
		held := w.held
		w.held = nil
		if remoteUfrag != "" && remotePwd != "" {
			w.remoteUfrag, w.remotePwd = remoteUfrag, remotePwd
			c.armed.Add(1)
			// The replayed checks are answered too: nudge their senders.
			for _, p := range held {
				c.noteSenderLocked(w, p.from)
			}
		} else {
			c.endLocked(w)
		}
	}
	c.mu.Unlock()
	if poke {
		// Wake the reader, which may be blocked on the socket: its read
		// times out at once and it serves the replay queue first.
		_ = c.udp.SetReadDeadline(time.Unix(1, 0))
	}
}

// Cancel drops what is held and ends the wait; call it when the
// connection is established or ends.
func (w *Wait) Cancel() {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(w)
}

// endLocked ends w, dropping what it holds.
func (c *Conn) endLocked(w *Wait) {
	if w.done {
		return
	}
	w.done = true
	if c.waits[w.ufrag] == w {
		delete(c.waits, w.ufrag)
	}
	c.awaited.Add(-1)
	if w.remotePwd != "" {
		c.armed.Add(-1)
	}
	for _, a := range w.from {
		if c.nudgeTo[a] == w {
			delete(c.nudgeTo, a)
		}
	}
	w.from = nil
	c.held -= len(w.held)
	c.counter.Dropped += uint64(len(w.held))
	w.held = nil
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
		if isNudgeAnswer(b[:n]) {
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
		return false
	}
	if w.released {
		// The agent answers it; note where to send the nudge after.
		c.noteSenderLocked(w, from)
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

// noteSenderLocked makes from, where one of w's client's checks came from,
// get a nudge after sorad's answer to it, unless it had one.
func (c *Conn) noteSenderLocked(w *Wait, from netip.AddrPort) {
	from = canonical(from)
	if w.remotePwd != "" && len(w.from) < c.limits.PerUfrag && c.nudgeTo[from] == nil && !slices.Contains(w.from, from) {
		w.from = append(w.from, from)
		c.nudgeTo[from] = w
	}
}

// canonical is a in the one form the nudge bookkeeping compares: an IPv4
// address never in its IPv4-in-IPv6 form (a net.UDPAddr may carry either).
func canonical(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// bindingRequestUfrag returns the local part of a STUN binding request's
// USERNAME ("local:remote") without decoding the message; ok is false for
// anything else (media, DTLS and RTCP stop at the first two bytes).
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
	n, err := c.udp.WriteToUDPAddrPort(b, to)
	if err == nil && c.armed.Load() > 0 && isBindingSuccess(b) {
		c.nudge(to)
	}
	return n, err
}

// WriteTo writes to the socket.
func (c *Conn) WriteTo(b []byte, to net.Addr) (int, error) {
	n, err := c.udp.WriteTo(b, to)
	if err == nil && c.armed.Load() > 0 && isBindingSuccess(b) {
		if a, ok := to.(*net.UDPAddr); ok {
			c.nudge(a.AddrPort())
		}
	}
	return n, err
}

// nudge sends the binding request of the wait whose client's check came
// from to, once sorad has answered that check.
func (c *Conn) nudge(to netip.AddrPort) {
	to = canonical(to)
	c.mu.Lock()
	w, ok := c.nudgeTo[to]
	if !ok {
		c.mu.Unlock()
		return
	}
	ufrag, remoteUfrag, remotePwd := w.ufrag, w.remoteUfrag, w.remotePwd
	delete(c.nudgeTo, to) // once per address: w.from keeps it from coming back
	c.counter.Nudged++
	c.mu.Unlock()
	var id [stun.TransactionIDSize]byte
	copy(id[:], nudgeMark)
	if _, err := rand.Read(id[len(nudgeMark):]); err != nil {
		return
	}
	var tieBreaker [8]byte
	_, _ = rand.Read(tieBreaker[:])
	m, err := stun.Build(stun.BindingRequest, stun.NewTransactionIDSetter(id),
		stun.NewUsername(remoteUfrag+":"+ufrag),
		ice.AttrControlled(binary.BigEndian.Uint64(tieBreaker[:])),
		ice.PriorityAttr(nudgePriority),
		stun.NewShortTermIntegrity(remotePwd),
		stun.Fingerprint)
	if err != nil {
		return
	}
	_, _ = c.udp.WriteToUDPAddrPort(m.Raw, to)
}

// nudgeMark starts the transaction ID of every nudge, so that the client's
// answer is known without keeping state.
const nudgeMark = "sorad"

// nudgePriority is the PRIORITY of a nudge: that of a peer-reflexive
// candidate of the highest preference (RFC 8445 5.1.2.1), which a client
// that has not seen sorad's address otherwise learns it with.
const nudgePriority = 110<<24 | 65535<<8 | 255

// isBindingSuccess reports whether b is a STUN binding success response.
func isBindingSuccess(b []byte) bool {
	return len(b) >= 20 && binary.BigEndian.Uint16(b[0:2]) == 0x0101 && binary.BigEndian.Uint32(b[4:8]) == magicCookie
}

// isNudgeAnswer reports whether b answers a nudge.
func isNudgeAnswer(b []byte) bool {
	return isBindingSuccess(b) && string(b[8:8+len(nudgeMark)]) == nudgeMark
}

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
