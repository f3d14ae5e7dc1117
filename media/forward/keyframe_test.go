package forward

import "testing"

func TestKeyframeDetection(t *testing.T) {
	tests := []struct {
		name  string
		mime  string
		p     []byte
		isKey bool
	}{
		{"vp8 key, no extension", "video/VP8", []byte{0x10, 0x00, 0x9d}, true},
		{"vp8 inter frame", "video/VP8", []byte{0x10, 0x01}, false},
		{"vp8 key, 15-bit picture id, tl0picidx, tid", "video/VP8", []byte{0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00}, true},
		{"vp8 key, 7-bit picture id", "video/VP8", []byte{0x90, 0x80, 0x01, 0x00}, true},
		{"vp8 inter, 15-bit picture id", "video/VP8", []byte{0x90, 0x80, 0x81, 0x01, 0x01}, false},
		{"vp8 not the start of a partition", "video/VP8", []byte{0x00, 0x00}, false},
		{"vp8 partition 1", "video/VP8", []byte{0x11, 0x00}, false},
		{"vp8 truncated descriptor", "video/VP8", []byte{0x90, 0x80}, false},
		{"vp8 empty", "video/VP8", nil, false},
		{"vp9 key without layers", "video/VP9", []byte{0x8a, 0x01, 0x02}, true},            // I, B, V
		{"vp9 inter", "video/VP9", []byte{0xc8, 0x01, 0x02}, false},                        // I, P, B
		{"vp9 key, not the start of the frame", "video/VP9", []byte{0x84, 0x01}, false},    // I, E
		{"vp9 key, base spatial layer", "video/VP9", []byte{0xa8, 0x81, 0x02, 0x00}, true}, // I, L, B; 15-bit pid; SID 0
		{"vp9 key, upper spatial layer", "video/VP9", []byte{0xa8, 0x01, 0x02}, false},     // SID 1
		{"vp9 truncated", "video/VP9", []byte{0xa8, 0x81}, false},
		{"h264 idr", "video/H264", []byte{0x65, 0x88}, true},
		{"h264 sps", "video/H264", []byte{0x67, 0x42}, true},
		{"h264 non-idr slice", "video/H264", []byte{0x41, 0x9a}, false},
		{"h264 stap-a with sps", "video/H264", []byte{0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce}, true},
		{"h264 stap-a without", "video/H264", []byte{0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x01, 0x09}, false},
		{"h264 stap-a with a size past the end", "video/H264", []byte{0x78, 0x00, 0x09, 0x67}, false},
		{"h264 fu-a start of an idr", "video/H264", []byte{0x7c, 0x85, 0x00}, true},
		{"h264 fu-a middle of an idr", "video/H264", []byte{0x7c, 0x05, 0x00}, false},
		{"h264 fu-a start of a non-idr", "video/H264", []byte{0x7c, 0x81, 0x00}, false},
		{"av1 new coded video sequence", "video/AV1", []byte{0x18, 0x0a}, true},
		{"av1 continuation", "video/AV1", []byte{0x98, 0x0a}, false},
		{"av1 other frame", "video/AV1", []byte{0x10, 0x0a}, false},
		{"opus never", "audio/opus", []byte{0xfc, 0x00}, false},
	}
	for _, tt := range tests {
		if got := keyframeDetector(tt.mime)(tt.p); got != tt.isKey {
			t.Errorf("%s: key = %v, want %v", tt.name, got, tt.isKey)
		}
	}
}

func FuzzKeyframeDetection(f *testing.F) {
	f.Add([]byte{0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00})
	f.Add([]byte{0x78, 0x00, 0x02, 0x67, 0x42})
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, m := range []string{"video/VP8", "video/VP9", "video/H264", "video/AV1"} {
			keyframeDetector(m)(p) // must not panic on any input
		}
	})
}
