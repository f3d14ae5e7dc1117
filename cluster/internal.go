package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sorad/sorad/cluster/trust"
	"github.com/sorad/sorad/fsm"
)

// The internal protocol runs over HTTP/1.1 on the cluster port (see
// protocol in mux.go, and authorize.go for who may call what). Writes are
// executed on the leader; a node that is not the leader forwards a request
// once, marked with headerForwarded, and a forwarded request that does not
// land on the leader fails with NOT-LEADER so the sender retries.
const (
	pathStatus   = "/internal/v1/status"
	pathApply    = "/internal/v1/apply"
	pathJoin     = "/internal/v1/join"
	pathPurge    = "/internal/v1/purge"
	pathTakeover = "/internal/v1/takeover"
	// pathReadIndex answers, on the leader, the index a consistent read
	// must wait for (see ReadBarrier).
	pathReadIndex = "/internal/v1/read-index"
	// pathAPI carries Sora API calls another node forwards here, from a
	// node older than protoAPI (see apiconn.go) or with a large body.
	pathAPI = "/internal/v1/api"
	// maxForwardedHTTPBody bounds the body of a call forwarded over HTTP:
	// the largest api_max_body_size.
	maxForwardedHTTPBody = 64 << 20

	headerForwarded = "Sorad-Forwarded"

	// maxInternalBody bounds every internal request and response body.
	maxInternalBody = 1 << 20
	// internalMaxHeaderBytes bounds an internal request's headers.
	internalMaxHeaderBytes = 16 << 10
)

// nodeStatus is a node's answer to a probe.
type nodeStatus struct {
	NodeName    string   `json:"node_name"`
	Incarnation string   `json:"incarnation"`
	Members     []string `json:"members"` // the Raft configuration as this node knows it
	Leader      string   `json:"leader"`
	RaftState   string   `json:"raft_state"`
	Registered  bool     `json:"registered"` // a registered member with this process
	Joining     bool     `json:"joining"`
	Purged      bool     `json:"purged"`
	Connections int      `json:"connections"`
	Draining    bool     `json:"draining"` // stopping: takes no new channel; its channels move once it stops answering
	// Contacts is the node's contact_node_name_list (see apart.go).
	Contacts []string `json:"contacts,omitempty"`
}

type joinRequest struct {
	Register fsm.RegisterNode `json:"register"`
}

type purgeRequest struct {
	Node string `json:"node"`
}

type errorBody struct {
	Type   string `json:"error_type"`
	Reason any    `json:"error_reason"`
}

