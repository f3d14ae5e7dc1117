// The devtools page: the connect view (one connection per tab), and the
// cluster view (cluster.js). Everything goes through the public signaling
// (sora.js) and the API (api.js).

import { SoraClient } from "./sora.js";
import { testPattern } from "./testpattern.js";
import { call, setToken } from "./api.js";
import { $, el, clear, short } from "./dom.js";
import { startCluster, stopCluster } from "./cluster.js";

const page = {
  config: {},
  client: null,
  source: null, // {stream, stop}
  tiles: new Map(), // stream id ("local" or a connection id) -> tile element
  clientIds: new Map(), // connection id -> client id
  layers: new Map(), // sender connection id -> current rid
  trackStreams: new Map(), // track id -> stream id
  prevStats: new Map(), // stats id -> {bytes, ts}
  statsTimer: null,
};

// --- the log ---

const maxLog = 500;
function log(kind, text, detail) {
  const list = $("#log");
  const body = detail === undefined ? "" : typeof detail === "string" ? detail : JSON.stringify(detail);
  const item = el("li", { dataset: { kind } },
    el("span", { class: "time" }, new Date().toISOString().slice(11, 23)),
    el("span", { class: `kind ${kind}` }, kind),
    el("span", { class: "text" }, text),
    body ? el("code", {}, body.length > 600 ? `${body.slice(0, 600)}…` : body) : null);
  list.prepend(item);
  while (list.children.length > maxLog) list.lastElementChild.remove();
}

function setStatus(text, state = "", connectionId = "") {
  const s = $("#status");
  s.textContent = text;
  s.dataset.state = state;
  s.dataset.connectionId = connectionId;
}

function actionResult(text, ok = true) {
  const r = $("#action-result");
  r.textContent = text;
  r.dataset.ok = ok ? "true" : "false";
}

// --- the connect form ---

const val = (id) => $(`#${id}`).value.trim();
const checked = (id) => $(`#${id}`).checked;

// connectMessage builds Sora's connect message from the form.
function connectMessage() {
  const msg = { type: "connect", role: val("role"), channel_id: val("channel-id"), multistream: checked("multistream") };
  if (val("client-id")) msg.client_id = val("client-id");
  if (val("bundle-id")) msg.bundle_id = val("bundle-id");
  msg.metadata = null;
  if (val("metadata")) {
    try {
      msg.metadata = JSON.parse(val("metadata"));
    } catch (e) {
      throw new Error(`metadata is not JSON: ${e.message}`);
    }
  }
  const media = (kind, codecId, rateId) => {
    if (!checked(kind)) return false;
    const o = {};
    if (val(codecId)) o.codec_type = val(codecId);
    if (val(rateId)) o.bit_rate = Number(val(rateId));
    return Object.keys(o).length ? o : true;
  };
  msg.audio = media("audio", "audio-codec", "audio-bit-rate");
  msg.video = media("video", "video-codec", "video-bit-rate");
  if (checked("simulcast")) {
    msg.simulcast = true;
    if (val("simulcast-request-rid")) msg.simulcast_request_rid = val("simulcast-request-rid");
  }
  if (checked("spotlight")) {
    msg.spotlight = true;
    if (val("spotlight-number")) msg.spotlight_number = Number(val("spotlight-number"));
    if (val("spotlight-focus-rid")) msg.spotlight_focus_rid = val("spotlight-focus-rid");
    if (val("spotlight-unfocus-rid")) msg.spotlight_unfocus_rid = val("spotlight-unfocus-rid");
  }
  const labels = val("dc-labels").split(",").map((s) => s.trim()).filter(Boolean);
  for (const l of labels) if (!l.startsWith("#")) throw new Error(`messaging label ${l} must start with #`);
  if (labels.length && !checked("dc-signaling")) throw new Error("messaging labels need data_channel_signaling");
  if (checked("dc-signaling")) {
    msg.data_channel_signaling = true;
    msg.ignore_disconnect_websocket = checked("dc-ignore-ws");
    const compress = checked("dc-compress");
    const entries = labels.map((label) => ({ label, direction: "sendrecv", ...(compress ? { compress } : {}) }));
    if (compress) for (const label of ["signaling", "notify", "push", "stats", "rpc"]) entries.push({ label, compress });
    if (entries.length) msg.data_channels = entries;
  }
  msg.sora_client = "sorad devtools";
  msg.environment = navigator.userAgent;
  return msg;
}

