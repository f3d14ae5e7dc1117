package nfdelay

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDelaysQueuedPackets sends the packets of one loopback TCP port to a
// queue that holds them 150 ms: a connection (its SYN held) and a request
// (held again) each take at least that long, and nothing is lost.
func TestDelaysQueuedPackets(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set, so this is a failure, not a skip: iptables is not installed")
		}
		t.Skip("SKIPPED: iptables is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.99.7:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	const num, delay = 4242, 150 * time.Millisecond
	q, err := Open(num, delay)
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	defer q.Close()
	chain := fmt.Sprintf("NFDELAY-TEST-%d", os.Getpid())
	rules := [][]string{
		{"-N", chain},
		{"-A", chain, "-p", "tcp", "-d", "127.0.99.7", "--dport", fmt.Sprint(port), "-j", "NFQUEUE", "--queue-num", fmt.Sprint(num), "--queue-bypass"},
		{"-I", "INPUT", "-j", chain},
	}
	cleanup := func() {
		_ = exec.Command("iptables", "-D", "INPUT", "-j", chain).Run()
		_ = exec.Command("iptables", "-F", chain).Run()
		_ = exec.Command("iptables", "-X", chain).Run()
	}
	defer cleanup()
	for _, r := range rules {
		if out, err := exec.Command("iptables", r...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %s: %v: %s", strings.Join(r, " "), err, out)
		}
	}

	start := time.Now()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dialed := time.Since(start)
	for i := range 3 {
		start = time.Now()
		msg := fmt.Sprintf("ping %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
		// The held packet cannot arrive before its delay: a lower bound,
		// whatever the machine's load.
		if took := time.Since(start); took < delay {
			t.Fatalf("echo %d took %v, less than the %v delay: the packet was not held", i, took, delay)
		}
	}
	if dialed < delay {
		t.Fatalf("the connection took %v, less than the %v delay: its SYN was not held", dialed, delay)
	}
}
