// What one event looks like on the wire, its identifiers, and input checking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTracker } from '../src/the-eye.js';
import { fakeEnv } from './fake-env.js';

const ENDPOINT = 'https://eye.example/';
const KEY = 'ik_live/abc+1';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function start(env, options = {}) {
  const errors = [];
  const tracker = createTracker(
    { endpoint: ENDPOINT, key: KEY, autoPageviews: false, onError: (e) => errors.push(e), ...options },
    env,
  );
  return { tracker, errors };
}

test('an event has exactly the fields the server allows, stamped at track and send time', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  const tracked = env.now;
  const id = tracker.track('checkout', 'paid', { amount: 12.5, items: ['a'] });
  await env.advance(5000);

  assert.equal(env.requests.length, 1);
  const { url, init, events } = env.requests[0];
  assert.equal(url, 'https://eye.example/api/events');
  assert.equal(init.method, 'POST');
  assert.equal(init.keepalive, true);
  assert.deepEqual(init.headers, {
    'Content-Type': 'application/json',
    Authorization: 'Bearer ' + KEY,
    Prefer: 'return=minimal',
  });
  assert.ok(Array.isArray(events) && events.length === 1);
  const [event] = events;
  assert.deepEqual(Object.keys(event).sort(), ['category', 'data', 'event_id', 'name', 'sent_at', 'session_id', 'timestamp']);
  assert.equal(event.event_id, id);
  assert.equal(event.category, 'checkout');
  assert.equal(event.name, 'paid');
  assert.deepEqual(event.data, { amount: 12.5, items: ['a'] });
  assert.equal(event.timestamp, new Date(tracked).toISOString());
  assert.equal(event.sent_at, new Date(tracked + 5000).toISOString());
  assert.match(event.session_id, UUID);
});

test('data is captured when tracked, not when sent', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  const data = { step: 1 };
  tracker.track('form', 'step', data);
  data.step = 2;
  await tracker.flush();
  assert.deepEqual(env.sent()[0].data, { step: 1 });
});

test('event ids are UUIDv7 carrying the clock and strictly increasing within a millisecond', () => {
  const env = fakeEnv();
  const { tracker } = start(env, { maxBatch: 10000, maxQueue: 10000 });
  const ids = [];
  for (let i = 0; i < 5000; i++) ids.push(tracker.track('t', 'n', { i })); // one millisecond
  for (const id of ids) {
    assert.match(id, UUID);
    assert.equal(id[14], '7', 'version 7');
  }
  const ms = parseInt(ids[0].replace(/-/g, '').slice(0, 12), 16);
  assert.equal(ms, env.now);
  const sorted = [...ids].sort();
  assert.deepEqual(sorted, ids, 'string order is creation order');
  assert.equal(new Set(ids).size, ids.length);
});

test('invalid events are reported and not queued', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env);
  const cyclic = {};
  cyclic.self = cyclic;
  assert.equal(tracker.track('ui', 'click', {}), null);
  assert.equal(tracker.track('ui', 'click'), null);
  assert.equal(tracker.track('ui', 'click', [1]), null);
  assert.equal(tracker.track('', 'click', { a: 1 }), null);
  assert.equal(tracker.track('ui', 'x'.repeat(101), { a: 1 }), null);
  assert.equal(tracker.track('ui', 'click', cyclic), null);
  assert.notEqual(tracker.track('ui', '😀'.repeat(100), { a: 1 }), null, '100 characters, 200 UTF-16 units');
  assert.deepEqual(errors.map((e) => e.reason), ['invalid', 'invalid', 'invalid', 'invalid', 'invalid', 'invalid']);
  assert.match(errors[0].message, /data must be a non-empty object/);
  assert.match(errors[3].message, /category/);
  assert.equal(tracker.stats().queued, 1);
});

test('init needs an endpoint and a key', () => {
  assert.throws(() => createTracker({ key: 'k' }, fakeEnv()), /endpoint and a key/);
  assert.throws(() => createTracker({ endpoint: 'https://e' }, fakeEnv()), /endpoint and a key/);
});

test('errors go to console.warn when no onError is given', async () => {
  const env = fakeEnv();
  const tracker = createTracker({ endpoint: ENDPOINT, key: KEY, autoPageviews: false }, env);
  tracker.track('ui', 'click', {});
  assert.equal(env.warnings.length, 1);
  assert.equal(env.warnings[0][0], '[the-eye]');
});

test('the counter in an event id starts at random each millisecond', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  const starts = new Set();
  for (let i = 0; i < 20; i++) {
    starts.add(tracker.track('t', 'n', { i }).slice(15, 18)); // rand_a: the 12-bit counter
    await env.advance(1);
  }
  assert.ok(starts.size > 10, [...starts].join(' '));
  for (const start of starts) assert.ok(parseInt(start, 16) < 0x800);
});

test('event ids keep rising when the clock steps back', async () => {
  const env = fakeEnv();
  const { tracker } = start(env);
  await env.advance(10000);
  const first = tracker.track('t', 'n', { i: 1 });
  env.Date.now = () => env.now - 5000; // the user set the clock back
  const second = tracker.track('t', 'n', { i: 2 });
  assert.ok(second > first);
});
