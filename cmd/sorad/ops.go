package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The operator subcommands: `sorad status`, `sorad nodes`, `sorad
// channels` call the Sora API of a running node; `sorad version` prints
// this binary's version.

const opsUsage = `Usage:
  sorad status   [--api-url URL] [--json]   this node: Raft state, leader, connections; the cluster's nodes in short
  sorad nodes    [--api-url URL] [--json] [--all]
                                            the cluster's nodes (--all: include_all_known_nodes)
  sorad channels [--api-url URL] [--json]   the channels and their node in charge
  sorad version                             this binary's version
The API URL is --api-url, else SORAD_API_URL, else http://127.0.0.1:3000/.
The bearer token, when the node has api_bearer_token set, is read from
SORAD_API_BEARER_TOKEN (never from the command line, where other users of
the machine could read it). --timeout bounds each call (default 10s).
`

// opsCommands are the subcommands runOps serves.
var opsCommands = []string{"status", "nodes", "channels", "version"}

// opsError is an API call that got an answer other than 200.
type opsError struct {
	target string
	status int
	body   []byte
}

func (e *opsError) Error() string {
	var apiErr struct {
		ErrorType   string          `json:"error_type"`
		ErrorReason json.RawMessage `json:"error_reason"`
	}
	if json.Unmarshal(e.body, &apiErr) == nil && apiErr.ErrorType != "" {
		reason := strings.Trim(string(apiErr.ErrorReason), `"`)
		return fmt.Sprintf("%s: %d %s: %s", e.target, e.status, apiErr.ErrorType, reason)
	}
	return fmt.Sprintf("%s: %d %s", e.target, e.status, clip(string(e.body), 200))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// apiClient calls one node's Sora API.
type apiClient struct {
	url   string
	token string
	http  *http.Client
}

func (c *apiClient) call(ctx context.Context, target string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", target, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	req.Header.Set("x-sora-target", target)
	req.Header.Set("content-type", "application/json")
	if c.token != "" {
		req.Header.Set("authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &opsError{target: target, status: resp.StatusCode, body: out}
	}
	return out, nil
}

// runOps runs `sorad <cmd> args...` for one of opsCommands.
func runOps(ctx context.Context, cmd string, args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	if cmd == "version" {
		if len(args) > 0 {
			fmt.Fprint(stdout, opsUsage)
			return errHelp
		}
		fmt.Fprintf(stdout, "sorad %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	fs := flag.NewFlagSet("sorad "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defaultURL := "http://127.0.0.1:3000/"
	if v, ok := getenv("SORAD_API_URL"); ok && v != "" {
		defaultURL = v
	}
	apiURL := fs.String("api-url", defaultURL, "")
	asJSON := fs.Bool("json", false, "")
	all := fs.Bool("all", false, "")
	timeout := fs.Duration("timeout", 10*time.Second, "")
	if err := fs.Parse(args); err != nil {
		fmt.Fprint(stdout, opsUsage)
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprint(stdout, opsUsage)
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *all && cmd != "nodes" {
		return errors.New("--all is for sorad nodes")
	}
	token, _ := getenv("SORAD_API_BEARER_TOKEN")
	c := &apiClient{url: *apiURL, token: token, http: &http.Client{Timeout: *timeout}}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch cmd {
	case "nodes":
		return showNodes(ctx, c, *all, *asJSON, stdout)
	case "channels":
		return showChannels(ctx, c, *asJSON, stdout)
	default:
		return showStatus(ctx, c, *asJSON, stdout)
	}
}

// opsNode is what the subcommands read of a ListClusterNodes entry.
type opsNode struct {
	NodeName       string `json:"node_name"`
	Connected      bool   `json:"connected"`
	Mode           string `json:"mode"`
	Epoch          uint64 `json:"epoch"`
	Version        string `json:"version"`
	ExternalAPIURL string `json:"external_api_url"`
	OtherCluster   bool   `json:"other_cluster"`
	OperatorAction string `json:"operator_action"`
}

func showNodes(ctx context.Context, c *apiClient, all, asJSON bool, w io.Writer) error {
	b, err := c.call(ctx, "Sora_20211215.ListClusterNodes", map[string]any{"include_all_known_nodes": all})
	if err != nil {
		return err
	}
	if asJSON {
		return writeIndented(w, b)
	}
	var nodes []opsNode
	if err := json.Unmarshal(b, &nodes); err != nil {
		return fmt.Errorf("ListClusterNodes: decode answer: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCONNECTED\tMODE\tEPOCH\tVERSION\tAPI")
	for _, n := range nodes {
		mode, epoch := n.Mode, strconv.FormatUint(n.Epoch, 10)
		if n.Mode == "" { // a known node that is not a member
			mode, epoch = "-", "-"
		}
		if n.OtherCluster {
			mode = "other cluster"
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\n", n.NodeName, n.Connected, mode, epoch, dash(n.Version), dash(n.ExternalAPIURL))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range nodes {
		if n.OperatorAction != "" {
			fmt.Fprintf(w, "%s: %s\n", n.NodeName, n.OperatorAction)
		}
	}
	return nil
}

func showChannels(ctx context.Context, c *apiClient, asJSON bool, w io.Writer) error {
	b, err := c.call(ctx, "Sora_20211215.ListClusterChannels", map[string]any{})
	if err != nil {
		return err
	}
	if asJSON {
		return writeIndented(w, b)
	}
	var channels []struct {
		ChannelID         string `json:"channel_id"`
		NodeInCharge      string `json:"node_in_charge"`
		Epoch             uint64 `json:"node_in_charge_epoch"`
		Stale             bool   `json:"node_in_charge_epoch_stale"`
		InChargeConnected bool   `json:"node_in_charge_connected"`
	}
	if err := json.Unmarshal(b, &channels); err != nil {
		return fmt.Errorf("ListClusterChannels: decode answer: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tNODE IN CHARGE\tEPOCH\tSTALE\tNODE CONNECTED")
	for _, ch := range channels {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%t\t%t\n", ch.ChannelID, ch.NodeInCharge, ch.Epoch, ch.Stale, ch.InChargeConnected)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d channels\n", len(channels))
	return nil
}

func showStatus(ctx context.Context, c *apiClient, asJSON bool, w io.Writer) error {
	report, err := c.call(ctx, "Sora_20171010.GetStatsReport", map[string]any{})
	if err != nil {
		return err
	}
	nodesJSON, err := c.call(ctx, "Sora_20211215.ListClusterNodes", map[string]any{})
	if err != nil {
		return err
	}
	if asJSON {
		return writeIndented(w, []byte(fmt.Sprintf(`{"stats_report":%s,"cluster_nodes":%s}`, report, nodesJSON)))
	}
	var st struct {
		Version  string `json:"version"`
		Ongoing  int64  `json:"total_ongoing_connections"`
		Created  int64  `json:"total_connection_created"`
		Failed   int64  `json:"total_failed_connections"`
		Sessions int64  `json:"total_session_created"`
		Cluster  struct {
			NodeName     string `json:"node_name"`
			RaftState    string `json:"raft_state"`
			RaftTerm     uint64 `json:"raft_term"`
			CommitIndex  uint64 `json:"raft_commit_index"`
			AppliedIndex uint64 `json:"raft_applied_index"`
			RaftLeader   string `json:"raft_leader"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal(report, &st); err != nil {
		return fmt.Errorf("GetStatsReport: decode answer: %w", err)
	}
	var nodes []opsNode
	if err := json.Unmarshal(nodesJSON, &nodes); err != nil {
		return fmt.Errorf("ListClusterNodes: decode answer: %w", err)
	}
	mode, connected := "-", 0
	for _, n := range nodes {
		if n.NodeName == st.Cluster.NodeName {
			mode = n.Mode
		}
		if n.Connected {
			connected++
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range [][2]string{
		{"node", st.Cluster.NodeName},
		{"version", st.Version},
		{"mode", mode},
		{"raft", fmt.Sprintf("%s, term %d, commit %d, applied %d", st.Cluster.RaftState, st.Cluster.RaftTerm, st.Cluster.CommitIndex, st.Cluster.AppliedIndex)},
		{"leader", dash(st.Cluster.RaftLeader)},
		{"cluster", fmt.Sprintf("%d nodes, %d connected", len(nodes), connected)},
		{"connections", fmt.Sprintf("%d now, %d created, %d failed", st.Ongoing, st.Created, st.Failed)},
		{"sessions", fmt.Sprintf("%d created", st.Sessions)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func writeIndented(w io.Writer, b []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent answer: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
