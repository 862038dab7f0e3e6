// The admin session: a bearer token from /web/auth/login, kept in localStorage until it
// expires, the server answers 401, or the user signs out (/web/auth/logout revokes it).

import { request } from "../lib/api.js";

const KEY = "crs.session";
let onEnded = () => {};

export function getSession() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) || "null");
    if (!s || !s.token) return null;
    if (s.expiresAt && Date.now() > s.expiresAt) {
      localStorage.removeItem(KEY);
      return null;
    }
    return s;
  } catch {
    return null;
  }
}

export function setSession({ token, username, expiresIn }) {
  const s = { token, username, expiresAt: expiresIn ? Date.now() + Number(expiresIn) : null };
  localStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function clearSession() {
  localStorage.removeItem(KEY);
}

/**
 * Sign out: the server revokes the token first, so a copy of it stops working too; then it is
 * forgotten here, also when the server cannot be reached.
 */
export async function signOut() {
  const s = getSession();
  if (s?.token) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      await request("/web/auth/logout", { method: "POST", token: s.token, signal: ctl.signal });
    } catch {
      /* the token is forgotten below either way */
    } finally {
      clearTimeout(timer);
    }
  }
  clearSession();
}

/** Called when the server says the session is over (401 on an admin call). */
export function onSessionEnded(fn) {
  onEnded = fn;
}

export async function login(username, password) {
  const r = await request("/web/auth/login", { method: "POST", body: { username, password } });
  return setSession(r);
}

/** An authenticated admin call. A 401 ends the session and sends the user to the login page. */
export async function adminApi(path, opts = {}) {
  const s = getSession();
  try {
    return await request(path, { ...opts, token: s?.token });
  } catch (e) {
    if (e && e.status === 401 && !opts.allow401) {
      clearSession();
      e.handled = true;
      onEnded();
    }
    throw e;
  }
}

/** An admin call that may not exist on this server yet: resolves null on 404/405. */
export async function optionalApi(path, opts = {}) {
  try {
    return await adminApi(path, opts);
  } catch (e) {
    if (e && (e.status === 404 || e.status === 405 || e.status === 501)) return null;
    throw e;
  }
}
