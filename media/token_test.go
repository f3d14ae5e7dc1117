package media

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sorad/sorad/integration/soraclient"
	"github.com/sorad/sorad/media/authtoken"
)

// TestAccessTokenAdmission: with token checking on, only connects carrying
// a valid token for their channel (and role) are admitted, with 4403 and a
// reason otherwise; the token never reaches the other members.
func TestAccessTokenAdmission(t *testing.T) {
	secret := []byte("the signaling auth secret of this test, 32+ bytes")
	v, err := authtoken.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeCluster()
	_, url := startMediaWith(t, fc, Config{ReleaseDelay: time.Hour, Tokens: v})
	token := func(channel, role string, ttl time.Duration) string {
		tok, err := authtoken.SignHS256(secret, authtoken.Claims{ChannelID: channel, Role: role, Exp: time.Now().Add(ttl).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	meta := func(tok string) map[string]string { return map[string]string{"access_token": tok, "name": "alice"} }

	refusals := []struct {
		name     string
		metadata any
		role     string
		reason   string
	}{
		{"no metadata", nil, "sendrecv", "ACCESS-TOKEN-MISSING"},
		{"no token", map[string]string{"name": "alice"}, "sendrecv", "ACCESS-TOKEN-MISSING"},
		{"garbage", meta("not-a-jwt"), "sendrecv", "ACCESS-TOKEN-INVALID"},
		{"expired", meta(token("room", "", -time.Hour)), "sendrecv", "ACCESS-TOKEN-EXPIRED"},
		{"another channel", meta(token("elsewhere", "", time.Hour)), "sendrecv", "ACCESS-TOKEN-CHANNEL-MISMATCH"},
		{"another role", meta(token("room", "recvonly", time.Hour)), "sendrecv", "ACCESS-TOKEN-ROLE-MISMATCH"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connect(t, url, soraclient.Options{ChannelID: "room", Role: tt.role, Audio: true, Metadata: tt.metadata})
			if code, reason := closeOf(err); code != 4403 || reason != tt.reason {
				t.Fatalf("err %v, want 4403 %s", err, tt.reason)
			}
		})
	}
	if n := fc.callsOf("acquire"); n != 0 {
		t.Fatalf("refused connects placed %d channels", n)
	}

	first, err := connect(t, url, soraclient.Options{ChannelID: "room", Role: "sendrecv", Audio: true, Metadata: meta(token("room", "sendrecv", time.Hour))})
	if err != nil {
		t.Fatalf("a valid token: %v", err)
	}
	second, err := connect(t, url, soraclient.Options{ChannelID: "room", Role: "sendrecv", Audio: true, Metadata: meta(token("room", "", time.Hour))})
	if err != nil {
		t.Fatalf("a valid token without a role: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The second learns of the first (data of its connection.created) and
	// the first of the second: their metadata, without the token.
	for _, c := range []*soraclient.Client{first, second} {
		m, err := c.WaitMessage(ctx, func(m soraclient.Message) bool {
			return m.Type == "notify" && bytes.Contains(m.Raw, []byte(`"alice"`)) && bytes.Contains(m.Raw, []byte("connection.created")) &&
				(c == first && bytes.Contains(m.Raw, []byte(second.ConnectionID())) || c == second && bytes.Contains(m.Raw, []byte(first.ConnectionID())))
		})
		if err != nil {
			t.Fatalf("no notify with the other's metadata: %v", err)
		}
		if strings.Contains(string(m.Raw), "access_token") {
			t.Fatalf("a member was shown another's access token: %s", m.Raw)
		}
	}
}
