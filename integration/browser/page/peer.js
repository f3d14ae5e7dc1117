// One Sora peer per page, using sora-js-sdk exactly as an application does:
// Sora.connection(url).<role>(channelId, metadata, options), callbacks set
// with conn.on(...), then await conn.connect(stream). Everything the SDK
// reports is recorded in `state`; the driver reads it with peerState().
import Sora from "/sora.js";

const t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);

const state = {
  name: new URLSearchParams(location.search).get("name") || "peer",
  sdk_version: Sora.version(),
  user_agent: navigator.userAgent,
  role: null,
  channel_id: null,
  signaling_url: null, // the URL this page gave Sora.connection
  connection_id: null,
  connect_started_ms: null,
  connect_resolved_ms: null,
  connect_error: null,
  connected_callback: false,
  connected_callback_ms: null,
  connected_message: null,
  notifies: [], // {ms, transport, message}
  pushes: [], // {ms, transport, message}
  tracks: [], // {ms, kind, stream_id, track_id}
  removed_tracks: [], // {ms, kind, stream_id, track_id}
  disconnects: [], // {ms, type, title, code, reason, params}
  timeouts: 0,
  signaling: [], // {ms, type, transport, data}
  switched: null, // {ms, message, websocket_open} when the SDK's switched callback fired
  datachannels: [], // {ms, label, direction} from the SDK's datachannel callback
  messages: [], // {ms, label, bytes: [..]} from the SDK's message callback
  timeline: [], // {ms, type, data}
  errors: [],
};
document.getElementById("name").textContent = state.name;

let conn = null;
let localStream = null;
// Remote track id -> the stream id the track event carried.
const trackStreams = new Map();

// safe turns SDK event data into something JSON can carry.
function safe(v) {
  try {
    return JSON.parse(JSON.stringify(v ?? null));
  } catch (e) {
    return String(v);
  }
}

function attach(stream) {
  const id = "v-" + stream.id;
  if (document.getElementById(id)) return;
  const v = document.createElement("video");
  v.id = id;
  v.autoplay = true;
  v.muted = true;
  v.playsInline = true;
  v.srcObject = stream;
  document.getElementById("videos").appendChild(v);
  v.play().catch((e) => state.errors.push(`play ${stream.id}: ${e}`));
}

// soraConnect connects this page's peer and resolves with its connection id.
// constraints are getUserMedia's for a sending role.
window.soraConnect = async ({ signalingUrl, role, channelId, metadata = null, options = {}, constraints = { audio: true, video: true } }) => {
  state.role = role;
  state.channel_id = channelId;
  state.signaling_url = signalingUrl;
  const sora = Sora.connection(signalingUrl, false);
  conn = sora[role](channelId, metadata, { audio: true, video: true, ...options });
  conn.on("connected", (msg) => {
    state.connected_callback = true;
    state.connected_callback_ms = ms();
    state.connected_message = safe(msg);
  });
  conn.on("notify", (msg, transport) => state.notifies.push({ ms: ms(), transport, message: safe(msg) }));
  conn.on("push", (msg, transport) => state.pushes.push({ ms: ms(), transport, message: safe(msg) }));
  conn.on("track", (ev) => {
    const stream = ev.streams[0];
    state.tracks.push({ ms: ms(), kind: ev.track.kind, stream_id: stream ? stream.id : null, track_id: ev.track.id });
    if (stream) {
      trackStreams.set(ev.track.id, stream.id);
      attach(stream);
    }
  });
  conn.on("removetrack", (ev) => {
    const tr = ev.track;
    state.removed_tracks.push({ ms: ms(), kind: tr && tr.kind, stream_id: ev.target && ev.target.id, track_id: tr && tr.id });
  });
  conn.on("disconnect", (ev) => {
    state.disconnects.push({ ms: ms(), type: ev.type, title: ev.title ?? null, code: ev.code ?? null, reason: ev.reason ?? null, params: safe(ev.params) });
  });
  conn.on("timeout", () => state.timeouts++);
  conn.on("switched", (msg) => {
    state.switched = { ms: ms(), message: safe(msg), websocket_open: conn.ws !== null && conn.ws !== undefined };
  });
  conn.on("datachannel", (ev) => state.datachannels.push({ ms: ms(), label: ev.datachannel.label, direction: ev.datachannel.direction ?? null, header: safe(ev.datachannel.header) }));
  conn.on("message", (ev) => state.messages.push({ ms: ms(), label: ev.label, bytes: Array.from(new Uint8Array(ev.data)) }));
  conn.on("signaling", (ev) => state.signaling.push({ ms: ms(), type: ev.type, transport: ev.transportType, data: safe(ev.data) }));
  conn.on("timeline", (ev) => {
    // The SDK logs every signaling message here too (already kept in
    // `signaling`): keep only their names.
    const dup = ev.logType === "websocket" && /^(send-|onmessage-|notify-)/.test(ev.type);
    state.timeline.push({ ms: ms(), log: ev.logType, type: ev.type, data: dup ? undefined : safe(ev.data) });
  });

  state.connect_started_ms = ms();
  try {
    if (role === "recvonly") {
      await conn.connect();
    } else {
      localStream = await navigator.mediaDevices.getUserMedia(constraints);
      await conn.connect(localStream);
    }
  } catch (e) {
    state.connect_error = { name: e && e.name, message: e && e.message, code: e && e.code, reason: e && e.reason };
    throw e;
  }
  state.connect_resolved_ms = ms();
  state.connection_id = conn.connectionId;
  return conn.connectionId;
};

