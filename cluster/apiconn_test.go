package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
)

// rawFrame builds a frame by hand, length prefix included.
func rawFrame(kind byte, id uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(frameHeaderLen+len(payload)))
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, payload...)
}

// malformedFrames are frames a peer may not send: each must close the
// connection. The ones that make sense in both directions are here; kind
// is the kind a well-formed frame in that direction would have.
func malformedFrames(kind byte) []struct {
	name  string
	frame []byte
} {
	oversized := binary.BigEndian.AppendUint32(nil, maxFrame+1)
	oversized = append(oversized, kind, 0, 0, 0, 0, 0, 0, 0, 1)
	wrongKind := frameAnswer
	if kind == frameAnswer {
		wrongKind = frameCall
	}
	return []struct {
		name  string
		frame []byte
	}{
		{"oversized length", oversized},
		{"length shorter than a header", []byte{0, 0, 0, 3, kind, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"wrong kind", rawFrame(wrongKind, 1, []byte{0, 200, 0, 0, 0, 0})},
		{"unknown kind", rawFrame(99, 1, nil)},
		{"field longer than allowed", rawFrame(kind, 1, binary.BigEndian.AppendUint16(nil, maxFrameField+1))},
		{"field longer than the frame", rawFrame(kind, 1, []byte{0, 200, 0, 50, 'x'})},
		{"cut short", rawFrame(kind, 1, []byte{0})},
	}
}

// fakePeer is a peer's cluster port without authentication, answering
// protoAPI connections with serve.
type fakePeer struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func newFakePeer(t *testing.T, serve func(conn net.Conn, proto byte)) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer conn.Close()
				var b [1]byte
				if _, err := io.ReadFull(conn, b[:]); err != nil {
					return
				}
				serve(conn, b[0])
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *fakePeer) addr() string { return p.ln.Addr().String() }

// sendHello and readCall are the node in charge's side, by hand.
func sendHello(conn net.Conn) error {
	_, err := conn.Write(rawFrame(frameHello, 0, nil))
	return err
}

func readCall(fr *frameReader) (uint64, APICall, error) {
	kind, id, payload, err := fr.next()
	if err != nil {
		return 0, APICall{}, err
	}
	if kind != frameCall {
		return 0, APICall{}, fmt.Errorf("kind %d", kind)
	}
	call, err := fr.decodeCall(payload)
	return id, call, err
}

func testAPIClient(t *testing.T, ts *trust.Store, timeout time.Duration) *apiClient {
	t.Helper()
	p := newAPIClient(&dialer{trust: ts}, testLogger(), timeout)
	t.Cleanup(p.close)
	return p
}

// forward is what ForwardAPI does with an address, without a cluster.
func forward(ctx context.Context, p *apiClient, addr string, call APICall) (APIAnswer, bool, error) {
	ac, legacy, err := p.conn(ctx, addr)
	if err != nil || legacy {
		return APIAnswer{}, legacy, err
	}
	ans, err := ac.call(ctx, call)
	return ans, false, err
}

var testCall = APICall{Target: "Sora_20201013.ListChannelConnections", ContentType: "application/json", Body: []byte(`{"channel_id":"c"}`)}

// TestBadAnswerFramesCloseTheConnection: an answer that does not parse
// fails the call in flight, closes the connection, and the next call dials
// a new one.
func TestBadAnswerFramesCloseTheConnection(t *testing.T) {
	for _, tc := range malformedFrames(frameAnswer) {
		t.Run(tc.name, func(t *testing.T) {
			closed := make(chan struct{}, 2)
			bad := atomic.Bool{}
			bad.Store(true)
			peer := newFakePeer(t, func(conn net.Conn, proto byte) {
				if proto != protoAPI.b || sendHello(conn) != nil {
					return
				}
				fr := newFrameReader(conn)
				for {
					id, call, err := readCall(fr)
					if err != nil {
						closed <- struct{}{}
						return
					}
					if bad.Swap(false) {
						_, _ = conn.Write(tc.frame)
						continue
					}
					_, _ = conn.Write(appendAnswer(nil, id, APIAnswer{Status: 200, ContentType: "application/json", Body: call.Body}))
				}
			})
			p := testAPIClient(t, nil, 2*time.Second)
			if _, _, err := forward(ctxT(t), p, peer.addr(), testCall); err == nil {
				t.Fatal("a call answered with a bad frame succeeded")
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second): // a hang, not a measure
				t.Fatal("the connection stayed open after a bad frame")
			}
			ans, _, err := forward(ctxT(t), p, peer.addr(), testCall)
			if err != nil || string(ans.Body) != string(testCall.Body) {
				t.Fatalf("the next call: %+v %v", ans, err)
			}
			if n := peer.conns.Load(); n != 2 {
				t.Fatalf("%d connections, want 2 (one redialled)", n)
			}
		})
	}
}

