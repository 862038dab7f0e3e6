// Sign in.

import { h, icon, mount } from "../../lib/dom.js";
import { busy, field, input, themeToggle } from "../../lib/ui.js";
import { login } from "../session.js";

export default function renderLogin(root, { flash = "", onLoggedIn }) {
  const user = input({ name: "username", autocomplete: "username", required: true, autofocus: true, autocapitalize: "none" });
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("div.callout.danger", { role: "alert", hidden: true, "data-login-error": "" });
  const submit = h("button.btn.btn-primary", { type: "submit", style: { width: "100%", height: "40px" } }, "Sign in");
  const form = h(
    "form.stack",
    { novalidate: true, "aria-label": "Sign in" },
    flash ? h("div.callout.warn", { role: "status" }, icon("clock"), h("span", flash)) : null,
    field("Username", user),
    field("Password", pass),
    error,
    submit,
  );
  const showError = (msg) => {
    mount(error, icon("alert"), h("span", msg));
    error.hidden = false;
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    error.hidden = true;
    if (!user.value.trim() || !pass.value) {
      showError("Enter your username and password.");
      (user.value.trim() ? pass : user).focus();
      return;
    }
    busy(submit, async () => {
      try {
        await login(user.value.trim(), pass.value);
        onLoggedIn();
      } catch (e) {
        showError(e.message || "Sign in failed.");
        pass.select();
      }
    });
  });
  mount(
    root,
    h(
      "div.auth-page",
      h("div.corner", themeToggle()),
      h(
        "section.card.auth-card",
        h("div.brand", h("span.brand-mark", icon("logo")), h("span", "crs")),
        h("h1", "Sign in to the admin"),
        h("p.lead", "Manage API keys, upstream accounts and usage."),
        form,
        h("p.auth-foot", "Have an API key? ", h("a", { href: "/admin-next/api-stats", "data-external": "" }, "See its usage")),
      ),
    ),
  );
  user.focus();
}
