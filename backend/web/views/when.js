// Dates as people say them ("2 hours ago", "never"), with the exact local time in a tooltip and
// a <time datetime> for machines. Used by the batches and API keys screens.

import { h } from "../dom.js";

const UNITS = [
  ["year", 365 * 24 * 3600], ["month", 30 * 24 * 3600], ["week", 7 * 24 * 3600],
  ["day", 24 * 3600], ["hour", 3600], ["minute", 60],
];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** "just now", "5 minutes ago", "yesterday"…, from an ISO string; "" when it cannot be read. */
export function ago(iso, now = Date.now()) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  const seconds = Math.round((date.getTime() - now) / 1000);
  if (Math.abs(seconds) < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size * 0.9 || unit === "minute") {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return "just now";
}

/** A <time> saying when, relatively, with the exact date in its title; `never` when empty. */
export function when(iso, never = "never") {
  if (!iso) return h("span.muted", never);
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("span", iso);
  return h("time", { datetime: date.toISOString(), title: exact.format(date) }, ago(iso));
}
