package channel

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func sendrecv(id string) Member { return Member{ID: id, BundleID: id, Sends: true, Receives: true} }
func sendonly(id string) Member { return Member{ID: id, BundleID: id, Sends: true} }
func recvonly(id string) Member { return Member{ID: id, BundleID: id, Receives: true} }

func join(c *Channel, ms ...Member) {
	for _, m := range ms {
		c.Join(m, t0)
	}
}

func TestReceives(t *testing.T) {
	c := New(Config{})
	bundled := sendrecv("b1")
	bundled.BundleID = "bundle"
	bundled2 := sendrecv("b2")
	bundled2.BundleID = "bundle"
	join(c, sendrecv("a"), sendonly("pub"), recvonly("sub"), bundled, bundled2)
	tests := []struct {
		recv, send string
		want       bool
	}{
		{"a", "pub", true},
		{"sub", "pub", true},
		{"sub", "a", true},
		{"pub", "a", false},    // sendonly receives nothing
		{"a", "sub", false},    // recvonly sends nothing
		{"a", "a", false},      // not itself
		{"b1", "b2", false},    // same bundle_id
		{"b1", "a", true},      // other bundles are fine
		{"a", "gone", false},   // not a member
		{"gone", "pub", false}, // not a member
	}
	for _, tt := range tests {
		if got := c.Receives(tt.recv, tt.send); got != tt.want {
			t.Errorf("Receives(%s, %s) = %v, want %v", tt.recv, tt.send, got, tt.want)
		}
		if _, ok := c.Route(tt.recv, tt.send); ok != tt.want {
			t.Errorf("Route(%s, %s) ok = %v, want %v", tt.recv, tt.send, ok, tt.want)
		}
	}
}

