// Package harness runs real sorad processes for black-box tests and
// benchmarks: it builds the binary once, starts nodes each on its own
// loopback address (127.0.x.y) with its own data directory, kills and
// restarts them, and calls their API. Traffic only ever goes to 127.0.0.0/8.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster/trust"
)

// Ports every harness node uses on its own address. They differ from the
// defaults so a sorad (or anything else) on 0.0.0.0:3000 does not clash.
const (
	APIPort       = 13000
	SignalingPort = 15000
	ClusterPort   = 15890
)

// ClusterSecret is the cluster secret every harness node is given unless a
// test overrides it: the cluster ports of the tests run mutual TLS, as
// production ones do.
const ClusterSecret = "sorad integration harness cluster secret 0123456789"

// MemberTrust is the trust store of a member named name of a harness
// cluster: tests that play a node (or an operator's tool holding the
// secret) use it to speak on the cluster port.
func MemberTrust(name string) (*trust.Store, error) {
	return trust.NewStore(func() (*trust.Material, error) { return trust.FromSecret(name, ClusterSecret) })
}

// Build compiles cmd/sorad into dir and returns the binary's path, with the
// race detector when the caller runs with it. It finds the module root by
// walking up from the working directory.
func Build(ctx context.Context, dir string) (string, error) {
	return BuildCommand(ctx, dir, "sorad")
}

// BuildCommand compiles cmd/<name> of this module into dir as Build does
// cmd/sorad, and returns the binary's path.
func BuildCommand(ctx context.Context, dir, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/"+name)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}

// BuildRevision compiles cmd/sorad as it was at revision rev of the git
// repository the module lives in, into dir, and returns the binary's path:
// it checks rev out in a detached git worktree in a temporary directory,
// builds there (without the race detector: it is another version's code,
// run as a black box) and removes the worktree.
func BuildRevision(ctx context.Context, rev, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	src, err := os.MkdirTemp("", "sorad-revision-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	tree := filepath.Join(src, "tree")
	if err := git("worktree", "add", "--detach", tree, rev); err != nil {
		return "", fmt.Errorf("check out %s (a clone with its history is needed): %w", rev, err)
	}
	defer func() { _ = git("worktree", "remove", "--force", tree) }()
	bin := filepath.Join(dir, "sorad-"+rev[:min(len(rev), 12)])
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sorad")
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sorad at %s: %w\n%s", rev, err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// addresses hands out loopback addresses 127.0.10.1, 127.0.10.2, ... so that
// no two nodes of a test run share one.
var addresses atomic.Int32

// addressBase is the third octet of the first address: 10, or
// SORAD_TEST_ADDRESS_BASE (11-200) so that two test runs on one machine
// (a developer's run beside CI's) use addresses apart.
var addressBase = sync.OnceValue(func() int {
	v := os.Getenv("SORAD_TEST_ADDRESS_BASE")
	if v == "" {
		return 10
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 11 || n > 200 {
		panic(fmt.Sprintf("SORAD_TEST_ADDRESS_BASE=%q: want a number from 11 to 200", v))
	}
	return n
})

// NextAddress returns a loopback address no other node of this run uses.
func NextAddress() string {
	n := addresses.Add(1) - 1
	return fmt.Sprintf("127.0.%d.%d", addressBase()+int(n)/250, 1+n%250)
}

// Harness owns the nodes of one test.
type Harness struct {
	t      testing.TB
	bin    string
	logDir string // node logs; removed after they are printed

	mu    sync.Mutex
	nodes []*Node
}

// New returns a harness for t using the binary at bin. Every node still
// running when t ends is killed; if t failed, each node's log tail is
// printed.
func New(t testing.TB, bin string) *Harness {
	dir, err := os.MkdirTemp("", "sorad-logs-")
	if err != nil {
		t.Fatal(err)
	}
	h := &Harness{t: t, bin: bin, logDir: dir}
	t.Cleanup(h.cleanup)
	return h
}

// logPath returns a fresh log file path for a node.
func (h *Harness) logPath(name string) string {
	return filepath.Join(h.logDir, strings.NewReplacer("@", "_", "/", "_").Replace(name)+".log")
}

func (h *Harness) cleanup() {
	h.mu.Lock()
	nodes := h.nodes
	h.mu.Unlock()
	for _, n := range nodes {
		n.Kill()
		if b, err := os.ReadFile(n.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			h.t.Errorf("%s reported a data race; see its log", n.Name)
		}
	}
	if h.t.Failed() {
		for _, n := range nodes {
			h.t.Logf("--- log of %s (last lines) ---\n%s", n.Name, n.LogTail(40))
		}
	}
	os.RemoveAll(h.logDir)
}

// Node is one sorad process (running or not) with its identity and data.
type Node struct {
	// Bin is the sorad binary Start runs; empty, the harness's. A node
	// restarted with another Bin keeps its data directory: an upgrade.
	Bin     string
	Name    string // name@address
	Address string // its loopback IP
	DataDir string
	Args    []string // extra flags
	// Bare runs the binary with Args only, in WorkDir, as a user typing
	// `sorad` would: no harness flags, so every setting is the default.
	Bare    bool
	WorkDir string

	h       *Harness
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error  // the last run's exit status, set before exited closes
	apiPort int    // 0: APIPort
	token   string // the API bearer token the node was started with, sent by Call
}

// NewNode prepares a node named short@<fresh address>; Start runs it.
func (h *Harness) NewNode(short string, args ...string) *Node {
	addr := NextAddress()
	dir := h.t.TempDir()
	n := &Node{
		Name:    short + "@" + addr,
		Address: addr,
		DataDir: filepath.Join(dir, "data"),
		Args:    args,
		h:       h,
		logPath: h.logPath(short + "@" + addr),
	}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--api_bearer_token="); ok {
			n.token = v // Call authenticates as the operator would
		}
	}
	h.mu.Lock()
	h.nodes = append(h.nodes, n)
	h.mu.Unlock()
	return n
}

// Start runs the node's process. It does not wait for the API.
func (n *Node) Start() {
	n.h.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.h.t.Fatalf("start %s: already running", n.Name)
	}
	args := append([]string{
		"--config=",
		"--node_name=" + n.Name,
		"--listen_address=" + n.Address,
		"--data_dir=" + n.DataDir,
		fmt.Sprintf("--api_port=%d", APIPort),
		fmt.Sprintf("--signaling_port=%d", SignalingPort),
		fmt.Sprintf("--cluster_port=%d", ClusterPort),
		"--cluster_secret=" + ClusterSecret,
		"--log_level=debug",
	}, n.Args...)
	if n.Bare {
		args = n.Args
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.h.t.Fatalf("start %s: %v", n.Name, err)
	}
	fmt.Fprintf(logf, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(redacted(args), " "))
	bin := n.h.bin
	if n.Bin != "" {
		bin = n.Bin
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = n.WorkDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	// The node dies with the test process, even if the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.h.t.Fatalf("start %s: %v", n.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
}

// cleanEnv is the environment without SORAD_* variables, so the developer's
// settings do not leak into test nodes.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SORAD_") {
			env = append(env, kv)
		}
	}
	return env
}

