// Agenda's web page: the calendar, events, invitations and groups of the agenda API
// (docs/agenda-api.md), kept live through the WebSocket gateway (docs/websocket.md), and the
// operators' cluster page (/cluster). Plain JavaScript, no build step and no dependency: the
// server embeds these files in its binary and the page works on a LAN without internet.
//
// The page talks only to the server that served it (put a load balancer in front for more):
// that server routes every request to the leader of its shard, so a leader's failover shows
// here as a slower request, never as an error. If that server itself goes away, the connection
// state says so and the page reconnects and resumes when it is back.
"use strict";

// ---------------------------------------------------------------------------------------------
// Small helpers: DOM, time, errors

/** Makes an element: attributes (`on*` are listeners), then children (text is escaped). */
function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "value") element.value = value;
    else if (name === "checked") element.checked = Boolean(value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  return add(element, children);
}

/** Appends children to `parent`, leaving out `null`, `undefined` and `false` (text is escaped). */
function add(parent, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
  return parent;
}

let idCounter = 0;
/** A labelled control: the label names it for screen readers. */
function field(label, control, hint) {
  if (!control.id) control.id = `field-${++idCounter}`;
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("div", { id: hintId, class: "help" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

const pad = (n) => String(n).padStart(2, "0");

/** `date` (YYYY-MM-DD) moved by `days`. Dates are calculated in UTC, where days have 24 h. */
function addDays(date, days) {
  const at = new Date(`${date}T00:00:00Z`);
  at.setUTCDate(at.getUTCDate() + days);
  return at.toISOString().slice(0, 10);
}

/** 0 for Monday ... 6 for Sunday. */
function weekday(date) {
  return (new Date(`${date}T00:00:00Z`).getUTCDay() + 6) % 7;
}

const mondayOf = (date) => addDays(date, -weekday(date));
const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const RRULE_DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
const MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August",
  "September", "October", "November", "December"];

function dayLabel(date, long) {
  const [, month, day] = date.split("-").map(Number);
  const name = DAY_NAMES[weekday(date)];
  return long ? `${name} ${day} ${MONTH_NAMES[month - 1]}` : `${name} ${day}`;
}

/** The wall-clock date and time of instant `ms` in IANA zone `zone`. */
function zonedParts(ms, zone) {
  const format = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
  const parts = {};
  for (const part of format.formatToParts(new Date(ms))) parts[part.type] = part.value;
  return { date: `${parts.year}-${parts.month}-${parts.day}`, time: `${parts.hour}:${parts.minute}` };
}

/** The instant of a wall-clock time in `zone` (the earlier one when a clock change repeats it). */
function zonedToMs(date, time, zone) {
  const wall = Date.parse(`${date}T${time}:00Z`);
  let guess = wall;
  for (let step = 0; step < 3; step += 1) {
    const shown = zonedParts(guess, zone);
    const error = Date.parse(`${shown.date}T${shown.time}:00Z`) - wall;
    if (error === 0) break;
    guess -= error;
  }
  return guess;
}

const iso = (ms) => new Date(ms).toISOString();
const minutesOf = (time) => Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));

/** A wall-clock text (`2026-06-01T10:00` or `2026-06-01`) as ms, counting as if it were UTC. */
function naiveMs(local) {
  return Date.parse(local.length === 10 ? `${local}T00:00:00Z` : `${local}:00Z`);
}

function naiveText(ms, allDay) {
  const text = new Date(ms).toISOString();
  return allDay ? text.slice(0, 10) : text.slice(0, 16);
}

function validZone(zone) {
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/** A key for creating an event once: the server derives the event's id from it. */
function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function errorText(error) {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return String(error && error.message ? error.message : error);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const LETTER_KEYS = "agenda.letterKeys";
const letterKeys = () => localStorage.getItem(LETTER_KEYS) !== "off";

// ---------------------------------------------------------------------------------------------
// Session and API

const SESSION_KEY = "agenda.session";
const state = {
  session: JSON.parse(localStorage.getItem(SESSION_KEY) || "null"),
  view: null,
  renderCount: 0,
};

function saveSession(session) {
  state.session = session;
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

const zone = () => (state.session && state.session.zone) || browserZone();
const me = () => state.session && state.session.user;

/**
 * One call of the API. Reads that fail to reach the server, or get `unavailable` (no leader
 * yet), are retried a few times: they change nothing. Writes are not, except where the caller
 * passes `retry` (a creation with an idempotency key, which the server applies once).
 */
async function api(method, path, body, options = {}) {
  const headers = {};
  if (state.session && !options.anonymous) headers.Authorization = `Bearer ${state.session.token}`;
  if (options.headers) Object.assign(headers, options.headers);
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const attempts = method === "GET" || options.retry ? 4 : 1;
  for (let attempt = 1; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    } catch (error) {
      if (attempt < attempts) {
        await sleep(250 * attempt);
        continue;
      }
      throw new ApiError(0, "unreachable", `the server did not answer (${error.message})`);
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (response.ok) return json;
    if (response.status === 503 && attempt < attempts) {
      await sleep(250 * attempt);
      continue;
    }
    const code = (json && json.code) || `http_${response.status}`;
    const message = (json && json.message) || text.slice(0, 200) || response.statusText;
    if (response.status === 401 && state.session && !options.anonymous) {
      endSession("Your session ended: log in again.");
    }
    throw new ApiError(response.status, code, message);
  }
}

// ---------------------------------------------------------------------------------------------
// Notices and the connection state

function notify(text, kind) {
  const box = document.getElementById("notices");
  const notice = h("div", { class: `notice ${kind || ""}` }, text);
  box.append(notice);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => notice.remove(), kind === "alert" ? 15000 : 6000);
}

function setConnection(status, detail) {
  const element = document.getElementById("connection");
  element.dataset.state = status;
  const words = { live: "live", connecting: "connecting…", offline: "offline" };
  element.textContent = detail ? `${words[status]} (${detail})` : words[status];
}

// ---------------------------------------------------------------------------------------------
// Live changes: the user's channel over the WebSocket, with reconnect and resume

/**
 * Keeps one WebSocket subscribed to `user:<me>` (and to the group being looked at). Positions
 * move only on a change marked `last`, and are kept in the tab's session storage, so a
 * reconnect (or a reload) resumes after the last whole entry seen: nothing missed, nothing
 * twice (docs/websocket.md, "Resuming").
 */
class Live {
  constructor() {
    this.socket = null;
    this.stopped = true;
    this.backoff = 250;
    this.pending = [];
    this.extra = new Set();
    this.positionsKey = null;
    this.positions = null;
  }

  start() {
    this.stop();
    this.stopped = false;
    this.positionsKey = `agenda.positions.${me()}`;
    this.positions = JSON.parse(sessionStorage.getItem(this.positionsKey) || "null");
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close();
    }
    setConnection("offline");
  }

  connect() {
    if (this.stopped) return;
    setConnection("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    this.socket = socket;
    this.pending = [];
    this.authenticated = false;
    socket.onopen = () => {
      socket.send(JSON.stringify({ op: "auth", token: state.session.token }));
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.receive(frame);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      setConnection("offline", "reconnecting");
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  /** Sends a frame on an open socket; anything but `auth` waits for the server's `authenticated`
   * (the subscriptions are sent again then). */
  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (frame.op !== "auth" && !this.authenticated) return;
    this.socket.send(JSON.stringify(frame));
  }

  /** Subscribes to one more channel while a view shows it (from now on, no resume). */
  watch(channel) {
    if (this.extra.has(channel)) return;
    this.extra.add(channel);
    this.send({ op: "subscribe", channel });
  }

  unwatchAll() {
    for (const channel of this.extra) this.send({ op: "unsubscribe", channel });
    this.extra.clear();
  }

  receive(frame) {
    const mine = `user:${me()}`;
    switch (frame.op) {
      case "authenticated": {
        this.authenticated = true;
        const subscribe = { op: "subscribe", channel: mine };
        if (this.positions) subscribe.from = this.positions;
        this.send(subscribe);
        for (const channel of this.extra) this.send({ op: "subscribe", channel });
        break;
      }
      case "subscribed":
        if (frame.channel === mine) {
          this.backoff = 250;
          this.keep(frame.at);
          setConnection("live");
          // What changed while the socket was down is replayed as changes; the view is
          // fetched again anyway, in case it was drawn from older data.
          refreshView();
        }
        break;
      case "resync":
        if (frame.channel === mine) this.keep(frame.at);
        refreshView();
        break;
      case "change":
        this.pending.push(frame);
        if (frame.last) {
          const entry = this.pending;
          this.pending = [];
          if (frame.channel === mine) {
            this.positions = { ...(this.positions || {}), [frame.position.shard]: frame.position.index };
            this.save();
          }
          onChanges(entry);
        }
        break;
      case "error":
        if (frame.code === "unauthorized") {
          // The server refused the session itself (unknown, expired or revoked).
          endSession("Your session ended: log in again.");
        } else if (!this.authenticated) {
          // The session could not be checked yet (no leader of the users shard): try again.
          if (this.socket) this.socket.close();
        } else if (frame.channel) {
          notify(`Live updates of ${frame.channel}: ${frame.message}`);
        }
        break;
      default:
        break;
    }
  }

  keep(at) {
    const positions = { ...(this.positions || {}) };
    for (const [shard, index] of Object.entries(at || {})) {
      positions[shard] = Math.max(positions[shard] || 0, index);
    }
    this.positions = positions;
    this.save();
  }

  save() {
    sessionStorage.setItem(this.positionsKey, JSON.stringify(this.positions));
  }
}

const live = new Live();

/** The keys of the user's channel (agenda/src/keys.rs), and a short notice for each change. */
function describeChange(frame) {
  const user = me();
  const parts = frame.key.split("/");
  let value = null;
  try {
    value = frame.value === null ? null : JSON.parse(frame.value);
  } catch {
    value = null;
  }
  // ev/<b>/!a/<user>/<event>: an alert; a notice only when it fired.
  if (parts[0] === "ev" && parts[2] === "!a") {
    if (value && value.fired && value.fired.length > 0) {
      return value.fired.map((alert) => ({
        kind: "alert",
        text: `Reminder: ${alert.title} at ${zonedParts(alert.start_ms, zone()).time}${alert.late ? " (late)" : ""}`,
      }));
    }
    return [];
  }
  if (parts[0] === "ev" && parts[2] === user) {
    const kind = parts[3];
    if (kind === "i") {
      if (!value) return [{ text: "An invitation was removed." }];
      const title = value.content.title;
      if (value.cancelled) return [{ text: `Cancelled by ${value.organizer}: ${title}` }];
      if (value.sequence === 0 && value.reply_revision === 0) {
        return [{ text: `New invitation from ${value.organizer}: ${title}` }];
      }
      return [{ text: `Invitation updated: ${title}` }];
    }
    if (kind === "r" && value) {
      const single = Object.keys(value.occurrence_responses || {}).length;
      const extra = single ? ` (and ${single} single occurrence${single > 1 ? "s" : ""})` : "";
      return [{ text: `${value.attendee} answered ${value.response}${extra}` }];
    }
    if (kind === "e") {
      return [{ text: value ? `Saved: ${value.title}` : "An event was deleted." }];
    }
  }
  if (parts[0] === "gr" && parts[1] === "u") {
    const group = parts[3];
    return [{ text: value ? `You are ${value.role} of group ${group}.` : `You left group ${group}.` }];
  }
  if (parts[0] === "gr" && parts[1] === "g") {
    return [{ text: `Group ${parts[2]} changed.` }];
  }
  return [];
}

function onChanges(frames) {
  for (const frame of frames) {
    for (const notice of describeChange(frame)) notify(notice.text, notice.kind);
  }
  if (state.view && state.view.onChanges) state.view.onChanges(frames);
  else refreshView();
  updatePending();
}

let refreshTimer = null;
/** Draws the current view again from fresh data, soon (changes come in bursts); never a form
 * with unsaved input (an editor offers to load the new version instead). */
function refreshView() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (state.view && state.view.refresh && !state.view.dirty) state.view.refresh();
  }, 100);
}

