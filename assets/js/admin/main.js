// The admin app: session check, history routing under /admin-next/, the shell (sidebar and
// top bar), and page loading. Pages are modules exporting `default(root, ctx)`.

import { h, icon, mount } from "../lib/dom.js";
import { showError, themeToggle } from "../lib/ui.js";
import { adminApi, getSession, onSessionEnded, signOut } from "./session.js";
import renderLogin from "./pages/login.js";

export const BASE = "/admin-next/";

const PAGES = [
  { path: "dashboard", title: "Dashboard", icon: "grid", load: () => import("./pages/dashboard.js") },
  { path: "api-keys", title: "API keys", icon: "key", load: () => import("./pages/keys.js") },
  { path: "accounts", title: "Accounts", icon: "server", load: () => import("./pages/accounts.js") },
  { path: "usage", title: "Usage", icon: "chart", load: () => import("./pages/usage.js") },
  { path: "notifications", title: "Notifications", icon: "zap", load: () => import("./pages/webhooks.js") },
  { path: "settings", title: "Settings", icon: "sliders", load: () => import("./pages/settings.js") },
];

const app = document.getElementById("app");
let shell = null;
let current = null; // {controller, cleanups}
let seq = 0;
let flash = "";

function currentPath() {
  const p = location.pathname;
  if (!p.startsWith(BASE)) return "";
  return p.slice(BASE.length).replace(/\/+$/, "");
}

export function navigate(to, { replace = false, query } = {}) {
  let url = BASE + String(to).replace(/^\/+/, "");
  if (query) {
    const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ""));
    const s = qs.toString();
    if (s) url += `?${s}`;
  }
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

/** Update the query string of the current page without re-rendering it. */
function setQuery(obj) {
  const qs = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === "" || v === false) qs.delete(k);
    else qs.set(k, String(v));
  }
  const s = qs.toString();
  history.replaceState(null, "", location.pathname + (s ? `?${s}` : ""));
}

function teardown() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups) {
    try {
      fn();
    } catch {
      /* a page's cleanup must not break navigation */
    }
  }
  current = null;
}

function buildShell(username) {
  const navLinks = PAGES.map((p) =>
    h("a", { href: BASE + p.path, dataset: { nav: p.path } }, icon(p.icon), h("span", p.title)),
  );
  const closeNav = () => root.classList.remove("nav-open");
  const menuBtn = h(
    "button.btn.btn-ghost.btn-icon",
    { type: "button", "aria-label": "Open navigation", "aria-controls": "sidebar", "aria-expanded": "false", "data-menu": "" },
    icon("menu"),
  );
  menuBtn.addEventListener("click", () => {
    root.classList.add("nav-open");
    menuBtn.setAttribute("aria-expanded", "true");
    navLinks[0].focus();
  });
  const logout = h(
    "button.btn.btn-ghost.btn-sm.btn-icon",
    { type: "button", "aria-label": "Sign out", title: "Sign out", "data-logout": "" },
    icon("logout"),
  );
  logout.addEventListener("click", async () => {
    logout.disabled = true;
    await signOut();
    teardown();
    shell = null;
    navigate("login", { replace: true });
  });
  const brand = () =>
    h("a.brand", { href: `${BASE}dashboard` }, h("span.brand-mark", icon("logo")), h("span", "crs ", h("small", "admin")));
  const sidebar = h(
    "aside.sidebar",
    { id: "sidebar", "aria-label": "Main" },
    brand(),
    h("nav.nav", { "aria-label": "Sections" }, navLinks),
    h(
      "div.sidebar-foot",
      h("a.btn.btn-ghost.btn-sm", { href: `${BASE}api-stats`, style: { justifyContent: "flex-start" }, "data-external": "" }, icon("external"), "Key holder usage page"),
      themeToggle({ withLabel: true }),
      h("div.user-row", h("span.avatar", (username || "?").slice(0, 1).toUpperCase()), h("span.who.truncate", username || "admin"), logout),
    ),
  );
  sidebar.querySelector("[data-theme-toggle]").style.justifyContent = "flex-start";
  const page = h("main.page", { id: "page", tabindex: "-1" });
  const topbar = h("header.topbar", menuBtn, brand(), themeToggle());
  const backdrop = h("div.backdrop", { onclick: closeNav });
  const root = h("div.shell", sidebar, backdrop, h("div.main", topbar, page));
  root.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && root.classList.contains("nav-open")) {
      closeNav();
      menuBtn.setAttribute("aria-expanded", "false");
      menuBtn.focus();
    }
  });
  sidebar.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) closeNav();
  });
  mount(app, root);
  app.classList.remove("boot");
  return { root, page, navLinks };
}

