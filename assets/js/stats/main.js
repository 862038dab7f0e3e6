// The self-service page: a key holder pastes their key and sees its usage, cost, limits and
// remaining budget, per model and over time. The key goes only to /apiStats/api/* on this
// server; it is kept in sessionStorage only when "remember" is ticked.

import { h, icon, mount } from "../lib/dom.js";
import { request } from "../lib/api.js";
import { barList, legend, timeChart } from "../lib/charts.js";
import * as f from "../lib/format.js";
import { badge, card, emptyState, meter, showError, skelRows, tabs, themeToggle } from "../lib/ui.js";

const STORE = "crs.statsKey";
const app = document.getElementById("app");

function remembered() {
  try {
    return sessionStorage.getItem(STORE) || "";
  } catch {
    return "";
  }
}

function remember(key) {
  try {
    if (key) sessionStorage.setItem(STORE, key);
    else sessionStorage.removeItem(STORE);
  } catch {
    /* storage disabled: nothing kept */
  }
}

const api = (path, body, signal) => request(`/apiStats/api/${path}`, { method: "POST", body, signal });

// ---------- layout ----------

const keyInput = h("input.input.mono", {
  id: "api-key",
  type: "password",
  name: "apiKey",
  autocomplete: "off",
  spellcheck: "false",
  autocapitalize: "none",
  placeholder: "cr_…",
  "aria-describedby": "api-key-hint",
});
const showBtn = h("button.btn.btn-icon", { type: "button", "aria-label": "Show the key", "aria-pressed": "false" }, icon("eye"));
showBtn.addEventListener("click", () => {
  const show = keyInput.type === "password";
  keyInput.type = show ? "text" : "password";
  showBtn.setAttribute("aria-pressed", String(show));
  showBtn.setAttribute("aria-label", show ? "Hide the key" : "Show the key");
  showBtn.replaceChildren(icon(show ? "eyeOff" : "eye"));
});
const rememberBox = h("input", { type: "checkbox", id: "remember", name: "remember", checked: !!remembered() });
const submitBtn = h("button.btn.btn-primary", { type: "submit", style: { height: "38px" } }, "View usage");
const forgetBtn = h("button.btn.btn-ghost.btn-sm", { type: "button", hidden: true, "data-forget": "" }, icon("x"), "Forget key");
const keyError = h("div.callout.danger", { role: "alert", hidden: true, "data-key-error": "" });
const form = h(
  "form.card.key-form.stack",
  { novalidate: true, "aria-label": "Look up an API key" },
  h("label.field-label", { for: "api-key" }, "API key"),
  h("div.row", h("div.input-group", keyInput, showBtn), submitBtn),
  h(
    "div.row",
    h("label.check.small", rememberBox, "Remember in this tab"),
    h("span.spacer"),
    forgetBtn,
  ),
  h("p.muted.small", { id: "api-key-hint", style: { display: "flex", gap: "6px", alignItems: "flex-start" } }, icon("lock"), " The key is sent only to this server to look up its usage. Nothing is stored unless you tick “Remember”, and then only in this browser tab."),
  keyError,
);
const hero = h(
  "div.hero",
  h("h1", "Your API key usage"),
  h("p", "Paste the key you use in Claude Code or your SDK to see its requests, tokens, cost and limits."),
);
const results = h("div", { "data-results": "" });

mount(
  app,
  h(
    "header.stats-top",
    h(
      "div.inner",
      h("a.brand", { href: "/" }, h("span.brand-mark", icon("logo")), h("span", "crs ", h("small", "usage"))),
      themeToggle(),
      h("a.btn.btn-ghost.btn-sm", { href: "/admin-next/" }, "Admin"),
    ),
  ),
  h("main.stats-main", { id: "main" }, hero, form, results, h("p.page-foot", "crs · Claude Relay Service")),
);
app.removeAttribute("aria-busy");

// ---------- results ----------

function statCard(label, iconName, value, sub, title) {
  return h("div.card.stat", h("div.label", icon(iconName), label), h("div.value", { title: title || null }, value), h("div.sub", sub));
}

