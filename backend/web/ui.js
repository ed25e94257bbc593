// What every screen shares: the <main> element, the one live connection, the session state, and
// the small building blocks (notices, badges, image details) the views have in common.

import { ApiError } from "./api.js";
import { formatBytes, h } from "./dom.js";
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

export function details(image) {
  const rows = [];
  if (image.width) rows.push(["Size", `${image.width} × ${image.height} · ${formatBytes(image.size_bytes)}`]);
  rows.push(...exifRows(image));
  return h("dl.meta", rows.map(([k, v]) => [h("dt", k), h("dd", v)]));
}

export function badge(status) {
  return h(`span.badge.${status}`, status);
}

export function altText(image) {
  return image.caption || `Photo ${image.original_name}`;
}

// Signed delivery URLs (no cookies, CDN-cacheable, AVIF/WebP by Accept) at 200/800/1600 px,
// so the browser picks the size the layout and screen need; the cookie thumbnail otherwise.
export function responsive(image, fallback, sizes) {
  const d = image.delivery;
  if (!d) return { src: fallback };
  return { src: d.medium, srcset: `${d.small} 200w, ${d.medium} 800w, ${d.large} 1600w`, sizes };
}

