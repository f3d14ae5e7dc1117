package devtools

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newTestHandler(t *testing.T, cluster ...string) http.Handler {
	t.Helper()
	h, err := New(Config{
		NodeName:     "node-01@192.0.2.1",
		Version:      "1.2.3",
		APIURL:       "http://192.0.2.1:3000/",
		SignalingURL: "ws://192.0.2.1:5000/signaling",
		ClusterURLs:  func() []string { return cluster },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Like the signaling listener: /signaling, anything else 404.
	next := http.NewServeMux()
	next.HandleFunc("GET /signaling", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "signaling") })
	return Mount(next, h)
}

func get(h http.Handler, method, target string, hdr ...string) *http.Response {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkHeaders: every devtools response has the policy and nosniff.
func checkHeaders(t *testing.T, r *http.Response) {
	t.Helper()
	csp := r.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self';", "style-src 'self';", "connect-src 'self' ", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("Content-Security-Policy %q allows something unsafe", csp)
	}
	if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}
}

func TestServesEmbeddedFiles(t *testing.T) {
	h := newTestHandler(t)
	tests := []struct {
		path, contentType, contains string
	}{
		{"/devtools/", "text/html; charset=utf-8", "<title>sorad devtools</title>"},
		{"/devtools/index.html", "text/html; charset=utf-8", "<title>sorad devtools</title>"},
		{"/devtools/app.js", "text/javascript; charset=utf-8", "import"},
		{"/devtools/sora.js", "text/javascript; charset=utf-8", "class SoraClient"},
		{"/devtools/cluster.js", "text/javascript; charset=utf-8", "ChangeMode"},
		{"/devtools/testpattern.js", "text/javascript; charset=utf-8", "captureStream"},
		{"/devtools/api.js", "text/javascript; charset=utf-8", "x-sora-target"},
		{"/devtools/dom.js", "text/javascript; charset=utf-8", "textContent"},
		{"/devtools/style.css", "text/css; charset=utf-8", "body"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := get(h, http.MethodGet, tt.path)
			if r.StatusCode != http.StatusOK {
				t.Fatalf("status %d", r.StatusCode)
			}
			checkHeaders(t, r)
			if got := r.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
			}
			if b := body(t, r); !strings.Contains(b, tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
			etag := r.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			if r := get(h, http.MethodGet, tt.path, "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match: status %d, want 304", r.StatusCode)
			}
			head := get(h, http.MethodHead, tt.path)
			if head.StatusCode != http.StatusOK || body(t, head) != "" {
				t.Errorf("HEAD: status %d", head.StatusCode)
			}
		})
	}
}

func TestConfigJSON(t *testing.T) {
	r := get(newTestHandler(t), http.MethodGet, "/devtools/config.json")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d", r.StatusCode)
	}
	checkHeaders(t, r)
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body(t, r)), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"node_name":     "node-01@192.0.2.1",
		"version":       "1.2.3",
		"api_url":       "http://192.0.2.1:3000/",
		"signaling_url": "ws://192.0.2.1:5000/signaling",
	}
	if len(got) != len(want) {
		t.Errorf("config.json has %v, want exactly %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("config.json %s = %v, want %v", k, got[k], v)
		}
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	h := newTestHandler(t)
	for _, p := range []string{
		"/devtools/nope.js", "/devtools/static/app.js", "/devtools/static/", "/devtools/../go.mod",
		"/devtools/%2e%2e/devtools.go", "/devtools/.hidden", "/devtools/sub/", "/devtools/index.html/",
		"/devtools/devtools.go", "/devtools//app.js", "/devtoolsx", "/devtools.js", "/",
	} {
		t.Run(p, func(t *testing.T) {
			r := get(h, http.MethodGet, p)
			if r.StatusCode != http.StatusNotFound {
				t.Errorf("status %d, want 404", r.StatusCode)
			}
			if strings.HasPrefix(p, "/devtools/") {
				checkHeaders(t, r)
			}
			if b := body(t, r); strings.Contains(b, "<a href") || strings.Contains(b, "app.js") {
				t.Errorf("404 body lists files: %q", b)
			}
		})
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		r := get(h, m, "/devtools/")
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /devtools/: status %d Allow %q, want 405 GET, HEAD", m, r.StatusCode, r.Header.Get("Allow"))
		}
	}
	r := get(h, http.MethodGet, "/devtools")
	if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/devtools/" {
		t.Errorf("/devtools: %d to %q, want 301 to /devtools/", r.StatusCode, r.Header.Get("Location"))
	}
	if r := get(h, http.MethodGet, "/signaling"); r.StatusCode != http.StatusOK || body(t, r) != "signaling" {
		t.Errorf("/signaling did not reach the signaling handler: %d", r.StatusCode)
	}
}

func TestConnectSrc(t *testing.T) {
	h := newTestHandler(t,
		"http://192.0.2.2:3000/", "ws://192.0.2.2:5000/signaling",
		"https://[2001:db8::3]:3000/", "http://192.0.2.1:3000/", // a duplicate of this node's
		"http://evil; script-src *", "javascript:alert(1)", "http://a b/", "ftp://192.0.2.9/", "")
	csp := get(h, http.MethodGet, "/devtools/").Header.Get("Content-Security-Policy")
	m := regexp.MustCompile(`connect-src ([^;]*);`).FindStringSubmatch(csp)
	if m == nil {
		t.Fatalf("no connect-src in %q", csp)
	}
	want := "'self' http://192.0.2.1:3000 http://192.0.2.2:3000 https://[2001:db8::3]:3000 ws://192.0.2.1:5000 ws://192.0.2.2:5000"
	if m[1] != want {
		t.Errorf("connect-src %q, want %q", m[1], want)
	}
	if strings.Count(csp, "script-src") != 1 {
		t.Errorf("a cluster URL injected a directive: %q", csp)
	}
}

// TestPageWritesNoHTML: the page's code never turns strings into markup
// (what sorad and other clients send is shown as text), and its HTML has
// nothing inline that the policy would block.
func TestPageWritesNoHTML(t *testing.T) {
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\("on|createContextualFragment|srcdoc`)
	entries, err := static.ReadDir("static")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := static.ReadFile("static/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Name(), ".js") {
			if loc := sinks.FindIndex(b); loc != nil {
				t.Errorf("%s writes HTML or code from strings: %q", e.Name(), b[loc[0]:loc[1]])
			}
		}
		if strings.HasSuffix(e.Name(), ".html") {
			inline := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]|<script(?:\s(?:[^s>]|s(?:[^r>]|r[^c>]))*)?>|\sstyle=|\son[a-z]+=|<style`)
			if loc := inline.FindIndex(b); loc != nil {
				t.Errorf("%s has inline code or style: %q", e.Name(), b[loc[0]:loc[1]])
			}
		}
	}
}

func TestOrigin(t *testing.T) {
	tests := map[string]string{
		"http://192.0.2.1:3000/":        "http://192.0.2.1:3000",
		"wss://sora.example.com/signal": "wss://sora.example.com",
		"https://[::1]:3000/":           "https://[::1]:3000",
		"http://user:pw@host:3000/":     "http://host:3000",
		"file:///etc/passwd":            "",
		"http://x'y/":                   "",
		"http://host:3000;x/":           "",
		"%":                             "",
	}
	for in, want := range tests {
		if got := origin(in); got != want {
			t.Errorf("origin(%q) = %q, want %q", in, got, want)
		}
	}
}
