package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media"
)

// The whole file shares one real single-node cluster, opened in TestMain.
const (
	testHost      = "127.0.4.1"
	testNode      = "api-test@" + testHost
	testPort      = 25891
	testOrigin    = "http://127.0.0.1:5000"
	testMaxBody   = 4096
	testAPIURL    = "http://" + testHost + ":3000/"
	testSigURL    = "ws://" + testHost + ":5000/signaling"
	corsHeaders   = "Origin, X-Requested-With, Content-Type, Accept, x-sora-target"
	corsWithToken = corsHeaders + ", Authorization"
)

var (
	testMedia    *media.Media
	testCluster  *cluster.Cluster
	testNodeName string  // testNode, except in fuzz worker processes
	testAPI      *Server // built with baseConfig
)

var testLicense = fsm.License{MaxConnections: 100, MaxNodes: 3, SerialCode: "SERIAL-TEST", Type: "test"}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sorad-httpapi-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	cl, err := openTestCluster(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests:", err)
		return 1
	}
	testCluster, testNodeName = cl, cl.NodeName()
	_, host, _ := cluster.SplitNodeName(cl.NodeName())
	med, err := media.New(media.Config{ListenAddress: host, UDPPort: testPort, Version: "test"}, cl, &media.Stats{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests:", err)
		_ = cl.Close()
		return 1
	}
	testMedia = med
	testAPI = New(baseConfig(), cl, med)

	code := m.Run()

	testAPI = nil
	if err := med.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests: close media:", err)
		code = 1
	}
	if err := cl.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests: close cluster:", err)
		code = 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "httpapi tests: goroutines leaked:", err)
		code = 1
	}
	return code
}

// testClusterConfig is the configuration of a one-node test cluster with
// fast timings.
func testClusterConfig(name, host string, port int, dataDir string) cluster.Config {
	return cluster.Config{
		NodeName:             name,
		BindAddress:          host,
		Port:                 port,
		DataDir:              dataDir,
		ExternalAPIURL:       "http://" + host + ":3000/",
		ExternalSignalingURL: "ws://" + host + ":5000/signaling",
		Version:              "test",
		License:              testLicense,
		ProbeInterval:        200 * time.Millisecond,
		PeerTimeout:          time.Second,
		RequestTimeout:       3 * time.Second,
		Raft: cluster.RaftTiming{
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
		},
		Logger: slog.New(slog.DiscardHandler),
	}
}

// openTestCluster opens the shared node and waits until it is a registered
// member in mode normal and the Raft leader.
//
// `go test -fuzz` runs this binary again in worker processes, and each of
// them runs TestMain while the coordinating process still holds
// 127.0.4.1:25891. A worker therefore takes the first free address in
// 127.0.5.0/24 instead (FuzzDispatch does not depend on the node's name).
func openTestCluster(dir string) (*cluster.Cluster, error) {
	hosts := []string{testHost}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		hosts = nil
		for i := range 32 {
			hosts = append(hosts, fmt.Sprintf("127.0.5.%d", 1+(os.Getpid()+i)%250))
		}
	}
	var errs []error
	for _, host := range hosts {
		cfg := testClusterConfig("api-test@"+host, host, testPort, filepath.Join(dir, host))
		cfg.ExternalAPIURL, cfg.ExternalSignalingURL = testAPIURL, testSigURL
		cl, err := cluster.Open(cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !poll(10*time.Second, func() bool {
			return cl.Mode() == fsm.ModeNormal && cl.Stats().State == "leader"
		}) {
			err := fmt.Errorf("%s: not normal and leader after 10s (mode %s, raft %s)", cfg.NodeName, cl.Mode(), cl.Stats().State)
			return nil, errors.Join(err, cl.Close())
		}
		return cl, nil
	}
	return nil, errors.Join(errs...)
}

// poll reports whether cond became true within timeout. It is the only place
// these tests sleep.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func baseConfig() Config {
	return Config{CORSOrigin: testOrigin, MaxBodySize: testMaxBody, Version: "test", RequestTimeout: 3 * time.Second}
}

func newServer(change func(*Config)) *Server {
	cfg := baseConfig()
	if change != nil {
		change(&cfg)
	}
	return New(cfg, testCluster, testMedia)
}

// ---- requests and answers ----

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// withContentLength makes the request claim n bytes whatever its body holds.
func withContentLength(n int64) reqOpt {
	return func(r *http.Request) {
		r.ContentLength = n
		r.Header.Set("Content-Length", fmt.Sprint(n))
	}
}

// withUnknownLength sends the body as if chunked: no Content-Length.
func withUnknownLength() reqOpt {
	return func(r *http.Request) {
		r.ContentLength = -1
		r.Header.Del("Content-Length")
		r.TransferEncoding = []string{"chunked"}
	}
}

type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func serve(h http.Handler, method, path, body string, opts ...reqOpt) answer {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return answer{Status: res.StatusCode, Header: res.Header, Body: b}
}

// call posts body to / with x-sora-target (omitted when target is "").
func call(h http.Handler, target, body string, opts ...reqOpt) answer {
	base := []reqOpt{withHeader("Content-Type", "application/json")}
	if target != "" {
		base = append(base, withHeader("x-sora-target", target))
	}
	return serve(h, http.MethodPost, "/", body, append(base, opts...)...)
}

// decodeJSON decodes exactly one JSON value, numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// jsonType names the JSON type of a value from decodeJSON.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// normalize turns a Go value into what decodeJSON gives for its encoding.
func normalize(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonBody checks the content type and returns the decoded body.
func (a answer) jsonBody(t testing.TB) any {
	t.Helper()
	if got := a.Header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
		t.Errorf("Content-Type = %q, want exactly application/json", got)
	}
	v, err := decodeJSON(a.Body)
	if err != nil {
		t.Fatalf("body %q is not JSON: %v", a.Body, err)
	}
	return v
}

func (a answer) object(t testing.TB) map[string]any {
	t.Helper()
	v := a.jsonBody(t)
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("body %s is a JSON %s, want an object", a.Body, jsonType(v))
	}
	return m
}

func (a answer) array(t testing.TB) []any {
	t.Helper()
	v := a.jsonBody(t)
	s, ok := v.([]any)
	if !ok {
		t.Fatalf("body %s is a JSON %s, want an array", a.Body, jsonType(v))
	}
	return s
}

