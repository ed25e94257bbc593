// One image: its details, caption and AI edit, the sketch form with live progress, the
// before/after comparison and earlier sketches.

import { api } from "../api.js";
import { announce, fill, formatDate, h } from "../dom.js";
import { altText, badge, details, errorText, FINISHED, main, notice, realtime, responsive, state } from "../ui.js";

async function stylesAvailable() {
  state.styles ??= await api("/api/sketch/styles/available");
  return state.styles;
}

export function imageView(id) {
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

