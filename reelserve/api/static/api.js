// The client side of the public /v1 API: the key the user entered, and one fetch wrapper that turns
// error answers into ApiError.

const KEY_STORAGE = "reelserve.apiKey";

// Statuses a video never leaves: past these there is nothing left to follow.
export const FINAL = new Set(["completed", "failed", "cancelled"]);

// Session storage, not local: the key leaves with the tab.
let currentKey = sessionStorage.getItem(KEY_STORAGE);
// The page's sign-in prompt; this module knows nothing of the page, so it is handed in.
let unauthorized = () => {};

export function apiKey() {
  return currentKey;
}

export function storeKey(value) {
  currentKey = value;
  sessionStorage.setItem(KEY_STORAGE, value);
}

export function dropKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  currentKey = null;
}

// Called with the server's message on every 401, before the request's promise rejects.
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, error, retryAfter = null) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.retryAfter = retryAfter;
    this.code = error?.code;
    this.param = error?.param ?? null;
  }
}

// Seeds reach 2^63-1, past Number's precision: keep the exact digits of any "seed" (reviver source access).
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    key === "seed" && typeof value === "number" && context?.source ? context.source : value);
}

function authHeaders() {
  return currentKey ? { Authorization: `Bearer ${currentKey}` } : {};
}

export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) {
    let error = null;
    try {
      error = JSON.parse(await response.text()).error;
    } catch {
      // not our JSON error shape (a proxy's page): the status alone must do
    }
    if (response.status === 401) unauthorized(error?.message);
    throw new ApiError(response.status, error, response.headers.get("Retry-After"));
  }
  return raw ? response : parseJson(await response.text());
}