// ok checks a 200 answer of the default server (JSON, CORS).
func (a answer) ok(t testing.TB) {
	t.Helper()
	if a.Status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", a.Status, a.Body)
	}
	wantCORS(t, a.Header, corsHeaders)
}

// reasonCheck checks an error_reason.
type reasonCheck func(t testing.TB, got any)

// exactly wants the reason to be want's JSON encoding.
func exactly(want any) reasonCheck {
	return func(t testing.TB, got any) {
		t.Helper()
		if w := normalize(t, want); !reflect.DeepEqual(got, w) {
			t.Errorf("error_reason = %#v, want %#v", got, w)
		}
	}
}

// fieldNamed wants {"field": name, "expected": <a non-empty string>}.
func fieldNamed(name string) reasonCheck {
	return func(t testing.TB, got any) {
		t.Helper()
		m, ok := got.(map[string]any)
		if !ok {
			t.Fatalf("error_reason = %#v, want an object", got)
		}
		if keys := sortedKeys(m); !slices.Equal(keys, []string{"expected", "field"}) {
			t.Errorf("error_reason keys = %q, want [expected field]", keys)
		}
		if m["field"] != name {
			t.Errorf("error_reason.field = %#v, want %q", m["field"], name)
		}
		if e, _ := m["expected"].(string); e == "" {
			t.Errorf("error_reason.expected = %#v, want a non-empty string", m["expected"])
		}
	}
}

// withKey wants an object whose key k is want (other keys may follow).
func withKey(k string, want any) reasonCheck {
	return func(t testing.TB, got any) {
		t.Helper()
		m, ok := got.(map[string]any)
		if !ok {
			t.Fatalf("error_reason = %#v, want an object", got)
		}
		if w := normalize(t, want); !reflect.DeepEqual(m[k], w) {
			t.Errorf("error_reason.%s = %#v, want %#v", k, m[k], w)
		}
	}
}

// isError checks an error answer: status, JSON content type, a body with
// exactly error_type and error_reason, the type and, if check is not nil,
// the reason.
func (a answer) isError(t testing.TB, status int, typ string, check reasonCheck) {
	t.Helper()
	if a.Status != status {
		t.Errorf("status = %d, want %d; body %s", a.Status, status, a.Body)
	}
	m := a.object(t)
	if keys := sortedKeys(m); !slices.Equal(keys, []string{"error_reason", "error_type"}) {
		t.Errorf("error body keys = %q, want [error_reason error_type]; body %s", keys, a.Body)
	}
	if got, ok := m["error_type"].(string); !ok || got != typ {
		t.Errorf("error_type = %#v, want %q; body %s", m["error_type"], typ, a.Body)
	}
	if check != nil {
		check(t, m["error_reason"])
	}
}

func wantCORS(t testing.TB, h http.Header, allowHeaders string) {
	t.Helper()
	want := map[string]string{
		"Access-Control-Allow-Headers": allowHeaders,
		"Access-Control-Allow-Methods": "POST, OPTIONS",
		"Access-Control-Allow-Origin":  testOrigin,
		"Access-Control-Max-Age":       "1000",
	}
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want exactly %q", k, got, v)
		}
	}
}

func wantNoCORS(t testing.TB, h http.Header) {
	t.Helper()
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("unexpected CORS header %s: %q", k, h.Values(k))
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// wantShape checks that obj has exactly the keys of shape, each of the JSON
// type shape names.
func wantShape(t testing.TB, obj map[string]any, shape map[string]string) {
	t.Helper()
	if got, want := sortedKeys(obj), sortedKeys(shape); !slices.Equal(got, want) {
		t.Errorf("keys = %q\n want %q", got, want)
	}
	for k, typ := range shape {
		if v, ok := obj[k]; ok && jsonType(v) != typ {
			t.Errorf("%s = %#v is a JSON %s, want %s", k, v, jsonType(v), typ)
		}
	}
}

// wantUint checks that v is a JSON integer of at least min.
func wantUint(t testing.TB, name string, v any, min uint64) uint64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Errorf("%s = %#v, want a number", name, v)
		return 0
	}
	var u uint64
	if _, err := fmt.Sscan(n.String(), &u); err != nil || fmt.Sprint(u) != n.String() {
		t.Errorf("%s = %s, want an unsigned integer", name, n)
		return 0
	}
	if u < min {
		t.Errorf("%s = %d, want at least %d", name, u, min)
	}
	return u
}

// ---- 1. bad input, for every target ----

// fieldSpec describes one request field of a target.
type fieldSpec struct {
	name     string
	kind     string // "string", "boolean", "object" or "any JSON value", as error reasons name it
	required bool
	// invalid are values of the right type that the target refuses with
	// INVALID-FIELD-VALUE (the empty string is added for required strings).
	invalid []string
}

