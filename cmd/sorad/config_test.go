package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/media"
	"github.com/sorad/sorad/media/signaling"
)

// mapEnv returns a getenv function backed by m.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// writeConf writes content to a sorad.conf in a fresh temporary directory and
// returns its path.
func writeConf(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sorad.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// inEmptyDir runs the test in an empty working directory so that a stray
// ./sorad.conf cannot influence it.
func inEmptyDir(t *testing.T) {
	t.Helper()
	t.Chdir(t.TempDir())
}

func fixedHostname(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func TestDefaults(t *testing.T) {
	inEmptyDir(t)
	got, err := loadConfig(nil, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ConfigFile:             "",
		NodeName:               "sorad@127.0.0.1",
		DataDir:                "./data",
		ListenAddress:          "127.0.0.1",
		APIPort:                3000,
		SignalingPort:          5000,
		ClusterPort:            5890,
		ContactNodeNameList:    nil,
		ExternalAPIURL:         "http://127.0.0.1:3000/",
		ExternalSignalingURL:   "ws://127.0.0.1:5000/signaling",
		APIBearerToken:         "",
		APICORSOrigin:          "http://127.0.0.1:5000",
		Devtools:               true,
		APIMaxBodySize:         1048576,
		LicenseMaxConnections:  500,
		LicenseMaxNodes:        0,
		LicenseSerialCode:      "",
		LicenseType:            "sorad",
		LogLevel:               "info",
		LogFormat:              "json",
		ProbeInterval:          time.Second,
		PeerTimeout:            3 * time.Second,
		FailoverTimeout:        3 * time.Second,
		LeaseTimeout:           2 * time.Second,
		RaftHeartbeatTimeout:   500 * time.Millisecond,
		RaftElectionTimeout:    500 * time.Millisecond,
		RaftLeaderLeaseTimeout: 250 * time.Millisecond,
		RaftSnapshotThreshold:  8192,
		RaftSnapshotInterval:   2 * time.Minute,
		RaftTrailingLogs:       10240,
		ClusterRequestTimeout:  5 * time.Second,
		ClusterIdleTimeout:     2 * time.Minute,
		ShutdownTimeout:        10 * time.Second,

		MediaUDPPort:             5000,
		MediaPublicIPList:        nil,
		DefaultVideoCodecType:    "VP9",
		DefaultVideoBitRate:      1000,
		SignalingMaxMessageSize:  262144,
		SignalingMessageRate:     50,
		SignalingMessageBurst:    200,
		SignalingMaxPending:      1000,
		SignalingMaxPendingPerIP: 100,
		SignalingNewChannelRate:  5,
		SignalingNewChannelBurst: 50,
		SignalingMaxMetadataSize: 65536,
		ChannelMaxMetadataSize:   1 << 20,
		UserAgentStatsInterval:   5 * time.Second,
		RTPForwardingNetworks:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		UserAgentStatsMaxSize:    256 << 10,
		DataChannelMaxBuffered:   1 << 20,
		WebhookResponseTimeout:   5 * time.Second,
		WebhookQueueSize:         1024,
		WebhookUpdateInterval:    time.Minute,
		Label:                    "WebRTC SFU sorad",
		MessagingMaxMessageSize:  64 << 10,
		MessagingMessageRate:     500,
		MessagingMessageBurst:    500,
		SignalingConnectTimeout:  30 * time.Second,
		SignalingPingInterval:    5 * time.Second,
		SignalingPongTimeout:     15 * time.Second,
		ChannelReleaseDelay:      5 * time.Second,
		KeyframeRequestInterval:  300 * time.Millisecond,
		NACKBufferSize:           1024,

		SimulcastEncodings:     media.DefaultSimulcastEncodings(),
		DefaultSpotlightNumber: 1,
		SpotlightFocusRID:      "r1",
		SpotlightUnfocusRID:    "r0",
		SpotlightFocusHold:     2 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %#v\nwant %#v", got, want)
	}
}

func TestUnspecifiedListenAddressUsesHostname(t *testing.T) {
	inEmptyDir(t)
	for _, addr := range []string{"0.0.0.0", "::"} {
		t.Run(addr, func(t *testing.T) {
			got, err := resolveConfig([]string{"--listen_address", addr, "--cluster_insecure=true"}, mapEnv(nil), io.Discard, fixedHostname("box1"))
			if err != nil {
				t.Fatal(err)
			}
			if got.NodeName != "sorad@box1" || got.ExternalAPIURL != "http://box1:3000/" {
				t.Errorf("node_name %q external_api_url %q", got.NodeName, got.ExternalAPIURL)
			}
		})
	}
	_, err := resolveConfig([]string{"--listen_address=0.0.0.0", "--cluster_insecure=true"}, mapEnv(nil), io.Discard,
		func() (string, error) { return "", errors.New("no hostname") })
	if err == nil || !strings.Contains(err.Error(), "node_name") {
		t.Errorf("hostname failure: err = %v", err)
	}
	// An explicit node name needs no hostname.
	got, err := resolveConfig([]string{"--listen_address=0.0.0.0", "--node_name=a@10.0.0.1", "--cluster_secret_file=/run/secrets/cluster"}, mapEnv(nil), io.Discard,
		func() (string, error) { return "", errors.New("no hostname") })
	if err != nil || got.NodeName != "a@10.0.0.1" {
		t.Errorf("got %q, %v", got.NodeName, err)
	}
}

func TestPrecedence(t *testing.T) {
	inEmptyDir(t)
	conf := writeConf(t, "api_port = 3001\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"default", nil, nil, 3000},
		{"file", []string{"--config", conf}, nil, 3001},
		{"env over file", []string{"--config", conf}, map[string]string{"SORAD_API_PORT": "3002"}, 3002},
		{"flag over env and file", []string{"--config", conf, "--api_port=3003"}, map[string]string{"SORAD_API_PORT": "3002"}, 3003},
		{"flag with separate value", []string{"--api_port", "3004"}, map[string]string{"SORAD_API_PORT": "3002"}, 3004},
		{"config from env", nil, map[string]string{"SORAD_CONFIG": conf}, 3001},
		{"env without file", nil, map[string]string{"SORAD_API_PORT": "3002"}, 3002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, mapEnv(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got.APIPort != tt.want {
				t.Errorf("APIPort = %d, want %d", got.APIPort, tt.want)
			}
		})
	}
}

// TestDevtoolsSetting: the devtools page is on unless a flag, the
// environment or the file turns it off, with the usual precedence; a value
// that is not a boolean is refused.
func TestDevtoolsSetting(t *testing.T) {
	inEmptyDir(t)
	off := writeConf(t, "devtools = false\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    bool
		wantErr string
	}{
		{name: "default", want: true},
		{name: "flag", args: []string{"--devtools=false"}, want: false},
		{name: "env", env: map[string]string{"SORAD_DEVTOOLS": "false"}, want: false},
		{name: "file", args: []string{"--config", off}, want: false},
		{name: "env over file", args: []string{"--config", off}, env: map[string]string{"SORAD_DEVTOOLS": "true"}, want: true},
		{name: "flag over env", args: []string{"--devtools=true"}, env: map[string]string{"SORAD_DEVTOOLS": "false"}, want: true},
		{name: "not a boolean", args: []string{"--devtools=maybe"}, wantErr: "not true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, mapEnv(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Devtools != tt.want {
				t.Errorf("Devtools = %v, want %v", got.Devtools, tt.want)
			}
		})
	}
}

