// Settings: server settings (sticky sessions and whatever else /admin/settings offers),
// the admin password, the theme, and what is running.

import { h, icon, mount } from "../../lib/dom.js";
import { request } from "../../lib/api.js";
import * as f from "../../lib/format.js";
import { busy, card, field, input, setTheme, showError, storedTheme, toast } from "../../lib/ui.js";
import { adminApi, clearSession, getSession, optionalApi } from "../session.js";

/** Settings an admin can change: [field, label, hint, {min, max, step}]. */
const EDITABLE = [
  ["stickySessionTtlHours", "Sticky session lifetime (hours)", "How long a conversation keeps going to the same account.", { min: "0.01", max: "8760", step: "any" }],
];

/** Read-only facts the server reports with its settings. */
function facts(d) {
  const out = [];
  if (d.stickySessions !== undefined) out.push(["Sticky sessions now", f.int(d.stickySessions)]);
  if (d.timezoneOffsetMinutes !== undefined) {
    const m = Number(d.timezoneOffsetMinutes);
    const sign = m < 0 ? "−" : "+";
    const a = Math.abs(m);
    out.push(["Accounting time zone", `UTC${sign}${Math.floor(a / 60)}${a % 60 ? `:${String(a % 60).padStart(2, "0")}` : ""}`]);
  }
  if (d.pricingModels !== undefined) out.push(["Models with prices", f.int(d.pricingModels)]);
  return out;
}

function serverSettings(ctx) {
  const body = h("div", h("span.skel.line", { style: { width: "50%" } }), h("span.skel.line", { style: { width: "70%", height: "36px" } }));
  const el = card("Server", { sub: "Routing settings stored by crs; they apply at once.", body });
  (async () => {
    let r;
    try {
      r = await optionalApi("/admin/settings", { signal: ctx.signal });
    } catch (e) {
      mount(body, h("div.callout.danger", icon("alert"), h("span", e.message)));
      return;
    }
    if (r === null) {
      mount(body, h("div.callout", icon("info"), h("span", "This version of crs has no adjustable server settings. Sticky sessions use their default lifetime.")));
      return;
    }
    const data = r.data || {};
    const controls = EDITABLE.filter(([name]) => data[name] !== undefined).map(([name, label, hint, attrs]) => {
      const inp = input({ name, type: "number", value: String(Math.round(Number(data[name]) * 100) / 100), ...attrs });
      return { name, inp, el: field(label, inp, { hint }) };
    });
    const info = facts(data);
    const save = h("button.btn.btn-primary", { type: "submit" }, "Save settings");
    const form = h(
      "form.stack",
      { "data-settings-form": "", novalidate: true },
      controls.length ? h("div.form-grid", controls.map((c) => c.el)) : null,
      info.length ? h("dl.kv", info.map(([k, v]) => [h("dt", k), h("dd", v)])) : null,
      controls.length ? h("div", save) : null,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(save, async () => {
        const payload = {};
        for (const c of controls) {
          const v = Number(c.inp.value);
          if (!c.inp.value.trim() || !Number.isFinite(v)) {
            toast(`Enter a number for ${c.el.querySelector("label").textContent.toLowerCase()}.`, { kind: "error" });
            c.inp.focus();
            return;
          }
          payload[c.name] = v;
        }
        try {
          await adminApi("/admin/settings", { method: "PUT", body: payload });
          toast("Settings saved");
        } catch (e) {
          showError(e, "Could not save the settings");
        }
      });
    });
    mount(body, form);
  })();
  return el;
}

function passwordCard(ctx) {
  const cur = input({ type: "password", autocomplete: "current-password", name: "currentPassword", required: true });
  const next = input({ type: "password", autocomplete: "new-password", name: "newPassword", minlength: "8", required: true });
  const again = input({ type: "password", autocomplete: "new-password", name: "confirmPassword", required: true });
  const err = h("div.callout.danger", { role: "alert", hidden: true });
  const save = h("button.btn.btn-primary", { type: "submit" }, "Change password");
  const form = h(
    "form.stack",
    { "data-password-form": "" },
    h("input", { type: "text", name: "username", autocomplete: "username", value: ctx.username || "", hidden: true, readonly: true }),
    h(
      "div.form-grid",
      field("Current password", cur, { cls: "span-2" }),
      field("New password", next, { hint: "At least 8 characters." }),
      field("Repeat the new password", again),
    ),
    err,
    h("div", save),
  );
  const fail = (msg, focus) => {
    mount(err, icon("alert"), h("span", msg));
    err.hidden = false;
    focus?.focus();
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    err.hidden = true;
    if (!cur.value) return fail("Enter your current password.", cur);
    if (next.value.length < 8) return fail("The new password needs at least 8 characters.", next);
    if (next.value !== again.value) return fail("The new passwords do not match.", again);
    busy(save, async () => {
      try {
        const token = getSession()?.token;
        const r = await request("/web/auth/change-password", { method: "POST", token, body: { currentPassword: cur.value, newPassword: next.value } });
        toast(r.message || "Password changed. Sign in again.");
        clearSession();
        ctx.navigate("login", { replace: true });
      } catch (e) {
        fail(e.message, cur);
      }
    });
  });
  return card("Admin password", { sub: "Changing it signs out every session.", body: form });
}

function appearanceCard() {
  const cur = storedTheme();
  const opts = [
    ["system", "Follow the system"],
    ["light", "Light"],
    ["dark", "Dark"],
  ].map(([v, label]) => {
    const r = h("input", { type: "radio", name: "theme", value: v, checked: v === cur });
    r.addEventListener("change", () => setTheme(v));
    return h("label.radio", r, label);
  });
  return card("Appearance", { sub: "Remembered in this browser.", body: h("div.choice-row", { role: "radiogroup", "aria-label": "Theme" }, opts) });
}

function aboutCard(ctx) {
  const dl = h("dl.kv", h("dt", "Version"), h("dd", h("span.skel.line", { style: { width: "80px" } })));
  request("/health", { signal: ctx.signal })
    .then((hh) => {
      mount(
        dl,
        h("dt", "Version"),
        h("dd", `crs ${hh.version || "?"}`),
        h("dt", "Status"),
        h("dd", hh.status || "?"),
        h("dt", "Up for"),
        h("dd", hh.uptime ? upFor(hh.uptime) : "—"),
        h("dt", "Signed in as"),
        h("dd", ctx.username || "—"),
      );
    })
    .catch(() => mount(dl, h("dt", "Version"), h("dd", "unknown")));
  return card("About", { body: dl });
}

function upFor(sec) {
  const s = Math.floor(sec);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  return `${m} min`;
}

export default async function settingsPage(root, ctx) {
  mount(
    root,
    h("div.page-head", h("div", h("h1", "Settings"), h("p", "The server, your account and this browser."))),
    h("div.grid-2", h("div.stack", { style: { gap: "14px" } }, serverSettings(ctx), passwordCard(ctx)), h("div.stack", { style: { gap: "14px" } }, appearanceCard(), aboutCard(ctx))),
  );
}
