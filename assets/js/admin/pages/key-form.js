// The API key editor (every policy field), the "key created" dialog and the key usage view.

import { h, icon, mount, nextId } from "../../lib/dom.js";
import { legend, timeChart } from "../../lib/charts.js";
import * as f from "../../lib/format.js";
import { badge, copyButton, emptyState, field, input, meter, modal, moneyInput, select, showError, skelRows, switchInput, toast } from "../../lib/ui.js";
import { KEY_BINDINGS } from "./shared.js";

const PERMISSIONS = [
  ["claude", "Claude"],
  ["gemini", "Gemini"],
  ["openai", "OpenAI"],
  ["droid", "Droid"],
];
const CLIENTS = [
  ["claude_code", "Claude Code"],
  ["gemini_cli", "Gemini CLI"],
  ["codex_cli", "Codex CLI"],
  ["droid_cli", "Droid CLI"],
];
const DAYS = [
  ["1", "Monday"],
  ["2", "Tuesday"],
  ["3", "Wednesday"],
  ["4", "Thursday"],
  ["5", "Friday"],
  ["6", "Saturday"],
  ["7", "Sunday"],
];

/** A tag-style list input: type and press Enter or comma. */
function chipInput({ values = [], placeholder = "", suggestions = [], label }) {
  let list = [...values];
  const chips = h("div.chips");
  const listId = nextId("dl");
  const inp = input({ placeholder, list: suggestions.length ? listId : null, "aria-label": label });
  const dl = suggestions.length ? h("datalist", { id: listId }, suggestions.map((s) => h("option", { value: s }))) : null;
  const render = () =>
    mount(
      chips,
      list.map((v) =>
        h(
          "span.chip",
          { style: { paddingRight: "2px" } },
          v,
          h(
            "button.btn.btn-ghost.btn-sm",
            { type: "button", style: { height: "18px", padding: "0 4px" }, "aria-label": `Remove ${v}`, onclick: () => { list = list.filter((x) => x !== v); render(); } },
            "×",
          ),
        ),
      ),
    );
  const add = () => {
    for (const part of inp.value.split(",")) {
      const v = part.trim();
      if (v && !list.includes(v)) list.push(v);
    }
    inp.value = "";
    render();
  };
  inp.addEventListener("keydown", (ev) => {
    if ((ev.key === "Enter" || ev.key === ",") && inp.value.trim()) {
      ev.preventDefault();
      add();
    } else if (ev.key === "Backspace" && !inp.value && list.length) {
      list.pop();
      render();
    }
  });
  inp.addEventListener("change", () => {
    if (suggestions.includes(inp.value.trim())) add();
  });
  render();
  return {
    el: h("div.stack", { style: { gap: "6px" } }, inp, dl, chips),
    input: inp,
    values: () => {
      if (inp.value.trim()) add();
      return [...list];
    },
  };
}

function section(title, note, ...content) {
  return h("fieldset.form-section", h("legend", title), note ? h("p.section-note", note) : null, ...content);
}

const numOrBlank = (v) => (v ? String(v) : "");

/**
 * Open the key editor. `key` is null to create. Resolves with the server's response data, or
 * null when closed without saving.
 */
