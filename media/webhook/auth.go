package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Reasons of an AuthError, short enough for a WebSocket close reason.
const (
	ReasonTimeout         = "AUTH-WEBHOOK-TIMEOUT"
	ReasonUnreachable     = "AUTH-WEBHOOK-UNREACHABLE"
	ReasonInvalidResponse = "AUTH-WEBHOOK-INVALID-RESPONSE"
	ReasonInvalidRequest  = "AUTH-WEBHOOK-INVALID-REQUEST"
	ReasonCanceled        = "AUTH-WEBHOOK-CANCELED"
	ReasonDisabled        = "AUTH-WEBHOOK-DISABLED"
	// A status other than 200 gives "AUTH-WEBHOOK-STATUS-<code>".
	reasonStatusPrefix = "AUTH-WEBHOOK-STATUS-"
)

var (
	// ErrDisabled is the cause of Auth's error when no AuthURL is set.
	ErrDisabled = errors.New("auth webhook disabled")
	// ErrClosed is the cause of errors after Close.
	ErrClosed = errors.New("webhook client closed")
	// errInvalidResponse marks an answer that breaks Sora's contract.
	errInvalidResponse = errors.New("invalid auth webhook answer")
)

// AuthError is every error Auth returns: no valid answer, so no decision.
type AuthError struct {
	// Reason is one of the Reason constants or AUTH-WEBHOOK-STATUS-<code>.
	Reason string
	Err    error
}

func (e *AuthError) Error() string { return "auth webhook: " + e.Reason + ": " + e.Err.Error() }

func (e *AuthError) Unwrap() error { return e.Err }

// AuthAnswer is a valid auth webhook answer.
type AuthAnswer struct {
	Allowed bool
	Reason  string // why not allowed; "" when the answer has none
	// Fields are the other keys of the answer: the overrides of an
	// allowed connection (metadata, client_id, audio, ...).
	Fields map[string]json.RawMessage
}

// Auth posts payload, with the common fields, to AuthURL with header
// sora-connection-id, and waits for the answer at most Timeout and as long
// as ctx lives. Sora's contract: HTTP 200 with a JSON object holding a
// boolean "allowed" and, when refused, a string "reason". Auth is never
// retried. Every error is an *AuthError.
func (c *Client) Auth(ctx context.Context, connectionID string, payload any) (AuthAnswer, error) {
	if c.auth == nil {
		return AuthAnswer{}, &AuthError{Reason: ReasonDisabled, Err: ErrDisabled}
	}
	a, out, err := c.auth1(ctx, connectionID, payload)
	if err != nil {
		c.count[kindAuth].failed.Add(1)
		c.log.Warn("auth webhook failed", "kind", kindAuth, "id", out.id, "connection_id", connectionID,
			"host", c.auth.host, "reason", err.Reason, "error", err.Err)
		return AuthAnswer{}, err
	}
	c.count[kindAuth].successful.Add(1)
	if a.Allowed {
		c.authAllowed.Add(1)
	} else {
		c.authDenied.Add(1)
	}
	c.log.Debug("auth webhook answered", "kind", kindAuth, "id", out.id, "connection_id", connectionID,
		"host", c.auth.host, "allowed", a.Allowed, "reason", a.Reason,
		"body", logBody{out.body, c.cfg.LogSensitive},
		"answer", logBody{fieldsJSON(a.Fields), c.cfg.LogSensitive})
	return a, nil
}

func (c *Client) auth1(ctx context.Context, connectionID string, payload any) (AuthAnswer, outgoing, *AuthError) {
	if c.isClosed() {
		return AuthAnswer{}, outgoing{}, &AuthError{Reason: ReasonUnreachable, Err: ErrClosed}
	}
	out, err := c.build(payload)
	if err != nil {
		return AuthAnswer{}, out, &AuthError{Reason: ReasonInvalidRequest, Err: err}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	defer stop()

	r, err := c.post(ctx, c.auth, map[string]string{"sora-connection-id": connectionID}, out.body, true)
	if err == nil {
		err = r.bodyErr
	}
	if err != nil {
		return AuthAnswer{}, out, &AuthError{Reason: transportReason(ctx, err), Err: err}
	}
	if r.status != http.StatusOK {
		return AuthAnswer{}, out, &AuthError{
			Reason: reasonStatusPrefix + strconv.Itoa(r.status),
			Err:    fmt.Errorf("answer from %s: %w", c.auth.host, &statusError{r.status}),
		}
	}
	if len(r.body) > c.cfg.MaxResponseSize {
		return AuthAnswer{}, out, &AuthError{
			Reason: ReasonInvalidResponse,
			Err:    fmt.Errorf("%w: larger than %d bytes", errInvalidResponse, c.cfg.MaxResponseSize),
		}
	}
	a, err := parseAuthAnswer(r.body)
	if err != nil {
		return AuthAnswer{}, out, &AuthError{Reason: ReasonInvalidResponse, Err: err}
	}
	return a, out, nil
}

// transportReason names a failure to get an answer in ctx, the context of
// the request.
func transportReason(ctx context.Context, err error) string {
	switch {
	case errors.Is(context.Cause(ctx), ErrClosed):
		return ReasonUnreachable
	case isTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return ReasonTimeout
	case errors.Is(ctx.Err(), context.Canceled):
		return ReasonCanceled
	}
	return ReasonUnreachable
}

// parseAuthAnswer checks body against Sora's contract: a JSON object with
// a boolean "allowed" and an optional string (or null) "reason".
func parseAuthAnswer(body []byte) (AuthAnswer, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return AuthAnswer{}, fmt.Errorf("%w: %w", errInvalidResponse, err)
	}
	var a AuthAnswer
	switch string(fields["allowed"]) {
	case "true":
		a.Allowed = true
	case "false":
	case "":
		return AuthAnswer{}, fmt.Errorf("%w: no allowed", errInvalidResponse)
	default:
		return AuthAnswer{}, fmt.Errorf("%w: allowed is not a boolean", errInvalidResponse)
	}
	if r, ok := fields["reason"]; ok && string(r) != "null" {
		if err := json.Unmarshal(r, &a.Reason); err != nil {
			return AuthAnswer{}, fmt.Errorf("%w: reason is not a string", errInvalidResponse)
		}
	}
	delete(fields, "allowed")
	delete(fields, "reason")
	a.Fields = fields
	return a, nil
}

// fieldsJSON is fields as a JSON object, for logs.
func fieldsJSON(fields map[string]json.RawMessage) []byte {
	b, err := json.Marshal(fields)
	if err != nil {
		return nil
	}
	return b
}
