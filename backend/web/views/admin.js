// The admin screen: users (search, role, disable/enable), everyone's image stats, the AI cache
// and the task queue at a glance. The API refuses non-admins (403); this screen only spares
// them the errors by saying so politely.

import { api } from "../api.js";
import { announce, fill, formatBytes, formatRelative, h, timeAgo } from "../dom.js";
import { errorText, main, notice, state } from "../ui.js";

const PAGE = 20;
const STATUSES = ["queued", "running", "succeeded", "failed", "canceled"];

export function adminView() {
  if (state.user?.role !== "admin") {
    fill(main, h("section.card.admin-only",
      h("h1", "Administration"),
      h("p", "This page is for administrators. If you need something changed, ask an administrator of this Atelier."),
      h("p", h("a", { href: "#/gallery" }, "Back to your images"))));
    return {};
  }
  const users = usersSection();
  const stats = h("section.card", { "aria-labelledby": "stats-h" }, h("h2#stats-h", "Images (all users)"), h("p.muted", "Loading…"));
  const cache = h("section.card", { "aria-labelledby": "cache-h" }, h("h2#cache-h", "AI cache"), h("p.muted", "Loading…"));
  const tasks = h("section.card", { "aria-labelledby": "tasks-h" }, h("h2#tasks-h", "Tasks (all users)"), h("p.muted", "Loading…"));
  const refresh = h("button", { type: "button", onclick: () => loadOverview() }, "Refresh");
  fill(main,
    h("div.row.admin-head", h("h1", "Administration"), refresh),
    users.element,
    h("div.admin-grid", stats, cache),
    tasks);

  async function loadOverview() {
    refresh.disabled = true;
    await Promise.all([
      section(stats, "Images (all users)", "stats-h", () => api("/api/stats?scope=all"), renderStats),
      section(cache, "AI cache", "cache-h", () => api("/api/cache/status?limit=10"), renderCache),
      section(tasks, "Tasks (all users)", "tasks-h", () => api("/api/admin/tasks/summary?failures=10"), renderTasks),
    ]);
    refresh.disabled = false;
    announce("Overview updated.");
  }
  users.load();
  loadOverview();
  return {};
}

async function section(el, title, id, load, render) {
  let body;
  try { body = render(await load()); } catch (err) { body = notice(errorText(err)); }
  fill(el, h(`h2#${id}`, title), body);
}

// ---- users -------------------------------------------------------------------------------