async function openSource(role) {
  if (role === "recvonly" || (!checked("audio") && !checked("video"))) return null;
  const [width, height] = val("video-size").split("x").map(Number);
  if (val("source") === "devices") {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("the camera needs a secure context (https, or http://localhost)");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: checked("audio"),
      video: checked("video") ? { width, height } : false,
    });
    return { stream, stop: () => stream.getTracks().forEach((t) => t.stop()) };
  }
  return testPattern({ width, height, label: val("client-id") || `${val("channel-id")} ${role}`, audio: checked("audio"), video: checked("video") });
}

async function connect(ev) {
  ev.preventDefault();
  if (page.client) return;
  let msg;
  try {
    msg = connectMessage();
    page.source = await openSource(msg.role);
  } catch (e) {
    setStatus(String(e.message ?? e), "error");
    return;
  }
  $("#connect").disabled = true;
  $("#disconnect").disabled = false;
  setStatus("connecting…", "connecting");
  const labelSelect = clear($("#message-label"));
  for (const d of msg.data_channels ?? []) if (d.label.startsWith("#")) labelSelect.append(el("option", {}, d.label));
  if (!labelSelect.options.length) labelSelect.append(el("option", { value: "" }, "(no # label)"));
  if (page.source) addTile("local", page.source.stream, true);
  const client = new SoraClient(val("signaling-url"), msg, { stream: page.source?.stream, on: handlers() });
  page.client = client;
  try {
    const id = await client.connect();
    setStatus(`connected: ${id}`, "connected", id);
    log("signaling", `connected as ${id}`);
    const methods = clear($("#rpc-method"));
    for (const m of client.offer?.rpc_methods ?? []) methods.append(el("option", { value: m, title: m }, m.split("/").pop()));
    if (!methods.options.length) methods.append(el("option", { value: "" }, "(no RPC)"));
    const local = page.tiles.get("local");
    if (local) local.querySelector(".label").textContent = `local · ${id}`;
    page.statsTimer = setInterval(refreshStats, 1000);
  } catch (e) {
    setStatus(`failed: ${e.message ?? e}`, "error");
    cleanup();
  }
}

function handlers() {
  return {
    signaling(dir, type, transport, msg) {
      if (type === "pong" || type === "candidate" || type === "req-stats") return;
      if (type === "notify" || type === "push") return; // logged by their handlers
      const brief = type === "offer" || type === "re-offer" || type === "answer" || type === "re-answer" ? { sdp: `${(msg.sdp ?? "").length} bytes` } : msg;
      log("signaling", `${dir === "out" ? "→" : "←"} ${type} (${transport})`, brief);
    },
    notify(msg, transport) {
      log("notify", `${msg.event_type} (${transport})`, msg);
      onNotify(msg);
    },
    push(msg, transport) {
      log("push", `push (${transport})`, msg.data);
    },
    track(e) {
      const stream = e.streams[0];
      if (!stream) return;
      page.trackStreams.set(e.track.id, stream.id);
      addTile(stream.id, stream, false);
    },
    removetrack(stream) {
      if (stream.getTracks().length === 0) removeTile(stream.id);
    },
    message(label, bytes) {
      let text = new TextDecoder().decode(bytes);
      // A receiver asking for sender_connection_id gets 26 bytes first.
      const entry = page.client?.offer?.data_channels?.find((d) => d.label === label);
      if (entry?.header?.some((h) => h.type === "sender_connection_id")) text = `[${text.slice(0, 26)}] ${text.slice(26)}`;
      log("message", `← ${label}`, text);
    },
    switched() {
      setStatus(`${$("#status").textContent} (DataChannel signaling)`, "connected", page.client?.connectionId ?? "");
    },
    closed(why) {
      log("signaling", `closed by ${why.by}`, `${why.code ?? ""} ${why.reason ?? ""}`.trim());
      setStatus(`disconnected: ${why.code ?? ""} ${why.reason ?? ""}`, "closed");
      cleanup();
    },
  };
}

