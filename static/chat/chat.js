/*
 * The chat client: one page, one WebSocket (PROTOCOL.md), every room and conversation.
 *
 * Plain JavaScript, no build step. Message data is only ever put into the page with
 * textContent, never as HTML.
 *
 * Other code on the page can listen to what the socket receives:
 *   window.addEventListener("chat:frame", (e) => e.detail)       every frame
 *   window.addEventListener("chat:notify", (e) => e.detail)      {topic, data}
 *   window.addEventListener("chat:job", (e) => e.detail)         {job_id, status, progress, detail}
 * and read window.chatApp (state, the reconnect policy) for debugging.
 */
(function () {
  "use strict";

  const root = document.getElementById("chat-app");
  if (!root) return;

  // --- constants ----------------------------------------------------------------------

  const PAGE_USER = root.dataset.user || "";
  const WS_PATH = root.dataset.wsPath || "/ws/chat/";
  const LOGIN_URL = root.dataset.loginUrl || "/accounts/login/";
  const STORE_PREFIX = "chat:v1:" + PAGE_USER + ":";
  const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
  const BODY_MAX = 4000;
  const HISTORY_LIMIT = 50;
  const HISTORY_TIMEOUT_MS = 15000;
  const TYPING_SEND_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 5000;
  const ROOMS_REFRESH_MS = 30000;
  const CONNECT_TIMEOUT_MS = 15000;
  const ACK_RESEND_MS = 10000; // resend (same client_id, so harmless) if no echo by then
  // A little under the server's token bucket (10/s, burst 30), so that a reconnect that
  // re-joins many rooms and re-sends an outbox never trips the rate limit.
  const SEND_RATE = 8;
  const SEND_BURST = 20;

  // --- the reconnect policy (PROTOCOL.md, "What a client does after a close") ---------

  const CLOSE_REASONS = {
    1000: "the connection was closed",
    1001: "the server is going away",
    1006: "the connection was lost",
    1009: "a message was too large",
    1011: "the server hit an error",
    1012: "the server is restarting",
    4000: "no answer from the server",
    4003: "disconnected by a moderator",
    4008: "too many messages too fast",
    4029: "blocked for reconnecting too often",
  };

  /** Seconds to wait before reconnecting after a close, or null: never by itself.
   *  `attempt` counts failed tries since the last successful connection. */
  function reconnectDelay(code, attempt, random) {
    const rnd = random || Math.random;
    if (code === 4003 || code === 4029) return null;
    if (code === 4008) return 10 + rnd() * 5;
    if (code === 1012 || code === 1001) return rnd() * 5;
    return rnd() * Math.min(30, 0.5 * Math.pow(2, attempt));
  }

  /** Whether a close counts as a failed attempt for the exponential backoff. */
  function closeUsesBackoff(code) {
    return [4003, 4029, 4008, 1012, 1001].indexOf(code) === -1;
  }

  // --- small helpers ------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "text") node.textContent = value;
        else if (key === "className") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function newClientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    let out = "c-" + Date.now().toString(36) + "-";
    if (window.crypto && window.crypto.getRandomValues) {
      const bytes = new Uint8Array(12);
      window.crypto.getRandomValues(bytes);
      for (const b of bytes) out += b.toString(16).padStart(2, "0");
    } else {
      for (let i = 0; i < 4; i++) out += Math.random().toString(36).slice(2, 8);
    }
    return out.slice(0, 64);
  }

  const store = {
    get(key, fallback) {
      try {
        const raw = window.localStorage.getItem(STORE_PREFIX + key);
        return raw === null ? fallback : JSON.parse(raw);
      } catch (e) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        window.localStorage.setItem(STORE_PREFIX + key, JSON.stringify(value));
      } catch (e) {
        /* storage full or disabled: the app still works, it just forgets on reload */
      }
    },
    clearAll() {
      try {
        const doomed = [];
        for (let i = 0; i < window.localStorage.length; i++) {
          const key = window.localStorage.key(i);
          if (key && key.startsWith(STORE_PREFIX)) doomed.push(key);
        }
        doomed.forEach((key) => window.localStorage.removeItem(key));
      } catch (e) {
        /* nothing to clear */
      }
    },
  };

  function isToday(date) {
    const now = new Date();
    return (
      date.getFullYear() === now.getFullYear() && date.getMonth() === now.getMonth() && date.getDate() === now.getDate()
    );
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (isNaN(date.getTime())) return { short: "", full: "" };
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const short = isToday(date) ? time : date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
    return { short, full: date.toLocaleString() };
  }

  function viewKey(kind, name) {
    return kind + ":" + name;
  }

  function viewLabel(view) {
    return view.kind === "room" ? "#" + view.name : "@" + view.name;
  }

  function viewHash(view) {
    return "#" + view.kind + "/" + encodeURIComponent(view.name);
  }

  function parseHash(hash) {
    const match = /^#(room|dm)\/(.+)$/.exec(hash || "");
    if (!match) return null;
    let name;
    try {
      name = decodeURIComponent(match[2]);
    } catch (e) {
      return null;
    }
    if (match[1] === "room" && !ROOM_RE.test(name)) return null;
    if (match[1] === "dm" && (name.length < 1 || name.length > 150)) return null;
    return { kind: match[1], name };
  }

  function normalizeRoom(text) {
    return text.trim().toLowerCase().replace(/^#/, "").replace(/\s+/g, "-");
  }

  // --- state ----------------------------------------------------------------------------

  const state = {
    me: PAGE_USER,
    views: new Map(), // key -> view
    current: null, // key of the view shown
    outbox: new Map(), // client_id -> entry (unacknowledged messages, rooms and private)
    directory: [], // from the `rooms` frame
    directoryLoaded: false,
  };

  function makeView(kind, name) {
    return {
      key: viewKey(kind, name),
      kind,
      name,
      messages: new Map(), // id -> message frame; deduplicates
      historyLoaded: false,
      historyPending: null, // {purpose, floor, timer}
      hasMore: null, // older messages on the server? null: not known yet
      unread: 0,
      joinState: "none", // rooms: none | joining | joined
      wasJoined: false,
      cursor: null, // rooms: the newest message id this client has accounted for
      online: new Set(),
      typing: new Map(), // user -> timer
      lastTypingSent: 0,
      catchupFloor: null,
    };
  }

  function getView(kind, name) {
    return state.views.get(viewKey(kind, name)) || null;
  }

  function ensureView(kind, name) {
    let view = getView(kind, name);
    if (!view) {
      view = makeView(kind, name);
      state.views.set(view.key, view);
      saveViews();
      renderNav();
    }
    return view;
  }

  function currentView() {
    return state.current ? state.views.get(state.current) || null : null;
  }

  function saveViews() {
    const rooms = [];
    const dms = [];
    for (const view of state.views.values()) (view.kind === "room" ? rooms : dms).push(view.name);
    store.set("views", { rooms, dms, current: state.current });
  }

  // The outbox lives in localStorage entry by entry (read-modify-write), so two tabs of
  // the same user do not overwrite each other's unsent messages.
  function outboxPersist(entry) {
    const saved = store.get("outbox", {});
    saved[entry.client_id] = {
      client_id: entry.client_id,
      kind: entry.kind,
      target: entry.target,
      body: entry.body,
      created_at: entry.created_at,
      status: entry.status,
      error: entry.error || "",
    };
    store.set("outbox", saved);
  }

  function outboxForget(clientId) {
    const saved = store.get("outbox", {});
    if (clientId in saved) {
      delete saved[clientId];
      store.set("outbox", saved);
    }
  }

  // --- DOM references ---------------------------------------------------------------------

  const dom = {
    conn: $("conn"),
    connState: $("conn-state"),
    connReason: $("conn-reason"),
    connDetail: $("conn-detail"),
    reconnect: $("reconnect-button"),
    banner: $("conn-banner"),
    sidebar: $("sidebar"),
    sidebarToggle: $("sidebar-toggle"),
    sidebarUnread: $("sidebar-unread"),
    joinForm: $("join-form"),
    roomInput: $("room-input"),
    roomError: $("room-error"),
    dmForm: $("dm-form"),
    dmInput: $("dm-input"),
    dmError: $("dm-error"),
    joinedList: $("joined-list"),
    joinedEmpty: $("joined-empty"),
    dmList: $("dm-list"),
    dmEmpty: $("dm-empty"),
    roomList: $("room-list"),
    roomsEmpty: $("rooms-empty"),
    roomsRefresh: $("rooms-refresh"),
    viewTitle: $("view-title"),
    viewSubtitle: $("view-subtitle"),
    onlineToggle: $("online-toggle"),
    onlineToggleCount: $("online-toggle-count"),
    messages: $("messages"),
    historyBar: $("history-bar"),
    loadOlder: $("load-older"),
    historyStatus: $("history-status"),
    messageList: $("message-list"),
    emptyState: $("empty-state"),
    emptyOpenSidebar: $("empty-open-sidebar"),
    jumpBottom: $("jump-bottom"),
    typing: $("typing"),
    composer: $("composer"),
    input: $("message-input"),
    send: $("send-button"),
    onlinePanel: $("online-panel"),
    onlineHeading: $("online-heading"),
    onlineCount: $("online-count"),
    onlineList: $("online-list"),
    onlineEmpty: $("online-empty"),
    toasts: $("toasts"),
    announcer: $("announcer"),
  };

  // --- toasts and announcements ----------------------------------------------------------

  const MAX_TOASTS = 4;
  const jobToasts = new Map();

  function toast(opts) {
    const kind = opts.kind || "info";
    const node = el("div", { className: "toast toast-" + kind, "data-testid": "toast", "data-kind": kind });
    const body = el("div", { className: "toast-body" });
    if (opts.title) body.append(el("p", { className: "toast-title", text: opts.title }));
    if (opts.text) body.append(el("p", { className: "toast-text", text: opts.text }));
    node.append(body);
    const close = el("button", {
      type: "button",
      className: "toast-close",
      "aria-label": "Dismiss",
      text: "×",
      onclick: () => dismissToast(node),
    });
    node.append(close);
    dom.toasts.append(node);
    while (dom.toasts.children.length > MAX_TOASTS) dom.toasts.firstElementChild.remove();
    const ttl = opts.ttl === undefined ? (kind === "error" ? 8000 : 6000) : opts.ttl;
    if (ttl) node._timer = setTimeout(() => dismissToast(node), ttl);
    return node;
  }

  function dismissToast(node) {
    if (node._timer) clearTimeout(node._timer);
    node.remove();
    for (const [id, t] of jobToasts) if (t.node === node) jobToasts.delete(id);
  }

  function announce(text) {
    // A fresh node per announcement, pruned, so screen readers read each once.
    dom.announcer.append(el("p", { text }));
    while (dom.announcer.children.length > 5) dom.announcer.firstElementChild.remove();
  }

  function summarize(data) {
    if (data === null || data === undefined) return "";
    if (typeof data === "string") return data;
    if (typeof data === "object") {
      for (const key of ["message", "text", "title", "body"]) {
        if (typeof data[key] === "string") return data[key];
      }
    }
    let text;
    try {
      text = JSON.stringify(data);
    } catch (e) {
      text = String(data);
    }
    return text.length > 200 ? text.slice(0, 199) + "…" : text;
  }

  // --- connection ------------------------------------------------------------------------

  const conn = {
    ws: null,
    seq: 0, // increments per socket
    welcomed: false,
    everConnected: false,
    attempt: 0,
    heartbeat: Number(root.dataset.heartbeat) || 20,
    lastFrameAt: 0,
    reconnectTimer: null,
    countdownTimer: null,
    nextAttemptAt: 0,
    connectTimer: null,
    pingTimer: null,
    watchdogTimer: null,
    kickedReason: null,
    unloading: false,
    failuresWithoutWelcome: 0,
    signedOut: false,
    // outgoing frames, paced by a token bucket
    queue: [],
    tokens: SEND_BURST,
    refilledAt: performance.now(),
    pumpTimer: null,
    // FIFO of callbacks for sent pings: the server answers frames in order, so a pong
    // proves every earlier frame was handled (used as a barrier after `joined.more`).
    pongWaiters: [],
    pendingJoins: [], // room names, in the order joins were sent
    historyQueue: [], // view keys, in the order history requests were sent
  };

  function isOpen() {
    return conn.ws !== null && conn.ws.readyState === WebSocket.OPEN && conn.welcomed;
  }

  function setConnState(stateName, reason, detail) {
    dom.conn.dataset.state = stateName;
    dom.connState.textContent = stateName;
    dom.connReason.textContent = reason ? ": " + reason : "";
    dom.connDetail.textContent = detail || "";
    dom.reconnect.hidden = stateName !== "disconnected";
    if (stateName === "connected") showBanner(null);
    document.body.dataset.connection = stateName;
  }

  function showBanner(nodes) {
    if (!nodes) {
      dom.banner.hidden = true;
      dom.banner.replaceChildren();
      return;
    }
    dom.banner.replaceChildren(...nodes);
    dom.banner.hidden = false;
  }

  function clearTimer(name, clear) {
    if (conn[name]) (clear || clearTimeout)(conn[name]);
    conn[name] = null;
  }

  function connect() {
    clearTimer("reconnectTimer");
    clearTimer("countdownTimer", clearInterval);
    if (conn.ws) return;
    const protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url = protocol + "//" + window.location.host + WS_PATH;
    conn.seq += 1;
    conn.welcomed = false;
    if (conn.everConnected || conn.attempt > 0) setConnState("reconnecting", "", "connecting now…");
    else setConnState("connecting", "", "");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      handleClose(1006);
      return;
    }
    conn.ws = ws;
    conn.lastFrameAt = Date.now();
    conn.connectTimer = setTimeout(() => dropSocket(4000), CONNECT_TIMEOUT_MS);
    ws.addEventListener("message", (event) => {
      if (conn.ws !== ws) return;
      conn.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame.type === "string") dispatchFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      handleClose(event.code);
    });
  }

  /** Give up on the current socket without waiting for the browser (dead network). */
  function dropSocket(code) {
    const ws = conn.ws;
    if (!ws) return;
    conn.ws = null;
    try {
      ws.close(4000, "client timeout");
    } catch (e) {
      /* already closing */
    }
    handleClose(code);
  }

  function resetConnectionState() {
    clearTimer("connectTimer");
    clearTimer("pingTimer", clearInterval);
    clearTimer("watchdogTimer", clearInterval);
    clearTimer("pumpTimer");
    conn.welcomed = false;
    conn.queue = [];
    conn.pongWaiters = [];
    conn.pendingJoins = [];
    conn.historyQueue = [];
    for (const view of state.views.values()) {
      if (view.kind === "room") {
        view.joinState = "none";
        view.online.clear();
      }
      if (view.historyPending) {
        clearTimeout(view.historyPending.timer);
        view.historyPending = null;
      }
      for (const timer of view.typing.values()) clearTimeout(timer);
      view.typing.clear();
    }
    renderTyping();
    renderOnline();
    renderHistoryBar();
  }

  function handleClose(code) {
    const wasWelcomed = conn.welcomed;
    resetConnectionState();
    if (conn.unloading) return;
    if (!wasWelcomed) conn.failuresWithoutWelcome += 1;
    const delay = reconnectDelay(code, conn.attempt);
    let reason = CLOSE_REASONS[code] || (wasWelcomed ? "the connection was lost" : "the server is unreachable");
    if (code === 4003 && conn.kickedReason && reason.indexOf(conn.kickedReason) === -1) {
      reason += " (reason: " + conn.kickedReason + ")";
    }
    if (!wasWelcomed && code === 1006) reason = "the server is unreachable";
    if (delay === null) {
      setConnState("disconnected", reason, "");
      showBanner([
        el("strong", { text: "You were " + reason + "." }),
        " Messages you write here are kept, and sent once you reconnect. ",
        el("button", {
          type: "button",
          className: "button button-small banner-button",
          "data-testid": "banner-reconnect",
          text: "Reconnect",
          onclick: manualReconnect,
        }),
      ]);
      // The server also closes a user's sockets with 4003 when they log out (in another
      // tab), change their password or are deactivated: if so, say that instead.
      if (code === 4003) checkSignedIn();
      return;
    }
    if (closeUsesBackoff(code)) conn.attempt += 1;
    if (conn.failuresWithoutWelcome >= 3 && conn.failuresWithoutWelcome % 3 === 0) checkSignedIn();
    scheduleReconnect(delay, reason);
  }

  function scheduleReconnect(seconds, reason) {
    clearTimer("reconnectTimer");
    clearTimer("countdownTimer", clearInterval);
    conn.nextAttemptAt = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((conn.nextAttemptAt - Date.now()) / 1000));
      let detail = left > 0 ? "next attempt in " + left + " s" : "retrying…";
      if (navigator.onLine === false) detail = "you appear to be offline; " + detail;
      if (conn.signedOut) detail = "you are signed out; log in again";
      setConnState("reconnecting", reason, detail);
    };
    tick();
    conn.countdownTimer = setInterval(tick, 1000);
    conn.reconnectTimer = setTimeout(connect, seconds * 1000);
  }

  /** After repeated refused handshakes: is the session still valid? (A 403 looks like
   *  any other failure to a browser.) Only changes what the user is told. */
  function checkSignedIn() {
    fetch(window.location.pathname, { method: "GET", redirect: "manual", credentials: "same-origin" })
      .then((response) => {
        conn.signedOut = response.type === "opaqueredirect" || response.status === 302;
        if (conn.signedOut) {
          if (dom.conn.dataset.state === "disconnected") dom.connReason.textContent = ": you are signed out";
          showBanner([
            el("strong", { text: "Your session has ended." }),
            " ",
            el("a", { href: LOGIN_URL + "?next=" + encodeURIComponent("/" + window.location.hash), text: "Log in again" }),
            " to reconnect. Unsent messages are kept in this browser.",
          ]);
        }
      })
      .catch(() => {
        /* server down: nothing to learn */
      });
  }

  function manualReconnect() {
    conn.attempt = 0;
    conn.kickedReason = null;
    dom.reconnect.hidden = true;
    connect();
  }

  // --- sending -------------------------------------------------------------------------

  function send(frame) {
    if (!isOpen()) return false;
    if (frame.type === "typing" && conn.queue.length > 0) return false; // droppable
    conn.queue.push(frame);
    if (frame.type === "ping") conn.pongWaiters.push(frame._then || null);
    pump();
    return true;
  }

  function pump() {
    const now = performance.now();
    conn.tokens = Math.min(SEND_BURST, conn.tokens + ((now - conn.refilledAt) / 1000) * SEND_RATE);
    conn.refilledAt = now;
    while (conn.queue.length > 0 && conn.tokens >= 1 && conn.ws && conn.ws.readyState === WebSocket.OPEN) {
      const frame = conn.queue.shift();
      const wire = {};
      for (const [key, value] of Object.entries(frame)) if (key !== "_then") wire[key] = value;
      conn.ws.send(JSON.stringify(wire));
      conn.tokens -= 1;
    }
    if (conn.queue.length > 0 && !conn.pumpTimer) {
      const wait = Math.ceil(((1 - conn.tokens) / SEND_RATE) * 1000) + 5;
      conn.pumpTimer = setTimeout(() => {
        conn.pumpTimer = null;
        pump();
      }, wait);
    }
  }

  function afterServerCatchesUp(callback) {
    send({ type: "ping", _then: callback });
  }

  function sendJoin(view) {
    if (!isOpen() || view.kind !== "room" || view.joinState === "joining") return;
    const frame = { type: "join", room: view.name };
    if (view.cursor !== null) frame.since = view.cursor;
    else if (view.wasJoined) frame.since = 0; // empty when we joined: everything is new
    view.joinState = "joining";
    conn.pendingJoins.push(view.name);
    send(frame);
  }

  function requestRooms() {
    send({ type: "rooms" });
  }

  let roomsSoonTimer = null;
  function requestRoomsSoon() {
    if (roomsSoonTimer) return;
    roomsSoonTimer = setTimeout(() => {
      roomsSoonTimer = null;
      requestRooms();
    }, 400);
  }

  function requestHistory(view, purpose, before) {
    if (!isOpen() || view.historyPending) return;
    const frame = { type: "history", limit: HISTORY_LIMIT };
    if (view.kind === "room") frame.room = view.name;
    else frame.with = view.name;
    if (before !== undefined && before !== null) frame.before = before;
    view.historyPending = {
      purpose,
      timer: setTimeout(() => {
        view.historyPending = null;
        renderHistoryBar();
      }, HISTORY_TIMEOUT_MS),
    };
    conn.historyQueue.push(view.key);
    send(frame);
    renderHistoryBar();
  }

  function ensureHistory(view) {
    if (view && !view.historyLoaded && !view.historyPending) requestHistory(view, "initial");
  }

  function oldestId(view) {
    let min = null;
    for (const id of view.messages.keys()) if (min === null || id < min) min = id;
    return min;
  }

  function newestId(view) {
    let max = null;
    for (const id of view.messages.keys()) if (max === null || id > max) max = id;
    return max;
  }

  function loadOlder() {
    const view = currentView();
    if (!view || view.historyPending || view.hasMore === false) return;
    if (!view.historyLoaded) {
      ensureHistory(view);
      return;
    }
    requestHistory(view, "older", oldestId(view));
  }

  // --- the outbox: unacknowledged messages ------------------------------------------------

  function outboxFor(view) {
    const list = [];
    for (const entry of state.outbox.values()) {
      if (entry.kind === view.kind && entry.target === view.name) list.push(entry);
    }
    return list;
  }

  function trySend(entry) {
    if (!isOpen() || entry.status !== "pending") return;
    if (entry.kind === "room") {
      const view = getView("room", entry.target);
      if (!view || view.joinState !== "joined") return; // sent once the join answers
      send({ type: "chat", room: entry.target, body: entry.body, client_id: entry.client_id });
    } else {
      send({ type: "private", to: entry.target, body: entry.body, client_id: entry.client_id });
    }
    entry.sentSeq = conn.seq;
    entry.sentAt = Date.now();
  }

  function flushOutbox(filter) {
    for (const entry of state.outbox.values()) {
      if (entry.status === "pending" && entry.sentSeq !== conn.seq && filter(entry)) trySend(entry);
    }
  }

  function resendStale() {
    const now = Date.now();
    for (const entry of state.outbox.values()) {
      if (entry.status === "pending" && entry.sentSeq === conn.seq && now - entry.sentAt > ACK_RESEND_MS) {
        trySend(entry);
      }
    }
  }

  function acknowledge(clientId) {
    if (!state.outbox.has(clientId)) return;
    state.outbox.delete(clientId);
    outboxForget(clientId);
    const node = dom.messageList.querySelector('li[data-client-id="' + cssEscape(clientId) + '"]');
    if (node) node.remove();
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : String(value).replace(/["\\]/g, "\\$&");
  }

  function markFailed(clientId, message) {
    const entry = state.outbox.get(clientId);
    if (!entry) return;
    entry.status = "failed";
    entry.error = message;
    outboxPersist(entry);
    replacePending(entry);
  }

  function retry(clientId) {
    const entry = state.outbox.get(clientId);
    if (!entry) return;
    entry.status = "pending";
    entry.error = "";
    entry.sentSeq = null;
    outboxPersist(entry);
    replacePending(entry);
    trySend(entry);
  }

  function discard(clientId) {
    state.outbox.delete(clientId);
    outboxForget(clientId);
    const node = dom.messageList.querySelector('li[data-client-id="' + cssEscape(clientId) + '"]');
    if (node) node.remove();
    renderEmptyState();
  }

  // --- incoming frames -----------------------------------------------------------------

  const handlers = {
    welcome(frame) {
      clearTimer("connectTimer");
      conn.welcomed = true;
      conn.everConnected = true;
      conn.attempt = 0;
      conn.failuresWithoutWelcome = 0;
      conn.signedOut = false;
      conn.kickedReason = null;
      if (frame.user) state.me = frame.user;
      if (Number(frame.heartbeat) > 0) conn.heartbeat = Number(frame.heartbeat);
      setConnState("connected", "", "");
      clearTimer("pingTimer", clearInterval);
      clearTimer("watchdogTimer", clearInterval);
      conn.pingTimer = setInterval(() => send({ type: "ping" }), conn.heartbeat * 1000);
      conn.watchdogTimer = setInterval(() => {
        if (Date.now() - conn.lastFrameAt > 2 * conn.heartbeat * 1000) dropSocket(4000);
        else resendStale();
      }, 1000);
      // The current view first, so what the user looks at comes back first.
      const cur = currentView();
      const ordered = [...state.views.values()].sort((a, b) => (a === cur ? -1 : b === cur ? 1 : 0));
      for (const view of ordered) {
        if (view.kind === "room") sendJoin(view);
      }
      flushOutbox((entry) => entry.kind === "dm");
      for (const view of ordered) {
        if (view.kind === "dm" && view.historyLoaded) {
          // Private messages have no `since`: fetch the newest page and go back until
          // it meets what we already hold.
          view.catchupFloor = newestId(view);
          requestHistory(view, "catchup");
        }
      }
      if (cur) ensureHistory(cur);
      requestRooms();
    },

    joined(frame) {
      const view = getView("room", frame.room);
      const index = conn.pendingJoins.indexOf(frame.room);
      if (index !== -1) {
        // Joins are answered in order; any earlier one without an answer was dropped.
        const skipped = conn.pendingJoins.splice(0, index + 1).slice(0, -1);
        for (const name of skipped) {
          const other = getView("room", name);
          if (other && other.joinState === "joining") {
            other.joinState = "none";
            sendJoin(other);
          }
        }
      }
      if (!view) return; // left meanwhile
      view.joinState = "joined";
      view.wasJoined = true;
      view.online = new Set(frame.online || []);
      if (!frame.more && typeof frame.last_id === "number") {
        view.cursor = view.cursor === null ? frame.last_id : Math.max(view.cursor, frame.last_id);
      }
      if (frame.more) {
        // More than the server recovers at once were missed: once the recovered
        // messages have all arrived, join again from the newest one received.
        afterServerCatchesUp(() => {
          if (getView("room", view.name) === view && view.joinState === "joined") {
            view.joinState = "none";
            sendJoin(view);
          }
        });
      }
      flushOutbox((entry) => entry.kind === "room" && entry.target === view.name);
      syncDirectoryCount(view);
      if (view.key === state.current) {
        renderOnline();
        ensureHistory(view);
      }
      requestRoomsSoon();
    },

    left() {
      requestRoomsSoon();
    },

    chat(frame) {
      const view = getView("room", frame.room);
      if (!view) return;
      receiveMessage(view, frame);
    },

    private(frame) {
      const other = frame.sender === state.me ? frame.to : frame.sender;
      if (typeof other !== "string") return;
      const view = ensureView("dm", other);
      receiveMessage(view, frame);
    },

    history(frame) {
      const kind = typeof frame.room === "string" ? "room" : "dm";
      const view = getView(kind, kind === "room" ? frame.room : frame.with);
      const qi = conn.historyQueue.indexOf(kind + ":" + (kind === "room" ? frame.room : frame.with));
      if (qi !== -1) conn.historyQueue.splice(0, qi + 1);
      if (!view) return;
      const request = view.historyPending || { purpose: "initial" };
      if (view.historyPending) clearTimeout(view.historyPending.timer);
      view.historyPending = null;
      const messages = Array.isArray(frame.messages) ? frame.messages : [];
      const heldOldest = oldestId(view);
      let minReturned = null;
      for (const message of messages) {
        if (typeof message.id !== "number") continue;
        if (minReturned === null || message.id < minReturned) minReturned = message.id;
      }
      const wasCurrent = view.key === state.current;
      const before = wasCurrent ? scrollSnapshot() : null;
      for (const message of messages) storeMessage(view, message);
      if (request.purpose === "initial" || request.purpose === "older") view.historyLoaded = true;
      if (minReturned === null) {
        if (request.purpose !== "catchup") view.hasMore = false;
      } else if (heldOldest === null || minReturned <= heldOldest) {
        view.hasMore = !!frame.has_more;
      }
      if (
        request.purpose === "catchup" &&
        frame.has_more &&
        minReturned !== null &&
        view.catchupFloor !== null &&
        minReturned > view.catchupFloor
      ) {
        requestHistory(view, "catchup", minReturned);
      }
      if (wasCurrent) {
        renderMessages();
        if (request.purpose === "older") restoreScroll(before);
        else if (request.purpose === "initial") scrollToBottom();
        else if (before && before.nearBottom) scrollToBottom();
      }
    },

    rooms(frame) {
      state.directory = Array.isArray(frame.rooms) ? frame.rooms : [];
      state.directoryLoaded = true;
      for (const room of state.directory) {
        const view = getView("room", room.room);
        if (view && view.joinState === "joined") room.online = view.online.size;
      }
      renderDirectory();
    },

    presence(frame) {
      const view = getView("room", frame.room);
      if (!view || typeof frame.user !== "string") return;
      if (frame.event === "join") view.online.add(frame.user);
      else if (frame.event === "leave") {
        view.online.delete(frame.user);
        stopTyping(view, frame.user);
      }
      if (view.key === state.current) renderOnline();
      syncDirectoryCount(view);
    },

    typing(frame) {
      const view = getView("room", frame.room);
      if (!view || typeof frame.user !== "string" || frame.user === state.me) return;
      const old = view.typing.get(frame.user);
      if (old) clearTimeout(old);
      view.typing.set(
        frame.user,
        setTimeout(() => stopTyping(view, frame.user), TYPING_SHOW_MS),
      );
      if (view.key === state.current) renderTyping();
    },

    pong() {
      const waiter = conn.pongWaiters.shift();
      if (typeof waiter === "function") waiter();
    },

    notify(frame) {
      toast({ kind: "info", title: String(frame.topic || "Notification"), text: summarize(frame.data) });
      window.dispatchEvent(new CustomEvent("chat:notify", { detail: { topic: frame.topic, data: frame.data } }));
    },

    job(frame) {
      showJob(frame);
      window.dispatchEvent(new CustomEvent("chat:job", { detail: frame }));
    },

    error(frame) {
      const code = String(frame.code || "error");
      const message = String(frame.message || "");
      if (typeof frame.ref === "string" && state.outbox.has(frame.ref)) {
        if (code === "rate_limited" || code === "internal") {
          // Safe to resend with the same client_id after a pause.
          const entry = state.outbox.get(frame.ref);
          entry.sentAt = Date.now() - ACK_RESEND_MS + 3000;
        } else {
          markFailed(frame.ref, message || code);
          return;
        }
      }
      if (frame.ref === "join") joinFailed(code, message);
      if (frame.ref === "history") historyFailed(code, message);
      if (code === "rate_limited") {
        // The refused frame is unknown (ref is null): anything unacknowledged is resent
        // (same client_id) a few seconds later by the watchdog.
        for (const entry of state.outbox.values()) {
          if (entry.status === "pending") entry.sentAt = Math.min(entry.sentAt || 0, Date.now() - ACK_RESEND_MS + 3000);
        }
      }
      toast({ kind: "error", title: "Error: " + code, text: message });
    },

    kicked(frame) {
      // The close (4003) follows at once; its banner shows this reason.
      conn.kickedReason = typeof frame.reason === "string" && frame.reason ? frame.reason : null;
    },
  };

  function dispatchFrame(frame) {
    const handler = Object.prototype.hasOwnProperty.call(handlers, frame.type) ? handlers[frame.type] : null;
    if (handler) handler(frame);
    window.dispatchEvent(new CustomEvent("chat:frame", { detail: frame }));
  }

  function joinFailed(code, message) {
    const name = conn.pendingJoins.shift();
    const view = name ? getView("room", name) : null;
    if (!view) return;
    view.joinState = "none";
    if (code === "forbidden" || code === "not_found" || code === "invalid") {
      toast({ kind: "error", title: "Could not join #" + name, text: message });
      removeView(view);
    }
  }

  function historyFailed(code, message) {
    const key = conn.historyQueue.shift();
    const view = key ? state.views.get(key) : null;
    if (!view || !view.historyPending) return;
    clearTimeout(view.historyPending.timer);
    view.historyPending = null;
    if (code === "not_found" && view.kind === "dm" && view.messages.size === 0 && outboxFor(view).length === 0) {
      toast({ kind: "error", title: "No such user", text: message });
      removeView(view);
      return;
    }
    if (view.key === state.current) {
      renderHistoryBar();
      dom.historyStatus.textContent = "Could not load messages: " + message;
    }
  }

  function stopTyping(view, user) {
    const timer = view.typing.get(user);
    if (timer === undefined) return;
    clearTimeout(timer);
    view.typing.delete(user);
    if (view.key === state.current) renderTyping();
  }

  function storeMessage(view, message) {
    if (typeof message.id !== "number") return false;
    if (message.sender === state.me && message.client_id) acknowledge(message.client_id);
    if (view.kind === "room") view.cursor = view.cursor === null ? message.id : Math.max(view.cursor, message.id);
    if (view.messages.has(message.id)) return false;
    view.messages.set(message.id, message);
    return true;
  }

  function receiveMessage(view, message) {
    const isCurrent = view.key === state.current;
    const snapshot = isCurrent ? scrollSnapshot() : null;
    const isNew = storeMessage(view, message);
    if (!isNew) return;
    const own = message.sender === state.me;
    stopTyping(view, message.sender);
    if (isCurrent) {
      insertMessage(message);
      renderEmptyState();
      renderHistoryBar();
      if (own || snapshot.nearBottom) scrollToBottom();
      else dom.jumpBottom.hidden = false;
      if (!own) announce(message.sender + ": " + String(message.body).slice(0, 200));
      if (document.hidden && !own) {
        view.unread += 1;
        renderNav();
      }
    } else if (!own) {
      view.unread += 1;
      renderNav();
      if (view.kind === "dm") announce("New message from " + message.sender);
    }
  }

  function showJob(frame) {
    const id = String(frame.job_id);
    let entry = jobToasts.get(id);
    if (!entry) {
      const node = toast({ kind: "job", title: "Job " + id, ttl: 0 });
      const bar = el("progress", { max: "1", value: "0", "aria-label": "Progress of job " + id });
      const label = el("p", { className: "toast-text" });
      node.querySelector(".toast-body").append(bar, label);
      entry = { node, bar, label };
      jobToasts.set(id, entry);
    }
    const progress = Math.max(0, Math.min(1, Number(frame.progress) || 0));
    entry.bar.value = progress;
    const status = String(frame.status || "");
    entry.label.textContent = status + (frame.detail ? " — " + summarize(frame.detail) : "");
    entry.node.dataset.status = status;
    if (["valid", "invalid", "failed"].indexOf(status) !== -1) {
      entry.bar.value = status === "valid" ? 1 : progress;
      entry.node.className = "toast toast-" + (status === "valid" ? "success" : "error");
      if (entry.node._timer) clearTimeout(entry.node._timer);
      entry.node._timer = setTimeout(() => dismissToast(entry.node), 8000);
    }
  }

  // --- rendering ---------------------------------------------------------------------

  function renderNav() {
    const build = (list, kind, empty) => {
      const views = [...state.views.values()].filter((v) => v.kind === kind).sort((a, b) => a.name.localeCompare(b.name));
      const nodes = views.map((view) => {
        const current = view.key === state.current;
        const link = el(
          "a",
          {
            href: viewHash(view),
            className: "nav-item" + (current ? " is-current" : "") + (view.unread ? " has-unread" : ""),
            "aria-current": current ? "page" : null,
            "data-testid": kind === "room" ? "joined-room" : "dm-item",
            "data-name": view.name,
          },
          [
            el("span", { className: "nav-name", text: viewLabel(view) }),
            view.unread
              ? el("span", {
                  className: "badge",
                  "data-testid": "unread-badge",
                  text: view.unread > 99 ? "99+" : String(view.unread),
                })
              : null,
            view.unread ? el("span", { className: "sr-only", text: " unread messages" }) : null,
          ],
        );
        const remove = el("button", {
          type: "button",
          className: "nav-remove",
          "aria-label": (kind === "room" ? "Leave " : "Close conversation with ") + viewLabel(view),
          title: kind === "room" ? "Leave room" : "Close conversation",
          text: "×",
          onclick: () => (kind === "room" ? leaveRoom(view) : removeView(view)),
        });
        return el("li", { className: "nav-row" + (current ? " is-current" : "") }, [link, remove]);
      });
      list.replaceChildren(...nodes);
      empty.hidden = nodes.length > 0;
    };
    build(dom.joinedList, "room", dom.joinedEmpty);
    build(dom.dmList, "dm", dom.dmEmpty);
    let unread = 0;
    for (const view of state.views.values()) unread += view.unread;
    dom.sidebarUnread.hidden = unread === 0;
    dom.sidebarUnread.textContent = unread > 99 ? "99+" : String(unread);
    const cur = currentView();
    document.title = (unread ? "(" + unread + ") " : "") + (cur ? viewLabel(cur) + " · " : "") + "Chat";
    renderDirectory();
  }

  /** Keep the directory's online count of a joined room in step with its presence. */
  function syncDirectoryCount(view) {
    const entry = state.directory.find((room) => room.room === view.name);
    if (entry && entry.online !== view.online.size) {
      entry.online = view.online.size;
      renderDirectory();
    }
  }

  function renderDirectory() {
    const nodes = state.directory.map((room) => {
      const joined = !!getView("room", room.room);
      const count = Number(room.online) || 0;
      return el("li", {}, [
        el(
          "button",
          {
            type: "button",
            className: "room-entry" + (joined ? " is-joined" : ""),
            "data-room": room.room,
            "data-testid": "room-entry",
            onclick: () => openRoom(room.room, true),
          },
          [
            el("span", { className: "room-entry-name" }, [
              el("span", { text: "#" + room.room }),
              room.title && room.title !== room.room ? el("span", { className: "room-entry-title", text: room.title }) : null,
            ]),
            el("span", {
              className: "room-entry-count" + (count ? " is-active" : ""),
              "data-testid": "room-online-count",
              text: count + " online",
            }),
          ],
        ),
      ]);
    });
    dom.roomList.replaceChildren(...nodes);
    dom.roomsEmpty.hidden = nodes.length > 0 || !state.directoryLoaded;
  }

  function renderHeader() {
    const view = currentView();
    if (!view) {
      dom.viewTitle.textContent = "No room selected";
      dom.viewSubtitle.textContent = "";
      dom.input.placeholder = "Pick a room first";
      dom.input.disabled = true;
      dom.send.disabled = true;
      dom.onlineToggle.hidden = true;
      return;
    }
    dom.viewTitle.textContent = viewLabel(view);
    dom.viewSubtitle.textContent = view.kind === "dm" ? "Private conversation with " + view.name : "";
    dom.input.placeholder = "Message " + viewLabel(view);
    dom.input.disabled = false;
    dom.send.disabled = false;
    dom.onlineToggle.hidden = view.kind !== "room";
  }

  function renderOnline() {
    const view = currentView();
    root.classList.toggle("no-online", !view || view.kind !== "room");
    if (!view || view.kind !== "room") {
      dom.onlineList.replaceChildren();
      dom.onlineCount.textContent = "";
      dom.onlineEmpty.textContent = "";
      return;
    }
    const names = [...view.online].sort((a, b) => a.localeCompare(b));
    dom.onlineList.replaceChildren(
      ...names.map((name) =>
        el("li", { className: "online-user", "data-user": name, "data-testid": "online-user" }, [
          el("span", { className: "presence-dot", "aria-hidden": "true" }),
          el("span", { text: name }),
          name === state.me ? el("span", { className: "you", text: " (you)" }) : null,
          name !== state.me
            ? el("button", {
                type: "button",
                className: "online-dm",
                "aria-label": "Message " + name,
                title: "Message " + name,
                text: "✉",
                onclick: () => openView(ensureView("dm", name), true),
              })
            : null,
        ]),
      ),
    );
    const known = view.joinState === "joined";
    dom.onlineCount.textContent = known ? String(names.length) : "";
    dom.onlineToggleCount.textContent = known ? String(names.length) : "–";
    dom.onlineEmpty.textContent =
      view.joinState === "joined" ? (names.length ? "" : "Nobody here right now.") : "Not connected to this room.";
  }

  function renderTyping() {
    const view = currentView();
    const users = view ? [...view.typing.keys()].sort() : [];
    let text = "";
    if (users.length === 1) text = users[0] + " is typing…";
    else if (users.length === 2) text = users[0] + " and " + users[1] + " are typing…";
    else if (users.length > 2) text = "Several people are typing…";
    dom.typing.textContent = text;
    dom.typing.classList.toggle("is-active", !!text);
  }

  function renderHistoryBar() {
    const view = currentView();
    if (!view) {
      dom.historyBar.hidden = true;
      return;
    }
    dom.historyBar.hidden = false;
    const loading = !!view.historyPending && view.historyPending.purpose !== "catchup";
    if (loading) {
      dom.loadOlder.hidden = true;
      dom.historyStatus.textContent = "Loading messages…";
    } else if (view.hasMore === false) {
      dom.loadOlder.hidden = true;
      dom.historyStatus.textContent =
        view.messages.size > 0 ? "This is the beginning of " + viewLabel(view) + "." : "";
    } else {
      dom.loadOlder.hidden = !view.historyLoaded && !isOpen();
      dom.loadOlder.disabled = !isOpen();
      dom.historyStatus.textContent = isOpen() ? "" : "Older messages load once connected.";
    }
  }

  function renderEmptyState() {
    const view = currentView();
    const empty = dom.emptyState;
    dom.emptyOpenSidebar.hidden = !!view;
    if (!view) {
      empty.hidden = false;
      empty.querySelector("h2").textContent = "Welcome to Chat";
      empty.querySelector("p").textContent = "Join a room from the list, or create one by typing its name.";
      return;
    }
    const hasAny = view.messages.size > 0 || outboxFor(view).length > 0;
    empty.hidden = hasAny || !view.historyLoaded;
    if (!empty.hidden) {
      empty.querySelector("h2").textContent = "No messages yet";
      empty.querySelector("p").textContent =
        view.kind === "room" ? "Be the first to say something in " + viewLabel(view) + "." : "Say hello to " + view.name + ".";
    }
  }

  function messageNode(message) {
    const own = message.sender === state.me;
    const time = formatTime(message.created_at);
    return el(
      "li",
      {
        className: "msg" + (own ? " msg-own" : ""),
        "data-message-id": String(message.id),
        "data-testid": "message",
        "data-sender": message.sender,
      },
      [
        el("div", { className: "msg-meta" }, [
          el("span", { className: "msg-sender", "data-testid": "message-sender", text: String(message.sender) }),
          own ? el("span", { className: "msg-you", text: "you" }) : null,
          el("time", { className: "msg-time", datetime: message.created_at, title: time.full, text: time.short }),
        ]),
        el("p", { className: "msg-body", "data-testid": "message-body", text: String(message.body) }),
      ],
    );
  }

  function pendingNode(entry) {
    const time = formatTime(entry.created_at);
    const failed = entry.status === "failed";
    return el(
      "li",
      {
        className: "msg msg-own " + (failed ? "msg-failed" : "msg-pending"),
        "data-client-id": entry.client_id,
        "data-testid": "pending-message",
        "data-sender": state.me,
      },
      [
        el("div", { className: "msg-meta" }, [
          el("span", { className: "msg-sender", text: state.me }),
          el("span", { className: "msg-you", text: "you" }),
          el("time", { className: "msg-time", datetime: entry.created_at, title: time.full, text: time.short }),
          el("span", {
            className: "msg-status",
            "data-testid": "message-status",
            text: failed ? "not sent" : "sending…",
          }),
        ]),
        el("p", { className: "msg-body", "data-testid": "message-body", text: entry.body }),
        failed
          ? el("div", { className: "msg-actions" }, [
              el("span", { className: "msg-error", text: entry.error || "The server refused this message." }),
              el("button", {
                type: "button",
                className: "button button-small",
                "data-testid": "retry-button",
                text: "Retry",
                onclick: () => retry(entry.client_id),
              }),
              el("button", {
                type: "button",
                className: "button button-small button-quiet",
                text: "Discard",
                onclick: () => discard(entry.client_id),
              }),
            ])
          : null,
      ],
    );
  }

  function replacePending(entry) {
    const node = dom.messageList.querySelector('li[data-client-id="' + cssEscape(entry.client_id) + '"]');
    if (node) node.replaceWith(pendingNode(entry));
  }

  function insertMessage(message) {
    const node = messageNode(message);
    // Confirmed messages are sorted by id; pending ones stay after them.
    let anchor = null;
    let child = dom.messageList.lastElementChild;
    while (child) {
      if (child.dataset.messageId === undefined) {
        anchor = child;
      } else if (Number(child.dataset.messageId) > message.id) {
        anchor = child;
      } else {
        break;
      }
      child = child.previousElementSibling;
    }
    dom.messageList.insertBefore(node, anchor);
  }

  function renderMessages() {
    const view = currentView();
    if (!view) {
      dom.messageList.replaceChildren();
      renderEmptyState();
      renderHistoryBar();
      return;
    }
    const ids = [...view.messages.keys()].sort((a, b) => a - b);
    const nodes = ids.map((id) => messageNode(view.messages.get(id)));
    for (const entry of outboxFor(view)) nodes.push(pendingNode(entry));
    dom.messageList.replaceChildren(...nodes);
    renderEmptyState();
    renderHistoryBar();
  }

  function scrollSnapshot() {
    const box = dom.messages;
    return {
      height: box.scrollHeight,
      top: box.scrollTop,
      nearBottom: box.scrollHeight - box.scrollTop - box.clientHeight < 80,
    };
  }

  function restoreScroll(snapshot) {
    if (!snapshot) return;
    dom.messages.scrollTop = snapshot.top + (dom.messages.scrollHeight - snapshot.height);
  }

  function scrollToBottom() {
    dom.messages.scrollTop = dom.messages.scrollHeight;
    dom.jumpBottom.hidden = true;
  }

  function renderAll() {
    renderHeader();
    renderNav();
    renderMessages();
    renderOnline();
    renderTyping();
  }

  // --- navigation ---------------------------------------------------------------------

  function openView(view, userAction) {
    if (!view) return;
    state.current = view.key;
    view.unread = 0;
    saveViews();
    const hash = viewHash(view);
    if (window.location.hash !== hash) history.replaceState(null, "", hash);
    renderAll();
    scrollToBottom();
    if (isOpen()) {
      if (view.kind === "room" && view.joinState === "none") sendJoin(view);
      ensureHistory(view);
    }
    setSidebar(false);
    setOnlinePanel(false);
    if (userAction && !isNarrow()) dom.input.focus();
  }

  function openRoom(name, userAction) {
    const view = ensureView("room", name);
    openView(view, userAction);
    requestRoomsSoon();
  }

  function closeCurrentIf(view) {
    if (state.current !== view.key) return;
    const next = [...state.views.values()].find((v) => v !== view);
    if (next) openView(next, false);
    else {
      state.current = null;
      saveViews();
      history.replaceState(null, "", window.location.pathname + window.location.search);
      renderAll();
    }
  }

  function removeView(view) {
    for (const timer of view.typing.values()) clearTimeout(timer);
    if (view.historyPending) clearTimeout(view.historyPending.timer);
    for (const entry of outboxFor(view)) {
      state.outbox.delete(entry.client_id);
      outboxForget(entry.client_id);
    }
    state.views.delete(view.key);
    closeCurrentIf(view);
    saveViews();
    renderNav();
  }

  function leaveRoom(view) {
    if (isOpen()) send({ type: "leave", room: view.name });
    removeView(view);
    requestRoomsSoon();
  }

  function openFromHash() {
    const target = parseHash(window.location.hash);
    if (!target) return false;
    if (target.kind === "room") openRoom(target.name, false);
    else openView(ensureView("dm", target.name), false);
    return true;
  }

  // --- responsive panels ----------------------------------------------------------------

  const narrowQuery = window.matchMedia("(max-width: 767px)");
  const mediumQuery = window.matchMedia("(max-width: 1099px)");

  function isNarrow() {
    return narrowQuery.matches;
  }

  function setSidebar(open) {
    const show = open && isNarrow();
    root.classList.toggle("show-sidebar", show);
    dom.sidebarToggle.setAttribute("aria-expanded", show ? "true" : "false");
    if (show) dom.roomInput.focus();
  }

  function setOnlinePanel(open) {
    const show = open && mediumQuery.matches;
    root.classList.toggle("show-online", show);
    dom.onlineToggle.setAttribute("aria-expanded", show ? "true" : "false");
  }

  // --- user input ------------------------------------------------------------------------

  function submitMessage() {
    const view = currentView();
    if (!view) return;
    const body = dom.input.value.trim();
    if (!body) return;
    if (body.length > BODY_MAX) {
      toast({ kind: "error", title: "Message too long", text: "At most " + BODY_MAX + " characters." });
      return;
    }
    const entry = {
      client_id: newClientId(),
      kind: view.kind,
      target: view.name,
      body,
      created_at: new Date().toISOString(),
      status: "pending",
      error: "",
      sentSeq: null,
      sentAt: 0,
    };
    state.outbox.set(entry.client_id, entry);
    outboxPersist(entry);
    // Others drop our typing indicator when the message arrives; typing again shows it anew.
    view.lastTypingSent = 0;
    dom.messageList.append(pendingNode(entry));
    renderEmptyState();
    dom.input.value = "";
    autosize();
    scrollToBottom();
    trySend(entry);
  }

  function autosize() {
    dom.input.style.height = "auto";
    dom.input.style.height = Math.min(dom.input.scrollHeight + 2, 180) + "px";
  }

  function onTypingInput() {
    autosize();
    const view = currentView();
    if (!view || view.kind !== "room" || view.joinState !== "joined" || !dom.input.value.trim()) return;
    const now = Date.now();
    if (now - view.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (send({ type: "typing", room: view.name })) view.lastTypingSent = now;
  }

  function showFieldError(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  dom.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = normalizeRoom(dom.roomInput.value);
    if (!ROOM_RE.test(name)) {
      showFieldError(dom.roomError, "Use 1 to 64 lowercase letters, digits, “-” or “_”, starting with a letter or digit.");
      dom.roomInput.setAttribute("aria-invalid", "true");
      dom.roomInput.focus();
      return;
    }
    showFieldError(dom.roomError, "");
    dom.roomInput.removeAttribute("aria-invalid");
    dom.roomInput.value = "";
    openRoom(name, true);
  });

  dom.dmForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = dom.dmInput.value.trim().replace(/^@/, "");
    if (!name || name.length > 150) {
      showFieldError(dom.dmError, "Type a username.");
      dom.dmInput.setAttribute("aria-invalid", "true");
      dom.dmInput.focus();
      return;
    }
    showFieldError(dom.dmError, "");
    dom.dmInput.removeAttribute("aria-invalid");
    dom.dmInput.value = "";
    openView(ensureView("dm", name), true);
  });

  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitMessage();
  });

  dom.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitMessage();
    }
  });
  dom.input.addEventListener("input", onTypingInput);

  dom.loadOlder.addEventListener("click", loadOlder);
  dom.messages.addEventListener("scroll", () => {
    const view = currentView();
    const box = dom.messages;
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) dom.jumpBottom.hidden = true;
    if (view && view.historyLoaded && view.hasMore && !view.historyPending && box.scrollTop < 40) loadOlder();
  });
  dom.jumpBottom.addEventListener("click", () => {
    scrollToBottom();
    dom.input.focus();
  });
  dom.reconnect.addEventListener("click", manualReconnect);
  dom.roomsRefresh.addEventListener("click", requestRooms);
  dom.sidebarToggle.addEventListener("click", () => setSidebar(!root.classList.contains("show-sidebar")));
  dom.emptyOpenSidebar.addEventListener("click", () => setSidebar(true));
  $("sidebar-close").addEventListener("click", () => {
    setSidebar(false);
    dom.sidebarToggle.focus();
  });
  root.addEventListener("click", (event) => {
    if (event.target === root && root.classList.contains("show-sidebar")) setSidebar(false); // the backdrop
  });
  dom.onlineToggle.addEventListener("click", () => setOnlinePanel(!root.classList.contains("show-online")));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (root.classList.contains("show-sidebar")) {
      setSidebar(false);
      dom.sidebarToggle.focus();
    } else if (root.classList.contains("show-online")) {
      setOnlinePanel(false);
      dom.onlineToggle.focus();
    }
  });
  narrowQuery.addEventListener("change", () => setSidebar(false));
  mediumQuery.addEventListener("change", () => setOnlinePanel(false));
  window.addEventListener("hashchange", openFromHash);
  document.addEventListener("visibilitychange", () => {
    const view = currentView();
    if (!document.hidden && view && view.unread) {
      view.unread = 0;
      renderNav();
    }
  });

  // Logging out forgets what this browser remembered for the user.
  const logoutForm = document.querySelector('[data-testid="logout-form"]');
  if (logoutForm) logoutForm.addEventListener("submit", () => store.clearAll());

  window.addEventListener("pagehide", () => {
    conn.unloading = true;
    if (conn.ws) {
      try {
        conn.ws.close(1000, "page closed");
      } catch (e) {
        /* ignore */
      }
    }
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) {
      conn.unloading = false;
      conn.ws = null;
      resetConnectionState();
      connect();
    }
  });

  setInterval(() => {
    if (isOpen()) requestRooms();
  }, ROOMS_REFRESH_MS);

  // --- start ------------------------------------------------------------------------------

  function restore() {
    const saved = store.get("views", { rooms: [], dms: [], current: null });
    for (const name of saved.rooms || []) if (ROOM_RE.test(name)) state.views.set(viewKey("room", name), makeView("room", name));
    for (const name of saved.dms || []) {
      if (typeof name === "string" && name) state.views.set(viewKey("dm", name), makeView("dm", name));
    }
    const outbox = store.get("outbox", {});
    for (const entry of Object.values(outbox)) {
      if (!entry || typeof entry.client_id !== "string" || typeof entry.body !== "string") continue;
      if (entry.kind !== "room" && entry.kind !== "dm") continue;
      if (entry.kind === "room" && !ROOM_RE.test(entry.target)) continue;
      state.outbox.set(entry.client_id, {
        client_id: entry.client_id,
        kind: entry.kind,
        target: entry.target,
        body: entry.body,
        created_at: entry.created_at || new Date().toISOString(),
        status: entry.status === "failed" ? "failed" : "pending",
        error: entry.error || "",
        sentSeq: null,
        sentAt: 0,
      });
      const key = viewKey(entry.kind, entry.target);
      if (!state.views.has(key)) state.views.set(key, makeView(entry.kind, entry.target));
    }
    if (!openFromHash()) {
      const view = saved.current ? state.views.get(saved.current) : null;
      if (view) openView(view, false);
      else renderAll();
    }
    saveViews();
  }

  window.chatApp = {
    state,
    conn,
    policy: { reconnectDelay, closeUsesBackoff },
    // For tests and debugging: handle `frame` as if the server had sent it.
    simulateFrame(frame) {
      dispatchFrame(frame);
    },
    // For tests and debugging: run the client's close handling as if the server had
    // closed the socket with `code` (the socket itself is dropped first).
    simulateClose(code) {
      const ws = conn.ws;
      conn.ws = null;
      if (ws) {
        try {
          ws.close();
        } catch (e) {
          /* ignore */
        }
      }
      handleClose(code);
    },
  };

  restore();
  connect();
})();
