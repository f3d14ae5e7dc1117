// Package channel is the model of one channel's SFU session: its members,
// who receives whom (roles and the bundle rule), which simulcast layer each
// receiver wants from each sender, paused streams, and the spotlight focus.
//
// It holds no pion types, does no I/O and reads no clock: time comes in the
// calls, and every decision is a pure function of the calls made so far, so
// its rules have plain unit tests. A Channel is not safe for concurrent
// use; its owner (the media session) serialises calls.
package channel

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Member is a connection as the model sees it.
type Member struct {
	ID       string
	BundleID string // members sharing it do not receive each other
	Sends    bool
	Receives bool
	// RID is the layer this member receives from simulcast senders unless
	// it asks otherwise (connect's simulcast_request_rid); "" means r0.
	RID RID
	// FocusRID and UnfocusRID are the layers this member receives from
	// focused and unfocused senders of a spotlight channel; "" means the
	// channel's default.
	FocusRID, UnfocusRID RID
}

// Config is what a channel is set up with.
type Config struct {
	Spotlight bool
	// SpotlightNumber is how many senders are focused at once (1..8).
	SpotlightNumber int
	// FocusRID and UnfocusRID are the layers of focused and unfocused
	// senders for members that ask for none.
	FocusRID, UnfocusRID RID
	// FocusHold is the least time a focused sender keeps the focus before a
	// new speaker may take its place.
	FocusHold time.Duration
}

// Spotlight numbers a channel accepts.
const (
	MinSpotlightNumber = 1
	MaxSpotlightNumber = 8
)

// Pair names what one member receives from another.
type Pair struct {
	Recv, Send string
}

// Route is what a receiver gets from one sender.
type Route struct {
	Audio bool
	// Video is the layer wanted; RIDNone means no video. A sender without
	// simulcast sends one layer, forwarded unless Video is RIDNone.
	Video RID
	// Paused is true when the video is stopped by PauseRtpStream.
	Paused bool
}

// EventKind is a change of the spotlight focus.
type EventKind int

// The spotlight events.
const (
	Focused EventKind = iota + 1
	Unfocused
)

// Event is one change of the spotlight focus, for the notifies.
type Event struct {
	Kind  EventKind
	ID    string // the sender focused or unfocused
	Fixed bool   // focused by FocusSpotlightFixed
}

// Errors of the operations; NotMemberError names the unknown connection.
var (
	ErrNotSpotlight    = errors.New("the channel is not a spotlight channel")
	ErrNotForwarded    = errors.New("the receiver does not receive that sender")
	ErrNotSender       = errors.New("the connection does not send")
	ErrSpotlightNumber = fmt.Errorf("spotlight_number must be %d to %d", MinSpotlightNumber, MaxSpotlightNumber)
	ErrAllFixed        = errors.New("every focused sender is fixed by FocusSpotlightFixed")
	ErrInvalidRID      = errors.New("rid must be none, r0, r1 or r2")
)

// NotMemberError is an operation naming a connection that is not a member.
type NotMemberError struct{ ID string }

func (e *NotMemberError) Error() string {
	return fmt.Sprintf("connection %s is not in the channel", e.ID)
}

type focus struct {
	id    string
	fixed bool
	since time.Time
}

type focusRIDs struct{ focus, unfocus RID }

// Channel is the model of one channel.
type Channel struct {
	cfg       Config
	members   map[string]*Member
	order     []string // member IDs in join order
	pauses    map[Pair]struct{}
	rids      map[Pair]RID       // requested layers; Send "" is every sender
	spotRIDs  map[Pair]focusRIDs // requested spotlight layers; Send "" likewise
	number    int
	focus     []focus // focused senders, oldest focus first
	lastSpoke map[string]time.Time
}

// New returns an empty channel.
func New(cfg Config) *Channel {
	if cfg.SpotlightNumber < MinSpotlightNumber || cfg.SpotlightNumber > MaxSpotlightNumber {
		cfg.SpotlightNumber = 1
	}
	if cfg.FocusRID == "" {
		cfg.FocusRID = R1
	}
	if cfg.UnfocusRID == "" {
		cfg.UnfocusRID = R0
	}
	return &Channel{
		cfg:       cfg,
		members:   map[string]*Member{},
		pauses:    map[Pair]struct{}{},
		rids:      map[Pair]RID{},
		spotRIDs:  map[Pair]focusRIDs{},
		number:    cfg.SpotlightNumber,
		lastSpoke: map[string]time.Time{},
	}
}

