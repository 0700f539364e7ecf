// Batching, retries, error reporting, the bounded queue, beacons and 64 KiB chunking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTracker } from '../src/the-eye.js';
import { fakeEnv, answer } from './fake-env.js';

const KEY = 'ik_live/abc+1';

function start(env, options = {}) {
  const errors = [];
  const tracker = createTracker(
    { endpoint: 'https://eye.example', key: KEY, autoPageviews: false, onError: (e) => errors.push(e), ...options },
    env,
  );
  return { tracker, errors };
}

const trackN = (tracker, n, data = {}) =>
  Array.from({ length: n }, (_, i) => tracker.track('ui', 'click', { i, ...data }));

test('a full batch is sent at once', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { maxBatch: 3 });
  const ids = trackN(tracker, 2);
  await env.advance(0);
  assert.equal(env.requests.length, 0, 'two of three: waits');
  ids.push(...trackN(tracker, 1));
  await env.advance(0);
  assert.equal(env.requests.length, 1);
  assert.deepEqual(env.requests[0].events.map((e) => e.event_id), ids);
  assert.equal(env.pendingTimers(), 0, 'no timer left behind');
});

test('a partial batch is sent after flushIntervalMs', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { flushIntervalMs: 2000 });
  trackN(tracker, 2);
  await env.advance(1000);
  tracker.track('ui', 'late', { a: 1 }); // does not push the deadline back
  await env.advance(999);
  assert.equal(env.requests.length, 0);
  await env.advance(1);
  assert.equal(env.requests.length, 1);
  assert.equal(env.requests[0].events.length, 3);
  await env.advance(60000);
  assert.equal(env.requests.length, 1, 'nothing more to send');
  assert.deepEqual(tracker.stats(), { accepted: 3, beaconed: 0, rejected: 0, dropped: 0, queued: 0 });
});

test('503 is retried after Retry-After seconds, with the same event ids and a new sent_at', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env);
  env.responses.push(answer(503, { code: 'overloaded', message: 'busy' }, { 'Retry-After': '7' }));
  tracker.track('ui', 'click', { a: 1 });
  const flushed = tracker.flush();
  await env.advance(6999);
  assert.equal(env.requests.length, 1);
  await env.advance(1);
  await flushed;
  assert.equal(env.requests.length, 2);
  const [first, second] = env.requests.map((r) => r.events[0]);
  assert.equal(second.event_id, first.event_id);
  assert.equal(second.timestamp, first.timestamp);
  assert.equal(Date.parse(second.sent_at) - Date.parse(first.sent_at), 7000);
  assert.deepEqual(errors, []);
  assert.equal(tracker.stats().accepted, 1);
});

test('429 honours Retry-After too', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  env.responses.push(answer(429, null, { 'Retry-After': '2' }));
  tracker.track('ui', 'click', { a: 1 });
  tracker.flush();
  await env.advance(1999);
  assert.equal(env.requests.length, 1);
  await env.advance(1);
  assert.equal(env.requests.length, 2);
});

test('network errors, 408 and other 5xx are retried with growing, jittered backoff', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env, { retryBaseMs: 1000 });
  env.responses.push(new TypeError('Failed to fetch'), answer(500), answer(408), answer(502));
  tracker.track('ui', 'click', { a: 1 });
  tracker.flush();
  await env.advance(0);
  // Attempt n waits between half and all of 1000 * 2^n ms after attempt n - 1.
  for (const wait of [1000, 2000, 4000, 8000]) {
    const before = env.requests.length;
    const last = env.requests.at(-1).at;
    await env.advance(last + wait / 2 - 1 - env.now);
    assert.equal(env.requests.length, before, `not before ${wait / 2} ms`);
    await env.advance(last + wait - env.now);
    assert.equal(env.requests.length, before + 1, `by ${wait} ms`);
  }
  assert.equal(env.requests.length, 5);
  assert.equal(new Set(env.requests.map((r) => r.events[0].event_id)).size, 1);
  assert.deepEqual(errors, []);
  assert.equal(tracker.stats().accepted, 1);
});

