package soraclient

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
)

const (
	audioInterval    = 20 * time.Millisecond
	videoInterval    = 33 * time.Millisecond
	keyFrameInterval = 30  // frames
	maxAudioKbps     = 510 // Opus's highest bit rate
	videoWidth       = 640
	videoHeight      = 360
)

// videoCodecs are the video codecs the client can packetize, by SDP name.
var videoCodecs = []string{"VP8", "VP9", "AV1", "H264", "H265"}

// offeredVideoCodec picks the video codec to send on the m-line with the
// given mid: the preferred one when the offer lists it, else the first one
// the offer lists that the client can send. The offer's fmtp line is kept
// so the track binds to exactly that payload type.
func offeredVideoCodec(offerSDP, mid, preferred string) (webrtc.RTPCodecCapability, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offerSDP); err != nil {
		return webrtc.RTPCodecCapability{}, fmt.Errorf("soraclient: parse offer sdp: %w", err)
	}
	for _, md := range sd.MediaDescriptions {
		if v, _ := md.Attribute("mid"); v != mid || md.MediaName.Media != "video" {
			continue
		}
		names := map[string]string{} // payload type -> codec name
		fmtps := map[string]string{} // payload type -> fmtp
		for _, a := range md.Attributes {
			pt, rest, ok := strings.Cut(a.Value, " ")
			if !ok {
				continue
			}
			switch a.Key {
			case "rtpmap":
				name, _, _ := strings.Cut(rest, "/")
				names[pt] = strings.ToUpper(name)
			case "fmtp":
				fmtps[pt] = rest
			}
		}
		var found []string // payload types in offer order
		for _, pt := range md.MediaName.Formats {
			for _, known := range videoCodecs {
				if names[pt] == known {
					found = append(found, pt)
				}
			}
		}
		if len(found) == 0 {
			return webrtc.RTPCodecCapability{}, fmt.Errorf("soraclient: video m-line %s offers no codec among %v", mid, videoCodecs)
		}
		pick := found[0]
		for _, pt := range found {
			if strings.EqualFold(names[pt], preferred) {
				pick = pt
				break
			}
		}
		return webrtc.RTPCodecCapability{
			MimeType:    "video/" + names[pick],
			ClockRate:   90000,
			SDPFmtpLine: fmtps[pick],
		}, nil
	}
	return webrtc.RTPCodecCapability{}, fmt.Errorf("soraclient: offer has no video m-line with mid %q", mid)
}

// runMedia writes synthetic audio and video until ctx ends.
func (c *Client) runMedia(ctx context.Context) {
	audioTick := time.NewTicker(audioInterval)
	defer audioTick.Stop()
	videoTick := time.NewTicker(videoInterval)
	defer videoTick.Stop()
	var mime string
	frameBytes := c.opts.VideoBitrateKbps * 1000 / 8 * int(videoInterval/time.Millisecond) / 1000
	if c.videoTrack != nil {
		mime = strings.ToUpper(strings.TrimPrefix(c.videoTrack.Codec().MimeType, "video/"))
	}
	levelID := c.extensionID(c.audioMid, audioLevelURI)
	midID := c.extensionID(c.videoMid, sdp.SDESMidURI)
	ridID := c.extensionID(c.videoMid, sdp.SDESRTPStreamIDURI)
	var ivf [][]byte
	if c.opts.VideoIVF != "" && c.videoTrack != nil {
		var err error
		if ivf, err = readIVF(c.opts.VideoIVF); err != nil {
			c.log.Error("soraclient: read IVF; sending synthetic video", "err", err)
		}
	}
	opus := opusFrame(c.opts.AudioBitrateKbps)
	audio := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(time.Now().UnixNano()), Timestamp: uint32(time.Now().UnixNano())}}
	frame := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-audioTick.C:
			if c.audioTrack == nil {
				continue
			}
			audio.Payload = opus
			audio.SequenceNumber++
			audio.Timestamp += uint32(audioInterval.Seconds() * 48000)
			audio.Extension, audio.Extensions = false, nil
			if levelID != 0 {
				_ = audio.SetExtension(levelID, []byte{byte(c.audioLevel.Load())})
			}
			if err := c.audioTrack.WriteRTP(&audio); err != nil {
				c.log.Debug("soraclient: write audio", "err", err)
			} else {
				c.sentBytes.Add(int64(len(opus)))
			}
		case <-videoTick.C:
			for _, l := range c.layers {
				c.writeLayerFrame(l, frame, midID, ridID, c.videoMid)
			}
			if c.videoTrack != nil {
				data := videoFrame(mime, frame%keyFrameInterval == 0, frameBytes)
				if len(ivf) > 0 {
					data = ivf[frame%len(ivf)]
				}
				if err := c.videoTrack.WriteSample(media.Sample{Data: data, Duration: videoInterval}); err != nil {
					c.log.Debug("soraclient: write video", "err", err)
				} else {
					c.sentBytes.Add(int64(len(data)))
				}
			}
			frame++
		}
	}
}

