// Product CSV imports: the upload form, then every batch with its real outcome (done, partly
// done, failed), live progress over the WebSocket, a per-URL detail with errors in plain words
// and output thumbnails, paging with the API's cursor, cancel and delete with confirmation.

import { ApiError, api } from "../api.js";
import { announce, fill, h } from "../dom.js";
import { main } from "../ui.js";
import { when } from "./when.js";

const PAGE = 50;
const ENDED = new Set(["succeeded", "partial", "failed", "canceled"]);

const HTTP_WORDS = {
  400: "bad request", 401: "sign-in required", 403: "access denied", 404: "not found",
  410: "gone", 429: "too many requests", 500: "server error", 502: "bad gateway",
  503: "unavailable", 504: "gateway timeout",
};

const FETCH_WORDS = {
  "fetch.bad_url": "This is not a valid web address.",
  "fetch.bad_scheme": "Only http:// and https:// addresses can be imported.",
  "fetch.bad_port": "That port is not allowed; images must be on the standard web ports.",
  "fetch.blocked_address": "This address points into a private or internal network, which is never fetched.",
  "fetch.dns_failed": "The site's name could not be found.",
  "fetch.connection_failed": "The site could not be reached.",
  "fetch.timeout": "The site took too long to answer.",
  "fetch.too_large": "The file is larger than an import may be.",
  "fetch.too_many_redirects": "The address redirects too many times.",
  "fetch.redirect_invalid": "The address redirects somewhere that cannot be followed.",
  "fetch.bad_content_type": "The address does not serve an image.",
  "fetch.not_an_image": "The file is not a JPEG, PNG, WebP or GIF image.",
  "batch.undecodable": "The image could not be read; the file may be damaged.",
  "upload.too_large": "The image is larger than the upload limits allow.",
  "upload.corrupt": "The image file is damaged.",
  "upload.empty": "The file is empty.",
  "upload.animated_unsupported": "Animated images are not supported.",
  "upload.unsupported_type": "This image format is not supported.",
};

/** One URL's failure in plain words; the server's technical text stays in the tooltip. */
export function itemError(item) {
  if (item.error_code === "fetch.http_status") {
    // The server says "'<url>' answered HTTP 404"; the URL itself may hold any digits.
    const status = Number((item.error || "").match(/HTTP (\d{3})\b/)?.[1]);
    return status ? `The site answered ${status}${HTTP_WORDS[status] ? ` (${HTTP_WORDS[status]})` : ""}.`
      : "The site answered with an error.";
  }
  if (FETCH_WORDS[item.error_code]) return FETCH_WORDS[item.error_code];
  if (item.error_code?.startsWith("upload.")) return `The image was refused: ${item.error || item.error_code}.`;
  return item.error || "This image failed.";
}

/** What a batch's status means, in words and counts, e.g. "Partly done: 3 of 5 images". */
export function statusWords(b) {
  const of = `${b.processed_images} of ${b.total_images} image${b.total_images === 1 ? "" : "s"}`;
  switch (b.status) {
    case "queued": return "Waiting to start";
    case "running": return `Importing: ${b.processed_images + b.failed_images} of ${b.total_images} tried`;
    case "succeeded": return `Done: ${of}`;
    case "partial": return `Partly done: ${of}`;
    case "failed": return b.total_images && b.failed_images === b.total_images ? `Failed: no image of ${b.total_images} imported` : `Failed: ${of}`;
    case "canceled": return `Canceled: ${of}`;
    default: return b.status;
  }
}

/** A readable problem: the API's detail once, then only the row errors it does not already say. */
function problemNotice(err) {
  const detail = err instanceof ApiError ? (err.problem.detail || err.problem.title || err.message) : `Something went wrong: ${err?.message ?? err}`;
  const rows = err instanceof ApiError && Array.isArray(err.problem.errors) ? err.problem.errors : [];
  const extra = rows
    .map((e) => (e.line !== undefined ? { line: e.line, text: e.message } : { line: null, text: e.msg || e.message || String(e) }))
    .filter((e) => e.text && !detail.includes(e.text));
  return h("div.notice.error", { role: "alert" }, h("p", detail),
    extra.length ? h("ul.row-errors", extra.slice(0, 20).map((e) => h("li", e.line !== null ? `Line ${e.line}: ${e.text}` : e.text))) : null,
    extra.length > 20 ? h("p.small", `…and ${extra.length - 20} more.`) : null);
}