test('400 is not retried; the rejected events and problems are reported', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env);
  const ids = trackN(tracker, 2);
  const problems = [
    { index: 0, field: 'data.a', code: 'too_deep', message: 'too deep' },
    { index: 1, field: 'data', code: 'too_large', message: 'too large' },
  ];
  env.responses.push(answer(400, {
    code: 'all_rejected', message: 'no event was accepted', problems, accepted: 0, rejected: 2,
    results: [
      { status: 'rejected', index: 0, problems: [problems[0]] },
      { status: 'rejected', index: 1, problems: [problems[1]] },
    ],
  }));
  await tracker.flush();
  await env.advance(10 * 60 * 1000);
  assert.equal(env.requests.length, 1);
  assert.equal(errors.length, 1);
  assert.deepEqual(errors[0], {
    reason: 'rejected', status: 400, message: 'no event was accepted', problems, eventIds: ids,
  });
  assert.deepEqual(tracker.stats(), { accepted: 0, beaconed: 0, rejected: 2, dropped: 0, queued: 0 });
});

test('401, 403, 413 and 415 are not retried and are reported as refused', async () => {
  for (const status of [401, 403, 413, 415]) {
    const env = fakeEnv();
    const { tracker, errors } = start(env);
    const ids = trackN(tracker, 2);
    env.responses.push(answer(status, { code: 'nope', message: 'refused ' + status, problems: [] }));
    await tracker.flush();
    await env.advance(10 * 60 * 1000);
    assert.equal(env.requests.length, 1, `${status} not retried`);
    assert.deepEqual(errors, [{ reason: 'refused', status, code: 'nope', message: 'refused ' + status, problems: [], eventIds: ids }]);
  }
});

test('events rejected inside a 202 are reported; the rest count as accepted', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env);
  const ids = trackN(tracker, 3);
  const problem = { index: 1, field: 'timestamp', code: 'invalid_timestamp', message: 'bad' };
  env.responses.push(answer(202, {
    accepted: 2, rejected: 1,
    results: [
      { status: 'accepted', index: 0, event_id: ids[0] },
      { status: 'rejected', index: 1, problems: [problem] },
      { status: 'accepted', index: 2, event_id: ids[2] },
    ],
  }));
  await tracker.flush();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].reason, 'rejected');
  assert.equal(errors[0].status, 202);
  assert.deepEqual(errors[0].eventIds, [ids[1]]);
  assert.deepEqual(errors[0].problems, [problem]);
  assert.deepEqual(tracker.stats(), { accepted: 2, beaconed: 0, rejected: 1, dropped: 0, queued: 0 });
});

test('a return=minimal answer lists only the rejected event; it is found by index', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env);
  const ids = trackN(tracker, 4);
  const problem = { index: 2, field: 'timestamp', code: 'invalid_timestamp', message: 'bad' };
  env.responses.push(answer(202, {
    accepted: 3, rejected: 1, results: [{ status: 'rejected', index: 2, problems: [problem] }],
  }, { 'Preference-Applied': 'return=minimal' }));
  await tracker.flush();
  assert.equal(env.requests[0].init.headers.Prefer, 'return=minimal');
  assert.equal(errors.length, 1);
  assert.deepEqual(errors[0].eventIds, [ids[2]]);
  assert.deepEqual(errors[0].problems, [problem]);
  assert.deepEqual(tracker.stats(), { accepted: 3, beaconed: 0, rejected: 1, dropped: 0, queued: 0 });
});

test('when retries run out the batch is kept, reported, and sent at a later flush', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env, { maxRetries: 2, retryBaseMs: 100, flushIntervalMs: 5000 });
  env.responses.push(new TypeError('offline'), new TypeError('offline'), new TypeError('offline'));
  const ids = trackN(tracker, 2);
  await env.advance(0);
  tracker.flush();
  await env.advance(1000);
  assert.equal(env.requests.length, 3);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].reason, 'unreachable');
  assert.equal(errors[0].message, 'offline');
  assert.deepEqual(errors[0].eventIds, ids);
  assert.equal(tracker.stats().queued, 2);
  await env.advance(5000);
  assert.equal(env.requests.length, 4);
  assert.deepEqual(env.requests[3].events.map((e) => e.event_id), ids);
  assert.equal(tracker.stats().queued, 0);
});

