package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/harness"
)

// dashboardFile is the Grafana dashboard shipped for sorad's metrics.
const dashboardFile = "../deploy/grafana/sorad-dashboard.json"

// dashboardExprs returns every PromQL expression of the dashboard's panels
// (rows included) and of its template variables.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s is not a dashboard: %v", dashboardFile, err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Panels) > 0 {
			t.Errorf("row %q holds panels of its own; the test reads only top-level ones", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q has a target without an expression", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

var (
	// metricRef is a sorad metric named in an expression, with its label
	// matchers when it has any.
	metricRef = regexp.MustCompile(`\b(sorad_[a-z0-9_]+)(\{[^}]*\})?`)
	// labelMatcher is one matcher of a selector.
	labelMatcher = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
)

// TestDashboardMetricsExist: every metric the Grafana dashboard in deploy/
// queries is in a live node's /metrics, and every label value it selects
// on (state="leader", outcome="failed", ...) appears on that metric.
func TestDashboardMetricsExist(t *testing.T) {
	exprs := dashboardExprs(t)
	if len(exprs) < 10 {
		t.Fatalf("only %d expressions in the dashboard", len(exprs))
	}

	// Two nodes, a channel with media on one, and calls to both, one of
	// them forwarded: every metric family then has samples.
	h := harness.New(t, soradBin)
	nodes := startCluster(t, h, 2)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, sub, err := pair(ctx, []string{signalingURL(a)}, "dashboard")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer sub.Close()
	b.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "dashboard"})
	a.MustCall(200, "Sora_20201013.ListChannelConnections", map[string]string{"channel_id": "dashboard"})
	a.MustCall(400, "Sora_20201013.ListChannelConnections", map[string]string{})

	exposition := scrape(t, a) + scrape(t, b)
	samples := map[string][]string{} // metric name -> its sample lines
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		samples[name] = append(samples[name], line)
	}
	checked := 0
	for _, expr := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(expr, -1) {
			name, selector := m[1], m[2]
			lines := samples[name]
			if len(lines) == 0 {
				t.Errorf("the dashboard queries %s (in %q), which /metrics does not have", name, expr)
				continue
			}
			checked++
			for _, lm := range labelMatcher.FindAllStringSubmatch(selector, -1) {
				label, op, value := lm[1], lm[2], lm[3]
				if label == "instance" || label == "job" { // Prometheus adds them
					continue
				}
				var want []string
				switch op {
				case "=":
					want = []string{label + `="` + value + `"`}
				case "=~":
					for _, v := range strings.Split(value, "|") {
						want = append(want, label+`="`+v+`"`)
					}
				default:
					want = []string{label + `="`}
				}
				for _, w := range want {
					if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, w) }) {
						t.Errorf("the dashboard selects %s{%s} (in %q); no sample of %s has it", name, w, expr, name)
					}
				}
			}
		}
	}
	if checked < len(exprs) {
		t.Errorf("only %d metric references found in %d expressions", checked, len(exprs))
	}
}

// scrape returns a node's /metrics text.
func scrape(t *testing.T, n *harness.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics of %s: %d %v", n.Name, resp.StatusCode, err)
	}
	return string(b)
}
