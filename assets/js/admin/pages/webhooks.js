// Notifications: webhook platforms (v1's /admin/webhook API), on/off, a test per platform and a
// test notification to all of them.

import { h, icon, mount } from "../../lib/dom.js";
import { badge, busy, card, confirmDialog, field, input, select, showError, switchInput, toast } from "../../lib/ui.js";
import { adminApi } from "../session.js";

const TYPES = [
  ["custom", "Custom (JSON POST)"],
  ["slack", "Slack"],
  ["discord", "Discord"],
  ["telegram", "Telegram"],
  ["dingtalk", "DingTalk"],
  ["feishu", "Feishu / Lark"],
  ["wechat_work", "WeCom (WeChat Work)"],
  ["bark", "Bark"],
  ["ntfy", "ntfy"],
  ["smtp", "Email (SMTP)"],
];

/** The fields each type needs besides its name: [key, label, hint]. */
const FIELDS = {
  telegram: [["botToken", "Bot token", "From @BotFather."], ["chatId", "Chat id", "A number or @channel."]],
  bark: [["deviceKey", "Device key", ""], ["serverUrl", "Server URL", "Default https://api.day.app/push."]],
  dingtalk: [["url", "Webhook URL", ""], ["secret", "Signing secret", "SEC…; leave empty without signing."]],
  feishu: [["url", "Webhook URL", ""], ["secret", "Signing secret", "Leave empty without signing."]],
  smtp: [
    ["host", "SMTP server", ""],
    ["port", "Port", "465: TLS from the start; 587 or 25: STARTTLS when offered."],
    ["user", "User", "Leave empty without login."],
    ["pass", "Password", ""],
    ["from", "From", ""],
    ["to", "To", "Addresses, comma-separated."],
  ],
};
const urlOnly = [["url", "Webhook URL", ""]];

function typeLabel(t) {
  return (TYPES.find(([v]) => v === t) || [t, t])[1];
}

function target(p) {
  if (p.type === "telegram") return `chat ${p.chatId}`;
  if (p.type === "bark") return `device ${String(p.deviceKey || "").slice(0, 8)}…`;
  if (p.type === "smtp") return `${p.to} via ${p.host}`;
  return p.url || "";
}

function addForm(onDone) {
  const type = select(TYPES, "custom", { name: "type" });
  const name = input({ name: "name", placeholder: "e.g. ops channel" });
  const extra = h("div.form-grid");
  let inputs = {};
  const render = () => {
    inputs = {};
    const defs = FIELDS[type.value] || urlOnly;
    mount(
      extra,
      defs.map(([k, label, hint]) => {
        inputs[k] = input({ name: k, type: ["secret", "botToken", "pass"].includes(k) ? "password" : k === "port" ? "number" : "text" });
        return field(label, inputs[k], { hint: hint || undefined });
      }),
    );
  };
  type.addEventListener("change", render);
  render();
  const save = h("button.btn.btn-primary", { type: "submit" }, icon("plus"), "Add platform");
  const test = h("button.btn", { type: "button", "data-test-new": "" }, icon("play"), "Test");
  const body = () => {
    const b = { type: type.value, name: name.value.trim() || typeLabel(type.value) };
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) b[k] = el.value.trim();
    if (b.secret) b.enableSign = true;
    if (b.port) {
      b.port = Number(b.port);
      b.secure = b.port === 465;
    }
    return b;
  };
  test.addEventListener("click", () => busy(test, () => testPlatform(body())));
  const form = h("form.stack", { "data-webhook-form": "" }, h("div.form-grid", field("Type", type), field("Name", name)), extra, h("div.row", save, test));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(save, async () => {
      try {
        await adminApi("/admin/webhook/platforms", { method: "POST", body: body() });
        toast("Platform added");
        form.reset();
        render();
        onDone();
      } catch (e) {
        showError(e, "Could not add the platform");
      }
    });
  });
  return form;
}

