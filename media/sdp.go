package media

import (
	"strconv"
	"strings"

	"github.com/sorad/sorad/media/signaling"
)

// SDP edits sorad makes to the offers pion creates, on the media section of
// the client's upstream m-line.

// withBandwidth returns sdp with "b=AS:<kbps>" in the media section whose
// a=mid is mid, replacing any bandwidth line it had. The line goes where
// SDP puts it: after the section's c= line.
func withBandwidth(sdp, mid string, kbps int) string {
	return editSection(sdp, mid, func(section []string) []string {
		out := make([]string, 0, len(section)+1)
		for _, l := range section {
			if strings.HasPrefix(l, "b=") {
				continue
			}
			out = append(out, l)
			if strings.HasPrefix(l, "c=") {
				out = append(out, "b=AS:"+strconv.Itoa(kbps))
			}
		}
		return out
	})
}

// withSimulcastReceive returns sdp with the media section whose a=mid is mid
// asking for simulcast: an "a=rid:<rid> recv" line per encoding and
// "a=simulcast:recv r0;r1;r2", an inactive encoding's rid marked "~".
func withSimulcastReceive(sdp, mid string, encodings []signaling.Encoding) string {
	if len(encodings) == 0 {
		return sdp
	}
	return editSection(sdp, mid, func(section []string) []string {
		out := make([]string, 0, len(section)+len(encodings)+1)
		for _, l := range section {
			if !strings.HasPrefix(l, "a=rid:") && !strings.HasPrefix(l, "a=simulcast:") {
				out = append(out, l)
			}
		}
		// A trailing empty line is the SDP's final CRLF: keep it last.
		var tail []string
		if n := len(out); n > 0 && out[n-1] == "" {
			out, tail = out[:n-1], []string{""}
		}
		rids := make([]string, 0, len(encodings))
		for _, e := range encodings {
			out = append(out, "a=rid:"+e.RID+" recv")
			if e.Active {
				rids = append(rids, e.RID)
			} else {
				rids = append(rids, "~"+e.RID)
			}
		}
		out = append(out, "a=simulcast:recv "+strings.Join(rids, ";"))
		return append(out, tail...)
	})
}

// editSection returns sdp with edit applied to the lines of the media
// section whose a=mid is mid (from its m= line to the next).
func editSection(sdp, mid string, edit func([]string) []string) string {
	lines := strings.Split(sdp, "\r\n")
	out := make([]string, 0, len(lines)+4)
	var section []string
	flush := func() {
		if containsLine(section, "a=mid:"+mid) {
			section = edit(section)
		}
		out = append(out, section...)
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

// iceCredentials returns the first ICE username fragment and password of
// sdp (pion uses one pair for every media section), or empty strings.
func iceCredentials(sdp string) (ufrag, pwd string) {
	for l := range strings.Lines(sdp) {
		l = strings.TrimRight(l, "\r\n")
		if v, ok := strings.CutPrefix(l, "a=ice-ufrag:"); ok && ufrag == "" {
			ufrag = v
		} else if v, ok := strings.CutPrefix(l, "a=ice-pwd:"); ok && pwd == "" {
			pwd = v
		}
	}
	return ufrag, pwd
}
