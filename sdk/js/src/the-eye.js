/**
 * The Eye browser SDK: records events in the page and delivers them to The Eye.
 *
 * Events wait in a bounded in-memory queue and go out in batches (by count and by time) to
 * `POST {endpoint}/api/events` with `fetch(..., {keepalive: true})`, retried with backoff on
 * network errors, 408, 429 and 5xx. When the page is hidden or unloaded the queue is handed
 * to `navigator.sendBeacon` on `/api/events/beacon`, which survives the page going away.
 * Every event carries a client-chosen UUIDv7 `event_id`, so a retried or re-beaconed event
 * is stored once: delivery is at-least-once, storage is exactly-once.
 *
 * Consent (README, "Consent"): with `consent: 'pending'` events wait in memory only — nothing
 * is written to storage and nothing is sent — until `setConsent('granted')` sends them, or
 * `setConsent('denied')` drops them and clears what the SDK had stored. Events then carry
 * `data.consent`, the state when they were recorded (`pending` or `granted`).
 *
 * Everything the SDK touches in the browser (fetch, sendBeacon, Blob, sessionStorage, timers,
 * the clock, crypto, location, history, document, window events) is read from one `env`
 * object, `globalThis` by default, so tests run it in Node against fakes with no test-only
 * code here.
 */

// Browsers refuse a keepalive fetch or a beacon once the bodies of those in flight from
// the page would pass 64 KiB together (Chromium does: a refused beacon loses its events at
// unload). So a fetch batch takes at most half of it, leaving room for the beacons of a page
// hidden while it is in flight, and beacons are small so that more of them fit in what is left.
const MAX_KEEPALIVE_BYTES = 60000;
const FETCH_BYTES = 32000;
const BEACON_BYTES = 16000;
const MAX_EVENTS = 1000; // the server's limit per request
const SESSION_KEY = 'the-eye.session';
const USER_KEY = 'the-eye.user';
const BEACON_TYPE = 'text/plain;charset=UTF-8';

/**
 * Creates an independent tracker. Most pages want `init()` instead, which keeps one.
 * @param {object} options see README.md
 * @param {object} [env] the browser globals to use; `globalThis` unless testing
 */
// The options `createTracker` reads; any other is most likely a misspelling.
const OPTIONS = ['endpoint', 'key', 'autoPageviews', 'flushIntervalMs', 'maxBatch', 'maxQueue',
  'maxRetries', 'retryBaseMs', 'retryMaxMs', 'sessionTimeoutMs', 'storage', 'onError', 'consent'];
const CONSENT = ['pending', 'granted', 'denied'];
const warned = new Set();

