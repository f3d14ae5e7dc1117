package httpapi

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// notYet are the targets of the seeds sorad does not serve yet: none.
var notYet []string

// TestSeedTargetsServed: every x-sora-target the seed documents name (with
// its version) is served, but for notYet.
func TestSeedTargetsServed(t *testing.T) {
	files, _ := filepath.Glob("../../shared/spec/seeds/*.txt")
	if len(files) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("shared/spec/seeds must be beside the checkout in CI")
		}
		t.Skip("SKIPPED: the seed documents (shared/spec/seeds) are not beside this checkout")
	}
	s := New(baseConfig(), &fakeCluster{}, &fakeMedia{})
	pattern := regexp.MustCompile(`Sora_\d{8}\.[A-Za-z]+`)
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range pattern.FindAllString(string(b), -1) {
			seen[target] = true
		}
	}
	var missing []string
	for target := range seen {
		if _, ok := s.targets[target]; !ok {
			missing = append(missing, target)
		}
	}
	slices.Sort(missing)
	t.Logf("%d targets in the seeds, %d not served: %q", len(seen), len(missing), missing)
	if !slices.Equal(missing, notYet) {
		t.Fatalf("targets not served: %q, want exactly %q", missing, notYet)
	}
}
