// JSON over fetch. Every failure becomes an ApiError carrying the server's own message.

export class ApiError extends Error {
  constructor(status, message, { title = "", body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.title = title;
    this.body = body;
  }
}

const GENERIC = new Set(["internal server error", "error", "bad request"]);

/** The most useful message in an error body: v1 sends {error, message}. */
export function errorMessage(body, fallback) {
  if (!body || typeof body !== "object") return { title: "", message: fallback };
  const error = typeof body.error === "string" ? body.error : body.error?.message || "";
  const message = typeof body.message === "string" ? body.message : "";
  if (message && !GENERIC.has(message.toLowerCase())) {
    return { title: error && error !== message ? error : "", message };
  }
  return { title: "", message: error || message || fallback };
}

/**
 * request("/admin/api-keys", {method: "POST", body: {...}, token})
 * Resolves with the parsed body; rejects with ApiError (status 0 when the server is
 * unreachable). An AbortError passes through untouched.
 */
export async function request(path, { method = "GET", body, token, signal, query } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
    }
    const s = qs.toString();
    if (s) url += (url.includes("?") ? "&" : "?") + s;
  }
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "Cannot reach the server. Check the connection and try again.");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok || (data && typeof data === "object" && data.success === false)) {
    const fallback = `${res.status} ${res.statusText || "request failed"}`.trim();
    const { title, message } = errorMessage(data, fallback);
    throw new ApiError(res.ok ? 400 : res.status, message, { title, body: data });
  }
  return data;
}

export const isAbort = (e) => e && e.name === "AbortError";