// Pid returns the running process's ID, or 0.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the process is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Exited reports whether the node's process ended by itself, and with what
// status; if it did, the node may be started again.
func (n *Node) Exited() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false, nil
	}
	select {
	case <-n.exited:
		n.cmd = nil
		return true, n.waitErr
	default:
		return false, nil
	}
}

// Kill sends SIGKILL (kill -9) and waits for the process to go.
func (n *Node) Kill() { n.signal(syscall.SIGKILL, 5*time.Second) }

// Stop sends SIGTERM and waits up to 15 s for a clean exit (status 0); it
// fails the test otherwise.
func (n *Node) Stop() {
	n.h.t.Helper()
	if !n.Running() {
		return
	}
	if !n.signal(syscall.SIGTERM, 15*time.Second) {
		n.h.t.Errorf("%s did not stop within 15s of SIGTERM; killed", n.Name)
		n.Kill()
		return
	}
	n.mu.Lock()
	err := n.waitErr
	n.mu.Unlock()
	if err != nil {
		n.h.t.Errorf("%s exited uncleanly after SIGTERM: %v", n.Name, err)
	}
}

// Reload sends SIGHUP, which makes the node re-read its certificate and
// secret files, and waits until its log says it did.
func (n *Node) Reload() {
	n.h.t.Helper()
	before := strings.Count(n.Log(), "SIGHUP:")
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil {
		n.h.t.Fatalf("reload %s: not running", n.Name)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	Eventually(n.h.t, 10*time.Second, n.Name+" handles SIGHUP", func() bool {
		return strings.Count(n.Log(), "SIGHUP:") > before
	})
}

// signal sends sig and waits up to wait for the process to exit; it reports
// whether it did.
func (n *Node) signal(sig syscall.Signal, wait time.Duration) bool {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		return false
	}
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
	return true
}