// TestBadCallFramesCloseTheConnection: a node in charge closes a
// connection whose peer sends a frame that does not parse, without
// panicking, and keeps serving others.
func TestBadCallFramesCloseTheConnection(t *testing.T) {
	cfg := testConfig(t, newHostName("framing"))
	cfg.Trust = nil
	n := startNode(t, cfg)
	waitFor(t, 5*time.Second, "node ready", func() bool { return n.Mode() == fsm.ModeNormal })
	n.ServeAPI(func(_ context.Context, call APICall) APIAnswer {
		return APIAnswer{Status: 200, ContentType: "application/json", Body: call.Body}
	})
	for _, tc := range malformedFrames(frameCall) {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", n.selfAddress())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte{protoAPI.b}); err != nil {
				t.Fatal(err)
			}
			fr := newFrameReader(conn)
			if err := readHello(ctxT(t), conn, fr); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, _, _, err := fr.next(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Fatalf("after a bad frame the connection gave %v, want it closed", err)
			}
		})
	}
	p := testAPIClient(t, nil, 2*time.Second)
	if ans, _, err := forward(ctxT(t), p, n.selfAddress(), testCall); err != nil || ans.Status != 200 {
		t.Fatalf("a good call after the bad ones: %+v %v", ans, err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestConcurrentForwardedCallsGetTheirOwnAnswers: many calls in flight on
// one connection, answered out of order, each get their own answer.
func TestConcurrentForwardedCallsGetTheirOwnAnswers(t *testing.T) {
	nodes := formCluster(t, 2)
	var inFlight, most atomic.Int64
	nodes[1].ServeAPI(func(_ context.Context, call APICall) APIAnswer {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(time.Duration(len(call.Body)%7) * time.Millisecond) // answer out of order
		return APIAnswer{Status: 200, ContentType: "text/plain", Body: []byte(call.Target + " " + string(call.Body))}
	})
	const callers, calls = 32, 20
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range calls {
				body := strings.Repeat("x", i+j)
				target := fmt.Sprintf("T%d", i)
				ans, err := nodes[0].ForwardAPI(ctxT(t), nodes[1].NodeName(), APICall{Target: target, Body: []byte(body)})
				if err != nil || string(ans.Body) != target+" "+body || ans.ContentType != "text/plain" {
					t.Errorf("caller %d call %d: %q %v", i, j, ans.Body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	nodes[0].apiClient.mu.Lock()
	conns := len(nodes[0].apiClient.conns)
	nodes[0].apiClient.mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections to one peer, want 1", conns)
	}
	if most.Load() < 2 {
		t.Fatalf("at most %d calls were in flight at once", most.Load())
	}
}

// TestForwardedCallFailures: a call whose connection breaks, or whose node
// in charge does not answer in time, fails with NODE-IN-CHARGE-UNREACHABLE
// and does not hang.
func TestForwardedCallFailures(t *testing.T) {
	nodes := formCluster(t, 1, func(cfg *Config) {
		cfg.Trust = nil
		cfg.RequestTimeout = 500 * time.Millisecond
	})
	tests := []struct {
		name  string
		serve func(conn net.Conn, fr *frameReader)
	}{
		{"the connection breaks", func(conn net.Conn, fr *frameReader) {
			_, _, _ = readCall(fr)
		}},
		{"the peer closes before its hello", nil},
		{"no answer in time", func(conn net.Conn, fr *frameReader) {
			_, _, _ = readCall(fr)
			_, _, _ = readCall(fr) // until the client closes
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A peer at the cluster port of a loopback address of its own.
			host := fmt.Sprintf("127.0.77.%d", i+1)
			ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(testPort)))
			if err != nil {
				t.Skipf("cannot listen on %s: %v", host, err)
			}
			defer ln.Close()
			go acceptEach(ln, func(conn net.Conn) {
				defer conn.Close()
				var b [1]byte
				if _, err := io.ReadFull(conn, b[:]); err != nil || tc.serve == nil {
					return
				}
				_ = sendHello(conn)
				tc.serve(conn, newFrameReader(bufio.NewReader(conn)))
			})
			// The caller would wait far longer than RequestTimeout: the
			// call must end by the node's own bound, not by the caller's.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err = nodes[0].ForwardAPI(ctx, "peer@"+host, testCall)
			if errType(err) != TypeNodeUnreachable {
				t.Fatalf("got %v, want %s", err, TypeNodeUnreachable)
			}
			if ctx.Err() != nil {
				t.Fatalf("the call lasted until the caller's deadline: %v", err)
			}
		})
	}
}

// TestOlderPeersAreCalledOverHTTP: a peer that does not speak protoAPI (as a
// node of an older version) is called over HTTP, with and without TLS.
func TestOlderPeersAreCalledOverHTTP(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", secure), func(t *testing.T) {
			var ts *trust.Store
			if secure {
				ts = memberTrust(t, "old@127.0.0.1", testSecret)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			httpConns := newChanListener(ln.Addr())
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"via":"http","target":"` + r.Header.Get("X-Sora-Target") + `"}`))
			})}
			go func() { _ = srv.Serve(httpConns) }()
			defer srv.Close()
			defer ln.Close()
			go acceptEach(ln, func(conn net.Conn) {
				// The multiplexer of a node without protoAPI.
				if ts != nil {
					tc := tls.Server(conn, ts.ServerConfig(protoRaft.alpn, protoHTTP.alpn))
					if tc.Handshake() != nil || tc.ConnectionState().NegotiatedProtocol != protoHTTP.alpn {
						tc.Close()
						return
					}
					httpConns.deliver(&memberConn{Conn: tc}) // as the multiplexer does
					return
				}
				var b [1]byte
				if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != protoHTTP.b {
					conn.Close()
					return
				}
				httpConns.deliver(conn)
			})
			c := &Cluster{cfg: Config{RequestTimeout: 2 * time.Second}, client: newPeerClient(&dialer{trust: ts}, 2*time.Second), apiClient: newAPIClient(&dialer{trust: ts}, testLogger(), 2*time.Second)}
			defer c.client.close()
			defer c.apiClient.close()
			for range 2 {
				ans, err := c.forwardTo(ctxT(t), ln.Addr().String(), testCall)
				if err != nil || ans.Status != 200 || string(ans.Body) != `{"via":"http","target":"`+testCall.Target+`"}` {
					t.Fatalf("forward to an older peer: %+v %v", ans, err)
				}
			}
		})
	}
}

// TestNonMembersCannotForwardAPICalls: the API protocol admits, as the rest
// of the cluster port does, only peers with a member's certificate, and
// answers only members of the Raft configuration.
func TestNonMembersCannotForwardAPICalls(t *testing.T) {
	nodes := formCluster(t, 2)
	var called atomic.Int64
	for _, n := range nodes {
		n.ServeAPI(func(context.Context, APICall) APIAnswer {
			called.Add(1)
			return APIAnswer{Status: 200, Body: []byte(`[]`)}
		})
	}
	leader := leaderOf(t, nodes)
	addr := leader.selfAddress()
	stranger := memberTrust(t, "attacker@127.0.9.9", strangerSecret)

	t.Run("plain connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte{protoAPI.b})
		_, _ = conn.Write(appendCall(nil, 1, testCall))
		// The node's TLS handshake fails on it: at most an alert comes
		// back before the node closes the connection.
		_ = conn.SetReadDeadline(time.Now().Add(7 * time.Second))
		if _, err := io.ReadAll(conn); err != nil && !isReset(err) {
			t.Fatalf("a plain connection stayed open: %v", err)
		}
	})
	t.Run("another cluster's certificate", func(t *testing.T) {
		// The attacker does not check the node's certificate: the node
		// must refuse on its own.
		cfg := stranger.ClientConfig(protoAPI.alpn)
		cfg.VerifyConnection = nil
		conn, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			defer conn.Close()
			_, _ = conn.Write(appendCall(nil, 1, testCall))
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(conn)
		}
		if err == nil {
			t.Fatal("the node kept a connection from another cluster open")
		}
	})
	t.Run("a certificate of the cluster, not a member", func(t *testing.T) {
		p := testAPIClient(t, memberTrust(t, "outsider@127.0.9.8", testSecret), 2*time.Second)
		ans, _, err := forward(ctxT(t), p, addr, testCall)
		if err != nil || ans.Status != http.StatusBadRequest || !strings.Contains(string(ans.Body), TypeNodeNotMember) {
			t.Fatalf("an outsider's call: %d %s %v", ans.Status, ans.Body, err)
		}
	})
	if n := called.Load(); n != 0 {
		t.Fatalf("the API answered %d calls of non-members", n)
	}
	if _, err := nodes[0].ForwardAPI(ctxT(t), nodes[1].NodeName(), testCall); err != nil || called.Load() != 1 {
		t.Fatalf("a member's call: %v", err)
	}
}

// TestForwardedCallTimeoutKeepsTheConnection: a call that times out leaves
// the connection usable; the late answer is dropped.
func TestForwardedCallTimeoutKeepsTheConnection(t *testing.T) {
	nodes := formCluster(t, 2)
	nodes[1].ServeAPI(func(_ context.Context, call APICall) APIAnswer {
		if string(call.Body) == "slow" {
			time.Sleep(300 * time.Millisecond)
		}
		return APIAnswer{Status: 200, Body: call.Body}
	})
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	if _, err := nodes[0].ForwardAPI(ctx, nodes[1].NodeName(), APICall{Target: "t", Body: []byte("slow")}); errType(err) != TypeNodeUnreachable {
		t.Fatalf("a call past its deadline: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // the late answer arrives
	for range 3 {
		ans, err := nodes[0].ForwardAPI(ctxT(t), nodes[1].NodeName(), APICall{Target: "t", Body: []byte("fast")})
		if err != nil || string(ans.Body) != "fast" {
			t.Fatalf("a call after the timeout: %q %v", ans.Body, err)
		}
	}
}

// acceptEach hands every connection ln accepts to handle, on a goroutine of
// its own, until ln is closed.
func acceptEach(ln net.Listener, handle func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go handle(conn)
	}
}