function skeleton() {
  const stat = () => h("div.card.stat", h("span.skel.line", { style: { width: "50%" } }), h("span.skel.value"), h("span.skel.line", { style: { width: "70%" } }));
  return h(
    "div",
    { "aria-busy": "true", "aria-label": "Loading usage" },
    h("div.key-head", h("div", h("span.skel.line", { style: { width: "220px", height: "22px" } }), h("span.skel.line", { style: { width: "300px" } }))),
    h("div.stats-grid", stat(), stat(), stat(), stat()),
    h("div.grid-2.section", h("div.card.card-pad", h("div.chart", h("span.skel.block"))), h("div.card.card-pad", h("div.chart", h("span.skel.block")))),
  );
}

function limitItem(name, used, limit, fmt, foot) {
  return h(
    "div.limit",
    { "data-limit": name },
    h("div.limit-top", h("span.name", name), h("span.val", `${fmt(used)} of ${fmt(limit)}`)),
    meter(used, limit, { label: name }),
    h("div.foot", foot ?? `${fmt(Math.max(0, limit - used))} left`),
  );
}

function limitsCard(l) {
  const items = [];
  const n = (v) => Number(v) || 0;
  if (n(l.dailyCostLimit) > 0) items.push(limitItem("Daily budget", n(l.currentDailyCost), n(l.dailyCostLimit), f.money, `${f.money(Math.max(0, l.dailyCostLimit - n(l.currentDailyCost)))} left today`));
  if (n(l.totalCostLimit) > 0) items.push(limitItem("Total budget", n(l.currentTotalCost), n(l.totalCostLimit), f.money));
  if (n(l.weeklyOpusCostLimit) > 0) items.push(limitItem("Weekly Claude budget", n(l.weeklyOpusCost), n(l.weeklyOpusCostLimit), f.money, `${f.money(Math.max(0, l.weeklyOpusCostLimit - n(l.weeklyOpusCost)))} left this week`));
  if (n(l.fiveHourCostLimit) > 0) items.push(limitItem("Five-hour budget", n(l.fiveHourCost), n(l.fiveHourCostLimit), f.money, `${f.money(Math.max(0, l.fiveHourCostLimit - n(l.fiveHourCost)))} left in the rolling five hours`));
  const win = n(l.rateLimitWindow);
  const resets = l.windowEndTime ? `resets ${f.relative(l.windowEndTime)}` : "starts with your next request";
  if (win > 0 && n(l.rateLimitRequests) > 0) items.push(limitItem(`Requests per ${f.per(win)}`, n(l.currentWindowRequests), n(l.rateLimitRequests), f.int, `${f.int(Math.max(0, l.rateLimitRequests - n(l.currentWindowRequests)))} left · window ${resets}`));
  if (win > 0 && n(l.rateLimitCost) > 0) items.push(limitItem(`Cost per ${f.per(win)}`, n(l.currentWindowCost), n(l.rateLimitCost), f.money, `${f.money(Math.max(0, l.rateLimitCost - n(l.currentWindowCost)))} left · window ${resets}`));
  if (n(l.tokenLimit) > 0) items.push(limitItem(win > 0 ? `Tokens per ${f.per(win)}` : "Tokens", n(l.currentWindowTokens), n(l.tokenLimit), f.compact));
  const extra = [];
  if (n(l.concurrencyLimit) > 0) extra.push(`Up to ${f.plural(l.concurrencyLimit, "request")} at a time`);
  return card("Limits and budget", {
    sub: items.length ? "What is left before requests are refused" : null,
    body: [
      items.length ? h("div.limits-grid", items) : h("p.muted", { "data-no-limits": "" }, "This key has no cost, rate or token limits."),
      extra.length ? h("p.muted.small", { style: { marginTop: "14px" } }, extra.join(" · ")) : null,
    ],
  });
}