function onNotify(msg) {
  const note = (e) => {
    if (e?.connection_id && e.client_id) page.clientIds.set(e.connection_id, e.client_id);
  };
  switch (msg.event_type) {
    case "connection.created":
      note(msg);
      for (const e of msg.data ?? []) note(e);
      for (const [id, tile] of page.tiles) {
        if (id !== "local" && page.clientIds.has(id)) tile.querySelector(".client").textContent = page.clientIds.get(id);
      }
      break;
    case "connection.destroyed":
      removeTile(msg.connection_id);
      break;
    case "simulcast.switched":
      page.layers.set(msg.sender_connection_id, msg.current_rid);
      break;
    case "spotlight.focused":
    case "spotlight.unfocused":
      page.tiles.get(msg.connection_id)?.classList.toggle("focused", msg.event_type === "spotlight.focused");
      break;
  }
}

function disconnect() {
  page.client?.disconnect();
}

function cleanup() {
  clearInterval(page.statsTimer);
  page.statsTimer = null;
  page.client = null;
  page.source?.stop();
  page.source = null;
  for (const id of [...page.tiles.keys()]) removeTile(id);
  page.layers.clear();
  page.prevStats.clear();
  $("#connect").disabled = false;
  $("#disconnect").disabled = true;
}

// --- videos ---

