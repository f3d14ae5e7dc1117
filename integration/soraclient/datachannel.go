package soraclient

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// DataChannel signaling and messaging. The server creates every
// DataChannel; the client only accepts them (OnDataChannel), keeps them by
// label and compresses or inflates each label's payloads as the offer's
// "data_channels" entry for that label says.

// Labels of the DataChannels Sora uses for signaling. Messaging labels
// start with "#".
const (
	LabelSignaling = "signaling"
	LabelNotify    = "notify"
	LabelPush      = "push"
	LabelStats     = "stats"
	LabelRPC       = "rpc"
)

const (
	// MaxLabelMessages is how many received payloads a Client keeps per
	// messaging label; older ones are dropped first.
	MaxLabelMessages = 10000
	// ConnectionIDLength is the length of the sender's connection_id that
	// Sora puts in front of every messaging payload when the receiver's
	// connect entry for the label asked for the sender_connection_id
	// header.
	ConnectionIDLength = 26

	maxInflated = 16 << 20 // largest inflated DataChannel message, bytes
)

// DataChannelOption is one entry of connect's "data_channels". Label is
// always sent; empty strings, nil pointers and a false
// SenderConnectionIDHeader are left out.
type DataChannelOption struct {
	// Label names the channel; messaging labels start with "#".
	Label string
	// Direction is "sendonly", "recvonly" or "sendrecv".
	Direction string
	// Compress asks for zlib-compressed payloads on this label.
	Compress *bool
	// Ordered, MaxPacketLifeTime, MaxRetransmits and Protocol are the
	// DataChannel parameters the server should open the channel with.
	Ordered           *bool
	MaxPacketLifeTime *int
	MaxRetransmits    *int
	Protocol          string
	// SenderConnectionIDHeader sends header [{"type":"sender_connection_id"}]:
	// every message received on the label then starts with the sender's
	// connection_id (see SplitSenderConnectionID).
	SenderConnectionIDHeader bool
}

func (o DataChannelOption) connectEntry() map[string]any {
	m := map[string]any{"label": o.Label}
	if o.Direction != "" {
		m["direction"] = o.Direction
	}
	if o.Compress != nil {
		m["compress"] = *o.Compress
	}
	if o.Ordered != nil {
		m["ordered"] = *o.Ordered
	}
	if o.MaxPacketLifeTime != nil {
		m["max_packet_life_time"] = *o.MaxPacketLifeTime
	}
	if o.MaxRetransmits != nil {
		m["max_retransmits"] = *o.MaxRetransmits
	}
	if o.Protocol != "" {
		m["protocol"] = o.Protocol
	}
	if o.SenderConnectionIDHeader {
		m["header"] = []any{map[string]any{"type": "sender_connection_id"}}
	}
	return m
}

// SplitSenderConnectionID splits a messaging payload received with the
// sender_connection_id header into the sender's connection_id and the
// message. ok is false when msg is shorter than the header.
func SplitSenderConnectionID(msg []byte) (connectionID string, payload []byte, ok bool) {
	if len(msg) < ConnectionIDLength {
		return "", nil, false
	}
	return string(msg[:ConnectionIDLength]), msg[ConnectionIDLength:], true
}

// RPCError is a JSON-RPC 2.0 error object returned by the server for an RPC
// call.
type RPCError struct {
	Code    int
	Message string
	Data    json.RawMessage // nil when the error had no data
}

func (e *RPCError) Error() string {
	if len(e.Data) > 0 {
		return fmt.Sprintf("soraclient: rpc error %d %q (data %s)", e.Code, e.Message, e.Data)
	}
	return fmt.Sprintf("soraclient: rpc error %d %q", e.Code, e.Message)
}

// offerDataChannel is one entry of the offer's "data_channels".
type offerDataChannel struct {
	Label     string          `json:"label"`
	Direction string          `json:"direction"`
	Compress  bool            `json:"compress"`
	Header    json.RawMessage `json:"header"`
}

// dataChannel is one DataChannel the server opened.
type dataChannel struct {
	dc       *webrtc.DataChannel
	label    string
	compress bool // from the offer's data_channels

	opened    chan struct{}
	openOnce  sync.Once
	closed    chan struct{}
	closeOnce sync.Once
}

func (ch *dataChannel) isClosed() bool {
	select {
	case <-ch.closed:
		return true
	default:
		return false
	}
}