export function openKeyForm({ ctx, key = null, tags = [], accountTypes = [], groups = [] }) {
  const k = key || {};
  const creating = !key;
  return new Promise((resolve) => {
    let result = null;

    // Basics
    const name = input({ name: "name", value: k.name || "", required: true, maxlength: "100", autofocus: true, placeholder: "e.g. alice-laptop" });
    const nameErr = h("span.error-text", { hidden: true, role: "alert" });
    const desc = h("textarea.textarea", { name: "description", maxlength: "500", rows: "2", placeholder: "Who uses it, what for" });
    desc.value = k.description || "";
    const tagInput = chipInput({ values: k.tags || [], placeholder: "Add a tag and press Enter", suggestions: tags, label: "Tags" });
    const active = switchInput("Key is active", creating ? true : k.isActive, { name: "isActive" });

    // Expiry
    const expMode = k.expirationMode === "activation" ? "activation" : k.expiresAt ? "date" : "never";
    const expSel = select(
      [
        ["never", "Never expires"],
        ["date", "Expires on a date"],
        ["activation", "Expires after first use"],
      ],
      expMode,
      { name: "expiry" },
    );
    const expDate = input({ type: "datetime-local", name: "expiresAt", value: f.toLocalInput(k.expiresAt) });
    const actDays = input({ type: "number", name: "activationDays", min: "1", step: "1", value: String(k.activationDays || 30) });
    const actUnit = select([["days", "days"], ["hours", "hours"]], k.activationUnit || "days", { name: "activationUnit", "aria-label": "Activation unit" });
    const dateField = field("Expires at", expDate, { hint: "Your local time." });
    const actField = h(
      "div.field",
      h("label", { for: (actDays.id = nextId("f")) }, "Valid for"),
      h("div.input-group", actDays, h("span.affix", { style: { padding: 0, border: 0, background: "transparent" } }, actUnit)),
      h("span.hint", k.isActivated ? `Activated ${f.dateTime(k.activatedAt)}; expires ${f.dateTime(k.expiresAt)}.` : "The clock starts with the key's first request."),
    );
    actUnit.style.borderRadius = "0 8px 8px 0";
    const syncExpiry = () => {
      dateField.hidden = expSel.value !== "date";
      actField.hidden = expSel.value !== "activation";
    };
    expSel.addEventListener("change", syncExpiry);
    syncExpiry();

    // Cost limits
    const money = (nm, v) => moneyInput({ name: nm, value: v ? String(v) : "", placeholder: "No limit" });
    const daily = money("dailyCostLimit", k.dailyCostLimit);
    const total = money("totalCostLimit", k.totalCostLimit);
    const weekly = money("weeklyOpusCostLimit", k.weeklyOpusCostLimit);
    const fiveHour = money("fiveHourCostLimit", k.fiveHourCostLimit);
    const resetDay = select(DAYS, String(k.weeklyResetDay || 1), { name: "weeklyResetDay" });
    const resetHour = select(
      Array.from({ length: 24 }, (_, i) => [String(i), `${String(i).padStart(2, "0")}:00`]),
      String(k.weeklyResetHour || 0),
      { name: "weeklyResetHour" },
    );

    // Rate window and tokens
    const rlWindow = input({ type: "number", name: "rateLimitWindow", min: "0", step: "1", value: numOrBlank(k.rateLimitWindow), placeholder: "Off" });
    const rlRequests = input({ type: "number", name: "rateLimitRequests", min: "0", step: "1", value: numOrBlank(k.rateLimitRequests), placeholder: "No limit" });
    const rlCost = money("rateLimitCost", k.rateLimitCost);
    const tokenLimit = input({ type: "number", name: "tokenLimit", min: "0", step: "1", value: numOrBlank(k.tokenLimit), placeholder: "No limit" });

    // Concurrency
    const conc = input({ type: "number", name: "concurrencyLimit", min: "0", step: "1", value: numOrBlank(k.concurrencyLimit), placeholder: "Unlimited" });
    const queue = switchInput("Queue requests over the limit instead of refusing them", k.concurrencyQueueEnabled, { name: "concurrencyQueueEnabled" });
    const queueMax = input({ type: "number", name: "concurrencyQueueMax", min: "0", step: "1", value: numOrBlank(k.concurrencyQueueMax), placeholder: "Default" });
    const queueTimeout = input({ type: "number", name: "concurrencyQueueTimeout", min: "0", step: "1", value: k.concurrencyQueueTimeoutMs ? String(k.concurrencyQueueTimeoutMs / 1000) : "", placeholder: "Default" });

    // Access
    const perms = new Set(k.permissions || []);
    const permBoxes = PERMISSIONS.map(([v, label]) => {
      const cb = h("input", { type: "checkbox", name: "permissions", value: v, checked: perms.has(v) });
      return { v, cb, el: h("label.check", cb, label) };
    });
    const modelOn = switchInput("Restrict models", k.enableModelRestriction, { name: "enableModelRestriction" });
    const modelMode = k.modelRestrictionMode === "allow" ? "allow" : "deny";
    const modeRadios = [
      ["deny", "Block the listed models"],
      ["allow", "Allow only the listed models"],
    ].map(([v, label]) => {
      const r = h("input", { type: "radio", name: "modelRestrictionMode", value: v, checked: v === modelMode });
      return { v, r, el: h("label.radio", r, label) };
    });
    const models = h("textarea.textarea", { name: "restrictedModels", rows: "3", placeholder: "claude-opus-4-1\nclaude-3-5-haiku-20241022", spellcheck: "false" });
    models.value = (k.restrictedModels || []).join("\n");
    const clientOn = switchInput("Restrict clients", k.enableClientRestriction, { name: "enableClientRestriction" });
    const allowed = new Set(k.allowedClients || []);
    const clientBoxes = CLIENTS.map(([v, label]) => {
      const cb = h("input", { type: "checkbox", name: "allowedClients", value: v, checked: allowed.has(v) });
      return { v, cb, el: h("label.check", cb, label) };
    });
    const builtin = new Set(CLIENTS.map(([v]) => v));
    const customClients = chipInput({ values: (k.allowedClients || []).filter((c) => !builtin.has(c)), placeholder: "e.g. CherryStudio/*", label: "Custom user-agent patterns" });
    const modelBox = h("div.stack", h("div.choice-row", modeRadios.map((x) => x.el)), field("Models", models, { hint: "One per line. Dated and undated names both match." }));
    const clientBox = h(
      "div.stack",
      h("div.choice-row", clientBoxes.map((x) => x.el)),
      field("Custom user-agent patterns", customClients.el, { hint: "Glob patterns; * matches anything. Press Enter after each." }),
    );
    const syncAccess = () => {
      modelBox.hidden = !modelOn.input.checked;
      clientBox.hidden = !clientOn.input.checked;
    };
    modelOn.input.addEventListener("change", syncAccess);
    clientOn.input.addEventListener("change", syncAccess);
    syncAccess();
    const oneM = switchInput("Allow the 1M-token context window", k.allow1mContext, { name: "allow1mContext" });

    // Routing
    const bindings = [];
    for (const b of KEY_BINDINGS) {
      const typeList = accountTypes.filter((t) => b.types.includes(t.type.id));
      const groupList = b.family ? groups.filter((g) => g.platform === b.family) : [];
      const cur = k[b.field] || "";
      if (!typeList.some((t) => t.accounts.length) && !groupList.length && !cur) continue;
      const options = [["", "Shared pool"]];
      for (const t of typeList) {
        for (const a of t.accounts) options.push([a.id, typeList.length > 1 ? `${a.name} · ${t.type.label}` : a.name]);
      }
      for (const g of groupList) options.push([`group:${g.id}`, `Group: ${g.name}`]);
      if (cur && !options.some(([v]) => v === cur)) options.push([cur, `Unknown account (${cur.slice(0, 14)})`]);
      const sel = select(options, cur, { name: b.field });
      bindings.push({ field: b.field, sel, el: field(b.label, sel) });
    }
    const rates = PERMISSIONS.map(([v, label]) => {
      const inp = input({ type: "number", name: `rate-${v}`, min: "0", step: "0.01", value: k.serviceRates && k.serviceRates[v] !== undefined ? String(k.serviceRates[v]) : "", placeholder: "1" });
      return { v, inp, el: field(`${label} rate`, inp) };
    });

    const body = h(
      "div",
      section(
        "Basics",
        null,
        h(
          "div.form-grid",
          h("div.field.span-2", h("label", { for: (name.id = nextId("f")) }, "Name"), name, nameErr),
          field("Description", desc, { cls: "span-2" }),
          h("div.field.span-2", h("span.field-label", "Tags"), tagInput.el),
          h("div.span-2", active.el),
        ),
      ),
      section("Expiry", null, h("div.form-grid", field("Expires", expSel), dateField, actField)),
      section(
        "Cost limits",
        "US dollars of rated cost. Leave blank for no limit; requests over a limit are refused with 402.",
        h(
          "div.form-grid",
          field("Daily", daily.el, { hint: "Resets at midnight, server time." }),
          field("Total", total.el),
          field("Rolling five hours", fiveHour.el),
          field("Weekly (Claude models)", weekly.el),
          field("Weekly reset day", resetDay),
          field("Weekly reset hour", resetHour),
        ),
      ),
      section(
        "Rate limit",
        "A window of N minutes, opened by the first request. Blank or 0 = off.",
        h(
          "div.form-grid",
          field("Window (minutes)", rlWindow),
          field("Requests per window", rlRequests),
          field("Cost per window", rlCost.el),
          field("Token limit", tokenLimit, { hint: "Tokens per window." }),
        ),
      ),
      section(
        "Concurrency",
        null,
        h(
          "div.form-grid",
          field("Concurrent requests", conc, { hint: "Blank or 0 = unlimited." }),
          h("div.field", { style: { justifyContent: "flex-end" } }, queue.el),
          field("Queue length", queueMax),
          field("Queue wait (seconds)", queueTimeout),
        ),
      ),
      section(
        "Access",
        null,
        h(
          "div.stack",
          h("div.field", h("span.field-label", "Services"), h("div.choice-row", permBoxes.map((x) => x.el)), h("span.hint", "None ticked = every service.")),
          modelOn.el,
          modelBox,
          clientOn.el,
          clientBox,
          oneM.el,
        ),
      ),
      section(
        "Routing and pricing",
        "Bind the key to one account, or let it use the shared pool. A rate multiplies the cost counted against the key's limits.",
        h("div.form-grid", bindings.map((b) => b.el), rates.map((r) => r.el)),
      ),
    );

    const numberOf = (inp, { int = true } = {}) => {
      const v = inp.value.trim();
      if (!v) return 0;
      const n = Number(v);
      return int ? Math.round(n) : n;
    };

    function collect() {
      const b = {
        name: name.value.trim(),
        description: desc.value.trim(),
        tags: tagInput.values(),
        isActive: active.input.checked,
        dailyCostLimit: numberOf(daily.input, { int: false }),
        totalCostLimit: numberOf(total.input, { int: false }),
        weeklyOpusCostLimit: numberOf(weekly.input, { int: false }),
        fiveHourCostLimit: numberOf(fiveHour.input, { int: false }),
        weeklyResetDay: Number(resetDay.value),
        weeklyResetHour: Number(resetHour.value),
        rateLimitWindow: numberOf(rlWindow),
        rateLimitRequests: numberOf(rlRequests),
        rateLimitCost: numberOf(rlCost.input, { int: false }),
        tokenLimit: numberOf(tokenLimit),
        concurrencyLimit: numberOf(conc),
        concurrencyQueueEnabled: queue.input.checked,
        concurrencyQueueMax: numberOf(queueMax),
        concurrencyQueueTimeoutMs: Math.round(numberOf(queueTimeout, { int: false }) * 1000),
        permissions: permBoxes.filter((x) => x.cb.checked).map((x) => x.v),
        enableModelRestriction: modelOn.input.checked,
        modelRestrictionMode: modeRadios.find((x) => x.r.checked)?.v || "deny",
        restrictedModels: models.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean),
        enableClientRestriction: clientOn.input.checked,
        allowedClients: [...clientBoxes.filter((x) => x.cb.checked).map((x) => x.v), ...customClients.values()],
        allow1mContext: oneM.input.checked,
      };
      if (expSel.value === "never") {
        b.expirationMode = "fixed";
        b.expiresAt = null;
      } else if (expSel.value === "date") {
        b.expirationMode = "fixed";
        b.expiresAt = expDate.value ? new Date(expDate.value).toISOString() : null;
      } else {
        b.expirationMode = "activation";
        b.activationDays = numberOf(actDays);
        b.activationUnit = actUnit.value;
      }
      for (const bd of bindings) b[bd.field] = bd.sel.value;
      const sr = {};
      for (const r of rates) if (r.inp.value.trim() !== "") sr[r.v] = Number(r.inp.value);
      b.serviceRates = sr;
      return b;
    }

    const submit = h("button.btn.btn-primary", { type: "submit" }, creating ? "Create key" : "Save changes");
    modal({
      title: creating ? "Create an API key" : `Edit ${k.name}`,
      wide: true,
      body,
      footer: [h("button.btn", { type: "button", onclick: (ev) => ev.target.closest("dialog").close() }, "Cancel"), submit],
      onSubmit: async () => {
        nameErr.hidden = true;
        name.removeAttribute("aria-invalid");
        const b = collect();
        if (!b.name) {
          nameErr.textContent = "Give the key a name.";
          nameErr.hidden = false;
          name.setAttribute("aria-invalid", "true");
          name.focus();
          return false;
        }
        if (expSel.value === "date" && !b.expiresAt) {
          toast("Pick the expiry date, or choose “Never expires”.", { kind: "error" });
          expDate.focus();
          return false;
        }
        if (expSel.value === "activation" && !(b.activationDays > 0)) {
          toast("Enter how long the key stays valid after its first use.", { kind: "error" });
          actDays.focus();
          return false;
        }
        const r = creating
          ? await ctx.api("/admin/api-keys", { method: "POST", body: b })
          : await ctx.api(`/admin/api-keys/${encodeURIComponent(k.id)}`, { method: "PUT", body: b });
        result = r.data || r;
        return true;
      },
      onClose: () => resolve(result),
    });
  });
}

