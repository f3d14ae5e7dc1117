package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Forwarded API calls travel on their own protocol of the cluster port
// (protoAPI), so that a call forwarded to the node in charge costs little
// more than the call itself:
//
//   - one connection per peer, dialled by the first call, kept open, dialled
//     again after it breaks, closed when the node stops;
//   - many calls in flight at once on it (at most maxCallsInFlight), each
//     tagged with an id its answer repeats; one goroutine per connection
//     reads its frames; the goroutines that make frames write them (see
//     frameWriter), frames made during a write sharing the next one;
//   - frames are length-prefixed and bounded (maxFrame); a peer that sends a
//     frame that does not parse, or is too large, has its connection closed,
//     with the reason logged, and every call in flight on it fails with
//     NODE-IN-CHARGE-UNREACHABLE, as a call whose connection breaks does;
//   - the node in charge answers with the API's own dispatch (ServeAPI), no
//     HTTP request is parsed or built on either side.
//
// Frame: length (uint32, big endian, of what follows), kind (1 byte), call
// id (uint64), payload. A call's payload is its target, its content type
// (each a uint16 length and the bytes) and its body (the rest); an answer's
// is its status (uint16), content type, WWW-Authenticate value and body.
// The node in charge sends a hello frame (id 0, no payload) first, which
// tells a dialler without TLS that the peer speaks the protocol. A call
// carries no credential: the cluster port admits only members, and the
// operator's token stays at the edge.
//
// A node older than the protocol refuses it (it does not offer the ALPN
// name, or closes a connection whose first byte it does not know); the
// dialler then calls that peer over HTTP (pathAPI) for legacyRetry before
// trying again, so a cluster can be upgraded one node at a time. Calls with
// a body larger than a frame carries also go over HTTP.

const (
	frameHello  byte = 1
	frameCall   byte = 2
	frameAnswer byte = 3

	// frameHeaderLen is a frame's kind and call id.
	frameHeaderLen = 1 + 8
	// maxFrameField bounds a frame's target, content type and
	// WWW-Authenticate value.
	maxFrameField = 1 << 10
	// maxFrame bounds a frame after its length prefix: the header, the
	// fields, and a body of at most maxInternalBody.
	maxFrame = frameHeaderLen + 2 + 3*(2+maxFrameField) + maxInternalBody

	// maxCallsInFlight bounds the calls in flight on one connection: a
	// caller waits for a free slot (within its deadline), and the node in
	// charge stops reading a connection until one of its calls on it is
	// answered.
	maxCallsInFlight = 128

	// legacyRetry is how long a peer that does not speak protoAPI is called
	// over HTTP before the protocol is tried again (it may have been
	// upgraded).
	legacyRetry = 30 * time.Second

	// frameBufferSize is the size of each connection's read and write
	// buffers.
	frameBufferSize = 32 << 10
)

// APICall is an API call forwarded to the node in charge: its x-sora-target,
// content type and body, never the caller's credentials.
type APICall struct {
	Target      string
	ContentType string
	Body        []byte
}

// APIAnswer is the node in charge's answer to a forwarded API call, as it
// was.
type APIAnswer struct {
	Status          int
	ContentType     string
	WWWAuthenticate string
	Body            []byte
}

// APIHandler answers the API calls other nodes forward to this one. It must
// answer them itself: one hop at most.
type APIHandler func(ctx context.Context, call APICall) APIAnswer

// errFrame is wrapped by every error about a frame a peer sent.
var errFrame = errors.New("bad frame")

func appendHeader(b []byte, kind byte, id uint64) []byte {
	b = append(b, 0, 0, 0, 0, kind)
	return binary.BigEndian.AppendUint64(b, id)
}

// endFrame writes the length prefix of the frame that starts at start.
func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// checkCall refuses to encode a call larger than a frame allows.
func checkCall(call APICall) error {
	if len(call.Body) > maxInternalBody {
		return fmt.Errorf("a body of %d bytes is larger than %d", len(call.Body), maxInternalBody)
	}
	return checkFields(call.Target, call.ContentType)
}

// checkFields refuses to encode a field longer than a frame allows.
func checkFields(fields ...string) error {
	for _, s := range fields {
		if len(s) > maxFrameField {
			return fmt.Errorf("a field of %d bytes is longer than %d", len(s), maxFrameField)
		}
	}
	return nil
}

