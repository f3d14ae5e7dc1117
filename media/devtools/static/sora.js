// A small client of Sora's signaling protocol as sorad speaks it
// (media/signaling/protocol.md): connect, offer/answer, re-offer/re-answer,
// candidate, ping/pong, notify, push, redirect, disconnect, and DataChannel
// signaling (switched, the signaling/notify/push/stats/rpc channels, zlib
// payloads, "#" messaging labels).
//
// new SoraClient(url, connectMessage, {stream, on}) then connect(); `on`
// holds callbacks: signaling(direction, type, transport, message),
// notify(message, transport), push(message, transport),
// track(event), removetrack(stream, track), message(label, bytes),
// switched(message), closed({code, reason, by}).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// zlib (RFC 1950) both ways, as sorad's compressed DataChannels carry.
async function pipeBytes(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
export const deflate = (bytes) => pipeBytes(bytes, new CompressionStream("deflate"));
export const inflate = (bytes) => pipeBytes(bytes, new DecompressionStream("deflate"));

const noop = () => {};

export class SoraClient {
  constructor(url, connectMessage, { stream = null, on = {} } = {}) {
    this.url = url;
    this.connectMessage = connectMessage;
    this.stream = stream;
    this.on = new Proxy(on, { get: (o, k) => o[k] ?? noop });
    this.ws = null;
    this.pc = null;
    this.offer = null;
    this.connectionId = null;
    this.channels = new Map(); // label -> {dc, compress, queue}
    this.switched = false;
    this.closed = false;
    this.rpcSeq = 0;
    this.rpcPending = new Map();
    this.wsQueue = Promise.resolve();
  }

  // connect resolves once the offer is answered, with the connection ID.
  connect() {
    return new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
      this.openSocket(this.url, this.connectMessage);
    });
  }

  openSocket(url, message) {
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => this.sendWS(message);
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        this.on.signaling("in", "invalid", "websocket", { data: String(e.data).slice(0, 200) });
        return;
      }
      // One message at a time: a re-offer waits for the offer's answer.
      this.wsQueue = this.wsQueue.then(() => this.handle(msg, "websocket")).catch((err) => this.fail(err));
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return; // a redirect replaced it
      this.on.signaling("in", "websocket-close", "websocket", { code: e.code, reason: e.reason });
      this.ws = null;
      if (this.closed) return;
      if (!this.switched || !this.offer?.ignore_disconnect_websocket) {
        this.end({ code: e.code, reason: e.reason, by: "websocket" });
      }
    };
    ws.onerror = () => this.on.signaling("in", "websocket-error", "websocket", { url });
  }

  sendWS(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    this.on.signaling("out", msg.type, "websocket", msg);
    return true;
  }

  // sendSignaling prefers DC signaling once it is open.
  sendSignaling(msg) {
    const ch = this.channels.get("signaling");
    if (ch && ch.dc.readyState === "open") {
      this.sendDC("signaling", textEncoder.encode(JSON.stringify(msg)), true).catch((err) => this.fail(err));
      this.on.signaling("out", msg.type, "datachannel", msg);
      return;
    }
    this.sendWS(msg);
  }

  async sendDC(label, bytes, asText = false) {
    const ch = this.channels.get(label);
    if (!ch || ch.dc.readyState !== "open") throw new Error(`DataChannel ${label} is not open`);
    if (ch.compress) {
      ch.dc.send(await deflate(bytes));
    } else if (asText) {
      ch.dc.send(textDecoder.decode(bytes));
    } else {
      ch.dc.send(bytes);
    }
  }

  async handle(msg, transport) {
    if (msg.type !== "ping") this.on.signaling("in", msg.type, transport, msg);
    switch (msg.type) {
      case "offer":
        return this.handleOffer(msg);
      case "re-offer":
        return this.handleReOffer(msg);
      case "ping":
        return this.handlePing(msg);
      case "notify":
        return this.on.notify(msg, transport);
      case "push":
        return this.on.push(msg, transport);
      case "switched":
        this.switched = true;
        this.on.switched(msg);
        if (this.offer?.ignore_disconnect_websocket && this.ws) {
          const ws = this.ws;
          this.ws = null;
          ws.close(1000);
        }
        return;
      case "redirect": {
        const ws = this.ws;
        this.ws = null;
        ws?.close(1000);
        this.openSocket(msg.location, { ...this.connectMessage, redirect: true });
        return;
      }
      case "close":
        return this.end({ code: msg.code, reason: msg.reason, by: "datachannel" });
      case "req-stats":
        return this.sendDC("stats", textEncoder.encode(JSON.stringify({ type: "stats", reports: await this.reports() })), true);
    }
  }

  async handleOffer(offer) {
    this.offer = offer;
    this.connectionId = offer.connection_id;
    const config = { iceServers: offer.config?.iceServers ?? [] };
    if (offer.config?.iceTransportPolicy === "relay") config.iceTransportPolicy = "relay";
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    pc.ontrack = (e) => {
      for (const s of e.streams) s.onremovetrack = (ev) => this.on.removetrack(s, ev.track);
      this.on.track(e);
    };
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      const c = e.candidate;
      this.sendSignaling({ type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment });
    };
    pc.onconnectionstatechange = () => {
      this.on.signaling("in", `pc-${pc.connectionState}`, "peerconnection", {});
      if (pc.connectionState === "failed") this.end({ code: null, reason: "ICE-CONNECTION-FAILED", by: "peerconnection" });
    };
    pc.ondatachannel = (e) => this.addChannel(e.channel);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await this.attachTracks(offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this.sendWS({ type: "answer", sdp: answer.sdp });
    this.settle?.resolve(this.connectionId);
    this.settle = null;
  }

  // attachTracks sends the stream's tracks on the m-lines the offer names.
  async attachTracks(offer) {
    if (!this.stream || !offer.mid) return;
    for (const kind of ["audio", "video"]) {
      const mid = offer.mid[kind];
      const track = this.stream.getTracks().find((t) => t.kind === kind);
      if (!mid || !track) continue;
      const tr = this.pc.getTransceivers().find((t) => t.mid === mid);
      if (!tr) throw new Error(`offer.mid.${kind} is ${mid} but the offer has no such m-line`);
      tr.direction = "sendonly";
      await tr.sender.replaceTrack(track);
      tr.sender.setStreams?.(this.stream);
      if (kind === "video" && Array.isArray(offer.encodings) && offer.encodings.length > 0) {
        const params = tr.sender.getParameters();
        if (params.encodings?.length) {
          params.encodings = params.encodings.map((enc) => {
            const want = offer.encodings.find((e) => e.rid === enc.rid);
            if (!want) return enc;
            const out = { ...enc, active: want.active !== false };
            for (const k of ["maxBitrate", "maxFramerate", "scaleResolutionDownBy", "scalabilityMode"]) {
              if (want[k] !== undefined) out[k] = want[k];
            }
            return out;
          });
          await tr.sender.setParameters(params);
        }
      }
    }
  }

  async handleReOffer(msg) {
    await this.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.sendSignaling({ type: "re-answer", sdp: answer.sdp });
  }

  async handlePing(msg) {
    const pong = { type: "pong" };
    if (msg.stats && this.pc) pong.stats = await this.reports();
    this.sendWS(pong);
  }

  async reports() {
    if (!this.pc) return [];
    const out = [];
    (await this.pc.getStats()).forEach((r) => out.push(r));
    return out;
  }

  addChannel(dc) {
    dc.binaryType = "arraybuffer";
    const entry = (this.offer?.data_channels ?? []).find((d) => d.label === dc.label);
    const ch = { dc, compress: !!entry?.compress, header: entry?.header ?? [], queue: Promise.resolve() };
    this.channels.set(dc.label, ch);
    dc.onmessage = (e) => {
      // Inflating is asynchronous: one queue per channel keeps the order.
      ch.queue = ch.queue.then(() => this.onChannelMessage(dc.label, ch, e.data)).catch((err) => this.fail(err));
    };
    dc.onclose = () => {
      this.on.signaling("in", "datachannel-close", "datachannel", { label: dc.label });
      if (dc.label === "signaling" && !this.closed) this.end({ code: null, reason: "DATA-CHANNEL-CLOSED", by: "datachannel" });
    };
  }

  async onChannelMessage(label, ch, data) {
    let bytes = typeof data === "string" ? textEncoder.encode(data) : new Uint8Array(data);
    if (ch.compress) bytes = await inflate(bytes);
    if (label.startsWith("#")) {
      this.on.message(label, bytes);
      return;
    }
    const msg = JSON.parse(textDecoder.decode(bytes));
    if (label === "rpc") {
      const p = this.rpcPending.get(msg.id);
      if (p) {
        this.rpcPending.delete(msg.id);
        p(msg);
      }
      return;
    }
    await this.handle(msg, "datachannel");
  }

  // sendMessage sends text or bytes on a "#" messaging label.
  sendMessage(label, data) {
    const bytes = typeof data === "string" ? textEncoder.encode(data) : data;
    return this.sendDC(label, bytes);
  }

  // rpc calls a JSON-RPC method on the rpc DataChannel.
  rpc(method, params) {
    const id = ++this.rpcSeq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.rpcPending.delete(id);
        reject(new Error(`${method}: no answer within 5 s`));
      }, 5000);
      this.rpcPending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.sendDC("rpc", textEncoder.encode(JSON.stringify({ jsonrpc: "2.0", id, method, params }))).catch((err) => {
        clearTimeout(timer);
        this.rpcPending.delete(id);
        reject(err);
      });
    });
  }

  // disconnect says goodbye the way the protocol asks, then closes.
  async disconnect() {
    if (this.closed) return;
    const bye = { type: "disconnect", reason: "NO-ERROR" };
    const sig = this.channels.get("signaling");
    if (this.switched && sig?.dc.readyState === "open") {
      try {
        await this.sendDC("signaling", textEncoder.encode(JSON.stringify(bye)), true);
        this.on.signaling("out", bye.type, "datachannel", bye);
      } catch {
        // closing anyway
      }
    } else {
      this.sendWS(bye);
    }
    this.end({ code: 1000, reason: "TYPE-DISCONNECT", by: "client" });
  }

  fail(err) {
    this.on.signaling("in", "error", "client", { error: String(err) });
    if (this.settle) {
      this.settle.reject(err);
      this.settle = null;
    }
    this.end({ code: null, reason: String(err), by: "client" });
  }

  end(why) {
    if (this.closed) return;
    this.closed = true;
    if (this.settle) {
      this.settle.reject(new Error(`closed before the offer: ${why.code ?? ""} ${why.reason ?? ""}`));
      this.settle = null;
    }
    for (const ch of this.channels.values()) ch.dc.close();
    this.pc?.close();
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    this.on.closed(why);
  }
}
