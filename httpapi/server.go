// Package httpapi serves Sora's HTTP API on echo: POST / with an
// x-sora-target header naming the operation, JSON in and out. It owns the
// target table, request decoding and validation, the error format, CORS,
// the optional bearer token, and /metrics. It does no cluster or media work
// itself: handlers call packages cluster and media.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sorad/sorad/cluster"
	"github.com/sorad/sorad/media"
)

// Config configures the API server.
type Config struct {
	// CORSOrigin is sent as access-control-allow-origin; empty sends no CORS
	// headers.
	CORSOrigin string
	// BearerToken, when set, is required as "Authorization: Bearer <token>".
	BearerToken string
	// MaxBodySize is the largest accepted request body in bytes.
	MaxBodySize int64
	// Version is reported by GetStatsReport.
	Version string
	// RequestTimeout bounds a cluster operation started by one call. Joins
	// get three times as long (they wait for the state to replicate).
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Server is the API server's HTTP handler.
type Server struct {
	cfg     Config
	cluster Cluster
	media   Media
	echo    *echo.Echo
	targets map[string]target
	// channelScoped names the targets answered by the node in charge of
	// the request's channel_id.
	channelScoped map[string]bool
	metrics       *metrics
}

// corsAllowHeaders is the seeds' access-control-allow-headers value.
const corsAllowHeaders = "Origin, X-Requested-With, Content-Type, Accept, x-sora-target"

// New builds the API server for a node.
func New(cfg Config, cl Cluster, med Media) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = 1 << 20
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	s := &Server{cfg: cfg, cluster: cl, media: med, echo: echo.New()}
	s.targets = s.targetTable()
	s.channelScoped = map[string]bool{}
	for name, t := range s.mediaTargets() {
		s.targets[name] = t
		// Every connection API names a channel, except the node-wide
		// listings.
		s.channelScoped[name] = !nodeWideTargets[name]
	}
	for name, t := range s.layerTargets() {
		s.targets[name] = t
		s.channelScoped[name] = true
	}
	s.metrics = newMetrics(cl, med, s.targets)

	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleEchoError
	e.Use(s.recoverPanics)
	e.POST("/", s.dispatch)
	e.OPTIONS("/", s.preflight)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})))
	return s
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// target is one API operation: it decodes its own body and returns the value
// to encode as the 200 answer, or an error.
type target func(ctx context.Context, body []byte) (any, error)

// apiError is an error answer: status plus Sora's error body.
type apiError struct {
	Status int
	Type   string
	Reason any
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %v", e.Status, e.Type, e.Reason) }

func apiErr(status int, typ string, reason any) *apiError {
	return &apiError{Status: status, Type: typ, Reason: reason}
}

// toAPIError maps any handler error to its answer. This is the one place
// where error kinds become statuses.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var nf *media.NotFoundError
	if errors.As(err, &nf) {
		return apiErr(http.StatusNotFound, nf.Type, nf.Reason)
	}
	var inv *media.InvalidError
	if errors.As(err, &inv) {
		return apiErr(http.StatusBadRequest, inv.Type, inv.Reason)
	}
	var ce *cluster.Error
	if errors.As(err, &ce) {
		switch ce.Kind {
		case cluster.KindInvalid:
			return apiErr(http.StatusBadRequest, ce.Type, ce.Reason)
		default:
			return apiErr(http.StatusServiceUnavailable, ce.Type, ce.Reason)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return apiErr(http.StatusServiceUnavailable, cluster.TypeNoQuorum, "the operation did not finish in time")
	}
	if errors.Is(err, context.Canceled) {
		return apiErr(http.StatusServiceUnavailable, "REQUEST-CANCELLED", "the request was cancelled before the operation finished")
	}
	return apiErr(http.StatusInternalServerError, "INTERNAL-ERROR", "unexpected error; see the server log")
}

func (s *Server) setCORS(h http.Header) {
	if s.cfg.CORSOrigin == "" {
		return
	}
	allow := corsAllowHeaders
	if s.cfg.BearerToken != "" {
		allow += ", Authorization"
	}
	h.Set("Access-Control-Allow-Headers", allow)
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Origin", s.cfg.CORSOrigin)
	h.Set("Access-Control-Max-Age", "1000")
}

func (s *Server) preflight(c echo.Context) error {
	s.setCORS(c.Response().Header())
	return c.NoContent(http.StatusOK)
}

// dispatch serves POST /.
func (s *Server) dispatch(c echo.Context) (err error) {
	start := time.Now()
	name := c.Request().Header.Get("x-sora-target")
	status := http.StatusInternalServerError // unless call returns
	defer func() { s.observe(name, status, start) }()
	status, err = s.call(c, name)
	return err
}

// observe counts a call in the metrics.
func (s *Server) observe(name string, status int, start time.Time) {
	label := name
	if _, known := s.targets[name]; !known {
		label = "unknown" // bound the label set
	}
	s.metrics.observe(label, status, time.Since(start))
}

// call runs one API call and writes its answer; it returns the status sent.
func (s *Server) call(c echo.Context, name string) (int, error) {
	s.setCORS(c.Response().Header())
	if !s.authorized(c.Request()) {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sorad"`)
		return s.writeError(c, apiErr(http.StatusUnauthorized, "UNAUTHORIZED", "a valid Authorization: Bearer token is required"))
	}
	op, err := s.lookup(name)
	if err != nil {
		return s.writeError(c, err)
	}
	body, err := s.readBody(c.Request())
	if err != nil {
		return s.writeError(c, err)
	}
	if status, done, err := s.routeToOwner(c, name, body); done {
		return status, err
	}
	status, answer := s.run(c.Request().Context(), name, op, body)
	return status, s.writeAnswer(c, status, "application/json", answer)
}

// lookup finds the target a call names.
func (s *Server) lookup(name string) (target, error) {
	if name == "" {
		return nil, apiErr(http.StatusBadRequest, "MISSING-TARGET", "the x-sora-target header is required")
	}
	op, ok := s.targets[name]
	if !ok {
		return nil, apiErr(http.StatusBadRequest, "UNKNOWN-TARGET", map[string]string{"target": clip(name)})
	}
	return op, nil
}

// run runs a call answered here and returns its status and encoded answer:
// the dispatch shared by calls made at this node and calls forwarded here.
func (s *Server) run(ctx context.Context, name string, op target, body []byte) (int, []byte) {
	out, err := op(ctx, body)
	if err != nil {
		return s.errorAnswer(name, err)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return s.errorAnswer(name, fmt.Errorf("encode answer: %w", err))
	}
	return http.StatusOK, b
}

// readBody reads the request body up to MaxBodySize.
func (s *Server) readBody(r *http.Request) ([]byte, error) {
	limit := s.cfg.MaxBodySize
	tooLarge := apiErr(http.StatusBadRequest, "REQUEST-BODY-TOO-LARGE", map[string]int64{"max_body_size": limit})
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, apiErr(http.StatusBadRequest, "INVALID-REQUEST-BODY", "cannot read the request body")
	}
	if int64(len(body)) > limit {
		return nil, tooLarge
	}
	return body, nil
}

