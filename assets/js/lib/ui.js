// Shared widgets: toasts, dialogs, theme, copy, badges, meters, tabs, skeletons, form fields.

import { h, icon, nextId } from "./dom.js";
import { isAbort } from "./api.js";

// ---------- toasts ----------

function toastHost() {
  let host = document.getElementById("toasts");
  if (!host) {
    host = h("div.toasts", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(host);
  }
  return host;
}

/** toast("Saved") / toast("Could not save", {kind: "error", title}) */
export function toast(message, { kind = "ok", title = "", timeout } = {}) {
  const close = () => el.remove();
  const el = h(
    `div.toast.${kind}`,
    { role: kind === "error" ? "alert" : null, dataset: { kind } },
    icon(kind === "error" ? "alert" : kind === "info" ? "info" : "check"),
    h("div.msg", title ? h("strong", title) : null, h("span", message)),
    h("button.btn.btn-ghost.btn-sm.btn-icon", { type: "button", "aria-label": "Dismiss", onclick: close }, icon("x")),
  );
  toastHost().append(el);
  const ms = timeout ?? (kind === "error" ? 8000 : 3500);
  if (ms > 0) setTimeout(close, ms);
  return el;
}

/** Show an error from the API (or anything thrown) as a toast; aborts and handled errors stay quiet. */
export function showError(err, context = "") {
  if (isAbort(err) || (err && err.handled)) return;
  const message = (err && err.message) || String(err);
  toast(message, { kind: "error", title: context || (err && err.title) || "" });
}

// ---------- dialogs ----------

/**
 * A modal <dialog>. Esc and the close button close it. With `onSubmit`, the body and footer
 * are one <form>: Enter submits; a rejected or false result keeps the dialog open.
 */
export function modal({ title, body, footer, wide = false, onSubmit, onClose, label }) {
  const titleId = nextId("dlg");
  const dlg = h("dialog.modal", { class: wide ? "wide" : null, "aria-labelledby": titleId, "aria-label": label || null });
  const closeBtn = h(
    "button.btn.btn-ghost.btn-icon",
    { type: "button", "aria-label": "Close dialog", onclick: () => dlg.close() },
    icon("x"),
  );
  const head = h("div.modal-head", h("h2", { id: titleId }, title), closeBtn);
  const bodyEl = h("div.modal-body", body);
  const footEl = footer ? h("div.modal-foot", footer) : null;
  if (onSubmit) {
    const form = h("form", { novalidate: true, style: { display: "contents" } }, bodyEl, footEl);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const submit = form.querySelector('[type="submit"]');
      if (submit?.classList.contains("busy")) return;
      submit?.classList.add("busy");
      try {
        const ok = await onSubmit(form, ev);
        if (ok !== false) dlg.close();
      } catch (e) {
        showError(e);
      } finally {
        submit?.classList.remove("busy");
      }
    });
    dlg.append(head, form);
  } else {
    dlg.append(head, bodyEl);
    if (footEl) dlg.append(footEl);
  }
  dlg.addEventListener("close", () => {
    dlg.remove();
    onClose?.();
  });
  document.body.append(dlg);
  dlg.showModal();
  const first = dlg.querySelector("[autofocus]") || dlg.querySelector(".modal-body input:not([type=hidden]), .modal-body select, .modal-body textarea");
  if (first) first.focus();
  return { el: dlg, close: () => dlg.close(), body: bodyEl };
}

/** Ask for confirmation; resolves true or false. */
export function confirmDialog({ title, message, confirmLabel = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h(
      `button.btn.${danger ? "btn-danger" : "btn-primary"}`,
      { type: "submit", autofocus: true },
      confirmLabel,
    );
    const m = modal({
      title,
      body: h("p", message),
      footer: [h("button.btn", { type: "button", onclick: () => m.close() }, "Cancel"), yes],
      onSubmit: () => {
        answer = true;
      },
      onClose: () => resolve(answer),
    });
    yes.focus();
  });
}

// ---------- clipboard ----------

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back below */
  }
  const ta = h("textarea", { readonly: true, "aria-hidden": "true", style: { position: "fixed", opacity: "0", top: "0" } });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

/** A copy button for `text` (a string or a function returning one). */
export function copyButton(text, { label = "Copy", small = false } = {}) {
  const btn = h(
    `button.btn${small ? ".btn-sm" : ""}`,
    { type: "button", "data-copy": "" },
    icon("copy"),
    h("span", label),
  );
  btn.addEventListener("click", async () => {
    const ok = await copyText(typeof text === "function" ? text() : text);
    const span = btn.querySelector("span");
    if (ok) {
      span.textContent = "Copied";
      btn.replaceChild(icon("check"), btn.querySelector("svg"));
      setTimeout(() => {
        span.textContent = label;
        btn.replaceChild(icon("copy"), btn.querySelector("svg"));
      }, 1800);
    } else {
      toast("Copy failed: select the text and copy it by hand.", { kind: "error" });
    }
  });
  return btn;
}

// ---------- theme ----------

const THEME_KEY = "crs.theme";

export function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

export function effectiveTheme() {
  const t = storedTheme();
  if (t !== "system") return t;
  return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

const themeListeners = new Set();

/** "light", "dark" or "system" (follow the operating system). */
export function setTheme(t) {
  try {
    if (t === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, t);
  } catch {
    /* not remembered, still applied */
  }
  if (t === "system") document.documentElement.removeAttribute("data-theme");
  else document.documentElement.setAttribute("data-theme", t);
  for (const fn of themeListeners) fn();
}

export function onThemeChange(fn) {
  themeListeners.add(fn);
  return () => themeListeners.delete(fn);
}

window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const fn of themeListeners) fn();
});

