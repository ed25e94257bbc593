// Sign in and sign up. `onSignedIn(user)` is the shell's: it stores the user and routes on.

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { errorText, main, notice } from "../ui.js";

export function authView(mode, message, onSignedIn) {
  const signup = mode === "signup";
  const status = h("div.status");
  const form = h("form.card.auth", { novalidate: true },
    h("h1", signup ? "Create your account" : "Sign in"),
    message ? notice(message, "info") : null,
    h("label", { for: "email" }, "Email"),
    h("input#email", { type: "email", name: "email", autocomplete: "email", required: true }),
    signup ? [
      h("label", { for: "display_name" }, "Display name (optional)"),
      h("input#display_name", { name: "display_name", autocomplete: "nickname" }),
    ] : null,
    h("label", { for: "password" }, "Password"),
    h("input#password", {
      type: "password", name: "password", required: true, minlength: "10",
      autocomplete: signup ? "new-password" : "current-password",
    }),
    signup ? h("p.hint", "At least 10 characters.") : null,
    status,
    h("button.primary", { type: "submit" }, signup ? "Sign up" : "Sign in"),
    h("p.muted", signup ? "Already have an account? " : "New here? ",
      h("a", { href: signup ? "#/signin" : "#/signup" }, signup ? "Sign in" : "Create an account")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    if (!data.display_name) delete data.display_name;
    fill(status);
    try {
      const user = await api(signup ? "/api/auth/register" : "/api/auth/login", { method: "POST", body: data });
      onSignedIn(user);
    } catch (err) {
      fill(status, notice(errorText(err)));
    }
  });
  fill(main, form);
  return {};
}