// targetFields lists every target with its request fields. It must name
// exactly the targets of targetTable (TestTargetTableIsCovered).
var targetFields = map[string][]fieldSpec{
	"Sora_20211215.JoinCluster":         {{name: "contact_node_name", kind: "string", required: true}},
	"Sora_20211215.ListClusterNodes":    {{name: "include_all_known_nodes", kind: "boolean"}},
	"Sora_20211215.ListClusterChannels": nil,
	"Sora_20211215.PurgeClusterNode":    {{name: "target_node_name", kind: "string", required: true}},
	"Sora_20220629.PurgeClusterNode":    {{name: "target_node_name", kind: "string", required: true}},
	"Sora_20211215.ChangeMode": {{name: "mode", kind: "string", required: true,
		invalid: []string{`"sleepy"`, `"initial"`, `"NORMAL"`, `" normal"`}}},
	"Sora_20211215.GetMode":        nil,
	"Sora_20201013.ListChannels":   {{name: "local", kind: "boolean"}},
	"Sora_20171010.GetStatsReport": nil,

	"Sora_20151104.DisconnectChannel":                 {channelField, reasonField},
	"Sora_20151104.DisconnectClient":                  {channelField, reqString("client_id"), reasonField},
	"Sora_20151104.DisconnectConnection":              {channelField, reqString("connection_id"), reasonField},
	"Sora_20201120.DisconnectChannelByRole":           {channelField, roleField, reasonField},
	"Sora_20201013.ListConnections":                   {{name: "local", kind: "boolean"}},
	"Sora_20201013.ListChannelConnections":            {channelField},
	"Sora_20160711.PushChannel":                       {channelField, dataField},
	"Sora_20160711.PushClient":                        {channelField, reqString("client_id"), dataField},
	"Sora_20160711.PushConnection":                    {channelField, reqString("connection_id"), dataField},
	"Sora_20201120.PushChannelByRole":                 {channelField, roleField, dataField},
	"Sora_20201124.ListSignalingNotifyMetadata":       {channelField},
	"Sora_20201124.GetSignalingNotifyMetadata":        {channelField, reqString("connection_id"), pushField},
	"Sora_20201124.PutSignalingNotifyMetadata":        {channelField, reqString("connection_id"), {name: "metadata", kind: "object", required: true}, pushField},
	"Sora_20201124.DeleteSignalingNotifyMetadata":     {channelField, reqString("connection_id"), pushField},
	"Sora_20201124.PutSignalingNotifyMetadataItem":    {channelField, reqString("connection_id"), reqString("key"), {name: "value", kind: "any JSON value", required: true}, pushField},
	"Sora_20201124.DeleteSignalingNotifyMetadataItem": {channelField, reqString("connection_id"), reqString("key"), pushField},
	"Sora_20170529.GetStatsConnection":                {channelField, reqString("connection_id")},
	"Sora_20170529.GetStatsClient":                    {channelField, reqString("client_id")},
	"Sora_20211215.ListUserAgentStats":                {{name: "local", kind: "boolean"}},
	"Sora_20211215.ListChannelUserAgentStats":         {channelField},
	"Sora_20211215.GetUserAgentStats":                 {channelField, reqString("connection_id")},
	"Sora_20170814.StartForwardingRtp":                {channelField, {name: "connection_id", kind: "string"}, reqString("ip_address"), {name: "audio_port", kind: "integer"}, {name: "video_port", kind: "integer"}},
	"Sora_20170814.StopForwardingRtp":                 {channelField, {name: "connection_id", kind: "string"}},

	"Sora_20201005.RequestRtpStream":         {channelField, recvField, sendField, ridField("rid", `"none"`)},
	"Sora_20201005.ResetRtpStream":           {channelField, recvField, sendField},
	"Sora_20200401.PauseRtpStream":           {channelField, recvField, reqString("send_connection_id")},
	"Sora_20200401.ResumeRtpStream":          {channelField, recvField, reqString("send_connection_id")},
	"Sora_20200401.ListPauseRtpStreams":      {channelField},
	"Sora_20200807.ChangeSpotlightNumber":    {channelField, {name: "spotlight_number", kind: "integer", required: true, invalid: []string{`0`, `9`, `-1`}}},
	"Sora_20200807.FocusSpotlight":           {channelField, reqString("connection_id")},
	"Sora_20200807.FocusSpotlightFixed":      {channelField, reqString("connection_id")},
	"Sora_20200807.UnfocusSpotlight":         {channelField, reqString("connection_id")},
	"Sora_20211215.RequestSpotlightRid":      {channelField, recvField, sendField, ridField("spotlight_focus_rid"), ridField("spotlight_unfocus_rid")},
	"Sora_20211215.ResetSpotlightRid":        {channelField, recvField, sendField},
	"Sora_20211215.BatchRequestSpotlightRid": {channelField, {name: "item_list", kind: "array", required: true, invalid: []string{`[]`}}},
	"Sora_20190327.ChangeUpstreamVideoBitRate": {channelField, reqString("connection_id"),
		{name: "bit_rate", kind: "integer", required: true, invalid: []string{`0`, `30001`, `-300`}}},
}

var (
	channelField = reqString("channel_id")
	roleField    = fieldSpec{name: "role", kind: "string", required: true, invalid: []string{`"admin"`, `"SENDRECV"`}}
	reasonField  = fieldSpec{name: "reason", kind: "object"}
	dataField    = fieldSpec{name: "data", kind: "object", required: true}
	pushField    = fieldSpec{name: "push", kind: "boolean"}
	recvField    = reqString("recv_connection_id")
	sendField    = fieldSpec{name: "send_connection_id", kind: "string"}
)

// ridField is a required rid: r0, r1 or r2 (none where the target takes it).
func ridField(name string, invalid ...string) fieldSpec {
	return fieldSpec{name: name, kind: "string", required: true, invalid: append([]string{`"r3"`, `"R0"`, `"high"`}, invalid...)}
}

func reqString(name string) fieldSpec { return fieldSpec{name: name, kind: "string", required: true} }

// validValue is a value of the right type for f that the decoder accepts.
func (f fieldSpec) validValue() string {
	switch {
	case f.name == "role":
		return `"sendrecv"`
	case strings.HasSuffix(f.name, "rid"):
		return `"r0"`
	case f.kind == "array":
		return `[{"recv_connection_id":"x","spotlight_focus_rid":"r0","spotlight_unfocus_rid":"r0"}]`
	case f.kind == "string":
		return `"x"`
	case f.kind == "boolean":
		return `true`
	case f.kind == "object":
		return `{}`
	default:
		return `1`
	}
}