export function createTracker(options, env = globalThis) {
  // Warned once per name and page: a misspelt option (`flushInterval`) would otherwise be
  // ignored in silence.
  for (const name of Object.keys(options || {})) {
    if (!OPTIONS.includes(name) && !warned.has(name)) {
      warned.add(name);
      env.console?.warn(`[the-eye] unknown option "${name}" ignored; the options are: ${OPTIONS.join(', ')}`);
    }
  }
  const {
    endpoint,
    key,
    autoPageviews = true,
    flushIntervalMs = 5000,
    maxBatch: batchOption = 100,
    maxQueue = 1000,
    maxRetries = 5,
    retryBaseMs = 1000,
    retryMaxMs = 60000,
    sessionTimeoutMs = 30 * 60 * 1000,
    onError = (error) => env.console?.warn('[the-eye]', error.message, error),
  } = options || {};
  if (!endpoint || !key) throw new TypeError('the-eye: init() needs an endpoint and a key');
  // Undefined: the page does not manage consent through the SDK (events go as they always
  // did, without `data.consent`). Anything else but the three states is a mistake that must
  // not send events nobody agreed to.
  let consent = options.consent;
  if (consent !== undefined && !CONSENT.includes(consent)) {
    throw new TypeError(`the-eye: consent must be one of ${CONSENT.join(', ')}`);
  }
  // Reading `sessionStorage` itself throws where storage is blocked (sandboxed frames).
  let storage = options.storage;
  if (storage === undefined) try { storage = env.sessionStorage } catch { storage = null }

  const maxBatch = Math.min(batchOption, MAX_EVENTS);
  const base = String(endpoint).replace(/\/+$/, '');
  const eventsUrl = base + '/api/events';
  const beaconUrl = eventsUrl + '/beacon?key=' + encodeURIComponent(key);
  const now = () => env.Date.now();

  let queue = []; // entries {id, json, bytes}, oldest first; json has no sent_at yet
  let retrying = null; // the batch waiting out a backoff, which a beacon may take over
  let flushTimer = null;
  let sleepTimer = null;
  let wake = () => {};
  let draining = Promise.resolve();
  let stopped = false;
  let lastPage = null; // URL (without hash) of the last pageview: repeats are not counted
  let memorySession = null; // the session when storage is unavailable or failing
  const counts = { accepted: 0, beaconed: 0, rejected: 0, dropped: 0 };
  const cleanups = [];

  const report = (error) => {
    try { onError(error) } catch { /* a failing callback must not stop delivery */ }
  };

  // --- Identifiers -----------------------------------------------------------------------

  // UUIDv7 (RFC 9562): 48-bit millisecond time, then a 12-bit counter in rand_a (method 1),
  // so ids sort in the order the events were made, even within one millisecond, like the
  // server's own ids. Session ids come from the same generator: the server keeps events
  // sorted by session id, so time-ordered ones keep a day's or an hour's events together and
  // a time-range read reads that range rather than a granule per session (README.md).
  let lastMs = -1;
  let seq = 0;
  function uuidV7() {
    const b = random(16);
    const ms = now();
    if (ms > lastMs) {
      lastMs = ms;
      seq = ((b[6] & 0x07) << 8) | b[7]; // a random start below 0x800 leaves room to count
    } else if (++seq > 0xfff) {
      lastMs++; // also keeps ids rising if the clock steps back
      seq = 0;
    }
    for (let i = 0; i < 6; i++) b[i] = (lastMs / 2 ** (8 * (5 - i))) & 0xff;
    b[6] = 0x70 | (seq >> 8);
    b[7] = seq & 0xff;
    return format(b);
  }

  function random(n) {
    return env.crypto.getRandomValues(new Uint8Array(n));
  }

  function format(b) {
    b[8] = 0x80 | (b[8] & 0x3f); // RFC 9562 variant
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // --- Sessions --------------------------------------------------------------------------

  // A session lives in sessionStorage (so it spans real navigations in one tab) until
  // `sessionTimeoutMs` passes without an event; `touch` marks activity.
  function session(touch) {
    const at = now();
    let current = memorySession;
    if (sending()) try { current = JSON.parse(storage.getItem(SESSION_KEY)) } catch { /* memory */ }
    const fresh = !current || typeof current.id !== 'string' || !(at - current.last <= sessionTimeoutMs);
    if (fresh) current = { id: uuidV7(), last: at };
    if (fresh || touch) {
      current.last = at;
      memorySession = current;
      remember(SESSION_KEY, JSON.stringify(current));
    }
    return current.id;
  }

  // Writes to storage only once consent is granted (or not managed): until then the session
  // and the person live in memory, and a page reload forgets them.
  function remember(name, value) {
    if (!sending()) return;
    try { storage.setItem(name, value) } catch { /* memory only */ }
  }

  // Whether events may leave the page and the SDK may store anything.
  function sending() {
    return consent === undefined || consent === 'granted';
  }

  // --- Who the person is ----------------------------------------------------------------

  // The application's own account id of the person (README, "user_id"), kept beside the
  // session so that it survives navigations; sent as `user_id` on every event until `reset`.
  let memoryUser = null;
  function userId() {
    // Storage has only getItem and setItem: '' stands for "no one".
    if (!sending()) return memoryUser;
    try {
      const stored = storage.getItem(USER_KEY);
      return stored === null ? memoryUser : stored || null;
    } catch { return memoryUser }
  }

  /** Names the person from now on (after a login): the application's account id, never an e-mail address or a name. */
  function identify(id) {
    const length = typeof id === 'string' && id.trim() ? [...id].length : 0;
    if (length < 1 || length > 128) {
      report({ reason: 'invalid', message: 'user id must be a string of 1 to 128 characters, not blank' });
      return false;
    }
    memoryUser = id;
    remember(USER_KEY, id);
    return true;
  }

  /** Forgets the person and starts a new session (at logout), so that the next person's events share nothing with theirs. */
  function reset() {
    memoryUser = null;
    memorySession = null;
    remember(USER_KEY, '');
    remember(SESSION_KEY, 'null');
  }

  // --- Consent ---------------------------------------------------------------------------

  /**
   * Records the person's choice: `granted` stores the session and sends what waited;
   * `denied` drops what waited and removes what the SDK stored; `pending` holds events in
   * memory again. Returns false (and reports `invalid`) for another value.
   */
  function setConsent(state) {
    if (!CONSENT.includes(state)) {
      report({ reason: 'invalid', message: `consent must be one of ${CONSENT.join(', ')}` });
      return false;
    }
    consent = state;
    if (state === 'granted') {
      if (memorySession) remember(SESSION_KEY, JSON.stringify(memorySession));
      if (memoryUser !== null) remember(USER_KEY, memoryUser);
      if (queue.length) flush();
    } else if (state === 'denied') {
      env.clearTimeout(flushTimer);
      flushTimer = null;
      queue = [];
      memorySession = null;
      memoryUser = null;
      for (const name of [SESSION_KEY, USER_KEY]) {
        try {
          if (storage.removeItem) storage.removeItem(name);
          else storage.setItem(name, '');
        } catch { /* nothing stored */ }
      }
    }
    return true;
  }

  // --- Recording -------------------------------------------------------------------------

  /** Queues one event; returns its event_id, or null when it was refused (see onError). */
  function track(category, name, data) {
    if (stopped || consent === 'denied') return null;
    const problem = checkText('category', category) || checkText('name', name) ||
      (data && typeof data === 'object' && !Array.isArray(data) && Object.keys(data).length
        ? '' : 'data must be a non-empty object');
    if (problem) {
      report({ reason: 'invalid', message: problem });
      return null;
    }
    // The session first: a new session's id then sorts before its first event's id.
    const sessionId = session(true);
    const event = {
      event_id: uuidV7(),
      session_id: sessionId,
      ...(userId() !== null ? { user_id: userId() } : {}),
      category,
      name,
      // The state when it was recorded, for analysts to filter on: `pending` events waited
      // for the grant in memory.
      data: consent === undefined ? data : { ...data, consent },
      timestamp: new Date(now()).toISOString(),
    };
    let json;
    try {
      // Serialising now snapshots `data`: later changes by the caller are not sent.
      json = JSON.stringify(event);
    } catch (error) {
      report({ reason: 'invalid', message: 'data cannot be serialised: ' + error.message });
      return null;
    }
    enqueue([{ id: event.event_id, json, bytes: encoder.encode(json).length }]);
    if (!sending()) return event.event_id;
    if (queue.length >= maxBatch) flush();
    else if (!flushTimer) flushTimer = env.setTimeout(flush, flushIntervalMs);
    return event.event_id;
  }

  /** Records a `page interaction`/`pageview` of the current location. */
  function pageview() {
    const { host, pathname, search, href } = env.location;
    const { title, referrer } = env.document;
    // The server's pageview schema allows these fields only, and bounds their lengths.
    const data = { host: clip(host, 253), path: clip(pathname, 2048) };
    const from = lastPage || referrer;
    if (title) data.title = clip(title, 1024);
    if (from) data.referrer = clip(from, 2048);
    if (search) data.query = clip(search.slice(1), 2048);
    lastPage = withoutHash(href);
    return track('page interaction', 'pageview', data);
  }

  // A single-page app moved: count it unless only the state or the hash changed.
  function navigated() {
    if (withoutHash(env.location.href) !== lastPage) pageview();
  }

  // Drops the oldest events when the queue is over its bound, and says so.
  function enqueue(entries, atFront) {
    if (consent === 'denied') return; // a batch that failed after the denial goes no further
    queue = atFront ? entries.concat(queue) : queue.concat(entries);
    const excess = queue.length - maxQueue;
    if (excess > 0) {
      const lost = queue.splice(0, excess);
      counts.dropped += excess;
      report({ reason: 'dropped', message: `queue full: dropped ${excess} oldest event(s)`, eventIds: lost.map((e) => e.id) });
    }
  }

  // --- Delivery --------------------------------------------------------------------------

  /** Sends everything queued; resolves when done or when the endpoint stays unreachable. */
  function flush() {
    env.clearTimeout(flushTimer);
    flushTimer = null;
    if (!sending()) return draining;
    return (draining = draining.then(drain));
  }

  // One batch at a time, so batches arrive in order and keepalive bytes in flight stay
  // under the browser's limit.
  async function drain() {
    while (queue.length && sending()) {
      if (!(await deliver(take(queue, maxBatch, FETCH_BYTES)))) return;
    }
  }

  // Returns false when the batch went back to the queue to be tried at the next flush.
  async function deliver(batch) {
    for (let attempt = 0; ; attempt++) {
      // Consent withdrawn between attempts: the batch waits again (pending) or goes (denied).
      if (!sending()) {
        enqueue(batch, true);
        return false;
      }
      const body = serialise(batch);
      let response = null;
      let failure = null;
      try {
        response = await env.fetch(eventsUrl, {
          method: 'POST',
          keepalive: encoder.encode(body).length <= MAX_KEEPALIVE_BYTES,
          // Every event carries its own event_id, so the answer need only list the rejected
          // ones (RFC 7240); `settle` reads rejections by index and counts the rest accepted.
          headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + key, Prefer: 'return=minimal' },
          body,
        });
      } catch (error) {
        failure = error;
      }
      const status = response ? response.status : 0;
      if (status && status !== 408 && status !== 429 && status < 500) {
        await settle(batch, response);
        return true;
      }
      if (attempt >= maxRetries) {
        enqueue(batch, true);
        if (!flushTimer && !stopped) flushTimer = env.setTimeout(flush, flushIntervalMs);
        report({
          reason: 'unreachable',
          status,
          message: failure ? String(failure.message || failure) : `HTTP ${status}`,
          eventIds: batch.map((e) => e.id),
        });
        return false;
      }
      const seconds = status ? Number(response.headers.get('Retry-After') || NaN) : NaN;
      // Exponential backoff with jitter so many pages do not come back in lockstep.
      const delay = seconds >= 0
        ? seconds * 1000
        : Math.min(retryMaxMs, retryBaseMs * 2 ** attempt) * (0.5 + Math.random() / 2);
      retrying = batch;
      await new Promise((resolve) => {
        wake = resolve;
        sleepTimer = env.setTimeout(resolve, delay);
      });
      if (retrying !== batch) return true; // a beacon took it over while we waited
      retrying = null;
    }
  }

  // Counts what the server took and reports what it did not.
  async function settle(batch, response) {
    let answer = null;
    try { answer = await response.json() } catch { /* not JSON: the status says enough */ }
    const ok = response.status < 300;
    const results = (answer && answer.results) || [];
    const rejected = results.filter((r) => r.status === 'rejected');
    const refusedWhole = !ok && !rejected.length;
    const lost = refusedWhole ? batch.length : rejected.length;
    counts.accepted += batch.length - lost;
    counts.rejected += lost;
    if (lost) {
      report({
        reason: refusedWhole ? 'refused' : 'rejected',
        status: response.status,
        // The server's stable code of a whole refusal: `origin_not_allowed`, `invalid_api_key`…
        ...(refusedWhole && answer && answer.code ? { code: answer.code } : {}),
        message: (answer && answer.message) || `${lost} event(s) rejected (HTTP ${response.status})`,
        problems: refusedWhole ? (answer && answer.problems) || [] : rejected.flatMap((r) => r.problems || []),
        eventIds: refusedWhole ? batch.map((e) => e.id) : rejected.map((r) => batch[r.index] && batch[r.index].id),
      });
    }
  }

  // Removes and returns the leading entries that fit one request: at most `limit` events
  // and `maxBytes` of body (an event bigger than that travels alone).
  function take(entries, limit, maxBytes) {
    let bytes = 1; // "["; each event adds a comma or the closing "]"
    let count = 0;
    while (count < entries.length && count < limit) {
      bytes += entries[count].bytes + SENT_AT_BYTES + 1;
      if (count && bytes > maxBytes) break;
      count++;
    }
    return entries.splice(0, count);
  }

  // The request body: the events as a JSON array, each stamped with the time of sending.
  function serialise(batch) {
    const field = ',"sent_at":"' + new Date(now()).toISOString() + '"}';
    return '[' + batch.map((e) => e.json.slice(0, -1) + field).join(',') + ']';
  }

  // The page is going away or to the background: hand everything not yet in flight to
  // sendBeacon, which the browser delivers even after the page is gone.
  function hide() {
    if (!sending()) return; // waiting events stay in memory, and go with the page
    env.clearTimeout(flushTimer);
    flushTimer = null;
    const pending = (retrying || []).concat(queue);
    queue = [];
    if (retrying) {
      retrying = null;
      env.clearTimeout(sleepTimer);
      wake();
    }
    while (pending.length) {
      // At unload bytes are what counts, not `maxBatch`.
      const batch = take(pending, MAX_EVENTS, BEACON_BYTES);
      const body = serialise(batch);
      let sent = false;
      try {
        sent = encoder.encode(body).length <= MAX_KEEPALIVE_BYTES &&
          env.navigator.sendBeacon(beaconUrl, new env.Blob([body], { type: BEACON_TYPE }));
      } catch { /* no beacon: fall back to a keepalive fetch below */ }
      if (!sent) {
        enqueue(batch.concat(pending), true);
        flush();
        return;
      }
      counts.beaconed += batch.length;
    }
  }

  // --- Wiring ----------------------------------------------------------------------------

  function listen(target, type, handler) {
    target.addEventListener(type, handler);
    cleanups.push(() => target.removeEventListener(type, handler));
  }

  listen(env, 'pagehide', hide);
  listen(env.document, 'visibilitychange', () => {
    if (env.document.visibilityState === 'hidden') hide();
  });
  if (autoPageviews) {
    for (const method of ['pushState', 'replaceState']) {
      const original = env.history[method];
      const patched = function (...args) {
        const result = original.apply(this, args);
        if (!stopped) navigated();
        return result;
      };
      env.history[method] = patched;
      // Restore only if nobody patched over us since; otherwise `stopped` mutes ours.
      cleanups.push(() => { if (env.history[method] === patched) env.history[method] = original });
    }
    listen(env, 'popstate', navigated);
    pageview();
  }

  return {
    track,
    pageview,
    flush,
    identify,
    reset,
    setConsent,
    /** The consent state: 'pending', 'granted', 'denied', or undefined when not managed. */
    consent: () => consent,
    /** The current session id (a UUIDv7 of its start; starting one if none is live), without extending it. */
    sessionId: () => session(false),
    /** Counters since init (accepted, beaconed, rejected, dropped) and events queued now. */
    stats: () => ({ ...counts, queued: queue.length }),
    /** Stops tracking, removes listeners and history patches, and flushes what is left. */
    shutdown() {
      stopped = true;
      cleanups.splice(0).forEach((undo) => undo());
      return flush();
    },
  };
}