function restrictionsCard(r, permissions) {
  const rows = [];
  const perms = Array.isArray(permissions) ? permissions : permissions && permissions !== "all" ? [permissions] : [];
  rows.push(["Services", perms.length ? h("div.chips", perms.map((p) => h("span.chip", p))) : "All services"]);
  if (r && r.enableModelRestriction && (r.restrictedModels || []).length) {
    rows.push([r.modelRestrictionMode === "allow" ? "Allowed models" : "Blocked models", h("div.chips", r.restrictedModels.map((m) => h("span.chip.mono", m)))]);
  } else {
    rows.push(["Models", "All models"]);
  }
  if (r && r.enableClientRestriction && (r.allowedClients || []).length) {
    rows.push(["Allowed clients", h("div.chips", r.allowedClients.map((c) => h("span.chip", c.replace(/_/g, " "))))]);
  } else {
    rows.push(["Clients", "Any client"]);
  }
  return card("Access", { body: h("dl.kv", rows.map(([k, v]) => [h("dt", k), h("dd", v)])) });
}

function modelsCard(key, signal) {
  const body = h("div");
  const tbody = h("tbody", skelRows(5, 3));
  const listHost = h("div");
  let period = "daily";
  const sw = tabs(
    [
      ["daily", "Today"],
      ["monthly", "This month"],
      ["alltime", "All time"],
    ],
    period,
    (p) => {
      period = p;
      load();
    },
    { label: "Model period" },
  );
  mount(
    body,
    listHost,
    h(
      "div.table-wrap",
      { style: { marginTop: "16px" } },
      h(
        "table.table.responsive",
        { "aria-label": "Usage by model" },
        h("thead", h("tr", h("th", "Model"), h("th.num", "Requests"), h("th.num", "Input"), h("th.num", "Output"), h("th.num", "Cache"), h("th.num", "Cost"))),
        tbody,
      ),
    ),
  );
  let seq = 0;
  async function load() {
    const my = ++seq;
    mount(tbody, skelRows(6, 2));
    try {
      const r = await api("user-model-stats", { apiKey: key, period }, signal);
      if (my !== seq) return;
      const rows = (r.data || []).slice().sort((a, b) => (b.costs?.total || 0) - (a.costs?.total || 0) || b.requests - a.requests);
      if (!rows.length) {
        mount(listHost);
        mount(tbody, h("tr", h("td", { colspan: "6" }, emptyState({ iconName: "layers", title: "No requests in this period", text: "Models you use show up here." }))));
        return;
      }
      mount(listHost, barList(rows.slice(0, 5).map((m) => ({ name: m.model, value: m.costs?.total || 0, detail: h("span", `${f.plural(m.requests, "request")} · ${f.compact(m.allTokens)} tokens`) })), { format: f.money, cls: "bg2" }));
      mount(
        tbody,
        rows.map((m) =>
          h(
            "tr",
            h("td.primary", h("span.mono.small.cell-title", m.model)),
            h("td.num", { "data-label": "Requests" }, f.int(m.requests)),
            h("td.num", { "data-label": "Input" }, f.int(m.inputTokens)),
            h("td.num", { "data-label": "Output" }, f.int(m.outputTokens)),
            h("td.num", { "data-label": "Cache" }, f.int((m.cacheCreateTokens || 0) + (m.cacheReadTokens || 0))),
            h("td.num", { "data-label": "Cost" }, h("strong", f.money(m.costs?.total || 0))),
          ),
        ),
      );
    } catch (e) {
      if (my !== seq) return;
      showError(e);
      mount(tbody, h("tr", h("td", { colspan: "6" }, h("p.muted", e.message))));
    }
  }
  load();
  return card("By model", { actions: sw, body });
}

function trendCard(key, signal, charts) {
  const el = h("div.chart", { "data-chart": "key-trend" });
  const series = [
    { name: "Requests", cls: "s1", type: "bar", integer: true, format: f.int },
    { name: "Cost", cls: "s2", type: "line", axis: "right", format: f.money },
  ];
  const c = card("Last 30 days", { sub: "Requests and cost per day", actions: legend(series), body: el });
  queueMicrotask(async () => {
    const chart = timeChart(el, { labels: [], series: [] });
    charts.push(chart);
    try {
      const r = await api("user-trend", { apiKey: key, days: 30 }, signal);
      const rows = r.data || [];
      chart.update({
        labels: rows.map((x) => f.periodLabel(x.period)),
        leftFormat: f.compact,
        rightFormat: f.moneyShort,
        series: [
          { ...series[0], values: rows.map((x) => x.requests) },
          { ...series[1], values: rows.map((x) => x.cost) },
        ],
      });
    } catch (e) {
      if (e.name !== "AbortError") chart.update({ labels: [], series: [], empty: e.status === 404 ? "The trend is not available on this server yet" : e.message });
    }
  });
  return c;
}

