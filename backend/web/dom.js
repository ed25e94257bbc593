// Tiny DOM helpers. Elements are built with textContent, never innerHTML, so file names,
// captions and error messages from the API can never inject markup.

/** h("a.cls#id", {href: "#"}, child, "text", [more]) → element */
export function h(tag, attrs = {}, ...children) {
  // The attributes object is optional: h("p", "text") has a child where attrs would be.
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [, name = "div", rest = ""] = tag.match(/^([a-z0-9-]*)(.*)$/i);
  const el = document.createElement(name || "div");
  for (const part of rest.match(/[.#][^.#]+/g) ?? []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Announce a short message to screen readers. */
export function announce(text) {
  const live = document.getElementById("live");
  if (live) live.textContent = text;
}

// --- numbers and dates people read --------------------------------------------------------------

const LOCALE = document.documentElement.lang || undefined;

/** 26214400 → "25 MB"; one decimal below ten units ("2.4 MB"), none above. */
export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${new Intl.NumberFormat(LOCALE, { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

/** A pixel count as megapixels: 50000000 → "50 MP", 307200 → "0.3 MP". */
export function formatPixels(pixels) {
  if (!pixels) return "";
  const mp = pixels / 1e6;
  const digits = mp >= 10 ? 0 : 1;
  return `${new Intl.NumberFormat(LOCALE, { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(Math.max(mp, 0.1))} MP`;
}

/** Plain grouped number: 50000000 → "50,000,000". */
export function formatNumber(n) {
  return new Intl.NumberFormat(LOCALE).format(n);
}

/** The exact local date and time, e.g. "1 Dec 2026, 14:03"; "" for nothing, the input if unparsable. */
export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString(LOCALE, { dateStyle: "medium", timeStyle: "short" });
}

const STEPS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];

/** "just now", "3 minutes ago", "yesterday", "in 2 hours" (relative to `now`). */
export function formatRelative(iso, now = Date.now()) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return formatDate(iso);
  const seconds = Math.round((date.getTime() - now) / 1000);
  if (Math.abs(seconds) < 45) return "just now";
  const words = new Intl.RelativeTimeFormat(LOCALE, { numeric: "auto" });
  for (const [unit, size] of STEPS) {
    if (Math.abs(seconds) >= size * 0.9 || unit === "minute") return words.format(Math.round(seconds / size), unit);
  }
  return formatDate(iso);
}

let ticking = null;

/** <time datetime title> reading "3 minutes ago", with the exact date on hover; kept current. */
export function timeAgo(iso) {
  const el = h("time", { datetime: iso ?? "", title: formatDate(iso), "data-relative": "" }, formatRelative(iso));
  // One timer for the whole page refreshes every relative time still in the document.
  ticking ??= setInterval(() => {
    for (const t of document.querySelectorAll("time[data-relative]")) t.textContent = formatRelative(t.getAttribute("datetime"));
  }, 30_000);
  return el;
}
