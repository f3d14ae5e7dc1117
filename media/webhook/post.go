package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// errTimeout marks an attempt that got no complete answer within Timeout.
var errTimeout = errors.New("no answer in time")

// statusError is an answer with a status the kind does not accept.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("status %d", e.code) }

// response is what a receiver answered.
type response struct {
	status int
	// body holds at most MaxResponseSize+1 bytes, and only when asked for:
	// more than MaxResponseSize means the answer was too large.
	body []byte
	// bodyErr is set when the body could not be read to its end.
	bodyErr error
}

// post makes one attempt: it sends body to ep and reads the answer within
// Timeout. keep asks for the answer's body; without it the body is read up
// to MaxResponseSize and discarded. The error never holds the URL, whose
// query may hold a secret, only its host.
func (c *Client) post(ctx context.Context, ep *endpoint, header map[string]string, body []byte, keep bool) (response, error) {
	attempt, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(attempt, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return response{}, fmt.Errorf("build request to %s: %w", ep.host, unwrapURLError(err))
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("user-agent", c.userAgent)
	for k, v := range ep.header {
		req.Header.Set(k, v)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, c.attemptError(ctx, attempt, ep, err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode}
	limit := int64(c.cfg.MaxResponseSize)
	if keep {
		r.body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	} else {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
	}
	if err != nil {
		r.bodyErr = c.attemptError(ctx, attempt, ep, err)
	}
	return r, nil
}

// attemptError describes err, met while posting to ep, as a timeout when
// the attempt's own deadline passed.
func (c *Client) attemptError(parent, attempt context.Context, ep *endpoint, err error) error {
	err = unwrapURLError(err)
	if errors.Is(attempt.Err(), context.DeadlineExceeded) && parent.Err() == nil {
		return fmt.Errorf("post to %s: %w within %v", ep.host, errTimeout, c.cfg.Timeout)
	}
	return fmt.Errorf("post to %s: %w", ep.host, err)
}

// unwrapURLError drops the *url.Error around err, which quotes the whole
// URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// isTimeout reports whether err is a timeout of ours or of the transport
// (dial, TLS handshake, response headers).
func isTimeout(err error) bool {
	if errors.Is(err, errTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
