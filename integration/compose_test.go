package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sorad/sorad/integration/harness"
	"github.com/sorad/sorad/integration/soraclient"
)

// The compose cluster of docker-compose.yml, run for real with the image
// built from a static binary (deploy/compose.prebuilt.yml): it forms, serves
// signaling, media and the devtools page on the published ports, survives a
// node's stop and start, and a rolling rebuild of one node.
//
// Everything the test reaches is on the host's loopback (the ports are
// published on one 127.0.x.y address of this run) or inside the compose
// network the test creates. The nodes' DNS forwards nowhere (a test-only
// override points it at the container's own loopback), so a name lookup of
// a stopped peer stays inside the container.

const (
	composeNodes       = 3
	composeVersion     = "compose-test-1"
	composeRebuilt     = "compose-test-2"
	composeTestTimeout = 4 * time.Minute
)

// composeTool is how this machine runs compose: the docker CLI's plugin
// ("docker compose") or the standalone docker-compose.
type composeTool struct{ argv []string }

func (c composeTool) String() string { return strings.Join(c.argv, " ") }

// composeTools lists the compose commands that answer "version", the
// plugin first.
func composeTools() []composeTool {
	var out []composeTool
	for _, argv := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if _, err := exec.LookPath(argv[0]); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := exec.CommandContext(ctx, argv[0], append(slices.Clone(argv[1:]), "version")...).Run()
		cancel()
		if err == nil {
			out = append(out, composeTool{argv: argv})
		}
	}
	return out
}

// dockerEngine returns nil when a Docker engine answers.
func dockerEngine() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker info: %w: %s", err, strings.Join(strings.Fields(lastLines(string(out), 2)), " "))
	}
	return nil
}

// loud reports what a reader of a CI log must not miss, in the test's log
// and on stderr.
func loud(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log("!!! " + msg)
	fmt.Fprintln(os.Stderr, "!!! "+t.Name()+": "+msg)
}

// composeProject is one run of the compose cluster: a project name of its
// own, the files, and the variables docker-compose.yml reads.
type composeProject struct {
	t         *testing.T
	tool      composeTool
	root      string // the module root, where docker-compose.yml is
	name      string
	files     []string
	secret    string
	image     string
	publishIP string
	prebuilt  string // build context: the binary sorad and data/
}