// bodyWith is a request body where f has value v and every other required
// field of fields a valid value; v == "" leaves f out.
func bodyWith(fields []fieldSpec, f fieldSpec, v string) string {
	var parts []string
	for _, o := range fields {
		switch {
		case o.name == f.name:
			if v != "" {
				parts = append(parts, `"`+o.name+`":`+v)
			}
		case o.required:
			parts = append(parts, `"`+o.name+`":`+o.validValue())
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func hasRequired(fields []fieldSpec) bool {
	return slices.ContainsFunc(fields, func(f fieldSpec) bool { return f.required })
}

func TestTargetTableIsCovered(t *testing.T) {
	table := (&Server{}).targetTable()
	for name, t := range (&Server{}).mediaTargets() {
		table[name] = t
	}
	for name, t := range (&Server{}).layerTargets() {
		table[name] = t
	}
	got := sortedKeys(table)
	if want := sortedKeys(targetFields); !slices.Equal(got, want) {
		t.Fatalf("targetTable() = %q\nthe tests know %q", got, want)
	}
}

// apiCase is one POST / call and the answer it must get. errType "" means a
// 200 with a JSON object or array.
type apiCase struct {
	name    string
	target  string
	body    string
	opts    []reqOpt
	status  int
	errType string
	reason  reasonCheck
}

// jsonOfSize returns a valid JSON object of exactly n bytes.
func jsonOfSize(n int) string {
	const frame = `{"padding":""}`
	return `{"padding":"` + strings.Repeat("x", n-len(frame)) + `"}`
}

func badBodyCases(target string) []apiCase {
	tooLarge := exactly(map[string]int64{"max_body_size": testMaxBody})
	big := jsonOfSize(5000)
	c := func(name, body, typ string, check reasonCheck, opts ...reqOpt) apiCase {
		return apiCase{name: name, target: target, body: body, opts: opts, status: 400, errType: typ, reason: check}
	}
	return []apiCase{
		c("malformed JSON", `{"a":`, "INVALID-JSON", nil),
		c("unterminated string", `{"a":"`, "INVALID-JSON", nil),
		c("not JSON", `hello`, "INVALID-JSON", nil),
		c("trailing comma", `{"a":1,}`, "INVALID-JSON", nil),
		c("trailing object", `{} {}`, "INVALID-JSON", nil),
		c("trailing garbage", `{}x`, "INVALID-JSON", nil),
		c("trailing close bracket", `{}]`, "INVALID-JSON", nil),
		c("array", `[]`, "INVALID-REQUEST-BODY", nil),
		c("array of object", `[{}]`, "INVALID-REQUEST-BODY", nil),
		c("null", `null`, "INVALID-REQUEST-BODY", nil),
		c("null with spaces", " null \n", "INVALID-REQUEST-BODY", nil),
		c("string", `"{}"`, "INVALID-REQUEST-BODY", nil),
		c("number", `1`, "INVALID-REQUEST-BODY", nil),
		c("boolean", `true`, "INVALID-REQUEST-BODY", nil),
		c("oversize body", big, "REQUEST-BODY-TOO-LARGE", tooLarge),
		c("oversize body without Content-Length", big, "REQUEST-BODY-TOO-LARGE", tooLarge, withUnknownLength()),
		c("oversize malformed body", `{"a":"`+strings.Repeat("x", 5000), "REQUEST-BODY-TOO-LARGE", tooLarge),
		c("Content-Length over the limit", `{}`, "REQUEST-BODY-TOO-LARGE", tooLarge, withContentLength(testMaxBody+1)),
		c("huge Content-Length", `{}`, "REQUEST-BODY-TOO-LARGE", tooLarge, withContentLength(1<<40)),
	}
}

// wrongTypes are values of the wrong JSON type for each field kind.
var wrongTypes = map[string][]string{
	"string":  {`1`, `true`, `{}`, `["x"]`, `1.5`},
	"boolean": {`"yes"`, `1`, `"true"`, `{}`, `[]`, `0`},
	"object":  {`1`, `"x"`, `[]`, `true`, `[{}]`},
	"integer": {`"1"`, `true`, `{}`, `[]`, `1.5`, `1e40`},
	"array":   {`1`, `"x"`, `{}`, `true`},
}

func fieldCases(target string, fields []fieldSpec) []apiCase {
	var out []apiCase
	firstRequired := ""
	for _, f := range fields {
		if f.required && firstRequired == "" {
			firstRequired = f.name
		}
	}
	for _, f := range fields {
		obj := func(v string) string { return bodyWith(fields, f, v) }
		for _, v := range wrongTypes[f.kind] {
			out = append(out, apiCase{
				name: f.name + " is " + v, target: target, body: obj(v), status: 400, errType: "INVALID-FIELD-TYPE",
				reason: exactly(map[string]string{"field": f.name, "expected": f.kind}),
			})
		}
		if !f.required {
			if !hasRequired(fields) {
				for _, body := range []string{obj("null"), obj("true"), obj("false")} {
					out = append(out, apiCase{name: body, target: target, body: body, status: 200})
				}
			}
			continue
		}
		missing := exactly(map[string]string{"field": f.name, "expected": f.kind})
		cases := []struct {
			name, body string
			opts       []reqOpt
		}{
			{"missing " + f.name, obj(""), nil},
			{f.name + " is null", obj("null"), nil},
			{f.name + " is null with spaces", obj(" null "), nil},
		}
		if f.name == firstRequired {
			// Bodies without any field name the first required one.
			cases = append(cases, []struct {
				name, body string
				opts       []reqOpt
			}{
				{"only unknown fields", `{"other":"x","` + strings.ToUpper(f.name) + `":"x"}`, nil},
				{"empty body", "", []reqOpt{withContentLength(0)}},
				{"whitespace body", " \r\n\t", nil},
			}...)
		}
		for _, c := range cases {
			out = append(out, apiCase{name: c.name, target: target, body: c.body, opts: c.opts, status: 400, errType: "MISSING-FIELD", reason: missing})
		}
		invalid := f.invalid
		if f.kind == "string" {
			invalid = append([]string{`""`}, f.invalid...)
		}
		for _, v := range invalid {
			out = append(out, apiCase{name: f.name + " is " + v, target: target, body: obj(v), status: 400, errType: "INVALID-FIELD-VALUE", reason: fieldNamed(f.name)})
		}
	}
	if !hasRequired(fields) {
		for _, c := range []struct {
			name, body string
			opts       []reqOpt
		}{
			{"empty body", "", []reqOpt{withContentLength(0)}},
			{"whitespace body", " \r\n\t", nil},
			{"empty object", `{}`, nil},
			{"unknown fields", `{"unknown":[1,{"x":null}],"other":"x"}`, nil},
			{"exactly MaxBodySize", jsonOfSize(testMaxBody), nil},
		} {
			out = append(out, apiCase{name: c.name, target: target, body: c.body, opts: c.opts, status: 200})
		}
	}
	return out
}

func headerCases() []apiCase {
	unknown := func(target string) apiCase {
		return apiCase{name: "unknown target " + target, target: target, body: `{}`, status: 400, errType: "UNKNOWN-TARGET", reason: exactly(map[string]string{"target": target})}
	}
	return []apiCase{
		{name: "missing x-sora-target", body: `{}`, status: 400, errType: "MISSING-TARGET"},
		{name: "missing x-sora-target with a bad body", body: `{"a":`, status: 400, errType: "MISSING-TARGET"},
		unknown("Sora_20211215.Nope"),
		unknown("Sora_20991231.GetMode"),
		unknown("Sora_20201013.GetMode"),
		unknown("GetMode"),
		unknown("sora_20211215.getmode"),
		unknown("Sora_20211215.GetMode "),
		unknown(`Sora_X.Evil"Label`),
	}
}

func allAPICases() []apiCase {
	cases := headerCases()
	for _, target := range sortedKeys(targetFields) {
		cases = append(cases, badBodyCases(target)...)
		cases = append(cases, fieldCases(target, targetFields[target])...)
	}
	return cases
}

func TestBadInputEveryTarget(t *testing.T) {
	for _, c := range allAPICases() {
		t.Run(c.target+"/"+c.name, func(t *testing.T) {
			a := call(testAPI, c.target, c.body, c.opts...)
			wantCORS(t, a.Header, corsHeaders)
			if c.errType == "" {
				if a.Status != c.status {
					t.Fatalf("status = %d, want %d; body %s", a.Status, c.status, a.Body)
				}
				if v := a.jsonBody(t); jsonType(v) != "object" && jsonType(v) != "array" {
					t.Errorf("body %s is a JSON %s, want an object or array", a.Body, jsonType(v))
				}
				return
			}
			a.isError(t, c.status, c.errType, c.reason)
		})
	}
}

// ---- 2. good answers on the live node ----

func TestGetMode(t *testing.T) {
	for _, body := range []string{"", `{}`, `{"mode":"block_new_session"}`} {
		a := call(testAPI, "Sora_20211215.GetMode", body)
		a.ok(t)
		if got := a.object(t); !reflect.DeepEqual(got, map[string]any{"mode": "normal"}) {
			t.Errorf("GetMode %q = %s, want {\"mode\":\"normal\"}", body, a.Body)
		}
	}
}

var clusterNodeShape = map[string]string{
	"external_api_url":        "string",
	"epoch":                   "number",
	"license_max_connections": "number",
	"license_max_nodes":       "number",
	"license_serial_code":     "string",
	"license_type":            "string",
	"member_since":            "string",
	"node_name":               "string",
	"mode":                    "string",
	"connected":               "boolean",
	"external_signaling_url":  "string",
	"version":                 "string",
}

var memberSinceRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// listSelf calls ListClusterNodes and checks that it lists this node alone,
// in mode mode.
func listSelf(t *testing.T, body string, mode fsm.Mode) {
	t.Helper()
	a := call(testAPI, "Sora_20211215.ListClusterNodes", body)
	a.ok(t)
	nodes := a.array(t)
	if len(nodes) != 1 {
		t.Fatalf("ListClusterNodes %s = %s, want one node", body, a.Body)
	}
	n, ok := nodes[0].(map[string]any)
	if !ok {
		t.Fatalf("node = %#v, want an object", nodes[0])
	}
	wantShape(t, n, clusterNodeShape)
	wantUint(t, "epoch", n["epoch"], 1)
	if ms, _ := n["member_since"].(string); !memberSinceRE.MatchString(ms) {
		t.Errorf("member_since = %q, want %s", ms, memberSinceRE)
	} else if at, err := time.Parse(memberSinceLayout, ms); err != nil || time.Since(at) < 0 || time.Since(at) > time.Hour {
		t.Errorf("member_since = %q (%v), want a moment of this test run", ms, err)
	}
	want := map[string]any{
		"node_name":               testNodeName,
		"mode":                    string(mode),
		"connected":               true,
		"version":                 "test",
		"external_api_url":        testAPIURL,
		"external_signaling_url":  testSigURL,
		"license_max_connections": json.Number(fmt.Sprint(testLicense.MaxConnections)),
		"license_max_nodes":       json.Number(fmt.Sprint(testLicense.MaxNodes)),
		"license_serial_code":     testLicense.SerialCode,
		"license_type":            testLicense.Type,
	}
	for k, v := range want {
		if n[k] != v {
			t.Errorf("%s = %#v, want %#v", k, n[k], v)
		}
	}
}

func TestListClusterNodes(t *testing.T) {
	for _, body := range []string{"", `{}`, `{"include_all_known_nodes": true}`, `{"include_all_known_nodes": false}`} {
		t.Run(body, func(t *testing.T) { listSelf(t, body, fsm.ModeNormal) })
	}
}

func TestChannels(t *testing.T) {
	listClusterChannels := func(t *testing.T) []any {
		a := call(testAPI, "Sora_20211215.ListClusterChannels", `{}`)
		a.ok(t)
		return a.array(t)
	}
	listChannels := func(t *testing.T, body string) answer {
		a := call(testAPI, "Sora_20201013.ListChannels", body)
		a.ok(t)
		return a
	}
	if got := listClusterChannels(t); len(got) != 0 {
		t.Fatalf("ListClusterChannels before any channel = %v, want []", got)
	}
	for _, body := range []string{"", `{}`, `{"local": false}`, `{"local": true}`} {
		if a := listChannels(t, body); string(a.Body) != `[]` {
			t.Errorf("ListChannels %s before any channel = %s, want []", body, a.Body)
		}
	}

	if _, err := testCluster.AcquireChannel(ctxT(t), "sora", cluster.ChannelOptions{Multistream: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testCluster.ReleaseChannel(context.Background(), "sora"); err != nil {
			t.Errorf("release channel: %v", err)
		}
		waitFor(t, "no channels", func() bool { return len(testCluster.Channels()) == 0 })
	})

	chs := listClusterChannels(t)
	if len(chs) != 1 {
		t.Fatalf("ListClusterChannels = %v, want one channel", chs)
	}
	ch, ok := chs[0].(map[string]any)
	if !ok {
		t.Fatalf("channel = %#v, want an object", chs[0])
	}
	wantShape(t, ch, map[string]string{
		"channel_id":                 "string",
		"node_in_charge":             "string",
		"node_in_charge_epoch":       "number",
		"node_in_charge_epoch_stale": "boolean",
		"node_in_charge_connected":   "boolean",
	})
	var epoch uint64
	for _, n := range testCluster.Nodes() {
		if n.Name == testNodeName && n.Record != nil {
			epoch = n.Record.Epoch
		}
	}
	if got := wantUint(t, "node_in_charge_epoch", ch["node_in_charge_epoch"], 1); got != epoch {
		t.Errorf("node_in_charge_epoch = %d, want this node's epoch %d", got, epoch)
	}
	for k, v := range map[string]any{"channel_id": "sora", "node_in_charge": testNodeName, "node_in_charge_epoch_stale": false, "node_in_charge_connected": true} {
		if ch[k] != v {
			t.Errorf("%s = %#v, want %#v", k, ch[k], v)
		}
	}

	// ListChannels lists live sessions, here and (local false) on every
	// connected node; an assignment alone is not one (the integration
	// tests cover live listings).
	for _, body := range []string{"", `{}`, `{"local": true}`, `{"local": false}`} {
		if got := listChannels(t, body).jsonBody(t); !reflect.DeepEqual(got, normalize(t, []any{})) {
			t.Errorf("ListChannels %s = %v, want [] (no live session here)", body, got)
		}
	}
}

func TestChangeMode(t *testing.T) {
	t.Cleanup(func() {
		if err := testCluster.SetMode(context.Background(), fsm.ModeNormal); err != nil {
			t.Errorf("restore mode normal: %v", err)
		}
	})
	getMode := func() string {
		a := call(testAPI, "Sora_20211215.GetMode", `{}`)
		a.ok(t)
		m, _ := a.object(t)["mode"].(string)
		return m
	}
	for _, mode := range []fsm.Mode{fsm.ModeBlockNewSession, fsm.ModeBlockNewConnection, fsm.ModeNormal} {
		a := call(testAPI, "Sora_20211215.ChangeMode", `{"mode":"`+string(mode)+`"}`)
		a.ok(t)
		if got := a.object(t); !reflect.DeepEqual(got, map[string]any{"mode": string(mode)}) {
			t.Errorf("ChangeMode %s = %s", mode, a.Body)
		}
		if got := getMode(); got != string(mode) {
			t.Errorf("GetMode after ChangeMode %s = %q", mode, got)
		}
		listSelf(t, `{}`, mode)
	}
	// Setting the current mode again is fine.
	call(testAPI, "Sora_20211215.ChangeMode", `{"mode":"normal"}`).ok(t)
}

func TestGetStatsReport(t *testing.T) {
	shape := map[string]string{"version": "string", "cluster": "object"}
	for _, ct := range []reflect.Type{reflect.TypeFor[media.Report](), reflect.TypeFor[media.WebhookReport]()} {
		for i := range ct.NumField() {
			name, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ",")
			if !strings.HasPrefix(name, "total_") && !strings.HasPrefix(name, "average_") {
				t.Errorf("%s.%s has json name %q, want total_* or average_*", ct.Name(), ct.Field(i).Name, name)
			}
			shape[name] = "number"
		}
	}
	if len(shape) < 2+14+13 {
		t.Fatalf("only %d counters in media.Report and media.WebhookReport", len(shape)-2)
	}
	for _, body := range []string{"", `{}`} {
		a := call(testAPI, "Sora_20171010.GetStatsReport", body)
		a.ok(t)
		r := a.object(t)
		wantShape(t, r, shape)
		if r["version"] != "test" {
			t.Errorf("version = %#v, want \"test\"", r["version"])
		}
		for k, typ := range shape {
			if typ == "number" {
				wantUint(t, k, r[k], 0)
			}
		}
		cl, _ := r["cluster"].(map[string]any)
		wantShape(t, cl, map[string]string{
			"node_name": "string", "raft_state": "string", "raft_term": "number",
			"raft_commit_index": "number", "raft_applied_index": "number", "raft_leader": "string",
		})
		if cl["raft_state"] != "leader" || cl["node_name"] != testNodeName || cl["raft_leader"] != testNodeName {
			t.Errorf("cluster = %v, want this node as leader", cl)
		}
		wantUint(t, "raft_term", cl["raft_term"], 1)
		commit := wantUint(t, "raft_commit_index", cl["raft_commit_index"], 1)
		if applied := wantUint(t, "raft_applied_index", cl["raft_applied_index"], 1); applied > commit {
			t.Errorf("raft_applied_index %d > raft_commit_index %d", applied, commit)
		}
	}
}

func TestPurgeClusterNode(t *testing.T) {
	for _, target := range []string{"Sora_20211215.PurgeClusterNode", "Sora_20220629.PurgeClusterNode"} {
		t.Run(target, func(t *testing.T) {
			a := call(testAPI, target, `{"target_node_name":"`+testNodeName+`"}`)
			wantCORS(t, a.Header, corsHeaders)
			a.isError(t, 400, "CANNOT-PURGE-SELF", withKey("target_node", testNodeName))

			a = call(testAPI, target, `{"target_node_name":"ghost@127.0.4.9"}`)
			wantCORS(t, a.Header, corsHeaders)
			a.isError(t, 400, "NODE-NOT-FOUND", exactly(map[string]string{"target_node": "ghost@127.0.4.9"}))
		})
	}
	listSelf(t, `{}`, fsm.ModeNormal)
}

func TestJoinCluster(t *testing.T) {
	cases := []struct{ contact, typ string }{
		{testNodeName, "CANNOT-JOIN-SELF"},
		{"nobody", "INVALID-NODE-NAME"},
		{"@127.0.4.9", "INVALID-NODE-NAME"},
		{"nobody@", "INVALID-NODE-NAME"},
		{"no body@127.0.4.9", "INVALID-NODE-NAME"},
		{"a@b@127.0.4.9", "INVALID-NODE-NAME"},
	}
	for _, c := range cases {
		a := call(testAPI, "Sora_20211215.JoinCluster", `{"contact_node_name":"`+c.contact+`"}`)
		wantCORS(t, a.Header, corsHeaders)
		a.isError(t, 400, c.typ, nil)
	}
	listSelf(t, `{}`, fsm.ModeNormal)
}

// ---- 3. CORS, OPTIONS, routing ----

func TestPreflight(t *testing.T) {
	a := serve(testAPI, http.MethodOptions, "/", "",
		withHeader("Origin", testOrigin),
		withHeader("Access-Control-Request-Method", "POST"),
		withHeader("Access-Control-Request-Headers", "content-type, x-sora-target"))
	if a.Status != http.StatusOK {
		t.Fatalf("OPTIONS / = %d, want 200; body %s", a.Status, a.Body)
	}
	wantCORS(t, a.Header, corsHeaders)
	if len(a.Body) != 0 {
		t.Errorf("OPTIONS / body = %q, want empty", a.Body)
	}
}

func TestRouting(t *testing.T) {
	cases := []struct {
		method, path string
		status       int
		typ          string
	}{
		{http.MethodGet, "/", 405, "METHOD-NOT-ALLOWED"},
		{http.MethodPut, "/", 405, "METHOD-NOT-ALLOWED"},
		{http.MethodDelete, "/", 405, "METHOD-NOT-ALLOWED"},
		{http.MethodPost, "/metrics", 405, "METHOD-NOT-ALLOWED"},
		{http.MethodPost, "/nope", 404, "NOT-FOUND"},
		{http.MethodGet, "/nope", 404, "NOT-FOUND"},
		{http.MethodPost, "/Sora_20211215.GetMode", 404, "NOT-FOUND"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			a := serve(testAPI, c.method, c.path, `{}`, withHeader("x-sora-target", "Sora_20211215.GetMode"))
			a.isError(t, c.status, c.typ, nil)
			wantCORS(t, a.Header, corsHeaders)
		})
	}
}

func TestNoCORSOrigin(t *testing.T) {
	s := newServer(func(c *Config) { c.CORSOrigin = "" })
	answers := map[string]answer{
		"GetMode":        call(s, "Sora_20211215.GetMode", `{}`),
		"unknown target": call(s, "Sora_X.Nope", `{}`),
		"bad JSON":       call(s, "Sora_20211215.GetMode", `{`),
		"OPTIONS /":      serve(s, http.MethodOptions, "/", "", withHeader("Origin", testOrigin)),
		"GET /":          serve(s, http.MethodGet, "/", ""),
		"POST /nope":     serve(s, http.MethodPost, "/nope", `{}`),
	}
	for name, a := range answers {
		t.Run(name, func(t *testing.T) {
			if a.Status >= 500 {
				t.Errorf("status = %d; body %s", a.Status, a.Body)
			}
			wantNoCORS(t, a.Header)
		})
	}
	if a := answers["GetMode"]; a.Status != 200 || string(a.Body) != `{"mode":"normal"}` {
		t.Errorf("GetMode = %d %s", a.Status, a.Body)
	}
}

// ---- 4. bearer token ----

func TestBearerToken(t *testing.T) {
	const token = "s3cret"
	s := newServer(func(c *Config) { c.BearerToken = token })
	var bodies [][]byte
	check := func(t *testing.T, a answer) {
		t.Helper()
		bodies = append(bodies, a.Body)
		wantCORS(t, a.Header, corsWithToken)
	}

	refused := []struct {
		name string
		opts []reqOpt
	}{
		{"no Authorization", nil},
		{"wrong token", []reqOpt{withHeader("Authorization", "Bearer nope")}},
		{"token prefix", []reqOpt{withHeader("Authorization", "Bearer s3cre")}},
		{"token with suffix", []reqOpt{withHeader("Authorization", "Bearer s3cret2")}},
		{"token twice", []reqOpt{withHeader("Authorization", "Bearer s3cret s3cret")}},
		{"Basic scheme", []reqOpt{withHeader("Authorization", "Basic "+token)}},
		{"token only", []reqOpt{withHeader("Authorization", token)}},
		{"Bearer alone", []reqOpt{withHeader("Authorization", "Bearer")}},
		{"Bearer and a space", []reqOpt{withHeader("Authorization", "Bearer ")}},
		{"Bearer with tab", []reqOpt{withHeader("Authorization", "Bearer\t"+token)}},
	}
	for _, c := range refused {
		for _, target := range []string{"Sora_20211215.GetMode", "Sora_20211215.ChangeMode", "Sora_X.Unknown", ""} {
			t.Run(c.name+"/"+target, func(t *testing.T) {
				a := call(s, target, `{"mode":"block_new_connection"}`, c.opts...)
				check(t, a)
				a.isError(t, http.StatusUnauthorized, "UNAUTHORIZED", nil)
				if got := a.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
				}
			})
		}
	}
	if m := testCluster.Mode(); m != fsm.ModeNormal {
		t.Fatalf("an unauthorized ChangeMode changed the mode to %s", m)
	}

	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER " + token} {
		t.Run(auth, func(t *testing.T) {
			a := call(s, "Sora_20211215.GetMode", `{}`, withHeader("Authorization", auth))
			check(t, a)
			if a.Status != 200 || string(a.Body) != `{"mode":"normal"}` {
				t.Errorf("GetMode with %q = %d %s", auth, a.Status, a.Body)
			}
			if a.Header.Get("WWW-Authenticate") != "" {
				t.Errorf("WWW-Authenticate on a 200")
			}
		})
	}
	t.Run("authorized errors", func(t *testing.T) {
		a := call(s, "Sora_X.Unknown", `{}`, withHeader("Authorization", "Bearer "+token))
		check(t, a)
		a.isError(t, 400, "UNKNOWN-TARGET", nil)
		a = call(s, "Sora_20211215.GetMode", `{`, withHeader("Authorization", "Bearer "+token))
		check(t, a)
		a.isError(t, 400, "INVALID-JSON", nil)
	})
	t.Run("preflight needs no token", func(t *testing.T) {
		a := serve(s, http.MethodOptions, "/", "", withHeader("Origin", testOrigin))
		check(t, a)
		if a.Status != 200 {
			t.Errorf("OPTIONS / = %d, want 200", a.Status)
		}
	})
	t.Run("routing errors", func(t *testing.T) {
		a := serve(s, http.MethodGet, "/", "")
		check(t, a)
		a.isError(t, 405, "METHOD-NOT-ALLOWED", nil)
	})
	bodies = append(bodies, serve(s, http.MethodGet, "/metrics", "").Body)
	for _, b := range bodies {
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("a response body contains the token: %s", b)
		}
	}
}

