package media

import (
	"strings"
	"testing"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := newID()
		if len(id) != 26 || strings.Trim(id, crockford) != "" || strings.ContainsAny(id, "ILOU") {
			t.Fatalf("id %q is not 26 Crockford base32 characters", id)
		}
		if id[0] > '7' {
			t.Fatalf("id %q: the first character holds 3 bits, so 0-7", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}