/** Show a new key's plaintext, once, with a copy button and setup lines. */
export function showCreatedKey(data) {
  const plaintext = data.apiKey;
  const origin = location.origin;
  const snippet = `export ANTHROPIC_BASE_URL=${origin}\nexport ANTHROPIC_API_KEY=${plaintext}`;
  return new Promise((resolve) => {
    modal({
      title: "Key created",
      body: h(
        "div.stack",
        h("div.callout.warn", icon("warn"), h("span", h("strong", "Copy the key now. "), "It is shown only this once; crs keeps only a hash of it.")),
        h("div.field", h("span.field-label", `Key for ${data.name}`), h("div.secret-box", h("code", { "data-plaintext-key": "" }, plaintext), copyButton(plaintext))),
        h("div.field", h("span.field-label", "Claude Code setup"), h("pre.snippet", snippet), h("div", copyButton(snippet, { label: "Copy setup", small: true }))),
        h("p.muted.small", "The key holder can follow their usage at ", h("a", { href: "/admin-next/api-stats", target: "_blank", rel: "noopener" }, `${origin}/admin-next/api-stats`), "."),
      ),
      footer: [h("button.btn.btn-primary", { type: "button", autofocus: true, onclick: (ev) => ev.target.closest("dialog").close() }, "Done")],
      onClose: resolve,
    });
  });
}

