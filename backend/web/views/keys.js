// API keys for server clients: create (shown once, with a Copy button), list with when each was
// created and last used, delete after a confirmation that names the key.

import { api } from "../api.js";
import { announce, fill, h } from "../dom.js";
import { errorText, main, notice } from "../ui.js";
import { when } from "./when.js";

/** Put `text` on the clipboard; without the async clipboard API, select it for Ctrl+C. */
async function copy(text, element) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Insecure origins and denied permissions have no async clipboard: select the key instead,
    // then try the older copy command, so Ctrl+C (or the command itself) still works.
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { return document.execCommand("copy"); } catch { return false; }
  }
}

export function keysView() {
  const body = h("tbody");
  const status = h("div.status");
  const form = h("form.card.inline",
    h("label", { for: "key-name" }, "Key name"), h("input#key-name", { name: "name", required: true, maxlength: 100, placeholder: "e.g. shop server" }),
    h("button.primary", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const key = await api("/api/auth/api-keys", { method: "POST", body: { name: form.elements.name.value } });
      const code = h("code.key", key.key);
      const said = h("span.copied", { role: "status" });
      const button = h("button.primary", {
        type: "button", "aria-label": `Copy key ${key.name}`,
        onclick: async () => {
          const done = await copy(key.key, code);
          fill(said, done ? "Copied" : "Selected: press Ctrl+C (⌘C) to copy");
          announce(done ? "Copied" : "The key is selected; press Ctrl+C to copy it.");
        },
      }, "Copy");
      fill(status, h("div.notice.ok.new-key",
        h("p", `Your new key “${key.name}”. Copy it now: it is shown only once.`),
        h("div.key-row", code, button, said)));
      form.reset();
      load();
      button.focus();
    } catch (err) { fill(status, notice(errorText(err))); }
  });

  const dialogText = h("p#key-delete-text");
  const dialog = h("dialog.confirm", { "aria-labelledby": "key-delete-title", "aria-describedby": "key-delete-text" },
    h("form", { method: "dialog" },
      h("h2#key-delete-title", "Delete this API key?"), dialogText,
      h("div.actions",
        h("button", { type: "submit", value: "cancel", autofocus: true }, "Keep it"),
        h("button.danger", { type: "submit", value: "delete" }, "Delete key"))));
  let pending = null;
  dialog.addEventListener("close", async () => {
    const target = pending;
    pending = null;
    if (!target) return;
    if (dialog.returnValue !== "delete") { target.button.focus(); return; }
    try {
      await api(`/api/auth/api-keys/${target.key.id}`, { method: "DELETE" });
      announce(`Key ${target.key.name} deleted.`);
      await load();
      (body.querySelector("button") ?? document.getElementById("key-name"))?.focus();
    } catch (err) { fill(status, notice(errorText(err))); }
  });

  const row = (k) => {
    const button = h("button.danger", { type: "button", "aria-label": `Delete key ${k.name}` }, "Delete");
    button.addEventListener("click", () => {
      pending = { key: k, button };
      fill(dialogText, `Server clients using “${k.name}” (${k.prefix}…) will be refused at once. This cannot be undone.`);
      dialog.returnValue = "";
      dialog.showModal();
    });
    return h("tr", { "data-id": k.id },
      h("th", { scope: "row" }, k.name),
      h("td", { "data-label": "Starts with" }, h("code", `${k.prefix}…`)),
      h("td", { "data-label": "Created" }, when(k.created_at)),
      h("td", { "data-label": "Last used" }, when(k.last_used_at)),
      h("td", button));
  };
  const load = async () => {
    try {
      const page = await api("/api/auth/api-keys?limit=100");
      fill(body, page.items.length ? page.items.map(row)
        : h("tr", h("td.muted", { colspan: 5 }, "No keys yet.")));
    } catch (err) { fill(status, notice(errorText(err))); }
  };
  const table = h("table.keys-table",
    h("caption.sr-only", "Your API keys"),
    h("thead", h("tr", h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Starts with"),
      h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, "Last used"),
      h("th", { scope: "col" }, h("span.sr-only", "Actions")))),
    body);
  fill(main, h("h1", "API keys"), h("p.muted", "Server clients send a key in the X-API-Key header."),
    form, status, table, dialog);
  load();
  return {};
}
