// Atelier web app: a hash-routed single page over the JSON API. Each screen is a function in
// views/ that renders into <main> and may return hooks for live task updates from the WebSocket;
// this module owns the session and the routing between them.

import { api, sessionLost } from "./api.js";
import { showConnectivity } from "./connectivity.js";
import { announce, fill } from "./dom.js";
import { main, realtime, state } from "./ui.js";
import { adminView } from "./views/admin.js";
import { authView } from "./views/auth.js";
import { batchesView } from "./views/batches.js";
import { galleryView } from "./views/gallery.js";
import { imageView } from "./views/image.js";
import { keysView } from "./views/keys.js";

const AUTH_PAGES = /^#\/(signin|signup)\b/;
const RETURN_KEY = "atelier.returnTo"; // a place in the app, never anything about the session
let authMessage = "";

async function boot() {
  try {
    state.user = await api("/api/auth/me");
  } catch {
    state.user = null;
  }
  window.addEventListener("hashchange", () => route());
  document.getElementById("sign-out").addEventListener("click", signOut);
  sessionLost.addEventListener("lost", () => {
    if (!state.user) return; // never signed in here, or already handled
    // Signed out in another tab, expired, revoked or disabled: sign in again, then come back.
    rememberPlace();
    setUser(null);
    showSignIn("Your session has ended; please sign in again.");
  });
  realtime.addEventListener("task", (e) => state.view?.onTask?.(e.detail.task));
  realtime.addEventListener("snapshot", () => state.view?.onSnapshot?.());
  showConnectivity(document.getElementById("net"));
  setUser(state.user);
  if (!state.user && location.hash && !AUTH_PAGES.test(location.hash)) {
    // A deep link opened while signed out: sign in first, then go there.
    rememberPlace();
    showSignIn("");
  } else route();
}

function rememberPlace() {
  if (location.hash.startsWith("#/") && !AUTH_PAGES.test(location.hash)) {
    sessionStorage.setItem(RETURN_KEY, location.hash);
  }
}

function showSignIn(message) {
  authMessage = message;
  if (location.hash === "#/signin") route();
  else location.hash = "#/signin"; // routes on hashchange
}

function setUser(user) {
  state.user = user;
  document.getElementById("nav").hidden = !user;
  document.getElementById("nav-admin").hidden = user?.role !== "admin";
  fill(document.getElementById("who"), user ? user.display_name || user.email : "");
  if (user) realtime.start();
  else realtime.stop();
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch { /* the cookies may already be gone; signing out locally is what matters */ }
  sessionStorage.removeItem(RETURN_KEY);
  setUser(null);
  location.hash = "#/signin";
  announce("Signed out.");
}

let routedBefore = false;

function route() {
  const hash = location.hash.replace(/^#\/?/, "").split("?")[0]; // "?…": a view's own state
  const [page, id] = hash.split("/");
  state.view = null;
  if (!state.user) {
    const message = authMessage;
    authMessage = "";
    state.view = authView(page === "signup" ? "signup" : "signin", message, signedIn);
  } else if (page === "image" && id) state.view = imageView(id);
  else if (page === "batches") state.view = batchesView();
  else if (page === "keys") state.view = keysView();
  else if (page === "admin") state.view = adminView();
  else state.view = galleryView();
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${page || "gallery"}`);
  }
  // Not on the first load: focus starts at the top, so the skip link is the first tab stop.
  if (routedBefore) main.focus({ preventScroll: true });
  routedBefore = true;
}

function signedIn(user) {
  setUser(user);
  const back = sessionStorage.getItem(RETURN_KEY);
  sessionStorage.removeItem(RETURN_KEY);
  const target = back || (AUTH_PAGES.test(location.hash) || !location.hash.startsWith("#/") ? "#/gallery" : location.hash);
  if (location.hash === target) route();
  else location.hash = target;
  announce(`Signed in as ${user.display_name || user.email}.`);
}

boot();
