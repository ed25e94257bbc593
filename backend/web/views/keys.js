// API keys for server clients: create (shown once), list, delete.

import { api } from "../api.js";
import { fill, formatDate, h } from "../dom.js";
import { errorText, main, notice } from "../ui.js";

export function keysView() {
  const list = h("ul.keys");
  const status = h("div.status");
  const form = h("form.card.inline",
    h("label", { for: "key-name" }, "Key name"), h("input#key-name", { name: "name", required: true, placeholder: "e.g. shop server" }),
    h("button.primary", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const key = await api("/api/auth/api-keys", { method: "POST", body: { name: form.elements.name.value } });
      fill(status, h("div.notice.ok", { role: "status" },
        h("p", "Copy this key now — it is shown only once:"), h("code.key", key.key)));
      form.reset();
      load();
    } catch (err) { fill(status, notice(errorText(err))); }
  });
  const load = async () => {
    try {
      const page = await api("/api/auth/api-keys?limit=100");
      fill(list, page.items.length ? page.items.map((k) => h("li.row",
        h("strong", k.name), h("span.muted", formatDate(k.created_at)),
        h("button.danger", {
          type: "button", "aria-label": `Delete key ${k.name}`,
          onclick: async () => {
            try { await api(`/api/auth/api-keys/${k.id}`, { method: "DELETE" }); load(); } catch (err) { fill(status, notice(errorText(err))); }
          },
        }, "Delete"))) : h("li.muted", "No keys yet."));
    } catch (err) { fill(list, notice(errorText(err))); }
  };
  fill(main, h("h1", "API keys"), h("p.muted", "Server clients send a key in the X-API-Key header."), form, status, list);
  load();
  return {};
}