func (c *Cluster) internalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.status())
	})
	// A peer pushes its status when it starts draining, rather than
	// waiting to be probed.
	mux.HandleFunc("POST "+pathStatus, c.requireMember(func(w http.ResponseWriter, r *http.Request) {
		var st nodeStatus
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInternalBody)).Decode(&st); err != nil {
			writeError(w, invalid(TypeInvalidCommand, "status: "+err.Error()))
			return
		}
		if from := caller(r); c.authenticated() && from != st.NodeName {
			writeError(w, invalid(TypeNotMember, from+" cannot report the status of "+st.NodeName))
			return
		}
		if _, known := c.probeTargets()[st.NodeName]; !known {
			writeError(w, invalid(TypeNodeNotFound, st.NodeName))
			return
		}
		c.liveness.record(st.NodeName, st, time.Now())
		writeJSON(w, http.StatusOK, struct{}{})
	}))
	mux.HandleFunc("POST "+pathApply, c.requireMember(func(w http.ResponseWriter, r *http.Request) {
		var cmd fsm.Command
		c.serveOnLeader(w, r, pathApply, func(ctx context.Context, inst *instance, body []byte) (any, error) {
			if err := checkAssignOnLeader(inst, cmd); err != nil {
				return nil, err
			}
			return c.applyAsLeader(ctx, inst, body)
		}, func(body []byte) error {
			var err error
			if cmd, err = fsm.Decode(body); err != nil || cmd == nil {
				return invalid(TypeInvalidCommand, fmt.Sprintf("cannot decode command: %v", err))
			}
			return c.checkOwnCommand(r, cmd)
		})
	}))
	mux.HandleFunc("POST "+pathReadIndex, c.requireMember(func(w http.ResponseWriter, r *http.Request) {
		c.serveOnLeader(w, r, pathReadIndex, func(ctx context.Context, inst *instance, _ []byte) (any, error) {
			return c.readIndexAsLeader(ctx, inst)
		}, func([]byte) error { return nil })
	}))
	mux.HandleFunc("POST "+pathLease, c.requireMember(c.serveLease))
	mux.HandleFunc("POST "+pathJoin, func(w http.ResponseWriter, r *http.Request) {
		var req joinRequest
		c.serveOnLeader(w, r, pathJoin, func(ctx context.Context, inst *instance, body []byte) (any, error) {
			return c.addMember(ctx, inst, req.Register)
		}, func(body []byte) error {
			if err := json.Unmarshal(body, &req); err != nil {
				return invalid(TypeInvalidCommand, "join request: "+err.Error())
			}
			return c.checkJoin(r, req.Register)
		})
	})
	mux.HandleFunc("POST "+pathTakeover, c.requireMember(func(w http.ResponseWriter, r *http.Request) {
		var req takeoverRequest
		c.serveOnLeader(w, r, pathTakeover, func(ctx context.Context, inst *instance, body []byte) (any, error) {
			return c.takeOverAsLeader(ctx, inst, req.Assign)
		}, func(body []byte) error {
			if err := json.Unmarshal(body, &req); err != nil {
				return invalid(TypeInvalidCommand, "takeover request: "+err.Error())
			}
			if req.Assign.ExpectedNode == "" {
				return invalid(TypeInvalidCommand, "takeover request names no holder")
			}
			return nil
		})
	}))
	// Nodes that do not speak protoAPI forward API calls here; so does
	// every node for a body larger than a frame carries.
	mux.HandleFunc("POST "+pathAPI, c.serveForwardedHTTP)
	mux.HandleFunc("POST "+pathPurge, c.requireMember(func(w http.ResponseWriter, r *http.Request) {
		var req purgeRequest
		c.serveOnLeader(w, r, pathPurge, func(ctx context.Context, inst *instance, body []byte) (any, error) {
			return struct{}{}, c.purgeAsLeader(ctx, inst, req.Node)
		}, func(body []byte) error {
			if err := json.Unmarshal(body, &req); err != nil {
				return invalid(TypeInvalidCommand, "purge request: "+err.Error())
			}
			return nil
		})
	}))
	return mux
}

// status answers a probe.
func (c *Cluster) status() nodeStatus {
	st := nodeStatus{NodeName: c.cfg.NodeName, Incarnation: c.incarnation, Connections: c.cfg.Connections(), Draining: c.draining.Load(), Contacts: c.cfg.ContactNodeNames}
	var inst *instance
	c.mu.RLock()
	inst, st.Joining, st.Purged = c.inst, c.joining, c.purged
	c.mu.RUnlock()
	if inst == nil {
		st.RaftState = "shutdown"
		return st
	}
	for _, s := range inst.servers() {
		st.Members = append(st.Members, string(s.ID))
	}
	_, leader := inst.raft.LeaderWithID()
	st.Leader = string(leader)
	st.RaftState = inst.raft.State().String()
	n, ok := inst.fsm.Node(c.cfg.NodeName)
	st.Registered = ok && n.Incarnation == c.incarnation && !st.Purged
	return st
}

