package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	metricsTimeout = 5 * time.Second
	maxMetricsBody = 16 << 20
	// cpuMetric is the process collector's CPU time (user + system) in
	// the Prometheus text format.
	cpuMetric = "process_cpu_seconds_total"
)

// sample is the load's counters and the servers' CPU time at one moment.
type sample struct {
	at       time.Time
	t        totals
	cpu      float64 // seconds, summed over the metrics URLs
	cpuError error
}

// take reads the counters and, when metrics URLs are given, the servers'
// CPU time.
func (r *runner) take(ctx context.Context) sample {
	s := sample{at: time.Now(), t: r.totals()}
	for _, u := range r.cfg.MetricsURLs {
		v, err := readMetric(ctx, u, cpuMetric, r.cfg.tlsConfig())
		if err != nil {
			s.cpuError = err
			break
		}
		s.cpu += v
	}
	return s
}

// readMetric reads one unlabelled sample from a Prometheus text endpoint.
func readMetric(ctx context.Context, url, name string, tlsConfig *tls.Config) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", url, err)
	}
	tr := &http.Transport{TLSClientConfig: tlsConfig}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read %s: status %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, maxMetricsBody))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: %s: %w", url, name, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", url, err)
	}
	return 0, fmt.Errorf("read %s: no %s", url, name)
}

// Steady is the part of the run after every client had joined (or
// failed): the load as it holds, without the joins' cost.
type Steady struct {
	Seconds float64 `json:"seconds"`
	// PacketsPerSecond and ReceivedKbps are what all subscribers
	// together received per second.
	PacketsPerSecond float64 `json:"packets_per_second"`
	ReceivedKbps     float64 `json:"received_kbps"`
	// ServerCPUSeconds is the servers' CPU time over it, from the metrics
	// URLs (process_cpu_seconds_total), with its share of one core and
	// its cost per packet a subscriber received; absent without metrics
	// URLs, and ServerCPUError says why when they could not be read.
	ServerCPUSeconds     *float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUPercent     *float64 `json:"server_cpu_percent,omitempty"`
	ServerCPUUsPerPacket *float64 `json:"server_cpu_us_per_packet,omitempty"`
	ServerCPUError       string   `json:"server_cpu_error,omitempty"`
}

// steady sums up the part of the run between two samples.
func steady(from, to sample) *Steady {
	d := to.at.Sub(from.at)
	if d <= 0 {
		return nil
	}
	packets := to.t.packets - from.t.packets
	s := &Steady{
		Seconds:          round2(d.Seconds()),
		PacketsPerSecond: round2(float64(packets) / d.Seconds()),
		ReceivedKbps:     round2(kbps(to.t.received-from.t.received, d)),
	}
	switch err := errorsJoin(from.cpuError, to.cpuError); {
	case err != nil:
		s.ServerCPUError = err.Error()
	case from.cpu != 0 || to.cpu != 0:
		cpu := to.cpu - from.cpu
		pct := 100 * cpu / d.Seconds()
		s.ServerCPUSeconds, s.ServerCPUPercent = ptr(round2(cpu)), ptr(round2(pct))
		if packets > 0 {
			s.ServerCPUUsPerPacket = ptr(round2(cpu * 1e6 / float64(packets)))
		}
	}
	return s
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func ptr(v float64) *float64 { return &v }
