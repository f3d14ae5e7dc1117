package forward

import "sync"

// history keeps the last packets of one Up, as they arrived, to answer the
// NACKs of every receiver of it: one copy per published stream, however
// many receivers it has. Receivers' sequence numbers map to the Up's
// through each Down's offset (Down.Resend).
type history struct {
	mu      sync.Mutex
	mask    uint16
	entries []historyEntry // indexed by sequence number & mask
}

type historyEntry struct {
	seq   uint16
	valid bool
	data  []byte // the whole RTP packet; its storage is reused
}

// newHistory returns a history of size packets, a power of two from 1 to
// 32768 (sizes between are rounded up).
func newHistory(size uint16) *history {
	n := uint16(1)
	for n < size && n < 1<<15 {
		n <<= 1
	}
	return &history{mask: n - 1, entries: make([]historyEntry, n)}
}

// put keeps a copy of packet, which has sequence number seq, in place of
// the packet size sequence numbers older.
func (h *history) put(seq uint16, packet []byte) {
	h.mu.Lock()
	e := &h.entries[seq&h.mask]
	e.seq, e.valid = seq, true
	e.data = append(e.data[:0], packet...)
	h.mu.Unlock()
}

// get appends the packet with sequence number seq to dst, if it is still
// kept.
func (h *history) get(seq uint16, dst []byte) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := &h.entries[seq&h.mask]
	if !e.valid || e.seq != seq {
		return dst, false
	}
	return append(dst, e.data...), true
}
