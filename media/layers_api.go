package media

import (
	"errors"
	"time"

	"github.com/sorad/sorad/media/channel"
)

// The simulcast, spotlight, pause and bit rate operations. Each names the
// connections it is about by the API's field names, so that a connection
// that is not in the channel is reported by the field it came in.

// field is an API field naming a connection, and its value.
type field struct{ name, value string }

// modelError maps an error of the channel model to the API's errors.
func modelError(channelID string, err error, fields ...field) error {
	var nm *channel.NotMemberError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nm):
		name := "connection_id"
		for _, f := range fields {
			if f.value == nm.ID {
				name = f.name
			}
		}
		return &NotFoundError{Type: "CONNECTION-NOT-FOUND", Reason: map[string]string{"channel_id": channelID, name: nm.ID}}
	case errors.Is(err, channel.ErrNotSpotlight):
		return &InvalidError{Type: "NOT-SPOTLIGHT-CHANNEL", Reason: "channel " + channelID + " is not a spotlight channel"}
	case errors.Is(err, channel.ErrNotForwarded):
		return &InvalidError{Type: "NOT-FORWARDED", Reason: "the receiving connection does not receive the sending connection's media (roles or bundle_id)"}
	case errors.Is(err, channel.ErrNotSender):
		return &InvalidError{Type: "NOT-A-SENDER", Reason: "the connection does not send media"}
	case errors.Is(err, channel.ErrAllFixed):
		return &InvalidError{Type: "ALL-FOCUS-FIXED", Reason: "every focused connection is fixed by FocusSpotlightFixed; unfocus one first"}
	case errors.Is(err, channel.ErrSpotlightNumber), errors.Is(err, channel.ErrInvalidRID):
		return &InvalidError{Type: "INVALID-FIELD-VALUE", Reason: err.Error()}
	}
	return err
}

// changeModel runs f on the channel's model, then routes and announces
// what changed.
func (m *Media) changeModel(channelID string, f func(c *channel.Channel, now time.Time) ([]channel.Event, error), fields ...field) error {
	s, err := m.session(channelID)
	if err != nil {
		return err
	}
	return modelError(channelID, s.change(func(c *channel.Channel) ([]channel.Event, error) {
		return f(c, time.Now())
	}), fields...)
}

// RequestRtpStream asks for the simulcast layer recv gets from send, or from
// every sender when send is empty (Sora_20201005.RequestRtpStream).
func (m *Media) RequestRtpStream(channelID, recv, send string, rid RID) error {
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		return nil, c.RequestRID(recv, send, rid)
	}, field{"recv_connection_id", recv}, field{"send_connection_id", send})
}

// ResetRtpStream forgets RequestRtpStream (Sora_20201005.ResetRtpStream).
func (m *Media) ResetRtpStream(channelID, recv, send string) error {
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		return nil, c.ResetRID(recv, send)
	}, field{"recv_connection_id", recv}, field{"send_connection_id", send})
}

// PauseRtpStream stops send's video to recv; the packets still reach this
// node (Sora_20200401.PauseRtpStream).
func (m *Media) PauseRtpStream(channelID, recv, send string) error {
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		return nil, c.Pause(recv, send)
	}, field{"recv_connection_id", recv}, field{"send_connection_id", send})
}

// ResumeRtpStream starts it again, at a key frame
// (Sora_20200401.ResumeRtpStream).
func (m *Media) ResumeRtpStream(channelID, recv, send string) error {
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		return nil, c.Resume(recv, send)
	}, field{"recv_connection_id", recv}, field{"send_connection_id", send})
}

// PausedStream is one entry of ListPauseRtpStreams.
type PausedStream struct {
	ChannelID        string `json:"channel_id"`
	RecvConnectionID string `json:"recv_connection_id"`
	Role             Role   `json:"role"` // the receiving connection's
	SendConnectionID string `json:"send_connection_id"`
}

