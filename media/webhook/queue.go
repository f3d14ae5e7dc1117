package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Retry backoff: the first retry waits firstBackoff, each later one twice
// the previous, at most maxBackoff. No retry starts once maxRetryElapsed
// has passed since the first attempt, so one delivery holds its queue for
// a bounded time.
const (
	firstBackoff    = 500 * time.Millisecond
	maxBackoff      = 10 * time.Second
	maxRetryElapsed = time.Minute
)

// queue is the ordered queue of one notification kind, emptied by one
// worker goroutine.
type queue struct {
	*endpoint
	retries int
	ch      chan delivery
	done    chan struct{} // closed when the worker returns
}

// delivery is one queued webhook.
type delivery struct {
	outgoing
	onAnswer func(map[string]json.RawMessage) // session.created only
}

// Session queues a session webhook (session.updated, session.destroyed,
// ...). It never blocks.
func (c *Client) Session(payload any) { c.enqueue(kindSession, payload, nil) }

// SessionCreated queues a session.created webhook. When the receiver
// answers 200 with a JSON object, onAnswer gets its fields, on the session
// worker goroutine: it must not block, and it is not called when the
// delivery fails. onAnswer may be nil.
func (c *Client) SessionCreated(payload any, onAnswer func(map[string]json.RawMessage)) {
	c.enqueue(kindSession, payload, onAnswer)
}

// Event queues an event webhook. It never blocks.
func (c *Client) Event(payload any) { c.enqueue(kindEvent, payload, nil) }

// Stats queues a stats webhook. It never blocks.
func (c *Client) Stats(payload any) { c.enqueue(kindStats, payload, nil) }

func (c *Client) enqueue(k kind, payload any, onAnswer func(map[string]json.RawMessage)) {
	q := c.queues[k]
	if q == nil {
		c.count[k].ignored.Add(1)
		return
	}
	out, err := c.build(payload)
	if err != nil {
		c.count[k].failed.Add(1)
		c.log.Warn("webhook not sent", "kind", k, "error", err)
		return
	}
	if reason := c.offer(q, delivery{outgoing: out, onAnswer: onAnswer}); reason != "" {
		c.count[k].failed.Add(1)
		c.log.Warn("webhook dropped", "kind", k, "id", out.id, "type", out.typ, "host", q.host, "reason", reason)
	}
}

// offer queues d without waiting, or says why it could not.
func (c *Client) offer(q *queue, d delivery) (reason string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return "client closed"
	}
	select {
	case q.ch <- d:
		return ""
	default:
		return fmt.Sprintf("queue full (%d)", cap(q.ch))
	}
}

// run is the worker of q. Once Close starts draining, it delivers what is
// queued and returns.
func (c *Client) run(q *queue) {
	defer close(q.done)
	for {
		select {
		case d := <-q.ch:
			c.deliver(q, d)
		case <-c.draining:
			for {
				select {
				case d := <-q.ch:
					c.deliver(q, d)
				default:
					return
				}
			}
		}
	}
}

// deliver posts d, retrying as q allows, and counts and logs the outcome.
func (c *Client) deliver(q *queue, d delivery) {
	r, attempts, err := c.attempt(q, d)
	if err != nil {
		c.count[q.kind].failed.Add(1)
		c.log.Warn("webhook delivery failed", "kind", q.kind, "id", d.id, "type", d.typ,
			"host", q.host, "attempts", attempts, "error", err)
		return
	}
	c.count[q.kind].successful.Add(1)
	c.log.Debug("webhook delivered", "kind", q.kind, "id", d.id, "type", d.typ,
		"host", q.host, "status", r.status, "body", logBody{d.body, c.cfg.LogSensitive})
	if d.onAnswer == nil || r.status != http.StatusOK {
		return
	}
	fields, err := c.answerFields(r)
	if err != nil {
		c.log.Warn("webhook answer ignored", "kind", q.kind, "id", d.id, "type", d.typ,
			"host", q.host, "error", err)
		return
	}
	if fields != nil {
		d.onAnswer(fields)
	}
}

// attempt posts d until it is accepted (2xx), the error is not worth a
// retry, the retries are spent or the client is closed.
func (c *Client) attempt(q *queue, d delivery) (response, int, error) {
	start := time.Now()
	backoff := firstBackoff
	for n := 1; ; n++ {
		r, err := c.post(c.ctx, q.endpoint, nil, d.body, d.onAnswer != nil)
		if err == nil && (r.status < 200 || r.status > 299) {
			err = &statusError{r.status}
		}
		if err == nil {
			return r, n, nil
		}
		if c.ctx.Err() != nil {
			return r, n, fmt.Errorf("abandoned at close: %w", err)
		}
		if n > q.retries || !retryable(err) || time.Since(start)+backoff > maxRetryElapsed {
			return r, n, err
		}
		c.log.Debug("webhook retry", "kind", q.kind, "id", d.id, "type", d.typ,
			"host", q.host, "attempt", n, "backoff", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return r, n, fmt.Errorf("abandoned at close: %w", err)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// retryable reports whether another attempt may succeed: no answer, a
// timeout, or a status saying the receiver is busy or broken. Any other
// status is the receiver's final word.
func retryable(err error) bool {
	var se *statusError
	if !errors.As(err, &se) {
		return true
	}
	return se.code >= 500 || se.code == http.StatusRequestTimeout || se.code == http.StatusTooManyRequests
}

// answerFields reads a session.created answer: nil for an empty body, the
// fields of a JSON object, an error for anything else.
func (c *Client) answerFields(r response) (map[string]json.RawMessage, error) {
	if r.bodyErr != nil {
		return nil, fmt.Errorf("read answer: %w", r.bodyErr)
	}
	if len(r.body) > c.cfg.MaxResponseSize {
		return nil, fmt.Errorf("answer larger than %d bytes", c.cfg.MaxResponseSize)
	}
	body := bytes.TrimSpace(r.body)
	if len(body) == 0 {
		return nil, nil
	}
	return decodeObject(body)
}

// decodeObject decodes body, which must be a JSON object.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, errors.New("answer is not a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	return fields, nil
}
