// API keys: search, tag and status filters, pagination, create/edit, usage, soft delete and
// restore.

import { debounce, h, icon, mount } from "../../lib/dom.js";
import * as f from "../../lib/format.js";
import { badge, busy, confirmDialog, emptyState, input, meter, select, showError, skelRows, tabs, toast } from "../../lib/ui.js";
import { openKeyForm, showCreatedKey, showKeyUsage } from "./key-form.js";
import { accountGroups, availableAccountTypes, keyStatus } from "./shared.js";

const PAGE_SIZE = 20;
const COLS = 7;

function limitSummary(k) {
  const parts = [];
  if (k.dailyCostLimit > 0) parts.push(["Daily", k.dailyCost || 0, k.dailyCostLimit]);
  if (k.totalCostLimit > 0) parts.push(["Total", k.totalCost || 0, k.totalCostLimit]);
  if (k.weeklyOpusCostLimit > 0) parts.push(["Weekly", k.weeklyOpusCost || 0, k.weeklyOpusCostLimit]);
  if (k.fiveHourCostLimit > 0) parts.push(["5 h", k.fiveHourCost || 0, k.fiveHourCostLimit]);
  const other = [];
  if (k.rateLimitWindow > 0 && (k.rateLimitRequests > 0 || k.rateLimitCost > 0 || k.tokenLimit > 0)) {
    const bits = [];
    if (k.rateLimitRequests > 0) bits.push(`${f.int(k.rateLimitRequests)} req`);
    if (k.rateLimitCost > 0) bits.push(f.money(k.rateLimitCost));
    if (k.tokenLimit > 0) bits.push(`${f.compact(k.tokenLimit)} tok`);
    other.push(`${bits.join(", ")} per ${f.per(k.rateLimitWindow)}`);
  }
  if (k.concurrencyLimit > 0) other.push(`${k.concurrencyLimit} concurrent`);
  if (!parts.length && !other.length) return h("span.muted", "None");
  return h(
    "div.cell-stack",
    { style: { minWidth: "150px" } },
    parts.slice(0, 2).map(([label, used, limit]) =>
      h(
        "div",
        h("div.cell-sub.nowrap", `${label} ${f.money(used)} / ${f.money(limit)}`),
        meter(used, limit, { label: `${label} cost limit` }),
      ),
    ),
    parts.length > 2 ? h("span.cell-sub", `+${parts.length - 2} more cost limits`) : null,
    other.length ? h("span.cell-sub", other.join(" · ")) : null,
  );
}

function expiryText(k) {
  if (k.expirationMode === "activation" && !k.isActivated) return `${k.activationDays} ${k.activationUnit || "days"} after first use`;
  if (!k.expiresAt) return "Never";
  return f.date(k.expiresAt);
}

