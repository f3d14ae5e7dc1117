package icehold

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

const (
	ufrag = "sorad01"
	pwd   = "a password of at least twenty-two characters"
)

func bindingRequest(t *testing.T, username, password string) []byte {
	t.Helper()
	m, err := stun.Build(stun.BindingRequest, stun.TransactionID, stun.NewUsername(username), stun.NewShortTermIntegrity(password), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func TestBindingRequestUfrag(t *testing.T) {
	req := bindingRequest(t, "local:remote", pwd)
	resp, err := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	noColon := bindingRequest(t, "localonly", pwd)
	rtp := append([]byte{0x80, 0x60, 0, 1}, make([]byte, 40)...)
	for _, tc := range []struct {
		name  string
		b     []byte
		ufrag string
		ok    bool
	}{
		{"binding request", req, "local", true},
		{"truncated request", req[:len(req)-8], "", false},
		{"header only", req[:20], "", false},
		{"binding response", resp.Raw, "", false},
		{"username without a colon", noColon, "", false},
		{"rtp", rtp, "", false},
		{"empty", nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := bindingRequestUfrag(tc.b)
			if got != tc.ufrag || ok != tc.ok {
				t.Fatalf("bindingRequestUfrag = %q, %v; want %q, %v", got, ok, tc.ufrag, tc.ok)
			}
		})
	}
}

// pair is a wrapped server socket and a client socket on loopback.
type pair struct {
	server *Conn
	client *net.UDPConn
	to     *net.UDPAddr
}

func newPair(t *testing.T, limits Limits) *pair {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{server: Wrap(udp, limits), client: client, to: udp.LocalAddr().(*net.UDPAddr)}
	t.Cleanup(func() { _ = p.server.Close(); _ = client.Close() })
	return p
}

func (p *pair) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.client.WriteToUDP(b, p.to); err != nil {
		t.Fatal(err)
	}
}

// read returns the next packet the server's reader gets, failing the test
// if none comes within a generous bound (a hang guard, not a timing check).
func (p *pair) read(t *testing.T) ([]byte, netip.AddrPort) {
	t.Helper()
	type result struct {
		b    []byte
		from netip.AddrPort
		err  error
	}
	got := make(chan result, 1)
	go func() {
		buf := make([]byte, 1500)
		n, from, err := p.server.ReadFromAddrPort(buf)
		got <- result{buf[:n], from, err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.b, r.from
	case <-time.After(10 * time.Second):
		t.Fatal("no packet read")
		return nil, netip.AddrPort{}
	}
}

// UDP on loopback keeps the order of one sender's packets, so a marker sent
// after a packet shows whether that packet was held: the reader gets the
// marker first.
var marker = []byte("marker, not STUN")

func TestEarlyCheckHeldUntilRelease(t *testing.T) {
	p := newPair(t, Limits{})
	w := p.server.Await(ufrag, pwd)
	early := bindingRequest(t, ufrag+":client", pwd)
	p.send(t, early)
	p.send(t, marker)
	if b, _ := p.read(t); !bytes.Equal(b, marker) {
		t.Fatalf("read %q before the release; want the marker (the check held)", b)
	}
	// The reader is blocked on the socket when the release comes: it must
	// wake and get the held check.
	type result struct {
		b    []byte
		from netip.AddrPort
	}
	got := make(chan result, 1)
	go func() {
		buf := make([]byte, 1500)
		n, from, err := p.server.ReadFromAddrPort(buf)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- result{buf[:n], from}
	}()
	w.Release("", "")
	select {
	case r := <-got:
		if !bytes.Equal(r.b, early) {
			t.Fatalf("read %d bytes after the release; want the held check", len(r.b))
		}
		if r.from != p.client.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("held check from %v; want %v", r.from, p.client.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the release did not wake the reader")
	}
	// After the release, checks pass straight through.
	p.send(t, early)
	if b, _ := p.read(t); !bytes.Equal(b, early) {
		t.Fatal("a check after the release was held")
	}
	if c := p.server.Counters(); c.Held != 1 || c.Replayed != 1 || c.Dropped != 0 {
		t.Fatalf("counters %+v; want 1 held, 1 replayed", c)
	}
}

func TestOnlyAuthenticatedChecksForAwaitedUfragsAreHeld(t *testing.T) {
	p := newPair(t, Limits{})
	p.server.Await(ufrag, pwd)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"wrong password", bindingRequest(t, ufrag+":client", "another password of enough length")},
		{"another ufrag", bindingRequest(t, "other:client", pwd)},
		{"not STUN", []byte{0x80, 0x60, 0, 1, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.send(t, tc.b)
			if b, _ := p.read(t); !bytes.Equal(b, tc.b) {
				t.Fatalf("read %q; want the packet passed through", b)
			}
		})
	}
	if c := p.server.Counters(); c.Held != 0 {
		t.Fatalf("held %d packets; want none", c.Held)
	}
}

