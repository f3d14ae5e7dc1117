package main

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// freePort returns a port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The client ports open together or not at all: a port already taken is
// named in the error, and the ports opened before it are closed again.
func TestListenClientPorts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name          string
		api, sig      int
		pprof         string
		wantErr       string // "" for success
		wantListening []string
	}{
		{name: "api and signaling", api: freePort(t), sig: freePort(t), wantListening: []string{"api", "signaling"}},
		{name: "with pprof", api: freePort(t), sig: freePort(t), pprof: "127.0.0.1:" + strconv.Itoa(freePort(t)), wantListening: []string{"api", "signaling", "pprof"}},
		{name: "signaling port taken", api: freePort(t), sig: busyPort, wantErr: "listen on signaling port"},
		{name: "pprof port taken", api: freePort(t), sig: freePort(t), pprof: busy.Addr().String(), wantErr: "listen on pprof port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{ListenAddress: "127.0.0.1", APIPort: tt.api, SignalingPort: tt.sig, PprofAddress: tt.pprof}
			ls, err := listenClientPorts(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				// The API port opened first was closed again.
				again, err := net.Listen("tcp", hostPort(cfg.ListenAddress, tt.api))
				if err != nil {
					t.Fatalf("the api port stayed open after the failure: %v", err)
				}
				again.Close()
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer closeListeners(ls)
			got := map[string]net.Listener{"api": ls.api, "signaling": ls.signaling, "pprof": ls.pprof}
			for _, name := range tt.wantListening {
				ln := got[name]
				if ln == nil {
					t.Fatalf("no %s listener", name)
				}
				// Accepted by the kernel before anyone serves the port.
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatalf("dial %s before serving: %v", name, err)
				}
				c.Close()
			}
			if tt.pprof == "" && ls.pprof != nil {
				t.Error("a pprof listener without pprof_address")
			}
		})
	}
}
