package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestFlags: flags become the load's configuration; bad ones are refused
// with exit status 2 and a message before anything connects.
func TestFlags(t *testing.T) {
	cfg, jsonOut, quiet, err := parseFlags([]string{"-url", "ws://a:5000/signaling, ws://b:5000/signaling", "-channels", "3",
		"-publishers", "2", "-subscribers", "4", "-video-codec", "vp9", "-duration", "5s", "-json", "-quiet",
		"-ice-networks", "127.0.0.1/8", "-metadata", `{"access_token":"t"}`}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.URLs) != 2 || cfg.URLs[1] != "ws://b:5000/signaling" || cfg.Channels != 3 || cfg.Publishers != 2 || cfg.Subscribers != 4 ||
		!cfg.Video || cfg.VideoCodec != "VP9" || !cfg.Audio || cfg.Duration != 5*time.Second || !jsonOut || !quiet ||
		len(cfg.ICENetworks) != 1 || cfg.ICENetworks[0].String() != "127.0.0.0/8" || string(cfg.Metadata) != `{"access_token":"t"}` ||
		!strings.HasPrefix(cfg.ChannelPrefix, "sorad-load-") {
		t.Errorf("config %+v json %v quiet %v", cfg, jsonOut, quiet)
	}
	if cfg, _, _, err := parseFlags([]string{"-url", "ws://a/", "-video-codec", "none"}, &bytes.Buffer{}); err != nil || cfg.Video {
		t.Errorf("-video-codec none: video %v, %v", cfg.Video, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no signaling URL"},
		{[]string{"-url", "http://a/"}, "want a ws or wss URL"},
		{[]string{"-url", "ws://a/", "-duration", "2h"}, "duration"},
		{[]string{"-url", "ws://a/", "-channels", "1000", "-subscribers", "1000"}, "at most 5000 clients"},
		{[]string{"-url", "ws://a/", "-video-codec", "H265"}, "video codec"},
		{[]string{"-url", "ws://a/", "-simulcast", "-video-codec", "VP9"}, "simulcast needs video in VP8"},
		{[]string{"-url", "ws://a/", "-metadata", "{"}, "not valid JSON"},
		{[]string{"-url", "ws://a/", "-metadata", "{}", "-metadata-file", "x"}, "give one"},
		{[]string{"-url", "ws://a/", "-ice-networks", "nonsense"}, "-ice-networks"},
		{[]string{"-url", "ws://a/", "extra"}, "unexpected arguments"},
		{[]string{"-nosuchflag"}, "not defined"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want 2 and %q", tc.args, code, stderr.String(), stdout.String(), tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &bytes.Buffer{}, &stderr); code != 0 || !strings.Contains(stderr.String(), "-subscribers") {
		t.Errorf("-h: exit %d, %q", code, stderr.String())
	}
}