// serveOnLeader reads the request body, checks it with check (on whichever
// node it arrives at), then runs op if this node leads, or forwards the
// request once to the leader it knows.
func (c *Cluster) serveOnLeader(w http.ResponseWriter, r *http.Request, path string, op func(context.Context, *instance, []byte) (any, error), check func([]byte) error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInternalBody))
	if err != nil {
		writeError(w, invalid(TypeInvalidCommand, "request body: "+err.Error()))
		return
	}
	if err := check(body); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.RequestTimeout)
	defer cancel()
	inst := c.current()
	if inst == nil || c.isJoining() {
		writeError(w, unavailable(TypeNodeNotReady, c.cfg.NodeName+" is joining a cluster", nil))
		return
	}
	if inst.raft.State() == raft.Leader {
		out, err := op(ctx, inst, body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	leader, _ := inst.raft.LeaderWithID()
	if r.Header.Get(headerForwarded) != "" || leader == "" {
		writeError(w, unavailable(TypeNotLeader, c.cfg.NodeName+" is not the leader and knows no leader", nil))
		return
	}
	raw, status, err := c.client.post(ctx, string(leader), path, body, true)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

// applyAsLeader commits an encoded command on this node, which must lead.
func (c *Cluster) applyAsLeader(ctx context.Context, inst *instance, encoded []byte) (fsm.Result, error) {
	cmd, err := fsm.Decode(encoded)
	if err != nil || cmd == nil {
		return fsm.Result{}, invalid(TypeInvalidCommand, fmt.Sprintf("cannot decode command: %v", err))
	}
	if reg, ok := cmd.(fsm.RegisterNode); ok && !hasServer(inst.servers(), reg.Info.Name) {
		// A node that was purged and restarts on its old data must not
		// reappear in the node list without joining again.
		return fsm.Result{}, invalid(TypeNodeNotMember, fmt.Sprintf("%s is not a member of this cluster", reg.Info.Name))
	}
	timeout := c.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := inst.raft.Apply(encoded, timeout)
	if err := f.Error(); err != nil {
		return fsm.Result{}, raftWriteError(err)
	}
	res, ok := f.Response().(fsm.Result)
	if !ok {
		return fsm.Result{}, &Error{Kind: KindUnavailable, Type: TypeInternal, Reason: "unexpected apply response"}
	}
	return res, nil
}

// raftWriteError classifies a failed Raft write; all of them are retryable.
func raftWriteError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return unavailable(TypeNotLeader, "leadership changed during the write", err)
	default:
		return unavailable(TypeNoQuorum, "the cluster could not commit the change", err)
	}
}

func hasServer(servers []raft.Server, name string) bool {
	for _, s := range servers {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = unavailable(TypeInternal, err.Error(), err)
	}
	status := http.StatusServiceUnavailable
	if e.Kind == KindInvalid {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, errorBody{Type: e.Type, Reason: e.Reason})
}

// peerClient speaks the internal protocol to other nodes.
type peerClient struct {
	http      *http.Client
	transport *http.Transport
}

func newPeerClient(d *dialer, timeout time.Duration) *peerClient {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return d.dial(ctx, addr, protoHTTP)
		},
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &peerClient{http: &http.Client{Transport: t, Timeout: timeout}, transport: t}
}

func (p *peerClient) close() { p.transport.CloseIdleConnections() }

// post sends body to address+path and returns the raw answer and its status
// for a 200 or a 4xx/5xx carrying an error body, which it also decodes into
// the returned error. Network failures come back as retryable errors.
func (p *peerClient) post(ctx context.Context, address, path string, body []byte, forwarded bool) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+address+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if forwarded {
		req.Header.Set(headerForwarded, "1")
	}
	return p.do(req, address)
}

func (p *peerClient) get(ctx context.Context, address, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	raw, _, err := p.do(req, address)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return unavailable(TypeInternal, "bad answer from "+address, err)
	}
	return nil
}

func (p *peerClient) do(req *http.Request, address string) ([]byte, int, error) {
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, 0, unavailable(TypeContactNodeUnreachable, "cannot reach "+address, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxInternalBody))
	if err != nil {
		return nil, 0, unavailable(TypeContactNodeUnreachable, "reading answer from "+address, err)
	}
	if resp.StatusCode == http.StatusOK {
		return raw, resp.StatusCode, nil
	}
	var eb errorBody
	if err := json.Unmarshal(raw, &eb); err != nil || eb.Type == "" {
		return raw, resp.StatusCode, unavailable(TypeInternal, fmt.Sprintf("%s answered %d", address, resp.StatusCode), nil)
	}
	kind := KindUnavailable
	if resp.StatusCode == http.StatusBadRequest {
		kind = KindInvalid
	}
	return raw, resp.StatusCode, &Error{Kind: kind, Type: eb.Type, Reason: eb.Reason}
}

// apply sends an encoded command to address for commit on the leader.
func (p *peerClient) apply(ctx context.Context, address string, encoded []byte) (fsm.Result, error) {
	raw, _, err := p.post(ctx, address, pathApply, encoded, false)
	if err != nil {
		return fsm.Result{}, err
	}
	var res fsm.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return fsm.Result{}, unavailable(TypeInternal, "bad apply answer from "+address, err)
	}
	return res, nil
}