test('a full queue drops its oldest events and counts them', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env, { maxQueue: 3, maxBatch: 100 });
  const ids = trackN(tracker, 5);
  assert.deepEqual(tracker.stats(), { accepted: 0, beaconed: 0, rejected: 0, dropped: 2, queued: 3 });
  assert.deepEqual(errors.map((e) => e.reason), ['dropped', 'dropped']);
  assert.deepEqual(errors.flatMap((e) => e.eventIds), ids.slice(0, 2));
  await tracker.flush();
  assert.deepEqual(env.sent().map((e) => e.event_id), ids.slice(2));
});

test('batches go one at a time, in order', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { maxBatch: 2 });
  let inFlight = 0;
  let most = 0;
  env.fetch = ((fetch) => async (...args) => {
    most = Math.max(most, ++inFlight);
    await new Promise((resolve) => setImmediate(resolve));
    inFlight--;
    return fetch(...args);
  })(env.fetch);
  const ids = trackN(tracker, 7);
  await tracker.flush();
  assert.equal(most, 1);
  assert.deepEqual(env.requests.map((r) => r.events.length), [2, 2, 2, 1]);
  assert.deepEqual(env.sent().map((e) => e.event_id), ids);
});

test('pagehide hands the queue to sendBeacon with the key in the URL as text/plain', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  const ids = trackN(tracker, 3);
  env.dispatch('pagehide', { persisted: false });
  assert.equal(env.beacons.length, 1);
  const [{ url, blob }] = env.beacons;
  assert.equal(url, 'https://eye.example/api/events/beacon?key=' + encodeURIComponent(KEY));
  assert.equal(url, 'https://eye.example/api/events/beacon?key=ik_live%2Fabc%2B1');
  // Blob lower-cases its type, as browsers do: the server must compare it case-insensitively.
  assert.equal(blob.type, 'text/plain;charset=utf-8');
  const events = await env.beaconed();
  assert.deepEqual(events.map((e) => e.event_id), ids);
  for (const e of events) {
    assert.deepEqual(Object.keys(e).sort(), ['category', 'data', 'event_id', 'name', 'sent_at', 'session_id', 'timestamp']);
  }
  await env.advance(60000);
  assert.equal(env.requests.length, 0, 'beaconed events are not sent again');
  assert.equal(env.pendingTimers(), 0);
  assert.equal(tracker.stats().beaconed, 3);
});

test('visibilitychange to hidden beacons; back to visible does not', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  trackN(tracker, 2);
  env.document.visibilityState = 'visible';
  env.document.dispatch('visibilitychange');
  assert.equal(env.beacons.length, 0);
  env.hide();
  assert.equal(env.beacons.length, 1);
  assert.equal((await env.beaconed()).length, 2);
  env.dispatch('pagehide');
  assert.equal(env.beacons.length, 1, 'nothing left for pagehide');
});

test('a refused beacon falls back to a keepalive fetch', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  env.beaconResult = false;
  const ids = trackN(tracker, 2);
  env.dispatch('pagehide');
  await env.advance(0);
  assert.equal(env.requests.length, 1);
  assert.equal(env.requests[0].init.keepalive, true);
  assert.deepEqual(env.sent().map((e) => e.event_id), ids);
});

test('once a beacon is refused, it and the rest go by fetch, in order', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { maxBatch: 1000 });
  let calls = 0;
  env.beaconResult = () => ++calls === 1;
  const ids = trackN(tracker, 10, { filler: 'z'.repeat(4000) }); // three beacons' worth
  env.dispatch('pagehide');
  await env.advance(0);
  const beaconed = (await env.beaconed()).map((e) => e.event_id);
  assert.equal(calls, 2);
  assert.ok(beaconed.length >= 1 && beaconed.length < ids.length);
  assert.deepEqual([...beaconed, ...env.sent().map((e) => e.event_id)], ids);
  assert.deepEqual(tracker.stats(), { accepted: 10 - beaconed.length, beaconed: beaconed.length, rejected: 0, dropped: 0, queued: 0 });
});

