// One image: its details, download, share link and delete; caption and AI edit with what the
// provider can do shown up front; the sketch form with its options and live progress; the
// before/after comparison; and the image's earlier sketches as thumbnails.

import { api } from "../api.js";
import { announce, fill, formatDate, h, timeAgo } from "../dom.js";
import {
  altText, badge, confirmDialog, details, downloadName, errorText, FINISHED, main, notice, realtime,
  responsive, state, toast,
} from "../ui.js";

const HISTORY_PAGE = 24;
const SKETCH_SIDES = [1024, 2048, 4096, 8192];
const LINK_WIDTHS = [200, 400, 800, 1200, 1600, 2400];
const LINK_FORMATS = [
  ["auto", "Automatic (AVIF, WebP or JPEG)"], ["jpeg", "JPEG"], ["webp", "WebP"], ["png", "PNG"], ["avif", "AVIF"],
];
const SKETCH_FORMATS = [["", "Automatic"], ["png", "PNG"], ["jpeg", "JPEG"], ["webp", "WebP"]];

const AI_FAILURES = {
  "ai.rate_limited": "could not be made: the AI service is busy. Try again in a minute.",
  "ai.quota_exceeded": "could not be made: you have used your AI requests for now. Try again later.",
  "ai.timeout": "took too long. Please try again.",
  "task.timeout": "took too long. Please try again.",
  "ai.blocked": "was declined by the AI service for this picture or prompt.",
  "ai.original_missing": "could not be made: the original file of this image is missing.",
  "ai.original_changed": "could not be made: the original file of this image has changed.",
};

async function stylesAvailable() {
  state.styles ??= await api("/api/sketch/styles/available");
  return state.styles;
}

