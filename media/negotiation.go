package media

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/sorad/sorad/media/icehold"
	"github.com/sorad/sorad/media/signaling"
)

// Negotiation: sorad is always the offerer. The first offer answers
// connect; every change of the tracks a connection receives (or of the bit
// rate it may send at) is a re-offer, one at a time.

// negotiation is a connection's offer/answer state.
type negotiation struct {
	negMu        sync.Mutex
	offerPending bool              // an offer or re-offer awaits its answer
	needReoffer  bool              // something changed while an offer was pending
	mid          map[string]string // the client's upstream m-lines, from the first offer
	// offersMade counts the offers created; offersAnswered is the count
	// when the last answer was applied (see sendSlot).
	offersMade, offersAnswered atomic.Uint64
	videoBitRate               atomic.Int64 // kbps the client may send video at
	// earlyChecks holds the client's connectivity checks that arrive
	// before its answer, from the first offer until ICE starts checking,
	// then nudges the client after its checks are answered until ICE is
	// connected.
	earlyChecks atomic.Pointer[icehold.Wait]
}

// start sets up the PeerConnection with the upstream m-lines and the
// tracks to receive, and sends the offer.
func (c *connection) start(pubs []*published) error {
	c.pc.OnConnectionStateChange(c.onConnectionState)
	c.pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		c.iceTimes.observe(s, time.Now())
		switch s {
		case webrtc.ICEConnectionStateNew:
		case webrtc.ICEConnectionStateChecking:
			// The agent has the answer's credentials: the checks that came
			// before it can be answered now.
			c.endEarlyChecks(true)
		default:
			c.endEarlyChecks(false)
		}
	})
	c.pc.OnTrack(c.onTrack)
	// Upstream m-lines first: the SDKs attach their tracks to the first
	// transceivers of each kind.
	if c.req.Role.Sends() {
		if c.req.Audio.Enabled {
			if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return fmt.Errorf("audio transceiver: %w", err)
			}
		}
		if c.req.Video.Enabled {
			tr, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
			if err != nil {
				return fmt.Errorf("video transceiver: %w", err)
			}
			if err := tr.SetCodecPreferences(videoCodecsPreferring(c.videoCodec())); err != nil {
				return fmt.Errorf("video codec: %w", err)
			}
		}
	}
	for _, p := range pubs {
		c.receive(p)
	}
	if len(c.pc.GetTransceivers()) == 0 {
		// A receiver in a channel with nothing to forward yet still needs
		// media sections to carry ICE and DTLS. Placeholders that ask the
		// client to send get answered inactive; forwarded tracks come in
		// re-offers.
		if err := c.addPlaceholders(); err != nil {
			return err
		}
	}
	c.spawn(c.writeLoop)
	c.spawn(c.pingLoop)
	if d := c.grant.lifetime; d > 0 {
		c.spawn(func() { c.expireAfter(d) })
	}
	if c.dcs != nil {
		c.spawn(c.readDataChannels)
	}
	c.negMu.Lock()
	defer c.negMu.Unlock()
	c.offerPending = false
	c.offerLocked(true)
	return nil
}

func (c *connection) addPlaceholders() error {
	kinds := []webrtc.RTPCodecType{}
	if c.req.Audio.Enabled || !c.req.Video.Enabled {
		kinds = append(kinds, webrtc.RTPCodecTypeAudio)
	}
	if c.req.Video.Enabled {
		kinds = append(kinds, webrtc.RTPCodecTypeVideo)
	}
	for _, k := range kinds {
		if _, err := c.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return fmt.Errorf("placeholder %s transceiver: %w", k, err)
		}
	}
	return nil
}

// videoCodecsPreferring lists every video codec with first first. The
// client sends with the first codec it supports, and the other codecs stay
// negotiated: pion keeps only the codecs of a connection's first answer,
// and tracks forwarded later may be in any of them.
func videoCodecsPreferring(first string) []webrtc.RTPCodecParameters {
	out := []webrtc.RTPCodecParameters{codecs[first]}
	for _, name := range videoCodecOrder {
		if name != first {
			out = append(out, codecs[name])
		}
	}
	return out
}

// videoCodec is the codec this connection sends video in.
func (c *connection) videoCodec() string {
	if c.req.Video.CodecType != "" {
		return c.req.Video.CodecType
	}
	return c.m.cfg.DefaultVideoCodec
}

// requestedVideoBitRate is the kbps the connect asked to send video at.
func (c *connection) requestedVideoBitRate() int {
	if c.req.Video.BitRate > 0 {
		return c.req.Video.BitRate
	}
	return c.m.cfg.DefaultVideoBitRate
}

// setVideoBitRate caps the client's video at kbps from now on: a re-offer
// carries the new b=AS (ChangeUpstreamVideoBitRate).
func (c *connection) setVideoBitRate(kbps int) {
	c.videoBitRate.Store(int64(kbps))
	c.negotiate()
}

// simulcastSender reports whether the client sends simulcast video.
func (c *connection) simulcastSender() bool {
	return c.req.Simulcast && c.req.Role.Sends() && c.req.Video.Enabled
}

// negotiate sends a re-offer when no offer is pending, else remembers that
// another is needed once the answer arrives.
func (c *connection) negotiate() {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	if c.offerPending {
		c.needReoffer = true
		return
	}
	c.offerLocked(false)
}

