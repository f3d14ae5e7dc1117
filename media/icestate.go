package media

import (
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// iceTimes measures how long a connection's ICE agent has been checking
// and disconnected, over the connection's whole life, for the event
// webhooks' data.ice_connection_state.
type iceTimes struct {
	mu           sync.Mutex
	state        webrtc.ICEConnectionState
	since        time.Time // when state was entered
	checking     time.Duration
	disconnected time.Duration
}

// iceStateTotals is data.ice_connection_state of the event webhooks.
type iceStateTotals struct {
	TotalCheckingDurationMs     int64 `json:"total_checking_duration_ms"`
	TotalDisconnectedDurationMs int64 `json:"total_disconnected_duration_ms"`
}

// observe notes that the ICE state became s at now.
func (t *iceTimes) observe(s webrtc.ICEConnectionState, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checking, t.disconnected = t.upToLocked(now)
	t.state, t.since = s, now
}

// totals are the durations up to now, the current state's time included.
func (t *iceTimes) totals(now time.Time) iceStateTotals {
	t.mu.Lock()
	defer t.mu.Unlock()
	checking, disconnected := t.upToLocked(now)
	return iceStateTotals{TotalCheckingDurationMs: checking.Milliseconds(), TotalDisconnectedDurationMs: disconnected.Milliseconds()}
}

// upToLocked returns the totals with the time from the last change to now
// added to the current state's. t.mu is held.
func (t *iceTimes) upToLocked(now time.Time) (checking, disconnected time.Duration) {
	checking, disconnected = t.checking, t.disconnected
	if t.since.IsZero() || now.Before(t.since) {
		return checking, disconnected
	}
	switch t.state {
	case webrtc.ICEConnectionStateChecking:
		checking += now.Sub(t.since)
	case webrtc.ICEConnectionStateDisconnected:
		disconnected += now.Sub(t.since)
	}
	return checking, disconnected
}
