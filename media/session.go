package media

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// session is one channel's SFU on this node: its connections and the tracks
// they publish. Every receiving member gets every published track except
// its own and those of members sharing its bundle_id.
//
// Lock order: Media.mu, then session.mu, then a connection's locks.
type session struct {
	channelID string
	id        string
	created   time.Time

	mu      sync.Mutex
	members map[string]*connection     // by connection ID, admitted (offer sent or about to be)
	tracks  map[string]*publishedTrack // by track ID
}

func newSession(channelID string) *session {
	return &session{
		channelID: channelID,
		id:        newID(),
		created:   time.Now(),
		members:   map[string]*connection{},
		tracks:    map[string]*publishedTrack{},
	}
}

// join adds c and returns the tracks c must receive now. Any track published
// later reaches c through publish, which sees c as a member: join and
// publish run under one lock, so every pair is handled exactly once.
func (s *session) join(c *connection) []*publishedTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[c.id] = c
	var out []*publishedTrack
	for _, t := range s.tracks {
		if c.shouldReceive(t) {
			out = append(out, t)
		}
	}
	return out
}

// leave removes c and returns whether the session is now empty and the
// tracks c published, which its receivers must drop.
func (s *session) leave(c *connection) (empty bool, gone []*publishedTrack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, c.id)
	for id, t := range s.tracks {
		if t.owner == c {
			gone = append(gone, t)
			delete(s.tracks, id)
		}
	}
	return len(s.members) == 0, gone
}

// publish adds a track and returns the members that must receive it.
func (s *session) publish(t *publishedTrack) []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracks[t.id] = t
	return s.receiversLocked(t)
}

// unpublish removes a track (it ended) and returns the members that had it.
func (s *session) unpublish(t *publishedTrack) []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tracks[t.id]; !ok {
		return nil
	}
	delete(s.tracks, t.id)
	return s.receiversLocked(t)
}

// receiversLocked returns the members that receive t. s.mu is held.
func (s *session) receiversLocked(t *publishedTrack) []*connection {
	var out []*connection
	for _, c := range s.members {
		if c.shouldReceive(t) {
			out = append(out, c)
		}
	}
	return out
}

// snapshot returns the members in the order they joined.
func (s *session) snapshot() []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*connection, 0, len(s.members))
	for _, c := range s.members {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].created.Equal(out[j].created) {
			return out[i].created.Before(out[j].created)
		}
		return out[i].id < out[j].id
	})
	return out
}

// established returns the members whose PeerConnection is connected.
func (s *session) established() []*connection {
	all := s.snapshot()
	out := all[:0]
	for _, c := range all {
		if c.isEstablished() {
			out = append(out, c)
		}
	}
	return out
}

// publishedTrack is one track a publisher sends, forwarded to receivers
// through one shared local track: pion writes each packet to every
// receiver's sender, rewriting SSRC and payload type per receiver.
type publishedTrack struct {
	id     string
	kind   webrtc.RTPCodecType
	owner  *connection
	remote *webrtc.TrackRemote
	local  *webrtc.TrackLocalStaticRTP
	codec  webrtc.RTPCodecParameters

	packets atomic.Int64
	bytes   atomic.Int64

	lastKeyframeRequest atomic.Int64 // Unix nanoseconds
}

// requestKeyframe asks the publisher for a key frame (PLI), at most once per
// throttle interval.
func (t *publishedTrack) requestKeyframe(throttle time.Duration) {
	if t.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	now := time.Now().UnixNano()
	last := t.lastKeyframeRequest.Load()
	if now-last < int64(throttle) || !t.lastKeyframeRequest.CompareAndSwap(last, now) {
		return
	}
	pli := &rtcp.PictureLossIndication{MediaSSRC: uint32(t.remote.SSRC())}
	if err := t.owner.pc.WriteRTCP([]rtcp.Packet{pli}); err == nil {
		t.owner.m.stats.plisSent.Add(1)
	}
}