func appendHello(b []byte) []byte {
	start := len(b)
	return endFrame(appendHeader(b, frameHello, 0), start)
}

func appendCall(b []byte, id uint64, call APICall) []byte {
	start := len(b)
	b = appendHeader(b, frameCall, id)
	b = appendField(b, call.Target)
	b = appendField(b, call.ContentType)
	b = append(b, call.Body...)
	return endFrame(b, start)
}

func appendAnswer(b []byte, id uint64, ans APIAnswer) []byte {
	start := len(b)
	b = appendHeader(b, frameAnswer, id)
	b = binary.BigEndian.AppendUint16(b, uint16(ans.Status))
	b = appendField(b, ans.ContentType)
	b = appendField(b, ans.WWWAuthenticate)
	b = append(b, ans.Body...)
	return endFrame(b, start)
}

// frameWriter writes a connection's frames from the goroutines that make
// them, without a goroutine of its own: a goroutine appends its frame to
// the buffer and, unless another is writing already (which then writes
// this frame too), writes the buffer until it is empty. Frames made while
// a write is under way thus share the next one.
type frameWriter struct {
	conn    net.Conn
	timeout time.Duration // bounds each write

	mu       sync.Mutex
	buf      []byte // frames to write
	spare    []byte // the buffer being written, reused
	flushing bool
	err      error // the first write error: every later write fails with it
}

// maxKeptBuffer is the largest write buffer kept for reuse.
const maxKeptBuffer = 64 << 10

func (w *frameWriter) writeHello() error {
	w.mu.Lock()
	w.buf = appendHello(w.buf)
	return w.flushLocked()
}

func (w *frameWriter) writeCall(id uint64, call APICall) error {
	w.mu.Lock()
	w.buf = appendCall(w.buf, id, call)
	return w.flushLocked()
}

func (w *frameWriter) writeAnswer(id uint64, ans APIAnswer) error {
	w.mu.Lock()
	w.buf = appendAnswer(w.buf, id, ans)
	return w.flushLocked()
}

// flushLocked writes the buffer, unless another goroutine is writing, and
// unlocks w.
func (w *frameWriter) flushLocked() error {
	if w.err != nil || w.flushing {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.flushing = true
	for len(w.buf) > 0 && w.err == nil {
		b := w.buf
		w.buf = w.spare[:0]
		w.mu.Unlock()
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err := w.conn.Write(b)
		w.mu.Lock()
		if cap(b) <= maxKeptBuffer {
			w.spare = b[:0]
		} else {
			w.spare = nil
		}
		if err != nil {
			w.err = err
		}
	}
	w.flushing = false
	err := w.err
	w.mu.Unlock()
	return err
}

// frameReader reads one connection's frames. It is used by one goroutine.
type frameReader struct {
	br  *bufio.Reader
	hdr [4 + frameHeaderLen]byte
	// strings interns the targets and content types read, so a call's
	// strings are not allocated again for every frame.
	strings map[string]string
}

// maxInterned bounds frameReader.strings.
const maxInterned = 256

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, frameBufferSize), strings: map[string]string{}}
}

// next reads a frame. Its payload is the reader's to keep.
func (r *frameReader) next() (kind byte, id uint64, payload []byte, err error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(r.hdr[:4])
	if n < frameHeaderLen || n > maxFrame {
		return 0, 0, nil, fmt.Errorf("%w: length %d is outside %d-%d", errFrame, n, frameHeaderLen, maxFrame)
	}
	kind, id = r.hdr[4], binary.BigEndian.Uint64(r.hdr[5:])
	if n == frameHeaderLen {
		return kind, id, nil, nil
	}
	payload = make([]byte, n-frameHeaderLen)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return 0, 0, nil, fmt.Errorf("%w: truncated: %v", errFrame, err)
	}
	return kind, id, payload, nil
}

// field reads a length-prefixed string at the front of b.
func (r *frameReader) field(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("%w: a field is cut short", errFrame)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > maxFrameField || len(b) < 2+n {
		return "", nil, fmt.Errorf("%w: a field of %d bytes does not fit", errFrame, n)
	}
	raw := b[2 : 2+n]
	if s, ok := r.strings[string(raw)]; ok {
		return s, b[2+n:], nil
	}
	s := string(raw)
	if len(r.strings) < maxInterned {
		r.strings[s] = s
	}
	return s, b[2+n:], nil
}

