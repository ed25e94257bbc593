// Atelier web app: a hash-routed single page over the JSON API. Each screen is a function that
// renders into <main> and may return hooks for live task updates from the WebSocket.

import { api, ApiError, postForm, sessionLost } from "./api.js";
import { announce, fill, formatBytes, formatDate, h } from "./dom.js";
import { Realtime } from "./realtime.js";

const main = document.getElementById("main");
const realtime = new Realtime();
const state = { user: null, view: null, styles: null };
const FINISHED = new Set(["succeeded", "failed", "canceled"]);

// ---------------------------------------------------------------- session and routing

async function boot() {
  try {
    state.user = await api("/api/auth/me");
  } catch {
    state.user = null;
  }
  window.addEventListener("hashchange", route);
  document.getElementById("sign-out").addEventListener("click", signOut);
  sessionLost.addEventListener("lost", () => {
    setUser(null);
    route("Your session has ended; please sign in again.");
  });
  realtime.addEventListener("task", (e) => state.view?.onTask?.(e.detail.task));
  realtime.addEventListener("snapshot", () => state.view?.onSnapshot?.());
  setUser(state.user);
  route();
}

function setUser(user) {
  state.user = user;
  document.getElementById("nav").hidden = !user;
  fill(document.getElementById("who"), user ? user.display_name || user.email : "");
  if (user) realtime.start();
  else realtime.stop();
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch { /* the cookies may already be gone; signing out locally is what matters */ }
  setUser(null);
  location.hash = "#/signin";
  announce("Signed out.");
}

function route(message) {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, id] = hash.split("/");
  state.view = null;
  if (!state.user) {
    state.view = authView(page === "signup" ? "signup" : "signin", typeof message === "string" ? message : "");
  } else if (page === "image" && id) state.view = imageView(id);
  else if (page === "batches") state.view = batchesView();
  else if (page === "keys") state.view = keysView();
  else state.view = galleryView();
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${page || "gallery"}`);
  }
  main.focus({ preventScroll: true });
}

/** A small error/notice line; `role=alert` makes screen readers read it at once. */
function notice(text, kind = "error") {
  return h(`p.notice.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
}

function errorText(err) {
  return err instanceof ApiError ? err.message : "Something went wrong: " + (err?.message ?? err);
}

// ---------------------------------------------------------------- sign in / sign up

function authView(mode, message) {
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
      setUser(user);
      if (!location.hash.startsWith("#/") || /signin|signup/.test(location.hash)) location.hash = "#/gallery";
      else route();
    } catch (err) {
      fill(status, notice(errorText(err)));
    }
  });
  fill(main, form);
  return {};
}

// ---------------------------------------------------------------- gallery and uploads

const EXIF_LABELS = [
  ["camera", "Camera"], ["lens_model", "Lens"], ["datetime_original", "Taken"], ["iso", "ISO"],
  ["focal_length", "Focal length"], ["exposure_time", "Exposure"],
];

function exifRows(image) {
  const exif = image.exif ?? {};
  const values = {
    ...exif,
    camera: [exif.camera_make, exif.camera_model].filter(Boolean).join(" "),
    focal_length: exif.focal_length ? `${exif.focal_length} mm` : "",
    exposure_time: exif.exposure_time ? `${exif.exposure_time} s` : "",
  };
  const rows = EXIF_LABELS.filter(([key]) => values[key]).map(([key, label]) => [label, values[key]]);
  if (exif.gps) rows.push(["Location", `${exif.gps.lat.toFixed(4)}, ${exif.gps.lon.toFixed(4)}`]);
  return rows;
}

function details(image) {
  const rows = [];
  if (image.width) rows.push(["Size", `${image.width} × ${image.height} · ${formatBytes(image.size_bytes)}`]);
  rows.push(...exifRows(image));
  return h("dl.meta", rows.map(([k, v]) => [h("dt", k), h("dd", v)]));
}

function badge(status) {
  return h(`span.badge.${status}`, status);
}

function altText(image) {
  return image.caption || `Photo ${image.original_name}`;
}

