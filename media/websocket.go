package media

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/sorad/sorad/media/signaling"
)

// The WebSocket transport: the /signaling handler, reading messages within
// the configured limits, and the writer a connection sends through.

func (m *Media) serveSignaling(w http.ResponseWriter, r *http.Request) {
	if m.ctx.Err() != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	// Sockets that have not sent an admitted connect are bounded in number
	// (and each by ConnectTimeout).
	ip := clientIP(r)
	select {
	case m.pending <- struct{}{}:
	default:
		http.Error(w, "too many signaling connections waiting to connect", http.StatusServiceUnavailable)
		return
	}
	if !m.perIP.acquirePending(ip) {
		<-m.pending
		http.Error(w, "too many signaling connections from this address waiting to connect", http.StatusServiceUnavailable)
		return
	}
	admitted := false
	defer func() {
		if !admitted {
			<-m.pending
			m.perIP.releasePending(ip)
		}
	}()
	m.serving.Add(1)
	defer m.serving.Done()
	ws, err := m.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	defer ws.Close()
	limiter := rate.NewLimiter(rate.Limit(m.cfg.MessageRate), m.cfg.MessageBurst)
	_ = ws.SetReadDeadline(time.Now().Add(m.cfg.ConnectTimeout))
	b, err := m.readMessage(ws, limiter)
	if err != nil {
		m.refuse(ws, err)
		return
	}
	req, err := signaling.ParseConnect(b)
	if err != nil {
		m.refuse(ws, err)
		return
	}
	_ = ws.SetReadDeadline(time.Time{})
	c, err := m.admit(r.Context(), ws, req, ip)
	if err != nil {
		m.stats.connectionsFailed.Add(1)
		m.refuse(ws, err)
		return
	}
	if c == nil {
		return // redirected, or failed and closed
	}
	admitted = true
	<-m.pending // from here on license_max_connections bounds it
	m.perIP.releasePending(ip)
	c.serveWebSocket(ws, limiter)
}

// refuse closes a WebSocket that never became a connection.
func (m *Media) refuse(ws *websocket.Conn, err error) {
	code, reason := signaling.CloseSignaling, "INVALID-MESSAGE"
	var se *signaling.Error
	var re *refusal
	var fe *forbidden
	switch {
	case errors.As(err, &se):
		reason = se.Reason
	case errors.As(err, &re):
		code, reason = signaling.CloseUnavailable, re.reason
	case errors.As(err, &fe):
		code, reason = signaling.CloseForbidden, fe.reason
	case isTimeout(err):
		code, reason = signaling.CloseTimeout, "CONNECT-TIMEOUT"
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, signaling.TruncateReason(reason)), time.Now().Add(time.Second))
	// Let the client read the close frame before the TCP connection goes.
	drain(ws, time.Second)
}

// drain reads (and drops) what the client still sends until it closes the
// socket or within d.
func drain(ws *websocket.Conn, d time.Duration) {
	_ = ws.SetReadDeadline(time.Now().Add(d))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// readMessage reads one text message of at most MaxMessageSize bytes.
// Binary, oversized and too frequent messages are signaling errors.
func (m *Media) readMessage(ws *websocket.Conn, limiter *rate.Limiter) ([]byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return nil, err
	}
	if !limiter.Allow() {
		return nil, signaling.Errorf("TOO-MANY-MESSAGES", "more than %.0f messages per second", m.cfg.MessageRate)
	}
	if typ != websocket.TextMessage {
		return nil, signaling.Errorf("BINARY-MESSAGE", "signaling messages are JSON text frames")
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(m.cfg.MaxMessageSize)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > m.cfg.MaxMessageSize {
		return nil, signaling.Errorf("MESSAGE-TOO-LARGE", "larger than %d bytes", m.cfg.MaxMessageSize)
	}
	return b, nil
}

// serveWebSocket reads the client's messages until the connection ends,
// then tears it down. It runs on the WebSocket handler's goroutine, which
// owns c.
func (c *connection) serveWebSocket(ws *websocket.Conn, limiter *rate.Limiter) {
	established := time.AfterFunc(c.m.cfg.ConnectTimeout, func() {
		if !c.isEstablished() {
			c.close(signaling.CloseTimeout, "ICE-CONNECTION-TIMEOUT")
		}
	})
	defer established.Stop()
	for {
		b, err := c.m.readMessage(ws, limiter)
		if err == nil {
			err = c.receiveMessage(b)
		}
		var se *signaling.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &se):
			c.close(signaling.CloseSignaling, se.Reason)
		case c.ctx.Err() == nil:
			// The client went away without a disconnect.
			c.close(signaling.CloseTimeout, "WEBSOCKET-CLOSED")
		}
		break
	}
	c.teardown()
}

// transport carries one connection's signaling messages to its client. The
// WebSocket is the one transport today; the DataChannel is the next.
type transport interface {
	// send queues an encoded message; false when the client does not keep
	// up with its queue.
	send(b []byte) bool
	// run writes queued messages until done is closed or a write fails
	// (reported to failed).
	run(done <-chan struct{}, failed func())
	// close sends a close with code and reason, and drops the client's
	// connection after a grace period.
	close(code int, reason string)
	// shut closes the transport at once (teardown).
	shut()
}

// wsTransport is the WebSocket transport.
type wsTransport struct {
	ws           *websocket.Conn
	out          chan []byte
	writeTimeout time.Duration
	closeGrace   time.Duration
}

func newWebSocketTransport(ws *websocket.Conn, cfg Config) *wsTransport {
	return &wsTransport{ws: ws, out: make(chan []byte, cfg.SendQueue), writeTimeout: cfg.WriteTimeout, closeGrace: cfg.CloseGrace}
}

func (t *wsTransport) send(b []byte) bool {
	select {
	case t.out <- b:
		return true
	default:
		return false
	}
}

func (t *wsTransport) run(done <-chan struct{}, failed func()) {
	for {
		select {
		case b := <-t.out:
			_ = t.ws.SetWriteDeadline(time.Now().Add(t.writeTimeout))
			if err := t.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				failed()
				return
			}
		case <-done:
			return
		}
	}
}

func (t *wsTransport) close(code int, reason string) {
	_ = t.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	time.AfterFunc(t.closeGrace, func() { _ = t.ws.NetConn().Close() })
}

func (t *wsTransport) shut() { _ = t.ws.Close() }