func TestHoldIsBounded(t *testing.T) {
	p := newPair(t, Limits{PerUfrag: 2, Total: 3})
	a := p.server.Await("ufragA", pwd)
	b := p.server.Await("ufragB", pwd)
	for range 3 {
		p.send(t, bindingRequest(t, "ufragA:client", pwd)) // the third is over the per-ufrag bound
	}
	for range 2 {
		p.send(t, bindingRequest(t, "ufragB:client", pwd)) // the second is over the total
	}
	p.send(t, marker)
	if got, _ := p.read(t); !bytes.Equal(got, marker) {
		t.Fatalf("read %q; want the marker, every check held or dropped", got)
	}
	if c := p.server.Counters(); c.Held != 3 || c.Dropped != 2 {
		t.Fatalf("counters %+v; want 3 held, 2 dropped", c)
	}
	b.Cancel() // dropped, never replayed
	a.Release("", "")
	for range 2 {
		got, _ := p.read(t)
		if u, ok := bindingRequestUfrag(got); !ok || u != "ufragA" {
			t.Fatalf("replayed %q; want a check for ufragA", got)
		}
	}
	p.send(t, marker)
	if got, _ := p.read(t); !bytes.Equal(got, marker) {
		t.Fatalf("read %q; want the marker after the two replayed checks", got)
	}
	if c := p.server.Counters(); c.Replayed != 2 || c.Dropped != 3 {
		t.Fatalf("counters %+v; want 2 replayed, 3 dropped", c)
	}
}

// clientRead returns the next packet the client socket gets.
func (p *pair) clientRead(t *testing.T) []byte {
	t.Helper()
	if err := p.client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := p.client.Read(buf)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return buf[:n]
}