function limitRow(label, used, limit, fmt, foot) {
  if (!(limit > 0)) return null;
  return h(
    "div.limit",
    h("div.limit-top", h("span.name", label), h("span.val", `${fmt(used)} / ${fmt(limit)}`)),
    meter(used, limit, { label }),
    h("div.foot", foot || `${fmt(Math.max(0, limit - used))} left`),
  );
}

/** The usage of one key: totals, limits, a 30-day trend and its latest requests. */
export function showKeyUsage(ctx, key) {
  const u = key.usage || {};
  const periods = [
    ["Today", u.daily || {}],
    ["This month", u.monthly || {}],
    ["All time", u.total || {}],
  ];
  const chartEl = h("div.chart.short");
  const recBody = h("tbody", skelRows(6, 3));
  const limits = [
    limitRow("Daily cost", key.dailyCost || 0, key.dailyCostLimit, f.money),
    limitRow("Total cost", key.totalCost || 0, key.totalCostLimit, f.money),
    limitRow("Weekly Claude cost", key.weeklyOpusCost || 0, key.weeklyOpusCostLimit, f.money),
    limitRow("Five-hour cost", key.fiveHourCost || 0, key.fiveHourCostLimit, f.money),
    limitRow("Requests this window", key.currentWindowRequests || 0, key.rateLimitRequests, f.int, key.windowEndTime ? `Window resets ${f.relative(key.windowEndTime)}` : null),
    limitRow("Cost this window", key.currentWindowCost || 0, key.rateLimitCost, f.money),
    limitRow("Tokens this window", key.currentWindowTokens || 0, key.tokenLimit, f.compact),
  ].filter(Boolean);
  const series = [
    { name: "Requests", cls: "s1", type: "bar", integer: true, format: f.int },
    { name: "Cost", cls: "s2", type: "line", axis: "right", format: f.money },
  ];
  const m = modal({
    title: `Usage · ${key.name}`,
    wide: true,
    body: h(
      "div.stack",
      { style: { gap: "18px" } },
      h(
        "div.mini-stats",
        { style: { gridTemplateColumns: "repeat(3, minmax(0, 1fr))" } },
        periods.map(([label, p]) =>
          h("div", h("div.k", label), h("div.v", f.money(p.cost)), h("div.k", `${f.plural(p.requests || 0, "request")} · ${f.compact(p.allTokens || 0)} tokens`)),
        ),
      ),
      limits.length ? h("div.limits-grid", limits) : h("p.muted.small", "This key has no cost, rate or token limits."),
      h("div", h("div.section-head", h("h3", "Last 30 days"), legend(series)), chartEl),
      h(
        "div",
        h("div.section-head", h("h3", "Latest requests")),
        h(
          "div.table-wrap",
          h(
            "table.table.responsive",
            { "aria-label": "Latest requests" },
            h("thead", h("tr", h("th", "Time"), h("th", "Model"), h("th.num", "Tokens"), h("th.num", "Cost"), h("th.num", "Latency"), h("th", "Status"))),
            recBody,
          ),
        ),
      ),
    ),
    footer: [h("button.btn", { type: "button", onclick: () => m.close() }, "Close")],
  });
  const chart = timeChart(chartEl, { labels: [], series: [] });
  m.el.addEventListener("close", () => chart.destroy());
  ctx
    .api("/admin/usage-trend", { query: { granularity: "day", days: 30, keyId: key.id } })
    .then((r) => {
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
    })
    .catch((e) => showError(e));
  ctx
    .api(`/admin/api-keys/${encodeURIComponent(key.id)}/records`, { query: { limit: 20 } })
    .then((r) => {
      const rows = r.data || [];
      if (!rows.length) {
        mount(recBody, h("tr", h("td", { colspan: "6" }, emptyState({ iconName: "list", title: "No requests yet", text: "Requests made with this key appear here." }))));
        return;
      }
      mount(recBody, rows.map(recordRow));
    })
    .catch((e) => {
      mount(recBody, h("tr", h("td", { colspan: "6" }, h("p.muted", e.message))));
    });
}

