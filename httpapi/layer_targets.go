package httpapi

import (
	"context"
	"fmt"

	"github.com/sorad/sorad/media"
)

// layerTargets are the simulcast, spotlight, RTP stream pause and upstream
// bit rate APIs: each is about one channel, answered by its node in charge.
// Answers echo the request's fields, as Sora's do (in Sora's alphabetical
// key order).
func (s *Server) layerTargets() map[string]target {
	return map[string]target{
		"Sora_20201005.RequestRtpStream":           s.requestRtpStream,
		"Sora_20201005.ResetRtpStream":             s.resetRtpStream,
		"Sora_20200401.PauseRtpStream":             s.pauseRtpStream,
		"Sora_20200401.ResumeRtpStream":            s.resumeRtpStream,
		"Sora_20200401.ListPauseRtpStreams":        s.listPauseRtpStreams,
		"Sora_20200807.ChangeSpotlightNumber":      s.changeSpotlightNumber,
		"Sora_20200807.FocusSpotlight":             s.focusSpotlight,
		"Sora_20200807.FocusSpotlightFixed":        s.focusSpotlightFixed,
		"Sora_20200807.UnfocusSpotlight":           s.unfocusSpotlight,
		"Sora_20211215.RequestSpotlightRid":        s.requestSpotlightRid,
		"Sora_20211215.ResetSpotlightRid":          s.resetSpotlightRid,
		"Sora_20211215.BatchRequestSpotlightRid":   s.batchRequestSpotlightRid,
		"Sora_20190327.ChangeUpstreamVideoBitRate": s.changeUpstreamVideoBitRate,
	}
}

// parseRID checks a rid field: r0, r1 or r2, and none when noneOK.
func parseRID(field, v string, noneOK bool) (media.RID, error) {
	switch r := media.RID(v); r {
	case "r0", "r1", "r2":
		return r, nil
	case "none":
		if noneOK {
			return r, nil
		}
	}
	expected := "r0, r1 or r2"
	if noneOK {
		expected = "none, r0, r1 or r2"
	}
	return "", apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: field, Expected: expected})
}

type requestRtpStreamRequest struct {
	ChannelID        string `json:"channel_id" api:"required"`
	RecvConnectionID string `json:"recv_connection_id" api:"required"`
	SendConnectionID string `json:"send_connection_id"`
	RID              string `json:"rid" api:"required"`
}

type requestRtpStreamAnswer struct {
	ChannelID        string `json:"channel_id"`
	RecvConnectionID string `json:"recv_connection_id"`
	RID              string `json:"rid"`
	SendConnectionID string `json:"send_connection_id,omitempty"`
}

func (s *Server) requestRtpStream(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[requestRtpStreamRequest](body)
	if err != nil {
		return nil, err
	}
	rid, err := parseRID("rid", req.RID, false)
	if err != nil {
		return nil, err
	}
	if err := s.media.RequestRtpStream(req.ChannelID, req.RecvConnectionID, req.SendConnectionID, rid); err != nil {
		return nil, err
	}
	return requestRtpStreamAnswer{ChannelID: req.ChannelID, RecvConnectionID: req.RecvConnectionID, RID: req.RID, SendConnectionID: req.SendConnectionID}, nil
}

// streamPairRequest names what one connection receives from another (or,
// without send_connection_id where that is optional, from every sender).
type streamPairRequest struct {
	ChannelID        string `json:"channel_id" api:"required"`
	RecvConnectionID string `json:"recv_connection_id" api:"required"`
	SendConnectionID string `json:"send_connection_id"`
}

type streamPairAnswer struct {
	ChannelID        string `json:"channel_id"`
	RecvConnectionID string `json:"recv_connection_id"`
	SendConnectionID string `json:"send_connection_id,omitempty"`
}

type pausePairRequest struct {
	ChannelID        string `json:"channel_id" api:"required"`
	RecvConnectionID string `json:"recv_connection_id" api:"required"`
	SendConnectionID string `json:"send_connection_id" api:"required"`
}