// Signed delivery URLs (no cookies, CDN-cacheable, AVIF/WebP by Accept) at 200/800/1600 px,
// so the browser picks the size the layout and screen need; the cookie thumbnail otherwise.
function responsive(image, fallback, sizes) {
  const d = image.delivery;
  if (!d) return { src: fallback };
  return { src: d.medium, srcset: `${d.small} 200w, ${d.medium} 800w, ${d.large} 1600w`, sizes };
}

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

function galleryView() {
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

// ---------------------------------------------------------------- one image: sketch, caption, edit

async function stylesAvailable() {
  state.styles ??= await api("/api/sketch/styles/available");
  return state.styles;
}

function imageView(id) {
  const view = { tasks: new Map() }; // task id → callback for tasks started on this page
  fill(main, h("p.muted", "Loading…"));
  (async () => {
    let image, styles, sketches;
    try {
      [image, styles, sketches] = await Promise.all([
        api(`/api/images/${id}`), stylesAvailable(), api("/api/sketch/?limit=100"),
      ]);
    } catch (err) {
      fill(main, h("p", h("a", { href: "#/gallery" }, "← Gallery")), notice(errorText(err)));
      return;
    }
    const before = image.thumbnails?.medium;
    const header = h("div.image-head");
    const renderHeader = () => fill(header,
      before ? h("img.hero", { ...responsive(image, before, "(max-width: 900px) 100vw, 900px"), alt: altText(image) }) : h("div.hero.placeholder", "No preview yet"),
      h("div",
        h("div.row", h("h1.name", image.original_name), badge(image.status)),
        image.caption ? h("p.caption", image.caption, h("span.muted", ` — ${image.caption_model}`)) : h("p.muted", "No caption yet."),
        details(image),
        h("p", h("a", { href: `/api/images/${image.id}/download`, download: image.original_name }, "Download original"))));
    renderHeader();

    // Caption and edit: each starts a task and reports through the WebSocket.
    const aiStatus = h("div.status");
    const captionButton = h("button", { type: "button" }, "Write a caption");
    captionButton.addEventListener("click", async () => {
      fill(aiStatus, h("p.muted", "Captioning…"));
      try {
        const task = await api("/api/ai/caption", { method: "POST", body: { image_id: id } });
        follow(task, async (t) => {
          if (t.status === "succeeded") {
            image = await api(`/api/images/${id}`);
            renderHeader();
            fill(aiStatus, notice("Caption saved.", "ok"));
          } else if (FINISHED.has(t.status)) fill(aiStatus, notice(`Caption ${t.status}: ${t.error?.message ?? t.error ?? ""}`));
        });
      } catch (err) { fill(aiStatus, notice(errorText(err))); }
    });
    const prompt = h("input#prompt", { name: "prompt", placeholder: "e.g. make it black and white", required: true });
    const editForm = h("form.inline",
      h("label", { for: "prompt" }, "Edit with a prompt"), prompt, h("button", { type: "submit" }, "Edit"));
    editForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      fill(aiStatus, h("p.muted", "Editing…"));
      try {
        const task = await api("/api/ai/edit", { method: "POST", body: { image_id: id, prompt: prompt.value } });
        follow(task, (t) => {
          if (t.status === "succeeded") fill(aiStatus, notice("Done: the edited image is in your gallery.", "ok"), h("a", { href: "#/gallery" }, "Open the gallery"));
          else if (FINISHED.has(t.status)) fill(aiStatus, notice(`Edit ${t.status}: ${t.error?.message ?? t.error ?? ""}`));
        });
      } catch (err) { fill(aiStatus, notice(errorText(err))); }
    });

    // Sketch form: styles as radio cards with their previews, method as a select.
    const sketchForm = h("form.sketch-form",
      h("fieldset.styles", h("legend", "Style"),
        styles.styles.map((s, i) => h("label.style",
          h("input", { type: "radio", name: "style", value: s.id, checked: i === 0 }),
          s.preview_url ? h("img", { src: s.preview_url, alt: "", loading: "lazy" }) : null,
          h("span", h("strong", s.name), h("small.muted", s.description))))),
      h("div.inline",
        h("label", { for: "method" }, "Method"),
        h("select#method", { name: "method" }, styles.methods.map((m) => h("option", { value: m.id, title: m.description }, m.name))),
        h("button.primary#start-sketch", { type: "submit", disabled: image.status === "failed" }, "Make sketch")));
    const sketchStatus = h("div.status");
    const result = h("div.result");
    sketchForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(sketchForm));
      try {
        const { sketch, task } = await api("/api/sketch/create", {
          method: "POST", body: { image_id: id, style: data.style, method: data.method },
        });
        showProgress(sketch, task);
      } catch (err) { fill(sketchStatus, notice(errorText(err))); }
    });

    function showProgress(sketch, task) {
      const bar = h("progress#sketch-progress", { max: 100, value: task.progress ?? 0, "aria-label": "Sketch progress" });
      const label = h("span.small#sketch-state", task.status);
      fill(sketchStatus, h("div.progress-row", { "data-status": task.status }, h("span", `${sketch.style} · ${sketch.method}`), bar, label));
      follow(task, async (t) => {
        bar.value = Math.max(bar.value, t.progress ?? 0); // progress never goes back
        fill(label, t.status === "running" ? `${t.progress}%` : t.status);
        bar.closest(".progress-row").dataset.status = t.status;
        if (t.status === "succeeded") {
          showResult(await api(`/api/sketch/${sketch.id}`));
          announce("Sketch ready.");
        } else if (FINISHED.has(t.status)) fill(label, `${t.status}: ${t.error?.message ?? t.error ?? ""}`);
      });
    }

    function showResult(sketch) {
      const after = h("img.after", { src: sketch.result_url, alt: `${sketch.style} sketch of ${altText(image)}` });
      const slider = h("input#compare", { type: "range", min: 0, max: 100, value: 50 });
      const box = h("div.compare", { style: `aspect-ratio: ${sketch.width} / ${sketch.height}` },
        before ? h("img.before", { src: before, alt: altText(image) }) : null, after,
        h("span.tag.left", "Before"), h("span.tag.right", "After"));
      const update = () => { after.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
      slider.addEventListener("input", update);
      update();
      fill(result,
        h("h2", "Before / after"), box,
        h("label.inline", { for: "compare" }, "Compare ", slider),
        h("p", h("a.button.primary#download", { href: sketch.result_url, download: `${image.original_name}-${sketch.style}.${sketch.params?.format ?? "png"}` }, "Download sketch"),
          h("span.muted", ` ${sketch.width} × ${sketch.height}, ${sketch.processing_time_ms} ms`)));
    }

    // Earlier sketches of this image.
    const mine = sketches.items.filter((s) => s.image_id === id);
    const history = mine.length ? h("section", h("h2", "Earlier sketches"), h("ul.history", mine.map((s) =>
      h("li", badge(s.status), ` ${s.style} · ${s.method} · ${formatDate(s.created_at)} `,
        s.status === "ready" ? h("button.link", { type: "button", onclick: () => showResult(s) }, "Show") : null)))) : null;

    fill(main,
      h("p", h("a", { href: "#/gallery" }, "← Gallery")),
      header,
      h("section.card", h("h2", "Caption and edit"), h("div.inline", captionButton), editForm, aiStatus),
      h("section.card", h("h2", "Make a sketch"), sketchForm, sketchStatus, result),
      history);
  })();

  // Call `callback(task)` now and on every update of that task until it finishes.
  function follow(task, callback) {
    view.tasks.set(task.id, callback);
    const latest = realtime.tasks.get(task.id);
    const current = latest && latest.progress >= (task.progress ?? 0) ? latest : task;
    callback(current);
    if (FINISHED.has(current.status)) view.tasks.delete(task.id);
  }
  view.onTask = (task) => {
    const callback = view.tasks.get(task.id);
    if (!callback) return;
    if (FINISHED.has(task.status)) view.tasks.delete(task.id);
    callback(task);
  };
  // After a reconnect, ask for the tasks we follow: one may have finished while we were away.
  view.onSnapshot = async () => {
    for (const taskId of [...view.tasks.keys()]) {
      try { view.onTask(await api(`/api/tasks/${taskId}`)); } catch { /* gone */ }
    }
  };
  return view;
}

// ---------------------------------------------------------------- batches

function batchesView() {
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

// ---------------------------------------------------------------- API keys

function keysView() {
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

boot();