async function updatePending() {
  if (!state.session) return;
  try {
    const answer = await api("GET", "/v1/invitations");
    document.getElementById("pending").textContent =
      answer.invitations.length ? String(answer.invitations.length) : "";
  } catch {
    // The badge waits for the next change.
  }
}

// ---------------------------------------------------------------------------------------------
// Routing

function go(hash) {
  if (location.pathname !== "/") location.href = `/${hash}`;
  else if (location.hash === hash) route();
  else location.hash = hash;
}

function endSession(message) {
  live.stop();
  // Another tab may have logged in since: its session stays.
  const stored = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
  if (!stored || !state.session || stored.token === state.session.token) saveSession(null);
  else state.session = null;
  if (message) notify(message);
  go("#/login");
}

function chrome(active) {
  const loggedIn = Boolean(state.session);
  document.getElementById("nav").hidden = !loggedIn;
  document.getElementById("logout").hidden = !loggedIn;
  document.getElementById("who").textContent = loggedIn ? `${me()} · ${zone()}` : "";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/**
 * Shows a view: `draw(main)` fills the main area. A view may set `refresh` (draw again from
 * fresh data) and `onChanges` (decide what a live change means to it).
 */
async function show(name, view) {
  // A refresh asked for by the view shown before is not this one's.
  clearTimeout(refreshTimer);
  live.unwatchAll();
  state.view = view;
  chrome(name);
  const generation = ++state.renderCount;
  view.generation = generation;
  view.refresh = view.refresh || (() => redraw(view));
  await redraw(view, true);
}

/** Draws a view, keeping the keyboard focus on the same control when it is drawn again. */
async function redraw(view, first) {
  const main = document.getElementById("main");
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focus : undefined;
  const content = h("div", {});
  try {
    await view.draw(content);
  } catch (error) {
    content.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(error)));
  }
  if (view.generation !== state.renderCount) return;
  const scroller = main.querySelector(".week");
  const scrollTop = scroller ? scroller.scrollTop : null;
  main.replaceChildren(content);
  if (view.afterDraw) view.afterDraw(first, scrollTop);
  if (focused) {
    const again = main.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  } else if (first) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
}

function route() {
  if (location.pathname === "/cluster") return show("cluster", clusterView());
  const [path, query] = (location.hash.slice(1) || "/calendar").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (!state.session) return show("login", loginView());
  switch (parts[0]) {
    case "event":
      return show("calendar", eventView(parts[1] || "new", params));
    case "invitations":
      return show("invitations", invitationsView());
    case "groups":
      return parts[1] ? show("groups", groupView(parts[1])) : show("groups", groupsView());
    case "calendar": {
      const mode = parts[1] === "month" ? "month" : "week";
      const date = /^\d{4}-\d{2}-\d{2}$/.test(parts[2] || "") ? parts[2] : zonedParts(Date.now(), zone()).date;
      return show("calendar", calendarView(mode, date));
    }
    default:
      return go("#/calendar");
  }
}

// ---------------------------------------------------------------------------------------------
// Login and registration

