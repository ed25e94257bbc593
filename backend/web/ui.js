// What every screen shares: the <main> element, the one live connection, the session state, and
// the small building blocks (notices, badges, image details) the views have in common.

import { ApiError } from "./api.js";
import { announce, formatBytes, formatDate, formatPixels, h, timeAgo } from "./dom.js";
import { Realtime } from "./realtime.js";

export const main = document.getElementById("main");
export const realtime = new Realtime();
export const state = { user: null, view: null, styles: null };
export const FINISHED = new Set(["succeeded", "failed", "canceled"]);

// The skip link moves focus into <main> itself: "#main" is no route for the hash router.
document.querySelector("a.skip")?.addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
  main.scrollIntoView();
});

/** A small error/notice line; `role=alert` makes screen readers read it at once. */
export function notice(text, kind = "error") {
  return h(`p.notice.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
}

export function errorText(err) {
  return err instanceof ApiError ? err.message : "Something went wrong: " + (err?.message ?? err);
}

/** "Canon" + "Canon EOS R6" → "Canon EOS R6"; "FUJIFILM" + "X-T4" → "FUJIFILM X-T4". */
export function cameraName(make, model) {
  const a = (make ?? "").trim();
  const b = (model ?? "").trim();
  if (!a || !b) return a || b;
  // Many makers repeat their name in the model; some abbreviate it ("NIKON CORPORATION" / "NIKON D750").
  const first = a.split(/\s+/)[0].toLowerCase();
  return b.toLowerCase().startsWith(a.toLowerCase()) || b.toLowerCase().startsWith(first) ? b : `${a} ${b}`;
}

const FORMAT_NAMES = { jpeg: "JPEG", png: "PNG", webp: "WebP", gif: "GIF", avif: "AVIF", tiff: "TIFF", bmp: "BMP", heif: "HEIF" };

/** "1/250" → "1/250 s", 35.0 → "35 mm"; EXIF dates are the camera's local time, shown as such. */
function exifRows(image) {
  const exif = image.exif ?? {};
  const rows = [];
  const camera = cameraName(exif.camera_make, exif.camera_model);
  if (camera) rows.push(["Camera", camera]);
  if (exif.lens_model) rows.push(["Lens", exif.lens_model]);
  if (exif.datetime_original) rows.push(["Taken", h("time", { datetime: exif.datetime_original }, formatDate(exif.datetime_original))]);
  const exposure = [
    exif.focal_length ? `${Number(exif.focal_length.toFixed(1))} mm` : "",
    exif.exposure_time ? `${exif.exposure_time} s` : "",
    exif.iso ? `ISO ${exif.iso}` : "",
  ].filter(Boolean).join(" · ");
  if (exposure) rows.push(["Exposure", exposure]);
  if (exif.gps) rows.push(["Location", `${exif.gps.lat.toFixed(4)}, ${exif.gps.lon.toFixed(4)}`]);
  return rows;
}

/** The image's facts as a <dl>; `full` adds the format and upload time (the image page). */
export function details(image, { full = false } = {}) {
  const rows = [];
  if (image.width) {
    const size = [`${image.width} × ${image.height}`, formatPixels(image.width * image.height), formatBytes(image.size_bytes)];
    if (full && image.format) size.push(FORMAT_NAMES[image.format] ?? image.format.toUpperCase());
    rows.push(["Size", size.join(" · ")]);
  } else if (image.size_bytes) rows.push(["Size", formatBytes(image.size_bytes)]);
  rows.push(...exifRows(image));
  if (full && image.created_at) rows.push(["Uploaded", timeAgo(image.created_at)]);
  return h("dl.meta", rows.map(([k, v]) => [h("dt", k), h("dd", v)]));
}

const EXTENSIONS = { jpeg: "jpg", png: "png", webp: "webp", avif: "avif", gif: "gif" };

/** A download name for a derivative: ("photo.jpg", "acrylic", "png") → "photo-acrylic.png". */
export function downloadName(originalName, suffix, format) {
  const stem = (originalName || "image").replace(/\.[A-Za-z0-9]{1,5}$/, "") || "image";
  const ext = EXTENSIONS[format] ?? (format || "png");
  return `${stem}-${suffix}.${ext}`;
}

/**
 * Ask before something that cannot be undone, in a real modal <dialog> (focus kept inside,
 * Escape cancels, focus returns to the opener). Resolves true when confirmed.
 */
export function confirmDialog({ title, body = "", confirm = "Delete", cancel = "Cancel" }) {
  const opener = document.activeElement;
  const titleId = `dialog-title-${Math.random().toString(36).slice(2, 8)}`;
  const yes = h("button.primary.danger-fill", { type: "submit", value: "yes" }, confirm);
  const no = h("button", { type: "submit", value: "no", formnovalidate: true }, cancel);
  const dialog = h("dialog.confirm", { "aria-labelledby": titleId },
    h("form", { method: "dialog" },
      h(`h2#${titleId}`, title), body ? h("p", body) : null,
      h("div.actions", no, yes)));
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "yes");
    }, { once: true });
    dialog.showModal();
    no.focus(); // the safe choice has focus: Enter on a stray key press does not delete
  });
}

/** A short message that outlives the view that raised it (e.g. "Image deleted" after leaving). */
export function toast(text, kind = "ok") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div#toasts"); // not itself live: announce() below reads the text once
    document.body.append(box);
  }
  const item = h(`p.notice.${kind}.toast`, text);
  box.append(item);
  announce(text);
  setTimeout(() => item.remove(), 6000);
  return item;
}

export function badge(status) {
  return h(`span.badge.${status}`, status);
}

export function altText(image) {
  return image.caption || `Photo ${image.original_name}`;
}

// Signed delivery URLs (no cookies, CDN-cacheable, AVIF/WebP by Accept) at 200/800/1600 px,
// so the browser picks the size the layout and screen need; the cookie thumbnail otherwise.
// Each URL fits the picture inside a square box, so a small photo's "1600" is only as wide as the
// photo: the srcset declares the width each URL really has (a larger claim would make the
// browser think it had more detail than it has), and drops sizes that add nothing.
const BOXES = [["small", 200], ["card", 400], ["medium", 800], ["large", 1600]];

export function responsive(image, fallback, sizes) {
  const d = image.delivery;
  if (!d) return { src: fallback };
  const longest = Math.max(image.width || 0, image.height || 0);
  const seen = new Set();
  const candidates = [];
  for (const [name, box] of BOXES) {
    if (!d[name]) continue;
    const width = longest ? Math.round((image.width || longest) * Math.min(1, box / longest)) : box;
    if (seen.has(width)) continue;
    seen.add(width);
    candidates.push(`${d[name]} ${width}w`);
  }
  return { src: d.medium ?? d.small, srcset: candidates.join(", "), sizes };
}

