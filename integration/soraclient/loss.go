package soraclient

// seqCounter follows one remote track's RTP sequence numbers to tell how
// many packets were sent from its first received packet to its highest
// (RFC 3550 appendix A.1: sequence numbers extended by their wraps).
type seqCounter struct {
	started bool
	base    int64 // extended number of the first packet received
	highest int64 // extended number of the highest packet received
}

// add takes a received packet's sequence number. A number more than half
// the space behind the highest is taken as a wrap forward; anything else
// behind it is a late or repeated packet.
func (s *seqCounter) add(seq uint16) {
	if !s.started {
		s.started = true
		s.base, s.highest = int64(seq), int64(seq)
		return
	}
	cycle := s.highest &^ 0xffff
	ext := cycle | int64(seq)
	switch d := ext - s.highest; {
	case d < -0x8000:
		ext += 0x10000 // wrapped forward
	case d > 0x8000:
		ext -= 0x10000 // a late packet from before the last wrap
	}
	if ext > s.highest {
		s.highest = ext
	}
	if ext < s.base {
		s.base = ext // a late packet from before the first one received
	}
}

// expected is how many packets the numbers received span.
func (s *seqCounter) expected() int64 {
	if !s.started {
		return 0
	}
	return s.highest - s.base + 1
}

// SentBytes returns the media payload the client has handed its local
// tracks so far (Opus frames, video frames, simulcast layers' RTP
// payloads): what it sends, without RTP and SRTP overhead.
func (c *Client) SentBytes() int64 { return c.sentBytes.Load() }
