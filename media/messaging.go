package media

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"

	"github.com/pion/webrtc/v4"
)

// Messaging: what a client sends on a # label reaches every other member
// of the channel that has the label with a direction that receives, except
// those of the sender's bundle_id, message by message and in order per
// label. A message over MessagingMaxMessageSize, over the sender's
// MessagingRate, or to a receiver that does not keep up is dropped and
// counted.

// onLabelMessage delivers a message the client sent on one of its # labels.
// It runs on pion's reading goroutine for that DataChannel, so one label's
// messages are delivered in the order they came.
func (c *connection) onLabelMessage(l *labelChannel, msg webrtc.DataChannelMessage) {
	if c.ctx.Err() != nil {
		return
	}
	st := c.m.stats
	st.messagesReceived.Add(1)
	drop := func(why string) {
		st.messagesDropped.Add(1)
		c.log.Debug("dropped a message", "label", l.spec.Label, "why", why)
	}
	if !l.spec.Direction.Sends() {
		drop("the label is recvonly for this connection")
		return
	}
	if len(msg.Data) > c.m.cfg.MessagingMaxMessageSize {
		drop("too large")
		return
	}
	if !c.msgLimiter.Allow() {
		drop("over the rate")
		return
	}
	out := outgoingMessage{sender: c.id, payload: msg.Data, text: msg.IsString && !l.compress}
	if l.compress {
		var err error
		if out.payload, err = inflate(msg.Data, c.m.cfg.MessagingMaxMessageSize); err != nil {
			drop("not zlib within the size limit")
			return
		}
	}
	for _, o := range c.session.snapshot() {
		if o == c || o.bundle == c.bundle || o.dcs == nil {
			continue
		}
		to := o.dcs.labels[l.spec.Label]
		if to == nil || !to.spec.Direction.Receives() || !to.opened.Load() {
			continue
		}
		b, text := out.formFor(c.m, to)
		if err := to.write(c.m, b, text); err != nil {
			st.messagesDropped.Add(1)
			continue
		}
		st.messagesDelivered.Add(1)
	}
}

// outgoingMessage is one message on its way to the receivers of a label,
// in the forms they ask for (with the sender's ID in front or not,
// compressed or not), each made once.
type outgoingMessage struct {
	sender  string
	payload []byte
	text    bool
	forms   [2][2][]byte // [with the sender's ID][compressed]; nil until needed
}

// formFor is the message as receiver to wants it, and whether it goes as
// text: only as sent, uncompressed and without a header.
func (o *outgoingMessage) formFor(m *Media, to *labelChannel) ([]byte, bool) {
	h, z := 0, 0
	if to.spec.SenderConnectionID {
		h = 1
	}
	if to.compress {
		z = 1
	}
	if o.forms[h][z] == nil {
		b := o.payload
		if h == 1 {
			b = make([]byte, 0, len(o.sender)+len(o.payload))
			b = append(append(b, o.sender...), o.payload...)
		}
		if z == 1 {
			b = m.deflate(b)
		}
		o.forms[h][z] = b
	}
	return o.forms[h][z], o.text && h == 0 && z == 0
}

// deflate is b in zlib (RFC 1950), as compressed DataChannel labels carry it.
func (m *Media) deflate(b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b)/2 + 64)
	w, _ := m.zlib.Get().(*zlib.Writer)
	if w == nil {
		w = zlib.NewWriter(&buf)
	} else {
		w.Reset(&buf)
	}
	_, _ = w.Write(b) // writes to a bytes.Buffer do not fail
	_ = w.Close()
	m.zlib.Put(w)
	return buf.Bytes()
}

// inflate undoes deflate, refusing anything that inflates beyond max bytes.
func inflate(b []byte, max int) ([]byte, error) {
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	if len(out) > max {
		return nil, fmt.Errorf("inflates beyond %d bytes", max)
	}
	return out, nil
}