function loginView() {
  return {
    async draw(main) {
      const error = h("p", { class: "error", role: "alert" });
      const name = h("input", { name: "name", autocomplete: "username", required: true, autocapitalize: "off" });
      const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
      const login = h("form", {
        class: "panel narrow", "aria-labelledby": "login-title",
        onsubmit: async (event) => {
          event.preventDefault();
          error.textContent = "";
          try {
            await logIn(name.value.trim(), password.value);
          } catch (failure) {
            error.textContent = errorText(failure);
          }
        },
      },
      h("h1", { id: "login-title" }, "Log in"),
      field("Name", name), field("Password", password),
      h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Log in")));

      const newName = h("input", { name: "new-name", autocomplete: "username", required: true, autocapitalize: "off", pattern: "[a-z0-9-]{3,32}" });
      const display = h("input", { name: "display-name", autocomplete: "name" });
      const newPassword = h("input", { name: "new-password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
      const timeZone = h("input", { name: "time-zone", value: browserZone(), required: true });
      const registerError = h("p", { class: "error", role: "alert" });
      const register = h("form", {
        class: "panel narrow", "aria-labelledby": "register-title",
        onsubmit: async (event) => {
          event.preventDefault();
          registerError.textContent = "";
          try {
            await api("POST", "/v1/users", {
              name: newName.value.trim(), password: newPassword.value,
              display_name: display.value.trim() || newName.value.trim(), time_zone: timeZone.value.trim(),
            }, { anonymous: true });
            await logIn(newName.value.trim(), newPassword.value);
          } catch (failure) {
            registerError.textContent = errorText(failure);
          }
        },
      },
      h("h2", { id: "register-title" }, "New here? Register"),
      field("Name", newName, "3 to 32 of a–z, 0–9 and -"),
      field("Display name", display),
      field("Password", newPassword, "At least 8 characters"),
      field("Time zone", timeZone, "An IANA zone, such as Europe/Madrid"),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Register")));
      add(main, h("div", { class: "split" }, h("div", {}, login, error), h("div", {}, register, registerError)),
        h("p", {}, h("a", { href: "/cluster" }, "Cluster status")));
    },
  };
}

async function logIn(name, password) {
  const session = await api("POST", "/v1/sessions", { name, password }, { anonymous: true });
  // Positions kept by an earlier login may belong to another cluster (a demo started again):
  // a new session starts from now, and every view is fetched fresh anyway.
  sessionStorage.removeItem(`agenda.positions.${session.user}`);
  saveSession({ token: session.token, user: session.user });
  const profile = await api("GET", "/v1/me");
  saveSession({ ...state.session, zone: profile.time_zone, display: profile.display_name });
  live.start();
  updatePending();
  go("#/calendar");
}

// ---------------------------------------------------------------------------------------------
// Calendar: week and month

function calendarView(mode, date) {
  const days = mode === "week" ? 7 : 42;
  const first = mode === "week" ? mondayOf(date) : mondayOf(`${date.slice(0, 8)}01`);
  const month = date.slice(0, 7);
  const move = (step) => {
    if (mode === "week") return addDays(date, 7 * step);
    const [year, monthNumber] = month.split("-").map(Number);
    const index = year * 12 + monthNumber - 1 + step;
    return `${Math.floor(index / 12)}-${pad((index % 12) + 1)}-01`;
  };
  const view = {
    async draw(main) {
      const from = zonedToMs(first, "00:00", zone());
      const to = zonedToMs(addDays(first, days), "00:00", zone());
      const answer = await api("GET", `/v1/agenda?from=${encodeURIComponent(iso(from))}&to=${encodeURIComponent(iso(to))}`);
      const byDay = placeOccurrences(answer.occurrences, first, days);
      const today = zonedParts(Date.now(), zone()).date;
      const title = mode === "week"
        ? `Week of ${dayLabel(first, true)} ${first.slice(0, 4)}`
        : `${MONTH_NAMES[Number(month.slice(5, 7)) - 1]} ${month.slice(0, 4)}`;
      const unit = mode === "week" ? "week" : "month";
      add(main, 
        h("div", { class: "toolbar" },
          h("h1", {}, title),
          h("button", { type: "button", "data-focus": "prev", "aria-label": `Previous ${unit}`, onclick: () => go(`#/calendar/${mode}/${move(-1)}`) }, "‹"),
          h("button", { type: "button", "data-focus": "today", onclick: () => go(`#/calendar/${mode}/${today}`) }, "Today"),
          h("button", { type: "button", "data-focus": "next", "aria-label": `Next ${unit}`, onclick: () => go(`#/calendar/${mode}/${move(1)}`) }, "›"),
          h("button", { type: "button", "data-focus": "week", "aria-pressed": String(mode === "week"), onclick: () => go(`#/calendar/week/${date}`) }, "Week"),
          h("button", { type: "button", "data-focus": "month", "aria-pressed": String(mode === "month"), onclick: () => go(`#/calendar/month/${date}`) }, "Month"),
          h("button", { type: "button", class: "primary", "data-focus": "new", onclick: () => go(`#/event/new?date=${date}`) }, "New event")),
        h("p", { class: "help", id: "calendar-keys" },
          "Keys: ← and → previous and next", letterKeys() ? ", T today, W week, M month, N new event" : "",
          ". Times in ", zone(), ". ",
          h("label", { class: "inline" }, h("input", {
            type: "checkbox", checked: letterKeys(), "data-focus": "letter-keys",
            onchange: (change) => {
              localStorage.setItem(LETTER_KEYS, change.target.checked ? "on" : "off");
              view.refresh();
            },
          }), "Single-key shortcuts")),
        mode === "week" ? drawWeek(first, byDay, today) : drawMonth(first, month, byDay, today));
    },
    afterDraw(first, scrollTop) {
      const scroller = document.querySelector(".week");
      if (!scroller) return;
      if (scrollTop !== null && !first) scroller.scrollTop = scrollTop;
      else scroller.scrollTop = scroller.querySelector(".day-column").offsetHeight * (7 / 24);
    },
    key(event) {
      const keys = {
        ArrowLeft: () => go(`#/calendar/${mode}/${move(-1)}`),
        ArrowRight: () => go(`#/calendar/${mode}/${move(1)}`),
        t: () => go(`#/calendar/${mode}/${zonedParts(Date.now(), zone()).date}`),
        w: () => go(`#/calendar/week/${date}`),
        m: () => go(`#/calendar/month/${date}`),
        n: () => go(`#/event/new?date=${date}`),
      };
      const action = keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
      if (!action) return false;
      action();
      return true;
    },
  };
  return view;
}

/**
 * Lays occurrences out by day in the user's zone: all-day ones by their dates, timed ones cut at
 * midnight into one piece per day they cover (minutes from midnight).
 */
function placeOccurrences(occurrences, first, days) {
  const byDay = new Map();
  for (let i = 0; i < days; i += 1) byDay.set(addDays(first, i), { allDay: [], timed: [] });
  for (const occurrence of occurrences) {
    if (occurrence.all_day) {
      const count = Math.max(1, Math.round((occurrence.end_ms - occurrence.start_ms) / 86400000));
      for (let i = 0; i < count; i += 1) {
        const day = byDay.get(addDays((occurrence.day || occurrence.occurrence).slice(0, 10), i));
        if (day) day.allDay.push(occurrence);
      }
      continue;
    }
    const startDate = occurrence.start.slice(0, 10);
    const endDate = occurrence.end.slice(0, 10);
    const startMinute = minutesOf(occurrence.start.slice(11, 16));
    const endMinute = minutesOf(occurrence.end.slice(11, 16));
    for (let date = startDate; date <= endDate; date = addDays(date, 1)) {
      const from = date === startDate ? startMinute : 0;
      const to = date === endDate ? endMinute : 1440;
      if (to <= from && !(from === to && occurrence.start_ms === occurrence.end_ms)) continue;
      const day = byDay.get(date);
      if (day) day.timed.push({ occurrence, from, to: Math.max(to, from + 15) });
    }
  }
  for (const day of byDay.values()) day.timed.sort((a, b) => a.from - b.from || b.to - a.to);
  return byDay;
}

function occurrenceLink(occurrence, extra) {
  const invitation = !occurrence.organizer;
  const time = occurrence.all_day ? "all day" : `${occurrence.start.slice(11, 16)}–${occurrence.end.slice(11, 16)}`;
  const who = invitation ? `, invitation from ${occurrence.owner}, ${occurrence.response || "needs-action"}` : "";
  const date = occurrence.all_day ? (occurrence.day || occurrence.occurrence).slice(0, 10) : occurrence.start.slice(0, 10);
  // The name screen readers say begins with what is seen (the start and the title); the rest
  // is text only they read.
  const more = `, ${dayLabel(date, true)}, ${time}${who}`;
  return h("a", {
    class: `occurrence${invitation ? " invitation" : ""}`,
    href: `#/event/${occurrence.event_id}?occurrence=${encodeURIComponent(occurrence.occurrence)}`,
    title: `${occurrence.title}${more}`,
    "data-focus": `occ-${occurrence.event_id}-${occurrence.occurrence}`,
    dataset: { eventId: occurrence.event_id, occurrence: occurrence.occurrence, response: occurrence.response || "" },
    ...extra,
  },
  occurrence.all_day ? null : [h("span", { class: "time" }, occurrence.start.slice(11, 16)), " "],
  occurrence.title,
  h("span", { class: "hidden-label" }, more));
}

function drawWeek(first, byDay, today) {
  const grid = h("section", { class: "week-grid", "aria-label": "Week", "aria-describedby": "calendar-keys" });
  grid.append(h("div", { class: "week-head" }, h("span", { class: "hidden-label" }, "Time")));
  for (const [date] of byDay) {
    grid.append(h("div", {
      class: `week-head${date === today ? " today" : ""}`,
      "aria-current": date === today ? "date" : null,
    }, dayLabel(date)));
  }
  grid.append(h("div", { class: "all-day-label" }, "all day"));
  for (const [date, day] of byDay) {
    grid.append(h("div", { class: "all-day", role: "group", "aria-label": `All day, ${dayLabel(date, true)}` },
      day.allDay.map((occurrence) => occurrenceLink(occurrence))));
  }
  const hours = h("div", { class: "hours", "aria-hidden": "true" });
  for (let hour = 0; hour < 24; hour += 1) hours.append(h("div", { class: "hour-label" }, `${pad(hour)}:00`));
  grid.append(hours);
  for (const [date, day] of byDay) {
    const column = h("div", {
      class: `day-column${date === today ? " today" : ""}`,
      "aria-label": dayLabel(date, true), role: "group",
    });
    // Overlapping pieces share the column's width: each takes the first free lane.
    const lanes = [];
    const placed = day.timed.map((piece) => {
      let lane = lanes.findIndex((end) => end <= piece.from);
      if (lane < 0) {
        lane = lanes.length;
        lanes.push(piece.to);
      } else {
        lanes[lane] = piece.to;
      }
      return { piece, lane };
    });
    for (const { piece, lane } of placed) {
      const link = occurrenceLink(piece.occurrence);
      link.style.top = `${(piece.from / 1440) * 100}%`;
      link.style.height = `${((piece.to - piece.from) / 1440) * 100}%`;
      link.style.left = `${(lane / lanes.length) * 100}%`;
      link.style.width = `${100 / lanes.length}%`;
      column.append(link);
    }
    if (date === today) {
      const line = h("div", { class: "now-line", "aria-hidden": "true" });
      line.style.top = `${(minutesOf(zonedParts(Date.now(), zone()).time) / 1440) * 100}%`;
      column.append(line);
    }
    grid.append(column);
  }
  return h("div", { class: "week" }, grid);
}

function drawMonth(first, month, byDay, today) {
  const grid = h("section", { class: "month", "aria-label": "Month", "aria-describedby": "calendar-keys" });
  for (const name of DAY_NAMES) grid.append(h("div", { class: "month-name" }, name));
  for (const [date, day] of byDay) {
    // A timed occurrence is listed on the day it starts.
    const starting = day.timed.filter((piece) => piece.occurrence.start.slice(0, 10) === date);
    const all = [...day.allDay.map((occurrence) => ({ occurrence })), ...starting];
    const shown = all.slice(0, 3);
    const cell = h("div", {
      class: `month-day${date.slice(0, 7) === month ? "" : " outside"}${date === today ? " today" : ""}`,
      "aria-current": date === today ? "date" : null,
    },
    h("button", {
      type: "button", class: "day-number", "data-focus": `day-${date}`,
      "aria-label": `${dayLabel(date, true)}: ${all.length} event${all.length === 1 ? "" : "s"}, open the week`,
      onclick: () => go(`#/calendar/week/${date}`),
    }, String(Number(date.slice(8, 10)))),
    shown.map(({ occurrence }) => occurrenceLink(occurrence)),
    all.length > shown.length
      ? h("a", { class: "more", href: `#/calendar/week/${date}` }, `+${all.length - shown.length} more`) : null);
    grid.append(cell);
  }
  return grid;
}

// ---------------------------------------------------------------------------------------------
// Events: create, show, edit, answer

const RESPONSES = [["accepted", "Accept"], ["tentative", "Maybe"], ["declined", "Decline"]];

function responseBadge(response) {
  return h("span", { class: "response", dataset: { response: response || "needs-action" } }, response || "needs-action");
}

function scheduleText(schedule) {
  const start = schedule.start.replace("T", " ");
  // An all-day event's end is the day after its last day.
  const end = schedule.end.length === 10 ? addDays(schedule.end, -1) : schedule.end.replace("T", " ");
  const repeat = schedule.rrule ? `, repeats ${schedule.rrule}` : "";
  return `${start} – ${end} (${schedule.zone})${repeat}`;
}

function eventView(id, params) {
  const occurrence = params.get("occurrence");
  const view = { dirty: false };
  view.draw = async (main) => {
    view.dirty = false;
    if (id === "new") return drawEditor(main, view, null, null, params);
    const event = await api("GET", `/v1/events/${encodeURIComponent(id)}`);
    view.event = event;
    if (event.owner === me()) return drawEditor(main, view, event, occurrence, params);
    return drawInvitation(main, event, occurrence);
  };
  view.onChanges = (frames) => {
    const touches = frames.some((frame) => frame.key.includes(`/${id}`));
    if (!touches) return;
    const reply = frames.every((frame) => frame.key.includes(`/r/${id}/`));
    if (reply && view.refreshTally) return view.refreshTally();
    if (view.dirty) {
      const banner = document.getElementById("changed");
      if (banner) banner.hidden = false;
      return;
    }
    refreshView();
  };
  return view;
}

/** An attendee's view of an event: what it is, and their answer for it or for one occurrence. */
async function drawInvitation(main, event, occurrence) {
  const answers = await api("GET", "/v1/invitations?all=true");
  const invitation = answers.invitations.find((one) => one.event_id === event.id);
  const series = invitation ? invitation.response : "needs-action";
  const single = invitation && occurrence ? invitation.occurrence_responses[occurrence] : undefined;
  const status = h("p", { role: "status" });
  const answer = (response, one) => async () => {
    status.textContent = "Sending…";
    try {
      const body = { response };
      if (one) body.occurrence = occurrence;
      await api("POST", `/v1/invitations/${encodeURIComponent(event.id)}/rsvp`, body);
      status.textContent = `Answered ${response}${one ? " for this occurrence" : ""}.`;
      refreshView();
    } catch (error) {
      status.textContent = errorText(error);
    }
  };
  const details = occurrence && event.details && event.details[occurrence] ? event.details[occurrence] : {};
  add(main, 
    h("h1", {}, details.title || event.title),
    h("div", { class: "panel" },
      h("p", {}, h("strong", {}, "Organizer: "), event.owner),
      h("p", {}, h("strong", {}, "When: "), scheduleText(event.schedule)),
      occurrence ? h("p", {}, h("strong", {}, "This occurrence: "), occurrence.replace("T", " ")) : null,
      (details.location || event.location) ? h("p", {}, h("strong", {}, "Where: "), details.location || event.location) : null,
      (details.description || event.description) ? h("p", {}, details.description || event.description) : null,
      h("p", {}, h("strong", {}, "Invited: "), event.invited.join(", "))),
    h("section", { class: "panel", "aria-labelledby": "answer-title" },
      h("h2", { id: "answer-title" }, "Your answer"),
      h("p", {}, "For the series: ", responseBadge(series)),
      h("div", { class: "actions", role: "group", "aria-label": "Answer for the series" },
        RESPONSES.map(([response, label]) => h("button", {
          type: "button", "data-focus": `series-${response}`, "aria-pressed": String(series === response),
          onclick: answer(response, false),
        }, label))),
      occurrence && event.schedule.rrule ? [
        h("p", {}, `For ${occurrence.replace("T", " ")} only: `, responseBadge(single || series)),
        h("div", { class: "actions", role: "group", "aria-label": "Answer for this occurrence only" },
          RESPONSES.map(([response, label]) => h("button", {
            type: "button", "data-focus": `one-${response}`, "aria-pressed": String(single === response),
            onclick: answer(response, true),
          }, `${label} this one`))),
      ] : null,
      status),
    alertsPanel(event.id),
    h("p", {}, h("a", { href: `/v1/events/${encodeURIComponent(event.id)}.ics`, download: `${event.id}.ics`, onclick: downloadIcs(event.id) }, "Download as iCalendar")));
}

/** The `.ics` link needs the session, which a plain link cannot send. */
function downloadIcs(id) {
  return async (click) => {
    click.preventDefault();
    let response;
    try {
      response = await fetch(`/v1/events/${encodeURIComponent(id)}.ics`, {
        headers: { Authorization: `Bearer ${state.session.token}` },
      });
    } catch (error) {
      notify(`Download failed: ${error.message}`);
      return;
    }
    if (response.status === 401) {
      endSession("Your session ended: log in again.");
      return;
    }
    if (!response.ok) {
      notify(`Download failed (${response.status}).`);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `${id}.ics` });
    document.body.append(link);
    link.click();
    link.remove();
    // Some browsers start the download after this handler returns.
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };
}

function alertsPanel(id) {
  const input = h("input", { name: "alerts", inputmode: "numeric", placeholder: "10, 1440", "data-focus": "alerts" });
  const status = h("p", { role: "status" });
  api("GET", `/v1/events/${encodeURIComponent(id)}/alerts`)
    .then((alerts) => { input.value = alerts.minutes_before.join(", "); })
    .catch(() => {});
  return h("form", {
    class: "panel", "aria-labelledby": "alerts-title",
    onsubmit: async (event) => {
      event.preventDefault();
      const minutes = input.value.split(",").map((text) => text.trim()).filter(Boolean).map(Number);
      if (minutes.some((n) => !Number.isInteger(n) || n < 0)) {
        status.textContent = "Minutes are whole numbers, separated by commas.";
        return;
      }
      try {
        await api("PUT", `/v1/events/${encodeURIComponent(id)}/alerts`, { minutes_before: minutes });
        status.textContent = minutes.length ? "Reminders set." : "Reminders removed.";
      } catch (error) {
        status.textContent = errorText(error);
      }
    },
  },
  h("h2", { id: "alerts-title" }, "Reminders"),
  field("Minutes before each occurrence", input, "Up to five, separated by commas; empty for none"),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Set reminders")),
  status);
}

/** Reads an RRULE into the form's parts; what the form cannot show stays in the rule's text. */
function parseRule(rule) {
  const parts = {};
  for (const part of (rule || "").split(";")) {
    const [name, value] = part.split("=");
    if (name && value !== undefined) parts[name.toUpperCase()] = value;
  }
  return parts;
}

/** The parts of a rule the form has no control for (BYMONTHDAY, WKST, BYDAY with ordinals
 * such as 2TU): kept as they are when the controls write the rule again. */
function otherParts(parts) {
  return Object.entries(parts)
    .filter(([name, value]) => !["FREQ", "INTERVAL", "COUNT", "UNTIL"].includes(name)
      && !(name === "BYDAY" && /^[A-Z,]+$/.test(value)))
    .map(([name, value]) => `;${name}=${value}`)
    .join("");
}

/** UNTIL as RFC 5545 wants it: a date for an all-day series; for a timed one the UTC instant
 * of the last second of that date in the event's zone. */
function untilValue(date, allDay, eventZone) {
  if (allDay) return date.replaceAll("-", "");
  const last = zonedToMs(addDays(date, 1), "00:00", eventZone) - 1000;
  return iso(last).replace(/[-:]|\.\d+/g, "");
}

/** The date an UNTIL names, in the event's zone. */
function untilDate(value, eventZone) {
  if (!value) return "";
  const date = `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6, 8)}`;
  if (value.length < 16 || !value.endsWith("Z")) return date;
  const ms = Date.parse(`${date}T${value.slice(9, 11)}:${value.slice(11, 13)}:${value.slice(13, 15)}Z`);
  return Number.isNaN(ms) ? date : zonedParts(ms, eventZone).date;
}

function buildRule(form, kept) {
  const freq = form.freq.value;
  if (!freq) return "";
  let rule = `FREQ=${freq}`;
  const interval = Number(form.interval.value);
  if (interval > 1) rule += `;INTERVAL=${interval}`;
  if (freq === "WEEKLY") {
    const days = RRULE_DAYS.filter((day) => form[`day-${day}`].checked);
    if (days.length) rule += `;BYDAY=${days.join(",")}`;
  }
  if (form.ends.value === "count" && Number(form.count.value) > 0) rule += `;COUNT=${Number(form.count.value)}`;
  if (form.ends.value === "until" && form.until.value && validZone(form.timezone.value.trim())) {
    rule += `;UNTIL=${untilValue(form.until.value, form.allday.checked, form.timezone.value.trim())}`;
  }
  return rule + kept;
}

/** The editor of a new event, or of an event the user organizes, with its tally. */
function drawEditor(main, view, event, occurrence, params) {
  const recurring = Boolean(event && event.schedule.rrule);
  const schedule = event ? event.schedule : null;
  const allDay = schedule ? schedule.start.length === 10 : false;
  // What the form starts from: the series, or the chosen occurrence as it is now.
  let start = schedule ? schedule.start : `${params.get("date") || zonedParts(Date.now(), zone()).date}T${params.get("time") || "09:00"}`;
  let end = schedule ? schedule.end : naiveText(naiveMs(start) + 3600000, false);
  if (schedule && occurrence) {
    const moved = schedule.overrides && schedule.overrides[occurrence];
    start = moved ? moved.start : occurrence;
    end = moved ? moved.end : naiveText(naiveMs(occurrence) + naiveMs(schedule.end) - naiveMs(schedule.start), allDay);
  }
  const details = event && occurrence && event.details ? event.details[occurrence] || {} : {};
  const rule = parseRule(schedule && schedule.rrule);
  const dirty = () => { view.dirty = true; };

  const form = h("form", { class: "panel", "aria-labelledby": "editor-title", oninput: dirty, onchange: dirty });
  const title = h("input", { name: "title", required: true, maxlength: 200, value: details.title || (event ? event.title : ""), "data-focus": "title" });
  const location = h("input", { name: "location", maxlength: 200, value: details.location || (event ? event.location : "") });
  const description = h("textarea", { name: "description", maxlength: 5000 });
  description.value = details.description || (event ? event.description : "");
  const allDayBox = h("input", { type: "checkbox", name: "allday", checked: allDay, disabled: Boolean(event) });
  const startDate = h("input", { type: "date", name: "startdate", required: true, value: start.slice(0, 10) });
  const startTime = h("input", { type: "time", name: "starttime", value: allDay ? "09:00" : start.slice(11, 16) });
  const lastDay = allDay ? addDays(end.slice(0, 10), -1) : end.slice(0, 10);
  const endDate = h("input", { type: "date", name: "enddate", required: true, value: lastDay });
  const endTime = h("input", { type: "time", name: "endtime", value: allDay ? "10:00" : end.slice(11, 16) });
  const timeZone = h("input", { name: "timezone", value: schedule ? schedule.zone : zone(), required: true, disabled: Boolean(event) });
  const freq = h("select", { name: "freq" },
    [["", "Does not repeat"], ["DAILY", "Daily"], ["WEEKLY", "Weekly"], ["MONTHLY", "Monthly"], ["YEARLY", "Yearly"]]
      .map(([value, label]) => h("option", { value }, label)));
  freq.value = rule.FREQ || "";
  const interval = h("input", { type: "number", name: "interval", min: 1, max: 1000, value: rule.INTERVAL || "1" });
  const byDay = (rule.BYDAY || "").split(",");
  const days = h("fieldset", { class: "days" }, h("legend", {}, "On"),
    RRULE_DAYS.map((day, index) => h("label", { class: "inline" },
      h("input", { type: "checkbox", name: `day-${day}`, checked: byDay.includes(day) }), DAY_NAMES[index])));
  const ends = h("select", { name: "ends" },
    [["never", "Never"], ["count", "After a number of times"], ["until", "On a date"]].map(([value, label]) => h("option", { value }, label)));
  ends.value = rule.COUNT ? "count" : rule.UNTIL ? "until" : "never";
  const count = h("input", { type: "number", name: "count", min: 1, value: rule.COUNT || "10" });
  const until = h("input", { type: "date", name: "until", value: untilDate(rule.UNTIL, schedule ? schedule.zone : zone()) });
  const kept = otherParts(rule);
  const rrule = h("input", { name: "rrule", value: (schedule && schedule.rrule) || "", "aria-describedby": "rrule-help" });
  const attendees = h("input", {
    name: "attendees", autocapitalize: "off", placeholder: "bob, group:team",
    value: event ? event.attendees.join(", ") : "",
  });
  const scope = h("select", { name: "scope", "data-focus": "scope" },
    [["this", "This occurrence"], ["following", "This and following"], ["all", "All occurrences"]].map(([value, label]) => h("option", { value }, label)));
  scope.value = occurrence && recurring ? "this" : "all";
  const conflicts = h("div", { id: "conflicts", role: "status", "aria-live": "polite" });
  const slots = h("div", { class: "slots", role: "group", "aria-label": "Free times" });
  const error = h("p", { class: "error", role: "alert" });
  const saved = h("div", { role: "status" });
  if (state.conflicts && state.conflicts.length) {
    add(saved, h("p", { class: "warn" }, "Saved. Conflicts of its occurrences in the next 180 days:"),
      h("ul", { class: "conflicts" }, state.conflicts.slice(0, 20).map((conflict) => h("li", {}, `${conflict.user} at ${conflict.occurrence.replace("T", " ")}`))));
  }
  state.conflicts = null;
  const changed = h("p", { id: "changed", class: "warn", role: "alert", hidden: true },
    "Someone changed this event since you opened it. ",
    h("button", { type: "button", onclick: () => { view.dirty = false; refreshView(); } }, "Load the new version"));

  const ruleControls = h("div", {},
    h("div", { class: "row" }, field("Repeats", freq), field("Every", interval, "1 = every day, week…")),
    days,
    h("div", { class: "row" }, field("Ends", ends), field("Times", count), field("Last date", until)),
    field("Rule (RRULE)", rrule, "Written by the controls above; may be edited directly"));
  const syncRule = () => {
    rrule.value = buildRule(form, kept);
    days.hidden = freq.value !== "WEEKLY";
    ruleControls.querySelectorAll(".row")[1].hidden = !freq.value;
  };
  for (const control of [freq, interval, ends, count, until, ...days.querySelectorAll("input")]) {
    control.addEventListener("change", syncRule);
  }
  const syncAllDay = () => {
    startTime.hidden = endTime.hidden = allDayBox.checked;
    startTime.previousElementSibling.hidden = endTime.previousElementSibling.hidden = allDayBox.checked;
  };
  allDayBox.addEventListener("change", syncAllDay);
  // Attendees change for the whole event only (the server refuses them otherwise).
  const syncScope = () => { ruleControls.hidden = scope.value === "this"; attendees.disabled = scope.value !== "all"; };
  scope.addEventListener("change", syncScope);

  /** The first occurrence's interval as the form says it, and who takes part. */
  const planned = () => {
    const eventZone = timeZone.value.trim();
    if (!validZone(eventZone) || !startDate.value || !endDate.value) return null;
    const from = allDayBox.checked ? zonedToMs(startDate.value, "00:00", eventZone) : zonedToMs(startDate.value, startTime.value || "00:00", eventZone);
    const to = allDayBox.checked ? zonedToMs(addDays(endDate.value, 1), "00:00", eventZone) : zonedToMs(endDate.value, endTime.value || "00:00", eventZone);
    const names = attendees.value.split(",").map((text) => text.trim()).filter(Boolean);
    return { from, to, eventZone, users: names.filter((name) => !name.startsWith("group:")), groups: names.filter((name) => name.startsWith("group:")).map((name) => name.slice(6)) };
  };
  const original = event ? planned() : null;

  const checkConflicts = debounce(async () => {
    const plan = planned();
    if (!plan || plan.to <= plan.from) {
      conflicts.replaceChildren(h("p", { class: "warn" }, "The end must come after the start."));
      return;
    }
    try {
      const members = await Promise.all(plan.groups.map((group) => api("GET", `/v1/groups/${encodeURIComponent(group)}`)
        .then((view) => view.members.map(([name]) => name))));
      const users = [...new Set([me(), ...plan.users, ...members.flat()])];
      const answer = await api("POST", "/v1/freebusy", { users, from: iso(plan.from), to: iso(plan.to) });
      const at = zonedParts(plan.from, plan.eventZone);
      const checked = `on ${dayLabel(at.date)} ${at.time}–${zonedParts(plan.to, plan.eventZone).time}`;
      // The event's own time is busy for its people: it is not a conflict with itself.
      const own = event ? ownInterval() : null;
      const busy = answer.users.filter((user) => user.busy.some(([from, to]) => !(own && from === own[0] && to === own[1])));
      conflicts.replaceChildren(busy.length
        ? h("div", { class: "conflicts" }, h("p", { class: "warn" }, `Conflicts${recurring || rrule.value ? " (first occurrence)" : ""}:`),
          h("ul", {}, busy.map((user) => h("li", {}, `${user.user} is busy then`))))
        : h("p", { class: "ok" }, `No conflicts for ${users.join(", ")} ${checked}${rrule.value ? " (first occurrence; saving checks every one)" : ""}.`));
    } catch (failure) {
      conflicts.replaceChildren(h("p", { class: "warn" }, `Conflicts not checked: ${errorText(failure)}`));
    }
  }, 400);
  const ownInterval = () => (original ? [original.from, original.to] : null);
  for (const control of [startDate, startTime, endDate, endTime, attendees, allDayBox, timeZone]) {
    control.addEventListener("change", checkConflicts);
  }

  const findTime = async () => {
    const plan = planned();
    if (!plan) return;
    const minutes = Math.max(15, Math.round((plan.to - plan.from) / 60000));
    slots.replaceChildren(h("span", { class: "muted" }, "Looking…"));
    try {
      const from = zonedToMs(startDate.value, "00:00", plan.eventZone);
      const body = { users: [...new Set([me(), ...plan.users])], from: iso(from), to: iso(from + 7 * 86400000), minutes, max: 8 };
      // The API takes one group; the members of any other are asked for as users.
      if (plan.groups.length) body.group = plan.groups[0];
      for (const group of plan.groups.slice(1)) {
        const members = await api("GET", `/v1/groups/${encodeURIComponent(group)}`);
        body.users.push(...members.members.map(([name]) => name).filter((name) => !body.users.includes(name)));
      }
      const answer = await api("POST", "/v1/find-time", body);
      if (!answer.slots.length) {
        slots.replaceChildren(h("span", { class: "warn" }, "No common free time in the next 7 days."));
        return;
      }
      slots.replaceChildren(...answer.slots.map((slot) => {
        const at = zonedParts(slot.start_ms, plan.eventZone);
        const until = zonedParts(slot.end_ms, plan.eventZone);
        return h("button", {
          type: "button",
          onclick: () => {
            startDate.value = at.date;
            startTime.value = at.time;
            endDate.value = until.date;
            endTime.value = until.time;
            allDayBox.checked = false;
            syncAllDay();
            dirty();
            checkConflicts();
          },
        }, `${dayLabel(at.date)} ${at.time}–${until.time}`);
      }));
    } catch (failure) {
      slots.replaceChildren(h("span", { class: "error" }, errorText(failure)));
    }
  };

  const idempotencyKey = randomKey();
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    error.textContent = "";
    const plan = planned();
    if (!plan) {
      error.textContent = "The time zone is not a zone this browser knows, or a date is missing.";
      return;
    }
    const startText = allDayBox.checked ? startDate.value : `${startDate.value}T${startTime.value}`;
    const endText = allDayBox.checked ? addDays(endDate.value, 1) : `${endDate.value}T${endTime.value}`;
    const names = attendees.value.split(",").map((text) => text.trim()).filter(Boolean);
    try {
      let answer;
      if (!event) {
        const body = {
          title: title.value, location: location.value, description: description.value,
          start: startText, end: endText, time_zone: plan.eventZone, all_day: allDayBox.checked, attendees: names,
        };
        if (rrule.value.trim()) body.rrule = rrule.value.trim();
        answer = await api("POST", "/v1/events", body, { retry: true, headers: { "Idempotency-Key": idempotencyKey } });
      } else {
        const body = { if_sequence: event.sequence };
        const chosen = recurring ? scope.value : "all";
        if (chosen !== "all") {
          body.scope = chosen;
          body.occurrence = occurrence;
        }
        if (title.value !== (details.title || event.title)) body.title = title.value;
        if (location.value !== (details.location || event.location)) body.location = location.value;
        if (description.value !== (details.description || event.description)) body.description = description.value;
        if (startText !== start || endText !== end) {
          if (chosen === "all" && occurrence) {
            // Opened from one occurrence, changed for all: the series moves by as much as this
            // occurrence was moved (its start is the series' first occurrence's).
            const shift = naiveMs(startText) - naiveMs(start);
            const length = naiveMs(endText) - naiveMs(startText);
            const seriesStart = naiveMs(schedule.start) + shift;
            body.start = naiveText(seriesStart, allDay);
            body.end = naiveText(seriesStart + length, allDay);
          } else {
            body.start = startText;
            body.end = endText;
          }
        }
        if (chosen !== "this") {
          const newRule = rrule.value.trim() || null;
          if (newRule !== (event.schedule.rrule || null)) body.rrule = newRule;
          const before = event.attendees.join(",");
          if (chosen === "all" && names.join(",") !== before) body.attendees = names;
        }
        answer = await api("PATCH", `/v1/events/${encodeURIComponent(event.id)}`, body);
      }
      view.dirty = false;
      const found = answer.conflicts || [];
      notify(found.length ? `Saved, with ${found.length} conflict${found.length > 1 ? "s" : ""}.` : "Saved.");
      // The editor drawn next (the saved event's) shows them.
      state.conflicts = found;
      go(`#/event/${answer.id}`);
    } catch (failure) {
      error.textContent = failure.code === "conflict"
        ? "Someone changed this event since you opened it: nothing was saved. Load the new version and try again."
        : errorText(failure);
      if (failure.code === "conflict") changed.hidden = false;
    }
  });

  let deleteArmed = false;
  const deleteButton = h("button", {
    type: "button", class: "danger", "data-focus": "delete",
    onclick: async () => {
      if (!deleteArmed) {
        deleteArmed = true;
        deleteButton.textContent = recurring && scope.value !== "all" ? `Really delete (${scope.selectedOptions[0].textContent.toLowerCase()})?` : "Really delete?";
        return;
      }
      try {
        const chosen = recurring ? scope.value : "all";
        const query = chosen === "all" ? "" : `?scope=${chosen}&occurrence=${encodeURIComponent(occurrence)}`;
        await api("DELETE", `/v1/events/${encodeURIComponent(event.id)}${query}`);
        view.dirty = false;
        notify("Deleted.");
        go("#/calendar");
      } catch (failure) {
        error.textContent = errorText(failure);
      }
    },
  }, "Delete");

  add(form, 
    h("h1", { id: "editor-title" }, event ? `Edit: ${event.title}` : "New event"),
    changed,
    event && recurring && occurrence ? field("Change", scope, `Occurrence of ${occurrence.replace("T", " ")}`) : null,
    field("Title", title), field("Where", location), field("Description", description),
    h("label", { class: "inline" }, allDayBox, "All day"),
    h("div", { class: "row" }, field("Starts", startDate), field("at", startTime)),
    h("div", { class: "row" }, field(allDay ? "Last day" : "Ends", endDate), field("at", endTime)),
    field("Time zone", timeZone, event ? "The event's zone: its repetitions follow this zone's clock" : "An IANA zone; repetitions follow its clock"),
    ruleControls,
    field("Attendees", attendees, "User names and group:<id>, separated by commas"),
    conflicts,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: findTime, "data-focus": "find" }, "Find a time"),
      h("button", { type: "button", onclick: () => checkConflicts(), "data-focus": "check" }, "Check conflicts")),
    slots,
    error,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary", "data-focus": "save" }, "Save"),
      event ? deleteButton : null,
      h("a", { href: "#/calendar" }, "Back to the calendar")),
    saved);
  syncRule();
  if (schedule && schedule.rrule) rrule.value = schedule.rrule;
  syncAllDay();
  syncScope();
  add(main, form);
  if (event) {
    const tally = h("section", { class: "panel", id: "tally", "aria-labelledby": "tally-title" });
    view.refreshTally = () => drawTally(tally, event.id);
    view.refreshTally();
    add(main, tally, alertsPanel(event.id),
      h("p", {}, h("a", { href: `/v1/events/${encodeURIComponent(event.id)}.ics`, onclick: downloadIcs(event.id) }, "Download as iCalendar")));
  }
  checkConflicts();
}

