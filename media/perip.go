package media

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// perIP bounds what one client address may hold or start on the signaling
// port: WebSockets waiting for their connect to be admitted, and new
// channels created per second. One client cannot lock every other one out
// of the pending slots, nor fill the cluster with channel assignments.
type perIP struct {
	maxPending int
	rate       rate.Limit
	burst      int

	mu       sync.Mutex
	pending  map[string]int
	creators map[string]*rate.Limiter
}

// maxTrackedCreators bounds the limiters kept; beyond it, those of
// addresses whose bucket has refilled are forgotten.
const maxTrackedCreators = 10_000

func newPerIP(maxPending int, perSecond float64, burst int) *perIP {
	return &perIP{
		maxPending: maxPending,
		rate:       rate.Limit(perSecond),
		burst:      burst,
		pending:    map[string]int{},
		creators:   map[string]*rate.Limiter{},
	}
}

// clientIP is the address a request came from (the proxy's, behind one).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// acquirePending takes one of ip's pending slots; false when it has none
// left. Every true is paired with releasePending.
func (p *perIP) acquirePending(ip string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[ip] >= p.maxPending {
		return false
	}
	p.pending[ip]++
	return true
}

func (p *perIP) releasePending(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[ip] <= 1 {
		delete(p.pending, ip)
		return
	}
	p.pending[ip]--
}

// allowNewChannel reports whether ip may create one more channel now.
func (p *perIP) allowNewChannel(ip string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.creators[ip]
	if !ok {
		if len(p.creators) >= maxTrackedCreators {
			p.forgetRefilled(now)
		}
		l = rate.NewLimiter(p.rate, p.burst)
		p.creators[ip] = l
	}
	return l.AllowN(now, 1)
}

// forgetRefilled drops the limiters that are full again: forgetting them
// changes nothing. p.mu is held.
func (p *perIP) forgetRefilled(now time.Time) {
	for ip, l := range p.creators {
		if l.TokensAt(now) >= float64(p.burst) {
			delete(p.creators, ip)
		}
	}
}