// readIVF returns the frames of an IVF file.
func readIVF(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := ivfreader.NewWith(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var frames [][]byte
	for {
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		frames = append(frames, frame)
	}
	if len(frames) == 0 {
		return nil, fmt.Errorf("%s: no frames", path)
	}
	return frames, nil
}

// opusFrame returns a 20 ms CELT fullband mono frame of kbps: TOC byte
// config 31, code 0, followed by arbitrary bytes.
func opusFrame(kbps int) []byte {
	b := make([]byte, max(min(kbps, maxAudioKbps)*1000/8*int(audioInterval/time.Millisecond)/1000, 2))
	b[0] = 31 << 3
	fill(b[1:])
	return b
}

// fill writes a pattern without zero bytes (so no H.264/H.265 start code
// emulation) and without the simulcast layer marks.
func fill(b []byte) {
	for i := range b {
		v := 0x80 | byte(i&0x7f)
		if v >= layerMarkBase && v < layerMarkBase+3 {
			v = 0x80
		}
		b[i] = v
	}
}

// videoFrame builds a synthetic frame of about size bytes whose headers are
// what a depacketizer or an SFU looks at: VP8 and VP9 frame headers, AV1
// OBU headers, H.264/H.265 Annex-B NAL units.
func videoFrame(codec string, key bool, size int) []byte {
	switch codec {
	case "VP9":
		return vp9Frame(key, size)
	case "AV1":
		return av1Frame(key, size)
	case "H264":
		return annexBFrame(key, size, [][]byte{{0x67, 0x42, 0xc0, 0x1f}, {0x68, 0xce, 0x3c, 0x80}}, []byte{0x65}, []byte{0x41})
	case "H265":
		return annexBFrame(key, size, [][]byte{{0x40, 0x01}, {0x42, 0x01}, {0x44, 0x01}}, []byte{0x26, 0x01}, []byte{0x02, 0x01})
	default:
		return vp8Frame(key, size)
	}
}

// vp8Frame: 3-byte frame tag (bit 0 = 0 for a key frame, show_frame set,
// first_partition_size), and for key frames the start code 9d 01 2a and the
// 14-bit width and height (RFC 6386 section 9.1).
func vp8Frame(key bool, size int) []byte {
	size = max(size, 10)
	b := make([]byte, size)
	fill(b)
	hdr := 3
	if key {
		hdr = 10
	}
	tag := uint32(size-hdr)<<5 | 1<<4 // first_part_size, show_frame, version 0
	if !key {
		tag |= 1
	}
	b[0], b[1], b[2] = byte(tag), byte(tag>>8), byte(tag>>16)
	if key {
		b[3], b[4], b[5] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(b[6:], videoWidth)
		binary.LittleEndian.PutUint16(b[8:], videoHeight)
	}
	return b
}

// vp9KeyHeader is an uncompressed VP9 key frame header (profile 0, 8 bit,
// 4:2:0) as libwebrtc produces it.
var vp9KeyHeader = []byte{
	0x82, 0x49, 0x83, 0x42, 0x00, 0x77, 0xf0, 0x32,
	0x34, 0x30, 0x38, 0x24, 0x1c, 0x19, 0x40, 0x18,
	0x03, 0x40, 0x5f, 0xb4,
}

// vp9Frame: pion's VP9 payloader parses the uncompressed header, so it must
// be well formed: key frames carry the sync code, inter frames start with
// frame_marker 2, profile 0, non_key_frame 1, show_frame 1 (0x86).
func vp9Frame(key bool, size int) []byte {
	size = max(size, len(vp9KeyHeader)+1)
	b := make([]byte, size)
	fill(b)
	if key {
		copy(b, vp9KeyHeader)
	} else {
		b[0] = 0x86
	}
	return b
}

// av1Frame: OBUs with size fields; key frames start with a sequence header
// OBU (type 1), every frame carries a frame OBU (type 6).
func av1Frame(key bool, size int) []byte {
	var b []byte
	if key {
		b = appendOBU(b, 1, 12)
	}
	payload := max(size-len(b)-4, 1)
	return appendOBU(b, 6, payload)
}

func appendOBU(b []byte, obuType byte, payload int) []byte {
	b = append(b, obuType<<3|0x02) // has_size_field
	b = binary.AppendUvarint(b, uint64(payload))
	p := make([]byte, payload)
	fill(p)
	return append(b, p...)
}

// annexBFrame builds start-code separated NAL units: the parameter sets and
// an IDR slice for key frames, a non-IDR slice otherwise.
func annexBFrame(key bool, size int, params [][]byte, idr, slice []byte) []byte {
	startCode := []byte{0, 0, 0, 1}
	var b []byte
	nal := slice
	if key {
		for _, p := range params {
			b = append(b, startCode...)
			b = append(b, p...)
			b = append(b, 0x80, 0x81) // arbitrary body, no zero bytes
		}
		nal = idr
	}
	b = append(b, startCode...)
	b = append(b, nal...)
	body := make([]byte, max(size-len(b), 1))
	fill(body)
	return append(b, body...)
}