// Restart stops the node cleanly and starts it again on the same data.
func (n *Node) Restart() {
	n.h.t.Helper()
	n.Stop()
	n.Start()
}

// Log returns the node's whole log.
func (n *Node) Log() string { return n.LogTail(0) }

// LogTail returns the last lines of the node's log (all of it for 0).
func (n *Node) LogTail(lines int) string {
	f, err := os.Open(n.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
	if lines > 0 && len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// NewBareNode prepares a node that runs with no flags at all in a fresh
// working directory: the defaults, 127.0.0.1 and port 3000.
func (h *Harness) NewBareNode() *Node {
	dir := h.t.TempDir()
	n := &Node{
		Name:    "sorad@127.0.0.1",
		Address: "127.0.0.1",
		DataDir: filepath.Join(dir, "data"),
		Bare:    true,
		WorkDir: dir,
		h:       h,
		logPath: h.logPath("bare"),
		apiPort: 3000,
	}
	h.mu.Lock()
	h.nodes = append(h.nodes, n)
	h.mu.Unlock()
	return n
}

func (n *Node) port() int {
	if n.apiPort != 0 {
		return n.apiPort
	}
	return APIPort
}

// APIURL is the node's API endpoint.
func (n *Node) APIURL() string { return fmt.Sprintf("http://%s:%d/", n.Address, n.port()) }

// ClusterAddress is the node's cluster port address.
func (n *Node) ClusterAddress() string { return fmt.Sprintf("%s:%d", n.Address, ClusterPort) }

// Response is an API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r Response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("decode %q: %w", r.Body, err)
	}
	return nil
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// Call posts body (nil for none; a []byte or string is sent as is, anything
// else as JSON) to the node's API with the given target.
func (n *Node) Call(target string, body any) (Response, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return Response{}, err
		}
	}
	req, err := http.NewRequest(http.MethodPost, n.APIURL(), bytes.NewReader(raw))
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("x-sora-target", target)
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if n.token != "" {
		req.Header.Set("Authorization", "Bearer "+n.token)
	}
	return do(req)
}

func do(req *http.Request) (Response, error) {
	resp, err := apiClient.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// MustCall is Call that fails the test on a transport error or a status
// other than want.
func (n *Node) MustCall(want int, target string, body any) Response {
	n.h.t.Helper()
	r, err := n.Call(target, body)
	if err != nil {
		n.h.t.Fatalf("%s %s: %v", n.Name, target, err)
	}
	if r.Status != want {
		n.h.t.Fatalf("%s %s: status %d, want %d: %s", n.Name, target, r.Status, want, r.Body)
	}
	return r
}

// Eventually polls cond every 50 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// Options sends an OPTIONS / (a CORS preflight) to the node's API.
func (n *Node) Options() (Response, error) {
	req, err := http.NewRequest(http.MethodOptions, n.APIURL(), nil)
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("Origin", "http://127.0.0.1:5000")
	req.Header.Set("Access-Control-Request-Method", "POST")
	return do(req)
}

// Metric reads one unlabelled sample from the node's /metrics.
func (n *Node) Metric(name string) (float64, error) {
	resp, err := apiClient.Get(n.APIURL() + "metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// InternalPost sends an HTTP POST to a node's cluster port the way peers
// do: as the member ts proves (TLS with ALPN), or with ts nil as a peer of
// an unauthenticated cluster port (the internal HTTP protocol's byte 2
// first). It lets tests check what the cluster port accepts without a
// peer's help.
func (n *Node) InternalPost(path string, header http.Header, body []byte, ts *trust.Store) (Response, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if ts != nil {
				tc := tls.Client(c, ts.ClientConfig(trust.ProtoHTTP))
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return nil, err
				}
				return tc, nil
			}
			if _, err := c.Write([]byte{2}); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "http://"+n.ClusterAddress()+path, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// redacted is args as the node's log shows them: the values of secret and
// token flags (not of the files that hold them) replaced, since failing
// tests print the log.
func redacted(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if hasValue && (strings.Contains(name, "secret") || strings.Contains(name, "token")) && !strings.HasSuffix(name, "_file") {
			a = "--" + name + "=REDACTED"
		}
		out[i] = a
	}
	return out
}