// Spotlight reports whether the channel is a spotlight channel.
func (c *Channel) Spotlight() bool { return c.cfg.Spotlight }

// Join adds m. In a spotlight channel a sender takes a free focus place.
func (c *Channel) Join(m Member, now time.Time) []Event {
	if _, dup := c.members[m.ID]; dup {
		return nil
	}
	c.members[m.ID] = &m
	c.order = append(c.order, m.ID)
	if c.cfg.Spotlight && m.Sends && len(c.focus) < c.number {
		return []Event{c.addFocus(m.ID, false, now)}
	}
	return nil
}

// Leave removes a member with everything asked about it. A focus place it
// held goes to the most recent speaker without one.
func (c *Channel) Leave(id string, now time.Time) []Event {
	if _, ok := c.members[id]; !ok {
		return nil
	}
	delete(c.members, id)
	c.order = slices.DeleteFunc(c.order, func(o string) bool { return o == id })
	involves := func(p Pair) bool { return p.Recv == id || p.Send == id }
	maps.DeleteFunc(c.pauses, func(p Pair, _ struct{}) bool { return involves(p) })
	maps.DeleteFunc(c.rids, func(p Pair, _ RID) bool { return involves(p) })
	maps.DeleteFunc(c.spotRIDs, func(p Pair, _ focusRIDs) bool { return involves(p) })
	delete(c.lastSpoke, id)
	if i := c.focusIndex(id); i >= 0 {
		c.focus = slices.Delete(c.focus, i, i+1)
		return c.refill(now, "")
	}
	return nil
}

// Member returns a member.
func (c *Channel) Member(id string) (Member, bool) {
	m, ok := c.members[id]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// Members returns the member IDs in join order.
func (c *Channel) Members() []string { return slices.Clone(c.order) }

// Receives reports whether recv receives send's media: recv receives, send
// sends, they are two members and do not share a bundle_id.
func (c *Channel) Receives(recv, send string) bool {
	r, ok1 := c.members[recv]
	s, ok2 := c.members[send]
	return ok1 && ok2 && recv != send && r.Receives && s.Sends && r.BundleID != s.BundleID
}

// Route returns what recv gets from send, and false when it gets nothing
// (see Receives).
func (c *Channel) Route(recv, send string) (Route, bool) {
	if !c.Receives(recv, send) {
		return Route{}, false
	}
	rt := Route{Audio: true, Video: c.requestedRID(recv, send)}
	if c.cfg.Spotlight {
		focused := c.focusIndex(send) >= 0
		rt.Audio = focused
		if rid, ok := c.rids[Pair{recv, send}]; ok {
			rt.Video = rid // a request for this very sender wins
		} else {
			rt.Video = c.spotlightRID(recv, send, focused)
		}
	}
	if _, paused := c.pauses[Pair{recv, send}]; paused {
		rt.Video, rt.Paused = RIDNone, true
	}
	return rt, true
}

// requestedRID is the layer recv asked for from send: for send itself, for
// every sender, at connect, else r0.
func (c *Channel) requestedRID(recv, send string) RID {
	if rid, ok := c.rids[Pair{recv, send}]; ok {
		return rid
	}
	if rid, ok := c.rids[Pair{recv, ""}]; ok {
		return rid
	}
	if rid := c.members[recv].RID; rid != "" {
		return rid
	}
	return R0
}

func (c *Channel) spotlightRID(recv, send string, focused bool) RID {
	pick := func(f focusRIDs) RID {
		if focused {
			return f.focus
		}
		return f.unfocus
	}
	if f, ok := c.spotRIDs[Pair{recv, send}]; ok {
		return pick(f)
	}
	if f, ok := c.spotRIDs[Pair{recv, ""}]; ok {
		return pick(f)
	}
	m := c.members[recv]
	f := focusRIDs{focus: c.cfg.FocusRID, unfocus: c.cfg.UnfocusRID}
	if m.FocusRID != "" {
		f.focus = m.FocusRID
	}
	if m.UnfocusRID != "" {
		f.unfocus = m.UnfocusRID
	}
	return pick(f)
}

// CheckPair checks that recv and (when named) send are members, and that
// recv receives send: what every request about a pair needs.
func (c *Channel) CheckPair(recv, send string) error {
	if _, ok := c.members[recv]; !ok {
		return &NotMemberError{ID: recv}
	}
	if send == "" {
		return nil
	}
	if _, ok := c.members[send]; !ok {
		return &NotMemberError{ID: send}
	}
	if !c.Receives(recv, send) {
		return ErrNotForwarded
	}
	return nil
}

// Pause stops send's video to recv (PauseRtpStream); pausing twice is fine.
func (c *Channel) Pause(recv, send string) error {
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	c.pauses[Pair{recv, send}] = struct{}{}
	return nil
}

// Resume undoes Pause; resuming what is not paused is fine.
func (c *Channel) Resume(recv, send string) error {
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	delete(c.pauses, Pair{recv, send})
	return nil
}

// Paused lists the paused pairs, by the receivers' then the senders' join
// order.
func (c *Channel) Paused() []Pair {
	rank := make(map[string]int, len(c.order))
	for i, id := range c.order {
		rank[id] = i
	}
	out := make([]Pair, 0, len(c.pauses))
	for p := range c.pauses {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Pair) int {
		if d := rank[a.Recv] - rank[b.Recv]; d != 0 {
			return d
		}
		return rank[a.Send] - rank[b.Send]
	})
	return out
}

