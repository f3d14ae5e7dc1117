package media

import (
	"github.com/sorad/sorad/media/signaling"
)

// Messages to the client: one queue per connection, written in order by
// one goroutine, each message over the WebSocket or, once signaling has
// switched, over the DataChannel of its kind.

// route says where a message goes once signaling has switched to
// DataChannels; until then everything goes over the WebSocket.
type route uint8

const (
	viaWebSocket route = iota // offer, ping, switched: the WebSocket only
	viaSignaling              // re-offer, close: DC signaling
	viaNotify                 // notify: DC notify
	viaPush                   // push: DC push
	viaStats                  // req-stats: DC stats
	viaRPC                    // JSON-RPC responses: DC rpc
	numRoutes
)

// routeLabels are the DataChannels of DataChannel signaling, by route.
var routeLabels = [numRoutes]string{viaSignaling: "signaling", viaNotify: "notify", viaPush: "push", viaStats: "stats", viaRPC: "rpc"}

// routeOf is where msg goes.
func routeOf(msg signaling.Outbound) route {
	switch msg.Type() {
	case "notify":
		return viaNotify
	case "push":
		return viaPush
	case "re-offer", "close":
		return viaSignaling
	case "req-stats":
		return viaStats
	}
	return viaWebSocket
}

// outbound is one queued message.
type outbound struct {
	via route
	b   []byte
}

// writeLoop writes the queued messages until the connection ends.
func (c *connection) writeLoop() {
	for {
		select {
		case o := <-c.out:
			if !c.write(o) {
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// write sends one message where its route says; false when the connection
// is over.
func (c *connection) write(o outbound) bool {
	if o.via != viaWebSocket && c.switched() {
		if err := c.dcs.byRoute[o.via].send(c.m, o.b, true); err != nil {
			c.log.Warn("signaling DataChannel write failed; disconnecting", "label", routeLabels[o.via], "error", err)
			c.close(signaling.CloseTimeout, "DATA-CHANNEL-WRITE-FAILED")
			return false
		}
		return true
	}
	return c.writeWebSocket(o.b)
}

// switched reports whether the connection's signaling switched to
// DataChannels.
func (c *connection) switched() bool { return c.dcs != nil && c.dcs.switched.Load() }

// survivesWebSocketClose reports whether the connection goes on when the
// client closes its WebSocket: it switched to DataChannels and connected
// with ignore_disconnect_websocket.
func (c *connection) survivesWebSocketClose() bool {
	return c.switched() && c.req.IgnoreDisconnectWebSocket
}