// mediaBySDPMid maps each mid of an SDP to the msid (stream id, track id) of
// its m-section, or null when it has none.
function msidByMid(sdp) {
  const out = {};
  for (const section of (sdp || "").split(/\r?\nm=/).slice(1)) {
    const text = "\n" + section;
    const mid = /\na=mid:(\S+)/.exec(text);
    const msid = /\na=msid:(\S+) (\S+)/.exec(text);
    const dir = /\na=(sendrecv|sendonly|recvonly|inactive)/.exec(text);
    if (mid) out[mid[1]] = { stream_id: msid ? msid[1] : null, track_id: msid ? msid[2] : null, direction: dir ? dir[1] : null, kind: section.split(" ")[0] };
  }
  return out;
}

// sampleStats reads getStats() and returns every inbound-rtp with the stream
// (= sending connection id) it belongs to.
window.sampleStats = async () => {
  if (!conn || !conn.pc) return { ms: ms(), error: "no peer connection", inbound: [], outbound: [] };
  const pc = conn.pc;
  const remote = msidByMid(pc.remoteDescription && pc.remoteDescription.sdp);
  const report = await pc.getStats();
  const codecs = {};
  for (const r of report.values()) if (r.type === "codec") codecs[r.id] = r.mimeType;
  const inbound = [];
  const outbound = [];
  for (const r of report.values()) {
    if (r.type === "inbound-rtp") {
      const bySdp = r.mid !== undefined ? remote[r.mid] : undefined;
      inbound.push({
        kind: r.kind,
        mid: r.mid ?? null,
        ssrc: r.ssrc,
        track_identifier: r.trackIdentifier ?? null,
        stream_id: (bySdp && bySdp.stream_id) || trackStreams.get(r.trackIdentifier) || null,
        stream_id_from_track_event: trackStreams.get(r.trackIdentifier) ?? null,
        codec: codecs[r.codecId] ?? null,
        packets_received: r.packetsReceived ?? 0,
        packets_lost: r.packetsLost ?? 0,
        bytes_received: r.bytesReceived ?? 0,
        frames_decoded: r.framesDecoded ?? null,
        key_frames_decoded: r.keyFramesDecoded ?? null,
        frame_width: r.frameWidth ?? null,
        frame_height: r.frameHeight ?? null,
        total_samples_received: r.totalSamplesReceived ?? null,
        pli_count: r.pliCount ?? null,
        nack_count: r.nackCount ?? null,
      });
    } else if (r.type === "outbound-rtp") {
      outbound.push({
        kind: r.kind,
        mid: r.mid ?? null,
        rid: r.rid ?? null,
        frame_width: r.frameWidth ?? null,
        codec: codecs[r.codecId] ?? null,
        packets_sent: r.packetsSent ?? 0,
        frames_encoded: r.framesEncoded ?? null,
        key_frames_encoded: r.keyFramesEncoded ?? null,
        pli_count: r.pliCount ?? null,
      });
    }
  }
  return {
    ms: ms(),
    connection_state: pc.connectionState,
    ice_connection_state: pc.iceConnectionState,
    remote_media: remote,
    inbound,
    outbound,
  };
};

