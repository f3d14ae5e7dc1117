package media

import "testing"

func TestReceiverLossIncrements(t *testing.T) {
	type report struct {
		ssrc, total uint32
		want        int64
	}
	tests := []struct {
		name    string
		reports []report
	}{
		{"first report of a source counts nothing", []report{{1, 50, 0}}},
		{"increments", []report{{1, 5, 0}, {1, 8, 3}, {1, 8, 0}, {1, 20, 12}}},
		{"a count going down is not loss", []report{{1, 10, 0}, {1, 7, 0}, {1, 9, 2}}},
		{"a negative count (24-bit) reads as a jump and is skipped", []report{{1, 10, 0}, {1, 0xFFFFFF, 0}, {1, 0xFFFFFF + 2, 2}}},
		{"sources apart", []report{{1, 10, 0}, {2, 3, 0}, {1, 12, 2}, {2, 4, 1}}},
		{"past four sources the map starts over", []report{{1, 1, 0}, {2, 1, 0}, {3, 1, 0}, {4, 1, 0}, {5, 1, 0}, {1, 3, 0}, {1, 4, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := receiverLoss{}
			for i, r := range tt.reports {
				if got := l.add(r.ssrc, r.total); got != r.want {
					t.Errorf("report %d (ssrc %d, total %d): %d, want %d", i, r.ssrc, r.total, got, r.want)
				}
			}
			if len(l) > 4 {
				t.Errorf("%d sources kept, want at most 4", len(l))
			}
		})
	}
}