async function testPlatform(p) {
  try {
    await adminApi("/admin/webhook/test", { method: "POST", body: p });
    toast("Test message delivered");
  } catch (e) {
    showError(e, "The test message was not delivered");
  }
}

export default async function webhooksPage(root, ctx) {
  const list = h("div", { "data-platforms": "" }, h("span.skel.line", { style: { width: "60%" } }));
  const master = switchInput("Send notifications", false, { "data-webhook-enabled": "" });
  const sendTest = h("button.btn", { type: "button", "data-test-all": "" }, icon("play"), "Send a test notification");
  let config = null;
  let renders = 0;

  const load = async () => {
    try {
      config = (await adminApi("/admin/webhook/config", { signal: ctx.signal })).config;
    } catch (e) {
      mount(list, h("div.callout.danger", icon("alert"), h("span", e.message)));
      return;
    }
    master.input.checked = !!config.enabled;
    const rows = (config.platforms || []).map((p) => {
      const on = switchInput("On", p.enabled, { "aria-label": `Enable ${p.name || p.type}` });
      on.input.addEventListener("change", async () => {
        try {
          await adminApi(`/admin/webhook/platforms/${encodeURIComponent(p.id)}/toggle`, { method: "POST" });
        } catch (e) {
          showError(e, "Could not switch the platform");
        }
        load();
      });
      const test = h("button.btn.btn-sm", { type: "button", "data-test-platform": p.id }, icon("play"), "Test");
      test.addEventListener("click", () => busy(test, () => testPlatform(p)));
      const del = h("button.btn.btn-sm.btn-ghost", { type: "button", "aria-label": `Delete ${p.name || p.type}` }, icon("trash"));
      del.addEventListener("click", async () => {
        if (!(await confirmDialog({ title: "Delete platform", message: `Delete ${p.name || p.type}?`, confirmLabel: "Delete", danger: true }))) return;
        try {
          await adminApi(`/admin/webhook/platforms/${encodeURIComponent(p.id)}`, { method: "DELETE" });
          load();
        } catch (e) {
          showError(e, "Could not delete the platform");
        }
      });
      return h(
        "tr",
        h("td", { "data-label": "Name" }, p.name || "—"),
        h("td", { "data-label": "Type" }, badge(typeLabel(p.type))),
        h("td.mono", { "data-label": "Sends to" }, target(p)),
        h("td", { "data-label": "On" }, on.el),
        h("td.actions", test, del),
      );
    });
    mount(
      list,
      rows.length
        ? h("div.table-wrap", h("table.table.responsive", { "aria-label": "Webhook platforms" }, h("thead", h("tr", h("th", "Name"), h("th", "Type"), h("th", "Sends to"), h("th", "On"), h("th", ""))), h("tbody", rows)))
        : h("div.callout", icon("info"), h("span", "No platform yet: add one below.")),
    );
    list.dataset.renders = String(++renders);
  };

  master.input.addEventListener("change", async () => {
    try {
      await adminApi("/admin/webhook/config", { method: "POST", body: { ...config, enabled: master.input.checked } });
      toast(master.input.checked ? "Notifications on" : "Notifications off");
    } catch (e) {
      showError(e, "Could not save");
    }
    load();
  });
  sendTest.addEventListener("click", () =>
    busy(sendTest, async () => {
      try {
        const r = await adminApi("/admin/webhook/test-notification", { method: "POST" });
        toast(r.message || "Test notification sent");
      } catch (e) {
        showError(e, "No test notification was sent");
      }
    }),
  );

  mount(
    root,
    h("div.page-head", h("div", h("h1", "Notifications"), h("p", "Webhooks for accounts taken out of rotation, rate limits and recoveries, quota warnings and failing usage commits."))),
    h(
      "div.stack",
      { style: { gap: "14px" } },
      card("Platforms", { sub: "Every enabled platform gets every notification.", actions: h("div.row", master.el, sendTest), body: list }),
      card("Add a platform", { body: addForm(load) }),
    ),
  );
  await load();
}