async function drawTally(section, id) {
  let tally;
  try {
    tally = await api("GET", `/v1/events/${encodeURIComponent(id)}/tally`);
  } catch (error) {
    section.replaceChildren(h("p", { class: "error" }, errorText(error)));
    return;
  }
  const counts = Object.entries(tally.counts).map(([response, count]) => `${count} ${response}`).join(", ");
  const rows = Object.entries(tally.attendees).map(([user, [series, single]]) => h("tr", { dataset: { attendee: user } },
    h("td", {}, user), h("td", {}, responseBadge(series)),
    h("td", {}, Object.entries(single).map(([at, response]) => h("div", {}, `${at.replace("T", " ")}: `, responseBadge(response))))));
  section.replaceChildren(
    h("h2", { id: "tally-title" }, "Answers"),
    h("p", { id: "tally-counts" }, counts || "Nobody is invited."),
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Attendee"), h("th", { scope: "col" }, "Series"), h("th", { scope: "col" }, "Single occurrences"))), h("tbody", {}, rows)) : null);
}

function debounce(action, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, ms);
  };
}

// ---------------------------------------------------------------------------------------------
// Invitations

function invitationsView() {
  let all = false;
  const view = {
    async draw(main) {
      const answer = await api("GET", `/v1/invitations${all ? "?all=true" : ""}`);
      const status = h("p", { role: "status" });
      const list = h("ul", { class: "plain" }, answer.invitations.map((invitation) => h("li", { dataset: { eventId: invitation.event_id } },
        h("div", {}, h("a", { href: `#/event/${invitation.event_id}` }, h("strong", {}, invitation.content.title)), " from ", invitation.organizer, " ", responseBadge(invitation.response)),
        h("div", { class: "muted" }, scheduleText(invitation.content.schedule)),
        h("div", { class: "actions", role: "group", "aria-label": `Answer ${invitation.content.title}` },
          RESPONSES.map(([response, label]) => h("button", {
            type: "button", "data-focus": `${invitation.event_id}-${response}`, "aria-pressed": String(invitation.response === response),
            onclick: async () => {
              try {
                await api("POST", `/v1/invitations/${encodeURIComponent(invitation.event_id)}/rsvp`, { response });
                status.textContent = `Answered ${response}: ${invitation.content.title}.`;
                refreshView();
              } catch (error) {
                status.textContent = errorText(error);
              }
            },
          }, label))))));
      add(main, 
        h("div", { class: "toolbar" }, h("h1", {}, all ? "All invitations" : "Invitations waiting for an answer"),
          h("button", { type: "button", "data-focus": "toggle", "aria-pressed": String(all), onclick: () => { all = !all; view.refresh(); } }, "Show answered too")),
        answer.invitations.length ? list : h("p", { class: "muted" }, "Nothing here."),
        status);
    },
  };
  return view;
}