/** A button that flips between light and dark (and remembers it). */
export function themeToggle({ withLabel = false } = {}) {
  const btn = h(`button.btn.btn-ghost${withLabel ? "" : ".btn-icon"}`, { type: "button", "data-theme-toggle": "" });
  const render = () => {
    const dark = effectiveTheme() === "dark";
    const label = dark ? "Switch to light theme" : "Switch to dark theme";
    btn.setAttribute("aria-label", label);
    btn.title = label;
    btn.setAttribute("aria-pressed", String(dark));
    btn.replaceChildren(icon(dark ? "sun" : "moon"));
    if (withLabel) btn.append(h("span", dark ? "Light theme" : "Dark theme"));
  };
  btn.addEventListener("click", () => setTheme(effectiveTheme() === "dark" ? "light" : "dark"));
  onThemeChange(render);
  render();
  return btn;
}

// ---------- small pieces ----------

export function badge(text, kind = "", { plain = false, title } = {}) {
  return h(`span.badge${kind ? `.${kind}` : ""}${plain ? ".plain" : ""}`, { title: title || null }, text);
}

/** A progress bar for used/limit (limit 0 = none). */
export function meter(used, limit, { label } = {}) {
  const ratio = limit > 0 ? Math.min(1, used / limit) : 0;
  const cls = ratio >= 1 ? ".danger" : ratio >= 0.8 ? ".warn" : "";
  return h(
    `div.meter${cls}`,
    {
      role: "progressbar",
      "aria-label": label || null,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(ratio * 100)),
    },
    h("span", { style: { width: `${(ratio * 100).toFixed(1)}%` } }),
  );
}

/** Segmented tabs; calls onChange(value). */
export function tabs(options, value, onChange, { label = "View" } = {}) {
  const el = h("div.tabs", { role: "tablist", "aria-label": label });
  const buttons = options.map(([val, text]) => {
    const b = h(
      "button.tab",
      { type: "button", role: "tab", "aria-selected": String(val === value), tabindex: val === value ? "0" : "-1", dataset: { value: val } },
      text,
    );
    b.addEventListener("click", () => select(val, true));
    return b;
  });
  function select(val, fire) {
    value = val;
    for (const b of buttons) {
      const on = b.dataset.value === String(val);
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    if (fire) onChange(val);
  }
  el.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    const i = buttons.findIndex((b) => b.dataset.value === String(value));
    const next = buttons[(i + (ev.key === "ArrowRight" ? 1 : buttons.length - 1)) % buttons.length];
    next.focus();
    select(next.dataset.value, true);
    ev.preventDefault();
  });
  el.append(...buttons);
  el.select = (v) => select(v, false);
  return el;
}

export function emptyState({ iconName = "inbox", title, text, action }) {
  return h(
    "div.empty",
    h("div.empty-icon", icon(iconName)),
    title ? h("h3", title) : null,
    text ? h("p", text) : null,
    action || null,
  );
}

export function skelLines(n = 3) {
  return Array.from({ length: n }, (_, i) => h("span.skel.line", { style: { width: `${90 - i * 15}%` } }));
}

/** Skeleton rows for a table with `cols` columns. */
export function skelRows(cols, rows = 4) {
  return Array.from({ length: rows }, () =>
    h("tr", Array.from({ length: cols }, () => h("td", h("span.skel.line", { style: { width: "70%" } })))),
  );
}

export function card(title, { sub, actions, body, flush = false, cls = "" } = {}) {
  return h(
    `section.card${cls ? `.${cls}` : ""}`,
    h("div.card-head", h("div", h("h2", title), sub ? h("p", sub) : null), actions || null),
    h(`div.card-body${flush ? ".flush" : ""}`, body),
  );
}

/** A labelled form field around a control. */
export function field(labelText, control, { hint, id, cls = "" } = {}) {
  const target = control.matches("input, select, textarea") ? control : control.querySelector("input, select, textarea") || control;
  const cid = id || target.id || nextId("f");
  target.id = cid;
  let hintEl = null;
  if (hint) {
    hintEl = h("span.hint", { id: `${cid}-hint` }, hint);
    target.setAttribute("aria-describedby", `${cid}-hint`);
  }
  return h(`div.field${cls ? `.${cls}` : ""}`, h("label", { for: cid }, labelText), control, hintEl);
}

export function input(props = {}) {
  return h("input.input", { type: "text", autocomplete: "off", spellcheck: "false", ...props });
}

/** A <select> from [value, text] pairs. */
export function select(options, value, props = {}) {
  const el = h(
    "select.select",
    props,
    options.map(([v, text]) => h("option", { value: v }, text)),
  );
  el.value = value ?? "";
  return el;
}

export function switchInput(labelText, checked, props = {}) {
  const inp = h("input", { type: "checkbox", role: "switch", checked: !!checked, ...props });
  return { el: h("label.switch", inp, h("span", labelText)), input: inp };
}

export function moneyInput(props = {}) {
  const inp = input({ type: "number", min: "0", step: "0.01", inputmode: "decimal", ...props });
  return { el: h("div.input-group", h("span.affix", "$"), inp), input: inp };
}

/** Mark a button busy while `fn` runs. */
export async function busy(btn, fn) {
  if (btn.classList.contains("busy")) return undefined;
  btn.classList.add("busy");
  btn.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    btn.classList.remove("busy");
    btn.removeAttribute("aria-busy");
  }
}