// ProposeTo sends cmd to the node whose cluster port is at address, which
// commits it through its leader, as a member's own write would be. It lets
// tools and black-box tests that hold a member's credentials (ts; nil for a
// cluster without authentication) drive a cluster from outside.
func ProposeTo(ctx context.Context, address string, cmd fsm.Command, ts *trust.Store) (fsm.Result, error) {
	encoded, err := fsm.Encode(cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	p := newPeerClient(&dialer{trust: ts}, 30*time.Second)
	defer p.close()
	return p.apply(ctx, address, encoded)
}

// ServeAPI sets the handler that answers API calls other nodes forward to
// this one over the cluster port. It must answer them itself: one hop at
// most.
func (c *Cluster) ServeAPI(h APIHandler) { c.api.Store(&h) }

// ForwardAPI sends an API call to the named node over the cluster port and
// returns that node's answer unchanged. A node that cannot be reached, or
// whose connection breaks before it answers, gives a 503
// NODE-IN-CHARGE-UNREACHABLE error; so does one that does not answer within
// RequestTimeout.
func (c *Cluster) ForwardAPI(ctx context.Context, node string, call APICall) (APIAnswer, error) {
	addr := ""
	if inst := c.current(); inst != nil {
		if n, ok := inst.fsm.Node(node); ok {
			addr = n.RaftAddress
		}
	}
	if addr == "" {
		addr = c.addressOf(node)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	ans, err := c.forwardTo(ctx, addr, call)
	if err != nil {
		return APIAnswer{}, unavailable(TypeNodeUnreachable, map[string]string{"node_in_charge": node}, err)
	}
	return ans, nil
}

// forwardTo sends call to the cluster port at addr: framed (apiconn.go), or
// over HTTP to a peer that does not speak protoAPI and for a body larger
// than a frame carries.
func (c *Cluster) forwardTo(ctx context.Context, addr string, call APICall) (APIAnswer, error) {
	if checkCall(call) == nil {
		ac, legacy, err := c.apiClient.conn(ctx, addr)
		if ac != nil {
			return ac.call(ctx, call)
		}
		if !legacy {
			return APIAnswer{}, err
		}
	}
	return c.forwardHTTP(ctx, addr, call)
}

// forwardHTTP forwards a call over HTTP (pathAPI), as nodes did before
// protoAPI, to a node that does not speak it.
func (c *Cluster) forwardHTTP(ctx context.Context, addr string, call APICall) (APIAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+pathAPI, bytes.NewReader(call.Body))
	if err != nil {
		return APIAnswer{}, fmt.Errorf("build forwarded request: %w", err)
	}
	req.Header.Set("X-Sora-Target", call.Target)
	if call.ContentType != "" {
		req.Header.Set("Content-Type", call.ContentType)
	}
	resp, err := c.client.http.Do(req)
	if err != nil {
		return APIAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxInternalBody))
	if err != nil {
		return APIAnswer{}, err
	}
	return APIAnswer{
		Status:          resp.StatusCode,
		ContentType:     resp.Header.Get("Content-Type"),
		WWWAuthenticate: resp.Header.Get("WWW-Authenticate"),
		Body:            b,
	}, nil
}

// serveForwardedHTTP answers a call forwarded over HTTP by a node that
// does not speak protoAPI, or whose body is larger than a frame carries.
func (c *Cluster) serveForwardedHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardedHTTPBody+1))
	if err != nil || len(body) > maxForwardedHTTPBody {
		writeError(w, invalid(TypeInvalidCommand, "forwarded call: the body cannot be read or is too large"))
		return
	}
	ans := c.answerForwarded(r.Context(), caller(r), APICall{
		Target:      r.Header.Get("X-Sora-Target"),
		ContentType: r.Header.Get("Content-Type"),
		Body:        body,
	})
	if ans.ContentType != "" {
		w.Header().Set("Content-Type", ans.ContentType)
	}
	if ans.WWWAuthenticate != "" {
		w.Header().Set("WWW-Authenticate", ans.WWWAuthenticate)
	}
	w.WriteHeader(ans.Status)
	_, _ = w.Write(ans.Body)
}
