package media

import (
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
)

// session is one channel's SFU on this node: its connections, the tracks
// they publish, and the channel model that says who receives what.
//
// Lock order: Media.mu, then session.mu, then a connection's locks, then a
// down track's.
type session struct {
	channelID string
	id        string
	created   time.Time
	spotlight bool
	// externalSignalingURL is this node's, for the session webhooks.
	externalSignalingURL string

	mu      sync.Mutex
	model   *channel.Channel
	members map[string]*connection // by connection ID, admitted (offer sent or about to be)
	tracks  map[string]*published  // by track ID
	record  sessionRecord          // for the session webhooks

	fenced atomic.Bool // ended because the cluster moved the channel
	// quorumLost: ended because this node's cluster lease ran out.
	quorumLost atomic.Bool
	recorded   chan struct{} // closed once session.created is queued, or never will be
	// unannounced: the channel moved before the session was recorded, so
	// session.created never went (nor will its end).
	unannounced atomic.Bool
}

// newSession starts the session of the channel req connects to.
func (m *Media) newSession(req signaling.ConnectRequest) *session {
	number := m.cfg.SpotlightNumber
	if req.SpotlightNumber > 0 {
		number = req.SpotlightNumber
	}
	return &session{
		channelID: req.ChannelID,
		id:        newID(),
		created:   time.Now(),
		spotlight: req.Spotlight,
		// The session webhooks name the node the session lives on.
		externalSignalingURL: m.cfg.ExternalSignalingURL,
		model: channel.New(channel.Config{
			Spotlight:       req.Spotlight,
			SpotlightNumber: number,
			FocusRID:        m.cfg.SpotlightFocusRID,
			UnfocusRID:      m.cfg.SpotlightUnfocusRID,
			FocusHold:       m.cfg.SpotlightFocusHold,
		}),
		members:  map[string]*connection{},
		tracks:   map[string]*published{},
		recorded: make(chan struct{}),
	}
}

// member is c as the channel model sees it.
func member(c *connection) channel.Member {
	return channel.Member{
		ID:         c.id,
		BundleID:   c.bundle,
		Sends:      c.req.Role.Sends(),
		Receives:   c.req.Role.Receives(),
		RID:        c.req.SimulcastRID,
		FocusRID:   c.req.SpotlightFocusRID,
		UnfocusRID: c.req.SpotlightUnfocusRID,
	}
}

// join adds c and returns the tracks c must receive now. Any track published
// later reaches c through publish, which sees c as a member: join and
// publish run under one lock, so every pair is handled exactly once. A
// connect that names a spotlight_number sets the channel's.
func (s *session) join(c *connection) []*published {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.members[c.id] = c
	s.recordJoinLocked(c)
	events := s.model.Join(member(c), now)
	if n := c.req.SpotlightNumber; n > 0 && s.spotlight && n != s.model.SpotlightNumber() {
		more, _ := s.model.SetSpotlightNumber(n, now)
		events = append(events, more...)
	}
	if len(events) > 0 {
		s.changedLocked(events)
	}
	var out []*published
	for _, p := range s.tracks {
		if s.model.Receives(c.id, p.owner.id) {
			out = append(out, p)
		}
	}
	return out
}

// leave removes c and returns whether the session is now empty and the
// tracks c published, which its receivers must drop.
func (s *session) leave(c *connection) (empty bool, gone []*published) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, c.id)
	s.recordLeaveLocked(c)
	for id, p := range s.tracks {
		if p.owner == c {
			gone = append(gone, p)
			delete(s.tracks, id)
		}
	}
	if events := s.model.Leave(c.id, time.Now()); len(events) > 0 {
		s.changedLocked(events)
	}
	return len(s.members) == 0, gone
}

// publish adds a track and returns the members that must receive it.
func (s *session) publish(p *published) []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracks[p.track.ID()] = p
	return s.receiversLocked(p)
}

// unpublish removes a track (it ended) and returns the members that had it.
func (s *session) unpublish(p *published) []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracks[p.track.ID()] != p {
		return nil
	}
	delete(s.tracks, p.track.ID())
	return s.receiversLocked(p)
}

// receiversLocked returns the members that receive p. s.mu is held.
func (s *session) receiversLocked(p *published) []*connection {
	var out []*connection
	for _, c := range s.members {
		if s.model.Receives(c.id, p.owner.id) {
			out = append(out, c)
		}
	}
	return out
}

// route sets one down track of c as the model routes it now.
func (s *session) route(c *connection, d *downTrack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.model.Route(c.id, d.pub.owner.id)
	d.apply(rt, ok)
}

// change runs a change of the model, then routes every down track again and
// announces the spotlight events it made.
func (s *session) change(f func(m *channel.Channel) ([]channel.Event, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	events, err := f(s.model)
	if err != nil {
		return err
	}
	s.changedLocked(events)
	return nil
}

// changedLocked routes every down track again after a change of the model
// and sends the spotlight notifies of events. s.mu is held.
func (s *session) changedLocked(events []channel.Event) {
	for _, c := range s.members {
		for _, d := range c.downTracks() {
			rt, ok := s.model.Route(c.id, d.pub.owner.id)
			d.apply(rt, ok)
		}
	}
	if len(events) > 0 {
		s.announceSpotlightLocked(events)
	}
}

// spoke records that a sender started speaking (from its audio levels);
// routes change only when the focus moves.
func (s *session) spoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if events := s.model.Spoke(id, time.Now()); len(events) > 0 {
		s.changedLocked(events)
	}
}

// snapshot returns the members in the order they joined.
func (s *session) snapshot() []*connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *session) snapshotLocked() []*connection {
	out := slices.Collect(maps.Values(s.members))
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
	return establishedOf(s.snapshot())
}

func establishedOf(cs []*connection) []*connection {
	out := cs[:0:0]
	for _, c := range cs {
		if c.isEstablished() {
			out = append(out, c)
		}
	}
	return out
}