func (r *frameReader) decodeCall(payload []byte) (APICall, error) {
	var call APICall
	var err error
	if call.Target, payload, err = r.field(payload); err != nil {
		return APICall{}, err
	}
	if call.ContentType, payload, err = r.field(payload); err != nil {
		return APICall{}, err
	}
	call.Body = payload
	return call, nil
}

func (r *frameReader) decodeAnswer(payload []byte) (APIAnswer, error) {
	if len(payload) < 2 {
		return APIAnswer{}, fmt.Errorf("%w: an answer without a status", errFrame)
	}
	ans := APIAnswer{Status: int(binary.BigEndian.Uint16(payload))}
	if ans.Status < 100 || ans.Status > 999 {
		return APIAnswer{}, fmt.Errorf("%w: status %d", errFrame, ans.Status)
	}
	payload = payload[2:]
	var err error
	if ans.ContentType, payload, err = r.field(payload); err != nil {
		return APIAnswer{}, err
	}
	if ans.WWWAuthenticate, payload, err = r.field(payload); err != nil {
		return APIAnswer{}, err
	}
	ans.Body = payload
	return ans, nil
}

// apiClient holds this node's connections for forwarding API calls, one per
// peer address.
type apiClient struct {
	dialer  *dialer
	log     *slog.Logger
	timeout time.Duration
	ctx     context.Context // cancelled by close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine of every connection

	mu     sync.Mutex
	conns  map[string]*apiConn  // by address; a broken one is removed
	legacy map[string]time.Time // peers that refused the protocol, until when they are called over HTTP
	closed bool
}

func newAPIClient(d *dialer, log *slog.Logger, timeout time.Duration) *apiClient {
	ctx, cancel := context.WithCancel(context.Background())
	return &apiClient{dialer: d, log: log, timeout: timeout, ctx: ctx, cancel: cancel,
		conns: map[string]*apiConn{}, legacy: map[string]time.Time{}}
}

// errClientClosed fails calls made while the node stops.
var errClientClosed = errors.New("the node is stopping")

// close closes every connection and waits for their goroutines.
func (p *apiClient) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*apiConn, 0, len(p.conns))
	for _, ac := range p.conns {
		conns = append(conns, ac)
	}
	p.mu.Unlock()
	p.cancel()
	for _, ac := range conns {
		ac.fail(errClientClosed)
	}
	p.wg.Wait()
}

// conn returns the connection to address, dialling it if there is none. It
// returns nil and legacy set for a peer to call over HTTP.
func (p *apiClient) conn(ctx context.Context, address string) (ac *apiConn, legacy bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errClientClosed
	}
	if until, ok := p.legacy[address]; ok {
		if time.Now().Before(until) {
			p.mu.Unlock()
			return nil, true, nil
		}
		delete(p.legacy, address)
	}
	ac = p.conns[address]
	if ac == nil {
		ac = newAPIConn(p, address)
		p.conns[address] = ac
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.connect(ac)
		}()
	}
	p.mu.Unlock()
	select {
	case <-ac.ready:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if ac.dialErr != nil {
		return nil, ac.legacy, ac.dialErr
	}
	return ac, false, nil
}

// connect dials ac's peer and waits for its hello, then starts ac's reader
// and writer. It closes ac.ready either way.
func (p *apiClient) connect(ac *apiConn) {
	defer close(ac.ready)
	ctx, cancel := context.WithTimeout(p.ctx, p.timeout)
	defer cancel()
	conn, proto, err := p.dialer.dialOffering(ctx, ac.address, protoAPI, protoHTTP)
	if err == nil && proto != protoAPI.alpn {
		conn.Close()
		err, ac.legacy = fmt.Errorf("%s does not speak %s", ac.address, protoAPI.alpn), true
	}
	var fr *frameReader
	if err == nil {
		fr = newFrameReader(conn)
		err = readHello(ctx, conn, fr)
		// Without TLS, an older node closes a connection whose first
		// byte it does not know.
		if err != nil && p.dialer.trust == nil && errors.Is(err, io.EOF) {
			ac.legacy = true
		}
		if err != nil {
			conn.Close()
		}
	}
	if err != nil {
		ac.dialErr = err
		p.mu.Lock()
		if p.conns[ac.address] == ac {
			delete(p.conns, ac.address)
		}
		if ac.legacy {
			p.legacy[ac.address] = time.Now().Add(legacyRetry)
			p.log.Info("forwarded api: peer does not speak the protocol; calling it over HTTP", "peer", ac.address, "retry_in", legacyRetry)
		}
		p.mu.Unlock()
		return
	}
	ac.mu.Lock()
	if ac.pending == nil { // closed while dialling
		ac.dialErr = ac.err
		ac.mu.Unlock()
		conn.Close()
		return
	}
	ac.conn = conn
	ac.w = &frameWriter{conn: conn, timeout: p.timeout}
	ac.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ac.read(fr)
	}()
}

