/*
 * flask-ssecors: one EventSource shared by every tab of an origin.
 *
 * Browsers allow six HTTP/1.1 connections per host, and every EventSource holds one, so a page
 * opened in a few tabs starves itself. SharedEventSource gives each tab an EventSource-like
 * object, and all the tabs of one origin that read the same URL share one real EventSource:
 *
 *   - in a SharedWorker, when the page can load this file from its own origin (a SharedWorker
 *     must be same-origin with the page); the worker lives as long as one tab uses it;
 *   - otherwise in one tab, the leader, elected with Web Locks; the leader forwards what it
 *     receives to the other tabs through a BroadcastChannel. When the leader tab closes, the
 *     next tab takes over and reconnects with `?last_event_id=<the last id it saw>` (a new
 *     EventSource cannot set the Last-Event-ID header), so nothing is missed; events that
 *     reach a tab twice across the handover are dropped by id;
 *   - otherwise (no Web Locks either: they exist only in secure contexts, https or localhost)
 *     each tab opens its own EventSource.
 *
 * No build step, no dependencies: load it with a classic <script> tag. The same file is the
 * SharedWorker script.
 *
 *   const source = new SharedEventSource("https://api.example.com/rooms/lobby/events", {
 *     withCredentials: true,        // as for EventSource: send cookies (default false)
 *     worker: "/_ssecors/<version>/ssecors-shared.js",
 *       // the SharedWorker script, on the page's own origin; by default the URL this file
 *       // was loaded from when that is same-origin; false: never use a SharedWorker
 *   });
 *   source.addEventListener("message", (event) => show(event.data, event.lastEventId));
 *   source.addEventListener("ssecors-reset", refetch);   // any event name, as sent
 *   source.onopen = source.onerror = () => status(source.readyState);
 *   source.addEventListener("statechange", () => status(source.readyState, source.role));
 *   source.close();
 *
 * API (as EventSource's, plus `role`, `lastEventId` and the `statechange` event):
 *   url, withCredentials          as given (url made absolute)
 *   readyState                    CONNECTING (0), OPEN (1) or CLOSED (2); CLOSED is final
 *   role                          "worker", "leader", "follower", "direct", or null (closed)
 *   lastEventId                   the id of the last event the shared stream delivered
 *   addEventListener(type, fn, options), removeEventListener(type, fn, options)
 *                                 events are MessageEvents (data, lastEventId, origin)
 *   onmessage, onopen, onerror, onstatechange
 *   close()                       this tab stops; the shared connection closes with the last
 *   "open", "error"               as EventSource: "error" with readyState CONNECTING while
 *                                 reconnecting (also when a leader tab closed), CLOSED when
 *                                 the server refused the stream for good (a 403, say)
 *   "statechange"                 readyState or role changed
 *
 * An event is forwarded to tabs when any tab listens for its name, so listen before events
 * you must not miss can arrive (in the same task as the constructor is enough). The names
 * "open", "error" and "statechange" belong to the connection, not to the server's events.
 */
