// The upload queue: files go up a few at a time, each row shows its state, and what fails for a
// passing reason (rate limit, server busy or restarting, network gone) is retried by itself.
// A 429/503 waits for the server's Retry-After; a network error backs off 1 s, 2 s, 4 s… ≤ 15 s.

import { ApiError, api, postForm } from "../api.js";
import { announce, fill, h } from "../dom.js";

const CONCURRENCY = 3;
const MAX_AUTO_RETRIES = 40; // ~10 minutes of backoff at most, then the row waits for a click
const DONE_ROW_MS = 4000; // finished rows stay this long, then clear
const TRANSIENT = new Set([502, 503, 504]);

/** Limits and sizes in people's words: 26214400 bytes → "25 MB", 50000000 pixels → "50 MP".
 * The API says it so itself now; failed images recorded before that still carry raw numbers. */
export function humanize(text) {
  return String(text)
    .replace(/\b(\d{7,})\s*bytes\b/g, (_, n) => `${+(Number(n) / 1024 ** 2).toFixed(1)} MB`)
    .replace(/\b(\d{6,})\s*pixels\b/g, (_, n) => `${+(Number(n) / 1e6).toFixed(1)} MP`);
}

function describe(err) {
  if (err instanceof ApiError) return humanize(err.message);
  if (err instanceof TypeError || /network|fetch/i.test(err?.message ?? "")) {
    return "The connection to the server was lost.";
  }
  return "Something went wrong: " + (err?.message ?? err);
}

