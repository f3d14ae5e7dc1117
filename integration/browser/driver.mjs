// Browser end-to-end driver for sorad: runs one named scenario with the real
// sora-js-sdk in Chromium (driven by playwright-core), or, for the devtools
// scenarios, sorad's own devtools page as sorad serves it, and prints ONE
// JSON object with what every peer (or the page, in "devtools") observed. Exit status 0 when the scenario ran
// to the end (the Go test judges the observations), 1 when it could not
// (the JSON then has "error"), 2 on bad usage.
//
//   node driver.mjs --scenario NAME --signaling-url ws://IP:PORT/signaling \
//     --api-url http://IP:PORT/ [--signaling-url ... --api-url ...] \
//     --chromium /usr/bin/chromium --profile DIR
//
// One --signaling-url and one --api-url per sorad node, in the same order;
// the first node is where peers connect unless a scenario says otherwise.
// With more than one node, the driver waits until every node lists all of
// them as one cluster.
//
// It only talks to the addresses it is given (sorad, inside the test's own
// network namespace) and to its own page server on localhost.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const started = Date.now();
const elapsed = () => Date.now() - started;
const log = (...a) => console.error(`[driver +${elapsed()}ms]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const { values: opt } = parseArgs({
  options: {
    scenario: { type: "string" },
    "signaling-url": { type: "string", multiple: true },
    "api-url": { type: "string", multiple: true },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    profile: { type: "string" },
    "time-limit": { type: "string" }, // seconds, whole scenario: 60, or 100 for the devtools ones
  },
});
for (const k of ["scenario", "signaling-url", "api-url", "profile"]) {
  if (!opt[k]) {
    console.error(`missing --${k}`);
    process.exit(2);
  }
}
const signalingURLs = opt["signaling-url"];
const apiURLs = opt["api-url"];
if (signalingURLs.length !== apiURLs.length) {
  console.error("one --signaling-url and one --api-url per node");
  process.exit(2);
}

// The flags every Chromium of these tests runs with (the fresh
// --user-data-dir is the persistent context's profile directory).
const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

const result = {
  scenario: opt.scenario,
  ok: false,
  error: null,
  elapsed_ms: 0,
  browser_version: null,
  signaling_urls: signalingURLs, // one per node
  api_urls: apiURLs,
  cluster_nodes: [], // per node, its ListClusterNodes once all were ready
  steps: [], // {ms, what}
  api_calls: [], // {ms, node, url, target, body, status, response}
  redirect: null, // the redirect scenario's account of the redirect
  rpc: null, // the datachannel-signaling scenario's RPC answers
  messaging: null, // the messaging scenario's connection IDs
  joins: null, // the join-latency scenario's {connect_ms, first_frame_ms}
  devtools: null, // the devtools scenario's observations
  peers: {}, // name -> peer page state, with "stats" samples
};
const step = (what) => {
  result.steps.push({ ms: elapsed(), what });
  log(what);
};

let printed = false;
function finish(code) {
  if (printed) return;
  printed = true;
  result.elapsed_ms = elapsed();
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}

// --- page server on localhost (a secure context, so getUserMedia works) ---

const files = {
  "/": ["page/index.html", "text/html; charset=utf-8"],
  "/peer.js": ["page/peer.js", "text/javascript; charset=utf-8"],
  "/sora.js": ["node_modules/sora-js-sdk/dist/sora.js", "text/javascript; charset=utf-8"],
  "/favicon.ico": null,
};
const server = createServer(async (req, res) => {
  const f = files[new URL(req.url, "http://localhost").pathname];
  if (f === null) {
    res.writeHead(204).end();
    return;
  }
  if (!f) {
    res.writeHead(404).end();
    return;
  }
  try {
    const body = await readFile(join(here, f[0]));
    res.writeHead(200, { "content-type": f[1], "cache-control": "no-store" }).end(body);
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageBase = `http://localhost:${server.address().port}/`;

// --- sorad API ---

// api calls target on node (an index into --api-url).
// BROWSER_API_BEARER_TOKEN is sorad's api_bearer_token when the test set
// one (netns.sh passes it to sorad); every call then carries it.
const apiToken = process.env.BROWSER_API_BEARER_TOKEN ?? "";

async function api(target, body, node = 0) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 10_000);
  const call = { ms: elapsed(), node, url: apiURLs[node], target, body, status: null, response: null };
  result.api_calls.push(call);
  const headers = { "x-sora-target": target, "content-type": "application/json" };
  if (apiToken) headers.authorization = `Bearer ${apiToken}`;
  try {
    const res = await fetch(apiURLs[node], {
      method: "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctl.signal,
    });
    call.status = res.status;
    const text = await res.text();
    try {
      call.response = JSON.parse(text);
    } catch {
      call.response = text;
    }
    return call;
  } finally {
    clearTimeout(timer);
  }
}

// waitReady polls every node until each lists all the nodes, connected and
// out of the initial mode, as one formed cluster (the state in which a node
// accepts connections), and keeps those lists in result.cluster_nodes.
async function waitReady(limitMs) {
  const until = Date.now() + limitMs;
  for (let node = 0; node < apiURLs.length; node++) {
    let last = "no answer";
    for (;;) {
      try {
        const r = await api("Sora_20211215.ListClusterNodes", { include_all_known_nodes: true }, node);
        result.api_calls.pop(); // polling noise
        const list = r.response;
        if (r.status === 200 && Array.isArray(list) && list.length === apiURLs.length &&
          new Set(list.map((n) => n.node_name)).size === apiURLs.length &&
          list.every((n) => n.connected && n.mode !== "initial" && n.epoch > 0)) {
          result.cluster_nodes[node] = list;
          break;
        }
        last = `${r.status} ${JSON.stringify(list)}`;
      } catch (e) {
        result.api_calls.pop();
        last = String(e.cause ?? e);
      }
      if (Date.now() > until) throw new Error(`sorad at ${apiURLs[node]} not ready after ${limitMs} ms: ${last}`);
      await sleep(100);
    }
  }
}

