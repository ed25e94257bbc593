// A date for the batches and API keys screens: dom.js's live relative <time>, or a muted word
// (e.g. "never") when there is none.

import { h, timeAgo } from "../dom.js";

export function when(iso, never = "never") {
  return iso ? timeAgo(iso) : h("span.muted", never);
}