// pair decodes a request about a pair and calls do with it.
func pair[T streamPairRequest | pausePairRequest](body []byte, do func(channelID, recv, send string) error) (any, error) {
	req, err := decodeBody[T](body)
	if err != nil {
		return nil, err
	}
	p := streamPairRequest(req)
	if err := do(p.ChannelID, p.RecvConnectionID, p.SendConnectionID); err != nil {
		return nil, err
	}
	return streamPairAnswer(p), nil
}

func (s *Server) resetRtpStream(_ context.Context, body []byte) (any, error) {
	return pair[streamPairRequest](body, s.media.ResetRtpStream)
}

func (s *Server) pauseRtpStream(_ context.Context, body []byte) (any, error) {
	return pair[pausePairRequest](body, s.media.PauseRtpStream)
}

func (s *Server) resumeRtpStream(_ context.Context, body []byte) (any, error) {
	return pair[pausePairRequest](body, s.media.ResumeRtpStream)
}

func (s *Server) listPauseRtpStreams(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[channelOnlyRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.ListPauseRtpStreams(req.ChannelID)
}

type spotlightNumberRequest struct {
	ChannelID       string `json:"channel_id" api:"required"`
	SpotlightNumber int    `json:"spotlight_number" api:"required"`
}

type spotlightNumberAnswer struct {
	ChannelID       string `json:"channel_id"`
	SpotlightNumber int    `json:"spotlight_number"`
}

func (s *Server) changeSpotlightNumber(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[spotlightNumberRequest](body)
	if err != nil {
		return nil, err
	}
	if req.SpotlightNumber < 1 || req.SpotlightNumber > 8 {
		return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "spotlight_number", Expected: "integer 1 to 8"})
	}
	if err := s.media.ChangeSpotlightNumber(req.ChannelID, req.SpotlightNumber); err != nil {
		return nil, err
	}
	return spotlightNumberAnswer(req), nil
}

type focusRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id" api:"required"`
}

func (s *Server) focus(body []byte, do func(channelID, connectionID string) error) (any, error) {
	req, err := decodeBody[focusRequest](body)
	if err != nil {
		return nil, err
	}
	if err := do(req.ChannelID, req.ConnectionID); err != nil {
		return nil, err
	}
	return connectionAnswer(req), nil
}

func (s *Server) focusSpotlight(_ context.Context, body []byte) (any, error) {
	return s.focus(body, func(ch, conn string) error { return s.media.FocusSpotlight(ch, conn, false) })
}

func (s *Server) focusSpotlightFixed(_ context.Context, body []byte) (any, error) {
	return s.focus(body, func(ch, conn string) error { return s.media.FocusSpotlight(ch, conn, true) })
}

func (s *Server) unfocusSpotlight(_ context.Context, body []byte) (any, error) {
	return s.focus(body, s.media.UnfocusSpotlight)
}

// spotlightRIDItem is one spotlight layer request.
type spotlightRIDItem struct {
	RecvConnectionID    string `json:"recv_connection_id"`
	SendConnectionID    string `json:"send_connection_id,omitempty"`
	SpotlightFocusRID   string `json:"spotlight_focus_rid"`
	SpotlightUnfocusRID string `json:"spotlight_unfocus_rid"`
}

// check validates an item; prefix names it in the error ("" or
// "item_list[3].").
func (it spotlightRIDItem) check(prefix string) (media.SpotlightRIDRequest, error) {
	if it.RecvConnectionID == "" {
		return media.SpotlightRIDRequest{}, apiErr(400, "MISSING-FIELD", fieldReason{Field: prefix + "recv_connection_id", Expected: "string"})
	}
	focus, err := parseRID(prefix+"spotlight_focus_rid", it.SpotlightFocusRID, true)
	if err != nil {
		return media.SpotlightRIDRequest{}, err
	}
	unfocus, err := parseRID(prefix+"spotlight_unfocus_rid", it.SpotlightUnfocusRID, true)
	if err != nil {
		return media.SpotlightRIDRequest{}, err
	}
	return media.SpotlightRIDRequest{Recv: it.RecvConnectionID, Send: it.SendConnectionID, FocusRID: focus, UnfocusRID: unfocus}, nil
}

