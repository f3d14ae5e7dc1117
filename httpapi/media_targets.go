package httpapi

import (
	"context"
	"encoding/json"
	"net/netip"
	"sort"

	"github.com/sorad/sorad/media"
)

// mediaTargets are the connection, push, metadata and statistics APIs.
func (s *Server) mediaTargets() map[string]target {
	return map[string]target{
		"Sora_20151104.DisconnectChannel":                 s.disconnectChannel,
		"Sora_20151104.DisconnectClient":                  s.disconnectClient,
		"Sora_20151104.DisconnectConnection":              s.disconnectConnection,
		"Sora_20201120.DisconnectChannelByRole":           s.disconnectChannelByRole,
		"Sora_20201013.ListConnections":                   s.listConnections,
		"Sora_20201013.ListChannelConnections":            s.listChannelConnections,
		"Sora_20160711.PushChannel":                       s.pushChannel,
		"Sora_20160711.PushClient":                        s.pushClient,
		"Sora_20160711.PushConnection":                    s.pushConnection,
		"Sora_20201120.PushChannelByRole":                 s.pushChannelByRole,
		"Sora_20201124.ListSignalingNotifyMetadata":       s.listSignalingNotifyMetadata,
		"Sora_20201124.GetSignalingNotifyMetadata":        s.getSignalingNotifyMetadata,
		"Sora_20201124.PutSignalingNotifyMetadata":        s.putSignalingNotifyMetadata,
		"Sora_20201124.DeleteSignalingNotifyMetadata":     s.deleteSignalingNotifyMetadata,
		"Sora_20201124.PutSignalingNotifyMetadataItem":    s.putSignalingNotifyMetadataItem,
		"Sora_20201124.DeleteSignalingNotifyMetadataItem": s.deleteSignalingNotifyMetadataItem,
		"Sora_20170529.GetStatsConnection":                s.getStatsConnection,
		"Sora_20170529.GetStatsClient":                    s.getStatsClient,
		targetListUserAgentStats:                          s.listUserAgentStats,
		"Sora_20211215.ListChannelUserAgentStats":         s.listChannelUserAgentStats,
		"Sora_20211215.GetUserAgentStats":                 s.getUserAgentStats,
		"Sora_20170814.StartForwardingRtp":                s.startForwardingRtp,
		"Sora_20170814.StopForwardingRtp":                 s.stopForwardingRtp,
	}
}

type startForwardingRtpRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id"`
	IPAddress    string `json:"ip_address" api:"required"`
	AudioPort    *int   `json:"audio_port"`
	VideoPort    *int   `json:"video_port"`
}

type sdpAnswer struct {
	SDP string `json:"sdp"`
}

func (s *Server) startForwardingRtp(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[startForwardingRtpRequest](body)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(req.IPAddress)
	if err != nil || ip.Zone() != "" {
		return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "ip_address", Expected: "IPv4 or IPv6 address"})
	}
	target := media.RTPForwardTarget{IP: ip}
	for _, p := range []struct {
		name string
		v    *int
		dst  *int
	}{{"audio_port", req.AudioPort, &target.AudioPort}, {"video_port", req.VideoPort, &target.VideoPort}} {
		if p.v == nil {
			continue
		}
		if *p.v < 1 || *p.v > 65535 {
			return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: p.name, Expected: "port 1-65535"})
		}
		*p.dst = *p.v
	}
	if target.AudioPort == 0 && target.VideoPort == 0 {
		return nil, apiErr(400, "MISSING-FIELD", fieldReason{Field: "audio_port", Expected: "integer (audio_port, video_port or both)"})
	}
	sdp, err := s.media.StartForwardingRtp(req.ChannelID, req.ConnectionID, target)
	if err != nil {
		return nil, err
	}
	return sdpAnswer{SDP: sdp}, nil
}

type stopForwardingRtpRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id"`
}

type stopForwardingRtpAnswer struct {
	ChannelID    string `json:"channel_id"`
	ConnectionID string `json:"connection_id,omitempty"`
}

