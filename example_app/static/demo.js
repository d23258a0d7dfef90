// The flask-ssecors demo page: a credentialed EventSource to another origin, a chat posted
// cross-origin with the session cookie, a fetch() stream reader with its own headers, and what
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
    received: { ticks: [], chat: [] },
    // Every state each connection went through.
    states: { ticker: [], chat: [], feed: [] },
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
    ticker: new Connection("ticker"),
    chat: new Connection("chat"),
    feed: new Connection("feed"),
  };

  // -- an EventSource with visible state -------------------------------------------------------

  // Opens `new EventSource(url, {withCredentials: true})` and reports its state: connecting,
  // open, reconnecting (with the Last-Event-ID the browser will send), refused or closed.
  //
  // The browser reconnects by itself when a stream ends or the network fails. It gives up for
  // good when the server answers with anything but 200 (a 403, a 401, a proxy's 502): then
  // `onRefused` runs if the stream never opened, `onClosed(lastId)` if it had.
  function openStream(connection, path, handlers, { onOpen, onRefused, onClosed } = {}) {
    let opened = false;
    let lastId = null;
    connection.set("connecting", `GET ${API}${path}`);
    const source = new EventSource(API + path, { withCredentials: true });
    source.addEventListener("open", () => {
      if (opened && lastId !== null) {
        connection.set("open", `Resumed after Last-Event-ID ${lastId}.`, "open (resumed)");
      } else {
        connection.set("open", "Streaming; cookies go along (withCredentials).");
      }
      opened = true;
      if (onOpen) onOpen();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CONNECTING) {
        const detail = lastId === null
          ? "Connection lost; the browser retries."
          : `Connection lost; the browser retries with Last-Event-ID ${lastId}.`;
        connection.set("reconnecting", detail);
      } else if (!opened) {
        connection.set("refused", "The API refused the stream; the browser gives up for good.");
        if (onRefused) onRefused();
      } else {
        connection.set("closed", "The API answered with an error status; browsers do not retry.");
        if (onClosed) onClosed(lastId);
      }
    });
    for (const [type, handle] of Object.entries(handlers)) {
      source.addEventListener(type, (event) => {
        if (event.lastEventId) lastId = event.lastEventId;
        handle(JSON.parse(event.data), event);
      });
    }
    return source;
  }

  // Runs `start` again later, waiting longer after each failure (1 s, 2 s, 4 s... up to 30 s).
  function retryLater(connection, attempt, start, why) {
    const seconds = Math.min(30, 2 ** attempt);
    connection.set("reconnecting", `${why} Trying again in ${seconds} s.`);
    setTimeout(start, seconds * 1000);
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

  function onTick(tick, event) {
    demo.received.ticks.push(event.lastEventId);
    if (ticks.length && tick.n <= ticks[ticks.length - 1].n) ticks.length = 0;
    ticks.push(tick);
    if (ticks.length > WINDOW) ticks.shift();
    drawTicker(event.lastEventId);
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

  let tickerFailures = 0;

  // A reopened stream is a new EventSource, which sends no Last-Event-ID header: it passes the
  // last id it saw as the `last_event_id` query parameter instead, and misses nothing.
  function startTicker(lastId = null) {
    const path = lastId === null ? "/ticks" : `/ticks?last_event_id=${encodeURIComponent(lastId)}`;
    const again = (id) => retryLater(
      connections.ticker,
      tickerFailures++,
      () => startTicker(id),
      "The stream failed with an error status.",
    );
    openStream(connections.ticker, path, { tick: onTick }, {
      onOpen: () => {
        tickerFailures = 0;
        setVerdict(
          "allowed",
          `Allowed: ${location.origin} may read the API's streams`,
          `The API lists ${allowedList()}. Its streams and chat are credentialed: the session ` +
            "cookie goes along with every request, and the API answers with exactly this origin.",
        );
      },
      onRefused: () => {
        if (demo.verdict === "allowed") {
          again(lastTickId());
          return;
        }
        $("tick-meta").textContent = "No ticks: the API refused this page's origin.";
        refused(
          "EventSource GET /ticks",
          "failed at once and will not retry: the API answers 403 to origins it does not allow.",
        );
      },
      onClosed: again,
    });
  }

  function lastTickId() {
    const ids = demo.received.ticks;
    return ids.length ? ids[ids.length - 1] : null;
  }

  // Resolves once the ticker knows whether the API can be reached and allows this origin.
  function tickerSettled() {
    return new Promise((resolve) => {
      const check = () => {
        const state = connections.ticker.state;
        if (state === "open" || state === "refused" || state === "reconnecting") resolve(state);
        else setTimeout(check, 100);
      };
      check();
    });
  }

  // -- the chat --------------------------------------------------------------------------------

  const messages = $("messages");
  let resyncing = null;

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
    demo.received.chat.push(event.lastEventId);
    const full = { ...message, id: event.lastEventId };
    if (resyncing) resyncing.push(full);
    renderMessage(full);
  }

  // The stream's history ran out or the server restarted: load the room again.
  async function onReset() {
    resyncing = [];
    try {
      const snapshot = await api(`/rooms/${ROOM}`);
      const known = new Set(snapshot.messages.map((message) => message.id));
      const later = resyncing.filter((message) => !known.has(message.id));
      showRoom(snapshot);
      for (const message of later) renderMessage(message);
    } finally {
      resyncing = null;
    }
  }

  let chatFailures = 0;

  // Signs in (GET /me), loads the room, then streams it from the room's cursor. Run again from
  // the start when the stream fails for good: after a server restart, say, the session cookie
  // is no longer valid (the stream answers 401) and a new one is needed.
  async function startChat() {
    $("room-name").textContent = ROOM;
    let snapshot;
    try {
      demo.me = await api("/me");
      snapshot = await api(`/rooms/${ROOM}`);
    } catch (error) {
      if (!error.status && (await tickerSettled()) === "refused") {
        const why = "was blocked by CORS: the API answers 403 to origins it does not allow.";
        connections.chat.set("refused", `GET ${API}/me ${why}`);
        refused("fetch GET /me", why);
      } else {
        const why = error.status ? `HTTP ${error.status}.` : "The API cannot be reached.";
        retryLater(connections.chat, chatFailures++, startChat, why);
      }
      return;
    }
    const me = $("me");
    me.hidden = false;
    me.textContent = `you are ${demo.me.name}`;
    me.style.setProperty("--hue", String(demo.me.hue));
    showRoom(snapshot);
    const path = `/rooms/${ROOM}/events?last_event_id=${encodeURIComponent(snapshot.cursor)}`;
    const source = openStream(connections.chat, path, {
      message: onMessage,
      topic: (data) => { $("topic").textContent = data.topic; },
      [settings.resetEvent]: onReset,
    }, {
      onOpen: () => {
        chatFailures = 0;
        chatError("");
        $("chat-input").disabled = false;
        $("chat-send").disabled = false;
      },
      onRefused: () => failed("The chat stream was refused (is the session cookie blocked?)."),
      onClosed: () => failed("The chat stream failed with an error status."),
    });
    function failed(why) {
      source.close();
      $("chat-input").disabled = true;
      $("chat-send").disabled = true;
      retryLater(connections.chat, chatFailures++, startChat, `${why} Signing in again.`);
    }
  }

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

  startTicker();
  startChat();
  // The fetch() reader runs once the ticker has an id to resume from, or gives up waiting.
  const waitForTick = setInterval(() => {
    if (demo.received.ticks.length || demo.verdict === "refused") {
      clearInterval(waitForTick);
      startFeedProbe();
    }
  }, 200);
})();
