// Upstream accounts: one tab per account type the server offers, a card per account with
// status, cooldown, last error and usage, and a form per type built from its field list.

import { h, icon, mount } from "../../lib/dom.js";
import * as f from "../../lib/format.js";
import { badge, busy, confirmDialog, copyButton, emptyState, field, input, meter, modal, moneyInput, select, showError, switchInput, tabs, toast } from "../../lib/ui.js";
import { accountHealth, availableAccountTypes, cooldownUntil, listOf } from "./shared.js";

// ---------- form controls per field type ----------

function getPath(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function setPath(obj, path, value) {
  const parts = path.split(".");
  let o = obj;
  for (const p of parts.slice(0, -1)) o = o[p] ??= {};
  o[parts[parts.length - 1]] = value;
}

function mappingEditor(initial) {
  const rows = h("div.stack", { style: { gap: "6px" } });
  const addRow = (from = "", to = "") => {
    const a = input({ value: from, placeholder: "Requested model", "aria-label": "Requested model" });
    const b = input({ value: to === from ? "" : to, placeholder: "Upstream model (same if blank)", "aria-label": "Upstream model" });
    const rm = h("button.btn.btn-ghost.btn-icon", { type: "button", "aria-label": "Remove this model" }, icon("x"));
    const row = h("div.mapping-row", a, h("span.muted", "→"), b, rm);
    rm.addEventListener("click", () => row.remove());
    rows.append(row);
    return a;
  };
  for (const [from, to] of Object.entries(initial || {})) addRow(from, to);
  const add = h("button.btn.btn-sm", { type: "button" }, icon("plus"), "Add a model");
  add.addEventListener("click", () => addRow().focus());
  return {
    el: h("div.stack", { style: { gap: "8px" } }, rows, h("div", add)),
    value() {
      const out = {};
      for (const row of rows.children) {
        const [a, , b] = row.children;
        const from = a.value.trim();
        if (from) out[from] = b.value.trim() || from;
      }
      return out;
    },
  };
}

function proxyEditor(initial) {
  const p = initial || null;
  const on = switchInput("Send this account's traffic through a proxy", !!(p && p.host));
  const kind = select([["http", "HTTP"], ["https", "HTTPS"], ["socks5", "SOCKS5"]], p?.type || "http", { "aria-label": "Proxy type" });
  const host = input({ value: p?.host || "", placeholder: "proxy.example.com" });
  const port = input({ type: "number", min: "1", max: "65535", value: p?.port ? String(p.port) : "", placeholder: "8080" });
  const user = input({ value: p?.username || "", autocomplete: "off" });
  const pass = input({ type: "password", autocomplete: "new-password", placeholder: p?.hasPassword ? "Leave blank to keep" : "" });
  const grid = h(
    "div.form-grid",
    field("Type", kind),
    field("Host", host),
    field("Port", port),
    field("Username", user),
    field("Password", pass, { cls: "span-2" }),
  );
  const sync = () => (grid.hidden = !on.input.checked);
  on.input.addEventListener("change", sync);
  sync();
  return {
    el: h("div.stack", on.el, grid),
    value() {
      if (!on.input.checked || !host.value.trim()) return null;
      const v = { type: kind.value, host: host.value.trim(), port: Number(port.value) || 0, username: user.value.trim() };
      if (pass.value) v.password = pass.value;
      return v;
    },
  };
}

function secretInput(props) {
  const inp = input({ type: "password", autocomplete: "new-password", ...props });
  const toggle = h("button.btn.btn-icon", { type: "button", "aria-label": "Show the value", "aria-pressed": "false" }, icon("eye"));
  toggle.addEventListener("click", () => {
    const show = inp.type === "password";
    inp.type = show ? "text" : "password";
    toggle.setAttribute("aria-pressed", String(show));
    toggle.setAttribute("aria-label", show ? "Hide the value" : "Show the value");
    toggle.replaceChildren(icon(show ? "eyeOff" : "eye"));
  });
  return { el: h("div.input-group", inp, toggle), input: inp };
}

/** A Droid account's API-key pool: the stored keys (masked, with their status), each of which
 * can be marked for removal, and new keys to add, one per line. */
function keyPoolEditor(entries) {
  const removed = new Set();
  const rows = (entries || []).map((k) => {
    const bad = k.status === "error";
    const rm = h("button.btn.btn-ghost.btn-sm", { type: "button", "data-pool-remove": k.id, "aria-pressed": "false" }, icon("x"), "Remove");
    const row = h(
      "div.pool-row",
      { "data-pool-key": k.id },
      h("code", k.maskedKey || "—"),
      badge(bad ? "error" : "active", bad ? "danger" : "ok", { plain: true }),
      bad && k.errorMessage ? h("span.muted", `refused: ${k.errorMessage}`) : null,
      k.lastUsedAt ? h("span.muted", `used ${f.relative(Date.parse(k.lastUsedAt))}`) : null,
      rm,
    );
    rm.addEventListener("click", () => {
      const on = !removed.has(k.id);
      if (on) removed.add(k.id);
      else removed.delete(k.id);
      rm.setAttribute("aria-pressed", String(on));
      row.classList.toggle("is-removed", on);
      rm.replaceChildren(icon(on ? "refresh" : "x"), on ? "Keep" : "Remove");
    });
    return row;
  });
  const add = h("textarea.input", { name: "apiKeys", rows: "3", "aria-label": "API keys to add, one per line", placeholder: "One Factory API key per line", autocomplete: "off", spellcheck: "false" });
  const usable = (entries || []).filter((k) => k.status !== "error").length;
  return {
    el: h(
      "div.stack",
      { style: { gap: "6px" } },
      entries && entries.length ? h("span.muted", `${usable} of ${entries.length} keys usable`) : null,
      rows,
      add,
    ),
    input: add,
    read() {
      const keys = add.value
        .split(/\s+/)
        .map((x) => x.trim())
        .filter(Boolean);
      return { keys, removed: [...removed] };
    },
  };
}

/** Build the controls of a type's fields; returns {el, collect(creating), first}. */
function buildFields(type, account) {
  const a = account || {};
  const creating = !account;
  const controls = [];
  const cells = [];
  const readers = {};
  const selects = {};
  const conditional = [];
  for (const fd of type.fields) {
    const cur = getPath(a, fd.name);
    let el;
    let read;
    switch (fd.type) {
      case "secret": {
        const masked = fd.maskedFrom ? a[fd.maskedFrom] : "";
        const s = secretInput({ name: fd.name, placeholder: creating ? fd.placeholder || "" : masked ? `Leave blank to keep ${masked}` : "Leave blank to keep the current value" });
        el = field(fd.label, s.el, { cls: fd.span ? "span-2" : "", hint: fd.hint });
        read = (body) => {
          const v = s.input.value.trim();
          if (v) setPath(body, fd.name, v);
          else if (creating && fd.required) throw fieldError(s.input, `${fd.label} is required.`);
        };
        controls.push(s.input);
        break;
      }
      case "int": {
        const inp = input({ type: "number", name: fd.name, min: fd.min ?? 0, max: fd.max ?? null, step: "1", value: cur !== undefined && cur !== null && cur !== 0 ? String(cur) : creating && fd.default ? String(fd.default) : "" });
        el = field(fd.label, inp, { hint: fd.hint });
        read = (body) => {
          if (inp.value.trim() === "") {
            setPath(body, fd.name, fd.blankIsZero ? 0 : fd.default ?? 0);
            return;
          }
          setPath(body, fd.name, Math.round(Number(inp.value)));
        };
        controls.push(inp);
        break;
      }
      case "money": {
        const m = moneyInput({ name: fd.name, value: cur ? String(cur) : "", placeholder: "No quota" });
        el = field(fd.label, m.el, { hint: fd.hint });
        read = (body) => setPath(body, fd.name, m.input.value.trim() ? Number(m.input.value) : 0);
        controls.push(m.input);
        break;
      }
      case "keyPool": {
        const pool = keyPoolEditor(a.apiKeys);
        el = h("div.field.span-2", h("span.field-label", fd.label), fd.hint ? h("span.hint", fd.hint) : null, pool.el);
        read = (body) => {
          const { keys, removed } = pool.read();
          if (creating && !keys.length) throw fieldError(pool.input, "Add at least one API key.");
          if (keys.length) body.apiKeys = keys;
          if (removed.length) body.removeApiKeys = removed;
        };
        controls.push(pool.input);
        break;
      }
      case "select": {
        const initial = fd.keepEmpty && !creating ? cur ?? fd.default : cur || fd.default || fd.options[0][0];
        const sel = select(fd.options, initial, { name: fd.name });
        el = field(fd.label, sel, { hint: fd.hint });
        read = (body) => setPath(body, fd.name, sel.value);
        controls.push(sel);
        break;
      }
      case "time": {
        const inp = input({ type: "time", name: fd.name, value: cur || fd.default || "00:00", step: "60" });
        el = field(fd.label, inp, { hint: fd.hint });
        read = (body) => setPath(body, fd.name, inp.value || fd.default || "00:00");
        controls.push(inp);
        break;
      }
      case "switch": {
        const sw = switchInput(fd.label, !!cur, { name: fd.name });
        el = h("div.field.span-2", sw.el, fd.hint ? h("span.hint", fd.hint) : null);
        read = (body) => setPath(body, fd.name, sw.input.checked);
        controls.push(sw.input);
        break;
      }
      case "mapping": {
        const m = mappingEditor(cur);
        el = h("div.field.span-2", h("span.field-label", fd.label), fd.hint ? h("span.hint", fd.hint) : null, m.el);
        read = (body) => setPath(body, fd.name, m.value());
        break;
      }
      case "proxy": {
        const p = proxyEditor(cur);
        el = h("div.field.span-2", h("span.field-label", fd.label), p.el);
        read = (body) => setPath(body, fd.name, p.value());
        break;
      }
      default: {
        const inp = input({ type: fd.type === "url" ? "url" : "text", name: fd.name, value: cur ?? "", placeholder: fd.placeholder || "", required: !!fd.required, maxlength: fd.name === "description" ? "500" : null });
        el = field(fd.label, inp, { hint: fd.hint, cls: fd.span ? "span-2" : "" });
        read = (body) => {
          const v = inp.value.trim();
          if (!v && fd.required) throw fieldError(inp, `${fd.label} is required.`);
          if (v && fd.type === "url" && !/^https?:\/\/[^/\s]+/.test(v)) throw fieldError(inp, `${fd.label} must start with http:// or https://.`);
          setPath(body, fd.name, v);
        };
        controls.push(inp);
      }
    }
    if (fd.showIf) {
      // Shown (and read) only while another field has one of the given values.
      const [other, values] = fd.showIf;
      const shown = () => values.includes(selects[other]?.value ?? "");
      conditional.push(() => (el.hidden = !shown()));
      const inner = read;
      read = (body) => {
        if (shown()) inner(body);
      };
    }
    if (fd.type === "select") selects[fd.name] = controls[controls.length - 1];
    cells.push(el);
    controls.readers = controls.readers || [];
    controls.readers.push(read);
    readers[fd.name] = read;
  }
  const sync = () => conditional.forEach((c) => c());
  for (const sel of Object.values(selects)) sel.addEventListener("change", sync);
  sync();
  const active = switchInput("Account is active", creating ? true : a.isActive !== false, { name: "isActive" });
  cells.push(h("div.span-2", active.el));
  return {
    el: h("div.form-grid", cells),
    first: controls[0],
    collect() {
      const body = {};
      for (const read of controls.readers) read(body);
      body.isActive = active.input.checked;
      return body;
    },
    /** Call `cb(value)` now and whenever the select `name` changes. */
    watch(name, cb) {
      const sel = selects[name];
      if (!sel) return;
      sel.addEventListener("change", () => cb(sel.value));
      cb(sel.value);
    },
    /** One field's value, without validating the others. */
    peek(name) {
      const body = {};
      try {
        readers[name]?.(body);
      } catch {
        return undefined;
      }
      return getPath(body, name);
    },
  };
}

function fieldError(inputEl, message) {
  const e = new Error(message);
  e.input = inputEl;
  return e;
}

/** The create/edit dialog for one account type. Resolves true when saved. */
function openAccountForm(ctx, type, account = null) {
  const creating = !account;
  const fields = buildFields(type, account);
  let oauth = null;
  let oauthStep = null;
  let mode = "authorise";
  if (creating && type.oauth) {
    const genBtn = h("button.btn", { type: "button", "data-oauth-generate": "" }, icon("external"), "Get an authorisation link");
    const linkBox = h("div.stack", { hidden: true, style: { gap: "8px" } });
    const code = input({ name: "authorizationCode", placeholder: "Paste the code or the final page's address", autocomplete: "off" });
    const accessToken = secretInput({ name: "accessToken", placeholder: type.oauth.tokens[0] });
    const refreshToken = secretInput({ name: "refreshToken", placeholder: type.oauth.tokens[1] });
    genBtn.addEventListener("click", () =>
      busy(genBtn, async () => {
        try {
          const r = await ctx.api(`/admin/${type.path}/${type.oauth.generate}`, { method: "POST", body: { proxy: fields.peek("proxy") ?? null } });
          const d = r.data || r;
          oauth = { sessionId: d.sessionId, authUrl: d.authUrl || d.url };
          mount(
            linkBox,
            h("div.secret-box", h("code", { "data-auth-url": "" }, oauth.authUrl), copyButton(oauth.authUrl)),
            h("div", h("a.btn.btn-primary.btn-sm", { href: oauth.authUrl, target: "_blank", rel: "noopener noreferrer" }, icon("external"), "Open the authorisation page")),
          );
          linkBox.hidden = false;
          code.focus();
        } catch (e) {
          showError(e, "Could not create the authorisation link");
        }
      }),
    );
    const authorise = h(
      "div.steps",
      h("div.step", h("div.stack", { style: { gap: "8px" } }, h("span", `Get a link, open it and sign in with the ${type.oauth.provider} account to share.`), h("div", genBtn), linkBox)),
      h("div.step", field("Authorisation code", code, { hint: "The code from the last page, or that page's whole address." })),
    );
    const paste = h(
      "div.form-grid",
      { hidden: true },
      field("Access token", accessToken.el, { cls: "span-2" }),
      field("Refresh token", refreshToken.el, { cls: "span-2", hint: "Without it the account stops working when the access token expires." }),
    );
    const modeTabs = tabs(
      [
        ["authorise", `Sign in with ${type.oauth.provider}`],
        ["paste", "Paste tokens"],
      ],
      mode,
      (m) => {
        mode = m;
        authorise.hidden = m !== "authorise";
        paste.hidden = m !== "paste";
      },
      { label: "How to authorise" },
    );
    oauthStep = h("fieldset.form-section", h("legend", "Authorise"), h("p.section-note", type.oauth.hint), h("div", { style: { marginBottom: "14px" } }, modeTabs), authorise, paste);
    oauthStep.code = code;
    oauthStep.tokens = () => ({ accessToken: accessToken.input.value.trim(), refreshToken: refreshToken.input.value.trim() });
    oauthStep.accessInput = accessToken.input;
  }
  let device = null;
  let deviceStep = null;
  if (creating && type.device) {
    const genBtn = h("button.btn", { type: "button", "data-device-generate": "" }, icon("external"), "Get a sign-in code");
    const codeBox = h("div.stack", { hidden: true, style: { gap: "8px" } });
    genBtn.addEventListener("click", () =>
      busy(genBtn, async () => {
        try {
          const r = await ctx.api(`/admin/${type.path}/${type.device.generate}`, { method: "POST", body: { proxy: fields.peek("proxy") ?? null } });
          const d = r.data || r;
          device = { sessionId: d.sessionId };
          const link = d.verificationUriComplete || d.verificationUri;
          mount(
            codeBox,
            h("div.secret-box", h("code", { "data-user-code": "" }, d.userCode), copyButton(d.userCode)),
            h("div", h("a.btn.btn-primary.btn-sm", { href: link, target: "_blank", rel: "noopener noreferrer" }, icon("external"), "Open the sign-in page")),
            h("span.muted", `The code is valid for ${Math.round((d.expiresIn || 300) / 60)} minutes.`),
          );
          codeBox.hidden = false;
        } catch (e) {
          showError(e, "Could not get a sign-in code");
        }
      }),
    );
    deviceStep = h("fieldset.form-section", h("legend", "Sign in"), h("p.section-note", type.device.hint), h("div", genBtn), codeBox);
    const [other, values] = type.device.when;
    fields.watch(other, (v) => (deviceStep.hidden = !values.includes(v)));
  }
  return new Promise((resolve) => {
    let saved = false;
    const submit = h("button.btn.btn-primary", { type: "submit" }, creating ? "Add account" : "Save changes");
    modal({
      title: creating ? `Add a ${type.label} account` : `Edit ${account.name}`,
      wide: true,
      body: h("div", oauthStep, h("fieldset.form-section", h("legend", "Account"), h("p.section-note", type.blurb), fields.el), deviceStep),
      footer: [h("button.btn", { type: "button", onclick: (ev) => ev.target.closest("dialog").close() }, "Cancel"), submit],
      onSubmit: async () => {
        let body;
        try {
          body = fields.collect();
        } catch (e) {
          if (e.input) {
            toast(e.message, { kind: "error" });
            e.input.setAttribute("aria-invalid", "true");
            e.input.focus();
            return false;
          }
          throw e;
        }
        if (creating && type.oauth && mode === "paste") {
          const t = oauthStep.tokens();
          if (!t.accessToken && !(type.oauth.refreshOnly && t.refreshToken)) {
            toast(type.oauth.refreshOnly ? "Paste the access token or the refresh token." : "Paste the access token.", { kind: "error" });
            oauthStep.accessInput.focus();
            return false;
          }
          body[type.oauth.result] = type.oauth.paste ? type.oauth.paste(t) : t;
        } else if (creating && type.oauth) {
          const code = oauthStep.code.value.trim();
          if (!oauth || !code) {
            toast("Get the authorisation link, sign in, and paste the code first.", { kind: "error" });
            oauthStep.code.focus();
            return false;
          }
          const r = await ctx.api(`/admin/${type.path}/${type.oauth.exchange}`, {
            method: "POST",
            body: { sessionId: oauth.sessionId, authorizationCode: code, code, callbackUrl: code.startsWith("http") ? code : undefined, proxy: body.proxy ?? null },
          });
          const d = r.data || {};
          body[type.oauth.result] = d[type.oauth.result] || d.tokens || d;
          if (type.oauth.info && d[type.oauth.info]) body[type.oauth.info] = d[type.oauth.info];
        }
        if (deviceStep && !deviceStep.hidden) {
          if (!device) {
            toast("Get a sign-in code and approve it first.", { kind: "error" });
            return false;
          }
          let r;
          try {
            r = await ctx.api(`/admin/${type.path}/${type.device.exchange}`, { method: "POST", body: { sessionId: device.sessionId } });
          } catch (e) {
            // v1 answers a code not approved yet with `success: false, pending: true`.
            if (!e.body?.pending) throw e;
            toast("Not approved yet: finish signing in on the page, then add the account again.", { kind: "error" });
            return false;
          }
          const t = (r.data && r.data.tokens) || {};
          Object.assign(body, { accessToken: t.access_token, refreshToken: t.refresh_token, organizationId: t.organization_id || "", expiresAt: r.data.expiresAt });
        }
        if (creating) await ctx.api(`/admin/${type.path}`, { method: "POST", body });
        else await ctx.api(`/admin/${type.path}/${encodeURIComponent(account.id)}`, { method: "PUT", body });
        saved = true;
        return true;
      },
      onClose: () => resolve(saved),
    });
  });
}

// ---------- cards ----------

function endpointOf(a) {
  if (a.platform === "bedrock") return [a.region ? `AWS ${a.region}` : "AWS", a.endpointUrl].filter(Boolean).join(" · ");
  return a.apiUrl || a.baseApi || a.baseUrl || a.azureEndpoint || "";
}

function defaultEndpoint(a) {
  switch (a.platform) {
    case "claude":
      return "api.anthropic.com";
    case "gemini-api":
      return "generativelanguage.googleapis.com";
    case "gemini":
      return "cloudcode-pa.googleapis.com";
    case "droid":
      return "Factory";
    case "openai":
      return "chatgpt.com/backend-api/codex";
    default:
      return "—";
  }
}

function modelsOf(a) {
  const m = a.supportedModels;
  const entries = Array.isArray(m) ? m.map((x) => [x, x]) : Object.entries(m || {});
  if (!entries.length) return h("span.muted", "All models");
  return h(
    "div.chips",
    entries.slice(0, 6).map(([from, to]) => h("span.chip", { title: from === to ? from : `${from} → ${to}` }, from === to ? from : `${from} → ${to}`)),
    entries.length > 6 ? h("span.chip", `+${entries.length - 6}`) : null,
  );
}

function proxyOf(a) {
  const p = a.proxy;
  if (!p || !p.host) return "Direct";
  return `${p.type || "http"}://${p.username ? `${p.username}@` : ""}${p.host}:${p.port}`;
}

function credentialOf(a) {
  if (a.platform === "claude" || a.platform === "gemini" || a.platform === "openai") {
    const exp = Number(a.tokenExpiresAt) || Date.parse(a.tokenExpiresAt) || 0;
    const parts = [a.accessTokenMasked || "no token"];
    if (exp) parts.push(exp > Date.now() ? `refreshes ${f.relative(exp)}` : "expired");
    if (!a.hasRefreshToken) parts.push("no refresh token");
    return h("span", h("code", parts[0]), parts.length > 1 ? ` · ${parts.slice(1).join(" · ")}` : "");
  }
  if (a.platform === "bedrock") {
    if (a.credentialType === "bearer_token") return a.bearerTokenMasked ? h("span", h("code", a.bearerTokenMasked), " · API key") : "—";
    return a.accessKeyIdMasked ? h("code", a.accessKeyIdMasked) : "—";
  }
  if (a.platform === "droid" && a.authenticationMethod === "api_key") {
    const keys = a.apiKeys || [];
    const usable = keys.filter((k) => k.status !== "error").length;
    return h("span", { "data-pool-summary": "" }, `${usable} of ${keys.length} API keys usable`);
  }
  if (a.platform === "droid" && (a.accessTokenMasked || a.hasRefreshToken)) {
    const exp = Number(a.tokenExpiresAt) || 0;
    const parts = ["Factory login"];
    if (exp > 1) parts.push(exp > Date.now() ? `refreshes ${f.relative(exp)}` : "refresh due");
    return h("span", h("code", a.accessTokenMasked || "—"), ` · ${parts.join(" · ")}`);
  }
  return a.apiKeyMasked ? h("code", a.apiKeyMasked) : "—";
}

function typeDetails(a) {
  const out = [];
  if (a.platform === "azure-openai") out.push(["Deployment", [a.deploymentName, a.apiVersion && `API ${a.apiVersion}`].filter(Boolean).join(" · ") || "—"]);
  if (a.platform === "bedrock" && (a.defaultModel || a.smallFastModel)) out.push(["Models", [a.defaultModel, a.smallFastModel].filter(Boolean).join(" · ")]);
  if (a.platform === "droid" && a.endpointType) out.push(["Speaks", { openai: "OpenAI", comm: "Chat Completions" }[a.endpointType] || "Anthropic"]);
  if (a.platform === "droid" && a.organizationId) out.push(["Organisation", a.organizationId]);
  if ((a.platform === "claude" || a.platform === "openai") && a.emailMasked) out.push(["Login", a.emailMasked]);
  if (a.platform === "openai" && (a.planType || a.accountId)) out.push(["ChatGPT", [a.planType && `${a.planType} plan`, a.accountId].filter(Boolean).join(" · ")]);
  if (a.platform === "gemini") out.push(["Project", a.projectId || a.tempProjectId || "found on first use"]);
  return out;
}

// Anthropic's subscription windows (v1's names), in the order they bind.
const WINDOWS = [
  ["fiveHour", "5 hours"],
  ["sevenDay", "7 days"],
  ["sevenDayOpus", "7 days · Opus"],
  ["sevenDaySonnet", "7 days · Sonnet"],
];

/**
 * Bars for a subscription account's usage windows: Claude OAuth accounts with a button to poll
 * them now; ChatGPT accounts as the Codex backend's last answer reported them.
 */
function usageWindows(ctx, a, reload) {
  const w = a.usageWindows;
  const pollable = a.platform === "claude";
  const refresh = h("button.btn.btn-ghost.btn-sm.btn-icon", { type: "button", "data-action": "usage-refresh", "aria-label": `Poll the usage windows of ${a.name} now`, title: "Poll the usage windows now" }, icon("refresh"));
  refresh.addEventListener("click", () =>
    busy(refresh, async () => {
      try {
        const r = await ctx.api(`/admin/claude-accounts/${encodeURIComponent(a.id)}/usage/refresh`, { method: "POST" });
        if (r.success === false) toast(r.message || "The usage endpoint did not answer", { kind: "error", title: "Poll failed" });
        reload();
      } catch (e) {
        showError(e, "Could not poll the usage windows");
      }
    }),
  );
  const rows = WINDOWS.filter(([k]) => w && w[k] && w[k].utilization !== null && w[k].utilization !== undefined).map(([k, label]) => {
    const x = w[k];
    const pct = Number(x.utilization) || 0;
    const resets = x.remainingSeconds === null || x.remainingSeconds === undefined ? "" : x.remainingSeconds > 0 ? `resets in ${f.until(x.remainingSeconds)}` : "resetting";
    return h(
      "div.window-row",
      { dataset: { window: k } },
      h("span.window-label", label),
      meter(pct, 100, { label: `${label} window used` }),
      h("span.window-pct", `${Math.round(pct)}%`),
      h("span.window-reset", { title: x.resetsAt ? f.dateTime(x.resetsAt) : "" }, resets),
    );
  });
  const note = !w ? (pollable ? "Not polled yet" : "No answer seen yet") : w.updatedAt ? `Updated ${f.relative(w.updatedAt)}` : "";
  return h(
    "div.usage-windows",
    { dataset: { usageWindows: "" } },
    h("div.window-head", h("span.k", "Usage windows"), h("span.muted.small", note), h("span.spacer"), pollable ? refresh : null),
    rows,
    w && w.error ? h("div.callout.warn", { "data-poll-error": "" }, icon("alert"), h("span", `Last poll failed: ${w.error}`)) : null,
  );
}

/** The last account tests as dots, oldest first, each with its result as a tooltip. */
function testHistory(a) {
  const list = (a.testHistory || []).slice().reverse();
  const sched = a.testConfig && a.testConfig.enabled ? `scheduled ${a.testConfig.cronExpression}` : "";
  if (!list.length && !sched) return null;
  return h(
    "div.test-history",
    { dataset: { testHistory: "" } },
    h("span.k", "Tests"),
    h(
      "div.test-dots",
      list.map((t) =>
        h(`span.test-dot${t.success ? ".ok" : ".fail"}`, {
          title: `${f.dateTime(t.timestamp, { seconds: true })} · ${t.trigger} · ${t.status ? `HTTP ${t.status}` : "no answer"} · ${f.ms(t.latencyMs)}${t.success ? "" : ` · ${t.message}`}`,
          "aria-label": `${t.trigger} test ${t.success ? "passed" : "failed"} ${f.relative(t.timestamp)}`,
        }),
      ),
    ),
    sched ? h("span.muted.small", sched) : null,
  );
}

/** The scheduled-test dialog (v1's test config): on or off, a cron expression, a model. */
function openTestSchedule(ctx, type, a, reload) {
  const cfg = a.testConfig || { enabled: false, cronExpression: "0 8 * * *", model: "" };
  const on = switchInput("Test this account on a schedule", !!cfg.enabled, { name: "enabled" });
  const cron = input({ name: "cronExpression", value: cfg.cronExpression || "0 8 * * *", placeholder: "0 8 * * *" });
  const model = input({ name: "model", value: cfg.model || "", placeholder: "The account type's test model" });
  modal({
    title: `Scheduled tests of ${a.name}`,
    body: h(
      "div.form-grid",
      h("div.span-2", on.el),
      field("When", cron, { cls: "span-2", hint: "A cron expression: minute hour day month weekday, in the server's accounting time zone. 0 8 * * * is every day at 8:00." }),
      field("Model", model, { cls: "span-2" }),
    ),
    footer: [h("button.btn", { type: "button", onclick: (ev) => ev.target.closest("dialog").close() }, "Cancel"), h("button.btn.btn-primary", { type: "submit" }, "Save")],
    onSubmit: async () => {
      await ctx.api(`/admin/${type.path}/${encodeURIComponent(a.id)}/test-config`, {
        method: "PUT",
        body: { enabled: on.input.checked, cronExpression: cron.value.trim(), model: model.value.trim() },
      });
      toast(on.input.checked ? `${a.name} is tested at ${cron.value.trim()}` : `Scheduled tests of ${a.name} are off`);
      reload();
      return true;
    },
  });
}

function accountCard(ctx, type, a, reload) {
  const [label, kind] = accountHealth(a);
  const u = a.usage || {};
  const cool = cooldownUntil(a);
  const name = a.name;
  const base = `/admin/${type.path}/${encodeURIComponent(a.id)}`;
  const sched = switchInput("Scheduling", a.schedulable !== false, { "aria-label": `Schedule requests to ${name}` });
  sched.input.addEventListener("change", async () => {
    sched.input.disabled = true;
    try {
      const r = await ctx.api(`${base}/toggle-schedulable`, { method: "PUT" });
      const on = r.schedulable ?? r.data?.schedulable ?? sched.input.checked;
      sched.input.checked = !!on;
      toast(on ? `${name} is taking requests again` : `${name} is paused: no new requests go to it`);
      reload();
    } catch (e) {
      sched.input.checked = !sched.input.checked;
      showError(e, "Could not change scheduling");
    } finally {
      sched.input.disabled = false;
    }
  });
  const testBtn = h("button.btn.btn-sm", { type: "button", "data-action": "test", "aria-label": `Test ${name}` }, icon("play"), h("span", "Test"));
  testBtn.addEventListener("click", () =>
    busy(testBtn, async () => {
      try {
        const r = await ctx.api(`${base}/test`, { method: "POST", body: {} });
        const d = r.data || r;
        const latency = d.latencyMs ?? d.latency;
        toast(`${name} answered${latency !== undefined ? ` in ${f.ms(latency)}` : ""}${d.model ? ` (${d.model})` : ""}.`, { title: "Test passed" });
        reload();
      } catch (e) {
        const d = e.body && e.body.data;
        if (d && typeof d === "object" && "ok" in d) {
          toast(`${d.status ? `HTTP ${d.status}: ` : ""}${d.message || "no answer"}`, { kind: "error", title: `${name} failed the test` });
        } else if (e.status === 404 && /route/i.test(e.message)) {
          toast("This server cannot test accounts yet. Send a request with a key instead.", { kind: "info", title: "Test not available" });
        } else {
          showError(e, `${name} failed the test`);
        }
      }
    }),
  );
  const scheduleBtn = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Schedule tests of ${name}`, title: "Scheduled tests", "data-action": "test-schedule" }, icon("clock"));
  scheduleBtn.addEventListener("click", () => openTestSchedule(ctx, type, a, reload));
  const editBtn = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Edit ${name}`, title: "Edit", "data-action": "edit" }, icon("edit"));
  editBtn.addEventListener("click", async () => {
    if (await openAccountForm(ctx, type, a)) {
      toast(`Saved ${name}`);
      reload();
    }
  });
  const delBtn = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Delete ${name}`, title: "Delete", "data-action": "delete" }, icon("trash"));
  delBtn.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: `Delete ${name}?`,
      message: "The account is removed for good. Keys bound to it go back to the shared pool. Its usage history is kept.",
      confirmLabel: "Delete account",
      danger: true,
    });
    if (!ok) return;
    try {
      const r = await ctx.api(base, { method: "DELETE" });
      toast(r.unboundKeys ? `Deleted ${name}; ${f.plural(r.unboundKeys, "key")} moved to the shared pool` : `Deleted ${name}`);
      reload();
    } catch (e) {
      showError(e, "Could not delete the account");
    }
  });
  const troubled = cool || (a.status && a.status !== "active") || (a.modelCooldowns || []).length;
  let resetBtn = null;
  if (troubled) {
    resetBtn = h("button.btn.btn-sm", { type: "button", "data-action": "reset", title: "Clear the error and cooldowns and put the account back in rotation" }, icon("restore"), h("span", "Reset"));
    resetBtn.addEventListener("click", () =>
      busy(resetBtn, async () => {
        try {
          await ctx.api(`${base}/reset-status`, { method: "POST" });
          toast(`${name} is back in rotation`);
          reload();
        } catch (e) {
          showError(e, "Could not reset the account");
        }
      }),
    );
  }
  let refreshBtn = null;
  // Droid's Factory login refreshes at v1's path (`refresh-token`); the other OAuth types at `refresh`.
  const refreshPath = type.oauth ? "refresh" : a.platform === "droid" && a.hasRefreshToken ? "refresh-token" : null;
  if (refreshPath) {
    refreshBtn = h("button.btn.btn-sm.btn-icon", { type: "button", "aria-label": `Refresh the token of ${name}`, title: "Refresh the access token now", "data-action": "refresh" }, icon("refresh"));
    refreshBtn.addEventListener("click", () =>
      busy(refreshBtn, async () => {
        try {
          await ctx.api(`/admin/${type.path}/${encodeURIComponent(a.id)}/${refreshPath}`, { method: "POST" });
          toast(`Refreshed the token of ${name}`);
          reload();
        } catch (e) {
          showError(e, "Could not refresh the token");
        }
      }),
    );
  }
  const quota = Number(a.dailyQuota) || 0;
  const today = u.daily?.cost ?? a.todayCost ?? 0;
  const kvs = [
    ["Endpoint", endpointOf(a) || h("span.muted", defaultEndpoint(a))],
    ["Credential", credentialOf(a)],
    ...typeDetails(a),
    ["Priority", `${a.priority ?? "—"} · ${a.accountType === "dedicated" ? "dedicated" : "shared pool"}`],
    ["Models", modelsOf(a)],
    ["Proxy", proxyOf(a)],
    a.maxConcurrentTasks > 0 ? ["Concurrency", `${f.int(a.currentConcurrency || 0)} of ${f.int(a.maxConcurrentTasks)} in use`] : null,
    (a.groupInfos || []).length ? ["Groups", h("div.chips", a.groupInfos.map((g) => h("span.chip", g.name)))] : null,
    a.lastUsedAt ? ["Last used", h("span", { title: f.dateTime(a.lastUsedAt) }, f.relative(a.lastUsedAt))] : null,
  ].filter(Boolean);
  return h(
    "article.card.account-card",
    { dataset: { accountId: a.id } },
    h(
      "div.top",
      h("div.cell-stack", h("h3", name), a.description ? h("span.cell-sub", a.description) : null),
      badge(label, kind),
    ),
    h(
      "div.body",
      h("dl.kv", kvs.map(([k, v]) => [h("dt", k), h("dd", v)])),
      h(
        "div.mini-stats",
        h("div", h("div.k", "Today"), h("div.v", f.int(u.daily?.requests || 0)), h("div.k", u.daily?.errors ? `requests · ${f.int(u.daily.errors)} errors` : "requests")),
        h("div", h("div.k", "Today"), h("div.v", f.money(today)), h("div.k", quota > 0 ? `of ${f.money(quota)} quota` : "cost")),
        h("div", h("div.k", "All time"), h("div.v", f.money(u.total?.cost || 0)), h("div.k", `${f.compact(u.total?.allTokens || 0)} tokens`)),
      ),
      quota > 0 ? meter(today, quota, { label: "Daily quota used" }) : null,
      (a.platform === "claude" || a.platform === "openai") && "usageWindows" in a ? usageWindows(ctx, a, reload) : null,
      testHistory(a),
      cool
        ? h("div.callout.warn", { "data-cooldown": "" }, icon("clock"), h("span", `Cooling down until ${f.dateTime(cool)} (${f.relative(cool)})${a.cooldownReason ? `: ${a.cooldownReason}` : ""}.`))
        : null,
      (a.modelCooldowns || []).length
        ? h("div.callout.warn", icon("clock"), h("span", "Resting models: ", a.modelCooldowns.map((m) => `${m.model} until ${f.dateTime(m.until)}`).join(", ")))
        : null,
      a.errorMessage ? h("div.callout.danger", { "data-last-error": "" }, icon("alert"), h("span", h("strong", "Last error: "), a.errorMessage)) : null,
    ),
    h("div.foot", sched.el, h("span.spacer"), resetBtn, testBtn, scheduleBtn, refreshBtn, editBtn, delBtn),
  );
}

function skeletonCards(n = 2) {
  return Array.from({ length: n }, () =>
    h(
      "div.card.account-card",
      { "aria-hidden": "true" },
      h("div.top", h("span.skel.line", { style: { width: "40%", height: "16px" } })),
      h("div.body", h("span.skel.line"), h("span.skel.line", { style: { width: "70%" } }), h("span.skel.line", { style: { width: "55%" } }), h("span.skel", { style: { height: "58px" } })),
      h("div.foot", h("span.skel.line", { style: { width: "30%" } })),
    ),
  );
}

export default async function accountsPage(root, ctx) {
  let typeId = ctx.params[0] || ctx.query.get("type") || "claude-console";
  const tabsHost = h("div");
  const grid = h("div.account-grid", { "aria-live": "polite" }, skeletonCards(3));
  const addBtn = h("button.btn.btn-primary", { type: "button", "data-add-account": "", disabled: true }, icon("plus"), "Add account");
  const blurb = h("p", "Upstream accounts crs relays requests to.");
  mount(
    root,
    h("div.page-head", h("div", h("h1", "Accounts"), blurb), h("div.actions", addBtn)),
    h("div.section-head", tabsHost, h("span.muted.small", { "data-count": "" })),
    grid,
  );

  let types = [];
  const current = () => types.find((t) => t.type.id === typeId) || types[0];

  async function reload() {
    const t = current();
    if (!t) return;
    try {
      const r = await ctx.api(`/admin/${t.type.path}`);
      t.accounts = listOf(r);
      render();
    } catch (e) {
      showError(e, "Could not load the accounts");
    }
  }

  const tabLabel = (t) => `${t.type.label}${t.accounts.length ? ` · ${t.accounts.length}` : ""}`;

  function render() {
    const t = current();
    if (!t) return;
    addBtn.disabled = false;
    const tab = tabsHost.querySelector(`[data-value="${t.type.id}"]`);
    if (tab) tab.textContent = tabLabel(t);
    root.querySelector("[data-count]").textContent = f.plural(t.accounts.length, "account");
    if (!t.accounts.length) {
      mount(
        grid,
        h(
          "div.card",
          { style: { gridColumn: "1 / -1" } },
          emptyState({
            iconName: "server",
            title: `No ${t.type.label} accounts yet`,
            text: t.type.blurb,
            action: h("button.btn.btn-primary", { type: "button", onclick: add }, icon("plus"), `Add a ${t.type.label} account`),
          }),
        ),
      );
      return;
    }
    mount(grid, t.accounts.map((a) => accountCard(ctx, t.type, a, reload)));
  }

  async function add() {
    const t = current();
    if (t && (await openAccountForm(ctx, t.type))) {
      toast("Account added");
      reload();
    }
  }
  addBtn.addEventListener("click", add);

  try {
    types = await availableAccountTypes({ refresh: true });
  } catch (e) {
    showError(e, "Could not load the accounts");
    mount(grid, h("div.card", { style: { gridColumn: "1 / -1" } }, emptyState({ iconName: "alert", title: "Could not load the accounts", text: e.message })));
    return;
  }
  if (!types.some((t) => t.type.id === typeId)) typeId = types[0]?.type.id;
  if (types.length > 1) {
    mount(
      tabsHost,
      tabs(
        types.map((t) => [t.type.id, tabLabel(t)]),
        typeId,
        (v) => {
          typeId = v;
          ctx.setQuery({ type: v === "claude-console" ? null : v });
          mount(grid, skeletonCards(2));
          reload();
        },
        { label: "Account type" },
      ),
    );
  } else {
    mount(tabsHost, h("h2", current().type.label));
  }
  render();
}

export { openAccountForm };
