package load

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run saw. Its JSON form is the command's -json output.
type Report struct {
	URLs                  []string `json:"urls"`
	Channels              int      `json:"channels"`
	PublishersPerChannel  int      `json:"publishers_per_channel"`
	SubscribersPerChannel int      `json:"subscribers_per_channel"`
	// Media is what publishers send, e.g. "VP8 500 kbit/s + Opus 32
	// kbit/s".
	Media     string  `json:"media"`
	Simulcast bool    `json:"simulcast"`
	JoinRate  float64 `json:"join_rate"`
	// Seconds is how long the run lasted, joins included; Interrupted
	// says it was cut short (Ctrl-C).
	Seconds     float64 `json:"seconds"`
	Interrupted bool    `json:"interrupted"`

	Publishers  RoleReport `json:"publishers"`
	Subscribers RoleReport `json:"subscribers"`
	// Redirected counts joined clients that were admitted by another node
	// than the URL they contacted.
	Redirected int `json:"redirected"`

	// SentKbps spreads the publishers' bit rates (media payload, from
	// joined to the end); ReceivedKbps the subscribers'.
	SentKbps     Spread `json:"sent_kbps"`
	ReceivedKbps Spread `json:"received_kbps"`
	// ExpectedKbps is what a subscriber should receive: every publisher
	// of its channel at the configured bit rates; 0 with simulcast (a
	// subscriber gets one layer, the server's choice).
	ExpectedKbps float64 `json:"expected_kbps"`
	// SubscribersWithAll counts subscribers that received packets from
	// every publisher of their channel.
	SubscribersWithAll int     `json:"subscribers_with_all_publishers"`
	PacketsReceived    int64   `json:"packets_received"`
	PacketsLost        int64   `json:"packets_lost"`
	LossPercent        float64 `json:"loss_percent"`

	// Steady is the part of the run after every client had joined; nil
	// when the joins took the whole run.
	Steady *Steady `json:"steady,omitempty"`

	// ConnectFailures counts failed connects by close code and reason (or
	// what else went wrong); ClosedByServer counts joined clients the
	// server closed before the end, by close code and reason.
	ConnectFailures map[string]int `json:"connect_failures"`
	ClosedByServer  map[string]int `json:"closed_by_server"`

	SubscriberDetails []SubscriberReport `json:"subscriber_details"`
}

// RoleReport is the joins of one role.
type RoleReport struct {
	Planned int `json:"planned"`
	// Started connects; those the end of the run cut short are not
	// counted.
	Started   int     `json:"started"`
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
	JoinP50Ms float64 `json:"join_p50_ms"`
	JoinP99Ms float64 `json:"join_p99_ms"`
	JoinMaxMs float64 `json:"join_max_ms"`
}

// Spread is the least, median and greatest of a figure over clients.
type Spread struct {
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	Max float64 `json:"max"`
}

// SubscriberReport is what one subscriber received.
type SubscriberReport struct {
	Channel      string `json:"channel"`
	ConnectionID string `json:"connection_id"`
	URL          string `json:"url"` // the node that admitted it
	// Publishers is how many senders it received packets from.
	Publishers int     `json:"publishers"`
	Packets    int64   `json:"packets"`
	Lost       int64   `json:"lost"`
	Kbps       float64 `json:"kbps"`
}

