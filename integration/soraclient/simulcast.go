package soraclient

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Simulcast publishing, the audio level, and the receivers' packet log.

const (
	// MaxPackets is how many received packets a track's log keeps
	// (Options.RecordPackets); older ones are dropped first.
	MaxPackets = 20000
	// layerMarkBase + i fills the frame bodies of simulcast layer i.
	layerMarkBase = 0xa0
	rtpMTU        = 1200
)

const audioLevelURI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

// simulcastLayer is one rid a simulcast client sends.
type simulcastLayer struct {
	index      int // 0 for r0
	rid        string
	track      *webrtc.TrackLocalStaticRTP
	packetizer rtp.Packetizer
	forceKey   atomic.Bool // a PLI asked for a key frame
}

// LayerMark is the byte every frame body of simulcast layer i (0 for r0) is
// filled with.
func LayerMark(i int) byte { return byte(layerMarkBase + i) }

// offeredRIDs lists the rids of the "a=rid:<rid> recv" lines of the m-line
// with the given mid.
func offeredRIDs(offerSDP, mid string) ([]string, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offerSDP); err != nil {
		return nil, fmt.Errorf("soraclient: parse offer sdp: %w", err)
	}
	for _, md := range sd.MediaDescriptions {
		if v, _ := md.Attribute("mid"); v != mid {
			continue
		}
		var rids []string
		for _, a := range md.Attributes {
			if a.Key != "rid" {
				continue
			}
			if rid, dir, ok := strings.Cut(a.Value, " "); ok && strings.HasPrefix(dir, "recv") {
				rids = append(rids, rid)
			}
		}
		return rids, nil
	}
	return nil, nil
}

// attachSimulcast publishes one VP8 stream per rid on the m-line mid: the
// first rid's track becomes the transceiver's sender, the others its
// further encodings.
func (c *Client) attachSimulcast(capability webrtc.RTPCodecCapability, mid string, rids []string) error {
	if !strings.EqualFold(capability.MimeType, webrtc.MimeTypeVP8) {
		return fmt.Errorf("soraclient: simulcast needs VP8, the offer's video is %s", capability.MimeType)
	}
	for i, rid := range rids {
		track, err := webrtc.NewTrackLocalStaticRTP(capability, "video", "soraclient", webrtc.WithRTPStreamID(rid))
		if err != nil {
			return fmt.Errorf("soraclient: new %s track: %w", rid, err)
		}
		l := &simulcastLayer{index: i, rid: rid, track: track,
			packetizer: rtp.NewPacketizer(rtpMTU, 0, 0, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewRandomSequencer(), 90000)}
		if i == 0 {
			if err := c.attachTrack(webrtc.RTPCodecTypeVideo, mid, track); err != nil {
				return err
			}
		} else if err := c.videoSender.AddEncoding(track); err != nil {
			return fmt.Errorf("soraclient: add encoding %s: %w", rid, err)
		}
		c.layers = append(c.layers, l)
	}
	return nil
}

// readLayerRTCP marks a layer for a key frame when the server asks for one.
func (c *Client) readLayerRTCP(l *simulcastLayer) {
	for {
		pkts, _, err := c.videoSender.ReadSimulcastRTCP(l.rid)
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				l.forceKey.Store(true)
			}
		}
	}
}

