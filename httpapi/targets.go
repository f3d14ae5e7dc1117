package httpapi

import (
	"context"
	"sort"
	"time"

	"github.com/sorad/sorad/fsm"
	"github.com/sorad/sorad/media"
)

// targetTable maps every x-sora-target this server answers to its handler.
// Names carry their version; a name known under several versions lists each.
func (s *Server) targetTable() map[string]target {
	return map[string]target{
		"Sora_20211215.JoinCluster":         s.joinCluster,
		"Sora_20211215.ListClusterNodes":    s.listClusterNodes,
		"Sora_20211215.ListClusterChannels": s.listClusterChannels,
		"Sora_20211215.PurgeClusterNode":    s.purgeClusterNode,
		"Sora_20220629.PurgeClusterNode":    s.purgeClusterNode,
		"Sora_20211215.ChangeMode":          s.changeMode,
		"Sora_20211215.GetMode":             s.getMode,
		"Sora_20201013.ListChannels":        s.listChannels,
		"Sora_20171010.GetStatsReport":      s.getStatsReport,
	}
}

// withTimeout bounds one cluster operation.
func (s *Server) withTimeout(ctx context.Context, factor int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Duration(factor)*s.cfg.RequestTimeout)
}

type joinClusterRequest struct {
	ContactNodeName string `json:"contact_node_name" api:"required"`
}

type joinClusterResponse struct {
	NodeNameList []string `json:"node_name_list"`
}

