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
type raftStreamLayer struct {
	*chanListener
	advertise net.Addr
}

var _ raft.StreamLayer = (*raftStreamLayer)(nil)

func (s *raftStreamLayer) Addr() net.Addr { return s.advertise }

func (s *raftStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return dialCluster(ctx, string(address), muxRaft)
}

// dialCluster opens a connection to a node's cluster port and announces the
// protocol.
func dialCluster(ctx context.Context, address string, proto byte) (net.Conn, error) {
	var d net.Dialer
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