test('hiding during a retry wait beacons that batch instead of retrying it later', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  env.responses.push(answer(503, null, { 'Retry-After': '30' }));
  const ids = trackN(tracker, 2);
  tracker.flush();
  await env.advance(1000);
  const later = trackN(tracker, 1);
  env.hide();
  assert.deepEqual((await env.beaconed()).map((e) => e.event_id), [...ids, ...later]);
  await env.advance(60000);
  assert.equal(env.requests.length, 1, 'no retry after the beacon');
});

test('bodies are split by bytes: fetches under 32 KB, beacons under 16 KB, none near 64 KiB', async () => {
  const filler = 'x'.repeat(3000) + 'é'.repeat(500); // 4 KB of UTF-8 in 3.5 K characters
  for (const [via, limit] of [['fetch', 32000], ['beacon', 16000]]) {
    const env = fakeEnv();
    const { tracker } = start(env, { maxBatch: 1000 });
    const ids = trackN(tracker, 60, { filler }); // about 240 KB
    let bodies;
    if (via === 'fetch') {
      await tracker.flush();
      bodies = env.requests.map((r) => r.init.body);
      assert.ok(env.requests.every((r) => r.init.keepalive));
    } else {
      env.dispatch('pagehide');
      bodies = await Promise.all(env.beacons.map((b) => b.blob.text()));
    }
    const sizes = bodies.map((b) => Buffer.byteLength(b));
    assert.ok(sizes.every((size) => size <= limit), `${via}: ${sizes}`);
    // Nearly full (events are 4 KB): no needless splitting.
    assert.ok(sizes.slice(0, -1).every((size) => size > limit - 4200), `${via}: ${sizes}`);
    const events = bodies.flatMap((b) => JSON.parse(b));
    assert.deepEqual(events.map((e) => e.event_id), ids);
  }
});

test('beacons ignore maxBatch: at unload only bytes matter', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { maxBatch: 2 });
  env.fetch = () => new Promise(() => {}); // the first batch stays in flight
  trackN(tracker, 2);
  await env.advance(0);
  const queued = trackN(tracker, 5);
  assert.equal(tracker.stats().queued, 5);
  env.dispatch('pagehide');
  assert.equal(env.beacons.length, 1);
  assert.deepEqual((await env.beaconed()).map((e) => e.event_id), queued);
});

test('an event too big for a batch goes alone; keepalive only while under 60 KB', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  const ids = [
    tracker.track('ui', 'a', { a: 1 }),
    tracker.track('ui', 'b', { blob: 'y'.repeat(40000) }),
    tracker.track('ui', 'c', { blob: 'y'.repeat(61000) }),
    tracker.track('ui', 'd', { d: 1 }),
  ];
  await tracker.flush();
  assert.deepEqual(env.requests.map((r) => r.events.map((e) => e.event_id)), ids.map((id) => [id]));
  assert.deepEqual(env.requests.map((r) => r.init.keepalive), [true, true, false, true]);
});

test('shutdown flushes what is queued and stops listening', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  trackN(tracker, 2);
  assert.equal(env.count('pagehide'), 1);
  await tracker.shutdown();
  assert.equal(env.sent().length, 2);
  assert.equal(env.count('pagehide'), 0);
  assert.equal(env.document.count('visibilitychange'), 0);
  assert.equal(tracker.track('ui', 'click', { a: 1 }), null);
});

test('a throwing onError does not stop delivery', async () => {
  const env = fakeEnv();
  const tracker = createTracker({
    endpoint: 'https://eye.example', key: 'k', autoPageviews: false, maxQueue: 1,
    onError: () => { throw new Error('bug in the app'); },
  }, env);
  trackN(tracker, 3);
  await tracker.flush();
  assert.equal(env.sent().length, 1);
});

test('unknown options warn once each, naming the option; known ones do not', () => {
  const env = fakeEnv();
  start(env, { flushInterval: 100, maxBatch: 3 });
  start(env, { flushInterval: 100, maxbatch: 3 });
  const warnings = env.warnings.map((args) => args.join(' '));
  assert.equal(warnings.length, 2, warnings.join('\n'));
  assert.match(warnings[0], /unknown option "flushInterval"/);
  assert.match(warnings[0], /flushIntervalMs/);
  assert.match(warnings[1], /unknown option "maxbatch"/);
});
