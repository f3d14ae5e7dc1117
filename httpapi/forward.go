package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
// one. A body that does not decode is answered locally (with its 400). The
// body is read as decodeBody reads it on the node in charge (the key
// matched exactly, the last of duplicates winning), in one pass over it
// that allocates nothing unless the value holds an escape.
func channelIDOf(body []byte) (string, bool) {
	if !json.Valid(body) {
		return "", false
	}
	raw, ok := topLevelString(body, "channel_id")
	if !ok {
		return "", false
	}
	var id string
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		id = string(raw[1 : len(raw)-1])
	} else if json.Unmarshal(raw, &id) != nil {
		return "", false
	}
	return id, id != ""
}

// topLevelString returns the raw value (quotes included) of the last
// member named key of the JSON object in body, which must be valid JSON,
// if that value is a string. A body that is not an object has no members.
func topLevelString(body []byte, key string) ([]byte, bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false
	}
	i++
	var found []byte
	for {
		i = skipSpace(body, i)
		if i >= len(body) || body[i] == '}' {
			return found, found != nil
		}
		if body[i] == ',' {
			i++
			continue
		}
		end := skipValue(body, i)
		name := body[i:end]
		matches := string(name[1:len(name)-1]) == key
		if !matches && bytes.IndexByte(name, '\\') >= 0 {
			var n string
			matches = json.Unmarshal(name, &n) == nil && n == key
		}
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // past ':'
		end = skipValue(body, i)
		if matches {
			found = nil // a value that is not a string is no channel_id
			if body[i] == '"' {
				found = body[i:end]
			}
		}
		i = end
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && strings.IndexByte(jsonWhitespace, b[i]) >= 0 {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value at b[i:], which
// must be valid.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		j := i + 1
		for b[j] != '"' {
			if b[j] == '\\' {
				j++
			}
			j++
		}
		return j + 1
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch b[j] {
			case '"':
				j = skipValue(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
	default: // a number, true, false or null
		j := i
		for j < len(b) && strings.IndexByte(",}] \t\r\n", b[j]) < 0 {
			j++
		}
		return j
	}
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