func (s *Server) stopForwardingRtp(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[stopForwardingRtpRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.StopForwardingRtp(req.ChannelID, req.ConnectionID); err != nil {
		return nil, err
	}
	return stopForwardingRtpAnswer(req), nil
}

// nodeWideTargets are the connection APIs that name no channel: they list
// this node's connections, or the cluster's with "local": false.
var nodeWideTargets = map[string]bool{
	"Sora_20201013.ListConnections": true,
	targetListUserAgentStats:        true,
}

const targetListUserAgentStats = "Sora_20211215.ListUserAgentStats"

func (s *Server) listUserAgentStats(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[listConnectionsRequest](body)
	if err != nil {
		return nil, err
	}
	out := s.media.ListUserAgentStats()
	if req.Local != nil && !*req.Local && !forwarded(ctx) {
		for _, peer := range fanOut[[]media.UserAgentStatsEntry](ctx, s, targetListUserAgentStats) {
			out = append(out, peer...)
		}
		media.SortUserAgentStats(out)
	}
	return out, nil
}

func (s *Server) listChannelUserAgentStats(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[channelOnlyRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.ListChannelUserAgentStats(req.ChannelID)
}

func (s *Server) getUserAgentStats(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[statsConnectionRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.GetUserAgentStats(req.ChannelID, req.ConnectionID)
}

// Requests. channel_id is required everywhere; the optional reason object of
// the Disconnect APIs is kept for the event webhook.

type channelRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	Reason    jsonObject `json:"reason"`
}

type clientRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	ClientID  string     `json:"client_id" api:"required"`
	Reason    jsonObject `json:"reason"`
}

type connectionRequest struct {
	ChannelID    string     `json:"channel_id" api:"required"`
	ConnectionID string     `json:"connection_id" api:"required"`
	Reason       jsonObject `json:"reason"`
}

type roleRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	Role      string     `json:"role" api:"required"`
	Reason    jsonObject `json:"reason"`
}

// Answers echo the identifying fields, as Sora's do.

type channelAnswer struct {
	ChannelID string `json:"channel_id"`
}

type clientAnswer struct {
	ChannelID string `json:"channel_id"`
	ClientID  string `json:"client_id"`
}

type connectionAnswer struct {
	ChannelID    string `json:"channel_id"`
	ConnectionID string `json:"connection_id"`
}

type roleAnswer struct {
	ChannelID string `json:"channel_id"`
	Role      string `json:"role"`
}

func parseRole(r string) (media.Role, error) {
	switch role := media.Role(r); role {
	case media.RoleSendrecv, media.RoleSendonly, media.RoleRecvonly:
		return role, nil
	}
	return "", apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "role", Expected: "sendrecv, sendonly or recvonly"})
}

func (s *Server) disconnectChannel(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[channelRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Disconnect(media.Selector{ChannelID: req.ChannelID}, json.RawMessage(req.Reason)); err != nil {
		return nil, err
	}
	return channelAnswer{ChannelID: req.ChannelID}, nil
}

func (s *Server) disconnectClient(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[clientRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Disconnect(media.Selector{ChannelID: req.ChannelID, ClientID: req.ClientID}, json.RawMessage(req.Reason)); err != nil {
		return nil, err
	}
	return clientAnswer{ChannelID: req.ChannelID, ClientID: req.ClientID}, nil
}

func (s *Server) disconnectConnection(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[connectionRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Disconnect(media.Selector{ChannelID: req.ChannelID, ConnectionID: req.ConnectionID}, json.RawMessage(req.Reason)); err != nil {
		return nil, err
	}
	return connectionAnswer{ChannelID: req.ChannelID, ConnectionID: req.ConnectionID}, nil
}

func (s *Server) disconnectChannelByRole(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[roleRequest](body)
	if err != nil {
		return nil, err
	}
	role, err := parseRole(req.Role)
	if err != nil {
		return nil, err
	}
	if err := s.media.Disconnect(media.Selector{ChannelID: req.ChannelID, Role: role}, json.RawMessage(req.Reason)); err != nil {
		return nil, err
	}
	return roleAnswer{ChannelID: req.ChannelID, Role: req.Role}, nil
}

type listConnectionsRequest struct {
	// Local lists this node's connections (the default, as in Sora);
	// false lists every connected node's.
	Local *bool `json:"local"`
}

func (s *Server) listConnections(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[listConnectionsRequest](body)
	if err != nil {
		return nil, err
	}
	out := s.media.ListConnections()
	if req.Local != nil && !*req.Local && !forwarded(ctx) {
		for _, peer := range fanOut[[]media.ConnectionInfo](ctx, s, "Sora_20201013.ListConnections") {
			out = append(out, peer...)
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].ChannelID != out[j].ChannelID {
				return out[i].ChannelID < out[j].ChannelID
			}
			return out[i].ConnectionID < out[j].ConnectionID
		})
	}
	return out, nil
}

type channelOnlyRequest struct {
	ChannelID string `json:"channel_id" api:"required"`
}

func (s *Server) listChannelConnections(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[channelOnlyRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.ListChannelConnections(req.ChannelID), nil
}

type pushChannelRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	Data      jsonObject `json:"data" api:"required"`
}

type pushClientRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	ClientID  string     `json:"client_id" api:"required"`
	Data      jsonObject `json:"data" api:"required"`
}

