// Package webhook delivers Sora-style webhooks over HTTP: the auth webhook,
// whose answer admits or refuses a connection, and the session, event and
// stats webhooks, which are notifications.
//
// The package owns the HTTP side only: the common request fields (id,
// timestamp, label, version, node_name), the headers, timeouts, bounded
// retries, one ordered queue per notification kind, the success and failure
// counters, and the redaction of metadata in its logs. It does not build the
// payloads and does not decide what an answer means for a connection; the
// media plane does both.
//
// Auth runs on the caller's goroutine and waits for the answer. Session,
// SessionCreated, Event and Stats never block: they queue the delivery for
// the worker goroutine of that kind, or drop it when the queue is full. Close
// stops the workers.
package webhook