// ---- 5. metrics ----

func TestMetrics(t *testing.T) {
	s := newServer(nil)
	for range 3 {
		call(s, "Sora_20211215.GetMode", `{}`).ok(t)
	}
	call(s, "Sora_20211215.GetMode", `{`).isError(t, 400, "INVALID-JSON", nil)
	call(s, "Sora_20211215.Unknown", `{}`).isError(t, 400, "UNKNOWN-TARGET", nil)
	call(s, `Sora_X.Evil"Label`, `{}`).isError(t, 400, "UNKNOWN-TARGET", nil)
	call(s, "", `{}`).isError(t, 400, "MISSING-TARGET", nil)

	a := serve(s, http.MethodGet, "/metrics", "")
	if a.Status != 200 {
		t.Fatalf("GET /metrics = %d; body %s", a.Status, a.Body)
	}
	text := string(a.Body)
	for _, want := range []string{
		"\n" + `sorad_api_requests_total{status="200",target="Sora_20211215.GetMode"} 3` + "\n",
		"\n" + `sorad_api_requests_total{status="400",target="Sora_20211215.GetMode"} 1` + "\n",
		"\n" + `sorad_api_requests_total{status="400",target="unknown"} 3` + "\n",
		"\n" + `sorad_raft_state{state="leader"} 1` + "\n",
		"\n" + `sorad_raft_state{state="follower"} 0` + "\n",
		"\nsorad_raft_term ",
		"\nsorad_raft_commit_index ",
		"\nsorad_raft_applied_index ",
		"\nsorad_cluster_nodes 1\n",
		"\nsorad_cluster_voters 1\n",
		"\nsorad_cluster_connected_nodes 1\n",
		"\nsorad_api_request_duration_seconds_bucket{",
		"\n" + `sorad_api_request_duration_seconds_count{target="Sora_20211215.GetMode"} 4` + "\n",
		"\n" + `sorad_api_request_duration_seconds_count{target="unknown"} 3` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	// Every target has its latency series from the start.
	for target := range targetFields {
		if !strings.Contains(text, `sorad_api_request_duration_seconds_count{target="`+target+`"}`) {
			t.Errorf("/metrics has no latency series for %s", target)
		}
	}
	for _, bad := range []string{`Sora_X.Evil"Label`, "Evil", "Sora_20211215.Unknown"} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics contains the unknown target %q", bad)
		}
	}
}