// RequestRID asks for the layer recv gets from send, or from every sender
// when send is "" (RequestRtpStream).
func (c *Channel) RequestRID(recv, send string, rid RID) error {
	if _, ok := ParseRID(string(rid)); !ok {
		return ErrInvalidRID
	}
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	c.rids[Pair{recv, send}] = rid
	return nil
}

// ResetRID forgets a RequestRID (ResetRtpStream); with send "" it forgets
// every request of recv.
func (c *Channel) ResetRID(recv, send string) error {
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	maps.DeleteFunc(c.rids, func(p Pair, _ RID) bool { return requested(p, recv, send) })
	return nil
}

// RequestSpotlightRID asks for the layers recv gets from send (from every
// sender when send is "") while send is focused and unfocused.
func (c *Channel) RequestSpotlightRID(recv, send string, focusRID, unfocusRID RID) error {
	if !c.cfg.Spotlight {
		return ErrNotSpotlight
	}
	for _, r := range []RID{focusRID, unfocusRID} {
		if _, ok := ParseRID(string(r)); !ok {
			return ErrInvalidRID
		}
	}
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	c.spotRIDs[Pair{recv, send}] = focusRIDs{focus: focusRID, unfocus: unfocusRID}
	return nil
}

// ResetSpotlightRID forgets a RequestSpotlightRID; with send "" it forgets
// every request of recv.
func (c *Channel) ResetSpotlightRID(recv, send string) error {
	if !c.cfg.Spotlight {
		return ErrNotSpotlight
	}
	if err := c.CheckPair(recv, send); err != nil {
		return err
	}
	maps.DeleteFunc(c.spotRIDs, func(p Pair, _ focusRIDs) bool { return requested(p, recv, send) })
	return nil
}

// requested reports whether the request of pair p is one a reset of recv's
// requests about send (every sender when "") forgets.
func requested(p Pair, recv, send string) bool {
	return p.Recv == recv && (send == "" || p.Send == send)
}

// SpotlightNumber is how many senders may be focused at once.
func (c *Channel) SpotlightNumber() int { return c.number }

// SetSpotlightNumber changes how many senders may be focused at once: the
// oldest focuses go first when it shrinks (fixed ones last), the most
// recent speakers come in when it grows.
func (c *Channel) SetSpotlightNumber(n int, now time.Time) ([]Event, error) {
	if !c.cfg.Spotlight {
		return nil, ErrNotSpotlight
	}
	if n < MinSpotlightNumber || n > MaxSpotlightNumber {
		return nil, ErrSpotlightNumber
	}
	c.number = n
	var events []Event
	for len(c.focus) > n {
		i := c.victim(now, false)
		if i < 0 {
			i = 0 // every focus is fixed: the oldest goes
		}
		events = append(events, c.removeFocus(i))
	}
	return append(events, c.refill(now, "")...), nil
}

// Focus puts the focus on a sender now (FocusSpotlight), taking the place
// of the focused sender idle longest if none is free; fixed keeps it there
// until Unfocus (FocusSpotlightFixed).
func (c *Channel) Focus(id string, fixed bool, now time.Time) ([]Event, error) {
	if err := c.spotlightSender(id); err != nil {
		return nil, err
	}
	if i := c.focusIndex(id); i >= 0 {
		if fixed && !c.focus[i].fixed {
			c.focus[i].fixed = true
			return []Event{{Kind: Focused, ID: id, Fixed: true}}, nil
		}
		return nil, nil
	}
	var events []Event
	if len(c.focus) >= c.number {
		i := c.victim(now, false)
		if i < 0 {
			return nil, ErrAllFixed
		}
		events = append(events, c.removeFocus(i))
	}
	return append(events, c.addFocus(id, fixed, now)), nil
}