// labelLog is the received payloads of one messaging label.
type labelLog struct {
	msgs  [][]byte // the last MaxLabelMessages
	total int      // payloads ever received
}

type rpcResponse struct {
	result json.RawMessage
	err    error
}

// onDataChannel keeps a DataChannel the server opened. pion runs it before
// the channel can deliver messages.
func (c *Client) onDataChannel(dc *webrtc.DataChannel) {
	label := dc.Label()
	compress, listed := c.compress[label]
	if !listed {
		c.log.Warn("soraclient: DataChannel not listed in the offer's data_channels", "label", label)
	}
	ch := &dataChannel{dc: dc, label: label, compress: compress, opened: make(chan struct{}), closed: make(chan struct{})}
	c.dcMu.Lock()
	c.dcs[label] = ch
	c.dcMu.Unlock()
	if label == LabelSignaling {
		c.endMu.Lock()
		c.sigLive = true
		c.endMu.Unlock()
	}
	dc.OnOpen(func() {
		c.log.Debug("soraclient: DataChannel open", "label", label)
		ch.openOnce.Do(func() { close(ch.opened) })
		if label == LabelSignaling {
			c.sigOpenOnce.Do(func() { close(c.sigOpen) })
		}
	})
	dc.OnClose(func() {
		c.log.Debug("soraclient: DataChannel closed", "label", label)
		ch.closeOnce.Do(func() { close(ch.closed) })
		if label == LabelSignaling {
			c.markDataChannelsClosed()
		}
	})
	dc.OnMessage(func(msg webrtc.DataChannelMessage) { c.onDataChannelMessage(ch, msg) })
}

// onDataChannelMessage handles one message; pion calls it from the
// channel's read loop, so messages of one label are handled in order.
func (c *Client) onDataChannelMessage(ch *dataChannel, msg webrtc.DataChannelMessage) {
	data := msg.Data
	if ch.compress {
		var err error
		if data, err = inflate(data, maxInflated); err != nil {
			c.log.Warn("soraclient: dropping DataChannel message that does not inflate", "label", ch.label, "err", err)
			return
		}
	}
	if strings.HasPrefix(ch.label, "#") {
		c.recordLabel(ch.label, data)
		return
	}
	m := c.record(ch.label, true, data)
	switch ch.label {
	case LabelSignaling:
		switch m.Type {
		case "re-offer":
			c.handleReOffer(data, "re-answer")
		case "close":
			c.log.Debug("soraclient: close over DataChannel", "raw", string(data))
		}
	case LabelStats:
		if m.Type == "req-stats" {
			if err := c.sendJSONOn(ch, map[string]any{"type": "stats", "reports": c.statsReport()}); err != nil {
				c.log.Debug("soraclient: send stats", "err", err)
			}
		}
	case LabelRPC:
		c.handleRPCMessage(data)
	}
}

// onSwitched handles {"type":"switched"} from the WebSocket.
func (c *Client) onSwitched(data []byte) {
	var msg struct {
		IgnoreDisconnectWebSocket bool `json:"ignore_disconnect_websocket"`
	}
	_ = json.Unmarshal(data, &msg)
	c.endMu.Lock()
	c.sigLive = true
	c.endMu.Unlock()
	c.switchedOnce.Do(func() { close(c.switched) })
	if msg.IgnoreDisconnectWebSocket && c.opts.CloseWebSocketOnSwitch {
		if err := c.CloseWebSocket(websocket.CloseNormalClosure, "SELF-CLOSED"); err != nil {
			c.log.Debug("soraclient: close websocket after switched", "err", err)
		}
	}
}

// markDataChannelsClosed records that DataChannel signaling is over.
func (c *Client) markDataChannelsClosed() {
	c.dcClosedOnce.Do(func() { close(c.dcClosed) })
	c.endMu.Lock()
	c.sigDone = true
	c.endMu.Unlock()
	c.checkEnded()
}

// checkEnded closes ended once no transport can deliver messages any more:
// the WebSocket is closed and DataChannel signaling, if the server started
// it, is closed too.
func (c *Client) checkEnded() {
	c.endMu.Lock()
	done := c.wsDone && (!c.sigLive || c.sigDone)
	c.endMu.Unlock()
	if done {
		c.endedOnce.Do(func() { close(c.ended) })
	}
}

func (c *Client) channel(label string) *dataChannel {
	c.dcMu.Lock()
	defer c.dcMu.Unlock()
	return c.dcs[label]
}

