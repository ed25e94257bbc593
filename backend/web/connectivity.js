// Whether the app can reach the server, from every signal the page has: the browser's own
// online/offline state, fetches that failed for lack of a network, and the live socket.
//
// Other screens listen here rather than guessing from errors:
//   import { connectivity } from "./connectivity.js";
//   connectivity.state                          // "online" | "reconnecting" | "offline"
//   connectivity.addEventListener("change", e => e.detail.state, e.detail.previous)
//   connectivity.addEventListener("online", …)  // back to "online" after any outage: retry now
// The same changes are also dispatched on window as "atelier:connectivity" (detail as above).

const LABELS = { online: "Online", reconnecting: "Reconnecting…", offline: "Offline" };

class Connectivity extends EventTarget {
  constructor() {
    super();
    this.state = navigator.onLine ? "online" : "offline";
    this.socketWanted = false; // only a signed-in page keeps a socket; signed out, it cannot lag
    this.socketOpen = false;
    this.socketEverOpened = false;
    this.fetchFailed = false;
    this.probeTimer = null;
    this.probeDelay = 1000;
    window.addEventListener("online", () => { this.update(); if (this.fetchFailed) this.probe(); });
    window.addEventListener("offline", () => this.update());
  }

  /** The live socket's state, reported by realtime.js. */
  socket({ wanted, open }) {
    this.socketWanted = wanted;
    this.socketOpen = open;
    if (open) {
      this.socketEverOpened = true;
      this.fetchFailed = false; // the server answered a handshake: it is reachable
    }
    if (!wanted) this.socketEverOpened = false;
    this.update();
  }

  /** A fetch either reached the server (any status) or failed in the network. */
  fetched(reached) {
    this.fetchFailed = !reached;
    clearTimeout(this.probeTimer);
    if (reached) this.probeDelay = 1000;
    else {
      // Nothing else may call the server for a while (signed out, idle): find out by asking.
      this.probeTimer = setTimeout(() => this.probe(), this.probeDelay);
      this.probeDelay = Math.min(10000, this.probeDelay * 2);
    }
    this.update();
  }

  async probe() {
    clearTimeout(this.probeTimer);
    let reached = false;
    try {
      await fetch("/healthz", { cache: "no-store" });
      reached = true; // any answer, even a 503, means the server is reachable
    } catch { /* still unreachable */ }
    this.fetched(reached);
  }

  update() {
    let next = "online";
    if (!navigator.onLine) next = "offline";
    else if (this.fetchFailed) next = "reconnecting";
    // A first connection being made is not an outage; a dropped one is.
    else if (this.socketWanted && this.socketEverOpened && !this.socketOpen) next = "reconnecting";
    if (next === this.state) return;
    const previous = this.state;
    this.state = next;
    const detail = { state: next, previous };
    this.dispatchEvent(new CustomEvent("change", { detail }));
    if (next === "online") this.dispatchEvent(new CustomEvent("online", { detail }));
    window.dispatchEvent(new CustomEvent("atelier:connectivity", { detail }));
  }
}

export const connectivity = new Connectivity();

/** The header's indicator: always in the accessibility tree, shown on screen only when not online. */
export function showConnectivity(el) {
  const render = () => {
    el.dataset.state = connectivity.state;
    el.textContent = LABELS[connectivity.state];
  };
  let timer = null;
  connectivity.addEventListener("change", (e) => {
    render();
    clearTimeout(timer);
    el.classList.remove("recovered");
    // After an outage say "Back online" on screen for a moment, rather than vanish silently.
    if (e.detail.state === "online") {
      el.textContent = "Back online";
      el.classList.add("recovered");
      timer = setTimeout(() => { el.classList.remove("recovered"); render(); }, 4000);
    }
  });
  render();
}
