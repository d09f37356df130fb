// The admin's live dashboard: renders each snapshot from /ws/admin/dashboard/ in place.
// Text goes in through textContent only; nothing from the server is parsed as HTML.
"use strict";

(function () {
  const root = document.querySelector(".live-dashboard");
  if (!root) return;

  const stateBox = root.querySelector(".live-state");
  const stateText = document.getElementById("live-state-text");
  const connectionsUrl = root.dataset.connectionsUrl;
  let attempt = 0;

  function setState(state, text) {
    stateBox.dataset.state = state;
    if (stateText.textContent !== text) stateText.textContent = text;
  }

  // Only changed values are written, so aria-live announces changes, not every tick.
  function setText(id, value) {
    const el = document.getElementById(id);
    const text = value === null || value === undefined || value === "" ? "—" : String(value);
    if (el && el.textContent !== text) el.textContent = text;
  }

  const time = (iso) => (iso ? iso.slice(11, 19) : "—");
  const dateTime = (iso, end) => (iso ? iso.slice(0, 10) + " " + iso.slice(11, end) : "—");

  function cell(tag, content, className) {
    const el = document.createElement(tag);
    if (tag === "th") el.scope = "row";
    if (className) el.className = className;
    if (content instanceof Node) el.appendChild(content);
    else el.textContent = content === null || content === undefined || content === "" ? "—" : String(content);
    return el;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function fillTable(id, rows, buildRow, emptyText, columns) {
    const body = document.querySelector("#" + id + " tbody");
    const fresh = document.createElement("tbody");
    for (const row of rows) fresh.appendChild(buildRow(row));
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("td", emptyText);
      td.colSpan = columns;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    // Replace only when something changed, so a screen reader's table position holds.
    if (!body.isEqualNode(fresh)) body.replaceWith(fresh);
  }

  function render(s) {
    setText("live-users", s.users_online);
    setText("live-connections", s.connections_open);
    setText("live-flags", s.flags_open);
    setText("live-blocks", s.blocks_active);
    for (const [minutes, window] of Object.entries(s.connects)) {
      setText("live-cpm-" + minutes, window.per_minute);
      setText("live-connects-" + minutes, window.count);
    }
    const updated = document.getElementById("live-updated");
    updated.dateTime = s.generated_at;
    setText("live-updated", time(s.generated_at) + " UTC");
    const roomsNote = document.getElementById("live-rooms-note");
    const note = s.rooms_complete ? "" : "(partial)";
    if (roomsNote.textContent !== note) roomsNote.textContent = note;

    fillTable("live-rooms", s.rooms, (r) => {
      const tr = document.createElement("tr");
      tr.append(
        cell("th", link(connectionsUrl + "?room=" + encodeURIComponent(r.room), "#" + r.room)),
        cell("td", r.connections, "num"),
      );
      return tr;
    }, "No open connection is in a room.", 2);

    fillTable("live-servers", s.servers, (r) => {
      const tr = document.createElement("tr");
      let lease = "alive";
      if (!r.alive) {
        lease = document.createElement("strong");
        lease.className = "live-bad";
        lease.textContent = "lapsed";
      }
      tr.append(
        cell("th", link(connectionsUrl + "?server=" + encodeURIComponent(r.id), r.name)),
        cell("td", time(r.last_heartbeat)),
        cell("td", lease),
        cell("td", r.connections, "num"),
      );
      return tr;
    }, "No server process is running.", 4);

    fillTable("live-actions", s.actions, (r) => {
      const tr = document.createElement("tr");
      tr.append(
        cell("th", dateTime(r.at, 19)),
        cell("td", r.kind),
        cell("td", r.by),
        cell("td", r.whom),
        cell("td", r.reason),
        cell("td", r.until ? dateTime(r.until, 16) : "—"),
      );
      return tr;
    }, "No moderation action yet.", 6);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    setState("connecting", attempt ? "Reconnecting…" : "Connecting…");

    socket.addEventListener("open", () => {
      attempt = 0;
      setState("live", "Live");
    });

    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "snapshot") {
        render(frame);
        setState("live", "Live");
      } else if (frame.type === "error") {
        setState("stale", "Live, but the last update failed; retrying");
      }
    });

    socket.addEventListener("close", (event) => {
      if (event.code === 4003) {
        // Signed out, or no longer staff: reconnecting would only be refused.
        setState("closed", "Disconnected: this account may no longer see the dashboard. Reload to sign in again.");
        return;
      }
      // Exponential backoff with full jitter: 0.5 s doubling, capped at 30 s.
      const delay = Math.random() * Math.min(30000, 500 * 2 ** attempt);
      attempt += 1;
      setState("offline", "Disconnected; retrying in " + Math.max(1, Math.ceil(delay / 1000)) + " s");
      setTimeout(connect, delay);
    });
  }

  connect();
})();