func (s *Server) joinCluster(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[joinClusterRequest](body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.withTimeout(ctx, 4)
	defer cancel()
	names, err := s.cluster.Join(ctx, req.ContactNodeName)
	if err != nil {
		return nil, err
	}
	return joinClusterResponse{NodeNameList: names}, nil
}

type listClusterNodesRequest struct {
	IncludeAllKnownNodes bool `json:"include_all_known_nodes"`
	Consistent           bool `json:"consistent"` // see consistentRead
}

// consistentRead is sorad's option of the cluster reads (ListClusterNodes,
// ListClusterChannels, GetMode): with "consistent": true the answer
// reflects every write the cluster acknowledged before the call, at the
// cost of a Raft round trip; without it the node answers from its own copy
// of the state, which may lag (see README, "How the cluster behaves").
type consistentRead struct {
	Consistent bool `json:"consistent"`
}

// barrier waits for the read to be consistent, if asked.
func (s *Server) barrier(ctx context.Context, r consistentRead) error {
	if !r.Consistent {
		return nil
	}
	return s.cluster.ReadBarrier(ctx)
}

// clusterNode is a connected node in ListClusterNodes, in the seed's key order.
type clusterNode struct {
	ExternalAPIURL        string `json:"external_api_url"`
	Epoch                 uint64 `json:"epoch"`
	LicenseMaxConnections int    `json:"license_max_connections"`
	LicenseMaxNodes       int    `json:"license_max_nodes"`
	LicenseSerialCode     string `json:"license_serial_code"`
	LicenseType           string `json:"license_type"`
	MemberSince           string `json:"member_since"`
	NodeName              string `json:"node_name"`
	Mode                  string `json:"mode"`
	Connected             bool   `json:"connected"`
	ExternalSignalingURL  string `json:"external_signaling_url"`
	Version               string `json:"version"`
}

// knownNode is a node listed only because include_all_known_nodes asked for
// nodes that are not connected: name and connected, as the seed says. A
// node of another cluster that started apart from this one (sorad's
// addition) also says so, with that cluster's members, what happens next
// (cluster.Merge*), and what the operator must do when that is waiting.
type knownNode struct {
	NodeName          string   `json:"node_name"`
	Connected         bool     `json:"connected"`
	OtherCluster      bool     `json:"other_cluster,omitempty"`
	OtherClusterNodes []string `json:"other_cluster_node_name_list,omitempty"`
	Merge             string   `json:"merge,omitempty"`
	OperatorAction    string   `json:"operator_action,omitempty"`
}

// memberSinceLayout is RFC 3339 in UTC with microseconds, as in the seeds.
const memberSinceLayout = "2006-01-02T15:04:05.000000Z"

func (s *Server) listClusterNodes(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[listClusterNodesRequest](body)
	if err != nil {
		return nil, err
	}
	if err := s.barrier(ctx, consistentRead{Consistent: req.Consistent}); err != nil {
		return nil, err
	}
	out := []any{}
	for _, n := range s.cluster.Nodes() {
		switch {
		case n.Connected && n.Record != nil:
			out = append(out, toClusterNode(*n.Record))
		case req.IncludeAllKnownNodes:
			out = append(out, knownNode{NodeName: n.Name, Connected: n.Connected})
		}
	}
	if req.IncludeAllKnownNodes {
		for _, n := range s.cluster.ApartNodes() {
			out = append(out, knownNode{NodeName: n.Name, OtherCluster: true, OtherClusterNodes: n.Members, Merge: n.Merge, OperatorAction: n.Instruction})
		}
	}
	return out, nil
}

func toClusterNode(n fsm.Node) clusterNode {
	memberSince := ""
	if n.MemberSinceMicros != 0 {
		memberSince = n.MemberSince().Format(memberSinceLayout)
	}
	return clusterNode{
		ExternalAPIURL:        n.ExternalAPIURL,
		Epoch:                 n.Epoch,
		LicenseMaxConnections: n.License.MaxConnections,
		LicenseMaxNodes:       n.License.MaxNodes,
		LicenseSerialCode:     n.License.SerialCode,
		LicenseType:           n.License.Type,
		MemberSince:           memberSince,
		NodeName:              n.Name,
		Mode:                  string(n.Mode),
		Connected:             true,
		ExternalSignalingURL:  n.ExternalSignalingURL,
		Version:               n.Version,
	}
}

type clusterChannel struct {
	ChannelID              string `json:"channel_id"`
	NodeInCharge           string `json:"node_in_charge"`
	NodeInChargeEpoch      uint64 `json:"node_in_charge_epoch"`
	NodeInChargeEpochStale bool   `json:"node_in_charge_epoch_stale"`
	NodeInChargeConnected  bool   `json:"node_in_charge_connected"`
}

func (s *Server) listClusterChannels(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[consistentRead](body)
	if err != nil {
		return nil, err
	}
	if err := s.barrier(ctx, req); err != nil {
		return nil, err
	}
	out := []clusterChannel{}
	for _, ch := range s.cluster.Channels() {
		out = append(out, clusterChannel{
			ChannelID:              ch.ID,
			NodeInCharge:           ch.NodeInCharge,
			NodeInChargeEpoch:      ch.NodeInChargeEpoch,
			NodeInChargeEpochStale: ch.Stale,
			NodeInChargeConnected:  ch.Connected,
		})
	}
	return out, nil
}

type purgeClusterNodeRequest struct {
	TargetNodeName string `json:"target_node_name" api:"required"`
}

type purgeClusterNodeResponse struct {
	TargetNodeName string `json:"target_node_name"`
}

func (s *Server) purgeClusterNode(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[purgeClusterNodeRequest](body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.withTimeout(ctx, 2)
	defer cancel()
	if err := s.cluster.Purge(ctx, req.TargetNodeName); err != nil {
		return nil, err
	}
	return purgeClusterNodeResponse{TargetNodeName: req.TargetNodeName}, nil
}

type changeModeRequest struct {
	Mode string `json:"mode" api:"required"`
}

type modeResponse struct {
	Mode string `json:"mode"`
}

func (s *Server) changeMode(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[changeModeRequest](body)
	if err != nil {
		return nil, err
	}
	mode := fsm.Mode(req.Mode)
	if !mode.Settable() {
		return nil, apiErr(400, "INVALID-FIELD-VALUE", fieldReason{Field: "mode", Expected: "normal, block_new_session or block_new_connection"})
	}
	ctx, cancel := s.withTimeout(ctx, 1)
	defer cancel()
	if err := s.cluster.SetMode(ctx, mode); err != nil {
		return nil, err
	}
	return modeResponse{Mode: req.Mode}, nil
}

func (s *Server) getMode(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[consistentRead](body)
	if err != nil {
		return nil, err
	}
	if err := s.barrier(ctx, req); err != nil {
		return nil, err
	}
	return modeResponse{Mode: string(s.cluster.Mode())}, nil
}

type listChannelsRequest struct {
	// Local lists the channels with a live session on this node; it
	// defaults to true, as in Sora. false lists the live channels of every
	// connected node.
	Local *bool `json:"local"`
}

type channelEntry struct {
	ChannelID   string `json:"channel_id"`
	Multistream bool   `json:"multistream"`
	Spotlight   bool   `json:"spotlight"`
}

func (s *Server) listChannels(ctx context.Context, body []byte) (any, error) {
	req, err := decodeBody[listChannelsRequest](body)
	if err != nil {
		return nil, err
	}
	out := []channelEntry{}
	for _, ch := range s.media.ListChannels() {
		out = append(out, channelEntry{ChannelID: ch.ChannelID, Multistream: ch.Multistream, Spotlight: ch.Spotlight})
	}
	if req.Local == nil || *req.Local || forwarded(ctx) {
		return out, nil
	}
	// The whole cluster: every connected node's live channels.
	for _, peer := range fanOut[[]channelEntry](ctx, s, "Sora_20201013.ListChannels") {
		out = append(out, peer...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ChannelID < out[j].ChannelID })
	return out, nil
}

type statsReport struct {
	Version string `json:"version"`
	media.Report
	media.WebhookReport
	Cluster clusterStats `json:"cluster"`
}

type clusterStats struct {
	NodeName         string `json:"node_name"`
	RaftState        string `json:"raft_state"`
	RaftTerm         uint64 `json:"raft_term"`
	RaftCommitIndex  uint64 `json:"raft_commit_index"`
	RaftAppliedIndex uint64 `json:"raft_applied_index"`
	RaftLeader       string `json:"raft_leader"`
}

func (s *Server) getStatsReport(_ context.Context, body []byte) (any, error) {
	if _, err := decodeBody[struct{}](body); err != nil {
		return nil, err
	}
	st := s.cluster.Stats()
	return statsReport{
		Version:       s.cfg.Version,
		Report:        s.media.Stats().Report(),
		WebhookReport: s.media.WebhookReport(),
		Cluster: clusterStats{
			NodeName:         s.cluster.NodeName(),
			RaftState:        st.State,
			RaftTerm:         st.Term,
			RaftCommitIndex:  st.CommitIndex,
			RaftAppliedIndex: st.AppliedIndex,
			RaftLeader:       st.Leader,
		},
	}, nil
}
