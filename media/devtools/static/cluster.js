// The cluster view: nodes (mode, epoch, connected, load), channels and
// their node in charge, connections; ChangeMode (sent to the node itself,
// at its external_api_url) and PurgeClusterNode (sent to this page's
// node), each after a confirmation.

import { call } from "./api.js";
import { $, el, fillTable, short } from "./dom.js";

const modes = ["normal", "block_new_session", "block_new_connection"];
let timer = null;
let opts = null;
let busy = false;
const chosen = new Map(); // node name -> mode picked in its select, kept across refreshes

export function startCluster(o) {
  opts = o;
  if (!timer) {
    $("#cluster-refresh").onclick = () => refresh();
    timer = setInterval(() => $("#cluster-auto").checked && refresh(), 2000);
  }
  refresh();
}

export function stopCluster() {
  clearInterval(timer);
  timer = null;
}

function status(text, ok = true) {
  const s = $("#cluster-status");
  s.textContent = text;
  s.dataset.ok = ok ? "true" : "false";
}

async function refresh() {
  if (busy) return;
  busy = true;
  const api = opts.apiURL();
  try {
    const [nodes, channels, conns] = await Promise.all([
      call(api, "Sora_20211215.ListClusterNodes", { include_all_known_nodes: true }),
      call(api, "Sora_20211215.ListClusterChannels", {}),
      call(api, "Sora_20201013.ListConnections", { local: false }).catch(() => []),
    ]);
    // Each node's own connection count, from its API (other nodes answer
    // only if their api_cors_origin admits this page).
    const loads = await Promise.all(nodes.map((n) =>
      n.external_api_url
        ? call(n.external_api_url, "Sora_20171010.GetStatsReport", {}, { timeoutMs: 3000 }).then((r) => r.total_ongoing_connections, () => null)
        : null));
    renderNodes(nodes, channels, loads);
    fillTable($("#channels tbody"), channels, (c) => [c.channel_id, c.node_in_charge, String(c.node_in_charge_epoch), c.node_in_charge_connected ? "yes" : "no"],
      (c) => ({ dataset: { channelId: c.channel_id } }));
    fillTable($("#connections tbody"), Array.isArray(conns) ? conns : [],
      (c) => [c.channel_id, short(c.connection_id), c.role, c.client_id ?? "", c.simulcast ? "yes" : "", c.spotlight ? "yes" : "",
        c.created_time ? new Date(c.created_time / 1000).toISOString().slice(11, 19) : ""],
      (c) => ({ title: c.connection_id, dataset: { connectionId: c.connection_id } }));
    status(`updated ${new Date().toISOString().slice(11, 19)}`);
  } catch (e) {
    status(`${e.message}`, false);
  } finally {
    busy = false;
  }
}

function renderNodes(nodes, channels, loads) {
  const inCharge = new Map();
  for (const c of channels) inCharge.set(c.node_in_charge, (inCharge.get(c.node_in_charge) ?? 0) + 1);
  fillTable($("#nodes tbody"), nodes.map((n, i) => ({ ...n, load: loads[i], in_charge: inCharge.get(n.node_name) ?? 0 })), (n) => {
    const pick = chosen.get(n.node_name) ?? n.mode;
    const select = el("select", {
      class: "mode-select", "aria-label": `mode of ${n.node_name}`,
      onchange: (e) => chosen.set(n.node_name, e.target.value),
    }, ...modes.map((m) => el("option", { selected: m === pick }, m)));
    const change = el("button", {
      type: "button", class: "small change-mode", disabled: !n.connected || !n.external_api_url,
      onclick: () => changeMode(n, select.value),
    }, "apply");
    const purge = el("button", {
      type: "button", class: "small danger purge", disabled: n.node_name === opts.nodeName,
      title: n.node_name === opts.nodeName ? "purge this node from another node's page" : "PurgeClusterNode",
      onclick: () => purgeNode(n),
    }, "purge");
    return [
      n.node_name,
      el("span", { class: `mode ${n.mode ?? "unknown"}` }, n.mode ?? "?"),
      n.epoch === undefined ? "" : String(n.epoch),
      n.connected ? "yes" : "no",
      String(n.in_charge),
      n.load === null || n.load === undefined ? "—" : String(n.load),
      n.version ?? (n.other_cluster ? "other cluster" : ""),
      n.connected ? el("span", { class: "row" }, select, change) : "",
      purge,
    ];
  }, (n) => ({ dataset: { nodeName: n.node_name, mode: n.mode ?? "" } }));
}

async function changeMode(n, mode) {
  if (mode === n.mode) {
    status(`${n.node_name} is already ${mode}`);
    return;
  }
  if (!window.confirm(`Change the mode of ${n.node_name} from ${n.mode} to ${mode}?`)) return;
  chosen.delete(n.node_name);
  try {
    await call(n.external_api_url, "Sora_20211215.ChangeMode", { mode });
    status(`${n.node_name}: mode ${mode}`);
  } catch (e) {
    status(`ChangeMode on ${n.node_name}: ${e.message}`, false);
  }
  await refresh();
}

async function purgeNode(n) {
  if (!window.confirm(`Purge ${n.node_name} from the cluster? Its channels move to other nodes and it must rejoin to serve again.`)) return;
  try {
    await call(opts.apiURL(), "Sora_20211215.PurgeClusterNode", { target_node_name: n.node_name });
    status(`${n.node_name} purged`);
  } catch (e) {
    status(`PurgeClusterNode ${n.node_name}: ${e.message}`, false);
  }
  await refresh();
}
