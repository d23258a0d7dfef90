// The flask-ssecors demo page: one credentialed stream to another origin carrying the ticker
// and the chat, shared by every tab of the page's origin; a chat posted cross-origin with the
// session cookie, and who is in its room; a fetch() stream reader with its own headers, and what
// the browser sees when the API refuses this page's origin.
//
// Plain JavaScript, no build step. `window.demo` exposes what the page received, for the tests.
"use strict";

(() => {
  const settings = JSON.parse(document.getElementById("demo-settings").textContent);
  const API = settings.api;
  const ROOM = settings.room;
  const $ = (id) => document.getElementById(id);

  const demo = {
    settings,
    // Ids exactly as they arrived, before anything else looks at them.
    received: { ticks: [], chat: [], presence: [] },
    // Every state each connection went through.
    states: { page: [], feed: [] },
    refusals: [],
    me: null,
    verdict: "pending",
    probeFeed,
  };
  window.demo = demo;

  // -- connection rows ------------------------------------------------------------------------

  const LOG_LINES = 6;

  class Connection {
    constructor(key) {
      this.key = key;
      this.row = $(`conn-${key}`);
      this.badges = [
        this.row.querySelector(".badge"),
        ...document.querySelectorAll(`[data-badge-for="${key}"]`),
      ];
      this.detail = this.row.querySelector(".conn-detail");
      this.log = this.row.querySelector(".conn-log");
      this.state = null;
    }

    set(state, detail, label = state) {
      this.state = state;
      demo.states[this.key].push({ state, detail, at: Date.now() });
      for (const badge of this.badges) {
        badge.dataset.state = state;
        badge.textContent = label;
      }
      this.detail.textContent = detail;
      const line = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = clock(new Date());
      line.append(time, ` ${label}`);
      this.log.prepend(line);
      while (this.log.children.length > LOG_LINES) this.log.lastElementChild.remove();
    }
  }

  const connections = {
    page: new Connection("page"),
    feed: new Connection("feed"),
  };

  // -- one stream for the page, shared by every tab ---------------------------------------------
  //
  // The ticker and the chat come on ONE stream, GET /page-events: a multi-channel subscription
  // whose events are typed `<channel>/<type>` ("ticker/tick", "room:lobby/message") and whose id
  // holds the position in both channels. The page reads it through SharedEventSource (served by
  // flask-ssecors from this page's origin): every tab of this origin shares one connection, so
  // ten tabs need one of the browser's six HTTP/1.1 connections to the API, not twenty.
  //
  // The shared connection reconnects by itself, resuming with its Last-Event-ID, and when the
  // tab that holds it closes, another takes over and resumes. It gives up for good when the
  // API answers anything but 200 (a 403 for a refused origin).
  const TICKER = "ticker";
  const CHAT = `room:${ROOM}`;
  // A member's first stream on a channel publishes JOIN there, its last one LEAVE.
  const JOIN = "ssecors-join";
  const LEAVE = "ssecors-leave";
  let shared = null;
  let sharedOpened = false;
  // What the tests read: this tab's part in the shared connection.
  demo.shared = () => ({
    role: shared && shared.role,
    readyState: shared ? shared.readyState : null,
    lastEventId: shared ? shared.lastEventId : "",
  });

  // The id of one channel inside the stream's id ("<ticker id>~<chat id>").
  function channelId(event, index) {
    const parts = (event.lastEventId || "").split("~");
    return parts.length > index ? parts[index] : event.lastEventId;
  }

  function setPage(state, detail, label = state) {
    connections.page.set(state, detail, label);
  }

  // Which tab holds the connection: this one ("worker" in a SharedWorker, or "leader"), or
  // another ("follower").
  function showRole() {
    const role = shared && shared.role;
    const text = {
      worker: "Held by a SharedWorker: every tab of this origin reads this one connection.",
      leader: "Held by this tab for every tab of this origin (Web Locks and BroadcastChannel).",
      follower: "Held by another tab of this origin; this tab receives its events.",
      direct: "This tab's own connection (the browser shares no state between tabs).",
    }[role];
    $("conn-page").querySelector(".conn-role").textContent = text || "";
  }

  function openShared() {
    const path = `/page-events?room=${encodeURIComponent(ROOM)}`;
    setPage("connecting", `GET ${API}${path}, one stream shared by this origin's tabs`);
    // ?share=leader: share through a leader tab (Web Locks and BroadcastChannel) instead of a
    // SharedWorker, as in browsers without SharedWorker.
    const worker = new URLSearchParams(location.search).get("share") === "leader" ? false : undefined;
    const source = new SharedEventSource(API + path, { withCredentials: true, worker });
    shared = source;
    source.addEventListener("statechange", showRole);
    // Listeners first, in the same task: an event reaches the tabs that listen for its name.
    source.addEventListener(`${TICKER}/tick`, (event) => onTick(JSON.parse(event.data), event));
    source.addEventListener(`${TICKER}/${settings.resetEvent}`, () => loadTicks());
    source.addEventListener(`${CHAT}/message`, (event) => onMessage(JSON.parse(event.data), event));
    source.addEventListener(`${CHAT}/topic`, (event) => {
      $("topic").textContent = JSON.parse(event.data).topic;
    });
    source.addEventListener(`${CHAT}/${settings.resetEvent}`, () => onReset());
    for (const [type, present] of [[JOIN, true], [LEAVE, false]]) {
      source.addEventListener(`${CHAT}/${type}`, (event) =>
        onPresence(JSON.parse(event.data).member, present, event),
      );
    }
    let lastId = null;
    source.addEventListener("open", () => {
      if (sharedOpened && lastId !== null) {
        setPage("open", `Resumed after Last-Event-ID ${lastId}.`, "open (resumed)");
      } else {
        setPage("open", `Streaming (${source.role || "shared"}); cookies go along.`);
      }
      const first = !sharedOpened;
      sharedOpened = true;
      setVerdict(
        "allowed",
        `Allowed: ${location.origin} may read the API's streams`,
        `The API lists ${allowedList()}. Its stream and chat are credentialed: the session ` +
          "cookie goes along with every request, and the API answers with exactly this origin.",
      );
      if (first) {
        loadTicks();
        startChat();
      }
    });
    source.addEventListener("error", () => {
      lastId = source.lastEventId || lastId;
      if (source.readyState === SharedEventSource.CONNECTING) {
        const detail = lastId
          ? `Connection lost; it resumes with Last-Event-ID ${lastId}.`
          : "Connection lost; the browser retries.";
        setPage("reconnecting", detail);
      } else if (!sharedOpened) {
        setPage("refused", "The API refused the stream; the browser gives up for good.");
        $("tick-meta").textContent = "No ticks: the API refused this page's origin.";
        refused(
          "EventSource GET /page-events",
          "failed at once and will not retry: the API answers 403 to origins it does not allow.",
        );
        // The chat's requests are refused too: show what the browser says about them.
        startChat();
      } else {
        setPage("closed", "The API answered with an error status; opening the stream again.");
        source.close();
        setTimeout(openShared, 1000);
      }
    });
    return source;
  }

  // -- the verdict on this page's origin ----------------------------------------------------------

  function setVerdict(kind, title, text) {
    if (demo.verdict === "refused" && kind !== "refused") return;
    demo.verdict = kind;
    document.body.dataset.verdict = kind;
    $("verdict-title").textContent = title;
    $("verdict-text").textContent = text;
  }

  function allowedList() {
    return settings.allowedOrigins.join(", ");
  }

  function refused(what, why) {
    demo.refusals.push({ what, why });
    const item = document.createElement("li");
    const name = document.createElement("strong");
    name.textContent = what;
    item.append(name, ` ${why}`);
    $("refusals").append(item);
    setVerdict(
      "refused",
      `Refused: ${location.origin} is not an allowed origin`,
      `The API allows ${allowedList()} only. It answered 403 Forbidden before any view ran: ` +
        "no stream, no chat, no cookie. Scripts only learn that the connection failed; the 403 " +
        "itself is in DevTools (Network) and in the server's access log.",
    );
  }

  // -- the ticker ------------------------------------------------------------------------------

  const WINDOW = 90;
  const ticks = [];
  const priceFormat = new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });

  // Ticks are numbered by time: one shown twice (the chart's history and the stream overlap,
  // or a stream resumed) is skipped; a much smaller number means the ticker started over.
  function onTick(tick, event) {
    const last = ticks[ticks.length - 1];
    if (last && tick.n <= last.n) {
      if (last.n - tick.n < 1000) return;
      ticks.length = 0;
    }
    if (tickHistoryLoading) {
      pendingTicks.push([tick, event]);
      return;
    }
    demo.received.ticks.push(String(tick.n));
    ticks.push(tick);
    if (ticks.length > WINDOW) ticks.shift();
    drawTicker(event ? channelId(event, 0) : String(tick.n));
  }

  let tickHistoryLoading = false;
  let pendingTicks = [];

  // The chart's history (the last ticks), loaded once the stream is open, so that it overlaps
  // what the stream brings: nothing is missing between the two, and nothing is shown twice.
  async function loadTicks() {
    tickHistoryLoading = true;
    pendingTicks = [];
    try {
      const { ticks: history } = await api("/ticks/recent");
      tickHistoryLoading = false;
      for (const tick of history) onTick(tick, null);
    } catch (error) {
      tickHistoryLoading = false;
    }
    const waiting = pendingTicks;
    pendingTicks = [];
    for (const [tick, event] of waiting) onTick(tick, event);
  }

  function drawTicker(lastId) {
    const last = ticks[ticks.length - 1];
    const first = ticks[0];
    $("price").textContent = priceFormat.format(last.price);
    const delta = last.price - first.price;
    const change = $("change");
    change.dataset.direction = delta >= 0 ? "up" : "down";
    change.textContent = `${delta >= 0 ? "▲" : "▼"} ${priceFormat.format(Math.abs(delta))} ` +
      `(${((delta / first.price) * 100).toFixed(2)}%)`;
    $("tick-meta").textContent = `id ${lastId} · ${clock(new Date(last.t))} · ` +
      `one tick every ${settings.tickSeconds} s`;
    const prices = ticks.map((tick) => tick.price);
    const low = Math.min(...prices);
    const high = Math.max(...prices);
    const span = high - low || 1;
    const step = 300 / (WINDOW - 1);
    const offset = (WINDOW - ticks.length) * step;
    const points = ticks.map((tick, i) => [
      offset + i * step,
      84 - ((tick.price - low) / span) * 76,
    ]);
    const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`);
    $("spark-line").setAttribute("d", line.join(" "));
    $("spark-area").setAttribute(
      "d",
      `${line.join(" ")} L${points[points.length - 1][0].toFixed(1)},90 L${offset.toFixed(1)},90 Z`,
    );
  }

  // Resolves once the page knows whether the API can be reached and allows this origin.
  function tickerSettled() {
    return new Promise((resolve) => {
      const check = () => {
        const state = connections.page.state;
        if (state === "open" || state === "refused" || state === "reconnecting") resolve(state);
        else setTimeout(check, 100);
      };
      check();
    });
  }

  // -- the chat --------------------------------------------------------------------------------

  const messages = $("messages");

  async function api(path, options = {}) {
    const response = await fetch(API + path, { credentials: "include", ...options });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.message || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function renderMessage(message) {
    // Shown once even if it came both in a snapshot and on the stream (possible when several
    // workers each keep their own snapshot; see example_app/README.md).
    if (messages.querySelector(`[data-id="${CSS.escape(message.id)}"]`)) return;
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.id = message.id;
    if (demo.me && message.uid === demo.me.id) item.classList.add("mine");
    item.style.setProperty("--hue", String(message.hue));
    const head = document.createElement("div");
    head.className = "message-head";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.user;
    const when = document.createElement("time");
    when.dateTime = message.at;
    when.textContent = clock(new Date(message.at));
    head.append(who, when);
    const text = document.createElement("p");
    text.textContent = message.text;
    item.append(head, text);
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    messages.append(item);
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  }

  function showRoom(snapshot) {
    $("topic").textContent = snapshot.topic;
    messages.replaceChildren();
    for (const message of snapshot.messages) renderMessage(message);
    messages.scrollTop = messages.scrollHeight;
  }

  function onMessage(message, event) {
    const id = channelId(event, 1);
    demo.received.chat.push(id);
    const full = { ...message, id };
    renderMessage(full);
  }

  // The stream's history ran out or the server restarted: sign in again and load the room.
  async function onReset() {
    if (!sharedOpened) return;
    await startChat();
  }

  let chatFailures = 0;

  // Signs in (GET /me) and loads the room and who is in it, once the page's stream is open:
  // messages published after that come on the stream (shown once, by id). Run again after a chat reset (the
  // server restarted: the session cookie is no longer valid, so a new one is needed).
  async function startChat() {
    $("room-name").textContent = ROOM;
    loadingPresence();
    let snapshot;
    try {
      demo.me = await api("/me");
      snapshot = await api(`/rooms/${ROOM}`);
    } catch (error) {
      if (!error.status && (await tickerSettled()) === "refused") {
        const why = "was blocked by CORS: the API answers 403 to origins it does not allow.";
        refused("fetch GET /me", why);
      } else {
        const why = error.status ? `HTTP ${error.status}.` : "The API cannot be reached.";
        chatError(`Not signed in: ${why} Trying again.`);
        setTimeout(startChat, Math.min(30, 2 ** chatFailures++) * 1000);
      }
      return;
    }
    chatFailures = 0;
    const me = $("me");
    me.hidden = false;
    me.textContent = `you are ${demo.me.name}`;
    me.style.setProperty("--hue", String(demo.me.hue));
    const later = messages.querySelectorAll(".message");
    const shown = [...later].map((node) => node.dataset.id);
    showRoom(snapshot);
    showPresence(snapshot.presence);
    // Messages the stream brought before the snapshot arrived (it may not have them yet).
    for (const id of shown) {
      if (!snapshot.messages.some((message) => message.id === id)) {
        const kept = [...later].find((node) => node.dataset.id === id);
        if (kept) messages.append(kept);
      }
    }
    chatError("");
    $("chat-input").disabled = false;
    $("chat-send").disabled = false;
  }

  // -- who is in the room -----------------------------------------------------------------------
  //
  // The stream declares this browser's chat user (the session's name) as a member of the room,
  // so every tab of a browser is one member, as it is one user. The list starts from the room's
  // snapshot (`presence` in GET /rooms/<room>, from sse.presence()), read once the stream is
  // open, then follows the room's join and leave events. Those that arrive while the snapshot
  // loads are applied after it, in order: each one says what became true when it was
  // published, and the last one about a member wins, whichever side of the snapshot it was.

  const members = new Set();
  // Above SSECORS_PRESENCE_MAX_MEMBERS the snapshot only counts: the count follows the events.
  let countsOnly = false;
  let memberCount = 0;
  let presenceLoading = true;
  let pendingPresence = [];

  function onPresence(member, present, event) {
    demo.received.presence.push({ type: present ? JOIN : LEAVE, member, id: channelId(event, 1) });
    if (presenceLoading) pendingPresence.push([member, present]);
    else applyPresence(member, present);
    drawMembers();
  }

  function applyPresence(member, present) {
    if (countsOnly) {
      memberCount = Math.max(0, memberCount + (present ? 1 : -1));
    } else if (present) {
      members.add(member);
    } else {
      members.delete(member);
    }
  }

  function loadingPresence() {
    presenceLoading = true;
    pendingPresence = [];
  }

  function showPresence(snapshot) {
    countsOnly = snapshot.counts_only;
    memberCount = snapshot.member_count;
    members.clear();
    for (const member of snapshot.members) members.add(member);
    const waiting = pendingPresence;
    presenceLoading = false;
    pendingPresence = [];
    for (const [member, present] of waiting) applyPresence(member, present);
    drawMembers();
  }

  function drawMembers() {
    const list = $("members");
    if (presenceLoading) return;
    const items = [...members].sort().map((member) => {
      const item = document.createElement("li");
      item.className = "member";
      item.dataset.member = member;
      item.textContent = member;
      if (demo.me && member === demo.me.name) {
        item.classList.add("mine");
        item.style.setProperty("--hue", String(demo.me.hue));
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = " (you)";
        item.append(you);
      }
      return item;
    });
    if (countsOnly) {
      const item = document.createElement("li");
      item.className = "member-note";
      item.textContent = "too many to list";
      items.push(item);
    }
    list.replaceChildren(...items);
    $("member-count").textContent = `(${countsOnly ? memberCount : members.size})`;
  }
  demo.members = () => [...members].sort();

  function chatError(text) {
    const error = $("chat-error");
    error.hidden = !text;
    error.textContent = text || "";
  }

  // Posts a message as the session's user: a credentialed, cross-origin JSON POST (with a
  // preflight, since its Content-Type is JSON). The message comes back on the stream.
  function send(text) {
    return api(`/rooms/${ROOM}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
  }
  demo.send = send;

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text) return;
    $("chat-send").disabled = true;
    try {
      await send(text);
      input.value = "";
      chatError("");
    } catch (error) {
      chatError(`Not sent: ${error.message}`);
    } finally {
      $("chat-send").disabled = false;
      input.focus();
    }
  });

  // -- a fetch() stream reader with its own headers --------------------------------------------

  // Reads `count` ticks from /feed with fetch(), sending Authorization and Last-Event-ID, which
  // an EventSource cannot. Those headers make the browser send a preflight first.
  async function probeFeed({ lastEventId, count = 3 } = {}) {
    const connection = connections.feed;
    const result = { ok: false, status: null, ids: [], lastEventId, error: null };
    const headers = { Authorization: `Bearer ${settings.feedToken}` };
    if (lastEventId !== undefined) headers["Last-Event-ID"] = String(lastEventId);
    connection.set("connecting", "Preflight: may this page send Authorization and Last-Event-ID?");
    const abort = new AbortController();
    let response;
    try {
      response = await fetch(`${API}/feed`, {
        credentials: "include",
        cache: "no-store",
        headers,
        signal: abort.signal,
      });
    } catch (error) {
      result.error = String(error);
      if (demo.verdict === "refused") {
        connection.set("refused", "The preflight was refused: this origin is not allowed.");
        refused("fetch GET /feed", "was blocked: its preflight was refused, so it was never sent.");
      } else {
        connection.set(
          "refused",
          "The preflight was refused: the API does not allow these headers " +
            "(SSECORS_ALLOWED_HEADERS). The request itself was never sent.",
        );
      }
      return result;
    }
    result.status = response.status;
    if (!response.ok) {
      connection.set("closed", `HTTP ${response.status}`);
      return result;
    }
    const resumed = lastEventId === undefined ? "" : ` after Last-Event-ID ${lastEventId}`;
    connection.set("open", `Preflight passed; reading${resumed}.`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = eventStreamParser();
    try {
      while (result.ids.length < count) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          if (event.type === "tick") result.ids.push(event.id);
        }
      }
    } finally {
      abort.abort();
    }
    result.ok = result.ids.length >= count;
    connection.set(
      "done",
      `Preflight passed; resumed${resumed}: read ticks ${result.ids.join(", ")}, then closed.`,
    );
    return result;
  }

  // A small text/event-stream parser, enough for the feed: data, event and id fields.
  function eventStreamParser() {
    let buffer = "";
    let data = [];
    let type = "";
    let lastId = "";
    return {
      push(text) {
        buffer += text;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        const events = [];
        for (const line of lines) {
          if (line === "") {
            if (data.length) events.push({ type: type || "message", data: data.join("\n"), id: lastId });
            data = [];
            type = "";
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") data.push(value);
          else if (field === "event") type = value;
          else if (field === "id" && !value.includes("\0")) lastId = value;
        }
        return events;
      },
    };
  }

  async function startFeedProbe() {
    // Resume two ticks back, to show that the fetch() reader's Last-Event-ID is honoured too.
    const latest = Number(demo.received.ticks[demo.received.ticks.length - 1]);
    await probeFeed({ lastEventId: Number.isFinite(latest) ? latest - 2 : undefined });
    $("feed-again").disabled = false;
  }

  $("feed-again").addEventListener("click", () => {
    $("feed-again").disabled = true;
    startFeedProbe();
  });

  // -- start -----------------------------------------------------------------------------------

  function clock(date) {
    return date.toLocaleTimeString("en-GB", { hour12: false });
  }

  for (const node of document.querySelectorAll(".page-origin")) node.textContent = location.origin;
  for (const node of document.querySelectorAll(".allowed-origins")) node.textContent = allowedList();
  $("api-origin").textContent = API;
  $("refused-link").href = `${settings.refusedOrigin}/`;
  $("refused-link").textContent = settings.refusedOrigin;
  $("allowed-link").href = `${settings.pageOrigin}/`;
  $("allowed-link").textContent = settings.pageOrigin;

  openShared();
  // The fetch() reader runs once the ticker has an id to resume from, or gives up waiting.
  const waitForTick = setInterval(() => {
    if (demo.received.ticks.length || demo.verdict === "refused") {
      clearInterval(waitForTick);
      startFeedProbe();
    }
  }, 200);
})();
