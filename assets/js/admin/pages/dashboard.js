// Dashboard: today's totals, realtime rates, trends of requests, tokens and cost, the models
// and keys of the day, and account health.

import { h, icon, mount } from "../../lib/dom.js";
import { barList, legend, timeChart } from "../../lib/charts.js";
import * as f from "../../lib/format.js";
import { badge, card, emptyState, showError, skelRows, tabs } from "../../lib/ui.js";
import { accountHealth } from "./shared.js";

const RANGES = [
  ["24h", "24 hours"],
  ["7d", "7 days"],
  ["30d", "30 days"],
];

export function trendQuery(range) {
  if (range === "24h") return { granularity: "hour", days: 1 };
  return { granularity: "day", days: range === "30d" ? 30 : 7 };
}

export function trendLabels(rows, range) {
  const hourly = range === "24h";
  return {
    labels: rows.map((r) => f.periodLabel(r.period)),
    tipLabels: rows.map((r) => f.periodLabel(r.period, { withDay: hourly })),
  };
}

function statCard({ label, iconName, id }) {
  const value = h("div.value", { "data-stat": id }, h("span.skel.value"));
  const sub = h("div.sub", h("span.skel.line", { style: { width: "70%" } }));
  const el = h("div.card.stat", h("div.label", icon(iconName), label), value, sub);
  return {
    el,
    set(v, s, title) {
      mount(value, v);
      value.title = title || "";
      mount(sub, s);
    },
  };
}

