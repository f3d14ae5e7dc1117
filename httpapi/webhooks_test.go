package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/integration/soraclient"
	"github.com/sorad/sorad/media"
	"github.com/sorad/sorad/media/webhook"
)

// webhookCounters maps the webhook counters of GetStatsReport (Sora's
// names) to their sorad_webhooks_total samples on /metrics.
var webhookCounters = []struct {
	report, kind, outcome string
}{
	{"total_auth_webhook_allowed", "auth", "allowed"},
	{"total_auth_webhook_denied", "auth", "denied"},
	{"total_successful_auth_webhook", "auth", "successful"},
	{"total_failed_auth_webhook", "auth", "failed"},
	{"total_successful_session_webhook", "session", "successful"},
	{"total_failed_session_webhook", "session", "failed"},
	{"total_ignored_session_webhook", "session", "ignored"},
	{"total_successful_event_webhook", "event", "successful"},
	{"total_failed_event_webhook", "event", "failed"},
	{"total_ignored_event_webhook", "event", "ignored"},
	{"total_successful_stats_webhook", "stats", "successful"},
	{"total_failed_stats_webhook", "stats", "failed"},
	{"total_ignored_stats_webhook", "stats", "ignored"},
}

// openClusterAt opens a single-node cluster of its own (the shared one
// must not be drained by a media plane closing) and waits until it is the
// leader in mode normal.
func openClusterAt(t *testing.T, host string, port int) *cluster.Cluster {
	t.Helper()
	cl, err := cluster.Open(testClusterConfig("hooks-test@"+host, host, port, filepath.Join(t.TempDir(), "data")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	waitFor(t, "the cluster to lead in mode normal", func() bool {
		return cl.Mode() == fsm.ModeNormal && cl.Stats().State == "leader"
	})
	return cl
}

// After real webhook calls to a real receiver (an auth webhook that
// allows, denies and fails; session and event webhooks that succeed and
// fail; statistics without a stats webhook), GetStatsReport has Sora's
// webhook counters with those values, and /metrics the same values as
// sorad_webhooks_total{kind,outcome}.
func TestWebhookCountersInReportAndMetrics(t *testing.T) {
	var failedDeliveries atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		switch {
		case r.URL.Path == "/auth" && body["client_id"] == "allowed":
			_, _ = io.WriteString(w, `{"allowed":true}`)
		case r.URL.Path == "/auth" && body["client_id"] == "denied":
			_, _ = io.WriteString(w, `{"allowed":false,"reason":"NO"}`)
		case r.URL.Path == "/auth":
			w.WriteHeader(http.StatusInternalServerError)
		case body["type"] == "session.destroyed", body["type"] == "connection.destroyed":
			failedDeliveries.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	}))
	t.Cleanup(receiver.Close)
	hooks, err := webhook.New(webhook.Config{AuthURL: receiver.URL + "/auth", SessionURL: receiver.URL + "/session", EventURL: receiver.URL + "/event",
		Timeout: 2 * time.Second, Label: "WebRTC SFU sorad", Version: "test", NodeName: "hooks-test@" + testHost, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hooks.Close)
	cl := openClusterAt(t, testHost, testPort+2)
	med, err := media.New(media.Config{ListenAddress: testHost, Version: "test", Webhooks: hooks, PingInterval: 100 * time.Millisecond,
		UserAgentStatsInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, cl, &media.Stats{})
	if err != nil {
		t.Fatal(err)
	}
	sig := httptest.NewServer(med.Handler())
	t.Cleanup(func() {
		if err := med.Close(); err != nil {
			t.Errorf("close media: %v", err)
		}
		sig.Close()
	})
	api := New(baseConfig(), cl, med)

	connect := func(clientID string) (*soraclient.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return soraclient.Connect(ctx, soraclient.Options{SignalingURL: "ws" + strings.TrimPrefix(sig.URL, "http") + "/signaling",
			ChannelID: "hooks", Role: "recvonly", ClientID: clientID, Audio: true})
	}
	allowed, err := connect("allowed")
	if err != nil {
		t.Fatal(err)
	}
	for clientID, code := range map[string]int{"denied": 4403, "failed": 4503} {
		var ce *soraclient.CloseError
		if _, err := connect(clientID); !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("connect %s: %v, want a close with %d", clientID, err, code)
		}
	}
	// The client's statistics go nowhere: no stats webhook is set.
	waitFor(t, "statistics ignored", func() bool { return med.WebhookReport().TotalIgnoredStatsWebhook > 0 })
	if err := allowed.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session.destroyed and connection.destroyed refused", func() bool {
		r := med.WebhookReport()
		return r.TotalFailedSessionWebhook == 1 && r.TotalFailedEventWebhook == 1
	})
	ignored := med.WebhookReport().TotalIgnoredStatsWebhook

	report := call(api, "Sora_20171010.GetStatsReport", `{}`)
	report.ok(t)
	got := report.object(t)
	want := map[string]int64{
		"total_auth_webhook_allowed": 1, "total_auth_webhook_denied": 1, "total_successful_auth_webhook": 2, "total_failed_auth_webhook": 1,
		// session.created; session.destroyed refused
		"total_successful_session_webhook": 1, "total_failed_session_webhook": 1, "total_ignored_session_webhook": 0,
		// connection.created; connection.destroyed refused
		"total_successful_event_webhook": 1, "total_failed_event_webhook": 1, "total_ignored_event_webhook": 0,
		"total_successful_stats_webhook": 0, "total_failed_stats_webhook": 0, "total_ignored_stats_webhook": ignored,
	}
	for k, v := range want {
		if got[k] != json.Number(strconv.FormatInt(v, 10)) {
			t.Errorf("GetStatsReport %s = %v, want %v", k, got[k], v)
		}
	}
	if failedDeliveries.Load() != 2 {
		t.Errorf("the receiver refused %d deliveries, want 2 (no retries by default)", failedDeliveries.Load())
	}

	a := serve(api, http.MethodGet, "/metrics", "")
	if a.Status != 200 {
		t.Fatalf("GET /metrics = %d", a.Status)
	}
	for _, c := range webhookCounters {
		v, ok := want[c.report]
		if !ok {
			t.Fatalf("no expected value for %s", c.report)
		}
		sample := "\n" + `sorad_webhooks_total{kind="` + c.kind + `",outcome="` + c.outcome + `"} ` + strconv.FormatInt(v, 10) + "\n"
		if !strings.Contains(string(a.Body), sample) {
			t.Errorf("/metrics lacks %q (GetStatsReport's %s)", strings.TrimSpace(sample), c.report)
		}
	}
	if len(webhookCounters) != len(want) {
		t.Errorf("%d counters mapped to /metrics, %d in the report", len(webhookCounters), len(want))
	}
}