// openChannel returns the open DataChannel of that label or an error.
func (c *Client) openChannel(label string) (*dataChannel, error) {
	ch := c.channel(label)
	if ch == nil {
		return nil, fmt.Errorf("soraclient: the server opened no DataChannel %q", label)
	}
	if s := ch.dc.ReadyState(); s != webrtc.DataChannelStateOpen {
		return nil, fmt.Errorf("soraclient: DataChannel %q is %s: %w", label, s, ErrClosed)
	}
	return ch, nil
}

// signalingChannel returns the DataChannel signaling when signaling goes
// over it, nil when it goes over the WebSocket. The channel is used as soon
// as it is open, as sora-js-sdk does. After "switched" the server has
// opened it, but pion may not have reported it open yet: then this waits
// for it (at most writeTimeout).
func (c *Client) signalingChannel() *dataChannel {
	ch := c.channel(LabelSignaling)
	if ch != nil && ch.dc.ReadyState() == webrtc.DataChannelStateOpen {
		return ch
	}
	select {
	case <-c.switched:
	default:
		return nil
	}
	if _, listed := c.compress[LabelSignaling]; !listed || (ch != nil && ch.isClosed()) {
		return nil
	}
	t := time.NewTimer(writeTimeout)
	defer t.Stop()
	select {
	case <-c.sigOpen:
	case <-c.dcClosed:
		return nil
	case <-t.C:
		return nil
	case <-c.ctx.Done():
		return nil
	}
	if ch = c.channel(LabelSignaling); ch != nil && ch.dc.ReadyState() == webrtc.DataChannelStateOpen {
		return ch
	}
	return nil
}

// sendSignaling sends a signaling message on DataChannel signaling when it
// is in use, else on the WebSocket.
func (c *Client) sendSignaling(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("soraclient: marshal: %w", err)
	}
	if ch := c.signalingChannel(); ch != nil {
		return c.sendEncoded(ch, data, true)
	}
	return c.SendRaw(websocket.TextMessage, data)
}

func (c *Client) sendJSONOn(ch *dataChannel, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("soraclient: marshal: %w", err)
	}
	return c.sendEncoded(ch, data, true)
}

// sendEncoded sends data on ch as Sora expects it: zlib-compressed binary
// when the label is compressed, else JSON as text and other payloads as
// binary.
func (c *Client) sendEncoded(ch *dataChannel, data []byte, isJSON bool) error {
	var err error
	switch {
	case ch.compress:
		err = ch.dc.Send(deflate(data))
	case isJSON:
		err = ch.dc.SendText(string(data))
	default:
		err = ch.dc.Send(data)
	}
	return ch.sendError(err)
}

// sendError wraps a send error, adding ErrClosed when the channel is no
// longer open.
func (ch *dataChannel) sendError(err error) error {
	if err == nil {
		return nil
	}
	if ch.dc.ReadyState() != webrtc.DataChannelStateOpen || ch.isClosed() {
		return fmt.Errorf("soraclient: send on DataChannel %q: %w (%w)", ch.label, err, ErrClosed)
	}
	return fmt.Errorf("soraclient: send on DataChannel %q: %w", ch.label, err)
}

func (c *Client) recordLabel(label string, data []byte) {
	c.labelMu.Lock()
	defer c.labelMu.Unlock()
	l := c.labels[label]
	if l == nil {
		l = &labelLog{}
		c.labels[label] = l
	}
	if len(l.msgs) >= MaxLabelMessages {
		l.msgs[0] = nil
		l.msgs = l.msgs[1:]
	}
	l.msgs = append(l.msgs, data)
	l.total++
	close(c.labelNotify)
	c.labelNotify = make(chan struct{})
}

// handleRPCMessage resolves the pending RPC call a JSON-RPC response on DC
// rpc answers. Requests and notifications from the server are only
// recorded.
func (c *Client) handleRPCMessage(data []byte) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method *string         `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(data, &msg); err != nil || msg.Method != nil {
		return
	}
	id, err := strconv.ParseInt(string(msg.ID), 10, 64)
	if err != nil {
		c.log.Warn("soraclient: rpc response without an integer id", "raw", string(data))
		return
	}
	c.rpcMu.Lock()
	done := c.rpcPending[id]
	delete(c.rpcPending, id)
	c.rpcMu.Unlock()
	if done == nil {
		c.log.Warn("soraclient: rpc response to no pending call", "id", id)
		return
	}
	r := rpcResponse{result: msg.Result}
	if len(msg.Error) > 0 && string(msg.Error) != "null" {
		var e struct {
			Code    *int            `json:"code"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(msg.Error, &e); err != nil || e.Code == nil {
			r = rpcResponse{err: fmt.Errorf("soraclient: malformed rpc error object %s", msg.Error)}
		} else {
			r = rpcResponse{err: &RPCError{Code: *e.Code, Message: e.Message, Data: e.Data}}
		}
	}
	done <- r // buffered, one response per id
}

