// The Sora API over fetch: POST / with x-sora-target. The bearer token
// lives in this module's memory only (never in storage or the URL).

let token = "";
export const setToken = (t) => (token = t.trim());
export const hasToken = () => token !== "";

export class APIError extends Error {
  constructor(status, body) {
    super(`${status} ${typeof body === "object" && body ? body.error_type ?? JSON.stringify(body) : body}`);
    this.status = status;
    this.body = body;
  }
}

// call POSTs target to the API at url and returns the decoded answer.
export async function call(url, target, body = undefined, { timeoutMs = 10000 } = {}) {
  const headers = { "x-sora-target": target, "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(url, {
      method: "POST",
      headers,
      body: body === undefined ? "{}" : JSON.stringify(body),
      signal: ctl.signal,
      credentials: "omit",
      cache: "no-store",
    });
    const text = await res.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    if (!res.ok) throw new APIError(res.status, data);
    return data;
  } finally {
    clearTimeout(timer);
  }
}
