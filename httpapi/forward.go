package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
)

// Routing of API calls in a cluster. A call that names a channel_id is
// answered by the node in charge of that channel: any other node forwards it
// there over the cluster port and returns the answer unchanged. Listings of
// the whole cluster ask every connected node in parallel and merge. A call
// that arrived forwarded is always answered where it lands: one hop at
// most.

type forwardedKey struct{}

// ForwardedHandler answers API calls other nodes forward here (mounted on
// the cluster port with cluster.ServeAPI). It is ServeHTTP marked so that
// nothing is forwarded again, and so that no bearer token is asked for:
// the cluster port admits only members, and the operator's token never
// travels between nodes.
func (s *Server) ForwardedHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardedKey{}, true)))
	})
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
	ans, err := s.cluster.ForwardAPI(c.Request().Context(), owner, c.Request().Header, body)
	if err != nil {
		status, err := s.writeError(c, err)
		return status, true, err
	}
	s.metrics.forwarded.WithLabelValues(name).Inc()
	h := c.Response().Header()
	for _, k := range []string{"Content-Type", "WWW-Authenticate"} {
		if v := ans.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	c.Response().WriteHeader(ans.Status)
	_, err = c.Response().Write(ans.Body)
	return ans.Status, true, err
}

// fanOut asks every connected peer for the same listing with
// {"local": true}, in parallel, and decodes each answer into a T. Peers that
// do not answer in time, or answer an error, are left out of the merge.
func fanOut[T any](ctx context.Context, s *Server, target string) []T {
	peers := s.cluster.ConnectedPeers()
	out := make([]T, len(peers))
	ok := make([]bool, len(peers))
	header := http.Header{}
	header.Set("X-Sora-Target", target)
	header.Set("Content-Type", "application/json")
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := s.cluster.ForwardAPI(ctx, peer, header, []byte(`{"local":true}`))
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
