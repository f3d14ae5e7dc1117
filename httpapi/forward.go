package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sorad/sorad/cluster"
)

// Routing of API calls in a cluster. A call that names a channel_id is
// answered by the node in charge of that channel: any other node forwards it
// there over the cluster port and returns the answer unchanged. Listings of
// the whole cluster ask every connected node in parallel and merge. A call
// that arrived forwarded is always answered where it lands: one hop at
// most.

type forwardedKey struct{}

// AnswerForwarded answers an API call another node forwarded here (given to
// cluster.ServeAPI), with the dispatch of a call made here. The call is
// marked so that nothing is forwarded again, and no bearer token is asked
// for: the cluster port admits only members, and the operator's token never
// travels between nodes.
func (s *Server) AnswerForwarded(ctx context.Context, call cluster.APICall) cluster.APIAnswer {
	start := time.Now()
	status, b := s.answerForwarded(context.WithValue(ctx, forwardedKey{}, true), call)
	s.observe(call.Target, status, start)
	return cluster.APIAnswer{Status: status, ContentType: "application/json", Body: b}
}

func (s *Server) answerForwarded(ctx context.Context, call cluster.APICall) (int, []byte) {
	op, err := s.lookup(call.Target)
	if err != nil {
		return s.errorAnswer(call.Target, err)
	}
	if int64(len(call.Body)) > s.cfg.MaxBodySize {
		return s.errorAnswer(call.Target, apiErr(http.StatusBadRequest, "REQUEST-BODY-TOO-LARGE", map[string]int64{"max_body_size": s.cfg.MaxBodySize}))
	}
	return s.run(ctx, call.Target, op, call.Body)
}

func forwarded(ctx context.Context) bool {
	v, _ := ctx.Value(forwardedKey{}).(bool)
	return v
}

// channelIDOf reads the channel_id of a request body, if it has a string
// one. A body that does not decode is answered locally (with its 400).
func channelIDOf(body []byte) (string, bool) {
	var v struct {
		ChannelID *string `json:"channel_id"`
	}
	if json.Unmarshal(body, &v) != nil || v.ChannelID == nil || *v.ChannelID == "" {
		return "", false
	}
	return *v.ChannelID, true
}

// routeToOwner forwards a channel-scoped call to the node in charge of its
// channel when that is another live node. It reports whether it answered.
func (s *Server) routeToOwner(c echo.Context, name string, body []byte) (int, bool, error) {
	if !s.channelScoped[name] || forwarded(c.Request().Context()) {
		return 0, false, nil
	}
	channelID, ok := channelIDOf(body)
	if !ok {
		return 0, false, nil
	}
	owner, ok := s.cluster.ChannelOwner(channelID)
	if !ok {
		return 0, false, nil
	}
	r := c.Request()
	ans, err := s.cluster.ForwardAPI(r.Context(), owner, cluster.APICall{Target: name, ContentType: r.Header.Get("Content-Type"), Body: body})
	if err != nil {
		status, err := s.writeError(c, err)
		return status, true, err
	}
	s.metrics.forwarded.WithLabelValues(name).Inc()
	if ans.WWWAuthenticate != "" {
		c.Response().Header().Set("WWW-Authenticate", ans.WWWAuthenticate)
	}
	return ans.Status, true, s.writeAnswer(c, ans.Status, ans.ContentType, ans.Body)
}

// fanOut asks every connected peer for the same listing with
// {"local": true}, in parallel, and decodes each answer into a T. Peers that
// do not answer in time, or answer an error, are left out of the merge.
func fanOut[T any](ctx context.Context, s *Server, target string) []T {
	peers := s.cluster.ConnectedPeers()
	out := make([]T, len(peers))
	ok := make([]bool, len(peers))
	call := cluster.APICall{Target: target, ContentType: "application/json", Body: []byte(`{"local":true}`)}
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := s.cluster.ForwardAPI(ctx, peer, call)
			if err != nil || ans.Status != http.StatusOK {
				s.cfg.Logger.Warn("cluster listing: a node did not answer", "target", target, "node", peer, "error", err, "status", ans.Status)
				return
			}
			ok[i] = json.Unmarshal(ans.Body, &out[i]) == nil
		}()
	}
	wg.Wait()
	var merged []T
	for i := range out {
		if ok[i] {
			merged = append(merged, out[i])
		}
	}
	return merged
}