function usersSection() {
  const status = h("div.status");
  const rows = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Show more users");
  const search = h("input#user-search", { type: "search", name: "q", maxlength: "100", autocomplete: "off" });
  let cursor = null;
  let query = "";

  const form = h("form.inline.user-search", { role: "search", "aria-label": "Users" },
    h("label", { for: "user-search" }, "Search users"), search, h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    query = search.value.trim();
    load();
  });
  more.addEventListener("click", () => load(cursor));

  async function load(after = null) {
    fill(status);
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (query) params.set("q", query);
    if (after) params.set("cursor", after);
    try {
      const page = await api(`/api/admin/users?${params}`);
      if (!after) fill(rows);
      rows.append(...page.items.map((user) => userRow(user, status)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!after && !page.items.length) fill(rows, h("tr", h("td", { colspan: "5" }, query ? `No user matches “${query}”.` : "No users yet.")));
      if (!after && query) announce(`${page.items.length}${cursor ? "+" : ""} users match “${query}”.`);
    } catch (err) {
      fill(status, notice(errorText(err)));
    }
  }

  const element = h("section.card", { "aria-labelledby": "users-h" },
    h("h2#users-h", "Users"),
    form,
    status,
    h("div.table-wrap", { role: "region", "aria-labelledby": "users-h", tabindex: "0" },
      h("table.users",
        h("thead", h("tr", ["Email", "Name", "Role", "Status", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
        rows)),
    more);
  return { element, load };
}

function userRow(user, status) {
  const isSelf = user.id === state.user?.id;
  const label = user.email;
  const role = h("select", { "aria-label": `Role of ${label}` },
    h("option", { value: "user", selected: user.role === "user" }, "User"),
    h("option", { value: "admin", selected: user.role === "admin" }, "Admin"));
  const state_ = h("span");
  const toggle = h("button.small", { type: "button" });
  const row = h("tr", { "data-user": user.email },
    h("th", { scope: "row" }, user.email, isSelf ? h("span.muted", " (you)") : null),
    h("td", user.display_name || h("span.muted", "—")),
    h("td", role),
    h("td", state_),
    h("td", toggle));

  const show = (u) => {
    user = u;
    role.value = u.role;
    fill(state_, u.disabled ? h("span.badge.failed", "Disabled") : h("span.badge.ready", "Active"));
    fill(toggle, u.disabled ? "Enable" : "Disable");
    toggle.classList.toggle("danger", !u.disabled);
    toggle.setAttribute("aria-label", `${u.disabled ? "Enable" : "Disable"} ${label}`);
  };
  show(user);

  const patch = async (body, done) => {
    fill(status);
    try {
      show(await api(`/api/admin/users/${user.id}`, { method: "PATCH", body }));
      announce(done);
    } catch (err) {
      show(user); // put the control back as the server has it
      fill(status, notice(`${label}: ${errorText(err)}`));
    }
  };
  role.addEventListener("change", () => patch({ role: role.value }, `${label} is now ${role.value === "admin" ? "an admin" : "a user"}.`));
  toggle.addEventListener("click", async () => {
    if (user.disabled) return patch({ disabled: false }, `${label} is enabled.`);
    const ok = await confirmDialog(
      `Disable ${label}?`,
      "They are signed out everywhere at once and cannot sign in or use their API keys until enabled again.",
      "Disable");
    if (ok) patch({ disabled: true }, `${label} is disabled.`);
    else toggle.focus();
  });
  return row;
}

/** A modal yes/no question; resolves true when confirmed. Focus is kept inside while open. */
function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const dialog = h("dialog.confirm", { "aria-labelledby": "confirm-h", "aria-describedby": "confirm-p" },
      h("h2#confirm-h", title),
      h("p#confirm-p", text),
      h("div.inline",
        h("button.primary.danger-fill", { type: "button", value: "yes", onclick: () => dialog.close("yes") }, action),
        h("button", { type: "button", value: "no", autofocus: true, onclick: () => dialog.close("no") }, "Cancel")));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// ---- overview ----------------------------------------------------------------------------

function renderStats(s) {
  const rate = s.success_rate === null ? "—" : `${(s.success_rate * 100).toFixed(1)} %`;
  const avg = s.average_processing_time_seconds === null ? "—" : duration(s.average_processing_time_seconds);
  return [
    facts([["Images", s.total], ["Failed", s.failed], ["Success rate", rate], ["Average processing", avg]]),
    h("p.small.muted", "By status: ", Object.entries(s.by_status).map(([k, v]) => `${k} ${v}`).join(" · ") || "none"),
  ];
}

function renderCache(c) {
  const asked = (c.hits ?? 0) + (c.misses ?? 0);
  const rate = !asked || c.hit_rate === null || c.hit_rate === undefined ? "—" : `${(c.hit_rate * 100).toFixed(1)} %`;
  const used = c.memory?.used_bytes ?? null;
  const items = c.items ?? [];
  return [
    facts([
      ["Entries", `${c.entries} of ${c.max_entries}`],
      ["Hits / misses", `${c.hits} / ${c.misses}`],
      ["Hit rate", rate],
      ["Memory", used === null ? "—" : formatBytes(used)],
      ["Entries live for", duration(c.ttl_seconds)],
    ]),
    items.length
      ? h("div.table-wrap", { role: "region", "aria-label": "Newest cache entries", tabindex: "0" },
        h("table",
          h("caption.small.muted", "Newest entries"),
          h("thead", h("tr", ["What", "Provider", "Size", "Age", "Expires in", "Hits"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", items.map((i) => h("tr",
            h("td", i.kind), h("td", `${i.provider}${i.model ? ` · ${i.model}` : ""}`), h("td", formatBytes(i.size_bytes ?? 0)),
            h("td", duration(i.age_seconds)), h("td", i.ttl_seconds === null ? "—" : duration(i.ttl_seconds)), h("td", i.hits))))))
      : h("p.muted", "The cache is empty."),
  ];
}

function renderTasks(t) {
  const kinds = Object.entries(t.by_kind);
  const failures = t.recent_failures;
  return [
    facts([
      ["Tasks", t.total],
      ...STATUSES.map((s) => [capital(s), t.by_status[s] ?? 0]),
      ["Oldest queued", t.oldest_queued_at ? formatRelative(t.oldest_queued_at) : "—"],
    ]),
    kinds.length
      ? h("div.table-wrap", { role: "region", "aria-label": "Tasks by kind and status", tabindex: "0" },
        h("table.task-counts",
          h("caption.small.muted", "By kind and status"),
          h("thead", h("tr", h("th", { scope: "col" }, "Kind"), STATUSES.map((s) => h("th", { scope: "col" }, capital(s))))),
          h("tbody", kinds.map(([kind, counts]) => h("tr", h("th", { scope: "row" }, kind), STATUSES.map((s) => h("td", counts[s] ?? 0)))))))
      : h("p.muted", "No tasks yet."),
    Object.keys(t.failed_by_code).length
      ? h("p.small", "Failures by code: ", Object.entries(t.failed_by_code).map(([code, n], i) => [i ? " · " : "", h("code", code), ` ${n}`]))
      : null,
    h("h3.sub", "Recent failures"),
    failures.length
      ? h("ul.failures", failures.map((f) => h("li",
        h("div.row", h("span", h("strong", f.kind), " ", h("code", f.error_code || "unknown")),
          h("span.small.muted", timeAgo(f.finished_at || f.created_at))),
        h("div.small.muted", `${f.user_email || f.user_id} · ${f.attempts} attempt${f.attempts === 1 ? "" : "s"}`),
        f.error ? h("div.small", f.error) : null)))
      : h("p.muted", "No failed tasks."),
  ];
}

function facts(pairs) {
  return h("dl.facts", pairs.map(([k, v]) => h("div", h("dt", k), h("dd", String(v)))));
}

function capital(s) {
  return s[0].toUpperCase() + s.slice(1);
}

/** 45 → "45 s", 750 → "12 min", 7500 → "2 h 5 min", 200000 → "2 days 7 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 1 && seconds > 0) return `${seconds.toFixed(2)} s`;
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const hours = Math.floor(s / 3600);
  if (hours < 48) return `${hours} h${m % 60 ? ` ${m % 60} min` : ""}`;
  const days = Math.floor(hours / 24);
  return `${days} days${hours % 24 ? ` ${hours % 24} h` : ""}`;
}