// --- browser and peers ---

let context = null;
const peers = new Map(); // name -> {page, name}

async function openPeer(name) {
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.error(`[${name} console.${m.type()}] ${m.text()}`);
  });
  page.on("pageerror", (e) => console.error(`[${name} pageerror] ${e}`));
  await page.goto(`${pageBase}?name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.peerReady === true, null, { timeout: 10_000 });
  const p = { name, page };
  peers.set(name, p);
  return p;
}

// connectPeer connects p's page. options are the SDK's connection options
// beside the timeout; constraints, getUserMedia's for a sending role.
async function connectPeer(p, role, channelId, metadata = null, signalingUrl = signalingURLs[0], options = {}, constraints = undefined) {
  step(`${p.name}: connect ${role} to ${channelId} at ${signalingUrl} ${JSON.stringify(options)}`);
  const id = await p.page.evaluate((a) => window.soraConnect(a), {
    signalingUrl,
    role,
    channelId,
    metadata,
    options: { connectionTimeout: 20_000, ...options },
    constraints,
  });
  p.connectionId = id;
  step(`${p.name}: connected as ${id}`);
  return id;
}

const peerState = (p) => p.page.evaluate(() => window.peerState());

// waitFor polls cond over every peer's state until it holds; false on timeout.
async function waitFor(what, limitMs, cond) {
  const until = Date.now() + limitMs;
  for (;;) {
    const states = {};
    for (const [name, p] of peers) states[name] = await peerState(p);
    if (cond(states)) {
      step(`${what}: yes`);
      return true;
    }
    if (Date.now() > until) {
      step(`${what}: NOT within ${limitMs} ms`);
      return false;
    }
    await sleep(100);
  }
}

// sampleStats records one getStats sample of every peer.
async function sampleStats() {
  for (const p of peers.values()) {
    (p.stats ??= []).push(await p.page.evaluate(() => window.sampleStats()));
  }
}

const videoDecoded = (sample, streamId) =>
  sample.inbound.some((s) => s.kind === "video" && s.stream_id === streamId && s.frames_decoded > 0);
const decodedWidth = (sample, streamId) =>
  Math.max(0, ...sample.inbound.filter((s) => s.kind === "video" && s.stream_id === streamId && s.frames_decoded > 0).map((s) => s.frame_width ?? 0));

// measureMedia waits (bounded, not failing) until every peer decodes video
// from every stream it expects, then takes two samples three seconds apart.
async function measureMedia(expect) {
  const until = Date.now() + 20_000;
  for (;;) {
    let all = true;
    for (const [name, streams] of Object.entries(expect)) {
      const s = await peers.get(name).page.evaluate(() => window.sampleStats());
      if (!streams.every((id) => videoDecoded(s, id))) all = false;
    }
    if (all) {
      step("every peer decodes video from every expected stream");
      break;
    }
    if (Date.now() > until) {
      step("NOT every peer decodes video from every expected stream within 20 s");
      break;
    }
    await sleep(250);
  }
  await sampleStats();
  step("stats sample 1");
  await sleep(3_000);
  await sampleStats();
  step("stats sample 2");
}

const created = (st, id) => st.notifies.some((n) => n.message.event_type === "connection.created" && n.message.connection_id === id);
// knows: st learned of id through connection.created, either a notify about
// id (id joined later) or the `data` list of st's own connection.created
// (id was already there), as Sora tells a newcomer about existing members.
const knows = (st, selfID, id) =>
  created(st, id) ||
  st.notifies.some((n) => n.message.event_type === "connection.created" && n.message.connection_id === selfID &&
    (n.message.data ?? n.message.metadata_list ?? []).some((d) => d.connection_id === id));
const destroyed = (st, id) => st.notifies.some((n) => n.message.event_type === "connection.destroyed" && n.message.connection_id === id);

// --- the devtools page (media/devtools) ---

// devtoolsShot writes a screenshot of page, scrolled to its top, to the
// work directory.
async function devtoolsShot(page, file, dt) {
  await page.evaluate(() => {
    window.scrollTo(0, 0);
    for (const e of document.querySelectorAll(".side, .log")) e.scrollTop = 0;
  });
  await page.screenshot({ path: join(dirname(opt.profile), file) });
  dt.screenshots.push(file);
  step(`screenshot ${file}`);
}

// --- scenarios ---

const scenarios = {
  // The devtools page sorad serves at /devtools/ on the signaling port, in
  // two tabs: each connects sendrecv with the page's test pattern on
  // DataChannel signaling and decodes the other's video (read from the
  // page's statistics table); they exchange #chat messages; a calls
  // JSON-RPC; a tab without the API token is refused by the API, one with
  // it pushes to the channel and both logs show the push. A screenshot of
  // the view goes to the work directory.
  async devtools() {
    const ch = "browser-devtools";
    const pageURL = `http://${new URL(signalingURLs[0]).host}/devtools/`;
    const dt = (result.devtools = {
      page_url: pageURL, connection_ids: {}, frames_decoded: {}, tile_labels: {},
      switched: {}, messages: {}, rpc: null, refused_push: null, pushes_seen: {}, closed: {}, screenshots: [], errors: [],
    });
    const tabs = [];
    for (const name of ["a", "b"]) {
      const page = await context.newPage();
      await page.setViewportSize({ width: 1280, height: 860 });
      page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") {
          console.error(`[devtools ${name} console.${m.type()}] ${m.text()}`);
          // Tab b's push without the token is refused on purpose.
          const expected = name === "b" && m.text().includes("status of 401");
          if (m.type() === "error" && !expected) dt.errors.push(`${name}: ${m.text()}`);
        }
      });
      page.on("pageerror", (e) => dt.errors.push(`${name}: ${e}`));
      await page.goto(pageURL);
      await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 10_000, polling: 250 });
      // Tab a has the token; tab b shows what the API says without it.
      if (name === "a" && apiToken) await page.fill("#api-token", apiToken);
      await page.fill("#channel-id", ch);
      await page.fill("#client-id", `devtools-${name}`);
      await page.selectOption("#role", "sendrecv");
      await page.selectOption("#source", "pattern");
      await page.selectOption("#video-codec", "VP8");
      // Both on DataChannel signaling with #chat; a also closes its
      // WebSocket after switched and has every DataChannel compressed.
      await page.check("#dc-signaling");
      await page.fill("#dc-labels", "#chat");
      if (name === "a") {
        await page.check("#dc-ignore-ws");
        await page.check("#dc-compress");
      }
      step(`devtools ${name}: connect`);
      await page.click("#connect");
      await page.waitForFunction(() => document.querySelector("#status").dataset.state === "connected", null, { timeout: 20_000, polling: 250 });
      const id = await page.$eval("#status", (e) => e.dataset.connectionId);
      dt.connection_ids[name] = id;
      step(`devtools ${name}: connected as ${id}`);
      tabs.push({ name, page, id });
    }
    for (const [i, t] of tabs.entries()) {
      const other = tabs[1 - i].id;
      await t.page.waitForFunction((other) => [...document.querySelectorAll("#stats tbody tr")].some((r) =>
        r.dataset.direction === "in" && r.dataset.kind === "video" && r.dataset.connectionId === other && Number(r.dataset.frames) > 30),
      other, { timeout: 25_000, polling: 250 });
      dt.frames_decoded[t.name] = await t.page.$$eval("#stats tbody tr", (rows, other) => Math.max(0, ...rows
        .filter((r) => r.dataset.direction === "in" && r.dataset.kind === "video" && r.dataset.connectionId === other)
        .map((r) => Number(r.dataset.frames))), other);
      dt.tile_labels[t.name] = await t.page.$$eval("#videos figure", (fs) => fs.map((f) => f.querySelector(".label").textContent));
      step(`devtools ${t.name}: decodes ${other}, ${dt.frames_decoded[t.name]} frames; tiles ${JSON.stringify(dt.tile_labels[t.name])}`);
    }
    const [a, b] = tabs;
    for (const t of tabs) {
      await t.page.waitForFunction(() => document.querySelector("#status").textContent.includes("DataChannel signaling"), null, { timeout: 15_000, polling: 250 });
      dt.switched[t.name] = await t.page.$eval("#status", (e) => e.textContent);
    }
    for (const [from, to] of [[a, b], [b, a]]) {
      const text = `hello from ${from.name}`;
      await from.page.selectOption("#message-label", "#chat");
      await from.page.fill("#message-text", text);
      await from.page.click("#send-message");
      await to.page.waitForFunction((text) => [...document.querySelectorAll("#log li[data-kind=message] code")].some((c) => c.textContent === text),
        text, { timeout: 10_000, polling: 250 });
      dt.messages[to.name] = await to.page.$$eval("#log li[data-kind=message]", (ls) => ls.map((l) => `${l.querySelector(".text").textContent}: ${l.querySelector("code")?.textContent}`));
    }
    step(`devtools: #chat both ways ${JSON.stringify(dt.messages)}`);
    // JSON-RPC from tab a (compressed): its metadata, pushed to b.
    await a.page.selectOption("#rpc-method", "2025.2.0/PutSignalingNotifyMetadata");
    await a.page.fill("#rpc-params", JSON.stringify({ metadata: { hand: "up" }, push: true }));
    await a.page.click("#rpc-call");
    await a.page.waitForFunction(() => document.querySelector("#log li[data-kind=rpc]"), null, { timeout: 10_000, polling: 250 });
    dt.rpc = await a.page.$$eval("#log li[data-kind=rpc]", (ls) => ls.map((l) => `${l.querySelector(".text").textContent}: ${l.querySelector("code")?.textContent}`));
    await b.page.waitForFunction(() => [...document.querySelectorAll("#log li[data-kind=push] code")].some((c) => c.textContent.includes("signaling_notify_metadata_ext")),
      null, { timeout: 10_000, polling: 250 });
    step(`devtools: RPC ${JSON.stringify(dt.rpc)}, b got the metadata push`);
    if (apiToken) {
      await b.page.click("#push-channel");
      await b.page.waitForFunction(() => document.querySelector("#action-result").dataset.ok === "false", null, { timeout: 10_000, polling: 250 });
      dt.refused_push = await b.page.$eval("#action-result", (e) => e.textContent);
      step(`devtools b, no token: ${dt.refused_push}`);
    }
    await a.page.fill("#push-data", JSON.stringify({ devtools: "push-check" }));
    await a.page.click("#push-channel");
    for (const t of tabs) {
      await t.page.waitForFunction(() => [...document.querySelectorAll("#log li[data-kind=push]")].some((li) => li.textContent.includes("push-check")),
        null, { timeout: 10_000, polling: 250 });
      dt.pushes_seen[t.name] = await t.page.$$eval("#log li[data-kind=push]", (ls) => ls.map((l) => `${l.querySelector(".text").textContent}: ${l.querySelector("code")?.textContent}`));
    }
    step(`devtools: both logs show the push ${JSON.stringify(dt.pushes_seen)}`);
    await a.page.waitForTimeout(1500); // a bit-rate column filled in
    await a.page.waitForTimeout(1500); // a bit-rate column filled in
    await devtoolsShot(a.page, "devtools-connect.png", dt);
    for (const t of tabs) {
      step(`devtools ${t.name}: disconnect`);
      await t.page.click("#disconnect");
      await t.page.waitForFunction(() => document.querySelector("#status").dataset.state === "closed", null, { timeout: 10_000, polling: 250 });
      dt.closed[t.name] = await t.page.$eval("#status", (e) => e.textContent);
    }
    step(`devtools: disconnected ${JSON.stringify(dt.closed)}`);
  },

  // The devtools page's cluster view, with one tab connected: it lists the
  // node, the channel and the connection, and changes the node's mode
  // through its confirmation (a dismissed one changes nothing) and back. A
  // screenshot of the view goes to the work directory.
  async "devtools-cluster"() {
    const ch = "browser-devtools-cluster";
    const pageURL = `http://${new URL(signalingURLs[0]).host}/devtools/`;
    const nodeName = result.cluster_nodes[0][0].node_name;
    const dt = (result.devtools = {
      page_url: pageURL, node_name: nodeName, dialogs: [], mode_after_dismiss: null, mode_after_change: null,
      mode_shown: null, mode_after_reset: null, mode_shown_after_reset: null, screenshots: [], errors: [],
    });
    const page = await context.newPage();
    await page.setViewportSize({ width: 1280, height: 860 });
    page.on("console", (m) => m.type() === "error" && dt.errors.push(m.text()));
    page.on("pageerror", (e) => dt.errors.push(String(e)));
    await page.goto(pageURL);
    await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 10_000, polling: 250 });
    if (apiToken) await page.fill("#api-token", apiToken);
    await page.fill("#channel-id", ch);
    await page.fill("#client-id", "devtools-cluster");
    await page.selectOption("#role", "recvonly");
    await page.click("#connect");
    await page.waitForFunction(() => document.querySelector("#status").dataset.state === "connected", null, { timeout: 20_000, polling: 250 });
    step("devtools: connected recvonly");
    const a = { page }; // the one tab

    await a.page.click("#tab-cluster");
    const row = `#nodes tbody tr[data-node-name="${nodeName}"]`;
    await a.page.waitForSelector(row, { timeout: 10_000 });
    await a.page.waitForFunction((ch) => document.querySelector(`#channels tbody tr[data-channel-id="${ch}"]`) &&
      document.querySelectorAll("#connections tbody tr").length >= 1, ch, { timeout: 10_000, polling: 250 });
    const getMode = async () => (await api("Sora_20211215.GetMode", {})).response?.mode;
    const modeShown = () => a.page.$eval(row, (r) => r.dataset.mode);
    const choose = async (mode, accept) => {
      step(`devtools: choose ${mode}, ${accept ? "accept" : "dismiss"}`);
      await a.page.selectOption(`${row} select.mode-select`, mode);
      a.page.once("dialog", (d) => {
        dt.dialogs.push({ message: d.message(), accepted: accept });
        (accept ? d.accept() : d.dismiss()).catch(() => {});
      });
      await a.page.click(`${row} button.change-mode`);
      step(`devtools: clicked apply`);
    };
    const waitMode = async (want) => {
      const until = Date.now() + 10_000;
      let got;
      while ((got = await getMode()) !== want && Date.now() < until) await sleep(200);
      return got;
    };
    await choose("block_new_session", false);
    await sleep(1000);
    dt.mode_after_dismiss = await getMode();
    step(`devtools: confirmation dismissed, mode ${dt.mode_after_dismiss}`);
    await choose("block_new_connection", true);
    dt.mode_after_change = await waitMode("block_new_connection");
    await a.page.waitForFunction((row) => document.querySelector(row)?.dataset.mode === "block_new_connection", row, { timeout: 10_000, polling: 250 }).catch(() => {});
    dt.mode_shown = await modeShown();
    step(`devtools: ChangeMode confirmed, API says ${dt.mode_after_change}, page shows ${dt.mode_shown}`);
    await a.page.setViewportSize({ width: 1280, height: 460 }); // the view of one node is short
    await devtoolsShot(a.page, "devtools-cluster.png", dt);
    await a.page.setViewportSize({ width: 1280, height: 860 });
    await choose("normal", true);
    dt.mode_after_reset = await waitMode("normal");
    await a.page.waitForFunction((row) => document.querySelector(row)?.dataset.mode === "normal", row, { timeout: 10_000, polling: 250 }).catch(() => {});
    dt.mode_shown_after_reset = await modeShown();
    step(`devtools: back to ${dt.mode_after_reset}, page shows ${dt.mode_shown_after_reset}`);
  },

  // The devtools page with simulcast: tab a sends three layers of its
  // test pattern (960x540, VP8); tab b receives and asks for r1 with the
  // button on a's video, then sees the layer and width change in its
  // statistics table.
  async "devtools-simulcast"() {
    const ch = "browser-devtools-simulcast";
    const pageURL = `http://${new URL(signalingURLs[0]).host}/devtools/`;
    const dt = (result.devtools = { connection_ids: {}, outbound_rids: [], before: null, after: null, notifies: [], errors: [] });
    const open = async (name, role) => {
      const page = await context.newPage();
      page.on("console", (m) => m.type() === "error" && dt.errors.push(`${name}: ${m.text()}`));
      page.on("pageerror", (e) => dt.errors.push(`${name}: ${e}`));
      await page.goto(pageURL);
      await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 10_000, polling: 250 });
      if (apiToken) await page.fill("#api-token", apiToken);
      await page.fill("#channel-id", ch);
      await page.selectOption("#role", role);
      await page.selectOption("#video-codec", "VP8");
      await page.fill("#video-bit-rate", "2500");
      await page.selectOption("#video-size", "960x540");
      await page.check("#simulcast");
      step(`devtools ${name}: connect ${role} with simulcast`);
      await page.click("#connect");
      await page.waitForFunction(() => document.querySelector("#status").dataset.state === "connected", null, { timeout: 20_000, polling: 250 });
      dt.connection_ids[name] = await page.$eval("#status", (e) => e.dataset.connectionId);
      return page;
    };
    const a = await open("a", "sendonly");
    const b = await open("b", "recvonly");
    const aID = dt.connection_ids.a;
    const inbound = () => b.$$eval("#stats tbody tr", (rows, id) => rows
      .filter((r) => r.dataset.direction === "in" && r.dataset.kind === "video" && r.dataset.connectionId === id)
      .map((r) => ({ layer: r.dataset.layer, width: Number(r.dataset.width || 0), frames: Number(r.dataset.frames || 0) }))[0] ?? null, aID);
    await b.waitForFunction((id) => [...document.querySelectorAll("#stats tbody tr")].some((r) =>
      r.dataset.direction === "in" && r.dataset.kind === "video" && r.dataset.connectionId === id && Number(r.dataset.frames) > 10),
    aID, { timeout: 25_000, polling: 250 });
    dt.before = await inbound();
    step(`devtools b: decodes a ${JSON.stringify(dt.before)}`);
    // The encoder adds the upper layers as its bandwidth estimate grows.
    await a.waitForFunction(() => new Set([...document.querySelectorAll("#stats tbody tr")]
      .filter((r) => r.dataset.direction === "out" && r.dataset.kind === "video" && Number(r.dataset.frames) > 0).map((r) => r.dataset.layer)).size >= 2,
    null, { timeout: 30_000, polling: 250 }).catch(() => {});
    dt.outbound_rids = await a.$$eval("#stats tbody tr", (rows) => rows
      .filter((r) => r.dataset.direction === "out" && r.dataset.kind === "video" && Number(r.dataset.frames) > 0).map((r) => r.dataset.layer));
    step(`devtools a: sends ${JSON.stringify(dt.outbound_rids)}`);
    await b.click(`#videos figure[data-connection-id="${aID}"] button[title="RequestRtpStream r1"]`);
    await b.waitForFunction((id) => [...document.querySelectorAll("#stats tbody tr")].some((r) =>
      r.dataset.direction === "in" && r.dataset.kind === "video" && r.dataset.connectionId === id && r.dataset.layer === "r1"),
    aID, { timeout: 20_000, polling: 250 }).catch(() => {});
    await sleep(2000); // frames of the new layer decoded
    dt.after = await inbound();
    dt.notifies = await b.$$eval("#log li[data-kind=notify] .text", (ts) => ts.map((t) => t.textContent));
    dt.action = await b.$eval("#action-result", (e) => e.textContent);
    step(`devtools b: after asking r1 ${JSON.stringify(dt.after)} (${dt.action})`);
    for (const p of [b, a]) {
      await p.click("#disconnect");
      await p.waitForFunction(() => document.querySelector("#status").dataset.state === "closed", null, { timeout: 10_000, polling: 250 });
    }
  },

  // Join latency as a browser sees it (BenchmarkBrowserJoin): a sendonly
  // publishes; a second page joins the channel recvonly 21 times in a row,
  // each timed from the call of connect() to its resolution and to the
  // first decoded video frame of the publisher; the first join warms up
  // and is left out.
  async "join-latency"() {
    const ch = "browser-join-latency";
    const pub = await openPeer("sendonly");
    const joiner = await openPeer("joiner");
    const pubID = await connectPeer(pub, "sendonly", ch);
    result.joins = [];
    for (let i = 0; i < 21; i++) {
      const r = await joiner.page.evaluate((a) => window.timeJoin(a), { signalingUrl: signalingURLs[0], channelId: ch, publisherId: pubID });
      if (i > 0) result.joins.push(r);
    }
    step(`${result.joins.length} timed joins`);
    // The page then stays connected, as every scenario's peers are.
    await connectPeer(joiner, "recvonly", ch);
  },

  // One recvonly stays while three sendonly publishers come and go one
  // after another (sorad reuses the m-lines of one for the next): it gets
  // each one's tracks, decodes its video, and sees them removed when it
  // leaves; its m-lines are counted after each.
  async "publisher-churn"() {
    const ch = "browser-publisher-churn";
    const sub = await openPeer("recvonly");
    await connectPeer(sub, "recvonly", ch);
    result.churn = [];
    const frames = (s, id) => Math.max(0, ...s.inbound.filter((x) => x.kind === "video" && x.stream_id === id).map((x) => x.frames_decoded ?? 0));
    for (let i = 0; i < 3; i++) {
      const pub = await openPeer(`sendonly-${i}`);
      const id = await connectPeer(pub, "sendonly", ch);
      const tracks = await waitFor(`recvonly has audio+video tracks of sendonly-${i}`, 15_000, (s) =>
        ["audio", "video"].every((k) => s.recvonly.tracks.some((t) => t.kind === k && t.stream_id === id)));
      // Decoding: the frames decoded on the m-line that now carries id
      // go up (a reused m-line's count starts with the earlier ones').
      let before = await sub.page.evaluate(() => window.sampleStats());
      const until = Date.now() + 15_000;
      let after = before;
      while (Date.now() < until) {
        await sleep(1_000);
        after = await sub.page.evaluate(() => window.sampleStats());
        if (frames(after, id) > frames(before, id) + 10) break;
      }
      const mlines = await sub.page.evaluate(() => window.remoteMLines());
      result.churn.push({ publisher: id, tracks, frames_before: frames(before, id), frames_after: frames(after, id), mlines });
      step(`sendonly-${i}: ${JSON.stringify(result.churn[i])}`);
      await pub.page.evaluate(() => window.soraDisconnect());
      peers.delete(pub.name);
      await pub.page.close();
      result.churn[i].removed = await waitFor(`recvonly saw sendonly-${i}'s tracks removed`, 10_000, (s) =>
        s.recvonly.removed_tracks.filter((t) => t.stream_id === id).length >= 2);
    }
  },

  // A sendonly and a recvonly: the recvonly decodes the sender's media.
  async "sendonly-recvonly"() {
    const ch = "browser-sendonly-recvonly";
    const pub = await openPeer("sendonly");
    const sub = await openPeer("recvonly");
    const pubID = await connectPeer(pub, "sendonly", ch);
    const subID = await connectPeer(sub, "recvonly", ch);
    await waitFor("both connected callbacks", 10_000, (s) => s.sendonly.connected_callback && s.recvonly.connected_callback);
    await waitFor("recvonly has audio+video tracks of the sendonly", 10_000, (s) =>
      ["audio", "video"].every((k) => s.recvonly.tracks.some((t) => t.kind === k && t.stream_id === pubID)));
    await measureMedia({ recvonly: [pubID] });
    // The browser's own getStats(), sent in its pongs, is served by the API.
    step(`GetUserAgentStats ${subID}`);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await api("Sora_20211215.GetUserAgentStats", { channel_id: ch, connection_id: subID });
      const stats = r.status === 200 && Array.isArray(r.response?.stats) ? r.response.stats : [];
      if (stats.some((s) => s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0)) break;
      if (Date.now() > deadline) throw new Error(`no inbound-rtp video with decoded frames in GetUserAgentStats: ${JSON.stringify(r.response).slice(0, 300)}`);
      await sleep(500);
    }
  },

  // Three sendrecv peers: each decodes the two others.
  async "sendrecv-3"() {
    const ch = "browser-sendrecv-3";
    const ps = [await openPeer("a"), await openPeer("b"), await openPeer("c")];
    const ids = [];
    for (const p of ps) ids.push(await connectPeer(p, "sendrecv", ch, { peer: p.name }));
    await waitFor("all connected callbacks", 10_000, (s) => Object.values(s).every((x) => x.connected_callback));
    await waitFor("every peer learned of the others through connection.created", 10_000, (s) =>
      ps.every((p, i) => ids.every((id, j) => i === j || knows(s[p.name], ids[i], id))));
    await waitFor("every peer has the others' tracks", 15_000, (s) =>
      ps.every((p, i) => ids.every((id, j) => i === j || ["audio", "video"].every((k) => s[p.name].tracks.some((t) => t.kind === k && t.stream_id === id)))));
    const expect = {};
    ps.forEach((p, i) => (expect[p.name] = ids.filter((_, j) => j !== i)));
    await measureMedia(expect);
  },

  // DisconnectConnection through the API: the peer's disconnect event, the
  // other's connection.destroyed.
  async "disconnect-api"() {
    const ch = "browser-disconnect-api";
    const victim = await openPeer("victim");
    const other = await openPeer("other");
    const victimID = await connectPeer(victim, "sendrecv", ch);
    await connectPeer(other, "sendrecv", ch);
    await waitFor("both connected callbacks", 10_000, (s) => s.victim.connected_callback && s.other.connected_callback);
    await waitFor("other has the victim's video track", 10_000, (s) => s.other.tracks.some((t) => t.kind === "video" && t.stream_id === victimID));
    step(`DisconnectConnection ${victimID}`);
    await api("Sora_20151104.DisconnectConnection", { channel_id: ch, connection_id: victimID });
    await waitFor("victim's disconnect event and other's connection.destroyed", 10_000, (s) =>
      s.victim.disconnects.length > 0 && destroyed(s.other, victimID));
    // Anything arriving late (a second disconnect event, say) is seen too.
    await sleep(1_000);
    await sampleStats();
  },

  // PushChannel reaches every peer's push callback.
  async push() {
    const ch = "browser-push";
    const roles = { sendrecv: "sendrecv", sendonly: "sendonly", recvonly: "recvonly" };
    const ps = [];
    for (const [name, role] of Object.entries(roles)) {
      const p = await openPeer(name);
      await connectPeer(p, role, ch);
      ps.push(p);
    }
    await waitFor("all connected callbacks", 10_000, (s) => Object.values(s).every((x) => x.connected_callback));
    step("PushChannel");
    await api("Sora_20160711.PushChannel", { channel_id: ch, data: { hello: "browser" } });
    await waitFor("every peer got the push", 10_000, (s) => Object.values(s).every((x) => x.pushes.length > 0));
    await sleep(500); // a duplicate would show now
  },

  // Simulcast: a sendonly publishes three layers (VP8, 960x540 from the
  // fake camera, so r0 is 240 wide and r1 480); a recvonly asking r0 and
  // one asking r1 each decode the publisher's video, in different widths.
  async simulcast() {
    const ch = "browser-simulcast";
    const pub = await openPeer("sendonly");
    const r0 = await openPeer("recv-r0");
    const r1 = await openPeer("recv-r1");
    const pubID = await connectPeer(pub, "sendonly", ch, null, undefined,
      { simulcast: true, videoCodecType: "VP8", videoBitRate: 2500 }, { audio: true, video: { width: 960, height: 540 } });
    await connectPeer(r0, "recvonly", ch, null, undefined, { simulcast: true, simulcastRid: "r0" });
    await connectPeer(r1, "recvonly", ch, null, undefined, { simulcast: true, simulcastRid: "r1" });
    await waitFor("all connected callbacks", 10_000, (s) => Object.values(s).every((x) => x.connected_callback));
    // The encoder starts the upper layers as its bandwidth estimate grows.
    const until = Date.now() + 30_000;
    for (;;) {
      const w0 = decodedWidth(await r0.page.evaluate(() => window.sampleStats()), pubID);
      const w1 = decodedWidth(await r1.page.evaluate(() => window.sampleStats()), pubID);
      if (w0 > 0 && w1 > w0) {
        step(`recv-r0 decodes ${w0} wide, recv-r1 ${w1} wide`);
        break;
      }
      if (Date.now() > until) {
        step(`NOT two widths within 30 s: recv-r0 ${w0}, recv-r1 ${w1}`);
        break;
      }
      await sleep(250);
    }
    await measureMedia({ "recv-r0": [pubID], "recv-r1": [pubID] });
  },

  // Spotlight: three sendrecv peers (simulcast, spotlight_number 1) each
  // decode the other two's video and get spotlight notifies.
  async spotlight() {
    const ch = "browser-spotlight";
    const ps = [await openPeer("a"), await openPeer("b"), await openPeer("c")];
    const ids = [];
    for (const p of ps) {
      ids.push(await connectPeer(p, "sendrecv", ch, null, undefined,
        { simulcast: true, spotlight: true, spotlightNumber: 1, videoCodecType: "VP8", videoBitRate: 1500 },
        { audio: true, video: { width: 640, height: 360 } }));
    }
    await waitFor("all connected callbacks", 10_000, (s) => Object.values(s).every((x) => x.connected_callback));
    await waitFor("every peer got a spotlight notify", 10_000, (s) =>
      Object.values(s).every((x) => x.notifies.some((n) => String(n.message.event_type).startsWith("spotlight."))));
    const expect = {};
    ps.forEach((p, i) => (expect[p.name] = ids.filter((_, j) => j !== i)));
    await measureMedia(expect);
  },

  // DataChannel signaling: two sendrecv peers switch (and, with
  // ignoreDisconnectWebSocket, close their WebSockets), keep decoding each
  // other, get a push and the notifies over DataChannels, and renegotiate
  // over DC signaling when a third peer joins. The browser's statistics
  // reach GetUserAgentStats through req-stats on DC stats.
  async "datachannel-signaling"() {
    const ch = "browser-datachannel-signaling";
    const dc = { dataChannelSignaling: true, ignoreDisconnectWebSocket: true };
    const a = await openPeer("a");
    const b = await openPeer("b");
    const aID = await connectPeer(a, "sendrecv", ch, null, undefined, dc);
    const bID = await connectPeer(b, "sendrecv", ch, null, undefined, dc);
    await waitFor("both switched, with their WebSockets closed", 15_000, (s) =>
      [s.a, s.b].every((x) => x.switched && x.websocket_open === false && x.connected_callback));
    await measureMedia({ a: [bID], b: [aID] });
    step("PushChannel");
    await api("Sora_20160711.PushChannel", { channel_id: ch, data: { over: "datachannel" } });
    await waitFor("both got the push", 10_000, (s) => [s.a, s.b].every((x) => x.pushes.length > 0));
    const c = await openPeer("c");
    const cID = await connectPeer(c, "sendrecv", ch, null, undefined, dc);
    await waitFor("a and b have c's tracks", 15_000, (s) =>
      [s.a, s.b].every((x) => ["audio", "video"].every((k) => x.tracks.some((t) => t.kind === k && t.stream_id === cID))));
    await measureMedia({ a: [bID, cID], b: [aID, cID], c: [aID, bID] });
    step(`GetUserAgentStats ${aID}`);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await api("Sora_20211215.GetUserAgentStats", { channel_id: ch, connection_id: aID });
      const stats = r.status === 200 && Array.isArray(r.response?.stats) ? r.response.stats : [];
      if (stats.some((s) => s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0)) break;
      if (Date.now() > deadline) throw new Error(`no inbound-rtp video with decoded frames in GetUserAgentStats: ${JSON.stringify(r.response).slice(0, 300)}`);
      result.api_calls.pop(); // polling noise; the last answer stays
      await sleep(500);
    }
    step("RPC on a: PutSignalingNotifyMetadata, then an unknown method");
    result.rpc = {
      put: await a.page.evaluate(() => window.soraRPC("2025.2.0/PutSignalingNotifyMetadata", { metadata: { hand: "up" }, push: true })),
      unknown: await a.page.evaluate(() => window.soraRPC("2025.2.0/NoSuchMethod", {})),
    };
    step(`RPC: ${JSON.stringify(result.rpc)}`);
    await waitFor("b got a's metadata push", 10_000, (s) => s.b.pushes.some((x) => x.message.data?.type === "signaling_notify_metadata_ext"));
  },

  // Messaging on #chat both ways: a plain receiver gets the bytes as sent,
  // one whose entry has the sender_connection_id header gets the sender's
  // 26-byte connection ID in front.
  async messaging() {
    const ch = "browser-messaging";
    const opts = (header) => ({
      dataChannelSignaling: true,
      ignoreDisconnectWebSocket: false,
      dataChannels: [{ label: "#chat", direction: "sendrecv", ...(header ? { header: [{ type: "sender_connection_id" }] } : {}) }],
    });
    const plain = await openPeer("plain");
    const withHeader = await openPeer("with-header");
    const plainID = await connectPeer(plain, "sendrecv", ch, null, undefined, opts(false));
    const headerID = await connectPeer(withHeader, "sendrecv", ch, null, undefined, opts(true));
    await waitFor("both switched with #chat", 15_000, (s) =>
      [s.plain, s["with-header"]].every((x) => x.switched && x.datachannels.some((d) => d.label === "#chat")));
    step("plain -> with-header, then with-header -> plain");
    await plain.page.evaluate(() => window.soraSendMessage("#chat", "hello from plain"));
    await withHeader.page.evaluate(() => window.soraSendMessage("#chat", "hello from with-header"));
    await waitFor("each got the other's message", 10_000, (s) => s.plain.messages.length > 0 && s["with-header"].messages.length > 0);
    await sleep(500); // a duplicate or an echo would show now
    result.messaging = { plain_id: plainID, with_header_id: headerID };
  },

  // Two nodes. A sendonly on node A puts A in charge of the channel; a
  // recvonly told only node B's URL is redirected by B to A, and the SDK
  // follows; it then decodes the sendonly's media on A. Both nodes' API
  // list the channel's connections (B forwards the call to A).
  async redirect() {
    if (signalingURLs.length !== 2) throw new Error(`redirect needs two nodes, got ${signalingURLs.length}`);
    const ch = "browser-redirect";
    const [urlA, urlB] = signalingURLs;
    const pub = await openPeer("sendonly");
    const sub = await openPeer("recvonly");
    const pubID = await connectPeer(pub, "sendonly", ch, null, urlA);
    // Node B learns through Raft that A holds the channel.
    const until = Date.now() + 10_000;
    for (;;) {
      const r = await api("Sora_20211215.ListClusterChannels", undefined, 1);
      const owner = Array.isArray(r.response) ? r.response.find((c) => c.channel_id === ch) : undefined;
      if (owner && owner.node_in_charge) {
        step(`node B: ${ch} is in the charge of ${owner.node_in_charge}`);
        break;
      }
      if (Date.now() > until) {
        step(`node B: no node in charge of ${ch} within 10 s`);
        break;
      }
      result.api_calls.pop(); // polling noise; the last answer stays
      await sleep(100);
    }
    await api("Sora_20211215.ListClusterChannels", undefined, 0);
    const subID = await connectPeer(sub, "recvonly", ch, null, urlB);
    await waitFor("both connected callbacks", 10_000, (s) => s.sendonly.connected_callback && s.recvonly.connected_callback);
    await waitFor("recvonly has audio+video tracks of the sendonly", 10_000, (s) =>
      ["audio", "video"].every((k) => s.recvonly.tracks.some((t) => t.kind === k && t.stream_id === pubID)));
    await measureMedia({ recvonly: [pubID] });
    step("ListChannelConnections on node A, then on node B");
    await api("Sora_20201013.ListChannelConnections", { channel_id: ch }, 0);
    await api("Sora_20201013.ListChannelConnections", { channel_id: ch }, 1);

    // What the redirect looked like, from the recvonly page's clock.
    const st = await peerState(sub);
    const at = (type, n = 0) => st.signaling.filter((e) => e.type === type)[n];
    const redirectMsg = at("onmessage-redirect");
    const offer = at("onmessage-offer");
    const sockets = st.signaling.filter((e) => e.type === "new-websocket");
    const since = (e) => (e ? e.ms - st.connect_started_ms : null);
    result.redirect = {
      recvonly_connection_id: subID,
      given_signaling_url: st.signaling_url,
      contact_signaling_url: st.contact_signaling_url,
      connected_signaling_url: st.connected_signaling_url,
      location: redirectMsg ? redirectMsg.data.location : null,
      websockets: sockets.map((e) => e.data),
      connect_messages: st.signaling.filter((e) => e.type === "send-connect").map((e) => ({ ms: since(e), redirect: e.data.redirect ?? null })),
      ms_to_redirect: since(redirectMsg),
      ms_to_second_websocket: since(sockets[1]),
      ms_to_offer: since(offer),
      ms_to_connect_resolved: st.connect_resolved_ms - st.connect_started_ms,
      ms_to_connected_callback: st.connected_callback_ms - st.connect_started_ms,
    };
    step(`redirect: ${JSON.stringify(result.redirect)}`);
  },
};

