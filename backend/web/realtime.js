// Live task updates over /ws. The server sends a snapshot of active tasks on every connect, so
// after a drop we just reconnect (with exponential backoff and jitter) and rebuild from it.

import { api } from "./api.js";

export class Realtime extends EventTarget {
  constructor() {
    super();
    this.tasks = new Map(); // task id → latest task seen
    this.socket = null;
    this.attempt = 0;
    this.wanted = false;
    this.timer = null;
  }

  start() {
    if (this.wanted) return;
    this.wanted = true;
    this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
    this.tasks.clear();
  }

  connect() {
    if (!this.wanted) return;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => { this.attempt = 0; this.emit("status", { online: true }); };
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.emit("status", { online: false });
      this.reconnect();
    };
  }

  async reconnect() {
    if (!this.wanted) return;
    const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.timer = setTimeout(async () => {
      // The handshake cannot refresh an expired access token; an API call can, so make one.
      try { await api("/api/auth/me"); } catch { /* offline: the next attempt tries again */ }
      this.connect();
    }, delay);
  }

  receive(message) {
    if (message.type === "snapshot") {
      for (const task of message.tasks) this.tasks.set(task.id, task);
      this.emit("snapshot", { tasks: message.tasks });
    } else if (message.type === "task.updated") {
      this.tasks.set(message.task.id, message.task);
      this.emit("task", { task: message.task });
    } // "ping" needs no answer
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
