package media

import (
	"bytes"
	"encoding/json"
	"sort"
	"time"
)

// User-agent statistics: the WebRTC statistics a client reports about
// itself (the browser's getStats()), which sorad asks for and keeps, the
// latest report per connection. Over WebSocket the request is the stats
// flag of ping and the report the stats field of pong.

// uaReport is the latest report of one connection.
type uaReport struct {
	at    time.Time
	stats json.RawMessage // a JSON array
}

// UserAgentStats is a connection's latest report as the Get API shows it.
type UserAgentStats struct {
	ChannelID    string          `json:"channel_id"`
	ConnectionID string          `json:"connection_id"`
	Stats        json.RawMessage `json:"stats"`
	Timestamp    string          `json:"timestamp"`
}

// UserAgentStatsEntry is a connection's latest report as the List APIs
// show it.
type UserAgentStatsEntry struct {
	ChannelID      string          `json:"channel_id"`
	ConnectionID   string          `json:"connection_id"`
	Timestamp      string          `json:"timestamp"`
	UserAgentStats json.RawMessage `json:"user_agent_stats"`
}

// uaTimestamp is the timestamp format of these APIs: RFC 3339, UTC,
// milliseconds ("2021-11-13T13:05:33.264Z").
func uaTimestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// recordUserAgentStats keeps a report the client sent, if it is a JSON
// array within MaxUserAgentStats bytes; others are dropped and counted.
func (c *connection) recordUserAgentStats(stats json.RawMessage) {
	if c.grant.uaStatsOff {
		return
	}
	stats = bytes.TrimSpace(stats)
	if len(stats) == 0 || bytes.Equal(stats, []byte("null")) {
		return
	}
	if len(stats) > c.m.cfg.MaxUserAgentStats || stats[0] != '[' || !json.Valid(stats) {
		c.m.stats.userAgentStatsDropped.Add(1)
		return
	}
	kept := bytes.Clone(stats)
	c.uaStats.Store(&uaReport{at: time.Now(), stats: kept})
	c.sendStats(kept)
}

// userAgentStats returns the latest report, or an empty one dated when the
// connection was created if the client has sent none yet.
func (c *connection) userAgentStats() (json.RawMessage, time.Time) {
	if r := c.uaStats.Load(); r != nil {
		return r.stats, r.at
	}
	return json.RawMessage("[]"), c.created
}

func (c *connection) userAgentStatsEntry() UserAgentStatsEntry {
	stats, at := c.userAgentStats()
	return UserAgentStatsEntry{ChannelID: c.req.ChannelID, ConnectionID: c.id, Timestamp: uaTimestamp(at), UserAgentStats: stats}
}

// GetUserAgentStats returns one connection's latest report.
func (m *Media) GetUserAgentStats(channelID, connectionID string) (UserAgentStats, error) {
	c, err := m.connectionIn(channelID, connectionID)
	if err != nil {
		return UserAgentStats{}, err
	}
	stats, at := c.userAgentStats()
	return UserAgentStats{ChannelID: channelID, ConnectionID: c.id, Stats: stats, Timestamp: uaTimestamp(at)}, nil
}

// ListChannelUserAgentStats returns the latest report of every connection
// of a channel, by connection ID.
func (m *Media) ListChannelUserAgentStats(channelID string) ([]UserAgentStatsEntry, error) {
	cs, err := m.members(channelID)
	if err != nil {
		return nil, err
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
	out := make([]UserAgentStatsEntry, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.userAgentStatsEntry())
	}
	return out, nil
}

// ListUserAgentStats returns the latest report of every connection of this
// node, by channel ID and connection ID.
func (m *Media) ListUserAgentStats() []UserAgentStatsEntry {
	cs := m.sortedConnections()
	out := make([]UserAgentStatsEntry, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.userAgentStatsEntry())
	}
	return out
}

// SortUserAgentStats orders entries by channel ID, then connection ID.
func SortUserAgentStats(es []UserAgentStatsEntry) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].ChannelID != es[j].ChannelID {
			return es[i].ChannelID < es[j].ChannelID
		}
		return es[i].ConnectionID < es[j].ConnectionID
	})
}
