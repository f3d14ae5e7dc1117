package media

import (
	"strconv"
	"strings"
)

// withBandwidth returns sdp with "b=AS:<kbps>" in the media section whose
// a=mid is mid, replacing any bandwidth line it had. The line goes where
// SDP puts it: after the section's c= line.
func withBandwidth(sdp, mid string, kbps int) string {
	lines := strings.Split(sdp, "\r\n")
	out := make([]string, 0, len(lines)+1)
	var section []string
	flush := func() {
		if !containsLine(section, "a=mid:"+mid) {
			out = append(out, section...)
			return
		}
		for _, l := range section {
			if strings.HasPrefix(l, "b=") {
				continue
			}
			out = append(out, l)
			if strings.HasPrefix(l, "c=") {
				out = append(out, "b=AS:"+strconv.Itoa(kbps))
			}
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "m=") {
			flush()
			section = nil
		}
		section = append(section, l)
	}
	flush()
	return strings.Join(out, "\r\n")
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
