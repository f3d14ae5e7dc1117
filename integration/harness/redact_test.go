package harness

import (
	"slices"
	"testing"
)

func TestRedacted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"--cluster_secret=s3cret", "--cluster_secret=REDACTED"},
		{"--cluster_secret_previous=old", "--cluster_secret_previous=REDACTED"},
		{"--api_bearer_token=tok", "--api_bearer_token=REDACTED"},
		{"--signaling_auth_secret=x", "--signaling_auth_secret=REDACTED"},
		{"--cluster_secret_file=/run/secret", "--cluster_secret_file=/run/secret"},
		{"--node_name=a@127.0.0.1", "--node_name=a@127.0.0.1"},
		{"--cluster_secret", "--cluster_secret"},
	} {
		if got := redacted([]string{tc.in}); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