// authorized checks the bearer token of a call made at this node. A call
// another node forwarded here carries no token: the cluster port let it in
// only from a member, which checked the caller's token at its edge.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.BearerToken == "" || forwarded(r.Context()) {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(s.cfg.BearerToken)) == 1
}

type errorBody struct {
	ErrorType   string `json:"error_type"`
	ErrorReason any    `json:"error_reason"`
}

func (s *Server) writeError(c echo.Context, err error) (int, error) {
	status, b := s.errorAnswer(c.Request().Header.Get("x-sora-target"), err)
	return status, s.writeAnswer(c, status, "application/json", b)
}

// errorAnswer is the status and encoded body of an error answer to a call
// of target.
func (s *Server) errorAnswer(target string, err error) (int, []byte) {
	ae := toAPIError(err)
	if ae.Status >= 500 {
		s.cfg.Logger.Error("api call failed", "target", target, "error", err)
	}
	b, merr := json.Marshal(errorBody{ErrorType: ae.Type, ErrorReason: ae.Reason})
	if merr != nil {
		s.cfg.Logger.Error("api error answer cannot be encoded", "target", target, "error", merr)
		return http.StatusInternalServerError, []byte(`{"error_type":"INTERNAL-ERROR","error_reason":"unexpected error; see the server log"}`)
	}
	return ae.Status, b
}

// writeAnswer writes an encoded answer with its content type.
func (s *Server) writeAnswer(c echo.Context, status int, contentType string, b []byte) error {
	h := c.Response().Header()
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	c.Response().WriteHeader(status)
	_, err := c.Response().Write(b)
	return err
}

// writeJSON writes v with content-type application/json (no charset, as in
// the seeds).
func (s *Server) writeJSON(c echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	return s.writeAnswer(c, status, "application/json", b)
}

// handleEchoError answers routing errors (unknown path, wrong method) in the
// API's error format.
func (s *Server) handleEchoError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, typ, reason := http.StatusInternalServerError, "INTERNAL-ERROR", any("unexpected error; see the server log")
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		switch he.Code {
		case http.StatusNotFound:
			typ, reason = "NOT-FOUND", "the API is served at POST /"
		case http.StatusMethodNotAllowed:
			typ, reason = "METHOD-NOT-ALLOWED", "use POST / with an x-sora-target header"
		default:
			typ, reason = "HTTP-ERROR", http.StatusText(he.Code)
		}
	} else {
		s.cfg.Logger.Error("api handler error", "error", err)
	}
	s.setCORS(c.Response().Header())
	_ = s.writeJSON(c, status, errorBody{ErrorType: typ, ErrorReason: reason})
}

// recoverPanics turns a handler panic into a logged 500 instead of a dropped
// connection. Handlers must not panic; this is the last line of defence.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.cfg.Logger.Error("api handler panicked", "panic", fmt.Sprint(r), "target", c.Request().Header.Get("x-sora-target"))
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}
