// The tab-sharing tests' page script: SharedEventSource instances and what each one saw.
"use strict";

const API = document.documentElement.dataset.api;
window.sources = [];

// Open a SharedEventSource on API + path, recording the events named in `types`.
window.track = (path, options = {}, types = ["message"]) => {
  const source = new SharedEventSource(API + path, options);
  const record = { events: [], states: [source.readyState], roles: [], opens: 0, errors: [] };
  const keep = (event) =>
    record.events.push({
      type: event.type,
      data: JSON.parse(event.data),
      id: event.lastEventId,
      origin: event.origin,
      at: Date.now(),
    });
  for (const type of types) source.addEventListener(type, keep);
  source.onopen = () => {
    record.opens += 1;
  };
  source.onerror = () => record.errors.push(source.readyState);
  // "statechange" fires when readyState or role changes: keep each one's changes.
  source.onstatechange = () => {
    if (record.states.at(-1) !== source.readyState) record.states.push(source.readyState);
    if (record.roles.at(-1) !== source.role) record.roles.push(source.role);
  };
  window.sources.push({ source, record, keep });
  return window.sources.length - 1;
};

// What source `n` saw, and where it is now.
window.view = (n) => {
  const { source, record } = window.sources[n];
  return { ...record, readyState: source.readyState, role: source.role, lastEventId: source.lastEventId };
};

// A credentialed POST to the API, as a page's ordinary request.
window.post = async (path) => {
  const response = await fetch(API + path, { method: "POST", credentials: "include" });
  return { status: response.status, body: await response.json() };
};

// A plain EventSource, for comparison: its readyState is window.plain[n].readyState.
window.plain = [];
window.openPlain = (path) => window.plain.push(new EventSource(API + path, { withCredentials: true })) - 1;

// Start a POST to the API and note when it finished (window.posted[n]: null until then).
window.posted = [];
window.startPost = (path) => {
  const n = window.posted.push(null) - 1;
  window.post(path).then((answer) => {
    window.posted[n] = answer.status;
  });
  return n;
};