function addTile(id, stream, local) {
  let tile = page.tiles.get(id);
  if (!tile) {
    const video = el("video", { autoplay: true, playsinline: true, muted: true });
    video.muted = true;
    const actions = local ? [] : tileActions(id);
    tile = el("figure", { class: `tile${local ? " local" : ""}`, dataset: { connectionId: id } },
      video,
      el("figcaption", {},
        el("span", { class: "label" }, local ? "local" : id),
        el("span", { class: "client" }, page.clientIds.get(id) ?? ""),
        el("span", { class: "actions" }, ...actions)));
    page.tiles.set(id, tile);
    $("#videos").append(tile);
  }
  const video = tile.querySelector("video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
}

function removeTile(id) {
  const tile = page.tiles.get(id);
  if (!tile) return;
  tile.querySelector("video").srcObject = null;
  tile.remove();
  page.tiles.delete(id);
}

// tileActions are the channel APIs about one remote connection.
function tileActions(id) {
  const apiCall = async (what, target, body) => {
    try {
      const r = await call(val("api-url"), target, body);
      actionResult(`${what}: ok`);
      log("api", `${target}`, r);
    } catch (e) {
      actionResult(`${what}: ${e.message}`, false);
      log("error", `${target}`, e.body ?? e.message);
    }
  };
  const channel = () => page.client?.connectionId && val("channel-id");
  const rid = (r) => el("button", {
    type: "button", class: "small", title: `RequestRtpStream ${r}`,
    onclick: () => apiCall(`layer ${r}`, "Sora_20201005.RequestRtpStream",
      { channel_id: channel(), recv_connection_id: page.client?.connectionId, send_connection_id: id, rid: r }),
  }, r);
  return [
    rid("r0"), rid("r1"), rid("r2"),
    el("button", {
      type: "button", class: "small", title: "FocusSpotlight",
      onclick: () => apiCall("focus", "Sora_20200807.FocusSpotlight", { channel_id: channel(), connection_id: id }),
    }, "focus"),
    el("button", {
      type: "button", class: "small danger", title: "DisconnectConnection",
      onclick: () => apiCall("disconnect", "Sora_20151104.DisconnectConnection", { channel_id: channel(), connection_id: id }),
    }, "disconnect"),
  ];
}

// --- channel actions ---

async function pushChannel() {
  let data;
  try {
    data = JSON.parse(val("push-data"));
  } catch (e) {
    actionResult(`push data is not JSON: ${e.message}`, false);
    return;
  }
  try {
    await call(val("api-url"), "Sora_20160711.PushChannel", { channel_id: val("channel-id"), data });
    actionResult("PushChannel: ok");
  } catch (e) {
    actionResult(`PushChannel: ${e.message}`, false);
    log("error", "PushChannel", e.body ?? e.message);
  }
}

async function sendMessage() {
  const label = $("#message-label").value;
  if (!page.client || !label) {
    actionResult("connect with a messaging label first", false);
    return;
  }
  try {
    await page.client.sendMessage(label, val("message-text"));
    log("message", `→ ${label}`, val("message-text"));
  } catch (e) {
    actionResult(`send: ${e.message}`, false);
  }
}

async function callRPC() {
  const method = $("#rpc-method").value;
  if (!page.client || !method) {
    actionResult("connect with data_channel_signaling first", false);
    return;
  }
  let params;
  try {
    params = JSON.parse(val("rpc-params") || "{}");
  } catch (e) {
    actionResult(`params are not JSON: ${e.message}`, false);
    return;
  }
  try {
    const reply = await page.client.rpc(method, params);
    log("rpc", `${method}${reply.error ? " failed" : ""}`, reply.error ?? reply.result);
    actionResult(`${method}: ${reply.error ? reply.error.message : "ok"}`, !reply.error);
  } catch (e) {
    actionResult(`${method}: ${e.message}`, false);
  }
}

// --- statistics ---

async function refreshStats() {
  const pc = page.client?.pc;
  if (!pc) return;
  const report = await pc.getStats();
  const codecs = new Map();
  report.forEach((r) => r.type === "codec" && codecs.set(r.id, r.mimeType?.split("/")[1] ?? ""));
  const rows = [];
  report.forEach((r) => {
    if (r.type !== "inbound-rtp" && r.type !== "outbound-rtp") return;
    const inbound = r.type === "inbound-rtp";
    const bytes = inbound ? r.bytesReceived : r.bytesSent;
    const prev = page.prevStats.get(r.id);
    page.prevStats.set(r.id, { bytes, ts: r.timestamp });
    const kbps = prev && r.timestamp > prev.ts ? Math.round(((bytes - prev.bytes) * 8) / (r.timestamp - prev.ts)) : null;
    const conn = inbound ? page.trackStreams.get(r.trackIdentifier) ?? "" : "local";
    const layer = inbound ? (r.kind === "video" ? page.layers.get(conn) ?? "" : "") : r.rid ?? "";
    const frames = r.kind !== "video" ? null : inbound ? r.framesDecoded ?? 0 : r.framesEncoded ?? 0;
    rows.push({
      direction: inbound ? "in" : "out", kind: r.kind, conn, mid: r.mid ?? "", layer,
      codec: codecs.get(r.codecId) ?? "", kbps, packets: inbound ? r.packetsReceived : r.packetsSent, frames,
      size: r.frameWidth ? `${r.frameWidth}×${r.frameHeight}` : "", width: r.frameWidth, fps: r.framesPerSecond ?? "",
    });
  });
  rows.sort((a, b) => a.direction.localeCompare(b.direction) || a.conn.localeCompare(b.conn) || a.kind.localeCompare(b.kind) || a.layer.localeCompare(b.layer));
  const tbody = clear($("#stats tbody"));
  for (const x of rows) {
    tbody.append(el("tr", {
      dataset: { direction: x.direction, kind: x.kind, connectionId: x.conn, layer: x.layer, frames: x.frames ?? "", packets: x.packets ?? 0, width: x.width ?? "" },
    }, ...[x.direction, x.kind, short(x.conn), x.mid, x.layer, x.codec, x.kbps ?? "", x.packets ?? "", x.frames ?? "", x.size, x.fps]
      .map((c) => el("td", {}, String(c)))));
  }
}

// --- views and start ---

function showView(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === name);
  $("#view-connect").hidden = name !== "connect";
  $("#view-cluster").hidden = name !== "cluster";
  if (name === "cluster") startCluster({ apiURL: () => val("api-url"), nodeName: page.config.node_name });
  else stopCluster();
}

async function start() {
  const ws = location.protocol === "https:" ? "wss:" : "ws:";
  $("#signaling-url").value = `${ws}//${location.host}/signaling`;
  try {
    const res = await fetch("config.json", { cache: "no-store" });
    page.config = await res.json();
  } catch (e) {
    log("error", "config.json", String(e));
  }
  $("#api-url").value = page.config.api_url ?? "";
  $("#node-info").textContent = page.config.node_name ? `${page.config.node_name} · ${page.config.version ?? ""}` : "";
  $("#api-token").addEventListener("input", (e) => setToken(e.target.value));
  $("#connect-form").addEventListener("submit", connect);
  $("#disconnect").addEventListener("click", disconnect);
  $("#push-channel").addEventListener("click", pushChannel);
  $("#send-message").addEventListener("click", sendMessage);
  $("#rpc-call").addEventListener("click", callRPC);
  $("#clear-log").addEventListener("click", () => clear($("#log")));
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showView(b.dataset.view));
  window.addEventListener("pagehide", () => page.client?.disconnect());
  document.body.dataset.ready = "true";
}

start();
