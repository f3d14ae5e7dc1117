package load

import (
	"context"
	"fmt"
	"io"
	"time"
)

// totals are the load's counters at one moment.
type totals struct {
	pubs, subs int   // joined and not closed by the server
	sent       int64 // payload bytes the publishers sent
	received   int64 // payload bytes the subscribers received
	packets    int64 // packets the subscribers received
	lost       int64 // packets the subscribers' sequence numbers say they lost
	closed     int   // joined clients the server has closed
	joins      int64 // joins completed
	failed     int   // connects that failed
}

// totals adds up every joined client's counters.
func (r *runner) totals() totals {
	var t totals
	for _, m := range r.joinedMembers() {
		if closedReason(m.client) != "" {
			t.closed++
		} else if m.role == RolePublisher {
			t.pubs++
		} else {
			t.subs++
		}
		if m.role == RolePublisher {
			t.sent += m.client.SentBytes()
			continue
		}
		for _, st := range m.client.Received() {
			t.received += st.Bytes
			t.packets += st.Packets
			t.lost += st.Lost
		}
	}
	t.joins = r.joinedN.Load()
	r.mu.Lock()
	for _, n := range r.failures {
		t.failed += n
	}
	r.mu.Unlock()
	return t
}

// progressLoop writes a progress line every second, and a last one when
// ctx ends.
func (r *runner) progressLoop(ctx context.Context, start time.Time, w io.Writer) {
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	prev, prevAt := totals{}, start
	older, olderAt := prev, prevAt // the line before prev's
	for {
		done := false
		select {
		case <-tick.C:
		case <-ctx.Done():
			done = true
		}
		now := time.Now()
		cur := r.totals()
		if !done {
			fmt.Fprintln(w, r.progressLine(now.Sub(start), now.Sub(prevAt), prev, cur))
			older, olderAt, prev, prevAt = prev, prevAt, cur, now
			continue
		}
		// The last line: rates over at least half an interval, so that
		// a run ending just after a line does not show the noise of a
		// few milliseconds.
		if now.Sub(prevAt) < progressInterval/2 && prevAt != start {
			prev, prevAt = older, olderAt
		}
		fmt.Fprintln(w, r.progressLine(now.Sub(start), now.Sub(prevAt), prev, cur)+"  (end)")
		return
	}
}

// progressLine is one line of progress: connected clients, bit rates and
// loss over the last interval d, joins per second, failures so far.
func (r *runner) progressLine(elapsed, d time.Duration, prev, cur totals) string {
	loss := 0.0
	if got, lost := cur.packets-prev.packets, cur.lost-prev.lost; got+lost > 0 && lost > 0 {
		loss = 100 * float64(lost) / float64(got+lost)
	}
	joinRate := 0.0
	if d > 0 {
		joinRate = float64(cur.joins-prev.joins) / d.Seconds()
	}
	return fmt.Sprintf("%5.0fs  pubs %d/%d  subs %d/%d  out %s  in %s  loss %.2f%%  joins/s %.0f  failed %d  closed %d",
		elapsed.Seconds(), cur.pubs, r.cfg.Channels*r.cfg.Publishers, cur.subs, r.cfg.Channels*r.cfg.Subscribers,
		rate(kbps(cur.sent-prev.sent, d)), rate(kbps(cur.received-prev.received, d)), loss, joinRate, cur.failed, cur.closed)
}

// rate formats a bit rate given in kbit/s.
func rate(kbps float64) string {
	if kbps >= 1000 {
		return fmt.Sprintf("%.2f Mbit/s", kbps/1000)
	}
	return fmt.Sprintf("%.0f kbit/s", kbps)
}