function keyStatus(d) {
  if (d.isActive === false) return ["Disabled", "danger"];
  if (d.expiresAt && Date.parse(d.expiresAt) <= Date.now()) return ["Expired", "danger"];
  return ["Active", "ok"];
}

function render(key, d, signal, charts) {
  const u = d.usage || {};
  const today = u.daily || {};
  const month = u.monthly || {};
  const total = u.total || {};
  const [label, kind] = keyStatus(d);
  const cost = (p) => p.cost ?? 0;
  mount(
    results,
    h(
      "div.key-head",
      h(
        "div",
        h("h2", { "data-key-name": "" }, d.name || "Your key"),
        h(
          "div.meta",
          badge(label, kind),
          d.createdAt ? h("span", `Created ${f.date(d.createdAt)}`) : null,
          h("span", d.expiresAt ? `${Date.parse(d.expiresAt) > Date.now() ? "Expires" : "Expired"} ${f.dateTime(d.expiresAt)}` : "Never expires"),
        ),
      ),
    ),
    h(
      "div.stats-grid",
      statCard("Requests today", "activity", f.int(today.requests), `${f.int(month.requests)} this month · ${f.int(total.requests)} all time`),
      statCard("Tokens today", "layers", f.compact(today.allTokens), `${f.compact(month.allTokens)} this month · ${f.compact(total.allTokens)} all time`, `${f.int(today.allTokens)} tokens`),
      statCard("Cost today", "dollar", f.money(cost(today)), `${f.money(cost(total))} all time`),
      statCard("Cost this month", "chart", f.money(cost(month)), `${f.int(month.requests)} requests`),
    ),
    h("div.grid-2.section", limitsCard(d.limits || {}), trendCard(key, signal, charts)),
    h("div.section", modelsCard(key, signal)),
    h("div.section", restrictionsCard(d.restrictions || {}, d.permissions)),
  );
}

// ---------- flow ----------

let controller = null;
let charts = [];

function reset() {
  controller?.abort();
  for (const c of charts) c.destroy();
  charts = [];
}

async function lookUp(key) {
  reset();
  controller = new AbortController();
  const signal = controller.signal;
  keyError.hidden = true;
  keyInput.removeAttribute("aria-invalid");
  hero.hidden = true;
  mount(results, skeleton());
  submitBtn.classList.add("busy");
  try {
    const r = await api("user-stats", { apiKey: key }, signal);
    if (rememberBox.checked) remember(key);
    forgetBtn.hidden = false;
    render(key, r.data || {}, signal, charts);
    document.title = `${r.data?.name || "API key"} usage · crs`;
  } catch (e) {
    if (e.name === "AbortError") return;
    mount(results);
    hero.hidden = false;
    const msg = e.status === 401 || e.status === 404 ? e.message || "This key is not valid." : e.message;
    mount(keyError, icon("alert"), h("span", msg));
    keyError.hidden = false;
    keyInput.setAttribute("aria-invalid", "true");
    keyInput.focus();
    if (e.status !== 401 && e.status !== 400 && e.status !== 404) showError(e);
    remember("");
  } finally {
    submitBtn.classList.remove("busy");
  }
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    mount(keyError, icon("alert"), h("span", "Paste your API key first."));
    keyError.hidden = false;
    keyInput.focus();
    return;
  }
  lookUp(key);
});

rememberBox.addEventListener("change", () => {
  if (!rememberBox.checked) remember("");
  else if (!forgetBtn.hidden && keyInput.value.trim()) remember(keyInput.value.trim());
});

forgetBtn.addEventListener("click", () => {
  reset();
  remember("");
  rememberBox.checked = false;
  keyInput.value = "";
  forgetBtn.hidden = true;
  keyError.hidden = true;
  mount(results);
  hero.hidden = false;
  document.title = "API key usage · crs";
  keyInput.focus();
});

const saved = remembered();
if (saved) {
  keyInput.value = saved;
  lookUp(saved);
} else {
  keyInput.focus();
}