// offerLocked creates an offer and sends it, as the first offer (with the
// connection's settings) or as a re-offer. negMu is held.
func (c *connection) offerLocked(first bool) {
	if c.ctx.Err() != nil {
		return
	}
	c.offersMade.Add(1) // before the offer: an m-line parked from now on may be in it, or not
	offer, err := c.pc.CreateOffer(nil)
	if err == nil {
		gathered := webrtc.GatheringCompletePromise(c.pc)
		if err = c.pc.SetLocalDescription(offer); err == nil {
			select {
			case <-gathered:
			case <-c.ctx.Done():
				return
			}
		}
	}
	if err != nil {
		c.log.Error("create offer", "error", err)
		c.close(signaling.CloseSignaling, "SDP-GENERATION-ERROR")
		return
	}
	if first {
		// The m-lines the client sends on: its upstream transceivers
		// (receivers do not send; their placeholders are not upstream).
		c.mid = map[string]string{}
		for _, t := range c.pc.GetTransceivers() {
			if c.req.Role.Sends() && t.Direction() == webrtc.RTPTransceiverDirectionRecvonly && t.Mid() != "" {
				c.mid[t.Kind().String()] = t.Mid()
			}
		}
	}
	sdp := c.pc.LocalDescription().SDP
	if first {
		c.holdEarlyChecks(sdp)
	}
	if mid, ok := c.mid["video"]; ok {
		// The client's video bit rate: a bandwidth line on its upstream
		// video m-line, which browsers and libwebrtc obey as a cap.
		sdp = withBandwidth(sdp, mid, int(c.videoBitRate.Load()))
		if first && c.simulcastSender() {
			// pion offers no rids of its own; re-offers repeat those of
			// the client's answer.
			sdp = withSimulcastReceive(sdp, mid, c.m.cfg.SimulcastEncodings)
		}
	}
	c.offerPending, c.needReoffer = true, false
	if !first {
		c.send(signaling.ReOffer{SDP: sdp})
		return
	}
	c.send(c.offerMessage(sdp))
}

// requestKeyframes asks the publishers of the video this connection
// receives for a key frame.
func (c *connection) requestKeyframes() {
	for _, d := range c.downTracks() {
		d.fwd.RequestKeyframe()
	}
}

// holdEarlyChecks starts holding the checks the client sends before its
// answer arrives (see package icehold), for the credentials of offer.
func (c *connection) holdEarlyChecks(offer string) {
	ufrag, pwd := iceCredentials(offer)
	if ufrag == "" || pwd == "" {
		return
	}
	if old := c.earlyChecks.Swap(c.m.engine.hold.Await(ufrag, pwd)); old != nil {
		old.Cancel()
	}
}

// endEarlyChecks stops holding early checks, handing those held to the ICE
// agent with the client's credentials for the nudges (package icehold), or
// ends the wait (ICE is connected, or the connection ends).
func (c *connection) endEarlyChecks(replay bool) {
	if !replay {
		if w := c.earlyChecks.Swap(nil); w != nil {
			w.Cancel()
		}
		return
	}
	w := c.earlyChecks.Load()
	if w == nil {
		return
	}
	var ufrag, pwd string
	if d := c.pc.RemoteDescription(); d != nil {
		ufrag, pwd = iceCredentials(d.SDP)
	}
	w.Release(ufrag, pwd)
}

// offerMessage is the first offer with the connection's settings.
func (c *connection) offerMessage(sdp string) signaling.Offer {
	o := signaling.Offer{
		SDP:          sdp,
		ConnectionID: c.id,
		ClientID:     c.client,
		BundleID:     c.bundle,
		SessionID:    c.session.id,
		ChannelID:    c.req.ChannelID,
		Config:       signaling.ICEConfig{ICEServers: []signaling.ICEServer{}, ICETransportPolicy: "all"},
		Version:      c.m.cfg.Version,
		Multistream:  true,
		Simulcast:    c.req.Simulcast,
		Spotlight:    c.req.Spotlight,
		Audio:        c.req.Audio.Enabled,
		Video:        c.req.Video.Enabled,
		Mid:          c.mid,
		Metadata:     c.grant.metadata,
	}
	if c.req.Audio.Enabled {
		o.AudioCodecType = "OPUS"
	}
	if c.req.Video.Enabled {
		o.VideoCodecType = c.videoCodec()
		o.VideoBitRate = int(c.videoBitRate.Load())
	}
	if c.simulcastSender() {
		o.Encodings = c.m.cfg.SimulcastEncodings
	}
	if c.dcs != nil {
		o.DataChannelSignaling = true
		o.IgnoreDisconnectWebSocket = c.req.IgnoreDisconnectWebSocket
		o.DataChannels = c.dcs.offered()
		o.RPCMethods = c.rpcMethods()
	}
	return o
}

// onAnswer applies an answer or re-answer and sends the next re-offer if
// something changed meanwhile.
func (c *connection) onAnswer(a signaling.Answer) error {
	c.negMu.Lock()
	defer c.negMu.Unlock()
	if !c.offerPending {
		return signaling.Errorf("UNEXPECTED-ANSWER", "no offer is waiting for an answer")
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.SDP}); err != nil {
		if !errors.Is(err, webrtc.ErrUnsupportedCodec) {
			return signaling.Errorf("INVALID-ANSWER", "%v", err)
		}
		// The answer is applied; the client just cannot decode some
		// forwarded track's codec. It goes without that track.
		c.log.Warn("client does not support the codec of a forwarded track", "error", err)
	}
	c.offerPending = false
	c.offersAnswered.Store(c.offersMade.Load())
	c.startReused()
	if c.isEstablished() {
		// Tracks a re-answer added need a key frame to start decoding;
		// those of the first answer ask once the connection is up (a key
		// frame sent before could not reach the receiver).
		c.requestKeyframes()
	}
	if c.needReoffer {
		c.offerLocked(false)
	}
	return nil
}