const encoder = new TextEncoder();

// `,"sent_at":"2024-01-01T00:00:00.000Z"` replaces each event's closing brace when sent.
const SENT_AT_BYTES = 37;

// Cuts to `max` characters (code points, as the server counts, never half a pair).
function clip(text, max) {
  return text.length > max ? Array.from(text).slice(0, max).join('') : text;
}

function withoutHash(href) {
  return href.split('#')[0];
}

// The server counts characters (code points), as the spread operator does.
function checkText(field, value) {
  const length = typeof value === 'string' ? [...value].length : 0;
  return length >= 1 && length <= 100 ? '' : `${field} must be a string of 1 to 100 characters`;
}

// --- The page's default tracker ------------------------------------------------------------

let current = null;

function tracker() {
  if (!current) throw new Error('the-eye: call init() first');
  return current;
}

/** Starts (or restarts) the page's tracker; returns it. */
export function init(options, env) {
  if (current) current.shutdown();
  return (current = createTracker(options, env));
}

export const track = (category, name, data) => tracker().track(category, name, data);
export const pageview = () => tracker().pageview();
export const flush = () => tracker().flush();
export const identify = (id) => tracker().identify(id);
export const reset = () => tracker().reset();
export const setConsent = (state) => tracker().setConsent(state);
export function shutdown() {
  const stopping = tracker();
  current = null;
  return stopping.shutdown();
}