// Switched is closed when {"type":"switched"} arrived on the WebSocket.
func (c *Client) Switched() <-chan struct{} { return c.switched }

// DataChannelsClosed is closed when the DataChannel signaling has closed
// (the server closes all DataChannels together when the connection ends),
// and by Close. It stays open while the server never opened one.
func (c *Client) DataChannelsClosed() <-chan struct{} { return c.dcClosed }

// DataChannel returns the DataChannel the server opened with that label, or
// nil.
func (c *Client) DataChannel(label string) *webrtc.DataChannel {
	if ch := c.channel(label); ch != nil {
		return ch.dc
	}
	return nil
}

// DataChannelLabels returns the labels of the DataChannels the server
// opened, sorted.
func (c *Client) DataChannelLabels() []string {
	c.dcMu.Lock()
	defer c.dcMu.Unlock()
	out := make([]string, 0, len(c.dcs))
	for l := range c.dcs {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// CloseWebSocket closes the signaling WebSocket from the client side with
// that close code and reason, while the PeerConnection and the DataChannels
// stay up: after "switched" with ignore_disconnect_websocket true the
// server keeps the connection. The reader stops at the server's close frame
// (which CloseInfo does not report) or after a second; Closed is closed
// then.
func (c *Client) CloseWebSocket(code int, reason string) error {
	select {
	case <-c.closed:
		return fmt.Errorf("soraclient: close websocket: %w", ErrClosed)
	default:
	}
	c.wsSelfClosed.Store(true)
	msg := websocket.FormatCloseMessage(code, reason)
	err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeTimeout))
	_ = c.ws.SetReadDeadline(time.Now().Add(closeWaitTimeout))
	if err != nil {
		return fmt.Errorf("soraclient: close websocket: %w", err)
	}
	return nil
}

// SendMessage sends data on the messaging label (it must start with "#"),
// zlib-compressed when the offer says the label is compressed.
func (c *Client) SendMessage(label string, data []byte) error {
	if !strings.HasPrefix(label, "#") {
		return fmt.Errorf("soraclient: messaging label %q does not start with #", label)
	}
	ch, err := c.openChannel(label)
	if err != nil {
		return err
	}
	return c.sendEncoded(ch, data, false)
}

// SendOnDataChannel sends data unchanged (never compressed) on the
// DataChannel of that label, as a text message when text is set, else as
// binary: for tests of what the server does with bad input.
func (c *Client) SendOnDataChannel(label string, data []byte, text bool) error {
	ch, err := c.openChannel(label)
	if err != nil {
		return err
	}
	if text {
		err = ch.dc.SendText(string(data))
	} else {
		err = ch.dc.Send(data)
	}
	return ch.sendError(err)
}

// LabelMessages returns copies of the payloads received on a messaging
// label, inflated when the label is compressed and with the
// sender_connection_id header left in place, oldest first (at most
// MaxLabelMessages).
func (c *Client) LabelMessages(label string) [][]byte {
	c.labelMu.Lock()
	defer c.labelMu.Unlock()
	return c.labelMessagesLocked(label)
}

// LabelMessageCount is how many payloads ever arrived on a messaging
// label (also those LabelMessages no longer keeps).
func (c *Client) LabelMessageCount(label string) int {
	c.labelMu.Lock()
	defer c.labelMu.Unlock()
	if l := c.labels[label]; l != nil {
		return l.total
	}
	return 0
}

func (c *Client) labelMessagesLocked(label string) [][]byte {
	l := c.labels[label]
	if l == nil {
		return nil
	}
	out := make([][]byte, len(l.msgs))
	for i, m := range l.msgs {
		out[i] = bytes.Clone(m)
	}
	return out
}