// ---------------------------------------------------------------------------------------------
// Groups

function groupsView() {
  return {
    async draw(main) {
      const answer = await api("GET", "/v1/groups");
      const id = h("input", { name: "group-id", required: true, pattern: "[a-z0-9-]{3,32}", autocapitalize: "off" });
      const name = h("input", { name: "group-name", required: true, maxlength: 100 });
      const error = h("p", { class: "error", role: "alert" });
      add(main, 
        h("h1", {}, "Groups"),
        answer.groups.length
          ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Group"), h("th", { scope: "col" }, "Your role"))),
            h("tbody", {}, answer.groups.map((group) => h("tr", {}, h("td", {}, h("a", { href: `#/groups/${group.id}` }, group.id)), h("td", {}, group.role)))))
          : h("p", { class: "muted" }, "You belong to no group yet."),
        h("form", {
          class: "panel narrow", "aria-labelledby": "new-group",
          onsubmit: async (event) => {
            event.preventDefault();
            try {
              await api("POST", "/v1/groups", { id: id.value.trim(), name: name.value.trim() });
              go(`#/groups/${id.value.trim()}`);
            } catch (failure) {
              error.textContent = errorText(failure);
            }
          },
        }, h("h2", { id: "new-group" }, "New group"), field("Id", id, "3 to 32 of a–z, 0–9 and -"), field("Name", name),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create")), error));
    },
  };
}

function groupView(id) {
  const view = {
    async draw(main) {
      live.watch(`group:${id}`);
      const answer = await api("GET", `/v1/groups/${encodeURIComponent(id)}`);
      const mine = (answer.members.find(([name]) => name === me()) || [null, "member"])[1];
      const manage = mine === "owner" || mine === "admin";
      const error = h("p", { class: "error", role: "alert" });
      const act = (action) => async () => {
        error.textContent = "";
        try {
          await action();
          view.refresh();
        } catch (failure) {
          error.textContent = errorText(failure);
        }
      };
      const user = h("input", { name: "member", required: true, autocapitalize: "off" });
      const role = h("select", { name: "role" }, h("option", { value: "member" }, "member"), mine === "owner" ? h("option", { value: "admin" }, "admin") : null);
      add(main, 
        h("h1", {}, `${answer.group.name} (${answer.group.id})`),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Member"), h("th", { scope: "col" }, "Role"), h("th", { scope: "col" }, h("span", { class: "hidden-label" }, "Actions")))),
          h("tbody", {}, answer.members.map(([name, memberRole]) => h("tr", { dataset: { member: name } },
            h("td", {}, name), h("td", {}, memberRole),
            h("td", {},
              mine === "owner" && memberRole !== "owner"
                ? h("button", { type: "button", onclick: act(() => api("POST", `/v1/groups/${encodeURIComponent(id)}/members`, { user: name, role: memberRole === "admin" ? "member" : "admin" })) },
                  memberRole === "admin" ? `Make ${name} a member` : `Make ${name} an admin`) : null,
              (manage && memberRole !== "owner" && name !== me()) || (name === me() && memberRole !== "owner")
                ? h("button", { type: "button", class: "danger", onclick: act(() => api("DELETE", `/v1/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(name)}`)) },
                  name === me() ? "Leave" : `Remove ${name}`) : null))))),
        manage ? h("form", {
          class: "panel narrow", "aria-labelledby": "add-member",
          onsubmit: (event) => { event.preventDefault(); act(() => api("POST", `/v1/groups/${encodeURIComponent(id)}/members`, { user: user.value.trim(), role: role.value }))(); },
        }, h("h2", { id: "add-member" }, "Add a member"), field("User", user), field("Role", role),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add"))) : null,
        error,
        h("p", {}, h("a", { href: "#/groups" }, "All groups")));
    },
  };
  return view;
}

// ---------------------------------------------------------------------------------------------
// Cluster: the shards, their replicas and leaders (for operators; needs no session)

function clusterView() {
  const view = {
    async draw(main) {
      let status;
      try {
        status = await api("GET", "/v1/cluster/status", undefined, { anonymous: true });
        setConnection("live", `server ${status.server_id}`);
      } catch (error) {
        setConnection("offline");
        throw error;
      }
      add(main, 
        h("h1", {}, "Cluster"),
        h("p", {}, `Answered by server ${status.server_id} at ${new Date().toLocaleTimeString()}; `,
          status.all_shards_led ? h("span", { class: "ok" }, "every shard has a leader") : h("span", { class: "warn" }, "a shard has no leader"),
          status.unreachable && status.unreachable.length ? h("span", { class: "role-unreachable" }, `; unreachable: server ${status.unreachable.join(", ")}`) : null),
        h("div", { class: "shards" }, status.shards.map(drawShard)),
        h("p", {}, h("a", { href: "/#/calendar", "data-focus": "back" }, "Back to the agenda")));
    },
  };
  return view;
}

function drawShard(shard) {
  const rows = shard.replicas.map((replica) => h("tr", { dataset: { server: replica.server_id } },
    h("td", {}, String(replica.server_id)),
    h("td", { class: `role-${replica.role}` }, replica.role),
    h("td", {}, String(replica.term)),
    h("td", {}, String(replica.commit_index)),
    h("td", {}, String(replica.applied_index)),
    h("td", {}, String(replica.last_index)),
    h("td", {}, String(replica.keys))));
  const columns = ["Server", "Role", "Term", "Commit", "Applied", "Last", "Keys"];
  // Focusable: on a narrow screen its table scrolls sideways, and a keyboard must reach that.
  return h("section", { class: "panel shard", tabindex: "0", "data-focus": `shard-${shard.shard}`, dataset: { shard: shard.shard }, "aria-labelledby": `shard-${shard.shard}` },
    h("h2", { id: `shard-${shard.shard}` }, `Shard ${shard.shard}: ${shard.name}`),
    h("p", { class: "muted" }, `Keys from "${shard.start}" to ${shard.end ? `"${shard.end}"` : "the end"}`),
    h("p", {}, "Leader: ",
      shard.leader_id ? h("strong", { class: "leader" }, `server ${shard.leader_id}`) : h("span", { class: "warn" }, "none"),
      `, term ${shard.term}`),
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows)));
}