(function (scope) {
  "use strict";

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSED = 2;
  const PREFIX = "ssecors-shared:";
  const WORKER_NAME = "ssecors-shared";
  const LOCAL_TYPES = new Set(["open", "error", "statechange"]);
  /** Ids remembered per tab to drop the events a leader handover delivers twice. */
  const RECENT_IDS = 1024;

  const randomId = () => Math.random().toString(36).slice(2) + Date.now().toString(36);
  const keyOf = (url, withCredentials) => `${PREFIX}${withCredentials ? "cred" : "anon"}:${url}`;
  const locks = () => (scope.navigator && scope.navigator.locks) || null;

  /** Hold the Web Lock `name` while `start(release)` runs and until `release()`. */
  function holdLock(name, signal, start) {
    const manager = locks();
    if (!manager) {
      start(() => {});
      return;
    }
    const options = signal ? { signal } : {};
    manager
      .request(name, options, () => new Promise((release) => start(release)))
      .catch(() => {}); // aborted: the tab closed its source before it got the lock
  }

  // -- the one real EventSource (in the SharedWorker, the leader tab, or each tab) ------------

  /**
   * One EventSource; `sink(message)` gets every event and state change as a plain object that
   * can cross a MessagePort or a BroadcastChannel.
   */
  class Upstream {
    constructor(url, withCredentials, sink) {
      this.url = url;
      this.withCredentials = withCredentials;
      this.sink = sink;
      this.types = new Set();
      this.state = CONNECTING;
      this.source = null;
      this.generation = randomId();
      this.onEvent = (event) =>
        this.sink({
          kind: "event",
          type: event.type,
          data: event.data,
          lastEventId: event.lastEventId,
          origin: event.origin,
          generation: this.generation,
        });
    }

    listen(type) {
      if (this.types.has(type)) return;
      this.types.add(type);
      if (this.source) this.source.addEventListener(type, this.onEvent);
    }

    /** Connect, resuming after `lastEventId` when given (as the `last_event_id` parameter). */
    open(lastEventId) {
      let url = this.url;
      if (lastEventId) {
        const resumed = new URL(url);
        resumed.searchParams.set("last_event_id", lastEventId);
        url = resumed.href;
      }
      const source = new EventSource(url, { withCredentials: this.withCredentials });
      this.source = source;
      for (const type of this.types) source.addEventListener(type, this.onEvent);
      source.onopen = () => this.report(OPEN, "open");
      source.onerror = () => this.report(source.readyState, "error");
    }

    report(state, event) {
      this.state = state;
      if (state === CLOSED) this.close();
      this.sink({ kind: "state", state, event });
    }

    close() {
      this.state = CLOSED;
      if (this.source) this.source.close();
      this.source = null;
    }
  }

  // -- in the SharedWorker: one Upstream per (url, credentials), shared by the ports ----------

  function runWorker() {
    const upstreams = new Map();

    scope.onconnect = (connectEvent) => {
      const port = connectEvent.ports[0];
      let entry = null;
      const leave = () => {
        if (!entry) return;
        entry.ports.delete(port);
        if (entry.ports.size === 0) {
          entry.upstream.close();
          if (upstreams.get(entry.key) === entry) upstreams.delete(entry.key);
        }
        entry = null;
        port.close();
      };
      port.addEventListener("close", leave); // where browsers report a closed port
      port.onmessage = ({ data }) => {
        if (data.kind === "open" && !entry) {
          const key = keyOf(data.url, data.withCredentials);
          entry = upstreams.get(key);
          if (!entry) {
            const created = { key, ports: new Set(), upstream: null };
            created.upstream = new Upstream(data.url, data.withCredentials, (message) => {
              if (message.kind === "state" && message.state === CLOSED) {
                if (upstreams.get(key) === created) upstreams.delete(key);
              }
              for (const each of created.ports) each.postMessage(message);
            });
            upstreams.set(key, created);
            entry = created;
            for (const type of data.types) entry.upstream.listen(type);
            entry.upstream.open(null);
          }
          entry.ports.add(port);
          for (const type of data.types) entry.upstream.listen(type);
          const state = entry.upstream.state;
          port.postMessage({ kind: "state", state, event: state === OPEN ? "open" : null });
          // The tab holds this lock until it goes away, crashed or closed: then it is ours.
          if (data.lock && locks()) locks().request(data.lock, leave);
        } else if (data.kind === "listen" && entry) {
          entry.upstream.listen(data.type);
        } else if (data.kind === "close") {
          leave();
        }
      };
      port.start();
    };
  }

  // -- in a tab: the ways to reach the shared connection --------------------------------------

  /** Through the SharedWorker. */
  class WorkerLink {
    constructor(client, workerUrl, onFailure) {
      this.client = client;
      this.port = null;
      this.release = null;
      this.closed = false;
      this.abort = typeof AbortController === "function" ? new AbortController() : null;
      const lock = `${PREFIX}tab:${randomId()}`;
      client._setRole("worker");
      holdLock(lock, this.abort && this.abort.signal, (release) => {
        this.release = release;
        if (this.closed) return release();
        let worker;
        try {
          worker = new SharedWorker(workerUrl, { name: WORKER_NAME });
        } catch (error) {
          // A Content-Security-Policy without this worker-src, say.
          this.close();
          return onFailure();
        }
        // The script could not be loaded (404, not JavaScript): share without the worker.
        worker.onerror = () => {
          if (this.closed) return;
          this.close();
          onFailure();
        };
        this.port = worker.port;
        this.port.onmessage = ({ data }) => this.client._receive(data);
        this.port.postMessage({
          kind: "open",
          url: client.url,
          withCredentials: client.withCredentials,
          types: [...client._types],
          lock,
        });
      });
    }

    listen(type) {
      if (this.port) this.port.postMessage({ kind: "listen", type });
    }

    close() {
      this.closed = true;
      if (this.port) {
        this.port.postMessage({ kind: "close" });
        this.port.close();
        this.port = null;
      }
      if (this.release) this.release();
      else if (this.abort) this.abort.abort();
    }
  }

  /** Through the leader tab: Web Locks elect it, a BroadcastChannel carries its events. */
  class LeaderLink {
    constructor(client) {
      this.client = client;
      this.id = randomId();
      this.key = keyOf(client.url, client.withCredentials);
      this.types = new Set(client._types); // every tab's: the next leader must listen for all
      this.upstream = null;
      this.release = null;
      this.abort = new AbortController();
      this.channel = new BroadcastChannel(this.key);
      this.channel.onmessage = ({ data }) => this.receive(data);
      this.channel.postMessage({ kind: "hello", from: this.id, types: [...this.types] });
      client._setRole("follower");
      holdLock(this.key, this.abort.signal, (release) => this.lead(release));
    }

    lead(release) {
      this.release = release;
      if (!this.channel) return release();
      const client = this.client;
      client._setRole("leader");
      // The previous leader's connection is gone: to the tabs, a dropped connection.
      if (client.readyState === OPEN) this.send({ kind: "state", state: CONNECTING, event: "error" });
      this.upstream = new Upstream(client.url, client.withCredentials, (message) => {
        this.send(message);
      });
      for (const type of this.types) this.upstream.listen(type);
      this.upstream.open(client.lastEventId);
    }

    /** To every tab, this one included. */
    send(message) {
      if (this.channel) this.channel.postMessage(message);
      this.client._receive(message);
    }

    receive(message) {
      if (message.to && message.to !== this.id) return;
      if (message.kind === "hello" || message.kind === "types") {
        for (const type of message.types) this.learn(type);
        if (message.kind === "hello") {
          // Every tab answers with its types; the leader also with the connection's state.
          this.channel.postMessage({ kind: "types", to: message.from, types: [...this.types] });
          if (this.upstream) {
            const state = this.upstream.state;
            const event = state === OPEN ? "open" : null;
            this.channel.postMessage({ kind: "state", to: message.from, state, event });
          }
        }
      } else {
        this.client._receive(message);
      }
    }

    learn(type) {
      this.types.add(type);
      if (this.upstream) this.upstream.listen(type);
    }

    listen(type) {
      this.learn(type);
      if (this.channel) this.channel.postMessage({ kind: "types", types: [type] });
    }

    close() {
      if (this.upstream) this.upstream.close();
      this.upstream = null;
      if (this.channel) this.channel.close();
      this.channel = null;
      if (this.release) this.release();
      else this.abort.abort();
    }
  }

  /** A connection of this tab's own, where tabs cannot coordinate. */
  class DirectLink {
    constructor(client) {
      client._setRole("direct");
      this.upstream = new Upstream(client.url, client.withCredentials, (m) => client._receive(m));
      for (const type of client._types) this.upstream.listen(type);
      this.upstream.open(null);
    }

    listen(type) {
      this.upstream.listen(type);
    }

    close() {
      this.upstream.close();
    }
  }

  // -- the page's object --------------------------------------------------------------------

  const currentScript = scope.document && scope.document.currentScript;
  const defaultWorker = currentScript && currentScript.src ? currentScript.src : null;

  function sameOrigin(url) {
    try {
      return new URL(url, scope.location.href).origin === scope.location.origin;
    } catch (error) {
      return false;
    }
  }

  class SharedEventSource extends EventTarget {
    /**
     * @param {string} url the stream (absolute, or relative to the page)
     * @param {{withCredentials?: boolean, worker?: string|false}} [options]
     */
    constructor(url, options = {}) {
      super();
      this.url = new URL(url, scope.location.href).href;
      this.withCredentials = Boolean(options.withCredentials);
      this.readyState = CONNECTING;
      this.role = null;
      this.lastEventId = "";
      this._types = new Set();
      this._recent = new Map();
      this._handlers = {};
      this._link = null;
      const worker = options.worker === undefined ? defaultWorker : options.worker;
      // Connect after the current task, so the listeners added right after construction
      // are known from the first event on.
      queueMicrotask(() => {
        if (this.readyState === CLOSED) return;
        if (worker && typeof SharedWorker === "function" && sameOrigin(worker)) {
          const url = new URL(worker, scope.location.href).href;
          const link = new WorkerLink(this, url, () => {
            if (this.readyState !== CLOSED) this._link = this._shareWithoutWorker();
          });
          if (!link.closed) this._link = link; // else it failed at once, and was replaced
        } else {
          this._link = this._shareWithoutWorker();
        }
      });
    }

    _shareWithoutWorker() {
      if (locks() && typeof BroadcastChannel === "function") return new LeaderLink(this);
      return new DirectLink(this);
    }

    addEventListener(type, listener, options) {
      super.addEventListener(type, listener, options);
      type = String(type);
      if (LOCAL_TYPES.has(type) || this._types.has(type)) return;
      this._types.add(type);
      if (this._link) this._link.listen(type);
    }

    close() {
      if (this.readyState === CLOSED) return;
      this.readyState = CLOSED;
      this._detach();
      this.dispatchEvent(new Event("statechange"));
    }

    _detach() {
      const link = this._link;
      this._link = null;
      this.role = null;
      if (link) link.close();
    }

    _setRole(role) {
      if (this.role === role) return;
      this.role = role;
      this.dispatchEvent(new Event("statechange"));
    }

    _setState(state, event) {
      if (this.readyState === CLOSED) return;
      const changed = state !== this.readyState;
      this.readyState = state;
      if (state === CLOSED) this._detach();
      if (changed) this.dispatchEvent(new Event("statechange"));
      if (event === "error" || (event === "open" && changed)) this.dispatchEvent(new Event(event));
    }

    _receive(message) {
      if (this.readyState === CLOSED) return;
      if (message.kind === "state") {
        this._setState(message.state, message.event);
        return;
      }
      if (message.kind !== "event") return;
      const id = message.lastEventId;
      if (id) {
        // Delivered by another connection already (around a leader handover): drop it. An
        // event without an id field repeats the previous id on its own connection, so only
        // another connection's copy counts.
        const key = `${message.type}\n${id}`;
        const seen = this._recent.get(key);
        if (seen !== undefined && seen !== message.generation) return;
        if (seen === undefined) {
          this._recent.set(key, message.generation);
          if (this._recent.size > RECENT_IDS) this._recent.delete(this._recent.keys().next().value);
        }
      }
      this.lastEventId = id;
      if (this.readyState === CONNECTING) this._setState(OPEN, "open");
      if (!this._types.has(message.type)) return;
      const init = { data: message.data, lastEventId: id, origin: message.origin };
      this.dispatchEvent(new MessageEvent(message.type, init));
    }
  }

  for (const name of ["open", "message", "error", "statechange"]) {
    Object.defineProperty(SharedEventSource.prototype, `on${name}`, {
      get() {
        return this._handlers[name] || null;
      },
      set(handler) {
        if (this._handlers[name]) this.removeEventListener(name, this._handlers[name]);
        this._handlers[name] = typeof handler === "function" ? handler : null;
        if (this._handlers[name]) this.addEventListener(name, this._handlers[name]);
      },
      configurable: true,
    });
  }
  for (const [name, value] of [["CONNECTING", CONNECTING], ["OPEN", OPEN], ["CLOSED", CLOSED]]) {
    Object.defineProperty(SharedEventSource, name, { value });
    Object.defineProperty(SharedEventSource.prototype, name, { value });
  }

  if (typeof SharedWorkerGlobalScope === "function" && scope instanceof SharedWorkerGlobalScope) {
    runWorker();
  } else {
    scope.SharedEventSource = SharedEventSource;
  }
})(self);