func TestNudgeAfterTheFirstAnswerToEachAddress(t *testing.T) {
	const clientUfrag, clientPwd = "client", "the client's password, long enough"
	p := newPair(t, Limits{})
	w := p.server.Await(ufrag, pwd)
	w.Release(clientUfrag, clientPwd)
	check := bindingRequest(t, ufrag+":"+clientUfrag, pwd)
	p.send(t, check)
	if b, _ := p.read(t); !bytes.Equal(b, check) {
		t.Fatal("a check after the release did not pass through")
	}
	success, err := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := p.client.LocalAddr().(*net.UDPAddr).AddrPort()
	answer := func() {
		t.Helper()
		if _, err := p.server.WriteToAddrPort(success.Raw, clientAddr); err != nil {
			t.Fatal(err)
		}
		if b := p.clientRead(t); !bytes.Equal(b, success.Raw) {
			t.Fatal("the client did not get sorad's answer first")
		}
	}
	answer()
	// Then the nudge: a binding request from sorad, as the controlled agent,
	// authenticated with the client's password.
	nudge := &stun.Message{Raw: p.clientRead(t)}
	if err := nudge.Decode(); err != nil {
		t.Fatalf("nudge: %v", err)
	}
	if nudge.Type != stun.BindingRequest {
		t.Fatalf("nudge is %v; want a binding request", nudge.Type)
	}
	var user stun.Username
	if err := user.GetFrom(nudge); err != nil || user.String() != clientUfrag+":"+ufrag {
		t.Fatalf("nudge username %q (%v); want %q", user, err, clientUfrag+":"+ufrag)
	}
	if err := stun.NewShortTermIntegrity(clientPwd).Check(nudge); err != nil {
		t.Fatalf("nudge integrity: %v", err)
	}
	if !nudge.Contains(stun.AttrICEControlled) || nudge.Contains(stun.AttrUseCandidate) {
		t.Fatal("nudge must carry ICE-CONTROLLED and no USE-CANDIDATE")
	}
	// The client's answer to it is not passed up.
	reply, err := stun.Build(stun.NewTransactionIDSetter(nudge.TransactionID), stun.BindingSuccess, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	p.send(t, reply.Raw)
	p.send(t, marker)
	if b, _ := p.read(t); !bytes.Equal(b, marker) {
		t.Fatalf("read %q; want the marker, the nudge's answer kept back", b)
	}
	// Once per address: another answer there goes alone.
	p.send(t, check)
	p.read(t)
	answer()
	w.Cancel()
	answer()
	if _, err := p.server.WriteToAddrPort(marker, clientAddr); err != nil {
		t.Fatal(err)
	}
	if b := p.clientRead(t); !bytes.Equal(b, marker) {
		t.Fatalf("client read %q; want the marker, no second nudge", b)
	}
	if c := p.server.Counters(); c.Nudged != 1 {
		t.Fatalf("counters %+v; want 1 nudge", c)
	}
}

// A check whose answer is replayed gets its nudge too, and a stranger's
// address never gets one.
func TestNudgeFollowsReplayedChecksOnly(t *testing.T) {
	const clientUfrag, clientPwd = "client", "the client's password, long enough"
	p := newPair(t, Limits{})
	w := p.server.Await(ufrag, pwd)
	early := bindingRequest(t, ufrag+":"+clientUfrag, pwd)
	p.send(t, early)
	p.send(t, marker)
	p.read(t) // the marker; the check is held
	w.Release(clientUfrag, clientPwd)
	if b, _ := p.read(t); !bytes.Equal(b, early) {
		t.Fatal("the held check was not replayed")
	}
	success, err := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	stranger := netip.MustParseAddrPort("127.0.0.1:9") // discard: nothing listens
	if _, err := p.server.WriteToAddrPort(success.Raw, stranger); err != nil {
		t.Fatal(err)
	}
	if c := p.server.Counters(); c.Nudged != 0 {
		t.Fatalf("nudged %d for an address that sent no check", c.Nudged)
	}
	if _, err := p.server.WriteToAddrPort(success.Raw, p.client.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	p.clientRead(t) // the answer
	m := &stun.Message{Raw: p.clientRead(t)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingRequest {
		t.Fatalf("want the nudge after the replayed check's answer: %v %v", m.Type, err)
	}
}

// An answer written through net.PacketConn's WriteTo, to an IPv4 address
// in its 16-byte form, still gets its nudge.
func TestNudgeAfterWriteToWithAMappedAddress(t *testing.T) {
	const clientUfrag, clientPwd = "client", "the client's password, long enough"
	p := newPair(t, Limits{})
	p.server.Await(ufrag, pwd).Release(clientUfrag, clientPwd)
	p.send(t, bindingRequest(t, ufrag+":"+clientUfrag, pwd))
	p.read(t)
	success, err := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	client := p.client.LocalAddr().(*net.UDPAddr)
	mapped := &net.UDPAddr{IP: client.IP.To16(), Port: client.Port}
	if _, err := p.server.WriteTo(success.Raw, mapped); err != nil {
		t.Fatal(err)
	}
	p.clientRead(t) // the answer
	m := &stun.Message{Raw: p.clientRead(t)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingRequest {
		t.Fatalf("want the nudge after the answer: %v %v", m.Type, err)
	}
}
