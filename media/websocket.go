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

// The WebSocket: the /signaling handler, reading messages within the
// configured limits, and writing a connection's messages.

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
	c, err := m.admit(r.Context(), ws, limiter, req, ip)
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
	c.serveWebSocket()
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
// owns c. A connection whose signaling switched to DataChannels with
// ignore_disconnect_websocket outlives its WebSocket: the goroutine then
// waits for the connection to end another way.
func (c *connection) serveWebSocket() {
	established := time.AfterFunc(c.m.cfg.ConnectTimeout, func() {
		if !c.isEstablished() {
			c.close(signaling.CloseTimeout, "ICE-CONNECTION-TIMEOUT")
		}
	})
	defer established.Stop()
	for {
		b, err := c.m.readMessage(c.ws, c.limiter)
		if err == nil {
			err = c.receiveMessage(b)
		}
		var se *signaling.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &se):
			c.close(signaling.CloseSignaling, se.Reason)
		case c.ctx.Err() == nil && c.survivesWebSocketClose():
			c.dropWebSocket()
			c.log.Info("websocket closed; signaling goes on over DataChannels")
			<-c.ctx.Done()
			// Ended by close, or by the media plane stopping (then this
			// close is the one that leaves the session).
			c.close(signaling.CloseUnavailable, "SHUTDOWN")
		case c.ctx.Err() == nil:
			// The client went away without a disconnect.
			c.close(signaling.CloseTimeout, "WEBSOCKET-CLOSED")
		}
		break
	}
	c.teardown()
}

// writeWebSocket writes one message to the WebSocket, unless the client
// closed it after switching to DataChannels. A failed write ends the
// connection unless it survives its WebSocket.
func (c *connection) writeWebSocket(b []byte) bool {
	if c.wsGone.Load() {
		return true
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.m.cfg.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		if c.survivesWebSocketClose() {
			c.dropWebSocket()
			return true
		}
		c.close(signaling.CloseTimeout, "WRITE-FAILED")
		return false
	}
	return true
}

// dropWebSocket forgets a WebSocket the connection outlives.
func (c *connection) dropWebSocket() {
	if c.wsGone.CompareAndSwap(false, true) {
		_ = c.ws.Close()
	}
}

// closeWebSocket sends a close frame and drops the client's TCP connection
// after a grace period in which it can read it.
func (c *connection) closeWebSocket(code int, reason string) {
	if c.wsGone.Load() {
		return
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	time.AfterFunc(c.m.cfg.CloseGrace, func() { _ = c.ws.NetConn().Close() })
}