// report sums up the run at end, before the clients disconnect.
func (r *runner) report(start, end time.Time, interrupted bool) *Report {
	cfg := r.cfg
	rep := &Report{
		URLs:                  r.urls,
		Channels:              cfg.Channels,
		PublishersPerChannel:  cfg.Publishers,
		SubscribersPerChannel: cfg.Subscribers,
		Media:                 cfg.media(),
		Simulcast:             cfg.Simulcast,
		JoinRate:              cfg.JoinRate,
		Seconds:               round2(end.Sub(start).Seconds()),
		Interrupted:           interrupted,
		ClosedByServer:        map[string]int{},
		SubscriberDetails:     []SubscriberReport{},
	}
	if cfg.Video && !cfg.Simulcast {
		rep.ExpectedKbps += float64(cfg.Publishers * cfg.VideoKbps)
	}
	if cfg.Audio && (rep.ExpectedKbps > 0 || !cfg.Video) {
		rep.ExpectedKbps += float64(cfg.Publishers * cfg.AudioKbps)
	}
	r.mu.Lock()
	rep.ConnectFailures = maps.Clone(r.failures)
	rep.Publishers = RoleReport{Planned: cfg.Channels * cfg.Publishers, Started: r.started[RolePublisher], Failed: r.failedBy[RolePublisher]}
	rep.Subscribers = RoleReport{Planned: cfg.Channels * cfg.Subscribers, Started: r.started[RoleSubscriber], Failed: r.failedBy[RoleSubscriber]}
	r.mu.Unlock()

	var joins [2][]float64
	var sent, received []float64
	for _, m := range r.joinedMembers() {
		if reason := closedReason(m.client); reason != "" {
			rep.ClosedByServer[reason]++
		}
		if m.client.URL() != m.url {
			rep.Redirected++
		}
		ms := round2(float64(m.join) / float64(time.Millisecond))
		alive := end.Sub(m.joinedAt)
		if m.role == RolePublisher {
			rep.Publishers.Connected++
			joins[0] = append(joins[0], ms)
			sent = append(sent, round2(kbps(m.client.SentBytes(), alive)))
			continue
		}
		rep.Subscribers.Connected++
		joins[1] = append(joins[1], ms)
		s := SubscriberReport{Channel: cfg.channelID(m.channel), ConnectionID: m.client.ConnectionID(), URL: m.client.URL()}
		var bytes int64
		senders := map[string]bool{}
		for key, st := range m.client.Received() {
			bytes += st.Bytes
			s.Packets += st.Packets
			s.Lost += st.Lost
			if st.Packets > 0 {
				stream, _, _ := strings.Cut(key, "/")
				senders[stream] = true
			}
		}
		s.Publishers = len(senders)
		s.Kbps = round2(kbps(bytes, alive))
		if s.Publishers >= cfg.Publishers {
			rep.SubscribersWithAll++
		}
		rep.PacketsReceived += s.Packets
		rep.PacketsLost += s.Lost
		received = append(received, s.Kbps)
		rep.SubscriberDetails = append(rep.SubscriberDetails, s)
	}
	slices.SortFunc(rep.SubscriberDetails, func(a, b SubscriberReport) int {
		return strings.Compare(a.Channel+a.ConnectionID, b.Channel+b.ConnectionID)
	})
	for i, role := range []*RoleReport{&rep.Publishers, &rep.Subscribers} {
		slices.Sort(joins[i])
		role.JoinP50Ms, role.JoinP99Ms, role.JoinMaxMs = percentile(joins[i], 0.5), percentile(joins[i], 0.99), percentile(joins[i], 1)
	}
	rep.SentKbps, rep.ReceivedKbps = spread(sent), spread(received)
	if n := rep.PacketsReceived + rep.PacketsLost; n > 0 {
		rep.LossPercent = round2(100 * float64(rep.PacketsLost) / float64(n))
	}
	return rep
}

func spread(v []float64) Spread {
	slices.Sort(v)
	if len(v) == 0 {
		return Spread{}
	}
	return Spread{Min: v[0], P50: percentile(v, 0.5), Max: v[len(v)-1]}
}