// readHello waits, within ctx, for the node in charge's first frame.
func readHello(ctx context.Context, conn net.Conn, fr *frameReader) error {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(d)
	}
	kind, id, payload, err := fr.next()
	if err != nil {
		return fmt.Errorf("wait for hello: %w", err)
	}
	if kind != frameHello || id != 0 || len(payload) != 0 {
		return fmt.Errorf("%w: expected hello, got kind %d", errFrame, kind)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return nil
}

// apiConn is one connection to a peer for forwarded calls.
type apiConn struct {
	client  *apiClient
	address string
	// ready is closed once the connection is up or dialErr says why not
	// (legacy: because the peer does not speak the protocol).
	ready   chan struct{}
	dialErr error
	legacy  bool
	w       *frameWriter // set before ready is closed, if the connection is up

	slots chan struct{} // one per call in flight
	done  chan struct{} // closed when the connection broke

	mu      sync.Mutex
	conn    net.Conn                // nil while dialling
	pending map[uint64]*pendingCall // nil once broken
	nextID  uint64
	err     error // why it broke
}

type pendingCall struct{ answer chan callResult }

type callResult struct {
	ans APIAnswer
	err error
}

var pendingPool = sync.Pool{New: func() any { return &pendingCall{answer: make(chan callResult, 1)} }}

func newAPIConn(p *apiClient, address string) *apiConn {
	return &apiConn{
		client: p, address: address, ready: make(chan struct{}),
		slots: make(chan struct{}, maxCallsInFlight),
		done:  make(chan struct{}), pending: map[uint64]*pendingCall{},
	}
}

// call sends call and waits for its answer, until ctx ends or the
// connection breaks.
func (ac *apiConn) call(ctx context.Context, call APICall) (APIAnswer, error) {
	if err := checkCall(call); err != nil {
		return APIAnswer{}, err
	}
	select {
	case ac.slots <- struct{}{}:
	case <-ac.done:
		return APIAnswer{}, ac.brokenErr()
	case <-ctx.Done():
		return APIAnswer{}, ctx.Err()
	}
	defer func() { <-ac.slots }()
	pc := pendingPool.Get().(*pendingCall)
	ac.mu.Lock()
	if ac.pending == nil {
		err := ac.err
		ac.mu.Unlock()
		pendingPool.Put(pc)
		return APIAnswer{}, err
	}
	ac.nextID++
	id := ac.nextID
	ac.pending[id] = pc
	ac.mu.Unlock()
	if err := ac.w.writeCall(id, call); err != nil {
		ac.fail(fmt.Errorf("write to %s: %w", ac.address, err)) // the answer channel gets the error
	}
	select {
	case r := <-pc.answer:
		pendingPool.Put(pc)
		return r.ans, r.err
	case <-ctx.Done():
		return APIAnswer{}, ac.abandon(id, pc, ctx.Err())
	}
}

// abandon gives up waiting for call id and returns err.
func (ac *apiConn) abandon(id uint64, pc *pendingCall, err error) error {
	ac.mu.Lock()
	_, waiting := ac.pending[id]
	delete(ac.pending, id)
	ac.mu.Unlock()
	if !waiting {
		<-pc.answer // sent, or being sent: take it so pc can be reused
	}
	pendingPool.Put(pc)
	return err
}

func (ac *apiConn) brokenErr() error {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.err
}

// read delivers answers until the connection breaks.
func (ac *apiConn) read(fr *frameReader) {
	for {
		kind, id, payload, err := fr.next()
		if err == nil && kind != frameAnswer {
			err = fmt.Errorf("%w: kind %d where an answer was expected", errFrame, kind)
		}
		var ans APIAnswer
		if err == nil {
			ans, err = fr.decodeAnswer(payload)
		}
		if err != nil {
			if errors.Is(err, errFrame) {
				ac.client.log.Warn("forwarded api: closing the connection to a peer that sent a bad frame", "peer", ac.address, "error", err)
			}
			ac.fail(fmt.Errorf("read from %s: %w", ac.address, err))
			return
		}
		ac.mu.Lock()
		pc := ac.pending[id]
		delete(ac.pending, id)
		ac.mu.Unlock()
		if pc != nil { // else the caller gave up
			pc.answer <- callResult{ans: ans}
		}
	}
}