// Unfocus takes the focus off a sender, fixed or not (UnfocusSpotlight); its
// place goes to the most recent speaker without one. Unfocusing a sender
// without the focus is fine.
func (c *Channel) Unfocus(id string, now time.Time) ([]Event, error) {
	if err := c.spotlightSender(id); err != nil {
		return nil, err
	}
	i := c.focusIndex(id)
	if i < 0 {
		return nil, nil
	}
	events := []Event{c.removeFocus(i)}
	return append(events, c.refill(now, id)...), nil
}

// Spoke records that a sender started speaking. A sender without the focus
// takes a free place, or the place of the focused sender that has been
// quiet longest, once that one has held the focus for FocusHold.
func (c *Channel) Spoke(id string, now time.Time) []Event {
	m, ok := c.members[id]
	if !ok || !m.Sends || !c.cfg.Spotlight {
		return nil
	}
	c.lastSpoke[id] = now
	if c.focusIndex(id) >= 0 {
		return nil
	}
	if len(c.focus) < c.number {
		return []Event{c.addFocus(id, false, now)}
	}
	i := c.victim(now, true)
	if i < 0 {
		return nil
	}
	return []Event{c.removeFocus(i), c.addFocus(id, false, now)}
}

// IsFocused reports whether a sender has the focus, and whether it is fixed.
func (c *Channel) IsFocused(id string) (focused, fixed bool) {
	if i := c.focusIndex(id); i >= 0 {
		return true, c.focus[i].fixed
	}
	return false, false
}

func (c *Channel) spotlightSender(id string) error {
	if !c.cfg.Spotlight {
		return ErrNotSpotlight
	}
	m, ok := c.members[id]
	if !ok {
		return &NotMemberError{ID: id}
	}
	if !m.Sends {
		return ErrNotSender
	}
	return nil
}

func (c *Channel) focusIndex(id string) int {
	return slices.IndexFunc(c.focus, func(f focus) bool { return f.id == id })
}

func (c *Channel) addFocus(id string, fixed bool, now time.Time) Event {
	c.focus = append(c.focus, focus{id: id, fixed: fixed, since: now})
	return Event{Kind: Focused, ID: id, Fixed: fixed}
}

func (c *Channel) removeFocus(i int) Event {
	f := c.focus[i]
	c.focus = slices.Delete(c.focus, i, i+1)
	return Event{Kind: Unfocused, ID: f.id, Fixed: f.fixed}
}

// activity is when a focused sender last did something that earns focus.
func (c *Channel) activity(f focus) time.Time {
	if t, ok := c.lastSpoke[f.id]; ok && t.After(f.since) {
		return t
	}
	return f.since
}

// victim is the index of the focused, unfixed sender idle longest, or -1.
// With hold, only one that has been focused and quiet for FocusHold counts.
func (c *Channel) victim(now time.Time, hold bool) int {
	best := -1
	for i, f := range c.focus {
		if f.fixed {
			continue
		}
		if hold && now.Sub(c.activity(f)) < c.cfg.FocusHold {
			continue
		}
		if best < 0 || c.activity(f).Before(c.activity(c.focus[best])) {
			best = i
		}
	}
	return best
}

// refill gives free focus places to the senders without one, the most
// recent speakers first, then in join order; skip is left out.
func (c *Channel) refill(now time.Time, skip string) []Event {
	if !c.cfg.Spotlight {
		return nil
	}
	var cands []string
	for _, id := range c.order {
		if id != skip && c.members[id].Sends && c.focusIndex(id) < 0 {
			cands = append(cands, id)
		}
	}
	slices.SortStableFunc(cands, func(a, b string) int {
		ta, oka := c.lastSpoke[a]
		tb, okb := c.lastSpoke[b]
		switch {
		case oka && okb:
			return tb.Compare(ta)
		case oka:
			return -1
		case okb:
			return 1
		}
		return 0
	})
	var events []Event
	for _, id := range cands {
		if len(c.focus) >= c.number {
			break
		}
		events = append(events, c.addFocus(id, false, now))
	}
	return events
}