// figure formats a figure measured over n clients: "-" for none.
func figure(v float64, n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// plural is "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// round2 rounds to two decimals, as the report shows figures.
func round2(v float64) float64 { return math.Round(v*100) / 100 }

// media describes what publishers send.
func (c Config) media() string {
	var parts []string
	if c.Video {
		parts = append(parts, fmt.Sprintf("%s %d kbit/s", c.VideoCodec, c.VideoKbps))
	}
	if c.Audio {
		parts = append(parts, fmt.Sprintf("Opus %d kbit/s", c.AudioKbps))
	}
	return strings.Join(parts, " + ")
}

// WriteTable writes the report as the command prints it.
func (rep *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	simulcast := "off"
	if rep.Simulcast {
		simulcast = "on"
	}
	state := "ran"
	if rep.Interrupted {
		state = "interrupted after"
	}
	fmt.Fprintf(&b, "%s x (%s + %s), %s, simulcast %s, %s, %s %.1f s\n\n",
		plural(rep.Channels, "channel"), plural(rep.PublishersPerChannel, "publisher"), plural(rep.SubscribersPerChannel, "subscriber"),
		rep.Media, simulcast, plural(len(rep.URLs), "URL"), state, rep.Seconds)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tplanned\tconnected\tfailed\tjoin p50 ms\tjoin p99 ms\tjoin max ms\t")
	for _, row := range []struct {
		name string
		r    RoleReport
	}{{"publishers", rep.Publishers}, {"subscribers", rep.Subscribers}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t\n", row.name, row.r.Planned, row.r.Connected, row.r.Failed,
			figure(row.r.JoinP50Ms, row.r.Connected), figure(row.r.JoinP99Ms, row.r.Connected), figure(row.r.JoinMaxMs, row.r.Connected))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "kbit/s (media payload)\tmin\tp50\tmax\t")
	for _, row := range []struct {
		name string
		s    Spread
		n    int
	}{{"sent per publisher", rep.SentKbps, rep.Publishers.Connected}, {"received per subscriber", rep.ReceivedKbps, rep.Subscribers.Connected}} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", row.name, figure(row.s.Min, row.n), figure(row.s.P50, row.n), figure(row.s.Max, row.n))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.ExpectedKbps > 0 {
		fmt.Fprintf(&b, "\nexpected per subscriber: %.0f kbit/s (every publisher of its channel)\n", rep.ExpectedKbps)
	} else {
		fmt.Fprintf(&b, "\nexpected per subscriber: one simulcast layer of every publisher of its channel\n")
	}
	fmt.Fprintf(&b, "subscribers receiving every publisher: %d of %d\n", rep.SubscribersWithAll, rep.Subscribers.Connected)
	fmt.Fprintf(&b, "packets received: %d, lost: %d (%.2f%%)\n", rep.PacketsReceived, rep.PacketsLost, rep.LossPercent)
	fmt.Fprintf(&b, "joined through a redirect: %d\n", rep.Redirected)
	if s := rep.Steady; s != nil {
		fmt.Fprintf(&b, "after the joins (%.1f s): subscribers received %.0f packets/s, %s", s.Seconds, s.PacketsPerSecond, rate(s.ReceivedKbps))
		switch {
		case s.ServerCPUError != "":
			fmt.Fprintf(&b, "; server CPU unknown: %s", s.ServerCPUError)
		case s.ServerCPUSeconds != nil:
			fmt.Fprintf(&b, "; server CPU %.2f s (%.0f%% of a core)", *s.ServerCPUSeconds, *s.ServerCPUPercent)
			if s.ServerCPUUsPerPacket != nil {
				fmt.Fprintf(&b, ", %.2f us per packet received", *s.ServerCPUUsPerPacket)
			}
		}
		fmt.Fprintln(&b)
	}
	writeCounts(&b, "connect failures", rep.ConnectFailures)
	writeCounts(&b, "closed by the server during the run", rep.ClosedByServer)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCounts lists counts by reason, most first.
func writeCounts(b *strings.Builder, title string, counts map[string]int) {
	if len(counts) == 0 {
		fmt.Fprintf(b, "%s: none\n", title)
		return
	}
	fmt.Fprintf(b, "%s:\n", title)
	keys := slices.Collect(maps.Keys(counts))
	slices.SortFunc(keys, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		fmt.Fprintf(b, "  %s: %d\n", k, counts[k])
	}
}