func TestSimulcastLayerRequests(t *testing.T) {
	r1 := recvonly("r1")
	r1.RID = R1
	none := recvonly("none")
	none.RID = RIDNone
	steps := []struct {
		name string
		do   func(c *Channel) error
		// want is recv->send->layer for the receivers r0, r1 and none from
		// the senders p and q.
		want map[string]RID
	}{
		{"connect defaults", nil, map[string]RID{"r0/p": R0, "r0/q": R0, "r1/p": R1, "r1/q": R1, "none/p": RIDNone, "none/q": RIDNone}},
		{"every sender", func(c *Channel) error { return c.RequestRID("r0", "", R2) }, map[string]RID{"r0/p": R2, "r0/q": R2}},
		{"one sender wins over every sender", func(c *Channel) error { return c.RequestRID("r0", "q", R1) }, map[string]RID{"r0/p": R2, "r0/q": R1}},
		{"none", func(c *Channel) error { return c.RequestRID("r1", "p", RIDNone) }, map[string]RID{"r1/p": RIDNone, "r1/q": R1}},
		{"reset one sender", func(c *Channel) error { return c.ResetRID("r0", "q") }, map[string]RID{"r0/p": R2, "r0/q": R2}},
		{"reset all", func(c *Channel) error { return c.ResetRID("r0", "") }, map[string]RID{"r0/p": R0, "r0/q": R0, "r1/p": RIDNone}},
	}
	c := New(Config{})
	join(c, sendonly("p"), sendonly("q"), recvonly("r0"), r1, none)
	for _, st := range steps {
		if st.do != nil {
			if err := st.do(c); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		for key, want := range st.want {
			recv, send, _ := strings.Cut(key, "/")
			rt, ok := c.Route(recv, send)
			if !ok || rt.Video != want || !rt.Audio {
				t.Errorf("%s: Route(%s, %s) = %+v %v, want video %s with audio", st.name, recv, send, rt, ok, want)
			}
		}
	}
}

func TestRequestErrors(t *testing.T) {
	c := New(Config{})
	join(c, sendonly("p"), recvonly("r"), sendonly("p2"))
	var nm *NotMemberError
	tests := []struct {
		name string
		err  error
		want func(error) bool
	}{
		{"unknown receiver", c.RequestRID("x", "p", R1), func(e error) bool { return errors.As(e, &nm) && nm.ID == "x" }},
		{"unknown sender", c.RequestRID("r", "x", R1), func(e error) bool { return errors.As(e, &nm) && nm.ID == "x" }},
		{"not forwarded", c.RequestRID("p", "p2", R1), func(e error) bool { return errors.Is(e, ErrNotForwarded) }},
		{"bad rid", c.RequestRID("r", "p", "r3"), func(e error) bool { return errors.Is(e, ErrInvalidRID) }},
		{"pause not forwarded", c.Pause("p2", "p"), func(e error) bool { return errors.Is(e, ErrNotForwarded) }},
		{"spotlight rid outside spotlight", c.RequestSpotlightRID("r", "p", R1, R0), func(e error) bool { return errors.Is(e, ErrNotSpotlight) }},
		{"focus outside spotlight", second(c.Focus("p", false, t0)), func(e error) bool { return errors.Is(e, ErrNotSpotlight) }},
		{"number outside spotlight", second(c.SetSpotlightNumber(2, t0)), func(e error) bool { return errors.Is(e, ErrNotSpotlight) }},
	}
	for _, tt := range tests {
		if !tt.want(tt.err) {
			t.Errorf("%s: error %v", tt.name, tt.err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestPauses(t *testing.T) {
	c := New(Config{})
	join(c, sendrecv("a"), sendrecv("b"), recvonly("r"))
	for _, p := range []Pair{{"r", "b"}, {"r", "a"}, {"a", "b"}, {"r", "a"}} {
		if err := c.Pause(p.Recv, p.Send); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := c.Paused(), []Pair{{"a", "b"}, {"r", "a"}, {"r", "b"}}; !slices.Equal(got, want) {
		t.Errorf("Paused = %v, want %v (receivers then senders in join order, no duplicates)", got, want)
	}
	rt, _ := c.Route("r", "a")
	if !rt.Paused || rt.Video != RIDNone || !rt.Audio {
		t.Errorf("paused route = %+v, want no video, paused, audio on", rt)
	}
	if rt, _ := c.Route("b", "a"); rt.Paused || rt.Video != R0 {
		t.Errorf("another receiver's route = %+v, want unpaused r0", rt)
	}
	if err := c.Resume("r", "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume("r", "a"); err != nil {
		t.Errorf("resuming twice: %v", err)
	}
	if rt, _ := c.Route("r", "a"); rt.Paused || rt.Video != R0 {
		t.Errorf("resumed route = %+v", rt)
	}
	c.Leave("b", t0)
	if got, want := c.Paused(), []Pair(nil); len(got) != 0 {
		t.Errorf("after b left, Paused = %v, want %v", got, want)
	}
}

// focused lists the focused senders in focus order.
func focused(c *Channel) []string {
	var out []string
	for _, f := range c.focus {
		out = append(out, f.id)
	}
	return out
}

func events(es ...Event) []Event { return es }

func TestSpotlightFocus(t *testing.T) {
	cfg := Config{Spotlight: true, SpotlightNumber: 2, FocusHold: 2 * time.Second}
	steps := []struct {
		name        string
		do          func(c *Channel) ([]Event, error)
		wantEvents  []Event
		wantFocused []string
	}{
		{"first sender takes a place", func(c *Channel) ([]Event, error) { return c.Join(sendrecv("a"), at(0)), nil },
			events(Event{Focused, "a", false}), []string{"a"}},
		{"receivers take none", func(c *Channel) ([]Event, error) { return c.Join(recvonly("r"), at(0)), nil },
			nil, []string{"a"}},
		{"second sender takes the last place", func(c *Channel) ([]Event, error) { return c.Join(sendrecv("b"), at(1)), nil },
			events(Event{Focused, "b", false}), []string{"a", "b"}},
		{"a third waits", func(c *Channel) ([]Event, error) { return c.Join(sendrecv("c"), at(1)), nil },
			nil, []string{"a", "b"}},
		{"c speaks within the hold: nothing moves", func(c *Channel) ([]Event, error) { return c.Spoke("c", at(1.5)), nil },
			nil, []string{"a", "b"}},
		{"b speaks", func(c *Channel) ([]Event, error) { return c.Spoke("b", at(2.5)), nil }, nil, []string{"a", "b"}},
		{"c speaks after the hold: a (quiet longest) goes", func(c *Channel) ([]Event, error) { return c.Spoke("c", at(3)), nil },
			events(Event{Unfocused, "a", false}, Event{Focused, "c", false}), []string{"b", "c"}},
		{"fixed focus on a", func(c *Channel) ([]Event, error) { return c.Focus("a", true, at(3.5)) },
			events(Event{Unfocused, "b", false}, Event{Focused, "a", true}), []string{"c", "a"}},
		{"b speaks: only c can go, and it held the focus too shortly", func(c *Channel) ([]Event, error) { return c.Spoke("b", at(4)), nil },
			nil, []string{"c", "a"}},
		{"b speaks later: c goes, a stays fixed", func(c *Channel) ([]Event, error) { return c.Spoke("b", at(6)), nil },
			events(Event{Unfocused, "c", false}, Event{Focused, "b", false}), []string{"a", "b"}},
		{"fixed twice is a no-op", func(c *Channel) ([]Event, error) { return c.Focus("a", true, at(6)) }, nil, []string{"a", "b"}},
		{"unfocus the fixed one: the most recent speaker without focus comes in", func(c *Channel) ([]Event, error) { return c.Unfocus("a", at(7)) },
			events(Event{Unfocused, "a", true}, Event{Focused, "c", false}), []string{"b", "c"}},
		{"unfocus someone without focus", func(c *Channel) ([]Event, error) { return c.Unfocus("a", at(7)) }, nil, []string{"b", "c"}},
		{"number down to 1: the one idle longest goes", func(c *Channel) ([]Event, error) { return c.SetSpotlightNumber(1, at(8)) },
			events(Event{Unfocused, "b", false}), []string{"c"}},
		{"number up to 3: speakers first, then join order", func(c *Channel) ([]Event, error) { return c.SetSpotlightNumber(3, at(9)) },
			events(Event{Focused, "b", false}, Event{Focused, "a", false}), []string{"c", "b", "a"}},
		{"a focused sender leaves; nobody is left to come in", func(c *Channel) ([]Event, error) { return c.Leave("b", at(10)), nil },
			nil, []string{"c", "a"}},
		{"a sender joins a free place", func(c *Channel) ([]Event, error) { return c.Join(sendonly("d"), at(11)), nil },
			events(Event{Focused, "d", false}), []string{"c", "a", "d"}},
	}
	c := New(cfg)
	for _, st := range steps {
		got, err := st.do(c)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !slices.Equal(got, st.wantEvents) {
			t.Errorf("%s: events %v, want %v", st.name, got, st.wantEvents)
		}
		if f := focused(c); !slices.Equal(f, st.wantFocused) {
			t.Fatalf("%s: focused %v, want %v", st.name, f, st.wantFocused)
		}
	}
}

func TestSpotlightErrors(t *testing.T) {
	c := New(Config{Spotlight: true, SpotlightNumber: 1})
	join(c, sendrecv("a"), recvonly("r"), sendrecv("b"))
	if _, err := c.Focus("a", true, t0); err != nil {
		t.Fatal(err)
	}
	var nm *NotMemberError
	if _, err := c.Focus("b", false, t0); !errors.Is(err, ErrAllFixed) {
		t.Errorf("focus with every place fixed: %v, want ErrAllFixed", err)
	}
	if _, err := c.Focus("r", false, t0); !errors.Is(err, ErrNotSender) {
		t.Errorf("focus on a receiver: %v, want ErrNotSender", err)
	}
	if _, err := c.Unfocus("x", t0); !errors.As(err, &nm) {
		t.Errorf("unfocus of a stranger: %v, want NotMemberError", err)
	}
	for _, n := range []int{0, 9, -1} {
		if _, err := c.SetSpotlightNumber(n, t0); !errors.Is(err, ErrSpotlightNumber) {
			t.Errorf("SetSpotlightNumber(%d): %v", n, err)
		}
	}
	if err := c.RequestSpotlightRID("r", "a", "r5", R0); !errors.Is(err, ErrInvalidRID) {
		t.Errorf("bad focus rid: %v", err)
	}
	if c.Spoke("r", t0) != nil || c.Spoke("x", t0) != nil {
		t.Errorf("a receiver or a stranger speaking moved the focus")
	}
}

func TestSpotlightRoutes(t *testing.T) {
	c := New(Config{Spotlight: true, SpotlightNumber: 1, FocusRID: R2, UnfocusRID: R0})
	custom := recvonly("custom")
	custom.FocusRID, custom.UnfocusRID = R1, RIDNone
	join(c, sendrecv("f"), sendrecv("u"), recvonly("plain"), custom)
	tests := []struct {
		name       string
		do         func() error
		recv, send string
		want       Route
	}{
		{"focused: audio and the channel's focus layer", nil, "plain", "f", Route{Audio: true, Video: R2}},
		{"unfocused: no audio, the unfocus layer", nil, "plain", "u", Route{Video: R0}},
		{"the receiver's connect rids", nil, "custom", "f", Route{Audio: true, Video: R1}},
		{"unfocus none", nil, "custom", "u", Route{Video: RIDNone}},
		{"a request for every sender", func() error { return c.RequestSpotlightRID("plain", "", R1, R1) }, "plain", "u", Route{Video: R1}},
		{"a request for one sender wins", func() error { return c.RequestSpotlightRID("plain", "u", R2, RIDNone) }, "plain", "u", Route{Video: RIDNone}},
		{"... and leaves the others", nil, "plain", "f", Route{Audio: true, Video: R1}},
		{"RequestRtpStream for the very sender wins over spotlight", func() error { return c.RequestRID("plain", "f", R0) }, "plain", "f", Route{Audio: true, Video: R0}},
		{"reset spotlight rids", func() error { return c.ResetSpotlightRID("plain", "") }, "plain", "u", Route{Video: R0}},
		{"pause keeps the audio rule", func() error { return c.Pause("plain", "f") }, "plain", "f", Route{Audio: true, Video: RIDNone, Paused: true}},
		{"focus moves: audio follows", func() error { _, err := c.Focus("u", false, t0); return err }, "plain", "u", Route{Audio: true, Video: R2}},
		{"... and leaves the old one", nil, "plain", "f", Route{Video: RIDNone, Paused: true}},
	}
	for _, tt := range tests {
		if tt.do != nil {
			if err := tt.do(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		}
		if got, ok := c.Route(tt.recv, tt.send); !ok || got != tt.want {
			t.Errorf("%s: Route(%s, %s) = %+v, want %+v", tt.name, tt.recv, tt.send, got, tt.want)
		}
	}
}

func TestLeaveForgetsRequests(t *testing.T) {
	c := New(Config{Spotlight: true})
	join(c, sendrecv("a"), sendrecv("b"))
	if err := c.RequestRID("a", "b", R2); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestSpotlightRID("b", "a", R2, R2); err != nil {
		t.Fatal(err)
	}
	c.Spoke("a", t0)
	c.Leave("b", t0)
	c.Join(sendrecv("b"), t0) // the same ID again starts afresh
	if len(c.rids)+len(c.spotRIDs) != 0 {
		t.Errorf("requests survived the leave: %v %v", c.rids, c.spotRIDs)
	}
	if got := c.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("members %v", got)
	}
}