// WaitLabelMessages waits until at least n payloads have been received on a
// messaging label and returns LabelMessages. It fails when ctx ends or when
// the connection is over (DataChannel signaling or, without it, the
// WebSocket closed): the error then wraps ErrClosed.
func (c *Client) WaitLabelMessages(ctx context.Context, label string, n int) ([][]byte, error) {
	closed := false
	for {
		c.labelMu.Lock()
		got := 0
		if l := c.labels[label]; l != nil {
			got = l.total
		}
		if got >= n {
			out := c.labelMessagesLocked(label)
			c.labelMu.Unlock()
			return out, nil
		}
		notify := c.labelNotify
		c.labelMu.Unlock()
		if closed {
			return nil, fmt.Errorf("soraclient: waiting for %d messages on %q (have %d): %w", n, label, got, ErrClosed)
		}
		select {
		case <-notify:
		case <-c.ended:
			closed = true
		case <-c.dcClosed:
			closed = true
		case <-ctx.Done():
			return nil, fmt.Errorf("soraclient: waiting for %d messages on %q (have %d): %w", n, label, got, context.Cause(ctx))
		}
	}
}

// RPC calls a JSON-RPC 2.0 method on DC rpc and returns the result as
// received (nil when the response had none). params is left out of the
// request when nil. A JSON-RPC error response is returned as a *RPCError.
func (c *Client) RPC(ctx context.Context, method string, params any) (json.RawMessage, error) {
	ch, err := c.openChannel(LabelRPC)
	if err != nil {
		return nil, fmt.Errorf("soraclient: rpc %s: %w", method, err)
	}
	done := make(chan rpcResponse, 1)
	c.rpcMu.Lock()
	c.rpcID++
	id := c.rpcID
	c.rpcPending[id] = done
	c.rpcMu.Unlock()
	defer func() {
		c.rpcMu.Lock()
		delete(c.rpcPending, id)
		c.rpcMu.Unlock()
	}()
	req := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if err := c.sendJSONOn(ch, req); err != nil {
		return nil, fmt.Errorf("soraclient: rpc %s: %w", method, err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			var re *RPCError
			if errors.As(r.err, &re) {
				return nil, re
			}
			return nil, fmt.Errorf("soraclient: rpc %s: %w", method, r.err)
		}
		return r.result, nil
	case <-ch.closed:
		return nil, fmt.Errorf("soraclient: rpc %s: DataChannel closed: %w", method, ErrClosed)
	case <-c.ctx.Done():
		return nil, fmt.Errorf("soraclient: rpc %s: %w", method, ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("soraclient: rpc %s: %w", method, context.Cause(ctx))
	}
}

// disconnectOverDataChannel sends disconnect on DC signaling and waits for
// the server to close the DataChannels or the WebSocket. The server closes
// the DataChannels first, then a WebSocket still open: a close frame that
// follows within closeWaitTimeout is returned.
func (c *Client) disconnectOverDataChannel(ctx context.Context, ch *dataChannel) (*CloseError, error) {
	wsOpen := true
	select {
	case <-c.closed:
		wsOpen = false
	default:
	}
	wsClosed := c.closed
	if !wsOpen {
		wsClosed = nil
	}
	if err := c.sendJSONOn(ch, map[string]any{"type": "disconnect", "reason": "NO-ERROR"}); err != nil {
		return nil, err
	}
	select {
	case <-ch.closed:
	case <-wsClosed:
	case <-ctx.Done():
		return nil, fmt.Errorf("soraclient: waiting for the server to close after disconnect: %w", context.Cause(ctx))
	}
	if !wsOpen || c.wsSelfClosed.Load() {
		return nil, nil
	}
	t := time.NewTimer(closeWaitTimeout)
	defer t.Stop()
	select {
	case <-c.closed:
	case <-t.C:
	case <-ctx.Done():
	}
	return c.CloseInfo(), nil
}

// deflate compresses data as zlib (RFC 1950), as Sora's compressed labels
// carry it.
func deflate(data []byte) []byte {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	_, _ = w.Write(data) // writes to a bytes.Buffer do not fail
	_ = w.Close()
	return b.Bytes()
}

// inflate decompresses a zlib stream of at most limit inflated bytes.
func inflate(data []byte, limit int64) ([]byte, error) {
	r, err := zlib.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("soraclient: inflate: %w", err)
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("soraclient: inflate: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("soraclient: inflate: more than %d bytes", limit)
	}
	return out, nil
}
