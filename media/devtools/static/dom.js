// DOM helpers. Text from the network only ever goes in as textContent or
// attribute values, never as HTML.

// el builds an element: attrs are attributes (on* keys are listeners,
// "dataset" an object of data-* values), children nodes or strings.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(e) {
  while (e.firstChild) e.firstChild.remove();
  return e;
}

// table fills tbody with one row per item; cells(item) returns strings or
// nodes; rowAttrs(item) the row's attributes.
// A table whose items did not change is left as it is (a select being
// used in it keeps its state).
const shown = new WeakMap(); // tbody -> JSON of its items
export function fillTable(tbody, items, cells, rowAttrs = () => ({})) {
  const key = JSON.stringify(items);
  if (shown.get(tbody) === key) return;
  shown.set(tbody, key);
  clear(tbody);
  for (const it of items) tbody.append(el("tr", rowAttrs(it), ...cells(it).map((c) => el("td", {}, c))));
}

export const short = (id) => (id && id.length > 10 ? `${id.slice(0, 10)}…` : id ?? "");
