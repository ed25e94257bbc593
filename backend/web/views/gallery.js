// The gallery: the drop zone with its upload queue, search and filters, and the grid of the
// user's images, paged by infinite scroll (with a "Load more" button as the fallback), with
// single and bulk delete behind one confirmation dialog. Filters live in the hash
// (#/gallery?q=…&status=…) so a reload keeps them.

import { ApiError, api } from "../api.js";
import { announce, fill, h } from "../dom.js";
import { altText, badge, details, errorText, FINISHED, main, notice, realtime, responsive, state } from "../ui.js";
import { humanize, uploadQueue } from "./upload.js";

const PAGE_SIZE = 40;
const DELETE_CONCURRENCY = 4;
const FILTERS = ["q", "status", "source", "from", "to"];
const ACCEPT = "image/jpeg,image/png,image/webp,image/gif";

function readFilters() {
  const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
  return Object.fromEntries(FILTERS.map((key) => [key, params.get(key) ?? ""]));
}

function writeFilters(filters) {
  const params = new URLSearchParams();
  for (const key of FILTERS) if (filters[key]) params.set(key, filters[key]);
  const hash = params.size ? `#/gallery?${params}` : location.hash.split("?")[0] || "#/gallery";
  // replaceState, not location.hash: a hashchange would re-render the view (and the queue).
  if (hash !== location.hash) history.replaceState(history.state, "", hash);
}

/** The API query for the filters; dates are whole local days, `to` included. */
function listQuery(filters, cursor) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (filters.q.trim()) params.set("q", filters.q.trim());
  if (filters.status) params.set("status", filters.status);
  if (filters.source) params.set("source", filters.source);
  const day = (value, plus = 0) => {
    const date = new Date(`${value}T00:00`);
    date.setDate(date.getDate() + plus);
    return Number.isNaN(date.getTime()) ? null : date.toISOString();
  };
  if (filters.from && day(filters.from)) params.set("created_after", day(filters.from));
  if (filters.to && day(filters.to, 1)) params.set("created_before", day(filters.to, 1));
  if (cursor) params.set("cursor", cursor);
  return `/api/images?${params}`;
}

const filtered = (filters) => FILTERS.some((key) => filters[key].trim());

function imageCard(image, selected) {
  const name = image.original_name;
  const thumb = image.thumbnails
    ? h("img.thumb", { ...responsive(image, image.thumbnails.small, "(max-width: 600px) 50vw, 260px"), alt: altText(image), loading: "lazy" })
    : h("div.thumb.placeholder", { "aria-hidden": "true" }, image.status === "failed" ? "!" : "…");
  return h("li.card.image", { "data-id": image.id, "data-status": image.status, "data-created": image.created_at },
    h("a.cover", { href: `#/image/${image.id}`, "aria-label": `Open ${name}` }, thumb),
    h("label.pick", { title: "Select" },
      h("input", { type: "checkbox", checked: selected, "data-select": image.id }),
      h("span.sr-only", `Select ${name}`)),
    h("div.body",
      h("div.row", h("strong.name", { title: name }, name), badge(image.status)),
      image.error ? h("p.small.error-text", humanize(image.error)) : null,
      image.caption ? h("p.caption", image.caption) : null,
      details(image),
      h("div.card-actions",
        h("button.link.danger", { type: "button", "data-delete": image.id, "aria-label": `Delete ${name}` }, "Delete"))));
}