type pushConnectionRequest struct {
	ChannelID    string     `json:"channel_id" api:"required"`
	ConnectionID string     `json:"connection_id" api:"required"`
	Data         jsonObject `json:"data" api:"required"`
}

type pushRoleRequest struct {
	ChannelID string     `json:"channel_id" api:"required"`
	Role      string     `json:"role" api:"required"`
	Data      jsonObject `json:"data" api:"required"`
}

func (s *Server) pushChannel(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[pushChannelRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Push(media.Selector{ChannelID: req.ChannelID}, json.RawMessage(req.Data)); err != nil {
		return nil, err
	}
	return channelAnswer{ChannelID: req.ChannelID}, nil
}

func (s *Server) pushClient(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[pushClientRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Push(media.Selector{ChannelID: req.ChannelID, ClientID: req.ClientID}, json.RawMessage(req.Data)); err != nil {
		return nil, err
	}
	return clientAnswer{ChannelID: req.ChannelID, ClientID: req.ClientID}, nil
}

func (s *Server) pushConnection(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[pushConnectionRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.media.Push(media.Selector{ChannelID: req.ChannelID, ConnectionID: req.ConnectionID}, json.RawMessage(req.Data)); err != nil {
		return nil, err
	}
	return connectionAnswer{ChannelID: req.ChannelID, ConnectionID: req.ConnectionID}, nil
}

func (s *Server) pushChannelByRole(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[pushRoleRequest](body)
	if err != nil {
		return nil, err
	}
	role, err := parseRole(req.Role)
	if err != nil {
		return nil, err
	}
	if err := s.media.Push(media.Selector{ChannelID: req.ChannelID, Role: role}, json.RawMessage(req.Data)); err != nil {
		return nil, err
	}
	return roleAnswer{ChannelID: req.ChannelID, Role: req.Role}, nil
}

func (s *Server) listSignalingNotifyMetadata(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[channelOnlyRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.ListSignalingNotifyMetadata(req.ChannelID)
}

type metadataConnectionRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id" api:"required"`
	Push         bool   `json:"push"`
}

func (s *Server) getSignalingNotifyMetadata(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[metadataConnectionRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.GetSignalingNotifyMetadata(req.ChannelID, req.ConnectionID)
}

type putMetadataRequest struct {
	ChannelID    string     `json:"channel_id" api:"required"`
	ConnectionID string     `json:"connection_id" api:"required"`
	Metadata     jsonObject `json:"metadata" api:"required"`
	Push         bool       `json:"push"`
}

func (s *Server) putSignalingNotifyMetadata(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[putMetadataRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.PutSignalingNotifyMetadata(req.ChannelID, req.ConnectionID, json.RawMessage(req.Metadata), req.Push)
}

func (s *Server) deleteSignalingNotifyMetadata(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[metadataConnectionRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.DeleteSignalingNotifyMetadata(req.ChannelID, req.ConnectionID, req.Push)
}

type putMetadataItemRequest struct {
	ChannelID    string    `json:"channel_id" api:"required"`
	ConnectionID string    `json:"connection_id" api:"required"`
	Key          string    `json:"key" api:"required"`
	Value        jsonValue `json:"value" api:"required"`
	Push         bool      `json:"push"`
}

func (s *Server) putSignalingNotifyMetadataItem(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[putMetadataItemRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.PutSignalingNotifyMetadataItem(req.ChannelID, req.ConnectionID, req.Key, json.RawMessage(req.Value), req.Push)
}

type deleteMetadataItemRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id" api:"required"`
	Key          string `json:"key" api:"required"`
	Push         bool   `json:"push"`
}

func (s *Server) deleteSignalingNotifyMetadataItem(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[deleteMetadataItemRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.DeleteSignalingNotifyMetadataItem(req.ChannelID, req.ConnectionID, req.Key, req.Push)
}

type statsConnectionRequest struct {
	ChannelID    string `json:"channel_id" api:"required"`
	ConnectionID string `json:"connection_id" api:"required"`
}

func (s *Server) getStatsConnection(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[statsConnectionRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.GetStatsConnection(req.ChannelID, req.ConnectionID)
}

type statsClientRequest struct {
	ChannelID string `json:"channel_id" api:"required"`
	ClientID  string `json:"client_id" api:"required"`
}

func (s *Server) getStatsClient(_ context.Context, body []byte) (any, error) {
	req, err := decodeBody[statsClientRequest](body)
	if err != nil {
		return nil, err
	}
	return s.media.GetStatsClient(req.ChannelID, req.ClientID)
}
