package cluster

import (
	"testing"

	"github.com/sorad/sorad/fsm"
)

func TestDecide(t *testing.T) {
	const (
		normal = fsm.ModeNormal
		bns    = fsm.ModeBlockNewSession
		bnc    = fsm.ModeBlockNewConnection
	)
	tests := []struct {
		a    Admission
		want Verdict
	}{
		{Admission{Local: false, Mode: normal}, Redirect},
		{Admission{Local: false, Mode: bnc}, Redirect},
		{Admission{Local: false, Mode: bns, Draining: true}, Redirect},
		{Admission{Local: true, Mode: normal}, Serve},
		{Admission{Local: true, Mode: normal, HasSession: true}, Serve},
		{Admission{Local: true, Mode: normal, Draining: true, HasSession: true}, HandOver},
		{Admission{Local: true, Mode: bns, HasSession: true}, Serve},
		{Admission{Local: true, Mode: bns}, HandOver},
		{Admission{Local: true, Mode: bns, Draining: true, HasSession: true}, HandOver},
		{Admission{Local: true, Mode: bnc}, Refuse},
		{Admission{Local: true, Mode: bnc, HasSession: true}, Refuse},
		{Admission{Local: true, Mode: bnc, Draining: true}, HandOver},
	}
	for _, tt := range tests {
		if got := Decide(tt.a); got != tt.want {
			t.Errorf("Decide(%+v) = %v, want %v", tt.a, got, tt.want)
		}
	}
}

func TestTakesNewSessions(t *testing.T) {
	for _, m := range []fsm.Mode{fsm.ModeNormal, fsm.ModeBlockNewSession, fsm.ModeBlockNewConnection, fsm.ModeInitial} {
		for _, draining := range []bool{false, true} {
			want := m == fsm.ModeNormal && !draining
			if got := TakesNewSessions(m, draining); got != want {
				t.Errorf("TakesNewSessions(%s, %v) = %v", m, draining, got)
			}
		}
	}
}

func TestMergesInto(t *testing.T) {
	tests := []struct {
		name         string
		ours, theirs []string
		want         bool
	}{
		{"smaller merges into larger", []string{"a"}, []string{"b", "c"}, true},
		{"larger stays", []string{"b", "c", "d"}, []string{"a", "e"}, false},
		{"same size: without the first name merges", []string{"b", "c"}, []string{"a", "d"}, true},
		{"same size: with the first name stays", []string{"a", "d"}, []string{"b", "c"}, false},
		{"order within a list does not matter", []string{"d", "a"}, []string{"c", "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergesInto(tt.ours, tt.theirs); got != tt.want {
				t.Fatalf("mergesInto(%v, %v) = %v, want %v", tt.ours, tt.theirs, got, tt.want)
			}
			if tt.want && mergesInto(tt.theirs, tt.ours) {
				t.Fatalf("both clusters would merge into each other")
			}
		})
	}
}