// ---- 6. fuzz ----

// fuzzTargets are the read-only targets FuzzDispatch calls.
// fuzzTargets is every target the server answers, sorted so that a fuzz
// input's index names the same target from run to run.
func fuzzTargets(s *Server) []string {
	return slices.Sorted(maps.Keys(s.targets))
}

func FuzzDispatch(f *testing.F) {
	// Long seeds make the fuzzer spend its time minimizing long inputs, so
	// every target gets the short bad inputs and one target the long ones.
	seeds := []string{"", "{}", " ", `{"local":false}`, `{"include_all_known_nodes":true}`}
	var long []string
	for _, c := range allAPICases() {
		if len(c.body) > 256 {
			long = append(long, c.body)
		} else {
			seeds = append(seeds, c.body)
		}
	}
	slices.Sort(seeds)
	seeds = slices.Compact(seeds)
	s := New(baseConfig(), testCluster, testMedia)
	targets := fuzzTargets(s)
	// Every target gets the basic shapes; the other seeds are spread over
	// the targets, so the fuzzer starts from a corpus it can measure fast.
	for i := range targets {
		for _, s := range []string{"", "{}", `{"channel_id":"c"}`, `{"channel_id":"c","connection_id":"x"}`} {
			f.Add(uint8(i), []byte(s))
		}
	}
	for j, s := range seeds {
		f.Add(uint8(j%len(targets)), []byte(s))
	}
	slices.Sort(long)
	for _, s := range slices.Compact(long) {
		f.Add(uint8(0), []byte(s))
	}
	f.Fuzz(func(t *testing.T, idx uint8, body []byte) {
		target := targets[int(idx)%len(targets)]
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("x-sora-target", target)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		switch w.Code {
		case 200, 400, 404, 503:
		default:
			t.Fatalf("%s %q: status %d, body %s", target, body, w.Code, w.Body)
		}
		v, err := decodeJSON(w.Body.Bytes())
		if err != nil {
			t.Fatalf("%s %q: body %q is not JSON: %v", target, body, w.Body, err)
		}
		if typ := jsonType(v); typ != "object" && typ != "array" {
			t.Fatalf("%s %q: body %s is a JSON %s", target, body, w.Body, typ)
		}
		if w.Code != 200 {
			m, _ := v.(map[string]any)
			if typ, _ := m["error_type"].(string); typ == "" || len(m) != 2 {
				t.Fatalf("%s %q: error body %s", target, body, w.Body)
			}
		}
		if len(body) <= testMaxBody {
			checkDecode[joinClusterRequest](t, body, func(r joinClusterRequest) bool { return r.ContactNodeName != "" })
			checkDecode[purgeClusterNodeRequest](t, body, func(r purgeClusterNodeRequest) bool { return r.TargetNodeName != "" })
			checkDecode[changeModeRequest](t, body, func(r changeModeRequest) bool { return r.Mode != "" })
		}
	})
}

// TestErrorReasonsEchoABoundedPrefix: an error about the caller's input
// repeats at most a bounded prefix of it.
func TestErrorReasonsEchoABoundedPrefix(t *testing.T) {
	s := newServer(nil)
	target := "Sora_20201013." + strings.Repeat("X", 30_000)
	a := call(s, target, `{}`)
	a.isError(t, 400, "UNKNOWN-TARGET", nil)
	if len(a.Body) > 512 {
		t.Fatalf("a %d-byte target gave a %d-byte error: %.200s", len(target), len(a.Body), a.Body)
	}
	b := call(s, "Sora_20201013.ListChannelConnections", `{"channel_id":"`+strings.Repeat("c", 3_000)+`"}`)
	b.isError(t, 400, "INVALID-FIELD-VALUE", nil)
	if len(b.Body) > 512 {
		t.Fatalf("a 3,000-byte channel_id gave a %d-byte error", len(b.Body))
	}
}