/** Seconds to wait before trying again, or null when trying again cannot help. */
function retryDelay(err, attempt) {
  // Status 0 is no answer at all (api.js: `network.*`), retried like any lost connection.
  if (err instanceof ApiError && err.status !== 0) {
    if (err.status === 429 || TRANSIENT.has(err.status)) {
      const asked = Number(err.problem?.retry_after);
      if (Number.isFinite(asked) && asked > 0) return asked;
      return Math.min(15, 2 ** attempt);
    }
    return null;
  }
  return Math.min(15, 2 ** Math.min(attempt, 4)); // network: 1, 2, 4, 8, 15, 15…
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

let wake = new AbortController(); // aborted to cut every backoff short (back online)
window.addEventListener("online", () => { wake.abort(); wake = new AbortController(); });

let shared = null;

/**
 * The one queue of the page, kept across views so uploads go on (and stay visible) while the
 * person looks at an image and comes back. Each gallery view binds its callbacks:
 * `onUploaded(image)` for each confirmed image, `onSettled()` when an upload ended in a way
 * that may have changed the gallery unseen.
 */
export function uploadQueue(callbacks, owner) {
  // Another account in this tab: the previous one's files must not go into it.
  if (shared && shared.owner !== owner) {
    shared.cancelAll();
    shared = null;
  }
  shared ??= { ...makeQueue(), owner };
  shared.bind(callbacks);
  return shared;
}

class Canceled extends Error {}

function makeQueue() {
  let hooks = { onUploaded() {}, onSettled() {} };
  const onUploaded = (image) => hooks.onUploaded(image);
  const onSettled = () => hooks.onSettled();
  // Focusable: a long queue scrolls, and keyboard users must be able to scroll it too.
  const list = h("ul.uploads", { "aria-label": "Uploads", tabindex: "0" });
  const summary = h("p.upload-summary");
  const retryAll = h("button.link", { type: "button", hidden: true }, "Retry all failed");
  const panel = h("div.upload-panel", { hidden: true }, h("div.row", summary, retryAll), list);
  const waiting = [];
  const jobs = new Set();
  let active = 0;

  const counts = () => {
    let done = 0, failed = 0;
    for (const job of jobs) {
      if (job.state === "done") done++;
      else if (job.state === "failed") failed++;
    }
    return { done, failed, total: jobs.size };
  };

  const update = () => {
    const { done, failed, total } = counts();
    panel.hidden = total === 0;
    let text = `${done} of ${total} uploaded`;
    if (failed) text += `, ${failed} failed`;
    fill(summary, text);
    retryAll.hidden = failed < 2;
    if (total && done + failed === total) {
      announce(failed ? `${text}.` : `All ${total} uploaded.`);
    }
  };

  function makeRow(job) {
    job.bar = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${job.file.name}` });
    job.status = h("span.small.state", "Waiting");
    job.row = h("li.upload", { "data-state": "queued" }, h("span.name", { title: job.file.name }, job.file.name), job.bar, job.status);
    list.append(job.row);
  }

  function setState(job, state, text) {
    job.state = state;
    job.row.dataset.state = state;
    job.row.classList.toggle("done", state === "done");
    job.row.classList.toggle("failed", state === "failed");
    if (text !== undefined) fill(job.status, text);
    update();
  }

  function fail(job, err) {
    job.bar.hidden = true;
    const retry = h("button", { type: "button", "aria-label": `Retry ${job.file.name}`, onclick: () => requeue(job) }, "Retry");
    const dismiss = h("button.link", {
      type: "button", "aria-label": `Dismiss ${job.file.name}`,
      onclick: () => { job.row.remove(); jobs.delete(job); update(); },
    }, "Dismiss");
    setState(job, "failed");
    fill(job.status, h("p.notice.error", { role: "alert" }, `${job.file.name}: ${describe(err)}`), h("span.row-actions", retry, dismiss));
  }

  function requeue(job) {
    job.attempt = 0;
    job.refreshed = false;
    job.signed = null; // a fresh form: the old one may have expired
    job.bar.hidden = false;
    job.bar.value = 0;
    setState(job, "queued", "Waiting");
    waiting.push(job);
    pump();
  }

  retryAll.addEventListener("click", () => {
    for (const job of jobs) if (job.state === "failed") requeue(job);
  });

  async function step(job) {
    const { file } = job;
    const live = () => { if (job.canceled) throw new Canceled(); };
    live();
    if (!job.signed || Date.parse(job.signed.expires_at) - Date.now() < 30_000) {
      setState(job, "preparing", "Preparing…");
      job.signed = await api("/api/upload/presigned-url", {
        method: "POST",
        body: { filename: file.name, content_type: file.type || "application/octet-stream", size_bytes: file.size },
      });
      job.sent = false;
    }
    if (!job.sent) {
      live();
      setState(job, "uploading", "Uploading…");
      await postForm(job.signed.url, job.signed.fields, file, (fraction) => { job.bar.value = Math.round(fraction * 100); });
      job.sent = true;
    }
    job.bar.value = 100;
    live();
    setState(job, "checking", "Checking…");
    try {
      return await api("/api/upload/confirm", { method: "POST", body: { upload_id: job.signed.upload_id } });
    } catch (err) {
      // A retried confirm whose first try went through (the answer was lost): it is done.
      if (err instanceof ApiError && err.code === "upload.already_confirmed") return null;
      if (err instanceof ApiError && err.code === "upload.not_received") job.sent = false;
      throw err;
    }
  }

  async function run(job) {
    for (;;) {
      try {
        const image = await step(job);
        setState(job, "done", "Uploaded");
        job.bar.hidden = true;
        if (image) onUploaded(image);
        else onSettled();
        setTimeout(() => {
          if (job.state !== "done") return;
          job.row.remove();
          update();
        }, DONE_ROW_MS);
        return;
      } catch (err) {
        if (job.canceled) return;
        // An expired or refused form (the storage says 403) gets one fresh form.
        if (err instanceof ApiError && err.status === 403 && job.sent === false && job.signed && !job.refreshed) {
          job.signed = null;
          job.refreshed = true;
          continue;
        }
        const delay = retryDelay(err, job.attempt);
        if (delay === null || job.attempt >= MAX_AUTO_RETRIES) {
          if (err instanceof ApiError && err.status === 422) onSettled(); // a failed card exists now
          return fail(job, err);
        }
        job.attempt++;
        const why = err instanceof ApiError && err.status === 429 ? "Too many uploads at once"
          : err instanceof ApiError && err.status !== 0 ? "The server is busy" : "Connection lost";
        const until = Date.now() + delay * 1000;
        setState(job, "retrying");
        const tick = () => fill(job.status, `${why}; retrying in ${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s`);
        tick();
        const timer = setInterval(tick, 1000);
        await sleep(delay * 1000, wake.signal);
        clearInterval(timer);
      }
    }
  }

  function pump() {
    while (active < CONCURRENCY && waiting.length) {
      const job = waiting.shift();
      active++;
      run(job).finally(() => { active--; pump(); });
    }
  }

  return {
    element: panel,
    bind(callbacks) { hooks = callbacks; },
    cancelAll() {
      waiting.length = 0;
      for (const job of jobs) job.canceled = true;
      wake.abort(); // sleeping retries wake up, see the cancel and stop
      wake = new AbortController();
    },
    add(files) {
      // A new drop after everything settled starts a fresh count; failed rows stay until handled.
      if (active === 0 && waiting.length === 0) {
        for (const job of [...jobs]) {
          if (job.state === "done") { job.row.remove(); jobs.delete(job); }
        }
      }
      for (const file of files) {
        const job = { file, attempt: 0, state: "queued", signed: null, sent: false };
        jobs.add(job);
        makeRow(job);
        waiting.push(job);
      }
      update();
      pump();
    },
  };
}