// --- run ---

async function collect() {
  for (const [name, p] of peers) {
    try {
      result.peers[name] = { ...(await peerState(p)), stats: p.stats ?? [] };
      result.browser_version ??= result.peers[name].user_agent;
    } catch (e) {
      result.peers[name] = { error: `state unavailable: ${e}`, stats: p.stats ?? [] };
    }
  }
}

async function leaveAll() {
  await Promise.all([...peers.values()].map((p) =>
    Promise.race([p.page.evaluate(() => window.soraDisconnect()), sleep(5_000)]).catch(() => {})));
}

const limitMs = Number(opt["time-limit"] ?? (opt.scenario.startsWith("devtools") ? 100 : 60)) * 1000;
const watchdog = setTimeout(async () => {
  result.error = `scenario ${opt.scenario} did not finish within ${limitMs} ms (steps so far in "steps")`;
  log(result.error);
  await Promise.race([collect(), sleep(3_000)]);
  finish(1);
}, limitMs);

try {
  const run = scenarios[opt.scenario];
  if (!run) throw new Error(`unknown scenario ${opt.scenario}; known: ${Object.keys(scenarios).join(", ")}`);
  await waitReady(20_000);
  step(apiURLs.length > 1 ? `every one of the ${apiURLs.length} sorad nodes lists all of them` : "sorad ready");
  context = await chromium.launchPersistentContext(opt.profile, {
    executablePath: opt.chromium,
    headless: true,
    args: chromiumArgs,
    timeout: 20_000,
  });
  step("chromium started");
  await run();
  await collect();
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
  log("error:", result.error);
  await Promise.race([collect(), sleep(3_000)]);
}
await leaveAll();
if (context) await Promise.race([context.close(), sleep(5_000)]);
server.close();
clearTimeout(watchdog);
finish(result.ok ? 0 : 1);
