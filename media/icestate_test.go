package media

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// The checking and disconnected times add up over every visit to those
// states, the current one included up to the moment asked.
func TestICETimes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms    int
		state webrtc.ICEConnectionState
	}
	tests := []struct {
		name  string
		steps []step
		asked int
		want  iceStateTotals
	}{
		{"nothing yet", nil, 100, iceStateTotals{}},
		{"still checking", []step{{0, webrtc.ICEConnectionStateNew}, {10, webrtc.ICEConnectionStateChecking}}, 35, iceStateTotals{TotalCheckingDurationMs: 25}},
		{"connected", []step{{0, webrtc.ICEConnectionStateChecking}, {40, webrtc.ICEConnectionStateConnected}}, 1000, iceStateTotals{TotalCheckingDurationMs: 40}},
		{"disconnected twice", []step{
			{0, webrtc.ICEConnectionStateChecking}, {40, webrtc.ICEConnectionStateConnected},
			{100, webrtc.ICEConnectionStateDisconnected}, {350, webrtc.ICEConnectionStateConnected},
			{400, webrtc.ICEConnectionStateDisconnected}, {410, webrtc.ICEConnectionStateChecking}, {415, webrtc.ICEConnectionStateConnected},
		}, 2000, iceStateTotals{TotalCheckingDurationMs: 45, TotalDisconnectedDurationMs: 260}},
		{"disconnected now", []step{{0, webrtc.ICEConnectionStateChecking}, {5, webrtc.ICEConnectionStateConnected}, {100, webrtc.ICEConnectionStateDisconnected}}, 130,
			iceStateTotals{TotalCheckingDurationMs: 5, TotalDisconnectedDurationMs: 30}},
		{"closed", []step{{0, webrtc.ICEConnectionStateDisconnected}, {70, webrtc.ICEConnectionStateClosed}}, 500, iceStateTotals{TotalDisconnectedDurationMs: 70}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var it iceTimes
			for _, s := range tt.steps {
				it.observe(s.state, at(s.ms))
			}
			if got := it.totals(at(tt.asked)); got != tt.want {
				t.Errorf("totals %+v, want %+v", got, tt.want)
			}
		})
	}
}