export default async function dashboard(root, ctx) {
  let range = ctx.query.get("range") || "7d";
  if (!RANGES.some(([r]) => r === range)) range = "7d";

  const refreshBtn = h(
    "button.btn",
    { type: "button", "aria-label": "Refresh the dashboard" },
    icon("refresh"),
    h("span", "Refresh"),
  );
  const rangeTabs = tabs(RANGES, range, (r) => {
    range = r;
    ctx.setQuery({ range: r === "7d" ? null : r });
    loadTrend();
  }, { label: "Trend range" });

  const cards = {
    requests: statCard({ label: "Requests today", iconName: "activity", id: "requests" }),
    tokens: statCard({ label: "Tokens today", iconName: "layers", id: "tokens" }),
    cost: statCard({ label: "Cost today", iconName: "dollar", id: "cost" }),
    realtime: statCard({ label: "Requests per minute", iconName: "zap", id: "rpm" }),
    keys: statCard({ label: "API keys", iconName: "key", id: "keys" }),
    accounts: statCard({ label: "Accounts", iconName: "server", id: "accounts" }),
  };

  const reqChartEl = h("div.chart", { "data-chart": "requests" });
  const costChartEl = h("div.chart", { "data-chart": "cost" });
  const tokChartEl = h("div.chart", { "data-chart": "tokens" });
  const reqSeries = [
    { name: "Requests", cls: "s1", type: "bar", stack: "r" },
    { name: "Errors", cls: "s4", type: "bar", stack: "r" },
  ];
  const tokSeries = [
    { name: "Input", cls: "s1", type: "bar", stack: "t" },
    { name: "Output", cls: "s2", type: "bar", stack: "t" },
    { name: "Cache write", cls: "s3", type: "bar", stack: "t" },
    { name: "Cache read", cls: "s5", type: "bar", stack: "t" },
  ];
  const modelsBody = h("div", h("div.chart.short", h("span.skel.block")));
  const keysBody = h("div", h("div.chart.short", h("span.skel.block")));
  const accTbody = h("tbody", skelRows(7, 3));

  mount(
    root,
    h(
      "div.page-head",
      h("div", h("h1", "Dashboard"), h("p", { "data-date": "" }, "Usage today and over time.")),
      h("div.actions", rangeTabs, refreshBtn),
    ),
    h("div.stats-grid.six", Object.values(cards).map((c) => c.el)),
    h(
      "div.grid-2.section",
      card("Requests", { sub: "Answered requests and upstream errors", actions: legend(reqSeries), body: reqChartEl }),
      card("Cost", { sub: "Rated cost in US dollars", body: costChartEl }),
    ),
    h("div.section", card("Tokens", { sub: "Input, output and prompt-cache tokens", actions: legend(tokSeries), body: tokChartEl })),
    h(
      "div.grid-2.section",
      card("Models today", { sub: "By cost", body: modelsBody }),
      card("Top keys today", { sub: "By cost", body: keysBody }),
    ),
    h(
      "div.section",
      card("Account health", {
        sub: "Today's traffic per upstream account",
        actions: h("a.btn.btn-sm", { href: "/admin-next/accounts" }, "Manage accounts"),
        flush: true,
        body: h(
          "div.table-wrap",
          h(
            "table.table.responsive",
            { "aria-label": "Account health" },
            h(
              "thead",
              h(
                "tr",
                h("th", "Account"),
                h("th", "Health"),
                h("th.num", "Requests"),
                h("th.num", "Errors"),
                h("th.num", "Error rate"),
                h("th.num", "Tokens"),
                h("th.num", "Cost"),
              ),
            ),
            accTbody,
          ),
        ),
      }),
    ),
  );

  const reqChart = timeChart(reqChartEl, { labels: [], series: [] });
  const costChart = timeChart(costChartEl, { labels: [], series: [] });
  const tokChart = timeChart(tokChartEl, { labels: [], series: [] });
  ctx.onCleanup(() => {
    reqChart.destroy();
    costChart.destroy();
    tokChart.destroy();
  });

  async function loadSummary() {
    const r = await ctx.api("/admin/dashboard");
    const d = r.data || {};
    const t = d.today || {};
    const tot = d.total || {};
    const o = d.overview || {};
    const rt = d.realtime || {};
    if (d.date) root.querySelector("[data-date]").textContent = `Today is ${f.date(`${d.date}T12:00:00`)} in the server's accounting time zone.`;
    cards.requests.set(
      f.int(t.requests),
      [`${f.int(tot.requests)} all time`, t.errors ? ` · ${f.plural(t.errors, "error")}` : ""].join(""),
    );
    cards.tokens.set(
      f.compact(t.allTokens),
      `In ${f.compact(t.inputTokens)} · out ${f.compact(t.outputTokens)} · cache ${f.compact((t.cacheCreateTokens || 0) + (t.cacheReadTokens || 0))}`,
      `${f.int(t.allTokens)} tokens`,
    );
    cards.cost.set(f.money(t.cost), `${f.money(tot.cost)} all time`);
    cards.realtime.set(
      f.int(rt.rpm),
      `${f.compact(rt.tpm)} tokens/min · last ${rt.windowMinutes || 5} min`,
    );
    cards.keys.set(f.int(o.activeApiKeys), `active of ${f.int(o.totalApiKeys)}`);
    cards.accounts.set(f.int(o.activeAccounts), `schedulable of ${f.int(o.totalAccounts)}`);

    const models = (d.models || []).slice(0, 8);
    mount(
      modelsBody,
      models.length
        ? barList(
            models.map((m) => ({
              name: m.model,
              value: m.cost,
              detail: [h("span", `${f.plural(m.requests, "request")} · ${f.compact(m.allTokens)} tokens`), m.priceSource && m.priceSource !== "exact" ? h("span", { title: "No exact price for this model: the cost is estimated or missing" }, m.priceSource === "unknown" ? "no price" : "estimated") : null],
            })),
            { format: f.money, cls: "bg2" },
          )
        : emptyState({ iconName: "layers", title: "No requests yet today", text: "Models appear here once keys make requests." }),
    );
    const keys = (d.topKeys || []).slice(0, 8);
    mount(
      keysBody,
      keys.length
        ? barList(
            keys.map((k) => ({ name: k.name || k.keyId, value: k.cost, detail: h("span", `${f.plural(k.requests, "request")} · ${f.compact(k.allTokens)} tokens`) })),
            { format: f.money },
          )
        : emptyState({ iconName: "key", title: "No key has been used today", text: "The busiest keys of the day show up here." }),
    );
    const accounts = d.accounts || [];
    if (!accounts.length) {
      mount(
        accTbody,
        h("tr", h("td", { colspan: "7" }, emptyState({ iconName: "server", title: "No accounts yet", text: "Add an upstream account to start relaying requests.", action: h("a.btn.btn-primary", { href: "/admin-next/accounts" }, icon("plus"), "Add an account") }))),
      );
    } else {
      mount(
        accTbody,
        accounts.map((a) => {
          const [label, kind] = accountHealth(a);
          return h(
            "tr",
            h("td.primary", h("div.cell-stack", h("span.cell-title", a.name), h("span.cell-sub", a.platform))),
            h("td", { "data-label": "Health" }, badge(label, kind)),
            h("td.num", { "data-label": "Requests" }, f.int(a.requests)),
            h("td.num", { "data-label": "Errors" }, f.int(a.errors)),
            h("td.num", { "data-label": "Error rate" }, f.percent(a.errorRate)),
            h("td.num", { "data-label": "Tokens" }, f.compact(a.allTokens || 0)),
            h("td.num", { "data-label": "Cost" }, f.money(a.cost)),
          );
        }),
      );
    }
  }

  async function loadTrend() {
    const r = await ctx.api("/admin/usage-trend", { query: trendQuery(range) });
    const rows = r.data || [];
    const { labels, tipLabels } = trendLabels(rows, range);
    reqChart.update({
      labels,
      tipLabels,
      leftFormat: f.compact,
      series: [
        { ...reqSeries[0], values: rows.map((x) => x.requests), format: f.int, integer: true },
        { ...reqSeries[1], values: rows.map((x) => x.errors || 0), format: f.int, integer: true },
      ],
      empty: "No requests in this period",
    });
    costChart.update({
      labels,
      tipLabels,
      leftFormat: f.moneyShort,
      series: [{ name: "Cost", cls: "s2", type: "area", values: rows.map((x) => x.cost), format: f.money }],
      empty: "No cost in this period",
    });
    tokChart.update({
      labels,
      tipLabels,
      leftFormat: f.compact,
      series: [
        { ...tokSeries[0], values: rows.map((x) => x.inputTokens), format: f.int },
        { ...tokSeries[1], values: rows.map((x) => x.outputTokens), format: f.int },
        { ...tokSeries[2], values: rows.map((x) => x.cacheCreateTokens), format: f.int },
        { ...tokSeries[3], values: rows.map((x) => x.cacheReadTokens), format: f.int },
      ],
      empty: "No tokens in this period",
    });
  }

  let loadedOnce = false;
  async function loadAll(quiet = false) {
    const [summary, trend] = await Promise.allSettled([loadSummary(), loadTrend()]);
    if (summary.status === "rejected" && !loadedOnce) {
      for (const c of Object.values(cards)) c.set("—", "Unavailable");
      mount(modelsBody, emptyState({ iconName: "alert", title: "Could not load", text: summary.reason?.message }));
      mount(keysBody, emptyState({ iconName: "alert", title: "Could not load", text: summary.reason?.message }));
      mount(accTbody, h("tr", h("td", { colspan: "7" }, h("p.muted", "Could not load the accounts."))));
    }
    if (summary.status === "fulfilled") loadedOnce = true;
    if (!quiet) for (const res of [summary, trend]) if (res.status === "rejected") showError(res.reason);
  }

  refreshBtn.addEventListener("click", async () => {
    refreshBtn.classList.add("busy");
    await loadAll();
    refreshBtn.classList.remove("busy");
  });
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") loadAll(true);
  }, 30_000);
  ctx.onCleanup(() => clearInterval(timer));
  await loadAll();
}