export function batchesView() {
  const list = h("ul.batches", { "aria-labelledby": "batches-heading" });
  const status = h("div.status");
  const more = h("button.load-more", { type: "button", hidden: true }, "Load more");
  const counter = h("p.muted.small", { role: "status" });
  const rows = new Map(); // batch id → {el, update(batch), batch}
  let cursor = null;

  const quality = h("input#quality", { type: "number", name: "quality", min: 1, max: 95, value: 50, required: true });
  const file = h("input#csv", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  const form = h("form.card",
    h("h2", "Import a product CSV"),
    h("p.muted", "Columns: S. No., Product Name, Input Image Urls (comma-separated)."),
    h("label", { for: "csv" }, "CSV file"), file,
    h("label", { for: "quality" }, "Output quality (1–95)"), quality,
    h("label", { for: "webhook" }, "Webhook URL (optional)"), h("input#webhook", { type: "url", name: "webhook_url", placeholder: "https://…" }),
    status,
    h("button.primary", { type: "submit" }, "Start import"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    if (!data.get("webhook_url")) data.delete("webhook_url");
    fill(status);
    try {
      const { batch } = await api("/api/batches", { method: "POST", body: data });
      upsert(batch, true);
      // Only the file is cleared: the quality and webhook are usually the same next time.
      file.value = "";
      announce(`Import started: ${batch.total_images} image${batch.total_images === 1 ? "" : "s"}.`);
    } catch (err) { fill(status, problemNotice(err)); }
  });

  // One confirmation dialog for every delete: it names the batch and says what stays.
  const dialogText = h("p#batch-delete-text");
  const confirmDelete = h("button.danger", { type: "submit", value: "delete" }, "Delete batch");
  const dialog = h("dialog.confirm", { "aria-labelledby": "batch-delete-title", "aria-describedby": "batch-delete-text" },
    h("form", { method: "dialog" },
      h("h2#batch-delete-title", "Delete this batch?"), dialogText,
      h("div.actions", h("button", { type: "submit", value: "cancel", autofocus: true }, "Keep it"), confirmDelete)));
  let pending = null;
  dialog.addEventListener("close", async () => {
    const target = pending;
    pending = null;
    if (!target) return;
    if (dialog.returnValue !== "delete") { target.focusDelete(); return; }
    try {
      await api(`/api/batches/${target.batch.id}`, { method: "DELETE" });
      const next = target.el.nextElementSibling ?? target.el.previousElementSibling;
      target.el.remove();
      rows.delete(target.batch.id);
      count();
      announce(`Batch ${target.batch.filename} deleted.`);
      (next?.querySelector("button") ?? document.getElementById("batches-heading"))?.focus();
    } catch (err) { target.showError(err); }
  });
  const askDelete = (row) => {
    const b = row.batch;
    pending = row;
    const started = new Date(b.created_at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    const kept = b.processed_images
      ? `The ${b.processed_images === 1 ? "image" : `${b.processed_images} images`} it imported stay${b.processed_images === 1 ? "s" : ""} in your gallery.`
      : "It imported no images.";
    fill(dialogText, `“${b.filename}”, started ${started}, will be removed with its output CSV and compressed images. ${kept}`);
    dialog.returnValue = "";
    dialog.showModal();
  };

  const makeRow = (b) => {
    const label = b.filename || `Batch ${b.id.slice(0, 8)}`;
    // Imports often share a file name: buttons also say when theirs started.
    const ident = `${label}, started ${new Date(b.created_at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })}`;
    const detailId = `batch-detail-${b.id}`;
    const nameId = `batch-name-${b.id}`;
    const badgeEl = h("span.badge");
    const words = h("p.batch-status");
    const bar = h("progress", { max: 100, "aria-label": `Progress of ${ident}` });
    const meta = h("p.small.muted");
    const actions = h("div.actions");
    const message = h("div");
    const detail = h("div.batch-detail", { id: detailId, hidden: true });
    const toggle = h("button.link", { type: "button", "aria-expanded": "false", "aria-controls": detailId, "aria-describedby": nameId }, "Show each image");
    const el = h("li.card.batch", { "data-id": b.id },
      h("div.row", h("h3.batch-name", { id: nameId }, label), badgeEl), words, bar, meta, actions, message, detail);
    let lastSeen = "";
    let refreshing = null;

    const loadItems = async () => {
      try {
        const { items } = await api(`/api/batches/${row.batch.id}/items`);
        fill(detail, items.length ? h("ol.items", items.map(itemRow)) : h("p.muted", "No image URLs."));
      } catch (err) { fill(detail, problemNotice(err)); }
    };
    // While it runs, the open detail follows the counts, at most once a second.
    const refreshItems = () => {
      if (detail.hidden || refreshing) return;
      refreshing = setTimeout(async () => { await loadItems(); refreshing = null; }, 1000);
    };
    toggle.addEventListener("click", async () => {
      const open = detail.hidden;
      detail.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
      fill(toggle, open ? "Hide each image" : "Show each image");
      if (open) { fill(detail, h("p.muted", "Loading…")); await loadItems(); }
    });

    const row = {
      el, batch: b,
      showError(err) { fill(message, problemNotice(err)); },
      focusDelete() { actions.querySelector(".delete")?.focus(); },
      update(batch) {
        row.batch = batch;
        el.dataset.status = batch.status;
        badgeEl.className = `badge ${batch.status}`;
        fill(badgeEl, { succeeded: "Done", partial: "Partly done", failed: "Failed", canceled: "Canceled", queued: "Queued", running: "Running" }[batch.status] ?? batch.status);
        fill(words, statusWords(batch));
        const ended = ENDED.has(batch.status);
        bar.hidden = ended;
        bar.value = batch.progress ?? 0;
        fill(meta, "Started ", when(batch.created_at), ` · quality ${batch.quality}`,
          batch.failed_images ? ` · ${batch.failed_images} failed` : "");
        const seen = `${batch.status}:${batch.processed_images}:${batch.failed_images}`;
        if (seen !== lastSeen) {
          const hadFocus = actions.contains(document.activeElement) ? document.activeElement.textContent : null;
          fill(actions, toggle,
            ended ? h("a", { href: `/api/batches/${batch.id}/output.csv`, download: `${label.replace(/\.csv$/i, "")}-output.csv`, "aria-describedby": nameId }, "Download output CSV") : null,
            !ended && batch.task_id ? h("button", { type: "button", onclick: cancel, "aria-label": `Cancel ${ident}` }, "Cancel") : null,
            ended ? h("button.danger.delete", { type: "button", onclick: () => askDelete(row), "aria-label": `Delete ${ident}` }, "Delete") : null);
          if (hadFocus) [...actions.querySelectorAll("a,button")].find((x) => x.textContent === hadFocus)?.focus();
          if (lastSeen) refreshItems();
          lastSeen = seen;
        }
      },
    };
    const cancel = async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        await api(`/api/tasks/${row.batch.task_id}/cancel`, { method: "POST" });
        // The task stops at its next step, after the images in flight: say so until it has.
        fill(button, "Canceling…");
        button.setAttribute("aria-label", `Canceling ${ident}`);
        announce(`Canceling ${label}; it stops after the images in progress.`);
      } catch (err) { button.disabled = false; row.showError(err); }
    };
    row.update(b);
    return row;
  };

  const itemRow = (item) => {
    const ok = item.status === "succeeded";
    const failed = item.status === "failed";
    return h(`li.item.${item.status}`,
      ok && item.output_url
        ? h("a.thumb-link", { href: item.output_url, target: "_blank", rel: "noopener" },
          h("img.item-thumb", { src: item.thumbnail_url || item.output_url, alt: `Output of ${item.url}`, loading: "lazy", width: 64, height: 64 }))
        : h("span.item-thumb.none", { "aria-hidden": "true" }, failed ? "✕" : "…"),
      h("div.item-text",
        h("p.item-url", h("span.sr-only", `Line ${item.line}: `), item.url),
        ok ? h("p.small.ok-text", "Imported", item.output_bytes ? ` · ${Math.max(1, Math.round(item.output_bytes / 1024))} KB` : "")
          : failed ? h("p.small.error-text", { title: item.error || item.error_code || "" }, itemError(item))
            : h("p.small.muted", "Waiting…")));
  };

  const upsert = (b, prepend = false) => {
    const known = rows.get(b.id);
    if (known) { known.update(b); return; }
    const row = makeRow(b);
    rows.set(b.id, row);
    if (prepend) list.prepend(row.el);
    else list.append(row.el);
    count();
  };
  const count = () => {
    fill(counter, rows.size ? `Showing ${rows.size} batch${rows.size === 1 ? "" : "es"}${cursor ? "; more below" : ""}.` : "");
    if (!rows.size && !list.querySelector(".empty")) list.append(h("li.muted.empty", "No imports yet."));
    if (rows.size) list.querySelector(".empty")?.remove();
  };
  const loadPage = async (first) => {
    more.disabled = true;
    try {
      const page = await api(`/api/batches?limit=${PAGE}${!first && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (first) list.querySelector(".notice")?.remove();
      // Newest first: on the first page, batches not shown yet go on top, in order.
      if (first) for (const b of [...page.items].reverse()) upsert(b, !rows.has(b.id));
      else for (const b of page.items) upsert(b);
      // A refresh of the first page keeps the cursor of the pages loaded since.
      if (!first || rows.size <= PAGE) cursor = page.next_cursor;
      more.hidden = !cursor;
      count();
    } catch (err) { list.append(h("li", problemNotice(err))); } finally { more.disabled = false; }
  };
  more.addEventListener("click", async () => {
    const before = rows.size;
    await loadPage(false);
    // Keyboard users land on the first batch just loaded, not back at the top.
    [...rows.values()][before]?.el.querySelector("button")?.focus();
  });

  fill(main, h("h1", "Batches"), form, h("h2#batches-heading", { tabindex: -1 }, "Your imports"), counter, list, more, dialog);
  loadPage(true);
  return {
    async onTask(task) {
      if (task.kind !== "batch" || !task.batch_id) return;
      try {
        const batch = await api(`/api/batches/${task.batch_id}`);
        upsert(batch, !rows.has(batch.id));
      } catch { /* deleted meanwhile */ }
    },
    onSnapshot: () => loadPage(true),
  };
}
