// Product CSV imports: the upload form and the list of batches with live progress.

import { api } from "../api.js";
import { fill, formatDate, h } from "../dom.js";
import { badge, errorText, main, notice } from "../ui.js";

export function batchesView() {
  const list = h("ul.batches");
  const status = h("div.status");
  const form = h("form.card",
    h("h2", "Import a product CSV"),
    h("p.muted", "Columns: S. No., Product Name, Input Image Urls (comma-separated)."),
    h("label", { for: "csv" }, "CSV file"), h("input#csv", { type: "file", name: "file", accept: ".csv,text/csv", required: true }),
    h("label", { for: "quality" }, "Output quality (1–95)"), h("input#quality", { type: "number", name: "quality", min: 1, max: 95, value: 50 }),
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
      upsert(batch);
      form.reset();
    } catch (err) { fill(status, notice(errorText(err))); }
  });

  const row = (b) => h("li.card.batch", { "data-id": b.id, "data-status": b.status },
    h("div.row", h("strong", `Batch ${b.id.slice(0, 8)}`), badge(b.status), h("span.muted", formatDate(b.created_at))),
    h("progress", { max: 100, value: b.progress ?? 0, "aria-label": `Progress of batch ${b.id.slice(0, 8)}` }),
    h("p.small", `${b.processed_images} of ${b.total_images} images done, ${b.failed_images} failed`),
    b.finished_at ? h("a", { href: `/api/batches/${b.id}/output.csv`, download: `batch-${b.id.slice(0, 8)}.csv` }, "Download output CSV") : null);
  const upsert = (b) => {
    const old = list.querySelector(`[data-id="${b.id}"]`);
    if (old) old.replaceWith(row(b));
    else list.prepend(row(b));
  };
  const load = async () => {
    try { fill(list, (await api("/api/batches?limit=50")).items.map(row)); } catch (err) { fill(list, notice(errorText(err))); }
  };
  fill(main, h("h1", "Batches"), form, h("h2", "Your imports"), list);
  load();
  return {
    async onTask(task) {
      if (task.kind === "batch" && task.batch_id) {
        try { upsert(await api(`/api/batches/${task.batch_id}`)); } catch { /* gone */ }
      }
    },
    onSnapshot: load,
  };
}

