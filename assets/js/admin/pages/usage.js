// Usage: the cost ranking by key, account or model over a period, a trend for any of them,
// and the latest request records.

import { h, icon, mount } from "../../lib/dom.js";
import { legend, timeChart } from "../../lib/charts.js";
import * as f from "../../lib/format.js";
import { card, emptyState, select, showError, skelRows, tabs } from "../../lib/ui.js";
import { recordRow } from "./key-form.js";
import { trendLabels, trendQuery } from "./dashboard.js";

const PERIODS = [
  ["today", "Today"],
  ["7days", "7 days"],
  ["30days", "30 days"],
  ["month", "This month"],
  ["all", "All time"],
];
const DIMS = [
  ["key", "Keys"],
  ["account", "Accounts"],
  ["model", "Models"],
];

export default async function usagePage(root, ctx) {
  const q = ctx.query;
  const st = {
    by: DIMS.some(([d]) => d === q.get("by")) ? q.get("by") : "key",
    period: PERIODS.some(([p]) => p === q.get("period")) ? q.get("period") : "7days",
    range: ["24h", "7d", "30d"].includes(q.get("range")) ? q.get("range") : "7d",
    focus: q.get("focus") || "",
    recKey: q.get("recKey") || "",
    recAccount: q.get("recAccount") || "",
  };

  const rankBody = h("tbody", skelRows(7, 4));
  const rankTotals = h("span.muted.small");
  const chartEl = h("div.chart", { "data-chart": "usage-trend" });
  const focusSel = select([["", "Everything"]], "", { "aria-label": "Trend of" });
  const recBody = h("tbody", skelRows(8, 5));
  const recKeySel = select([["", "All keys"]], "", { "aria-label": "Records of key" });
  const recAccSel = select([["", "All accounts"]], "", { "aria-label": "Records of account" });
  const recRefresh = h("button.btn.btn-sm", { type: "button", "aria-label": "Refresh the records" }, icon("refresh"), "Refresh");
  const series = [
    { name: "Requests", cls: "s1", type: "bar", integer: true, format: f.int },
    { name: "Cost", cls: "s2", type: "line", axis: "right", format: f.money },
  ];

  const byTabs = tabs(DIMS, st.by, (v) => {
    st.by = v;
    ctx.setQuery({ by: v === "key" ? null : v });
    loadRanking();
  }, { label: "Rank by" });
  const periodSel = select(PERIODS, st.period, { "aria-label": "Period" });
  periodSel.addEventListener("change", () => {
    st.period = periodSel.value;
    ctx.setQuery({ period: st.period === "7days" ? null : st.period });
    loadRanking();
  });
  const rangeTabs = tabs(
    [
      ["24h", "24 hours"],
      ["7d", "7 days"],
      ["30d", "30 days"],
    ],
    st.range,
    (v) => {
      st.range = v;
      ctx.setQuery({ range: v === "7d" ? null : v });
      loadTrend();
    },
    { label: "Trend range" },
  );

  mount(
    root,
    h("div.page-head", h("div", h("h1", "Usage"), h("p", "Where the tokens and the money go."))),
    card("Cost ranking", {
      sub: "Sorted by rated cost",
      actions: h("div.row", byTabs, periodSel),
      flush: true,
      body: [
        h(
          "div.table-wrap",
          h(
            "table.table.responsive",
            { "aria-label": "Cost ranking" },
            h(
              "thead",
              h(
                "tr",
                h("th", "Name"),
                h("th.num", "Requests"),
                h("th.num", "Input"),
                h("th.num", "Output"),
                h("th.num", "Cache"),
                h("th.num", "Cost"),
                h("th", { style: { width: "22%" } }, "Share"),
              ),
            ),
            rankBody,
          ),
        ),
        h("div.pager", rankTotals),
      ],
    }),
    h(
      "div.section",
      card("Trend", {
        sub: "Requests and cost over time",
        actions: h("div.row", focusSel, rangeTabs),
        body: [h("div.section-head", h("span"), legend(series)), chartEl],
      }),
    ),
    h(
      "div.section",
      card("Request records", {
        sub: "The latest requests, newest first",
        actions: h("div.row", recKeySel, recAccSel, recRefresh),
        flush: true,
        body: h(
          "div.table-wrap",
          h(
            "table.table.responsive",
            { "aria-label": "Request records" },
            h(
              "thead",
              h("tr", h("th", "Time"), h("th", "Key"), h("th", "Model"), h("th", "Account"), h("th.num", "Tokens"), h("th.num", "Cost"), h("th.num", "Latency"), h("th", "Status")),
            ),
            recBody,
          ),
        ),
      }),
    ),
  );

  const chart = timeChart(chartEl, { labels: [], series: [] });
  ctx.onCleanup(() => chart.destroy());

  let rankSeq = 0;
  async function loadRanking() {
    const my = ++rankSeq;
    try {
      const r = await ctx.api("/admin/usage-breakdown", { query: { by: st.by, period: st.period } });
      if (my !== rankSeq) return;
      const rows = r.data || [];
      const totalCost = rows.reduce((a, x) => a + (x.cost || 0), 0);
      const totalReq = rows.reduce((a, x) => a + (x.requests || 0), 0);
      rankTotals.textContent = rows.length ? `${f.plural(rows.length, DIMS.find(([d]) => d === st.by)[1].toLowerCase().replace(/s$/, ""))} · ${f.plural(totalReq, "request")} · ${f.money(totalCost)}` : "";
      if (!rows.length) {
        mount(rankBody, h("tr", h("td", { colspan: "7" }, emptyState({ iconName: "chart", title: "No usage in this period", text: "Requests made through crs are counted here." }))));
        return;
      }
      mount(
        rankBody,
        rows.map((x, i) => {
          const share = totalCost > 0 ? x.cost / totalCost : 0;
          const name = x.name || (st.by === "model" ? x.id : `${String(x.id || "").slice(0, 8)}… (deleted)`);
          return h(
            "tr",
            h("td.primary", h("div.cell-stack", h("span.cell-title", `${i + 1}. ${name}`), x.priceSource && x.priceSource !== "exact" ? h("span.cell-sub", x.priceSource === "unknown" ? "No price known: cost not counted" : `Priced as ${x.pricedAs || "a similar model"}`) : null)),
            h("td.num", { "data-label": "Requests" }, f.int(x.requests), x.errors ? h("div.cell-sub", `${f.int(x.errors)} errors`) : null),
            h("td.num", { "data-label": "Input" }, f.compact(x.inputTokens)),
            h("td.num", { "data-label": "Output" }, f.compact(x.outputTokens)),
            h("td.num", { "data-label": "Cache" }, f.compact((x.cacheCreateTokens || 0) + (x.cacheReadTokens || 0))),
            h("td.num", { "data-label": "Cost" }, h("strong", f.money(x.cost))),
            h("td", { "data-label": "Share" }, h("div.row", { style: { flexWrap: "nowrap" } }, h("div.meter", { style: { flex: "1", minWidth: "60px" } }, h("span", { style: { width: `${(share * 100).toFixed(1)}%` } })), h("span.small.muted", { style: { width: "44px", textAlign: "right" } }, f.percent(share, 0)))),
          );
        }),
      );
    } catch (e) {
      if (my !== rankSeq) return;
      showError(e, "Could not load the ranking");
      mount(rankBody, h("tr", h("td", { colspan: "7" }, emptyState({ iconName: "alert", title: "Could not load the ranking", text: e.message }))));
    }
  }

  let trendSeq = 0;
  async function loadTrend() {
    const my = ++trendSeq;
    const query = trendQuery(st.range);
    const [kind, id] = st.focus.split(":");
    if (kind === "key") query.keyId = id;
    else if (kind === "account") query.accountId = id;
    else if (kind === "model") query.model = st.focus.slice(6);
    try {
      const r = await ctx.api("/admin/usage-trend", { query });
      if (my !== trendSeq) return;
      const rows = r.data || [];
      const { labels, tipLabels } = trendLabels(rows, st.range);
      chart.update({
        labels,
        tipLabels,
        leftFormat: f.compact,
        rightFormat: f.moneyShort,
        series: [
          { ...series[0], values: rows.map((x) => x.requests) },
          { ...series[1], values: rows.map((x) => x.cost) },
        ],
      });
    } catch (e) {
      if (my === trendSeq) showError(e, "Could not load the trend");
    }
  }

  let recSeq = 0;
  async function loadRecords() {
    const my = ++recSeq;
    try {
      const r = await ctx.api("/admin/usage-records", { query: { limit: 100, keyId: st.recKey, accountId: st.recAccount } });
      if (my !== recSeq) return;
      const rows = r.data || [];
      mount(
        recBody,
        rows.length
          ? rows.map((x) => recordRow(x, { withKey: true, withAccount: true }))
          : h("tr", h("td", { colspan: "8" }, emptyState({ iconName: "list", title: "No requests recorded", text: st.recKey || st.recAccount ? "Nothing matches these filters." : "Every request through crs is listed here." }))),
      );
    } catch (e) {
      if (my !== recSeq) return;
      showError(e, "Could not load the records");
      mount(recBody, h("tr", h("td", { colspan: "8" }, emptyState({ iconName: "alert", title: "Could not load the records", text: e.message }))));
    }
  }

  // Filters: keys and accounts by name, models from the all-time ranking.
  async function loadFilters() {
    const [keys, models, accounts] = await Promise.allSettled([
      ctx.api("/admin/api-keys", { query: { pageSize: 1000 } }),
      ctx.api("/admin/usage-breakdown", { query: { by: "model", period: "all" } }),
      ctx.api("/admin/usage-breakdown", { query: { by: "account", period: "all" } }),
    ]);
    const keyList = keys.status === "fulfilled" ? keys.value.data?.items || [] : [];
    const modelList = models.status === "fulfilled" ? models.value.data || [] : [];
    const accList = accounts.status === "fulfilled" ? (accounts.value.data || []).filter((a) => a.name) : [];
    mount(
      focusSel,
      h("option", { value: "" }, "Everything"),
      keyList.length ? h("optgroup", { label: "Keys" }, keyList.map((k) => h("option", { value: `key:${k.id}` }, k.name))) : null,
      accList.length ? h("optgroup", { label: "Accounts" }, accList.map((a) => h("option", { value: `account:${a.id}` }, a.name))) : null,
      modelList.length ? h("optgroup", { label: "Models" }, modelList.map((m) => h("option", { value: `model:${m.id}` }, m.id))) : null,
    );
    focusSel.value = st.focus;
    mount(recKeySel, h("option", { value: "" }, "All keys"), keyList.map((k) => h("option", { value: k.id }, k.name)));
    recKeySel.value = st.recKey;
    mount(recAccSel, h("option", { value: "" }, "All accounts"), accList.map((a) => h("option", { value: a.id }, a.name)));
    recAccSel.value = st.recAccount;
    recAccSel.hidden = !accList.length;
  }

  focusSel.addEventListener("change", () => {
    st.focus = focusSel.value;
    ctx.setQuery({ focus: st.focus });
    loadTrend();
  });
  recKeySel.addEventListener("change", () => {
    st.recKey = recKeySel.value;
    ctx.setQuery({ recKey: st.recKey });
    loadRecords();
  });
  recAccSel.addEventListener("change", () => {
    st.recAccount = recAccSel.value;
    ctx.setQuery({ recAccount: st.recAccount });
    loadRecords();
  });
  recRefresh.addEventListener("click", async () => {
    recRefresh.classList.add("busy");
    await loadRecords();
    recRefresh.classList.remove("busy");
  });

  await Promise.all([loadRanking(), loadTrend(), loadRecords(), loadFilters().catch(() => {})]);
}
