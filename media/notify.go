package media

import (
	"encoding/json"
	"time"
)

// timestampLayout is RFC 3339 in UTC with microseconds.
const timestampLayout = "2006-01-02T15:04:05.000000Z"

// notifyEntry describes a member in the data list of the connection.created
// a newcomer gets about itself.
type notifyEntry struct {
	ClientID      string          `json:"client_id"`
	BundleID      string          `json:"bundle_id"`
	ConnectionID  string          `json:"connection_id"`
	AuthnMetadata json.RawMessage `json:"authn_metadata,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
}

// notifyEvent builds a connection.* notify about subject, with the
// channel's counts among members (established connections).
func notifyEvent(event string, subject *connection, members []*connection) map[string]any {
	counts := map[Role]int{}
	for _, m := range members {
		counts[m.req.Role]++
	}
	msg := map[string]any{
		"type":                         "notify",
		"event_type":                   event,
		"role":                         subject.req.Role,
		"session_id":                   subject.session.id,
		"client_id":                    subject.client,
		"bundle_id":                    subject.bundle,
		"connection_id":                subject.id,
		"audio":                        subject.req.Audio.Enabled,
		"video":                        subject.req.Video.Enabled,
		"minutes":                      subject.minutes(),
		"channel_connections":          len(members),
		"channel_sendrecv_connections": counts[RoleSendrecv],
		"channel_sendonly_connections": counts[RoleSendonly],
		"channel_recvonly_connections": counts[RoleRecvonly],
		"turn_transport_type":          "udp",
		"timestamp":                    nowTimestamp(),
	}
	if subject.req.Metadata != nil {
		msg["authn_metadata"] = subject.req.Metadata
	}
	if meta := subject.notifyMetadata(); meta != nil {
		msg["metadata"] = meta
	}
	return msg
}

func (c *connection) minutes() int {
	at := c.connectedAt.Load()
	if at == 0 {
		return 0
	}
	return int(time.Since(time.UnixMicro(at)) / time.Minute)
}

func (c *connection) entry() notifyEntry {
	return notifyEntry{ClientID: c.client, BundleID: c.bundle, ConnectionID: c.id, AuthnMetadata: c.req.Metadata, Metadata: c.notifyMetadata()}
}

// announceCreated tells an established connection about itself first, with
// the members already there in data, then tells every other member.
func (m *Media) announceCreated(c *connection) {
	members := c.session.established()
	self := notifyEvent("connection.created", c, members)
	data := []notifyEntry{}
	for _, o := range members {
		if o != c {
			data = append(data, o.entry())
		}
	}
	self["data"] = data
	c.send(self)
	others := mustEncode(notifyEvent("connection.created", c, members))
	for _, o := range members {
		if o != c {
			o.sendEncoded(others)
		}
	}
}

// announceDestroyed tells the remaining members that c left.
func (m *Media) announceDestroyed(c *connection) {
	members := c.session.established()
	msg := mustEncode(notifyEvent("connection.destroyed", c, members))
	for _, o := range members {
		o.sendEncoded(msg)
	}
}

// push sends {"type":"push","data":data} to each connection.
func push(conns []*connection, data any) {
	msg := mustEncode(map[string]any{"type": "push", "data": data})
	for _, c := range conns {
		c.sendEncoded(msg)
	}
}

// mustEncode encodes a message built from maps, strings and JSON that was
// validated on the way in. Should that ever fail, it returns nil and the
// message is not sent: no input may crash the node.
func mustEncode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

func nowTimestamp() string { return time.Now().UTC().Format(timestampLayout) }
