// The gallery: the drop zone with its upload queue, and the grid of the user's images.

import { api, postForm } from "../api.js";
import { announce, fill, h } from "../dom.js";
import { altText, badge, details, errorText, FINISHED, main, notice, realtime, responsive } from "../ui.js";

function imageCard(image) {
  const thumb = image.thumbnails
    ? h("img.thumb", { ...responsive(image, image.thumbnails.small, "(max-width: 600px) 50vw, 260px"), alt: altText(image), loading: "lazy" })
    : h("div.thumb.placeholder", { "aria-hidden": "true" }, image.status === "failed" ? "!" : "…");
  return h("li.card.image", { "data-id": image.id, "data-status": image.status },
    h("a.cover", { href: `#/image/${image.id}`, "aria-label": `Open ${image.original_name}` }, thumb),
    h("div.body",
      h("div.row", h("strong.name", { title: image.original_name }, image.original_name), badge(image.status)),
      image.error ? h("p.small.error-text", image.error) : null,
      image.caption ? h("p.caption", image.caption) : null,
      details(image)));
}

export function galleryView() {
  const grid = h("ul.grid#gallery", { "aria-label": "Your images" });
  const queue = h("ul.uploads", { "aria-label": "Uploads" });
  const input = h("input#file-input.visually-hidden", { type: "file", multiple: true, accept: "image/jpeg,image/png,image/webp,image/gif" });
  const zone = h("div.dropzone", { tabindex: "0", role: "button", "aria-describedby": "drop-hint" },
    h("p", h("strong", "Drop photos here"), " or ", h("label.link", { for: "file-input" }, "choose files")),
    h("p.muted#drop-hint", "JPEG, PNG, WebP or GIF. Several at once is fine."),
    input);
  const empty = h("p.muted.empty", "No images yet — upload some to begin.");
  let watchdog = null;

  const upsert = (image) => {
    const card = imageCard(image);
    const old = grid.querySelector(`[data-id="${image.id}"]`);
    if (old) old.replaceWith(card);
    else grid.prepend(card);
    empty.hidden = grid.children.length > 0;
  };

  const refreshImage = async (id) => {
    try { upsert(await api(`/api/images/${id}`)); } catch { /* deleted meanwhile */ }
  };

  const load = async () => {
    try {
      const page = await api("/api/images?limit=100");
      fill(grid, page.items.map(imageCard));
      empty.hidden = page.items.length > 0;
    } catch (err) {
      fill(grid, notice(errorText(err)));
    }
  };

  // Thumbnails are made by a background task; the WebSocket says when. A slow poll covers
  // the case where the task finished before this page saw it (or while offline).
  const watch = () => {
    clearInterval(watchdog);
    watchdog = setInterval(() => {
      if (!main.contains(grid)) return clearInterval(watchdog);
      for (const card of grid.querySelectorAll('[data-status="processing"]')) refreshImage(card.dataset.id);
    }, 4000);
  };

  async function uploadOne(file) {
    const bar = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${file.name}` });
    const status = h("span.small", "Preparing…");
    const row = h("li.upload", h("span.name", file.name), bar, status);
    queue.append(row);
    const fail = (err) => {
      row.classList.add("failed");
      bar.remove();
      fill(status, notice(`${file.name}: ${errorText(err)}`));
    };
    let signed;
    try {
      signed = await api("/api/upload/presigned-url", {
        method: "POST",
        body: { filename: file.name, content_type: file.type || "application/octet-stream", size_bytes: file.size },
      });
    } catch (err) { return fail(err); }
    try {
      fill(status, "Uploading…");
      await postForm(signed.url, signed.fields, file, (fraction) => {
        bar.value = Math.round(fraction * 100);
      });
      bar.value = 100;
      fill(status, "Checking…");
      const image = await api("/api/upload/confirm", { method: "POST", body: { upload_id: signed.upload_id } });
      row.classList.add("done");
      fill(status, "Uploaded");
      upsert(image);
      announce(`${file.name} uploaded.`);
      // The thumbnail task may already have finished before the card existed.
      const task = [...realtime.tasks.values()].find((t) => t.image_id === image.id && FINISHED.has(t.status));
      if (task) refreshImage(image.id);
    } catch (err) {
      fail(err);
    }
  }

  const uploadAll = (files) => Promise.all([...files].map(uploadOne));
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadAll(e.dataTransfer.files);
  });

  fill(main, h("section", h("h1", "Your images"), zone, queue), h("section", empty, grid));
  load();
  watch();
  return {
    onTask(task) {
      if (task.image_id && FINISHED.has(task.status) && grid.querySelector(`[data-id="${task.image_id}"]`)) {
        refreshImage(task.image_id);
      }
      // An AI edit makes a brand-new image: reload to show it.
      if (task.kind === "edit" && task.status === "succeeded") load();
    },
    onSnapshot: load, // after a reconnect, anything may have changed
  };
}

