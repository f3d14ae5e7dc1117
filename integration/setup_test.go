package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// npmInstallTimeout bounds `npm ci` of the browser tests' packages.
const npmInstallTimeout = 5 * time.Minute

// browserPackages reports whether integration/browser/node_modules holds
// the packages the lock file pins (the pinned sora-js-sdk and
// playwright-core), and if not, what is wrong.
func browserPackages(dir string) error {
	for _, f := range []string{"node_modules/sora-js-sdk/dist/sora.js", "node_modules/playwright-core/package.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("integration/browser/%s is missing", f)
		}
	}
	var pkg struct{ Version string }
	b, err := os.ReadFile(filepath.Join(dir, "node_modules/sora-js-sdk/package.json"))
	if err == nil {
		err = json.Unmarshal(b, &pkg)
	}
	if err != nil {
		return fmt.Errorf("read sora-js-sdk's package.json: %w", err)
	}
	if pkg.Version != sdkVersion {
		return fmt.Errorf("integration/browser/node_modules has sora-js-sdk %q, the lock file pins %s", pkg.Version, sdkVersion)
	}
	return nil
}

// installBrowserPackages runs `npm ci` in dir (integration/browser) when
// its node_modules does not hold the pinned packages and npm is there, so
// that the README's test command runs the browser tests on a fresh machine
// without a set-up step of its own. It returns what is still wrong, for
// browserPrereqs to report: nil when the packages are in place.
func installBrowserPackages(ctx context.Context, dir string) error {
	wrong := browserPackages(dir)
	if wrong == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("%w, and npm is not installed to fetch it (apt-get install npm)", wrong)
	}
	fmt.Fprintf(os.Stderr, "integration: %v; running npm ci in integration/browser\n", wrong)
	ctx, cancel := context.WithTimeout(ctx, npmInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in integration/browser: %w: %s", err, tail(out.String(), 20))
	}
	return browserPackages(dir)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// skipOrFail skips a test whose tool is missing, loudly, unless CI is set:
// then it fails.
func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if ciSet() {
		t.Fatalf("CI is set, so this is a failure, not a skip: %s", why)
	}
	msg := fmt.Sprintf("SKIPPED %s: %s", t.Name(), why)
	announce(msg)
	t.Skip(msg)
}

func ciSet() bool { return os.Getenv("CI") != "" }

// announce writes msg where the developer sees it even without -v. `go
// test` shows a passing package's output only with -v, so the line goes
// to the go command's own stderr when that is a terminal or a pipe (a
// file there would be written at another offset than go's and clobbered),
// and to this process's stderr otherwise.
func announce(msg string) {
	line := "integration: " + msg + "\n"
	if err := writeToGoCommand(line); err != nil {
		fmt.Fprint(os.Stderr, line)
	}
}

func writeToGoCommand(line string) error {
	parent := os.Getppid()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", parent))
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(comm)) != "go" {
		return errors.New("not run by the go command")
	}
	path := fmt.Sprintf("/proc/%d/fd/2", parent)
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&(fs.ModeCharDevice|fs.ModeNamedPipe) == 0 {
		return errors.New("the go command's stderr is neither a terminal nor a pipe")
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