function notFound(view) {
  mount(
    view,
    h(
      "div.empty",
      h("div.empty-icon", icon("alert")),
      h("h3", "Page not found"),
      h("p", "There is nothing at this address."),
      h("a.btn.btn-primary", { href: `${BASE}dashboard` }, "Go to the dashboard"),
    ),
  );
}

async function route() {
  const my = ++seq;
  const path = currentPath();
  const [first, ...rest] = path.split("/");
  const session = getSession();
  app.removeAttribute("aria-busy");

  if (!session) {
    teardown();
    shell = null;
    if (first !== "login") {
      const next = path ? path + location.search : "";
      history.replaceState(null, "", `${BASE}login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
    }
    document.title = "Sign in · crs admin";
    app.classList.remove("boot");
    const message = flash;
    flash = "";
    renderLogin(app, {
      flash: message,
      onLoggedIn: () => {
        const next = new URLSearchParams(location.search).get("next");
        navigate(next && !next.startsWith("/") && !next.startsWith("login") ? next : "dashboard", { replace: true });
      },
    });
    return;
  }
  if (first === "" || first === "login" || first === "index.html") {
    navigate("dashboard", { replace: true });
    return;
  }

  teardown();
  if (!shell) shell = buildShell(session.username);
  const pageDef = PAGES.find((p) => p.path === first);
  for (const a of shell.navLinks) {
    if (a.dataset.nav === first) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = h("div.view", { "aria-busy": "true" });
  mount(shell.page, view);
  window.scrollTo(0, 0);
  if (!pageDef) {
    document.title = "Not found · crs admin";
    view.removeAttribute("aria-busy");
    notFound(view);
    return;
  }
  document.title = `${pageDef.title} · crs admin`;
  const controller = new AbortController();
  current = { controller, cleanups: [] };
  const state = current;
  const ctx = {
    params: rest,
    query: new URLSearchParams(location.search),
    signal: controller.signal,
    api: (p, o = {}) => adminApi(p, { signal: controller.signal, ...o }),
    navigate,
    setQuery,
    onCleanup: (fn) => state.cleanups.push(fn),
    username: session.username,
  };
  try {
    const mod = await pageDef.load();
    if (my !== seq) return;
    await mod.default(view, ctx);
  } catch (e) {
    if (my === seq) showError(e);
  } finally {
    view.removeAttribute("aria-busy");
  }
}

onSessionEnded(() => {
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  flash = "Your session has ended. Sign in again to continue.";
  teardown();
  shell = null;
  const path = currentPath();
  history.replaceState(null, "", `${BASE}login${path && path !== "login" ? `?next=${encodeURIComponent(path + location.search)}` : ""}`);
  route();
});

// Same-app links navigate without reloading.
document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download") || a.hasAttribute("data-external")) return;
  if (a.getAttribute("href").startsWith("#")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  if (url.pathname === `${BASE}api-stats`) return;
  ev.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) {
    history.pushState(null, "", url.pathname + url.search);
    route();
  }
});

window.addEventListener("popstate", route);

// Keep the shell's session fresh: a stale token is found out on the first call anyway.
if (getSession()) adminApi("/web/auth/user").catch(() => {});

route();
