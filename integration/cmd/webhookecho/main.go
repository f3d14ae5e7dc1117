// Command webhookecho is a webhook receiver to try sorad's webhooks with:
// it prints every webhook it gets (path, then the JSON body, one line
// each) and answers the auth webhook (any path ending in /auth) with
// {"allowed": true}, or with {"allowed": false} for the channels given
// with -deny.
//
//	go run ./integration/cmd/webhookecho --listen 127.0.0.1:8080 --deny secret-room
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	deny := flag.String("deny", "", "comma-separated channel IDs the auth webhook refuses")
	flag.Parse()
	denied := map[string]bool{}
	for _, ch := range strings.Split(*deny, ",") {
		if ch != "" {
			denied[ch] = true
		}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(os.Stdout, "%s %s %s\n", time.Now().Format(time.RFC3339Nano), r.URL.Path, body)
		if !strings.HasSuffix(r.URL.Path, "/auth") {
			return
		}
		var req struct {
			ChannelID string `json:"channel_id"`
		}
		_ = json.Unmarshal(body, &req)
		w.Header().Set("content-type", "application/json")
		if denied[req.ChannelID] {
			_, _ = io.WriteString(w, `{"allowed":false,"reason":"CHANNEL-DENIED"}`)
			return
		}
		_, _ = io.WriteString(w, `{"allowed":true}`)
	})
	srv := &http.Server{Addr: *listen, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("webhookecho listening on http://%s", *listen)
	log.Fatal(srv.ListenAndServe())
}