// peerState is everything recorded so far, plus the live SDK fields.
window.peerState = () => ({
  ...state,
  connection_id: state.connection_id ?? (conn && conn.connectionId) ?? null,
  // Where the SDK's first connect went, and where the offer came from
  // (they differ after a redirect).
  contact_signaling_url: conn ? conn.contactSignalingUrl || null : null,
  connected_signaling_url: conn ? conn.connectedSignalingUrl || null : null,
  remote_connection_ids: conn ? [...conn.remoteConnectionIds] : [],
  websocket_open: conn ? conn.ws !== null && conn.ws !== undefined : null,
  pc_connection_state: conn && conn.pc ? conn.pc.connectionState : null,
  local_sdp: conn && conn.pc && conn.pc.localDescription ? conn.pc.localDescription.sdp : null,
  remote_sdp: conn && conn.pc && conn.pc.remoteDescription ? conn.pc.remoteDescription.sdp : null,
});

// soraSendMessage sends text (UTF-8) on a # label as an application does.
window.soraSendMessage = (label, text) => conn.sendMessage(label, new TextEncoder().encode(text));

// soraRPC calls a method on the rpc DataChannel and returns its result,
// or {error} with the JSON-RPC error object: the SDK rejects with
// Error(String(error)), so the answer is read off the DataChannel too.
const rpcAnswers = [];
window.soraRPC = async (method, params) => {
  const dc = conn.soraDataChannels && conn.soraDataChannels.rpc;
  if (dc && !dc.__recorded) {
    dc.__recorded = true;
    dc.addEventListener("message", (ev) => {
      try {
        rpcAnswers.push(JSON.parse(typeof ev.data === "string" ? ev.data : new TextDecoder().decode(ev.data)));
      } catch (e) {
        state.errors.push(`rpc answer: ${e}`);
      }
    });
  }
  try {
    return { result: safe(await conn.rpc(method, params)) };
  } catch (e) {
    // The SDK's handler runs first and rejects in a microtask; ours runs
    // after it: give it a turn.
    await new Promise((r) => setTimeout(r, 0));
    const answer = rpcAnswers.findLast((a) => a.error);
    return { error: answer ? safe(answer.error) : { message: String(e) } };
  }
};

// timeJoin connects a fresh recvonly connection to channelId, times it from
// the call of connect() to its resolution and to the first frame of
// publisherId's video that the page decodes and presents (the video
// element's requestVideoFrameCallback), then disconnects. Milliseconds.
window.timeJoin = async ({ signalingUrl, channelId, publisherId, timeoutMs = 10_000 }) => {
  const sora = Sora.connection(signalingUrl, false);
  const c = sora.recvonly(channelId, null, { audio: true, video: true, connectionTimeout: timeoutMs });
  const video = document.createElement("video");
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  document.getElementById("videos").appendChild(video);
  let started = 0;
  let trackAt = 0;
  const firstFrame = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no frame of ${publisherId} within ${timeoutMs} ms`)), timeoutMs);
    c.on("track", (ev) => {
      const stream = ev.streams[0];
      if (ev.track.kind !== "video" || !stream || stream.id !== publisherId) return;
      trackAt = performance.now();
      video.srcObject = stream;
      video.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        resolve(performance.now());
      });
      video.play().catch((e) => state.errors.push(`play ${stream.id}: ${e}`));
    });
  });
  try {
    started = performance.now();
    await c.connect();
    const connected = performance.now();
    const frame = await firstFrame;
    // What the receiver did to get there: key frame requests it sent.
    let pli = null;
    for (const s of (await c.pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "video") pli = (s.pliCount ?? 0) + (s.firCount ?? 0);
    }
    return { connect_ms: connected - started, track_ms: trackAt - started, first_frame_ms: frame - started, key_frame_requests: pli };
  } finally {
    await c.disconnect().catch(() => {});
    video.srcObject = null;
    video.remove();
  }
};

// soraDisconnect leaves the channel as an application does.
window.soraDisconnect = async () => {
  if (conn) await conn.disconnect();
  if (localStream) for (const t of localStream.getTracks()) t.stop();
};

window.addEventListener("error", (e) => state.errors.push(`error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => state.errors.push(`unhandledrejection: ${e.reason}`));
// remoteMLines counts the m-lines of the remote description.
window.remoteMLines = () => ((conn && conn.pc && conn.pc.remoteDescription && conn.pc.remoteDescription.sdp) || "").split(/\r?\nm=/).length - 1;
window.peerReady = true;