export default async function keysPage(root, ctx) {
  const state = {
    view: ctx.query.get("view") === "deleted" ? "deleted" : "active",
    search: ctx.query.get("search") || "",
    tag: ctx.query.get("tag") || "",
    status: ctx.query.get("status") || "",
    page: Math.max(1, Number(ctx.query.get("page")) || 1),
  };
  let tags = [];
  let lastItems = [];

  const createBtn = h("button.btn.btn-primary", { type: "button", "data-create-key": "" }, icon("plus"), "Create key");
  const searchInput = input({ type: "search", placeholder: "Search name, tag or key prefix", "aria-label": "Search keys", value: state.search, "data-search": "" });
  const tagSel = select([["", "All tags"]], state.tag, { "aria-label": "Filter by tag" });
  const statusSel = select(
    [
      ["", "Any status"],
      ["true", "Active"],
      ["false", "Disabled"],
    ],
    state.status,
    { "aria-label": "Filter by status" },
  );
  const viewTabs = tabs(
    [
      ["active", "Keys"],
      ["deleted", "Deleted"],
    ],
    state.view,
    (v) => {
      state.view = v;
      state.page = 1;
      sync();
      load();
    },
    { label: "Key list" },
  );
  const tbody = h("tbody", skelRows(COLS, 5));
  const thead = h("thead");
  const pager = h("div.pager", { hidden: true });
  const filters = h("div.row", { style: { flex: "1 1 auto" } }, h("div.search", icon("search"), searchInput), tagSel, statusSel);

  mount(
    root,
    h(
      "div.page-head",
      h("div", h("h1", "API keys"), h("p", "Keys your users put in their clients, with their limits and usage.")),
      h("div.actions", createBtn),
    ),
    h(
      "section.card",
      h("div.toolbar", viewTabs, filters),
      h("div.table-wrap", h("table.table.responsive", { "aria-label": "API keys", "aria-live": "polite" }, thead, tbody)),
      pager,
    ),
  );

  function sync() {
    ctx.setQuery({
      view: state.view === "deleted" ? "deleted" : null,
      search: state.search,
      tag: state.tag,
      status: state.status,
      page: state.page > 1 ? state.page : null,
    });
    filters.hidden = state.view === "deleted";
  }

  function head(cols) {
    mount(thead, h("tr", cols.map(([label, cls]) => h(`th${cls ? `.${cls}` : ""}`, label))));
  }

  function renderTags() {
    const cur = tagSel.value;
    mount(tagSel, h("option", { value: "" }, "All tags"), tags.map((t) => h("option", { value: t }, t)));
    tagSel.value = tags.includes(cur) ? cur : "";
    tagSel.hidden = !tags.length;
  }

  function actionButtons(k) {
    const usage = h("button.btn.btn-sm", { type: "button", "aria-label": `Usage of ${k.name}`, "data-action": "usage" }, icon("chart"), h("span", "Usage"));
    usage.addEventListener("click", () => showKeyUsage(ctx, k));
    const edit = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Edit ${k.name}`, title: "Edit", "data-action": "edit" }, icon("edit"));
    edit.addEventListener("click", () => editKey(k));
    const del = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Delete ${k.name}`, title: "Delete", "data-action": "delete" }, icon("trash"));
    del.addEventListener("click", () => deleteKey(k));
    return h("div.btn-row", { style: { justifyContent: "flex-end", flexWrap: "nowrap" } }, usage, edit, del);
  }

  function row(k) {
    const [label, kind] = keyStatus(k);
    const u = k.usage || {};
    const d = u.daily || {};
    const t = u.total || {};
    return h(
      "tr",
      { dataset: { keyId: k.id } },
      h(
        "td.primary.col-key",
        h(
          "div.cell-stack",
          h("span.cell-title", k.name),
          h("span.cell-sub", h("code", k.maskedKey || "")),
          k.description ? h("span.cell-sub", k.description) : null,
          k.tags && k.tags.length ? h("div.chips", k.tags.map((tg) => h("span.chip", tg))) : null,
        ),
      ),
      h("td", { "data-label": "Status" }, badge(label, kind)),
      h("td.num", { "data-label": "Today" }, h("div.cell-stack", h("span", f.money(d.cost)), h("span.cell-sub", f.plural(d.requests || 0, "request")))),
      h("td.num", { "data-label": "All time" }, h("div.cell-stack", h("span", { "data-total-cost": "" }, f.money(t.cost)), h("span.cell-sub", { "data-total-requests": "" }, `${f.plural(t.requests || 0, "request")} · ${f.compact(t.allTokens || 0)} tok`))),
      h("td", { "data-label": "Limits" }, limitSummary(k)),
      h("td", { "data-label": "Last used" }, h("div.cell-stack", h("span.nowrap", { title: f.dateTime(k.lastUsedAt) }, k.lastUsedAt ? `Used ${f.relative(k.lastUsedAt)}` : "Never used"), h("span.cell-sub.nowrap", `Expires: ${expiryText(k)}`))),
      h("td.actions", actionButtons(k)),
    );
  }

  function deletedRow(k) {
    const restore = h("button.btn.btn-sm", { type: "button", "data-action": "restore", "aria-label": `Restore ${k.name}` }, icon("restore"), h("span", "Restore"));
    restore.addEventListener("click", () =>
      busy(restore, async () => {
        try {
          await ctx.api(`/admin/api-keys/${encodeURIComponent(k.id)}/restore`, { method: "POST" });
          toast(`Restored ${k.name}`);
          load();
        } catch (e) {
          showError(e, "Could not restore the key");
        }
      }),
    );
    const t = (k.usage || {}).total || {};
    return h(
      "tr",
      { dataset: { keyId: k.id } },
      h("td.primary", h("div.cell-stack", h("span.cell-title", k.name), h("span.cell-sub", h("code", k.maskedKey || "")))),
      h("td", { "data-label": "Deleted" }, h("span", { title: f.dateTime(k.deletedAt) }, f.relative(k.deletedAt))),
      h("td", { "data-label": "By" }, k.deletedBy || "—"),
      h("td.num", { "data-label": "All time" }, h("div.cell-stack", h("span", f.money(t.cost)), h("span.cell-sub", f.plural(t.requests || 0, "request")))),
      h("td.actions", restore),
    );
  }

  function renderPager(p) {
    if (!p || p.total <= p.pageSize) {
      pager.hidden = true;
      return;
    }
    const from = (p.page - 1) * p.pageSize + 1;
    const to = Math.min(p.total, p.page * p.pageSize);
    const prev = h("button.btn.btn-sm", { type: "button", disabled: p.page <= 1 }, "Previous");
    const next = h("button.btn.btn-sm", { type: "button", disabled: p.page >= p.totalPages }, "Next");
    prev.addEventListener("click", () => {
      state.page -= 1;
      sync();
      load();
    });
    next.addEventListener("click", () => {
      state.page += 1;
      sync();
      load();
    });
    mount(pager, h("span.muted", `${f.int(from)}–${f.int(to)} of ${f.int(p.total)}`), h("div.btn-row", prev, next));
    pager.hidden = false;
  }

  let loadSeq = 0;
  async function load() {
    const my = ++loadSeq;
    root.querySelector("table").setAttribute("aria-busy", "true");
    try {
      if (state.view === "deleted") {
        head([["Key"], ["Deleted"], ["By"], ["All time", "num"], [""]]);
        const r = await ctx.api("/admin/api-keys/deleted", { query: { pageSize: 1000 } });
        if (my !== loadSeq) return;
        const items = r.apiKeys || r.data?.items || [];
        pager.hidden = true;
        mount(
          tbody,
          items.length
            ? items.map(deletedRow)
            : h("tr", h("td", { colspan: "5" }, emptyState({ iconName: "trash", title: "No deleted keys", text: "Deleted keys stay here and can be restored." }))),
        );
        return;
      }
      head([["Key"], ["Status"], ["Today", "num"], ["All time", "num"], ["Limits"], ["Activity"], [""]]);
      const r = await ctx.api("/admin/api-keys", {
        query: { page: state.page, pageSize: PAGE_SIZE, search: state.search, tag: state.tag, isActive: state.status },
      });
      if (my !== loadSeq) return;
      const d = r.data || {};
      tags = d.availableTags || [];
      renderTags();
      lastItems = d.items || [];
      if (!lastItems.length && state.page > 1) {
        state.page = 1;
        sync();
        return load();
      }
      const filtered = state.search || state.tag || state.status;
      mount(
        tbody,
        lastItems.length
          ? lastItems.map(row)
          : h(
              "tr",
              h(
                "td",
                { colspan: String(COLS) },
                filtered
                  ? emptyState({ iconName: "search", title: "No keys match", text: "Try another search or clear the filters." })
                  : emptyState({ iconName: "key", title: "No API keys yet", text: "Create a key for each person or tool that should use this relay.", action: h("button.btn.btn-primary", { type: "button", onclick: createKey }, icon("plus"), "Create the first key") }),
              ),
            ),
      );
      renderPager(d.pagination);
    } catch (e) {
      if (my !== loadSeq) return;
      showError(e, "Could not load the keys");
      mount(tbody, h("tr", h("td", { colspan: String(COLS) }, emptyState({ iconName: "alert", title: "Could not load the keys", text: e.message }))));
    } finally {
      if (my === loadSeq) root.querySelector("table")?.removeAttribute("aria-busy");
    }
  }

  async function routing() {
    const [types, groups] = await Promise.all([availableAccountTypes({ refresh: true }).catch(() => []), accountGroups({ refresh: true })]);
    return { accountTypes: types, groups };
  }

  async function createKey() {
    const r = await busy(createBtn, routing);
    if (!r) return;
    const data = await openKeyForm({ ctx, tags, ...r });
    if (!data) return;
    state.view = "active";
    viewTabs.select("active");
    sync();
    load();
    await showCreatedKey(data);
  }

  async function editKey(k) {
    const data = await openKeyForm({ ctx, key: k, tags, ...(await routing()) });
    if (!data) return;
    toast(`Saved ${data.name || k.name}`);
    load();
  }

  async function deleteKey(k) {
    const ok = await confirmDialog({
      title: `Delete ${k.name}?`,
      message: "Clients using this key are refused from now on. Its usage history is kept, and the key can be restored from the Deleted list.",
      confirmLabel: "Delete key",
      danger: true,
    });
    if (!ok) return;
    try {
      await ctx.api(`/admin/api-keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      toast(`Deleted ${k.name}`);
      load();
    } catch (e) {
      showError(e, "Could not delete the key");
    }
  }

  createBtn.addEventListener("click", createKey);
  searchInput.addEventListener(
    "input",
    debounce(() => {
      state.search = searchInput.value.trim();
      state.page = 1;
      sync();
      load();
    }, 250),
  );
  tagSel.addEventListener("change", () => {
    state.tag = tagSel.value;
    state.page = 1;
    sync();
    load();
  });
  statusSel.addEventListener("change", () => {
    state.status = statusSel.value;
    state.page = 1;
    sync();
    load();
  });
  filters.hidden = state.view === "deleted";
  tagSel.hidden = true;
  if (ctx.query.get("create") === "1") {
    ctx.setQuery({ create: null });
    createKey();
  }
  await load();
}