/** One modal confirmation, reused: resolves true on "Delete", false on Cancel or Escape. */
function confirmDialog() {
  const title = h("h2#confirm-title");
  const text = h("p#confirm-text");
  const cancel = h("button", { type: "submit", value: "cancel" }, "Cancel");
  const ok = h("button.danger-solid", { type: "submit", value: "confirm" }, "Delete");
  const dialog = h("dialog.confirm", { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text" },
    h("form", { method: "dialog" }, title, text, h("div.actions", cancel, ok)));
  const ask = (heading, body, label) => new Promise((resolve) => {
    fill(title, heading);
    fill(text, body);
    fill(ok, label);
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    cancel.focus(); // the safe choice first
  });
  return { dialog, ask };
}

export function galleryView() {
  const filters = readFilters();
  const selected = new Set();
  let total = 0;
  let cursor = null;
  let loading = false;
  let deleting = false; // no paging meanwhile: a page fetched mid-delete would hold stale rows
  let generation = 0; // bumps on every reload, so a late page of old filters is dropped
  // Bumps on every local add or delete: a list answer that was in flight meanwhile carries a
  // total from before it, so it is taken only as a floor and asked again once things settle.
  let changes = 0;
  let watchdog = null;

  // --- upload: a real button opens the picker; the drop area is a plain region -------------
  const input = h("input#file-input", { type: "file", multiple: true, accept: ACCEPT, hidden: true, tabindex: "-1" });
  const choose = h("button.primary#choose-files", { type: "button", "aria-describedby": "drop-hint" }, "Choose files");
  const zone = h("div.dropzone",
    h("p", h("strong", "Drop photos here"), " or ", choose),
    h("p.muted.small#drop-hint", "JPEG, PNG, WebP or GIF. Many at once is fine: they go up a few at a time."),
    input);

  // --- search, filters and the grid ------------------------------------------------------
  const field = (label, control) => h("div.field", h("label", { for: control.id }, label), control);
  const search = h("input#gallery-q", { type: "search", value: filters.q, placeholder: "Part of a file name", autocomplete: "off" });
  const option = (value, label, current) => h("option", { value, selected: value === current }, label);
  const status = h("select#gallery-status",
    ["", "ready", "processing", "failed"].map((v, i) => option(v, ["Any", "Ready", "Processing", "Failed"][i], filters.status)));
  const source = h("select#gallery-source",
    ["", "upload", "edit", "batch"].map((v, i) => option(v, ["Any", "Upload", "AI edit", "Batch import"][i], filters.source)));
  const from = h("input#gallery-from", { type: "date", value: filters.from });
  const to = h("input#gallery-to", { type: "date", value: filters.to });
  const clear = h("button", { type: "reset" }, "Clear");
  const form = h("form.filters", { role: "search", "aria-label": "Search and filter images" },
    field("Search", search), field("Status", status), field("Source", source),
    field("From", from), field("To", to), h("div.field.end", clear));

  const count = h("p.count#gallery-count", { tabindex: "-1", "aria-live": "polite" }, "Loading…");
  const selectAll = h("input#select-all", { type: "checkbox" });
  const deleteSelected = h("button.danger#delete-selected", { type: "button", disabled: true }, "Delete selected (0)");
  const toolbar = h("div.toolbar", count,
    h("div.inline", h("label.check", { for: "select-all" }, selectAll, " Select all visible"), deleteSelected));
  const message = h("div.gallery-message");
  const grid = h("ul.grid#gallery", { "aria-label": "Your images" });
  const empty = h("p.muted.empty", { hidden: true });
  const loadMore = h("button#load-more", { type: "button", hidden: true }, "Load more");
  const more = h("div.more", loadMore);
  const { dialog, ask } = confirmDialog();

  const cards = () => [...grid.children];
  const card = (id) => grid.querySelector(`[data-id="${CSS.escape(id)}"]`);

  function showCount() {
    const shown = grid.children.length;
    fill(count, total || shown ? `Showing ${shown} of ${total}` : "");
    empty.hidden = shown > 0 || loading;
    fill(empty, filtered(filters) ? "No images match these filters." : "No images yet — upload some to begin.");
    loadMore.hidden = !cursor;
    const visible = cards().map((c) => c.dataset.id);
    const picked = visible.filter((id) => selected.has(id)).length;
    selectAll.checked = visible.length > 0 && picked === visible.length;
    selectAll.indeterminate = picked > 0 && picked < visible.length;
    selectAll.disabled = visible.length === 0;
    deleteSelected.disabled = selected.size === 0;
    fill(deleteSelected, `Delete selected (${selected.size})`);
  }

  // Where a card goes in the newest-first order (created_at, then id, as the API sorts).
  // Times compare as instants (ISO strings with and without fractions do not sort as text).
  const before = (a, b) => {
    const [x, y] = [Date.parse(a.created_at), Date.parse(b.created)];
    if (x !== y) return x > y;
    return a.created_at === b.created ? a.id > b.id : a.created_at > b.created;
  };
  const place = (fresh, image) => {
    const next = cards().find((c) => before(image, c.dataset));
    if (next) next.before(fresh);
    else if (!cursor) grid.append(fresh);
    else return false; // it belongs to a page not loaded yet
    return true;
  };

  const upsert = (image, { prepend = true } = {}) => {
    const fresh = imageCard(image, selected.has(image.id));
    const old = card(image.id);
    if (old) {
      // Keep focus where it was when a live update redraws the card.
      const focused = old.contains(document.activeElement) ? document.activeElement.dataset : null;
      old.replaceWith(fresh);
      if (focused?.delete) fresh.querySelector("[data-delete]").focus();
      else if (focused?.select) fresh.querySelector("[data-select]").focus();
      return false;
    }
    if (!prepend) {
      grid.append(fresh);
      return true;
    }
    return place(fresh, image);
  };

  async function loadPage(reset) {
    if ((loading || deleting) && !reset) return;
    const mine = reset ? ++generation : generation;
    const before = changes;
    loading = true;
    loadMore.disabled = true;
    try {
      const page = await api(listQuery(filters, reset ? null : cursor));
      if (mine !== generation) return;
      if (reset) {
        grid.replaceChildren();
        fill(message);
      }
      for (const image of page.items) upsert(image, { prepend: false });
      cursor = page.next_cursor;
      settleTotal(page.total, before);
    } catch (err) {
      if (mine !== generation) return;
      if (reset) grid.replaceChildren();
      cursor = null;
      fill(message, notice(errorText(err)));
    } finally {
      if (mine === generation) {
        loading = false;
        loadMore.disabled = false;
        showCount();
        rearm();
      }
    }
  }

  // The sentinel may still be in view after a short page or a delete: ask the observer again.
  const rearm = () => {
    observer.unobserve(more);
    if (cursor) observer.observe(more);
  };
  const observer = new IntersectionObserver((entries) => {
    if (!main.contains(grid)) return observer.disconnect();
    if (entries.some((e) => e.isIntersecting) && cursor && !loading) loadPage(false);
  }, { rootMargin: "600px 0px" });
  loadMore.addEventListener("click", () => loadPage(false));

  // After a reconnect or an upload whose answer was lost: merge the newest page in place.
  async function refreshTop() {
    const before = changes;
    try {
      const page = await api(listQuery(filters, null));
      for (const image of page.items) upsert(image);
      settleTotal(page.total, before);
      showCount();
    } catch { /* the next snapshot or reload will do */ }
  }

  let recount = null;
  function settleTotal(counted, before) {
    if (changes === before) {
      total = counted;
      return;
    }
    // Never fewer than the cards on screen (they all exist), and a fresh count shortly.
    total = Math.max(counted, total, grid.children.length);
    clearTimeout(recount);
    recount = setTimeout(() => { if (main.contains(grid)) refreshTop(); }, 500);
  }

  const refreshImage = async (id) => {
    try { upsert(await api(`/api/images/${id}`)); } catch { /* deleted meanwhile */ }
  };

  function reload() {
    for (const [key, control] of [["q", search], ["status", status], ["source", source], ["from", from], ["to", to]]) {
      filters[key] = control.value;
    }
    writeFilters(filters);
    selected.clear();
    cursor = null;
    loadPage(true);
  }
  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 300); });
  for (const control of [status, source, from, to]) control.addEventListener("change", reload);
  form.addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(typing); reload(); });
  form.addEventListener("reset", (e) => {
    // A native reset would restore the values the page was loaded with (from the URL).
    e.preventDefault();
    clearTimeout(typing);
    for (const control of [search, status, source, from, to]) control.value = "";
    reload();
    search.focus();
  });

  // --- delete ----------------------------------------------------------------------------
  function removed(id) {
    const gone = card(id);
    if (gone) {
      gone.remove();
      changes++;
      total = Math.max(0, total - 1);
    }
    selected.delete(id);
  }

  async function deleteOne(id, name, button) {
    const next = card(id)?.nextElementSibling ?? card(id)?.previousElementSibling;
    if (!await ask(`Delete “${name}”?`, "The image, its sketches and derived files are removed. This cannot be undone.", "Delete")) {
      button.focus();
      return;
    }
    try {
      await api(`/api/images/${id}`, { method: "DELETE" });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) { // already gone is what was asked
        fill(message, notice(`${name}: ${errorText(err)}`));
        button.focus();
        return;
      }
    }
    removed(id);
    showCount();
    rearm();
    announce(`${name} deleted.`);
    (next?.querySelector("[data-delete]") ?? count).focus();
  }

  async function deleteMany() {
    const ids = [...selected];
    const n = ids.length;
    if (!n) return;
    if (!await ask(`Delete ${n} image${n === 1 ? "" : "s"}?`, "The selected images, their sketches and derived files are removed. This cannot be undone.", `Delete ${n}`)) {
      deleteSelected.focus();
      return;
    }
    const failed = [];
    let next = 0;
    let done = 0;
    deleteSelected.disabled = true;
    deleting = true;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++];
        try {
          await api(`/api/images/${id}`, { method: "DELETE" });
          removed(id);
        } catch (err) {
          if (err instanceof ApiError && err.status === 404) removed(id);
          else failed.push(err);
        }
        done++;
        fill(count, `Deleting… ${done} of ${n}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, n) }, worker));
    deleting = false;
    showCount();
    rearm();
    fill(message, failed.length ? notice(`${failed.length} of ${n} could not be deleted: ${errorText(failed[0])}`) : null);
    announce(failed.length ? `${n - failed.length} deleted, ${failed.length} failed.` : `${n} deleted.`);
    count.focus();
    // Deleting a whole page may leave the grid empty while more exist: fetch them.
    if (!grid.children.length && cursor) loadPage(true);
  }

  grid.addEventListener("click", (e) => {
    const button = e.target.closest("[data-delete]");
    if (!button) return;
    const item = button.closest("li");
    deleteOne(button.dataset.delete, item.querySelector(".name").textContent, button);
  });
  grid.addEventListener("change", (e) => {
    const box = e.target.closest("[data-select]");
    if (!box) return;
    if (box.checked) selected.add(box.dataset.select);
    else selected.delete(box.dataset.select);
    showCount();
  });
  selectAll.addEventListener("change", () => {
    for (const box of grid.querySelectorAll("[data-select]")) {
      box.checked = selectAll.checked;
      if (box.checked) selected.add(box.dataset.select);
      else selected.delete(box.dataset.select);
    }
    showCount();
  });
  deleteSelected.addEventListener("click", deleteMany);

  // --- uploads ---------------------------------------------------------------------------
  const queue = uploadQueue({
    onUploaded(image) {
      if (filtered(filters)) return refreshTop(); // it may not match the filters
      const fresh = !card(image.id);
      upsert(image);
      if (fresh) {
        total++; // counted on the server even when its page is not loaded here
        changes++;
      }
      showCount();
      // The thumbnail task may already have finished before the card existed.
      const task = [...realtime.tasks.values()].find((t) => t.image_id === image.id && FINISHED.has(t.status));
      if (task) refreshImage(image.id);
    },
    onSettled: refreshTop,
  }, state.user?.id);
  choose.addEventListener("click", () => input.click());
  input.addEventListener("change", () => { queue.add([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    queue.add([...e.dataTransfer.files]);
  });

  // Thumbnails are made by a background task; the WebSocket says when. A slow poll covers
  // the case where the task finished before this page saw it (or while offline).
  const watch = () => {
    clearInterval(watchdog);
    watchdog = setInterval(() => {
      if (!main.contains(grid)) return clearInterval(watchdog);
      for (const c of grid.querySelectorAll('[data-status="processing"]')) refreshImage(c.dataset.id);
    }, 4000);
  };

  fill(main,
    h("section.upload-area", { "aria-labelledby": "gallery-title" }, h("h1#gallery-title", "Your images"), zone, queue.element),
    h("section.gallery", { "aria-label": "Gallery" }, form, toolbar, message, empty, grid, more),
    dialog);
  loadPage(true);
  watch();
  return {
    onTask(task) {
      if (task.image_id && FINISHED.has(task.status) && card(task.image_id)) refreshImage(task.image_id);
      // An AI edit makes a brand-new image: merge it in.
      if (task.kind === "edit" && task.status === "succeeded") refreshTop();
    },
    onSnapshot: refreshTop, // after a reconnect, anything may have changed
  };
}