export function statusBadge(status) {
  const s = Number(status) || 0;
  return badge(String(s || "—"), s >= 200 && s < 300 ? "ok" : s === 429 || s === 529 ? "warn" : s ? "danger" : "", { plain: true });
}

export function recordRow(r, { withKey = false, withAccount = false } = {}) {
  const tokens = `${f.int(r.inputTokens)} in · ${f.int(r.outputTokens)} out${r.cacheCreateTokens || r.cacheReadTokens ? ` · ${f.int((r.cacheCreateTokens || 0) + (r.cacheReadTokens || 0))} cache` : ""}`;
  return h(
    "tr",
    h("td.primary", h("span.nowrap", { title: f.relative(r.timestamp) }, f.dateTime(r.timestamp, { seconds: true }))),
    withKey ? h("td", { "data-label": "Key" }, r.keyName || (r.keyId || "").slice(0, 8) || "—") : null,
    h("td", { "data-label": "Model" }, h("span.mono.small", r.model || "—"), r.stream ? h("span.chip", { style: { marginLeft: "6px" } }, "stream") : null),
    withAccount ? h("td", { "data-label": "Account" }, r.accountName || (r.accountId || "").slice(0, 8) || "—") : null,
    h("td.num", { "data-label": "Tokens", title: tokens }, f.int(r.allTokens)),
    h("td.num", { "data-label": "Cost" }, f.money(r.cost)),
    h("td.num", { "data-label": "Latency" }, r.latencyMs !== undefined && r.latencyMs !== null ? f.ms(r.latencyMs) : "—"),
    h("td", { "data-label": "Status" }, statusBadge(r.status)),
  );
}