func newComposeProject(t *testing.T, tool composeTool) *composeProject {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The nodes' DNS: docker's resolver on the compose network answers the
	// service names and forwards the rest to these servers; the
	// container's own loopback has none, so nothing leaves the network.
	dns := filepath.Join(dir, "compose.test-dns.yml")
	var b strings.Builder
	b.WriteString("services:\n")
	for i := 1; i <= composeNodes; i++ {
		fmt.Fprintf(&b, "  sorad%d:\n    dns: [127.0.0.1]\n", i)
	}
	if err := os.WriteFile(dns, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	prebuilt := filepath.Join(dir, "prebuilt")
	if err := os.MkdirAll(filepath.Join(prebuilt, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	suffix := randomHex(t, 4)
	return &composeProject{
		t:    t,
		tool: tool,
		root: root,
		name: "soradcomposetest" + suffix,
		files: []string{
			filepath.Join(root, "docker-compose.yml"),
			filepath.Join(root, "deploy", "compose.prebuilt.yml"),
			dns,
		},
		secret:    randomHex(t, 32),
		image:     "sorad-compose-test:" + suffix,
		publishIP: harness.NextAddress(),
		prebuilt:  prebuilt,
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// env is the environment of the compose commands: this process's, less
// any SORAD_ variable, plus the project's.
func (p *composeProject) env(withSecret bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SORAD_") && !strings.HasPrefix(kv, "COMPOSE_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"SORAD_IMAGE="+p.image,
		"SORAD_PUBLISH_IP="+p.publishIP,
		"SORAD_PREBUILT_DIR="+p.prebuilt,
		"SORAD_PREBUILT_DOCKERFILE="+filepath.Join(p.root, "deploy", "Dockerfile.prebuilt"),
	)
	if withSecret {
		env = append(env, "SORAD_CLUSTER_SECRET="+p.secret)
	}
	return env
}

// compose runs the project's compose command with args and returns its
// output with the secret blanked out.
func (p *composeProject) compose(ctx context.Context, tool composeTool, withSecret bool, args ...string) (string, error) {
	out, err := p.composeRaw(ctx, tool, withSecret, args...)
	return strings.ReplaceAll(out, p.secret, "<cluster secret>"), err
}

// composeRaw is compose without the blanking: its output may hold the
// secret and is never printed.
func (p *composeProject) composeRaw(ctx context.Context, tool composeTool, withSecret bool, args ...string) (string, error) {
	argv := slices.Clone(tool.argv[1:])
	argv = append(argv, "-p", p.name)
	for _, f := range p.files {
		argv = append(argv, "-f", f)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, tool.argv[0], argv...)
	cmd.Dir = p.root
	cmd.Env = p.env(withSecret)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", tool, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// must runs a compose command that the test needs to succeed.
func (p *composeProject) must(timeout time.Duration, args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := p.compose(ctx, p.tool, true, args...)
	if err != nil {
		p.t.Fatalf("%v\n%s", err, lastLines(out, 40))
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// node describes compose service sorad<i> as the host reaches it.
type composeNode struct {
	service   string
	name      string // node_name
	api       string
	signaling string
	devtools  string
	mediaPort int
}

func (p *composeProject) node(i int) composeNode {
	return composeNode{
		service:   fmt.Sprintf("sorad%d", i),
		name:      fmt.Sprintf("sorad@sorad%d", i),
		api:       fmt.Sprintf("http://%s:%d/", p.publishIP, 3000+i),
		signaling: fmt.Sprintf("ws://%s:%d/signaling", p.publishIP, 5000+i),
		devtools:  fmt.Sprintf("http://%s:%d/devtools/", p.publishIP, 5000+i),
		mediaPort: 5100 + i,
	}
}

func TestCompose(t *testing.T) {
	tools := composeTools()
	if len(tools) == 0 {
		if os.Getenv("CI") == "" {
			loud(t, "SKIPPED: neither `docker compose` nor `docker-compose` runs here (apt-get install docker.io docker-compose)")
			t.Skip("no compose tool")
		}
		t.Fatal("CI: neither `docker compose` nor `docker-compose` runs here; .ci/run installs docker.io and docker-compose")
	}
	p := newComposeProject(t, tools[0])
	for _, tool := range tools {
		ok := t.Run("config/"+strings.ReplaceAll(tool.String(), " ", "_"), func(t *testing.T) {
			p.checkConfig(t, tool)
		})
		if !ok {
			t.Fatalf("the configuration %s renders is not the cluster's: not running it", tool)
		}
	}
	if err := dockerEngine(); err != nil {
		loud(t, "NO DOCKER ENGINE (%v): the compose cluster was NOT run; only its configuration was rendered and checked (.ci/run starts dockerd)", err)
		if os.Getenv("CI") == "" {
			t.Skip("no Docker engine")
		}
		return
	}
	t.Logf("compose: %s, project %s, published on %s", p.tool, p.name, p.publishIP)
	p.runCluster(t)
}

// renderedService is what the checks read of a service in the output of
// "compose config" (v1 writes ports as strings, v2 as mappings).
type renderedService struct {
	Build struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Image       string            `yaml:"image"`
	Environment map[string]string `yaml:"environment"`
	Ports       []yaml.Node       `yaml:"ports"`
	Volumes     []yaml.Node       `yaml:"volumes"`
	DNS         []string          `yaml:"dns"`
}

// portString writes a rendered port as host_ip:published:target/protocol.
func portString(n yaml.Node) (string, error) {
	if n.Kind == yaml.ScalarNode {
		return n.Value, nil
	}
	var m struct {
		HostIP    string `yaml:"host_ip"`
		Published string `yaml:"published"`
		Target    int    `yaml:"target"`
		Protocol  string `yaml:"protocol"`
	}
	if err := n.Decode(&m); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:%s:%d/%s", m.HostIP, m.Published, m.Target, m.Protocol), nil
}

// volumeString writes a rendered volume as source:target.
func volumeString(n yaml.Node) (string, error) {
	if n.Kind == yaml.ScalarNode {
		s, _, _ := strings.Cut(strings.TrimSuffix(n.Value, ":rw"), ",")
		return s, nil
	}
	var m struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	}
	if err := n.Decode(&m); err != nil {
		return "", err
	}
	return m.Source + ":" + m.Target, nil
}

// checkConfig renders the cluster definition with the prebuilt override
// and checks what the cluster depends on: three services, one image built
// from the prebuilt binary, the ports on the publish address only, each
// node's media port the same inside and out and announced on that address.
func (p *composeProject) checkConfig(t *testing.T, tool composeTool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Without the secret the definition refuses to render.
	out, err := p.compose(ctx, tool, false, "config")
	if err == nil || !strings.Contains(out, "SORAD_CLUSTER_SECRET") {
		t.Errorf("config without SORAD_CLUSTER_SECRET: err %v, want a refusal naming it; output:\n%s", err, lastLines(out, 10))
	}

	// The rendered text holds the secret: it is decoded, never printed.
	raw, err := p.composeRaw(ctx, tool, true, "config")
	if err != nil {
		t.Fatalf("%v\n%s", err, lastLines(strings.ReplaceAll(raw, p.secret, "<cluster secret>"), 20))
	}
	var cfg struct {
		Services map[string]renderedService `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(configYAML(raw)), &cfg); err != nil {
		t.Fatalf("decode the rendered config: %v", err)
	}
	var services []string
	for name := range cfg.Services {
		services = append(services, name)
	}
	slices.Sort(services)
	if want := []string{"sorad1", "sorad2", "sorad3"}; !slices.Equal(services, want) {
		t.Fatalf("services %v, want %v", services, want)
	}
	for i := 1; i <= composeNodes; i++ {
		n := p.node(i)
		s := cfg.Services[n.service]
		if s.Image != p.image {
			t.Errorf("%s: image %q, want %q", n.service, s.Image, p.image)
		}
		if s.Build.Context != p.prebuilt || filepath.Base(s.Build.Dockerfile) != "Dockerfile.prebuilt" {
			t.Errorf("%s: build %+v, want the prebuilt context %s and Dockerfile.prebuilt", n.service, s.Build, p.prebuilt)
		}
		var contacts []string
		for j := 1; j <= composeNodes; j++ {
			if j != i {
				contacts = append(contacts, p.node(j).name)
			}
		}
		wantEnv := map[string]string{
			"SORAD_NODE_NAME":              n.name,
			"SORAD_CONTACT_NODE_NAME_LIST": strings.Join(contacts, ","),
			"SORAD_EXTERNAL_API_URL":       n.api,
			"SORAD_EXTERNAL_SIGNALING_URL": n.signaling,
			"SORAD_API_CORS_ORIGIN":        strings.TrimSuffix(n.devtools, "/devtools/"),
			"SORAD_MEDIA_UDP_PORT":         strconv.Itoa(n.mediaPort),
			"SORAD_MEDIA_PUBLIC_IP_LIST":   p.publishIP,
		}
		for k, v := range wantEnv {
			if got := s.Environment[k]; got != v {
				t.Errorf("%s: %s=%q, want %q", n.service, k, got, v)
			}
		}
		if s.Environment["SORAD_CLUSTER_SECRET"] != p.secret {
			t.Errorf("%s: SORAD_CLUSTER_SECRET is not the secret given", n.service)
		}
		var ports []string
		for _, pn := range s.Ports {
			ps, err := portString(pn)
			if err != nil {
				t.Fatalf("%s: port: %v", n.service, err)
			}
			ports = append(ports, ps)
		}
		slices.Sort(ports)
		wantPorts := []string{
			fmt.Sprintf("%s:%d:3000/tcp", p.publishIP, 3000+i),
			fmt.Sprintf("%s:%d:5000/tcp", p.publishIP, 5000+i),
			fmt.Sprintf("%s:%d:%d/udp", p.publishIP, n.mediaPort, n.mediaPort),
		}
		if !slices.Equal(ports, wantPorts) {
			t.Errorf("%s: ports %v, want %v", n.service, ports, wantPorts)
		}
		var volumes []string
		for _, vn := range s.Volumes {
			vs, err := volumeString(vn)
			if err != nil {
				t.Fatalf("%s: volume: %v", n.service, err)
			}
			volumes = append(volumes, vs)
		}
		if want := []string{n.service + "-data:/var/lib/sorad/data"}; !slices.Equal(volumes, want) {
			t.Errorf("%s: volumes %v, want %v", n.service, volumes, want)
		}
		if !slices.Equal(s.DNS, []string{"127.0.0.1"}) {
			t.Errorf("%s: dns %v, want the test override's [127.0.0.1]", n.service, s.DNS)
		}
	}
}

// configYAML drops what some compose versions print before the document
// (warnings on stderr, which the combined output holds).
func configYAML(out string) string {
	var b strings.Builder
	started := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !started {
			if !strings.HasPrefix(line, "name:") && !strings.HasPrefix(line, "services:") && !strings.HasPrefix(line, "version:") {
				continue
			}
			started = true
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// buildBinary builds the static binary of the image into the prebuilt
// context, reporting version.
func (p *composeProject) buildBinary(t *testing.T, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version,
		"-o", filepath.Join(p.prebuilt, "sorad"), "./cmd/sorad")
	cmd.Dir = p.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build of cmd/sorad: %v\n%s", err, out)
	}
}

// imageID is the ID of the project's image as tagged now.
func (p *composeProject) imageID(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", "{{.Id}}", p.image).CombinedOutput()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v\n%s", p.image, err, out)
	}
	return strings.TrimSpace(string(out))
}

// composeNodeEntry is one element of ListClusterNodes, with the version.
type composeNodeEntry struct {
	NodeName  string `json:"node_name"`
	Connected bool   `json:"connected"`
	Mode      string `json:"mode"`
	Epoch     uint64 `json:"epoch"`
	Version   string `json:"version"`
}

var composeHTTP = &http.Client{Timeout: 5 * time.Second}

// composeCall calls target on the node's API.
func composeCall(n composeNode, target string, body any) (int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	if body == nil {
		b = []byte("{}")
	}
	req, err := http.NewRequest(http.MethodPost, n.api, bytesReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("x-sora-target", target)
	req.Header.Set("content-type", "application/json")
	resp, err := composeHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	return resp.StatusCode, rb, err
}

// composeList is n's ListClusterNodes (every known node), or nil when n
// does not answer.
func composeList(n composeNode) []composeNodeEntry {
	status, body, err := composeCall(n, targetListClusterNodes, map[string]bool{"include_all_known_nodes": true})
	if err != nil || status != http.StatusOK {
		return nil
	}
	var out []composeNodeEntry
	if json.Unmarshal(body, &out) != nil {
		return nil
	}
	return out
}

func composeEntry(list []composeNodeEntry, name string) (composeNodeEntry, bool) {
	for _, e := range list {
		if e.NodeName == name {
			return e, true
		}
	}
	return composeNodeEntry{}, false
}

// changeMode sets n's mode.
func changeMode(t *testing.T, n composeNode, mode string) {
	t.Helper()
	status, body, err := composeCall(n, targetChangeMode, map[string]string{"mode": mode})
	if err != nil || status != http.StatusOK {
		t.Fatalf("ChangeMode %s on %s: %v %d %s", mode, n.service, err, status, body)
	}
}

// checkDevtoolsServed expects the devtools page at url: 200 text/html.
func checkDevtoolsServed(t *testing.T, url string) {
	t.Helper()
	resp, err := composeHTTP.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if ct := resp.Header.Get("content-type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET %s: %d %q, want 200 text/html; body %.200s", url, resp.StatusCode, ct, body)
	}
	if !strings.Contains(string(body), "sorad devtools") {
		t.Errorf("GET %s: not the devtools page: %.200s", url, body)
	}
}

// composeMedia is a publisher and a receiver of one channel, both on the
// host, their ICE on loopback only.
type composeMedia struct {
	channel  string
	pub, sub *soraclient.Client
}

// connectMedia connects a sendonly and a recvonly client of channel to n
// and waits for audio and video packets at the receiver. The clients
// follow redirects; it returns them with the node that served them.
func connectMedia(t *testing.T, ctx context.Context, n composeNode, channel string) *composeMedia {
	t.Helper()
	opts := soraclient.Options{SignalingURL: n.signaling, ChannelID: channel, Audio: true, Video: true, VideoCodec: "VP8",
		ICEIPFilter: net.IP.IsLoopback} // the media leaves through no other interface of the host
	pubOpts, subOpts := opts, opts
	pubOpts.Role, subOpts.Role = "sendonly", "recvonly"
	pub, err := soraclient.Connect(ctx, pubOpts)
	if err != nil {
		t.Fatalf("publisher of %s via %s: %v", channel, n.service, err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := soraclient.Connect(ctx, subOpts)
	if err != nil {
		t.Fatalf("receiver of %s via %s: %v", channel, n.service, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	m := &composeMedia{channel: channel, pub: pub, sub: sub}
	m.waitFlow(t, ctx, 50)
	for _, c := range []*soraclient.Client{pub, sub} {
		checkLoopbackCandidates(t, c)
	}
	return m
}

// checkLoopbackCandidates checks that c offered only loopback candidates:
// its media left the host through no other interface.
func checkLoopbackCandidates(t *testing.T, c *soraclient.Client) {
	t.Helper()
	desc := c.LocalDescription()
	if desc == nil {
		t.Fatalf("%s has no local description", c.ConnectionID())
	}
	n := 0
	for _, line := range strings.Split(desc.SDP, "\n") {
		if !strings.HasPrefix(line, "a=candidate:") {
			continue
		}
		// foundation component transport priority address port typ ...
		f := strings.Fields(line)
		if ip := net.ParseIP(f[min(4, len(f)-1)]); ip == nil || !ip.IsLoopback() {
			t.Errorf("%s offered a candidate off loopback: %s", c.ConnectionID(), line)
		}
		n++
	}
	if n == 0 {
		t.Errorf("%s offered no candidate", c.ConnectionID())
	}
}

// waitFlow waits until the receiver has more packets of each kind than
// it had, at least n more.
func (m *composeMedia) waitFlow(t *testing.T, ctx context.Context, n int64) {
	t.Helper()
	have := m.sub.Received()
	for _, kind := range []string{"audio", "video"} {
		key := m.pub.ConnectionID() + "/" + kind
		if err := m.sub.WaitPackets(ctx, m.pub.ConnectionID(), kind, have[key].Packets+n); err != nil {
			t.Fatalf("channel %s: the receiver got no %s from the publisher: %v (received %v)", m.channel, kind, err, m.sub.Received())
		}
	}
}

func (m *composeMedia) close() {
	_ = m.pub.Close()
	_ = m.sub.Close()
}

// waitCluster waits until every node in via lists want's nodes (and only
// them among the connected), as check accepts each entry.
func waitCluster(t *testing.T, via []composeNode, want []string, timeout time.Duration, what string, check func(composeNodeEntry) bool) {
	t.Helper()
	for _, n := range via {
		harness.Eventually(t, timeout, n.service+" lists "+what, func() bool {
			list := composeList(n)
			var connected []string
			for _, e := range list {
				if e.Connected {
					connected = append(connected, e.NodeName)
				}
			}
			slices.Sort(connected)
			if !slices.Equal(connected, want) {
				return false
			}
			for _, name := range want {
				if e, _ := composeEntry(list, name); !check(e) {
					return false
				}
			}
			return true
		})
	}
}

func (p *composeProject) runCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), composeTestTimeout)
	defer cancel()
	nodes := make([]composeNode, composeNodes)
	var all []string
	for i := range nodes {
		nodes[i] = p.node(i + 1)
		all = append(all, nodes[i].name)
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	var images []string
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if t.Failed() {
			out, _ := p.compose(cctx, p.tool, true, "ps")
			t.Logf("compose ps:\n%s", out)
			out, _ = p.compose(cctx, p.tool, true, "logs", "--no-color", "--tail=40")
			t.Logf("compose logs (last lines of each node):\n%s", out)
		}
		if out, err := p.compose(cctx, p.tool, true, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("clean-up: %v\n%s", err, lastLines(out, 20))
		}
		args := append([]string{"rmi", p.image}, images...)
		if out, err := exec.CommandContext(cctx, "docker", args...).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such image") {
			t.Errorf("clean-up: docker rmi: %v\n%s", err, out)
		}
	})

	start := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	// Up: three nodes from an image of a static binary.
	p.buildBinary(t, composeVersion)
	p.must(3*time.Minute, "up", "-d", "--build")
	images = append(images, p.imageID(t))
	waitCluster(t, nodes, all, 60*time.Second, "three connected nodes in mode normal", func(e composeNodeEntry) bool {
		return e.Mode == "normal" && e.Epoch > 0 && e.Version == composeVersion
	})
	epochs := map[string]uint64{}
	for _, e := range composeList(n1) {
		epochs[e.NodeName] = e.Epoch
	}
	for _, n := range nodes {
		checkDevtoolsServed(t, n.devtools)
	}

	phase("formed")
	// Media from the host through every node's published UDP port: each
	// channel is placed on the node contacted (the least loaded, or the
	// contacted one on a tie).
	media := make([]*composeMedia, composeNodes)
	for i, n := range nodes {
		media[i] = connectMedia(t, ctx, n, fmt.Sprintf("compose-%d", i+1))
		if got := media[i].pub.URL(); got != n.signaling {
			t.Errorf("channel %s: served by %s, want the contacted %s", media[i].channel, got, n.signaling)
		}
		t.Logf("media through %s (udp %d): %v", n.service, n.mediaPort, media[i].sub.Received())
	}

	phase("media through every node")
	// stop sorad2: the others list it disconnected and go on serving, its
	// channel included.
	p.must(time.Minute, "stop", n2.service)
	waitCluster(t, []composeNode{n1, n3}, []string{n1.name, n3.name}, 30*time.Second, n2.service+" gone", func(composeNodeEntry) bool { return true })
	if e, ok := composeEntry(composeList(n1), n2.name); !ok || e.Connected {
		t.Errorf("%s after stop %s: %+v (listed %v), want it listed disconnected", n1.service, n2.service, e, ok)
	}
	media[0].waitFlow(t, ctx, 50)
	media[2].waitFlow(t, ctx, 50)
	media[1].close()
	media[1] = connectMedia(t, ctx, n1, media[1].channel)
	if got := media[1].pub.URL(); got == n2.signaling {
		t.Errorf("channel %s served by the stopped %s", media[1].channel, n2.service)
	}
	t.Logf("channel %s of the stopped %s now served by %s", media[1].channel, n2.service, media[1].pub.URL())

	phase(n2.service + " stopped, its channel served by another node")
	// start sorad2: it rejoins with its epoch one up.
	p.must(time.Minute, "start", n2.service)
	waitCluster(t, nodes, all, 60*time.Second, n2.service+" back with epoch+1", func(e composeNodeEntry) bool {
		return e.Mode == "normal" && (e.NodeName != n2.name || e.Epoch == epochs[n2.name]+1)
	})
	checkDevtoolsServed(t, n2.devtools)

	phase(n2.service + " started and back in the cluster")
	// Rolling rebuild of sorad1: block new sessions, drain it (the test's
	// clients on it leave), rebuild the image with another version, and
	// recreate only sorad1 from it.
	changeMode(t, n1, "block_new_session")
	for _, m := range media {
		if m.pub.URL() == n1.signaling {
			m.close()
		}
	}
	harness.Eventually(t, 30*time.Second, n1.service+" drained (ListConnections [])", func() bool {
		status, body, err := composeCall(n1, "Sora_20201013.ListConnections", nil)
		return err == nil && status == http.StatusOK && strings.TrimSpace(string(body)) == "[]"
	})
	phase(n1.service + " drained")
	p.buildBinary(t, composeRebuilt)
	p.must(3*time.Minute, "build", n1.service)
	images = append(images, p.imageID(t))
	if images[0] == images[1] {
		t.Fatalf("the rebuilt image is the old one (%s)", images[0])
	}
	p.must(2*time.Minute, "up", "-d", "--no-deps", n1.service)
	phase(n1.service + " rebuilt and recreated")
	// It comes back with its data: epoch + 1, the mode it had, the new
	// version; the others still run the old image.
	waitCluster(t, nodes, all, 60*time.Second, n1.service+" rebuilt", func(e composeNodeEntry) bool {
		if e.NodeName == n1.name {
			return e.Version == composeRebuilt && e.Epoch == epochs[n1.name]+1 && e.Mode == "block_new_session"
		}
		return e.Version == composeVersion
	})
	changeMode(t, n1, "normal")
	waitCluster(t, nodes, all, 30*time.Second, "every node in mode normal", func(e composeNodeEntry) bool { return e.Mode == "normal" })
	checkDevtoolsServed(t, n1.devtools)
	m := connectMedia(t, ctx, n1, "compose-rebuilt")
	if got := m.pub.URL(); got != n1.signaling {
		t.Errorf("channel %s: served by %s, want the rebuilt %s", m.channel, got, n1.signaling)
	}
	t.Logf("media through the rebuilt %s: %v", n1.service, m.sub.Received())
	m.close()
	for _, m := range media {
		m.close()
	}
	phase(n1.service + " back in mode normal, media through it")
}

// TestComposeDockerfilesAlike checks that deploy/Dockerfile.prebuilt makes
// the image deploy/Dockerfile makes: their last stages are the same but
// for where the binary and the data directory come from.
func TestComposeDockerfilesAlike(t *testing.T) {
	lastStage := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var stage []string
		var cont bool
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, "FROM ") {
				stage = nil
			}
			if cont {
				stage[len(stage)-1] += " " + line
			} else {
				stage = append(stage, line)
			}
			cont = strings.HasSuffix(line, "\\")
		}
		return stage
	}
	full := lastStage(filepath.Join("..", "deploy", "Dockerfile"))
	prebuilt := lastStage(filepath.Join("..", "deploy", "Dockerfile.prebuilt"))
	for i, line := range full {
		line = strings.Replace(line, "COPY --from=build /out/sorad ", "COPY sorad ", 1)
		full[i] = strings.Replace(line, "COPY --from=build --chown=10001:10001 /out/data ", "COPY --chown=10001:10001 data ", 1)
	}
	if !slices.Equal(full, prebuilt) {
		t.Errorf("the last stages differ:\ndeploy/Dockerfile:\n%s\ndeploy/Dockerfile.prebuilt:\n%s", strings.Join(full, "\n"), strings.Join(prebuilt, "\n"))
	}
	if len(full) == 0 || full[0] != "FROM scratch" {
		t.Errorf("the image's last stage starts %q, want FROM scratch", full)
	}
}