// The fixed edit vocabulary reads "grayscale (or black and white)", "pencil (sketch or painting)":
// a suggestion is the words a person would type, which the provider understands as they are.
function suggestion(entry) {
  const [words, aside = ""] = entry.split(/\s*\(/);
  return /sketch/.test(aside) ? `${words} sketch` : words;
}

export function imageView(id) {
  const view = { tasks: new Map() }; // task id → callback for tasks started on this page
  const admin = state.user?.role === "admin";
  fill(main, h("p.muted", "Loading…"));
  (async () => {
    let image, styles, sketches, providers;
    try {
      [image, styles, sketches, providers] = await Promise.all([
        api(`/api/images/${id}`), stylesAvailable(),
        api(`/api/sketch/?image_id=${encodeURIComponent(id)}&limit=${HISTORY_PAGE}`),
        api("/api/ai/providers").catch(() => ({ providers: [] })),
      ]);
    } catch (err) {
      fill(main, h("p", h("a", { href: "#/gallery" }, "← Gallery")), notice(errorText(err)));
      return;
    }
    let before = image.thumbnails?.medium;
    const longSide = Math.max(image.width ?? 0, image.height ?? 0);

    // --- header: picture, facts, download, share link, delete ------------------------------
    const header = h("div.image-head");
    const renderHeader = () => fill(header,
      before ? h("img.hero", { ...responsive(image, before, "(max-width: 640px) 100vw, 540px"), alt: altText(image) }) : h("div.hero.placeholder", "No preview yet"),
      h("div",
        h("div.row", h("h1.name", { title: image.original_name }, image.original_name), badge(image.status)),
        image.caption ? h("p.caption", image.caption, h("span.muted", ` — ${image.caption_model}`)) : h("p.muted", "No caption yet."),
        details(image, { full: true }),
        h("div.actions",
          image.status === "failed" ? null
            : h("a.button#download-original", { href: `/api/images/${image.id}/download`, download: image.original_name }, "Download original"),
          h("button.danger#delete-image", { type: "button", onclick: deleteImage }, "Delete image")),
        image.status === "failed" ? null : shareBox()));
    renderHeader();
    // An image opened while its thumbnails (or automatic caption) are still being made: show
    // them when they are done, without a reload.
    view.onImageTask = async (t) => {
      if (t.image_id !== id || view.tasks.has(t.id)) return;
      if (t.kind === "sketch" && t.sketch_id) {
        // A sketch of this image made elsewhere (another tab, the API): listed when it starts,
        // its thumbnail shown when it finishes.
        const listed = history.querySelector(`li[data-id="${t.sketch_id}"]`);
        if (listed ? listed.dataset.status !== "processing" || !FINISHED.has(t.status) : FINISHED.has(t.status) && t.status !== "succeeded") return;
        try { addToHistory(await api(`/api/sketch/${t.sketch_id}`), !listed); } catch { /* deleted */ }
        return;
      }
      if (t.status !== "succeeded") return;
      if (!["thumbnails", "caption"].includes(t.kind)) return;
      if (t.kind === "thumbnails" && image.status !== "processing") return;
      try { image = await api(`/api/images/${id}`); } catch { return; }
      before = image.thumbnails?.medium;
      renderHeader();
    };

    async function deleteImage() {
      const count = history.querySelectorAll("li").length;
      const also = count ? ` Its ${count === 1 ? "sketch" : `${count} sketches`} will be deleted too.` : "";
      const ok = await confirmDialog({
        title: "Delete this image?",
        body: `“${image.original_name}” will be deleted.${also} This cannot be undone.`,
        confirm: "Delete image",
      });
      if (!ok) return;
      try {
        await api(`/api/images/${id}`, { method: "DELETE" });
      } catch (err) {
        header.append(notice(errorText(err))); // the page stays; it says why
        return;
      }
      toast(`Deleted “${image.original_name}”.`);
      location.hash = "#/gallery";
    }

    // A signed delivery URL of a chosen size and format, copied to the clipboard.
    function shareBox() {
      const widths = LINK_WIDTHS.filter((w) => !image.width || w < image.width);
      const width = h("select#link-width", { name: "width" },
        widths.map((w) => h("option", { value: w, selected: w === Math.max(...widths.filter((x) => x <= 800)) }, `${w} px wide`)),
        h("option", { value: "" }, image.width ? `Full size (${image.width} px)` : "Full size"));
      const format = h("select#link-format", { name: "format" }, LINK_FORMATS.map(([value, label]) => h("option", { value }, label)));
      const url = h("input#link-url", { type: "url", readonly: true, "aria-label": "Link", placeholder: "The link appears here" });
      const status = h("p.small.link-status", { role: "status" });
      const form = h("form.share",
        h("h2", "Share a link"),
        h("p.hint", "Anyone with the link can see this picture; it needs no sign-in."),
        h("div.fields",
          h("div", h("label", { for: "link-width" }, "Width"), width),
          h("div", h("label", { for: "link-format" }, "File type"), format)),
        h("div.inline", url, h("button#copy-link", { type: "submit" }, "Copy link")),
        status);
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const body = { image_id: id, format: format.value };
        if (width.value) body.width = Number(width.value);
        let minted;
        try {
          minted = await api("/api/delivery/url", { method: "POST", body });
        } catch (err) { fill(status, notice(errorText(err))); return; }
        url.value = minted.url;
        let copied = false;
        try {
          await navigator.clipboard.writeText(minted.url);
          copied = true;
        } catch {
          // No clipboard permission (or an insecure origin): select it for Ctrl+C instead.
          url.focus();
          url.select();
          try { copied = document.execCommand("copy"); } catch { copied = false; }
        }
        const text = copied ? "Link copied." : "The link is selected: press Ctrl+C (⌘C) to copy it.";
        fill(status, text);
        announce(text);
      });
      return form;
    }

    // --- caption and edit: what the provider can do, before trying -------------------------
    const list = providers.providers ?? [];
    const current = list.find((p) => p.default && p.configured) ?? list.find((p) => p.configured);
    const canCaption = current?.capabilities.caption ?? false;
    const canEdit = current?.capabilities.edit ?? false;
    const edits = (current?.edits ?? []).map(suggestion);
    const aiStatus = h("div.status"); // its notices carry role=alert / role=status themselves
    const captionButton = h("button#caption", { type: "button", disabled: !canCaption || image.status === "failed" }, "Write a caption");
    captionButton.addEventListener("click", async () => {
      fill(aiStatus, h("p.muted", "Captioning…"));
      try {
        const task = await api("/api/ai/caption", { method: "POST", body: { image_id: id } });
        follow(task, async (t) => {
          if (t.status === "succeeded") {
            image = await api(`/api/images/${id}`);
            renderHeader();
            fill(aiStatus, notice("Caption saved.", "ok"));
          } else if (FINISHED.has(t.status)) fill(aiStatus, aiFailure("The caption", t));
        });
      } catch (err) { fill(aiStatus, notice(errorText(err))); }
    });
    const prompt = h("input#prompt", {
      name: "prompt", required: true, autocomplete: "off", list: edits.length ? "edit-suggestions" : null,
      placeholder: edits.length ? `e.g. ${edits[0]}` : "e.g. make it black and white", "aria-describedby": "edit-help",
    });
    const chips = (words) => h("ul.chips", { "aria-label": "Suggested edits" }, words.map((w) =>
      h("li", h("button.chip", { type: "button", onclick: () => { prompt.value = w; prompt.focus(); } }, w))));
    const editForm = h("form.inline#edit-form",
      h("label", { for: "prompt" }, "Edit with a prompt"), prompt,
      edits.length ? h("datalist#edit-suggestions", edits.map((w) => h("option", { value: w }))) : null,
      h("button", { type: "submit", disabled: !canEdit || image.status === "failed" }, "Edit"));
    editForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      fill(aiStatus, h("p.muted", "Editing…"));
      editHelp.hidden = false;
      try {
        const task = await api("/api/ai/edit", { method: "POST", body: { image_id: id, prompt: prompt.value } });
        follow(task, (t) => {
          if (t.status === "succeeded") {
            const made = t.result?.image_id;
            fill(aiStatus, notice("Done: the edited image is in your gallery.", "ok"),
              made ? h("a", { href: `#/image/${made}` }, "Open the edited image") : h("a", { href: "#/gallery" }, "Open the gallery"));
          } else if (FINISHED.has(t.status)) fill(aiStatus, aiFailure("The edit", t));
        });
      } catch (err) {
        const refused = refusal(err);
        // The refusal carries the suggestions itself: one list on screen, next to the reason.
        editHelp.hidden = refused.classList.contains("refusal") && Boolean(err.problem?.edits?.length);
        fill(aiStatus, refused);
      }
    });

    // A failed AI task in words for the person who asked; the provider's own message (which
    // may name server settings) only for admins.
    function aiFailure(what, t) {
      if (t.status === "canceled") return notice(`${what} was canceled.`, "info");
      const said = AI_FAILURES[t.error_code] ?? "could not be made just now; please try again later.";
      return h("div", notice(`${what} ${said}`), admin && t.error ? h("p.hint.operator", h("strong", "Admin: "), t.error) : null);
    }

    // An edit the provider cannot make: a short sentence, the edits it can make as one-click
    // suggestions, and (for admins only) the server setting that would add a provider.
    function refusal(err) {
      const problem = err?.problem ?? {};
      if (err?.code !== "ai.unsupported_edit") return notice(errorText(err));
      const first = (problem.detail ?? "").split(/(?<=\.)\s+Try\b/)[0] || "This edit isn't available here.";
      const names = (problem.alternatives ?? []).map((alt) => list.find((p) => p.id === alt)?.name ?? alt);
      const alternatives = names.length ? ` ${names.join(" or ")} could make it.` : "";
      return h("div.refusal",
        notice(`${first}${alternatives}`),
        problem.edits?.length ? [h("p.small", "Try one of these:"), chips(problem.edits.map(suggestion))] : null,
        admin && problem.hint ? h("p.hint.operator", h("strong", "Admin: "), problem.hint) : null);
    }

    const editHelp = h("div#edit-help", edits.length ? [h("p.small.muted", "Edits this provider can make:"), chips(edits)] : null);
    const providerLine = current
      ? h("p.muted#ai-provider",
        `${canCaption && canEdit ? "Captions and edits" : canCaption ? "Captions" : "Edits"} by ${current.name}`,
        ".")
      : h("p.muted#ai-provider", "No AI provider is configured.");
    const operatorHints = admin ? list.filter((p) => p.hint) : [];
    const aiSection = h("section.card.ai",
      h("h2", "Caption and edit"),
      providerLine,
      h("div.inline", captionButton),
      editForm,
      editHelp,
      aiStatus,
      operatorHints.length ? h("details.operator", h("summary", "Other providers (admin)"),
        h("ul", operatorHints.map((p) => h("li", h("strong", p.name), ` — ${p.hint}`)))) : null);

    // --- the sketch form: style cards, then method and output options ------------------------
    const sides = SKETCH_SIDES.filter((s) => !longSide || s < longSide);
    const fullSide = longSide ? Math.min(longSide, 8192) : 2048;
    const defaultSide = sides.includes(2048) ? 2048 : fullSide;
    const intensity = h("input#intensity", { type: "range", name: "intensity", min: 0, max: 1, step: 0.05, value: 0.5, "aria-describedby": "intensity-value" });
    const intensityValue = h("output#intensity-value", { for: "intensity" }, "50%");
    intensity.addEventListener("input", () => fill(intensityValue, `${Math.round(intensity.value * 100)}%`));
    const sketchForm = h("form.sketch-form",
      h("fieldset.styles", h("legend", "Style"),
        styles.styles.map((s, i) => h("label.style",
          h("input", { type: "radio", name: "style", value: s.id, checked: i === 0 }),
          s.preview_url ? h("img", { src: s.preview_url, alt: "", loading: "lazy" }) : null,
          h("span", h("strong", s.name), h("small.muted", s.description))))),
      h("div.options",
        h("div", h("label", { for: "method" }, "Method"),
          h("select#method", { name: "method" }, styles.methods.map((m) => h("option", { value: m.id, title: m.description }, m.name)))),
        h("div", h("label", { for: "intensity" }, "Intensity ", intensityValue), intensity,
          h("p.hint", "Lighter ↔ stronger lines and colour")),
        h("div", h("label", { for: "format" }, "Format"),
          h("select#format", { name: "format", "aria-describedby": "format-help" }, SKETCH_FORMATS.map(([value, label]) => h("option", { value }, label))),
          h("p.hint#format-help", "Automatic: PNG for gray styles, JPEG for colour")),
        h("div", h("label", { for: "max-side" }, "Size"),
          h("select#max-side", { name: "max_side" },
            sides.map((s) => h("option", { value: s, selected: s === defaultSide }, `Up to ${s} px`)),
            h("option", { value: fullSide, selected: fullSide === defaultSide }, longSide ? `Full size (${longSide} px)` : `Up to ${fullSide} px`)))),
      h("button.primary#start-sketch", { type: "submit", disabled: image.status === "failed" }, "Make sketch"));
    const sketchStatus = h("div.status");
    const result = h("div.result");
    const outcome = h("div.outcome", sketchStatus, result); // progress, then the result, in one place
    sketchForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = new FormData(sketchForm);
      const params = { intensity: Number(data.get("intensity")), max_side: Number(data.get("max_side")) };
      if (data.get("format")) params.format = data.get("format");
      try {
        const { sketch, task } = await api("/api/sketch/create", {
          method: "POST", body: { image_id: id, style: data.get("style"), method: data.get("method"), params },
        });
        fill(result); // the old result goes: the new sketch's progress takes its place
        delete result.dataset.sketch;
        addToHistory(sketch, true);
        showProgress(sketch, task);
      } catch (err) { fill(sketchStatus, notice(errorText(err))); }
    });

    function showProgress(sketch, task) {
      const bar = h("progress#sketch-progress", { max: 100, value: task.progress ?? 0, "aria-label": "Sketch progress" });
      const label = h("span.small#sketch-state", task.status);
      fill(sketchStatus, h("div.progress-row", { "data-status": task.status }, h("span", `${sketch.style} · ${sketch.method}`), bar, label));
      outcome.scrollIntoView({ block: "nearest", behavior: "smooth" });
      announce(`Making a ${sketch.style} sketch…`);
      follow(task, async (t) => {
        bar.value = Math.max(bar.value, t.progress ?? 0); // progress never goes back
        fill(label, t.status === "running" ? `${t.progress}%` : t.status);
        bar.closest(".progress-row").dataset.status = t.status;
        if (t.status === "succeeded") {
          const done = await api(`/api/sketch/${sketch.id}`);
          showResult(done, { focus: true, fromProgress: true });
          addToHistory(done, false);
          announce("Sketch ready.");
        } else if (FINISHED.has(t.status)) {
          fill(label, `${t.status}: ${t.error?.message ?? t.error ?? ""}`);
          addToHistory({ ...sketch, status: t.status === "canceled" ? "canceled" : "failed" }, false);
        }
      });
    }

    function showResult(sketch, { focus = false, fromProgress = false } = {}) {
      const after = h("img.after", { src: sketch.result_url, alt: `${sketch.style} sketch of ${altText(image)}` });
      const slider = h("input#compare", { type: "range", min: 0, max: 100, value: 50 });
      const box = h("div.compare", { style: `aspect-ratio: ${sketch.width} / ${sketch.height}` },
        before ? h("img.before", { ...responsive(image, before, "(max-width: 760px) 100vw, 720px"), alt: altText(image) }) : null, after,
        h("span.tag.left", "Before"), h("span.tag.right", "After"));
      const update = () => { after.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
      slider.addEventListener("input", update);
      update();
      const format = sketch.params?.format ?? "png";
      const heading = h("h2#result-heading", { tabindex: -1 }, "Before / after");
      result.dataset.sketch = sketch.id;
      fill(result,
        heading,
        h("p.small.muted", `${sketch.style} · ${sketch.method} · intensity ${Math.round((sketch.params?.intensity ?? 0.5) * 100)}% · `, timeAgo(sketch.created_at)),
        box,
        h("label.inline", { for: "compare" }, "Compare ", slider),
        h("p.inline",
          h("a.button.primary#download", { href: sketch.result_url, download: downloadName(image.original_name, sketch.style, format) }, "Download sketch"),
          h("span.muted", ` ${sketch.width} × ${sketch.height} ${format.toUpperCase()}`,
            sketch.processing_time_ms != null ? `, made in ${(sketch.processing_time_ms / 1000).toFixed(1)} s` : "")));
      if (!fromProgress) fill(sketchStatus); // an earlier sketch: the last progress row is stale
      for (const li of history.querySelectorAll("li")) li.toggleAttribute("aria-current", li.dataset.id === sketch.id);
      result.scrollIntoView({ block: "nearest", behavior: "smooth" });
      if (focus) heading.focus({ preventScroll: true });
    }

    // --- earlier sketches: thumbnails, newest first, each shown or deleted in place --------
    const history = h("ul.history#history");
    const more = h("button#more-sketches", { type: "button", hidden: !sketches.next_cursor }, "Show older sketches");
    let cursor = sketches.next_cursor;
    more.addEventListener("click", async () => {
      try {
        const page = await api(`/api/sketch/?image_id=${encodeURIComponent(id)}&limit=${HISTORY_PAGE}&cursor=${encodeURIComponent(cursor)}`);
        page.items.forEach((s) => addToHistory(s, false));
        cursor = page.next_cursor;
        more.hidden = !cursor;
      } catch (err) { more.after(notice(errorText(err))); }
    });
    const emptyHistory = h("p.muted#no-sketches", "No sketches of this image yet.");
    const historySection = h("section.card",
      h("h2", "Earlier sketches"), emptyHistory, history, more);

    function historyItem(s) {
      const when = timeAgo(s.created_at);
      const label = `${s.style} sketch (${s.method}, ${formatDate(s.created_at)})`;
      const thumbSrc = s.delivery?.small ?? s.result_url;
      const picture = s.status === "ready" && thumbSrc
        ? h("button.thumb-button", { type: "button", "aria-label": `Show the ${label}`, onclick: () => showResult(s, { focus: true }) },
          h("img", { src: thumbSrc, alt: "", loading: "lazy", decoding: "async", width: 200, height: s.width && s.height ? Math.round(200 * s.height / s.width) : 150 }))
        : h("div.thumb-placeholder", badge(s.status));
      const remove = h("button.link.danger", { type: "button", "aria-label": `Delete the ${label}` }, "Delete");
      const li = h("li", { "data-id": s.id, "data-status": s.status },
        picture,
        h("div.about", h("strong", s.style), h("span.muted", ` · ${s.method}`), h("br"), h("span.small.muted", when)),
        remove);
      remove.addEventListener("click", async () => {
        const ok = await confirmDialog({ title: "Delete this sketch?", body: `The ${label} will be deleted. This cannot be undone.`, confirm: "Delete sketch" });
        if (!ok) return;
        try {
          await api(`/api/sketch/${s.id}`, { method: "DELETE" });
        } catch (err) { li.append(notice(errorText(err))); return; }
        const next = li.nextElementSibling ?? li.previousElementSibling;
        li.remove();
        if (result.dataset.sketch === s.id) { fill(result); delete result.dataset.sketch; }
        syncEmpty();
        (next?.querySelector("button") ?? historySection.querySelector("h2")).focus?.();
        announce("Sketch deleted.");
      });
      return li;
    }

    function addToHistory(s, first) {
      const item = historyItem(s);
      const existing = history.querySelector(`li[data-id="${s.id}"]`);
      if (existing) existing.replaceWith(item);
      else if (first) history.prepend(item);
      else history.append(item);
      item.toggleAttribute("aria-current", result.dataset.sketch === s.id);
      syncEmpty();
    }
    function syncEmpty() { emptyHistory.hidden = history.children.length > 0; }
    sketches.items.forEach((s) => addToHistory(s, false));
    syncEmpty();
    // Rows still being made get their thumbnail from the task's event; a slow poll covers an
    // event that went by before this page listened (it finished while the list was loading).
    const watchdog = setInterval(async () => {
      if (!main.contains(history)) return clearInterval(watchdog);
      for (const li of history.querySelectorAll('li:not([data-status="ready"]):not([data-status="failed"])')) {
        try {
          const s = await api(`/api/sketch/${li.dataset.id}`);
          if (s.status !== li.dataset.status) addToHistory(s, false);
        } catch { /* deleted meanwhile */ }
      }
    }, 4000);

    fill(main,
      h("p", h("a", { href: "#/gallery" }, "← Gallery")),
      header,
      aiSection,
      h("section.card", h("h2", "Make a sketch"), sketchForm, outcome),
      historySection);
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
    view.onImageTask?.(task);
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