// ListPauseRtpStreams lists the channel's paused streams
// (Sora_20200401.ListPauseRtpStreams).
func (m *Media) ListPauseRtpStreams(channelID string) ([]PausedStream, error) {
	s, err := m.session(channelID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []PausedStream{}
	for _, p := range s.model.Paused() {
		if c, ok := s.members[p.Recv]; ok {
			out = append(out, PausedStream{ChannelID: channelID, RecvConnectionID: p.Recv, Role: c.req.Role, SendConnectionID: p.Send})
		}
	}
	return out, nil
}

// ChangeSpotlightNumber sets how many senders a spotlight channel focuses
// (Sora_20200807.ChangeSpotlightNumber).
func (m *Media) ChangeSpotlightNumber(channelID string, n int) error {
	return m.changeModel(channelID, func(c *channel.Channel, now time.Time) ([]channel.Event, error) {
		return c.SetSpotlightNumber(n, now)
	})
}

// FocusSpotlight focuses a sender now; fixed keeps the focus until
// UnfocusSpotlight (Sora_20200807.FocusSpotlight, FocusSpotlightFixed).
func (m *Media) FocusSpotlight(channelID, connectionID string, fixed bool) error {
	return m.changeModel(channelID, func(c *channel.Channel, now time.Time) ([]channel.Event, error) {
		return c.Focus(connectionID, fixed, now)
	}, field{"connection_id", connectionID})
}

// UnfocusSpotlight takes the focus off a sender, fixed or not
// (Sora_20200807.UnfocusSpotlight).
func (m *Media) UnfocusSpotlight(channelID, connectionID string) error {
	return m.changeModel(channelID, func(c *channel.Channel, now time.Time) ([]channel.Event, error) {
		return c.Unfocus(connectionID, now)
	}, field{"connection_id", connectionID})
}

// SpotlightRIDRequest is one layer request of a spotlight receiver; Send
// empty means every sender.
type SpotlightRIDRequest struct {
	Recv, Send           string
	FocusRID, UnfocusRID RID
}

// BatchRequestSpotlightRID asks for the layers receivers get from focused
// and unfocused senders, all requests or none
// (Sora_20211215.RequestSpotlightRid and BatchRequestSpotlightRid).
func (m *Media) BatchRequestSpotlightRID(channelID string, rs []SpotlightRIDRequest) error {
	var fields []field
	for _, r := range rs {
		fields = append(fields, field{"recv_connection_id", r.Recv}, field{"send_connection_id", r.Send})
	}
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		if !c.Spotlight() {
			return nil, channel.ErrNotSpotlight
		}
		for _, r := range rs {
			if err := c.CheckPair(r.Recv, r.Send); err != nil {
				return nil, err
			}
		}
		for _, r := range rs {
			if err := c.RequestSpotlightRID(r.Recv, r.Send, r.FocusRID, r.UnfocusRID); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}, fields...)
}

// ResetSpotlightRID forgets RequestSpotlightRID
// (Sora_20211215.ResetSpotlightRid).
func (m *Media) ResetSpotlightRID(channelID, recv, send string) error {
	return m.changeModel(channelID, func(c *channel.Channel, _ time.Time) ([]channel.Event, error) {
		return nil, c.ResetSpotlightRID(recv, send)
	}, field{"recv_connection_id", recv}, field{"send_connection_id", send})
}

// ChangeUpstreamVideoBitRate caps a sender's video at kbps: a re-offer
// carries the new b=AS, and ListConnections shows the new bit rate
// (Sora_20190327.ChangeUpstreamVideoBitRate).
func (m *Media) ChangeUpstreamVideoBitRate(channelID, connectionID string, kbps int) error {
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		return err
	}
	if !c.req.Role.Sends() || !c.req.Video.Enabled {
		return &InvalidError{Type: "NOT-A-VIDEO-SENDER", Reason: "the connection does not send video"}
	}
	c.setVideoBitRate(kbps)
	return nil
}
