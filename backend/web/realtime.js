// Live task updates over /ws. Every connect starts with a snapshot; a reconnect asks for
// `?since=<cursor>` (the last cursor received), so tasks that changed while the socket was down,
// finished ones included, arrive in that snapshot and nothing is missed. Reconnects back off
// (with jitter) while the server is away, but happen at once when the page regains the network
// or the person comes back to the tab.

import { api } from "./api.js";
import { connectivity } from "./connectivity.js";

const POLICY_VIOLATION = 1008; // the server refused the socket: not signed in (or a bad origin)

export class Realtime extends EventTarget {
  constructor() {
    super();
    this.tasks = new Map(); // task id → latest task seen
    this.socket = null;
    this.attempt = 0;
    this.wanted = false;
    this.timer = null;
    this.cursor = null; // of the last message received: where a reconnect resumes
    window.addEventListener("online", () => this.now());
    // Closed on purpose: offline, the socket cannot work, and a clean reconnect resumes anyway.
    window.addEventListener("offline", () => this.drop());
    window.addEventListener("focus", () => this.now());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.now();
    });
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  start() {
    if (this.wanted) return;
    this.wanted = true;
    this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.tasks.clear();
    this.cursor = null;
    this.report();
  }

  /** Reconnect right away if the socket is down (network back, tab shown again). */
  now() {
    if (!this.wanted || !navigator.onLine) return;
    const state = this.socket?.readyState;
    if (state === WebSocket.OPEN || state === WebSocket.CONNECTING) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  drop() {
    if (!this.socket) return;
    const socket = this.socket;
    this.socket = null;
    socket.close();
    this.report();
    this.emit("status", { online: false });
  }

  connect() {
    if (!this.wanted) return;
    clearTimeout(this.timer);
    const since = this.cursor ? `?since=${encodeURIComponent(this.cursor)}` : "";
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${since}`);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.report();
      this.emit("status", { online: true });
    };
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return; // replaced or stopped on purpose
      this.socket = null;
      this.report();
      this.emit("status", { online: false });
      // A refused handshake (an HTTP 403 shows as a close before open) or a policy close means
      // the session may be gone: find out now, not after the backoff.
      if (event.code === POLICY_VIOLATION || (!opened && navigator.onLine)) this.checkSession();
      else this.reconnect();
    };
  }

  async checkSession() {
    // A 401 here refreshes the token, or tells the shell the session is over (which stops us).
    try { await api("/api/auth/me"); } catch { /* offline or server away: back off below */ }
    this.reconnect();
  }

  reconnect() {
    if (!this.wanted) return;
    clearTimeout(this.timer);
    const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.timer = setTimeout(async () => {
      // The handshake cannot refresh an expired access token; an API call can, so make one.
      try { await api("/api/auth/me"); } catch { /* offline: the next attempt tries again */ }
      this.connect();
    }, delay);
  }

  report() {
    connectivity.socket({ wanted: this.wanted, open: this.open });
  }

  receive(message) {
    if (message.cursor) this.cursor = message.cursor;
    if (message.type === "snapshot") {
      for (const task of message.tasks) this.tasks.set(task.id, task);
      this.emit("snapshot", { tasks: message.tasks, resumed: Boolean(message.resumed) });
    } else if (message.type === "task.updated") {
      this.tasks.set(message.task.id, message.task);
      this.emit("task", { task: message.task });
    } // "ping" needs no answer
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