// fail breaks the connection: calls in flight and later fail with err, and
// the next call dials a new connection.
func (ac *apiConn) fail(err error) {
	ac.mu.Lock()
	if ac.pending == nil {
		ac.mu.Unlock()
		return
	}
	pending, conn := ac.pending, ac.conn
	ac.pending, ac.err = nil, err
	ac.mu.Unlock()
	close(ac.done)
	if conn != nil {
		conn.Close()
	}
	p := ac.client
	p.mu.Lock()
	if p.conns[ac.address] == ac {
		delete(p.conns, ac.address)
	}
	p.mu.Unlock()
	for _, pc := range pending {
		pc.answer <- callResult{err: err}
	}
}

// apiServer serves the connections peers open to forward API calls here.
type apiServer struct {
	c  *Cluster
	wg sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// serve accepts connections from ln until it is closed.
func (s *apiServer) serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			continue
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

// close closes every connection and waits until each is done.
func (s *apiServer) close() {
	s.mu.Lock()
	s.closed = true
	for conn := range s.conns {
		conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serveConn answers one peer's calls until the connection breaks, a frame
// does not parse, or the node stops.
func (s *apiServer) serveConn(conn net.Conn) {
	defer conn.Close()
	from := ""
	if mc, ok := conn.(*memberConn); ok {
		from = mc.name
	}
	log := s.c.log.With("peer", conn.RemoteAddr().String(), "peer_name", from)
	ctx, cancel := context.WithCancel(context.Background())
	slots := make(chan struct{}, maxCallsInFlight)
	var calls sync.WaitGroup
	w := &frameWriter{conn: conn, timeout: s.c.cfg.RequestTimeout}
	if err := w.writeHello(); err != nil {
		cancel()
		return
	}
	fr := newFrameReader(conn)
	for {
		kind, id, payload, err := fr.next()
		if err == nil && kind != frameCall {
			err = fmt.Errorf("%w: kind %d where a call was expected", errFrame, kind)
		}
		var call APICall
		if err == nil {
			call, err = fr.decodeCall(payload)
		}
		if err != nil {
			if errors.Is(err, errFrame) {
				log.Warn("forwarded api: closing a connection that sent a bad frame", "error", err)
			}
			break
		}
		slots <- struct{}{} // a free slot: out has room for the answer
		calls.Add(1)
		go func() {
			defer calls.Done()
			if err := w.writeAnswer(id, s.c.answerForwarded(ctx, from, call)); err != nil {
				conn.Close() // the reader stops
			}
			<-slots
		}()
	}
	conn.Close()
	cancel()
	calls.Wait()
}

// answerForwarded answers one forwarded call from the member named from
// ("" on an unauthenticated port).
func (c *Cluster) answerForwarded(ctx context.Context, from string, call APICall) APIAnswer {
	if err := c.checkMember(from); err != nil {
		return errorAnswer(err)
	}
	h := c.api.Load()
	if h == nil {
		return errorAnswer(unavailable(TypeNodeNotReady, c.cfg.NodeName+" serves no API yet", nil))
	}
	ans := (*h)(ctx, call)
	if len(ans.Body) > maxInternalBody {
		return errorAnswer(unavailable(TypeInternal, fmt.Sprintf("the answer is larger than a forwarded call may carry (%d bytes)", maxInternalBody), nil))
	}
	if checkFields(ans.ContentType, ans.WWWAuthenticate) != nil {
		return errorAnswer(unavailable(TypeInternal, "the answer has a header too long to forward", nil))
	}
	return ans
}

// errorAnswer is an internal error as an API answer, in the body writeError
// sends.
func errorAnswer(err error) APIAnswer {
	var e *Error
	if !errors.As(err, &e) {
		e = unavailable(TypeInternal, err.Error(), err)
	}
	status := 503
	if e.Kind == KindInvalid {
		status = 400
	}
	body, _ := json.Marshal(errorBody{Type: e.Type, Reason: e.Reason})
	return APIAnswer{Status: status, ContentType: "application/json", Body: body}
}
