package forward

import "strings"

// keyframeDetector returns the function that tells, from an RTP payload of
// the codec mimeType, whether the packet starts a key frame: the point where
// a receiver can begin decoding, and so where a down track may switch
// layers or resume. Codecs without key frames (audio) never match.
func keyframeDetector(mimeType string) func(payload []byte) bool {
	switch strings.ToLower(mimeType) {
	case "video/vp8":
		return vp8Keyframe
	case "video/vp9":
		return vp9Keyframe
	case "video/h264":
		return h264Keyframe
	case "video/av1":
		return av1Keyframe
	}
	return func([]byte) bool { return false }
}

// vp8Keyframe: the payload descriptor (RFC 7741 section 4.2) of the first
// packet of partition 0 (S set, PID 0), then the VP8 frame tag whose P bit
// is 0 for a key frame (RFC 6386 section 9.1).
func vp8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	if p[0]&0x10 == 0 || p[0]&0x07 != 0 { // S, PID
		return false
	}
	i := 1
	if p[0]&0x80 != 0 { // X: an extension byte follows
		if len(p) <= i {
			return false
		}
		x := p[i]
		i++
		if x&0x80 != 0 { // I: picture ID, 7 or 15 bits
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i++
			}
			i++
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	return len(p) > i && p[i]&0x01 == 0
}

// vp9Keyframe: the payload descriptor (RFC 9628 section 4.2) of the first
// packet of a frame (B) that is not inter-picture predicted (P clear), in
// the base spatial layer when layer indices are present.
func vp9Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	const (
		flagI = 0x80
		flagP = 0x40
		flagL = 0x20
		flagB = 0x08
	)
	if p[0]&flagP != 0 || p[0]&flagB == 0 {
		return false
	}
	if p[0]&flagL == 0 {
		return true
	}
	i := 1
	if p[0]&flagI != 0 {
		if len(p) <= i {
			return false
		}
		if p[i]&0x80 != 0 { // M: 15-bit picture ID
			i++
		}
		i++
	}
	return len(p) > i && (p[i]>>1)&0x07 == 0 // SID
}

// H.264 NAL unit types (RFC 6184 section 5.2).
const (
	naluIDR   = 5
	naluSPS   = 7
	naluSTAPA = 24
	naluFUA   = 28
)

// h264Keyframe: a packet carrying an SPS or an IDR slice, alone, in a
// STAP-A, or as the start of an FU-A. Browsers send SPS and PPS in a STAP-A
// ahead of the IDR, so that packet is where the key frame begins.
func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch t := p[0] & 0x1f; {
	case t == naluIDR, t == naluSPS:
		return true
	case t == naluSTAPA:
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if nt := p[i] & 0x1f; nt == naluIDR || nt == naluSPS {
				return true
			}
			i += size
		}
	case t == naluFUA:
		return len(p) > 1 && p[1]&0x80 != 0 && p[1]&0x1f == naluIDR
	}
	return false
}

// av1Keyframe: the aggregation header (AV1 RTP payload format, section
// 4.4) with N set (the first packet of a coded video sequence, which starts
// with a key frame) and Z clear (not the continuation of an earlier OBU).
func av1Keyframe(p []byte) bool {
	return len(p) > 0 && p[0]&0x08 != 0 && p[0]&0x80 == 0
}
