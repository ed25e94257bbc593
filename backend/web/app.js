// Atelier web app: a hash-routed single page over the JSON API. Each screen is a function in
// views/ that renders into <main> and may return hooks for live task updates from the WebSocket;
// this module owns the session and the routing between them.

import { api, sessionLost } from "./api.js";
import { announce, fill } from "./dom.js";
import { main, realtime, state } from "./ui.js";
import { authView } from "./views/auth.js";
import { batchesView } from "./views/batches.js";
import { galleryView } from "./views/gallery.js";
import { imageView } from "./views/image.js";
import { keysView } from "./views/keys.js";

async function boot() {
  try {
    state.user = await api("/api/auth/me");
  } catch {
    state.user = null;
  }
  window.addEventListener("hashchange", route);
  document.getElementById("sign-out").addEventListener("click", signOut);
  sessionLost.addEventListener("lost", () => {
    setUser(null);
    route("Your session has ended; please sign in again.");
  });
  realtime.addEventListener("task", (e) => state.view?.onTask?.(e.detail.task));
  realtime.addEventListener("snapshot", () => state.view?.onSnapshot?.());
  setUser(state.user);
  route();
}

function setUser(user) {
  state.user = user;
  document.getElementById("nav").hidden = !user;
  fill(document.getElementById("who"), user ? user.display_name || user.email : "");
  if (user) realtime.start();
  else realtime.stop();
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch { /* the cookies may already be gone; signing out locally is what matters */ }
  setUser(null);
  location.hash = "#/signin";
  announce("Signed out.");
}

let routedBefore = false;

function route(message) {
  const hash = location.hash.replace(/^#\/?/, "").split("?")[0]; // "?…": a view's own state
  const [page, id] = hash.split("/");
  state.view = null;
  if (!state.user) {
    state.view = authView(page === "signup" ? "signup" : "signin", typeof message === "string" ? message : "", signedIn);
  } else if (page === "image" && id) state.view = imageView(id);
  else if (page === "batches") state.view = batchesView();
  else if (page === "keys") state.view = keysView();
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
  if (!location.hash.startsWith("#/") || /signin|signup/.test(location.hash)) location.hash = "#/gallery";
  else route();
}

boot();
