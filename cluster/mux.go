package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"

	"github.com/sorad/sorad/cluster/trust"
)

// protocol is one of the three protocols the cluster port carries. With
// cluster authentication on, a dialler names it with ALPN in the TLS
// handshake; without (cluster_insecure, or a loopback-only node), it writes
// the protocol's byte first. The multiplexer hands each connection to Raft,
// to the internal HTTP server or to the forwarded API's server (apiconn.go)
// accordingly.
type protocol struct {
	b    byte
	alpn string
	name string
}

var (
	protoRaft = protocol{b: 0x01, alpn: trust.ProtoRaft, name: "raft"}
	protoHTTP = protocol{b: 0x02, alpn: trust.ProtoHTTP, name: "internal http"}
	protoAPI  = protocol{b: 0x03, alpn: trust.ProtoAPI, name: "forwarded api"}
)

const (
	// muxHandshakeTimeout bounds how long an accepted connection may take
	// to prove membership and say which protocol it speaks.
	muxHandshakeTimeout = 5 * time.Second
	// maxPendingHandshakes bounds the connections that have not yet done
	// so; more are closed at once.
	maxPendingHandshakes = 128
)

// mux accepts connections on the cluster port and dispatches them by
// protocol.
type mux struct {
	ln      net.Listener
	log     *slog.Logger
	trust   *trust.Store // nil: no authentication (see protocol)
	http    *chanListener
	api     *chanListener
	raft    atomic.Pointer[chanListener] // the current Raft instance's listener; nil between instances
	pending chan struct{}                // one token per connection still in its handshake
	// idle closes a Raft connection that carried nothing for this long;
	// Raft redials a pooled connection that was closed.
	idle time.Duration
	// refusals bounds the log lines about refused connections, so a flood
	// of them does not flood the log; suppressed counts those not logged.
	refusals   *rate.Limiter
	suppressed atomic.Int64
	wg         sync.WaitGroup
}

func newMux(ln net.Listener, log *slog.Logger, ts *trust.Store, idle time.Duration) *mux {
	return &mux{
		ln: ln, log: log, trust: ts, http: newChanListener(ln.Addr()), api: newChanListener(ln.Addr()),
		pending: make(chan struct{}, maxPendingHandshakes), idle: idle,
		refusals: rate.NewLimiter(rate.Every(time.Second), 20),
	}
}

// serve accepts until the listener is closed. It returns once every
// dispatching goroutine has finished.
func (m *mux) serve() {
	defer m.wg.Wait()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("cluster listener stopped", "error", err)
			}
			return
		}
		select {
		case m.pending <- struct{}{}:
		default:
			m.refused(conn, errors.New("too many connections in their handshake"))
			conn.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.dispatch(conn)
		}()
	}
}

// dispatch runs the handshake of one accepted connection and hands it to
// its protocol's listener. A peer that fails the handshake is dropped
// before any byte reaches Raft or a handler.
func (m *mux) dispatch(conn net.Conn) {
	proto, conn, err := m.handshake(conn)
	<-m.pending
	if err != nil {
		m.refused(conn, err)
		conn.Close()
		return
	}
	var target *chanListener
	switch proto {
	case protoRaft:
		target = m.raft.Load()
		conn = &idleConn{Conn: conn, timeout: m.idle}
	case protoHTTP:
		target = m.http
		// net/http would close a *tls.Conn whose ALPN protocol it does not
		// know, so the internal server gets the connection wrapped, with
		// the member's name beside it (see Cluster.internal's ConnContext).
		if tc, ok := conn.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			conn = &memberConn{Conn: tc, name: trust.PeerName(&cs)}
		}
	case protoAPI:
		target = m.api
		if tc, ok := conn.(*tls.Conn); ok {
			cs := tc.ConnectionState()
			conn = &memberConn{Conn: tc, name: trust.PeerName(&cs)}
		}
	}
	if target == nil || !target.deliver(conn) {
		conn.Close()
	}
}

// refused logs a refused connection, within the log's rate.
func (m *mux) refused(conn net.Conn, err error) {
	if !m.refusals.Allow() {
		m.suppressed.Add(1)
		return
	}
	m.log.Warn("cluster port: refused a connection", "remote", conn.RemoteAddr().String(), "error", err, "not_logged_before", m.suppressed.Swap(0))
}

// handshake authenticates the peer (with trust on) and learns its protocol.
func (m *mux) handshake(conn net.Conn) (protocol, net.Conn, error) {
	_ = conn.SetDeadline(time.Now().Add(muxHandshakeTimeout))
	defer func() { _ = conn.SetDeadline(time.Time{}) }()
	if m.trust != nil {
		// The order is the preference: a dialler that offers the API
		// protocol and HTTP gets the API protocol (see dialer.dialAPI).
		tc := tls.Server(conn, m.trust.ServerConfig(protoRaft.alpn, protoAPI.alpn, protoHTTP.alpn))
		if err := tc.Handshake(); err != nil {
			return protocol{}, conn, fmt.Errorf("tls handshake: %w", err)
		}
		switch p := tc.ConnectionState().NegotiatedProtocol; p {
		case protoRaft.alpn:
			return protoRaft, tc, nil
		case protoHTTP.alpn:
			return protoHTTP, tc, nil
		case protoAPI.alpn:
			return protoAPI, tc, nil
		default:
			return protocol{}, tc, fmt.Errorf("no protocol negotiated (%q)", p)
		}
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		return protocol{}, conn, fmt.Errorf("read protocol byte: %w", err)
	}
	switch b[0] {
	case protoRaft.b:
		return protoRaft, conn, nil
	case protoHTTP.b:
		return protoHTTP, conn, nil
	case protoAPI.b:
		return protoAPI, conn, nil
	default:
		return protocol{}, conn, fmt.Errorf("unknown protocol byte %#x (is this peer's cluster authentication on?)", b[0])
	}
}

