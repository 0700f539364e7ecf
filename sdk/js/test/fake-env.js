// A fake browser for the SDK: a controllable clock and timers, fetch and sendBeacon that
// record what they are given, storage, and location/history/document that behave like the
// real ones for what the SDK uses. Pass it as the `env` argument of createTracker().

/** A fetch answer shaped like `Response` as far as the SDK reads it. */
export function answer(status, body = null, headers = {}) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    status,
    headers: { get: (name) => lower[name.toLowerCase()] ?? null },
    json: async () => {
      if (body === null) throw new SyntaxError('no body');
      return body;
    },
  };
}

/** The server's answer when it accepts every event of a request. */
export function acceptAll(events) {
  return answer(202, {
    accepted: events.length,
    rejected: 0,
    results: events.map((e, index) => ({ status: 'accepted', index, event_id: e.event_id })),
  });
}

function listeners() {
  const map = new Map();
  return {
    addEventListener(type, fn) {
      if (!map.has(type)) map.set(type, new Set());
      map.get(type).add(fn);
    },
    removeEventListener(type, fn) {
      map.get(type)?.delete(fn);
    },
    dispatch(type, event = {}) {
      for (const fn of [...(map.get(type) || [])]) fn({ type, ...event });
    },
    count(type) {
      return map.get(type)?.size ?? 0;
    },
  };
}

/**
 * One page load. A real navigation in the same tab is a second fakeEnv given the first
 * one's `sessionStorage` and a later `at`.
 */
export function fakeEnv({ url = 'https://shop.example/', title = 'Shop', referrer = '', storage, at } = {}) {
  let clock = at ?? Date.parse('2024-05-01T12:00:00.000Z');
  let nextTimer = 1;
  const timers = new Map();
  let href = new URL(url);
  const backStack = [];
  const windowEvents = listeners();
  const documentEvents = listeners();
  const items = new Map();

  const env = {
    ...windowEvents,
    // --- what the SDK reads -----------------------------------------------------------
    Date: { now: () => clock },
    crypto: globalThis.crypto,
    Blob: globalThis.Blob,
    console: { warn: (...args) => env.warnings.push(args) },
    setTimeout(fn, ms) {
      const id = nextTimer++;
      timers.set(id, { at: clock + Math.max(0, ms), fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    async fetch(url, init) {
      const events = JSON.parse(init.body);
      env.requests.push({ url, init, events, at: clock });
      const next = env.responses.shift() || acceptAll;
      const result = typeof next === 'function' ? next(events) : next;
      if (result instanceof Error) throw result;
      return result;
    },
    navigator: {
      sendBeacon(url, blob) {
        const result = typeof env.beaconResult === 'function' ? env.beaconResult() : env.beaconResult;
        if (result) env.beacons.push({ url, blob, at: clock });
        return result;
      },
    },
    sessionStorage: storage !== undefined ? storage : {
      getItem: (k) => (items.has(k) ? items.get(k) : null),
      setItem: (k, v) => items.set(k, String(v)),
    },
    get location() {
      const { host, pathname, search, hash } = href;
      return { href: href.href, host, pathname, search, hash };
    },
    history: {
      pushState(state, unused, to) {
        backStack.push(href);
        href = new URL(to, href);
      },
      replaceState(state, unused, to) {
        if (to !== undefined) href = new URL(to, href);
      },
      back() {
        href = backStack.pop();
        windowEvents.dispatch('popstate');
      },
    },
    document: { ...documentEvents, title, referrer, visibilityState: 'visible' },

    // --- what tests read and steer ----------------------------------------------------
    requests: [],
    responses: [], // answers for the next fetches: an answer, an Error, or events => answer
    beacons: [],
    beaconResult: true, // or a function giving each call's result

    warnings: [],
    get now() {
      return clock;
    },
    pendingTimers: () => timers.size,
    /** Moves the clock on by `ms`, running due timers in order and the promises they start. */
    async advance(ms) {
      const end = clock + ms;
      for (;;) {
        await settle();
        let due = null;
        for (const [id, t] of timers) if (t.at <= end && (!due || t.at < due[1].at)) due = [id, t];
        if (!due) break;
        timers.delete(due[0]);
        clock = due[1].at;
        due[1].fn();
      }
      clock = end;
      await settle();
    },
    hide() {
      env.document.visibilityState = 'hidden';
      env.document.dispatch('visibilitychange');
    },
    /** All events posted with fetch, in order. */
    sent: () => env.requests.flatMap((r) => r.events),
    /** All events handed to sendBeacon, in order. */
    async beaconed() {
      const bodies = await Promise.all(env.beacons.map((b) => b.blob.text()));
      return bodies.flatMap((text) => JSON.parse(text));
    },
  };
  return env;
}

/** Lets pending promise chains (fetch, json, the drain loop) run to completion. */
export async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}