func TestConfigFileSelection(t *testing.T) {
	inEmptyDir(t)
	a := writeConf(t, "license_type = a\n")
	b := writeConf(t, "license_type = b\n")
	// --config beats SORAD_CONFIG.
	got, err := loadConfig([]string{"--config=" + a}, mapEnv(map[string]string{"SORAD_CONFIG": b}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.LicenseType != "a" || got.ConfigFile != a {
		t.Errorf("license_type %q config_file %q", got.LicenseType, got.ConfigFile)
	}

	// ./sorad.conf is read when nothing names a file.
	if err := os.WriteFile(defaultConfigFile, []byte("license_type = cwd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = loadConfig(nil, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.LicenseType != "cwd" || got.ConfigFile != defaultConfigFile {
		t.Errorf("license_type %q config_file %q", got.LicenseType, got.ConfigFile)
	}

	// An empty explicit path reads no file at all.
	got, err = loadConfig([]string{"--config="}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.LicenseType != "sorad" || got.ConfigFile != "" {
		t.Errorf("license_type %q config_file %q", got.LicenseType, got.ConfigFile)
	}
}

func TestDerivedDefaults(t *testing.T) {
	inEmptyDir(t)
	tests := []struct {
		name                       string
		args                       []string
		env                        map[string]string
		wantNode, wantAPI, wantSig string
		wantCORS                   string
	}{
		{
			name:     "node name overridden",
			args:     []string{"--node_name=foo@10.0.0.5"},
			wantNode: "foo@10.0.0.5", wantAPI: "http://10.0.0.5:3000/",
			wantSig: "ws://10.0.0.5:5000/signaling", wantCORS: "http://10.0.0.5:5000",
		},
		{
			name:     "ports overridden",
			env:      map[string]string{"SORAD_API_PORT": "8080", "SORAD_SIGNALING_PORT": "8443"},
			wantNode: "sorad@127.0.0.1", wantAPI: "http://127.0.0.1:8080/",
			wantSig: "ws://127.0.0.1:8443/signaling", wantCORS: "http://127.0.0.1:8443",
		},
		{
			name:     "listen address overridden",
			args:     []string{"--listen_address=192.0.2.7", "--cluster_secret=" + strings.Repeat("k", 32)},
			wantNode: "sorad@192.0.2.7", wantAPI: "http://192.0.2.7:3000/",
			wantSig: "ws://192.0.2.7:5000/signaling", wantCORS: "http://192.0.2.7:5000",
		},
		{
			name:     "ipv6 host is bracketed",
			args:     []string{"--listen_address=::1"},
			wantNode: "sorad@::1", wantAPI: "http://[::1]:3000/",
			wantSig: "ws://[::1]:5000/signaling", wantCORS: "http://[::1]:5000",
		},
		{
			name: "explicit values are not derived",
			args: []string{
				"--node_name=foo@h1",
				"--external_api_url=https://api.example.com/",
				"--external_signaling_url=wss://sig.example.com/signaling",
				"--api_cors_origin=https://app.example.com",
			},
			wantNode: "foo@h1", wantAPI: "https://api.example.com/",
			wantSig: "wss://sig.example.com/signaling", wantCORS: "https://app.example.com",
		},
		{
			name:     "explicitly empty cors origin stays empty",
			args:     []string{"--api_cors_origin="},
			wantNode: "sorad@127.0.0.1", wantAPI: "http://127.0.0.1:3000/",
			wantSig: "ws://127.0.0.1:5000/signaling", wantCORS: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, mapEnv(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got.NodeName != tt.wantNode || got.ExternalAPIURL != tt.wantAPI ||
				got.ExternalSignalingURL != tt.wantSig || got.APICORSOrigin != tt.wantCORS {
				t.Errorf("got node %q api %q sig %q cors %q", got.NodeName, got.ExternalAPIURL,
					got.ExternalSignalingURL, got.APICORSOrigin)
			}
		})
	}
}

func TestFileSyntax(t *testing.T) {
	inEmptyDir(t)
	conf := writeConf(t, strings.Join([]string{
		"\ufeff# sorad.conf",
		"",
		"   # indented comment",
		"node_name = \"n1@192.0.2.1\"",
		"\tlicense_serial_code=  \"  spaced  \"  ",
		"license_type=\"\"",
		"api_bearer_token = abc#def",
		"log_level=debug\r",
		"contact_node_name_list = n2@192.0.2.2, ,n3@192.0.2.3 ,",
	}, "\n"))
	got, err := loadConfig([]string{"--config", conf}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeName != "n1@192.0.2.1" {
		t.Errorf("NodeName %q", got.NodeName)
	}
	if got.LicenseSerialCode != "  spaced  " {
		t.Errorf("LicenseSerialCode %q", got.LicenseSerialCode)
	}
	if got.LicenseType != "" {
		t.Errorf("LicenseType %q", got.LicenseType)
	}
	if got.APIBearerToken != "abc#def" {
		t.Errorf("APIBearerToken %q", got.APIBearerToken)
	}
	if got.LogLevel != "debug" {
		t.Errorf("LogLevel %q", got.LogLevel)
	}
	if want := []string{"n2@192.0.2.2", "n3@192.0.2.3"}; !reflect.DeepEqual(got.ContactNodeNameList, want) {
		t.Errorf("ContactNodeNameList %q, want %q", got.ContactNodeNameList, want)
	}
}

func TestContactList(t *testing.T) {
	inEmptyDir(t)
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"", nil, ""},
		{" , ,", nil, ""},
		{"a@h1", []string{"a@h1"}, ""},
		{" a@h1 ,b@h2,, c@h3 ", []string{"a@h1", "b@h2", "c@h3"}, ""},
		{"a@h1,b", nil, `env SORAD_CONTACT_NODE_NAME_LIST: "b" is not a node name`},
		{"a@h1,@h2", nil, `"@h2" is not a node name`},
		{"a@h1,b@", nil, `"b@" is not a node name`},
		{"a b@h1", nil, "contains whitespace"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := loadConfig(nil, mapEnv(map[string]string{"SORAD_CONTACT_NODE_NAME_LIST": tt.in}), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ContactNodeNameList, tt.want) {
				t.Errorf("got %q, want %q", got.ContactNodeNameList, tt.want)
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	inEmptyDir(t)
	missing := filepath.Join(t.TempDir(), "nope.conf")
	tests := []struct {
		name    string
		file    string // written to a temp sorad.conf and passed via --config when non-empty
		args    []string
		env     map[string]string
		wantErr []string // substrings of the error
	}{
		{name: "port not an integer", args: []string{"--api_port=abc"},
			wantErr: []string{`flag --api_port: "abc" is not an integer`}},
		{name: "port out of range in file", file: "# c\n\nsignaling_port = 5001\napi_port = 70000\n",
			wantErr: []string{"sorad.conf:4: api_port: port 70000 out of range 1-65535"}},
		{name: "port zero from env", env: map[string]string{"SORAD_CLUSTER_PORT": "0"},
			wantErr: []string{"env SORAD_CLUSTER_PORT: port 0 out of range 1-65535"}},
		{name: "ports collide", args: []string{"--cluster_port=3000"},
			wantErr: []string{"flag --cluster_port: port 3000 is already used by api_port (3000, default api_port)"}},
		{name: "node name without at", args: []string{"--node_name=foo"},
			wantErr: []string{"flag --node_name:", `"foo" is not a node name`}},
		{name: "node name empty host", env: map[string]string{"SORAD_NODE_NAME": "foo@"},
			wantErr: []string{"env SORAD_NODE_NAME:", "not a node name"}},
		{name: "node name two ats", args: []string{"--node_name=a@b@c"},
			wantErr: []string{"not a node name"}},
		{name: "node name with whitespace", file: "node_name = \"a b@h\"\n",
			wantErr: []string{"sorad.conf:1: node_name:", "whitespace"}},
		{name: "bad duration", args: []string{"--shutdown_timeout=10"},
			wantErr: []string{`flag --shutdown_timeout: "10" is not a duration`}},
		{name: "zero duration", env: map[string]string{"SORAD_CLUSTER_REQUEST_TIMEOUT": "0s"},
			wantErr: []string{"env SORAD_CLUSTER_REQUEST_TIMEOUT:", "greater than 0"}},
		{name: "negative duration", args: []string{"--cluster_peer_timeout=-1s"},
			wantErr: []string{"flag --cluster_peer_timeout:", "greater than 0"}},
		{name: "probe interval not below peer timeout", args: []string{"--cluster_probe_interval=3s"},
			wantErr: []string{"flag --cluster_probe_interval: 3s must be less than cluster_peer_timeout (3s, default cluster_peer_timeout)"}},
		{name: "lease not shorter than failover", args: []string{"--cluster_lease_timeout=3s"},
			wantErr: []string{"flag --cluster_lease_timeout: 3s plus twice raft_leader_lease_timeout (250ms, default raft_leader_lease_timeout) must be less than cluster_failover_timeout (3s, default cluster_failover_timeout)"}},
		{name: "lease too close to failover", args: []string{"--cluster_failover_timeout=2500ms"},
			wantErr: []string{"flag", "cluster_lease_timeout", "cluster_failover_timeout (2.5s, flag --cluster_failover_timeout)"}},
		{name: "lease too short", args: []string{"--cluster_lease_timeout=10ms"},
			wantErr: []string{"cluster_lease_timeout: 10ms is less than 20ms"}},
		{name: "raft timeout too low", args: []string{"--raft_leader_lease_timeout=1ms"},
			wantErr: []string{"flag --raft_leader_lease_timeout: 1ms is less than 5ms"}},
		{name: "raft lease above heartbeat", args: []string{"--raft_leader_lease_timeout=600ms"},
			wantErr: []string{"flag --raft_leader_lease_timeout:", "raft_heartbeat_timeout"}},
		{name: "raft election below heartbeat", env: map[string]string{"SORAD_RAFT_ELECTION_TIMEOUT": "400ms"},
			wantErr: []string{"env SORAD_RAFT_ELECTION_TIMEOUT:", "raft_heartbeat_timeout"}},
		{name: "bad log level", args: []string{"--log_level=trace"},
			wantErr: []string{`flag --log_level: "trace" is not one of debug, info, warn, error`}},
		{name: "bad log format", env: map[string]string{"SORAD_LOG_FORMAT": "xml"},
			wantErr: []string{"env SORAD_LOG_FORMAT:", "json, text"}},
		{name: "body size too small", args: []string{"--api_max_body_size=1023"},
			wantErr: []string{"flag --api_max_body_size: 1023 is out of range 1024-67108864"}},
		{name: "body size that would overflow", args: []string{"--api_max_body_size=9223372036854775807"},
			wantErr: []string{"flag --api_max_body_size: 9223372036854775807 is out of range"}},
		{name: "message size beyond the bound", args: []string{"--signaling_max_message_size=9223372036854775807"},
			wantErr: []string{"flag --signaling_max_message_size:"}},
		{name: "metadata size beyond the bound", args: []string{"--signaling_max_metadata_size=1073741824"},
			wantErr: []string{"flag --signaling_max_metadata_size: 1073741824 is not from 16 to 67108864"}},
		{name: "max connections zero", args: []string{"--license_max_connections=0"},
			wantErr: []string{"flag --license_max_connections: 0 is not from 1 to 10000000"}},
		{name: "max nodes negative", args: []string{"--license_max_nodes=-1"},
			wantErr: []string{"flag --license_max_nodes: -1 is not from 0 to 1000000"}},
		{name: "listen address not an IP", args: []string{"--listen_address=localhost"},
			wantErr: []string{`flag --listen_address: "localhost" is not an IP address`}},
		{name: "api url bad scheme", args: []string{"--external_api_url=ws://h:3000/"},
			wantErr: []string{"flag --external_api_url:", "http or https"}},
		{name: "signaling url bad scheme", args: []string{"--external_signaling_url=http://h:5000/signaling"},
			wantErr: []string{"flag --external_signaling_url:", "ws or wss"}},
		{name: "api url unparsable", args: []string{"--external_api_url=http://[::1"},
			wantErr: []string{"flag --external_api_url:", "not a URL"}},
		{name: "explicitly empty api url", env: map[string]string{"SORAD_EXTERNAL_API_URL": ""},
			wantErr: []string{"env SORAD_EXTERNAL_API_URL:"}},
		{name: "simulcast encodings not JSON", args: []string{"--simulcast_encodings=r0,r1"},
			wantErr: []string{"flag --simulcast_encodings: not a JSON array of encodings"}},
		{name: "simulcast encodings unknown field", args: []string{`--simulcast_encodings=[{"rid":"r0","scale":2}]`},
			wantErr: []string{"flag --simulcast_encodings:", `unknown field "scale"`}},
		{name: "simulcast encodings out of order", args: []string{`--simulcast_encodings=[{"rid":"r1","active":true}]`},
			wantErr: []string{`flag --simulcast_encodings: simulcast encoding 0 has rid "r1", want r0`}},
		{name: "simulcast encodings empty", env: map[string]string{"SORAD_SIMULCAST_ENCODINGS": "[]"},
			wantErr: []string{"env SORAD_SIMULCAST_ENCODINGS: 0 simulcast encodings"}},
		{name: "simulcast encodings upscale", args: []string{`--simulcast_encodings=[{"rid":"r0","active":true,"scaleResolutionDownBy":0.5}]`},
			wantErr: []string{"scaleResolutionDownBy 0.5 is below 1"}},
		{name: "spotlight number too big", args: []string{"--default_spotlight_number=9"},
			wantErr: []string{"flag --default_spotlight_number: 9 is not from 1 to 8"}},
		{name: "bad spotlight rid", args: []string{"--spotlight_focus_rid=high"},
			wantErr: []string{`flag --spotlight_focus_rid: "high" is not one of none, r0, r1, r2`}},
		{name: "bad pprof address", args: []string{"--pprof_address=localhost"},
			wantErr: []string{`flag --pprof_address: "localhost" is not host:port`}},
		{name: "unknown file key", file: "api_port = 3000\n\n# x\nfoo = bar\n",
			wantErr: []string{`sorad.conf:4: unknown key "foo"`}},
		{name: "config is not a file key", file: "config = x\n",
			wantErr: []string{`sorad.conf:1: unknown key "config"`}},
		{name: "duplicate file key", file: "api_port = 3000\nlog_level = info\napi_port = 3001\n",
			wantErr: []string{`sorad.conf:3: duplicate key "api_port" (first set at line 1)`}},
		{name: "malformed line", file: "# ok\napi_port 3000\n",
			wantErr: []string{"sorad.conf:2: expected key = value"}},
		{name: "missing key", file: "= 3000\n",
			wantErr: []string{"sorad.conf:1: missing key"}},
		{name: "unterminated quote", file: "license_type = \"abc\n",
			wantErr: []string{"sorad.conf:1: license_type: unterminated quoted value"}},
		{name: "missing explicit config flag", args: []string{"--config", missing},
			wantErr: []string{"flag --config: config file:", "nope.conf"}},
		{name: "missing explicit config env", env: map[string]string{"SORAD_CONFIG": missing},
			wantErr: []string{"env SORAD_CONFIG: config file:", "nope.conf"}},
		{name: "unknown flag", args: []string{"--nope=1"},
			wantErr: []string{"flag provided but not defined: -nope"}},
		{name: "flag without value", args: []string{"--api_port"},
			wantErr: []string{"flag needs an argument: -api_port"}},
		{name: "positional argument", args: []string{"extra"},
			wantErr: []string{`unexpected argument "extra"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeConf(t, tt.file)}, args...)
			}
			_, err := loadConfig(args, mapEnv(tt.env), io.Discard)
			if err == nil {
				t.Fatalf("no error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want containing %q", err, w)
				}
			}
		})
	}
}

func TestInvalidOverriddenValueIsIgnored(t *testing.T) {
	inEmptyDir(t)
	conf := writeConf(t, "api_port = abc\n")
	got, err := loadConfig([]string{"--config", conf}, mapEnv(map[string]string{"SORAD_API_PORT": "3100"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.APIPort != 3100 {
		t.Errorf("APIPort = %d", got.APIPort)
	}
}

func TestUnknownEnvIgnored(t *testing.T) {
	inEmptyDir(t)
	env := map[string]string{"SORAD_NOPE": "x", "SORAD_node_name": "ignored@x"}
	got, err := loadConfig(nil, mapEnv(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeName != "sorad@127.0.0.1" {
		t.Errorf("NodeName %q", got.NodeName)
	}
}

func TestHelp(t *testing.T) {
	inEmptyDir(t)
	for _, arg := range []string{"--help", "-h", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			// A broken config file must not prevent --help.
			env := map[string]string{"SORAD_CONFIG": filepath.Join(t.TempDir(), "missing.conf")}
			_, err := loadConfig([]string{"--api_port=1", arg}, mapEnv(env), &out)
			if !errors.Is(err, errHelp) || !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want errHelp", err)
			}
			text := out.String()
			last := 0
			for _, spec := range keySpecs {
				i := strings.Index(text, "--"+spec.name+" ")
				if i < 0 {
					t.Errorf("usage lacks key %s", spec.name)
					continue
				}
				if i < last {
					t.Errorf("key %s out of order", spec.name)
				}
				last = i
				line := text[i:]
				line = line[:strings.IndexByte(line, '\n')]
				def := spec.defHelp
				if def == "" {
					def = spec.def
				}
				if !strings.Contains(line, def) || !strings.Contains(line, spec.desc) {
					t.Errorf("usage line %q lacks default %q or description", line, def)
				}
			}
			for _, w := range []string{"--config", "SORAD_CONFIG", "SORAD_<KEY>", "1048576", "sorad@<host of listen_address>"} {
				if !strings.Contains(text, w) {
					t.Errorf("usage lacks %q", w)
				}
			}
		})
	}
	// Errors print nothing to stdout.
	var out bytes.Buffer
	if _, err := loadConfig([]string{"--nope"}, mapEnv(nil), &out); err == nil || out.Len() != 0 {
		t.Errorf("err = %v, stdout %q", err, out.String())
	}
}

func TestKeySpecsComplete(t *testing.T) {
	// Every Config field but ConfigFile has a complete key spec.
	inEmptyDir(t)
	for _, spec := range keySpecs {
		if spec.set == nil || spec.desc == "" {
			t.Errorf("spec %s incomplete", spec.name)
		}
		if spec.derive == nil && spec.defHelp == "" && spec.def == "" {
			t.Errorf("spec %s has no default shown in help", spec.name)
		}
	}
	if len(keySpecs) != reflect.TypeFor[Config]().NumField()-1 {
		t.Errorf("%d keys for %d Config fields", len(keySpecs), reflect.TypeFor[Config]().NumField()-1)
	}
}

func TestRedactedLogValue(t *testing.T) {
	inEmptyDir(t)
	const token = "s3cr3t-T0KEN"
	const secret, previous = "cluster-SECRET-0123456789abcdefghij", "cluster-PREVIOUS-0123456789abcdefgh"
	cfg, err := loadConfig([]string{"--api_bearer_token", token, "--contact_node_name_list=a@h1",
		"--cluster_secret", secret, "--cluster_secret_previous", previous}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIBearerToken != token {
		t.Fatalf("token not loaded: %q", cfg.APIBearerToken)
	}
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewJSONHandler(&buf, nil)
		if format == "text" {
			h = slog.NewTextHandler(&buf, nil)
		}
		slog.New(h).Info("config", "config", cfg)
		out := buf.String()
		for _, leak := range []string{token, secret, previous} {
			if strings.Contains(out, leak) {
				t.Errorf("%s log contains a secret: %s", format, out)
			}
		}
		if !strings.Contains(out, "api_bearer_token") || !strings.Contains(out, "set") {
			t.Errorf("%s log lacks api_bearer_token=set: %s", format, out)
		}
		if !strings.Contains(out, "sorad@127.0.0.1") || !strings.Contains(out, "a@h1") {
			t.Errorf("%s log lacks other values: %s", format, out)
		}
	}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), cfg.String()} {
		if strings.Contains(s, token) || strings.Contains(s, secret) || strings.Contains(s, previous) {
			t.Errorf("formatted config contains a secret: %s", s)
		}
	}
	var buf bytes.Buffer
	cfg.APIBearerToken = ""
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", cfg)
	if !strings.Contains(buf.String(), "config.api_bearer_token=unset") {
		t.Errorf("unset token not shown: %s", buf.String())
	}
}

// TestExampleConfigFile keeps deploy/sorad.conf in step with the keys: it
// documents every key, and with its "# key = value" lines uncommented it
// parses to the defaults (the contact list aside, which has no default).
func TestExampleConfigFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "sorad.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	documented := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		kv, ok := strings.CutPrefix(line, "# ")
		k, _, isSetting := strings.Cut(kv, " =")
		if !ok || !isSetting || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
			continue
		}
		documented[k] = true
		if k != "contact_node_name_list" {
			lines = append(lines, kv)
		}
	}
	for _, s := range keySpecs {
		if !documented[s.name] {
			t.Errorf("deploy/sorad.conf does not document %s", s.name)
		}
	}
	path := filepath.Join(t.TempDir(), "sorad.conf")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	fromFile, err := loadConfig([]string{"--config", path}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatalf("example config with its settings uncommented: %v", err)
	}
	defaults, err := loadConfig([]string{"--config="}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromFile.ConfigFile = ""
	if !reflect.DeepEqual(fromFile, defaults) {
		t.Fatalf("example config's values differ from the defaults:\nfile:     %+v\ndefaults: %+v", fromFile, defaults)
	}
}

// TestConfigFieldsMatchKeys: every Config field is tagged with a key of the
// table (so the start-up log shows it), and every key has a field.
func TestConfigFieldsMatchKeys(t *testing.T) {
	tags := map[string]bool{}
	ct := reflect.TypeFor[Config]()
	for i := 0; i < ct.NumField(); i++ {
		tag := ct.Field(i).Tag.Get("conf")
		if tag == "" {
			t.Errorf("Config.%s has no conf tag", ct.Field(i).Name)
		}
		tags[tag] = true
	}
	for _, s := range keySpecs {
		if !tags[s.name] {
			t.Errorf("key %s has no Config field tagged with it", s.name)
		}
		delete(tags, s.name)
	}
	delete(tags, "config_file")
	for tag := range tags {
		t.Errorf("Config field tagged %q is not a key", tag)
	}
}

func TestSimulcastEncodingsParsed(t *testing.T) {
	inEmptyDir(t)
	file := writeConf(t, `simulcast_encodings = [{"rid":"r0","active":true,"scaleResolutionDownBy":2},{"rid":"r1","active":false,"maxBitrate":300000,"scalabilityMode":"L1T1"}]`+"\n")
	got, err := loadConfig([]string{"--config", file}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []signaling.Encoding{
		{RID: "r0", Active: true, ScaleResolutionDownBy: 2},
		{RID: "r1", Active: false, MaxBitrate: 300000, ScalabilityMode: "L1T1"},
	}
	if !reflect.DeepEqual(got.SimulcastEncodings, want) {
		t.Fatalf("simulcast_encodings = %+v, want %+v", got.SimulcastEncodings, want)
	}
}

// TestClusterTrustRules checks that the cluster port is secure by default:
// beyond loopback it needs authentication or an explicit cluster_insecure.
func TestClusterTrustRules(t *testing.T) {
	inEmptyDir(t)
	secret := "--cluster_secret=" + strings.Repeat("s", 32)
	tests := []struct {
		name        string
		args        []string
		wantErr     string
		wantTrusted bool
	}{
		{name: "loopback needs nothing", args: nil},
		{name: "a LAN address needs authentication", args: []string{"--listen_address=10.1.2.3"}, wantErr: "needs authentication"},
		{name: "all interfaces need authentication", args: []string{"--listen_address=0.0.0.0", "--node_name=a@h"}, wantErr: "needs authentication"},
		{name: "a secret is enough", args: []string{"--listen_address=10.1.2.3", secret}, wantTrusted: true},
		{name: "a secret file is enough", args: []string{"--listen_address=10.1.2.3", "--cluster_secret_file=/s"}, wantTrusted: true},
		{name: "operator PKI is enough", args: []string{"--listen_address=10.1.2.3", "--cluster_tls_ca_file=ca", "--cluster_tls_cert_file=c", "--cluster_tls_key_file=k"}, wantTrusted: true},
		{name: "PKI needs all three files", args: []string{"--cluster_tls_ca_file=ca", "--cluster_tls_cert_file=c"}, wantErr: "go together"},
		{name: "explicitly insecure", args: []string{"--listen_address=10.1.2.3", "--cluster_insecure=true"}},
		{name: "insecure contradicts a secret", args: []string{secret, "--cluster_insecure=true"}, wantErr: "contradicts"},
		{name: "two ways at once", args: []string{secret, "--cluster_secret_file=/s"}, wantErr: "one of"},
		{name: "previous without a secret", args: []string{"--cluster_secret_previous=x"}, wantErr: "only used with cluster_secret"},
		{name: "insecure is a boolean", args: []string{"--cluster_insecure=maybe"}, wantErr: "not true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, mapEnv(nil), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ClusterTrusted() != tt.wantTrusted {
				t.Fatalf("ClusterTrusted = %v", got.ClusterTrusted())
			}
		})
	}
}

func TestListenerTLSSettings(t *testing.T) {
	inEmptyDir(t)
	got, err := loadConfig([]string{"--api_tls_cert_file=a.pem", "--api_tls_key_file=a-key.pem",
		"--signaling_tls_cert_file=s.pem", "--signaling_tls_key_file=s-key.pem"}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.ExternalAPIURL != "https://127.0.0.1:3000/" || got.ExternalSignalingURL != "wss://127.0.0.1:5000/signaling" || got.APICORSOrigin != "https://127.0.0.1:5000" {
		t.Fatalf("derived %s %s %s", got.ExternalAPIURL, got.ExternalSignalingURL, got.APICORSOrigin)
	}
	for _, args := range [][]string{{"--api_tls_cert_file=a.pem"}, {"--signaling_tls_key_file=k.pem"}} {
		if _, err := loadConfig(args, mapEnv(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "go together") {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if _, err := loadConfig([]string{"--signaling_auth_secret=short"}, mapEnv(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short signaling auth secret: %v", err)
	}
}