type requestSpotlightRIDRequest struct {
	ChannelID           string `json:"channel_id" api:"required"`
	RecvConnectionID    string `json:"recv_connection_id" api:"required"`
	SendConnectionID    string `json:"send_connection_id"`
	SpotlightFocusRID   string `json:"spotlight_focus_rid" api:"required"`
	SpotlightUnfocusRID string `json:"spotlight_unfocus_rid" api:"required"`
}

type requestSpotlightRIDAnswer struct {
	ChannelID           string `json:"channel_id"`
	RecvConnectionID    string `json:"recv_connection_id"`
	SendConnectionID    string `json:"send_connection_id,omitempty"`
	SpotlightFocusRID   string `json:"spotlight_focus_rid"`
	SpotlightUnfocusRID string `json:"spotlight_unfocus_rid"`
}

func (s *Server) requestSpotlightRid(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[requestSpotlightRIDRequest](body)
	if err != nil {
		return nil, err
	}
	r, err := spotlightRIDItem{req.RecvConnectionID, req.SendConnectionID, req.SpotlightFocusRID, req.SpotlightUnfocusRID}.check("")
	if err != nil {
		return nil, err
	}
	if err := s.media.BatchRequestSpotlightRID(req.ChannelID, []media.SpotlightRIDRequest{r}); err != nil {
		return nil, err
	}
	return requestSpotlightRIDAnswer(req), nil
}

func (s *Server) resetSpotlightRid(_ context.Context, body []byte) (any, error) {
	return pair[streamPairRequest](body, s.media.ResetSpotlightRID)
}

// maxBatchItems bounds BatchRequestSpotlightRid's item_list (a channel has
// at most license_max_connections squared pairs; this is plenty).
const maxBatchItems = 1000

type batchSpotlightRIDRequest struct {
	ChannelID string             `json:"channel_id" api:"required"`
	ItemList  []spotlightRIDItem `json:"item_list" api:"required"`
}

type batchSpotlightRIDAnswer struct {
	ChannelID string             `json:"channel_id"`
	ItemList  []spotlightRIDItem `json:"item_list"`
}

func (s *Server) batchRequestSpotlightRid(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[batchSpotlightRIDRequest](body)
	if err != nil {
		return nil, err
	}
	if len(req.ItemList) == 0 || len(req.ItemList) > maxBatchItems {
		return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "item_list", Expected: fmt.Sprintf("1 to %d items", maxBatchItems)})
	}
	rs := make([]media.SpotlightRIDRequest, len(req.ItemList))
	for i, it := range req.ItemList {
		if rs[i], err = it.check(fmt.Sprintf("item_list[%d].", i)); err != nil {
			return nil, err
		}
	}
	if err := s.media.BatchRequestSpotlightRID(req.ChannelID, rs); err != nil {
		return nil, err
	}
	return batchSpotlightRIDAnswer(req), nil
}

// Sora accepts 1 to 30000 kbps (seed 000).
const maxUpstreamBitRate = 30000

type upstreamBitRateRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id" api:"required"`
	BitRate      int    `json:"bit_rate" api:"required"`
}

type upstreamBitRateAnswer struct {
	BitRate      int    `json:"bit_rate"`
	ChannelID    string `json:"channel_id"`
	ConnectionID string `json:"connection_id"`
}

func (s *Server) changeUpstreamVideoBitRate(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[upstreamBitRateRequest](body)
	if err != nil {
		return nil, err
	}
	if req.BitRate < 1 || req.BitRate > maxUpstreamBitRate {
		return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "bit_rate", Expected: fmt.Sprintf("integer 1 to %d", maxUpstreamBitRate)})
	}
	if err := s.media.ChangeUpstreamVideoBitRate(req.ChannelID, req.ConnectionID, req.BitRate); err != nil {
		return nil, err
	}
	return upstreamBitRateAnswer{BitRate: req.BitRate, ChannelID: req.ChannelID, ConnectionID: req.ConnectionID}, nil
}
