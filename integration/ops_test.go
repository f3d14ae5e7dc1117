package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// runSubcommand runs `sorad args...` with the given environment added to
// a clean one and returns its stdout, stderr and exit code.
func runSubcommand(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, soradBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("sorad %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// TestOperatorSubcommands runs `sorad status`, `nodes`, `channels` and
// `version` against a two-node cluster whose API wants a bearer token,
// read from SORAD_API_BEARER_TOKEN; a wrong token is refused without
// being echoed.
func TestOperatorSubcommands(t *testing.T) {
	const token = "ops-subcommand-token-0123456789"
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2, "--api_bearer_token="+token)
	a, b := nodes[0], nodes[1]
	setMode(t, nodes, b, "block_new_session")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := connectClient(t, ctx, a, soraclient.Options{ChannelID: "ops-channel", Role: "sendonly", Audio: true})
	defer pub.Close()

	env := []string{"SORAD_API_URL=" + a.APIURL(), "SORAD_API_BEARER_TOKEN=" + token}
	t.Run("nodes", func(t *testing.T) {
		out, errOut, code := runSubcommand(t, env, "nodes")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("sorad nodes:\n%s", out)
		for _, want := range []string{"NODE", "MODE", a.Name, b.Name, "block_new_session", "normal"} {
			if !strings.Contains(out, want) {
				t.Errorf("sorad nodes lacks %q:\n%s", want, out)
			}
		}
		if got := strings.Count(out, "\n"); got != 3 {
			t.Errorf("sorad nodes printed %d lines, want a header and 2 nodes:\n%s", got, out)
		}
	})
	t.Run("channels, asking the other node with --api-url", func(t *testing.T) {
		out, errOut, code := runSubcommand(t, env[1:], "channels", "--api-url", b.APIURL())
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "ops-channel ") {
				line = l
			}
		}
		if !strings.Contains(line, a.Name) {
			t.Errorf("sorad channels does not show ops-channel in charge of %s:\n%s", a.Name, out)
		}
	})
	t.Run("status", func(t *testing.T) {
		out, errOut, code := runSubcommand(t, env, "status")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("sorad status:\n%s", out)
		for _, want := range []string{"node:", a.Name, "raft:", "leader:", "2 nodes, 2 connected", "connections:  1 now"} {
			if !strings.Contains(out, want) {
				t.Errorf("sorad status lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		out, _, code := runSubcommand(t, env, "nodes", "--json")
		if code != 0 || !strings.HasPrefix(out, "[") || !strings.Contains(out, `"node_name": "`+a.Name+`"`) {
			t.Errorf("sorad nodes --json: exit %d:\n%s", code, out)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		wrong := "wrong-token-9876543210"
		out, errOut, code := runSubcommand(t, []string{"SORAD_API_URL=" + a.APIURL(), "SORAD_API_BEARER_TOKEN=" + wrong}, "nodes")
		if code != 1 || !strings.Contains(errOut, "401 UNAUTHORIZED") {
			t.Errorf("exit %d, stderr %q; want 1 and 401 UNAUTHORIZED", code, errOut)
		}
		if strings.Contains(out+errOut, wrong) {
			t.Errorf("the token was echoed: %s %s", out, errOut)
		}
	})
	t.Run("no node there", func(t *testing.T) {
		_, errOut, code := runSubcommand(t, []string{"SORAD_API_URL=http://" + harness.NextAddress() + ":3000/"}, "status", "--timeout", "3s")
		if code != 1 || !strings.Contains(errOut, "GetStatsReport") {
			t.Errorf("exit %d, stderr %q; want 1 and the failed call named", code, errOut)
		}
	})
	t.Run("version", func(t *testing.T) {
		out, _, code := runSubcommand(t, nil, "version")
		if code != 0 || !strings.HasPrefix(out, "sorad ") {
			t.Errorf("sorad version: exit %d: %q", code, out)
		}
	})
}
