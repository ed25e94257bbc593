// HTTP client for the Atelier API: cookies carry the session, the readable csrf_token cookie is
// echoed on unsafe requests, and an expired access token is refreshed once, transparently.
// Nothing about the session is ever written to localStorage.

import { connectivity } from "./connectivity.js";

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** An API failure with the problem+json fields kept (code, detail, errors). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(describeProblem(status, problem));
    this.status = status;
    this.code = problem?.code ?? "";
    this.problem = problem ?? {};
  }
}

/** Plain words for a problem: the API's detail, plus any per-row or per-field errors. */
export function describeProblem(status, problem) {
  if (!problem) return `The server answered ${status}.`;
  let text = problem.detail || problem.title || `The server answered ${status}.`;
  if (Array.isArray(problem.errors) && problem.errors.length) {
    const lines = problem.errors.slice(0, 5).map((e) =>
      e.line !== undefined ? `line ${e.line}: ${e.message}` : e.msg || e.message || String(e));
    text += ` (${lines.join("; ")})`;
  }
  return text;
}

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Headers every unsafe request needs; also used by the XHR-free multipart posts. */
export function unsafeHeaders(method) {
  return UNSAFE.has(method) ? { "X-CSRF-Token": csrfToken() } : {};
}

let refreshing = null; // one refresh in flight at a time: refresh tokens rotate on every use

async function refreshSession() {
  refreshing ??= fetch("/api/auth/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: unsafeHeaders("POST"),
  }).then((r) => r.ok).finally(() => { refreshing = null; });
  return refreshing;
}

/** Listeners told when the session is gone for good (a 401 that a refresh could not cure). */
export const sessionLost = new EventTarget();

// Where a 401 is an answer about the credentials typed in, not about the session.
const NO_REFRESH = new Set(["/api/auth/login", "/api/auth/register", "/api/auth/refresh", "/api/auth/logout"]);

/** Ask for a fresh access token; if that fails too, the session is over: tell the shell. */
export async function renewSession() {
  let renewed = false;
  try {
    renewed = await refreshSession();
  } catch { /* offline: not a lost session */
    return false;
  }
  // Later, not now: the caller's own error handling runs first, then the shell replaces
  // whatever it drew with the sign-in view.
  if (!renewed) setTimeout(() => sessionLost.dispatchEvent(new Event("lost")), 0);
  return renewed;
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

/**
 * fetch() with JSON in and out. `body` may be a plain object (sent as JSON) or FormData.
 * Throws ApiError on any non-2xx answer.
 */
export async function api(path, { method = "GET", body, headers = {}, retry = true } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...unsafeHeaders(method), ...headers } };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    // No answer at all. Status 0 and a `network.*` code let callers tell this from a refusal
    // and retry once `connectivity` says "online" again.
    connectivity.fetched(false);
    throw new ApiError(0, navigator.onLine
      ? { code: "network.unreachable", detail: "The server could not be reached; please try again in a moment." }
      : { code: "network.offline", detail: "You are offline; this will work again once the network is back." });
  }
  connectivity.fetched(true);
  if (response.ok) return parse(response);
  const problem = await parse(response).catch(() => null);
  // Any 401 (expired, missing or revoked token) gets one refresh; a failed one ends the session.
  if (response.status === 401 && retry && !NO_REFRESH.has(path.split("?")[0])) {
    if (await renewSession()) return api(path, { method, body, headers, retry: false });
  }
  throw new ApiError(response.status, typeof problem === "object" ? problem : null);
}

/**
 * The presigned POST itself: XHR rather than fetch because only XHR reports upload progress.
 * `onProgress` gets a fraction 0..1.
 */
export function postForm(url, fields, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append("file", file); // S3 ignores every field after the file, so it goes last
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let problem = null;
      try { problem = JSON.parse(xhr.responseText); } catch { /* S3 answers XML */ }
      reject(new ApiError(xhr.status, problem));
    };
    xhr.onerror = () => reject(new Error("The upload was interrupted (network error)."));
    xhr.send(form);
  });
}