// extensionID is the ID the client's answer gave a header extension on the
// m-line mid (what was negotiated), or 0.
func (c *Client) extensionID(mid, uri string) uint8 {
	if c.answerSDP == "" || mid == "" {
		return 0
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(c.answerSDP); err != nil {
		return 0
	}
	for _, md := range sd.MediaDescriptions {
		if v, _ := md.Attribute("mid"); v != mid {
			continue
		}
		for _, a := range md.Attributes {
			if a.Key != "extmap" {
				continue
			}
			var e sdp.ExtMap
			if e.Unmarshal("extmap:"+a.Value) == nil && e.URI != nil && e.URI.String() == uri {
				return uint8(e.Value)
			}
		}
	}
	return 0
}

// writeLayerFrame sends one frame of a simulcast layer, with the mid and rid
// header extensions the server tells the layers apart by.
func (c *Client) writeLayerFrame(l *simulcastLayer, frame int, midID, ridID uint8, mid string) {
	key := frame%keyFrameInterval == 0 || l.forceKey.Swap(false)
	size := c.opts.VideoBitrateKbps * 1000 / 8 * int(videoInterval/time.Millisecond) / 1000 * (1 << l.index) / 7
	data := vp8LayerFrame(key, max(size, 20), videoWidth>>(2-l.index), videoHeight>>(2-l.index), LayerMark(l.index))
	for _, pkt := range l.packetizer.Packetize(data, uint32(videoInterval.Seconds()*90000)) {
		if midID != 0 {
			_ = pkt.Header.SetExtension(midID, []byte(mid))
		}
		if ridID != 0 {
			_ = pkt.Header.SetExtension(ridID, []byte(l.rid))
		}
		if err := l.track.WriteRTP(pkt); err != nil {
			c.log.Debug("soraclient: write layer", "rid", l.rid, "err", err)
		} else {
			c.sentBytes.Add(int64(len(pkt.Payload)))
		}
	}
}

// SetAudioLevel sets the level the client puts in the audio level header
// extension of every audio packet it sends from now on: 0 is the loudest
// (0 dBov), 127 silence, the default.
func (c *Client) SetAudioLevel(level uint8) { c.audioLevel.Store(uint32(min(level, 127))) }

// PacketInfo is one received RTP packet, as the packet log keeps it.
type PacketInfo struct {
	Seq       uint16
	Timestamp uint32
	SSRC      uint32
	KeyFrame  bool // the first packet of a VP8 key frame
	Layer     int  // the simulcast layer of the sender (from LayerMark), -1 if none
	At        time.Time
}

// packetInfo describes pkt for the log.
func packetInfo(pkt *rtp.Packet, at time.Time) PacketInfo {
	info := PacketInfo{Seq: pkt.SequenceNumber, Timestamp: pkt.Timestamp, SSRC: pkt.SSRC, Layer: -1, At: at}
	var vp8 codecs.VP8Packet
	if body, err := vp8.Unmarshal(pkt.Payload); err == nil && len(body) > 0 {
		info.KeyFrame = vp8.S == 1 && vp8.PID == 0 && body[0]&0x01 == 0
	}
	if n := len(pkt.Payload); n > 0 {
		if last := pkt.Payload[n-1]; last >= layerMarkBase && last < layerMarkBase+3 {
			info.Layer = int(last - layerMarkBase)
		}
	}
	return info
}

// Packets returns the packet log of the remote track of that stream id and
// kind (Options.RecordPackets), oldest first.
func (c *Client) Packets(streamID, kind string) []PacketInfo {
	c.tracksMu.Lock()
	tc := c.tracks[streamID+"/"+kind]
	c.tracksMu.Unlock()
	if tc == nil {
		return nil
	}
	tc.logMu.Lock()
	defer tc.logMu.Unlock()
	return append([]PacketInfo(nil), tc.log...)
}

// RequestResend sends the server a NACK for the packets with the given
// sequence numbers of a remote track, as a receiver that lost them would.
func (c *Client) RequestResend(streamID, kind string, seqs []uint16) error {
	c.tracksMu.Lock()
	tc := c.tracks[streamID+"/"+kind]
	c.tracksMu.Unlock()
	if tc == nil {
		return fmt.Errorf("soraclient: no remote %s track of %s", kind, streamID)
	}
	return c.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{
		MediaSSRC: tc.ssrc.Load(),
		Nacks:     rtcp.NackPairsFromSequenceNumbers(seqs),
	}})
}

// vp8LayerFrame is vp8Frame of the given dimensions with every body byte
// set to mark.
func vp8LayerFrame(key bool, size, width, height int, mark byte) []byte {
	b := vp8Frame(key, size)
	hdr := 3
	if key {
		hdr = 10
		b[6], b[7] = byte(width), byte(width>>8)
		b[8], b[9] = byte(height), byte(height>>8)
	}
	for i := hdr; i < len(b); i++ {
		b[i] = mark
	}
	return b
}
