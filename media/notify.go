package media

import (
	"time"

	"github.com/sorad/sorad/media/channel"
	"github.com/sorad/sorad/media/signaling"
)

// connectionNotify builds a connection.* notify about subject, with the
// channel's counts among members (established connections).
func connectionNotify(event string, subject *connection, members []*connection) signaling.ConnectionNotify {
	counts := map[signaling.Role]int{}
	for _, m := range members {
		counts[m.req.Role]++
	}
	return signaling.ConnectionNotify{
		EventType:                  event,
		Role:                       subject.req.Role,
		SessionID:                  subject.session.id,
		ClientID:                   subject.client,
		BundleID:                   subject.bundle,
		ConnectionID:               subject.id,
		Audio:                      subject.req.Audio.Enabled,
		Video:                      subject.req.Video.Enabled,
		Minutes:                    subject.minutes(),
		ChannelConnections:         len(members),
		ChannelSendrecvConnections: counts[signaling.RoleSendrecv],
		ChannelSendonlyConnections: counts[signaling.RoleSendonly],
		ChannelRecvonlyConnections: counts[signaling.RoleRecvonly],
		TurnTransportType:          "udp",
		Timestamp:                  signaling.Timestamp(time.Now()),
		AuthnMetadata:              subject.req.Metadata,
		AuthzMetadata:              subject.grant.metadata,
		Metadata:                   subject.notifyMetadata(),
	}
}

func (c *connection) minutes() int {
	at := c.connectedAt.Load()
	if at == 0 {
		return 0
	}
	return int(time.Since(time.UnixMicro(at)) / time.Minute)
}

func (c *connection) entry() signaling.NotifyEntry {
	return signaling.NotifyEntry{ClientID: c.client, BundleID: c.bundle, ConnectionID: c.id, AuthnMetadata: c.req.Metadata, AuthzMetadata: c.grant.metadata, Metadata: c.notifyMetadata()}
}

// announceCreated tells an established connection about itself first, with
// the members already there in data, then tells every other member. In a
// spotlight channel the newcomer then learns who is focused.
func announceCreated(c *connection) {
	s := c.session
	members := s.established()
	self := connectionNotify("connection.created", c, members)
	data := []signaling.NotifyEntry{}
	for _, o := range members {
		if o != c {
			data = append(data, o.entry())
		}
	}
	self.Data = &data
	c.send(self)
	others, _ := signaling.Encode(connectionNotify("connection.created", c, members))
	for _, o := range members {
		if o != c {
			o.sendEncoded(viaNotify, others)
		}
	}
	if s.spotlight {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, o := range s.snapshotLocked() {
			if focused, fixed := s.model.IsFocused(o.id); focused {
				c.send(s.spotlightNotify("spotlight.focused", o, fixed))
			}
		}
	}
}

// announceDestroyed tells the remaining members that c left.
func announceDestroyed(c *connection) {
	members := c.session.established()
	msg, _ := signaling.Encode(connectionNotify("connection.destroyed", c, members))
	for _, o := range members {
		o.sendEncoded(viaNotify, msg)
	}
}

// announceSpotlightLocked tells the established members of each focus
// change: spotlight.focused or spotlight.unfocused about the sender, and
// spotlight.changed after a sender gained the focus. s.mu is held.
func (s *session) announceSpotlightLocked(events []channel.Event) {
	members := establishedOf(s.snapshotLocked())
	for _, e := range events {
		subject, ok := s.members[e.ID]
		if !ok {
			continue // it left; its connection.destroyed tells the rest
		}
		kind := "spotlight.focused"
		if e.Kind == channel.Unfocused {
			kind = "spotlight.unfocused"
		}
		if subject.m.hooks() != nil {
			subject.m.sendEvent(s.spotlightEvent(kind, subject, e.Fixed))
		}
		msgs := []signaling.SpotlightNotify{s.spotlightNotify(kind, subject, e.Fixed)}
		if e.Kind == channel.Focused {
			changed := s.spotlightNotify("spotlight.changed", subject, e.Fixed)
			changed.SpotlightID = newID()
			msgs = append(msgs, changed)
		}
		for _, msg := range msgs {
			b, _ := signaling.Encode(msg)
			for _, m := range members {
				m.sendEncoded(viaNotify, b)
			}
		}
	}
}

// spotlightNotify is a spotlight.* notify about subject. s.mu is held.
func (s *session) spotlightNotify(kind string, subject *connection, fixed bool) signaling.SpotlightNotify {
	return signaling.SpotlightNotify{
		EventType:       kind,
		ChannelID:       s.channelID,
		ClientID:        subject.client,
		ConnectionID:    subject.id,
		SpotlightNumber: s.model.SpotlightNumber(),
		Fixed:           fixed,
		Audio:           subject.req.Audio.Enabled,
		Video:           subject.req.Video.Enabled,
		Timestamp:       signaling.Timestamp(time.Now()),
	}
}

// push sends {"type":"push","data":data} to each connection.
func push(conns []*connection, data any) {
	msg, err := signaling.Encode(signaling.Push{Data: data})
	if err != nil {
		return // cannot happen: data was validated JSON on the way in
	}
	for _, c := range conns {
		c.sendEncoded(viaPush, msg)
	}
}
