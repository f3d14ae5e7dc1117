package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The cluster port carries two protocols. A dialer writes one of these bytes
// first; the multiplexer hands the connection to Raft or to the internal HTTP
// server accordingly.
const (
	muxRaft byte = 0x01
	muxHTTP byte = 0x02
)

// muxHandshakeTimeout bounds how long an accepted connection may take to say
// which protocol it speaks.
const muxHandshakeTimeout = 5 * time.Second

// mux accepts connections on the cluster port and dispatches them by their
// first byte.
type mux struct {
	ln   net.Listener
	log  *slog.Logger
	http *chanListener
	raft atomic.Pointer[chanListener] // the current Raft instance's listener; nil between instances
	wg   sync.WaitGroup
}

func newMux(ln net.Listener, log *slog.Logger) *mux {
	return &mux{ln: ln, log: log, http: newChanListener(ln.Addr())}
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
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.dispatch(conn)
		}()
	}
}

func (m *mux) dispatch(conn net.Conn) {
	var b [1]byte
	_ = conn.SetReadDeadline(time.Now().Add(muxHandshakeTimeout))
	if _, err := conn.Read(b[:]); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	var target *chanListener
	switch b[0] {
	case muxRaft:
		target = m.raft.Load()
	case muxHTTP:
		target = m.http
	default:
		m.log.Warn("cluster port: unknown protocol byte, closing", "remote", conn.RemoteAddr().String(), "byte", b[0])
	}
	if target == nil || !target.deliver(conn) {
		conn.Close()
	}
}

// close stops accepting and closes the HTTP listener. Raft listeners are closed
// by their transports.
func (m *mux) close() error {
	err := m.ln.Close()
	m.http.Close()
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
	localIP   net.IP // dial from this address (nil: the kernel's choice)

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*raftStreamLayer)(nil)

func newRaftStreamLayer(addr net.Addr, advertise string, localIP net.IP) *raftStreamLayer {
	return &raftStreamLayer{
		chanListener: newChanListener(addr),
		advertise:    advertiseAddr(advertise),
		localIP:      localIP,
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
	conn, err := dialCluster(ctx, s.localIP, string(address), muxRaft)
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

// dialCluster opens a connection to a node's cluster port from localIP (if
// set: a node talks to its peers from the address it listens on) and
// announces the protocol.
func dialCluster(ctx context.Context, localIP net.IP, address string, proto byte) (net.Conn, error) {
	var d net.Dialer
	if localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: localIP}
	}
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(deadline)
	}
	if _, err := conn.Write([]byte{proto}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("announce protocol to %s: %w", address, err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
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
