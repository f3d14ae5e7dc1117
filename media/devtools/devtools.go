// Package devtools serves sorad's devtools page: a browser page, under
// /devtools/ on the signaling listener, that connects to channels with the
// Sora signaling protocol and calls the Sora API, as any client and operator
// would. Its files are embedded (static/, plain ES modules, no build step).
//
// The page reaches sorad only through the public signaling and API; this
// package hands it nothing but the node's public URLs (config.json). It
// never sees the API's bearer token, which the page keeps in memory. Every
// response carries a strict Content-Security-Policy: scripts and styles
// from the page's own origin only, and connections only to this node and the
// cluster's nodes.
package devtools

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Prefix is where the page is served.
const Prefix = "/devtools/"

//go:embed static
var static embed.FS

// Config is what the page is told about the node.
type Config struct {
	NodeName     string
	Version      string
	APIURL       string // external_api_url
	SignalingURL string // external_signaling_url
	// ClusterURLs returns the external API and signaling URLs of the
	// cluster's nodes, which the page's Content-Security-Policy lets it
	// reach (the cluster view calls each node's API). May be nil.
	ClusterURLs func() []string
}

// file is one embedded file, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// handler serves Prefix.
type handler struct {
	cfg    Config
	files  map[string]file // by name under Prefix; "" is index.html
	config []byte          // config.json
}

// contentTypes are the only kinds of file served; a file of another kind in
// static/ is a build mistake, caught by New.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// fileName is what a served file's name looks like: flat, no dot files.
var fileName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*\.[a-z]+$`)

// New returns the handler of Prefix (and of the bare /devtools, redirected
// to it). Requests for anything else get 404.
func New(cfg Config) (http.Handler, error) {
	h := &handler{cfg: cfg, files: map[string]file{}}
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		return nil, fmt.Errorf("devtools: read embedded files: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		ct, ok := contentTypes[path.Ext(name)]
		if e.IsDir() || !ok || !fileName.MatchString(name) {
			return nil, fmt.Errorf("devtools: embedded %q is not a servable file", name)
		}
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			return nil, fmt.Errorf("devtools: read %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		h.files[name] = file{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	index, ok := h.files["index.html"]
	if !ok {
		return nil, fmt.Errorf("devtools: no index.html among the embedded files")
	}
	h.files[""] = index
	h.config, err = json.Marshal(struct {
		NodeName     string `json:"node_name"`
		Version      string `json:"version"`
		APIURL       string `json:"api_url"`
		SignalingURL string `json:"signaling_url"`
	}{cfg.NodeName, cfg.Version, cfg.APIURL, cfg.SignalingURL})
	if err != nil {
		return nil, fmt.Errorf("devtools: encode config.json: %w", err)
	}
	return h, nil
}

// Mount returns a handler that serves the devtools page with h and every
// other path with next.
func Mount(next, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/devtools" || strings.HasPrefix(r.URL.Path, Prefix) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp())
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/devtools" {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name == "config.json" {
		hd.Set("Content-Type", "application/json")
		hd.Set("Cache-Control", "no-store")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(h.config))
		return
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// csp is the page's Content-Security-Policy: nothing but its own files,
// media from its own captures and remote streams, and connections to its
// origin, this node and the cluster's nodes.
func (h *handler) csp() string {
	urls := []string{h.cfg.APIURL, h.cfg.SignalingURL}
	if h.cfg.ClusterURLs != nil {
		urls = append(urls, h.cfg.ClusterURLs()...)
	}
	connect := []string{"'self'"}
	seen := map[string]bool{}
	for _, u := range urls {
		if o := origin(u); o != "" && !seen[o] {
			seen[o] = true
			connect = append(connect, o)
		}
	}
	sort.Strings(connect[1:])
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; " +
		"connect-src " + strings.Join(connect, " ") + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// host is what a URL's host may be to appear in the policy.
var host = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$`)

// origin is u's scheme://host for the policy, or "" when u is not an
// http(s) or ws(s) URL with a plain host.
func origin(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	switch p.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return ""
	}
	if !host.MatchString(p.Host) {
		return ""
	}
	return p.Scheme + "://" + p.Host
}