// memberConn is a connection from a member that proved its name.
type memberConn struct {
	net.Conn
	name string
}

// idleConn closes itself when a read waits longer than timeout: a peer that
// stays silent does not hold a goroutine for good.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

// close stops accepting and closes the HTTP and API listeners. Raft
// listeners are closed by their transports.
func (m *mux) close() error {
	err := m.ln.Close()
	m.http.Close()
	m.api.Close()
	return err
}

// chanListener is a net.Listener fed by the multiplexer.
type chanListener struct {
	addr      net.Addr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// deliver hands conn to Accept. It reports false if the listener is closed or
// nobody accepted in time.
func (l *chanListener) deliver(conn net.Conn) bool {
	t := time.NewTimer(muxHandshakeTimeout)
	defer t.Stop()
	select {
	case l.conns <- conn:
		return true
	case <-l.closed:
		return false
	case <-t.C:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// raftStreamLayer is the raft.StreamLayer of one Raft instance: accepted
// connections come from the multiplexer, dialled ones announce muxRaft.
// Raft's transport closes neither its pooled connections nor the ones it
// serves when it shuts down, so the layer tracks both and Close ends them:
// no goroutine of a closed instance stays blocked reading from a peer.
type raftStreamLayer struct {
	*chanListener
	advertise net.Addr
	dialer    *dialer

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*raftStreamLayer)(nil)

func newRaftStreamLayer(addr net.Addr, advertise string, d *dialer) *raftStreamLayer {
	return &raftStreamLayer{
		chanListener: newChanListener(addr),
		advertise:    advertiseAddr(advertise),
		dialer:       d,
		conns:        map[*trackedConn]struct{}{},
	}
}

func (s *raftStreamLayer) Addr() net.Addr { return s.advertise }

func (s *raftStreamLayer) Accept() (net.Conn, error) {
	conn, err := s.chanListener.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(conn)
}

func (s *raftStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := s.dialer.dial(ctx, string(address), protoRaft)
	if err != nil {
		return nil, err
	}
	return s.track(conn)
}

// Close stops accepting and closes every connection still open.
func (s *raftStreamLayer) Close() error {
	err := s.chanListener.Close()
	s.mu.Lock()
	s.closed = true
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return err
}

func (s *raftStreamLayer) track(conn net.Conn) (net.Conn, error) {
	t := &trackedConn{Conn: conn, layer: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		conn.Close()
		return nil, net.ErrClosed
	}
	s.conns[t] = struct{}{}
	return t, nil
}

// trackedConn leaves its layer's set when closed.
type trackedConn struct {
	net.Conn
	layer *raftStreamLayer
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.layer.mu.Lock()
		delete(c.layer.conns, c)
		c.layer.mu.Unlock()
	})
	return c.Conn.Close()
}

// dialer opens connections to other nodes' cluster ports.
type dialer struct {
	localIP net.IP       // dial from this address (nil: the kernel's choice)
	trust   *trust.Store // nil: no authentication
}

// dial connects to a node's cluster port from localIP (if set: a node talks
// to its peers from the address it listens on), proves membership and
// checks the peer's (with trust on), and announces the protocol.
func (d *dialer) dial(ctx context.Context, address string, proto protocol) (net.Conn, error) {
	conn, _, err := d.dialOffering(ctx, address, proto)
	return conn, err
}

// dialOffering is dial that, with trust on, also offers the fallback
// protocols and returns the ALPN name the peer chose (without trust, it
// announces proto and returns proto.alpn: the peer's answer tells).
func (d *dialer) dialOffering(ctx context.Context, address string, proto protocol, fallback ...protocol) (net.Conn, string, error) {
	var nd net.Dialer
	if d.localIP != nil {
		nd.LocalAddr = &net.TCPAddr{IP: d.localIP}
	}
	conn, err := nd.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, "", err
	}
	if d.trust != nil {
		also := make([]string, len(fallback))
		for i, p := range fallback {
			also[i] = p.alpn
		}
		tc := tls.Client(conn, d.trust.ClientConfig(proto.alpn, also...))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, "", fmt.Errorf("cluster handshake with %s: %w", address, err)
		}
		return tc, tc.ConnectionState().NegotiatedProtocol, nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(deadline)
	}
	if _, err := conn.Write([]byte{proto.b}); err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("announce protocol to %s: %w", address, err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, proto.alpn, nil
}

// advertiseAddr is a net.Addr for an address given as host:port, which may
// hold a DNS name.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// sourceIP is the address a node dials its peers from: its bind address,
// unless that is unspecified (0.0.0.0 or ::) or not an IP.
func sourceIP(bind string) net.IP {
	ip := net.ParseIP(bind)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return ip
}