// ---------------------------------------------------------------------------------------------
// Start

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
  // On a link or button the arrows are the browser's (and assistive tools'); letters can be
  // turned off (WCAG 2.1.4), in the calendar's toolbar.
  if (event.key.startsWith("Arrow") && target && ["A", "BUTTON"].includes(target.tagName)) return;
  if (event.key.length === 1 && !letterKeys()) return;
  if (state.view && state.view.key && state.view.key(event)) event.preventDefault();
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("DELETE", "/v1/sessions/current");
  } catch {
    // The session ends here whatever the server said.
  }
  endSession("Logged out.");
});

window.addEventListener("hashchange", route);
// A login or logout in another tab of this origin: this tab follows it.
window.addEventListener("storage", (event) => {
  if (event.key === SESSION_KEY) location.reload();
});

// The cluster page refreshes itself every second (one request at a time, so an older answer
// never replaces a newer one); other views follow the live changes.
let clusterBusy = false;
setInterval(async () => {
  if (clusterBusy || location.pathname !== "/cluster" || !state.view || !state.view.refresh) return;
  clusterBusy = true;
  try {
    await state.view.refresh();
  } finally {
    clusterBusy = false;
  }
}, 1000);

if (state.session && location.pathname !== "/cluster") {
  live.start();
  updatePending();
}
route();
