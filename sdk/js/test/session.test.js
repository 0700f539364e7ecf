// Sessions: created on first use, kept in sessionStorage across page loads, refreshed by
// each event, replaced after the inactivity timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTracker } from '../src/the-eye.js';
import { fakeEnv } from './fake-env.js';

const MINUTE = 60 * 1000;

function start(env, options = {}) {
  return createTracker({ endpoint: 'https://eye.example', key: 'k', autoPageviews: false, ...options }, env);
}

async function sessionsOf(env, tracker) {
  await tracker.flush();
  return env.sent().map((e) => e.session_id);
}

test('a session is created on the first event and stored in sessionStorage', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  assert.equal(env.sessionStorage.getItem('the-eye.session'), null);
  tracker.track('ui', 'click', { a: 1 });
  const stored = JSON.parse(env.sessionStorage.getItem('the-eye.session'));
  assert.match(stored.id, /^[0-9a-f-]{36}$/);
  assert.equal(stored.last, env.now);
  assert.deepEqual(await sessionsOf(env, tracker), [stored.id]);
});

test('events within the timeout share a session, each one extending it', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  // 25 minutes apart, 100 minutes in all: never 30 minutes idle.
  for (let i = 0; i < 5; i++) {
    tracker.track('ui', 'tick', { i });
    await env.advance(25 * MINUTE);
  }
  const ids = await sessionsOf(env, tracker);
  assert.equal(ids.length, 5);
  assert.equal(new Set(ids).size, 1);
});

test('a new session starts after 30 minutes without events', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  tracker.track('ui', 'a', { i: 1 });
  await env.advance(30 * MINUTE); // exactly the timeout: still the same session
  tracker.track('ui', 'b', { i: 2 });
  await env.advance(30 * MINUTE + 1);
  tracker.track('ui', 'c', { i: 3 });
  const [a, b, c] = await sessionsOf(env, tracker);
  assert.equal(a, b);
  assert.notEqual(b, c);
});

test('sessionTimeoutMs changes the timeout', async () => {
  const env = fakeEnv();
  const tracker = start(env, { sessionTimeoutMs: MINUTE });
  tracker.track('ui', 'a', { i: 1 });
  await env.advance(MINUTE + 1);
  tracker.track('ui', 'b', { i: 2 });
  const [a, b] = await sessionsOf(env, tracker);
  assert.notEqual(a, b);
});

test('a real navigation in the same tab keeps the session; a new tab starts another', async () => {
  const first = fakeEnv();
  const one = start(first);
  one.track('ui', 'a', { i: 1 });
  await one.flush();

  const next = fakeEnv({ storage: first.sessionStorage, at: first.now + 10 * MINUTE });
  const two = start(next);
  two.track('ui', 'b', { i: 2 });
  await two.flush();
  assert.equal(next.sent()[0].session_id, first.sent()[0].session_id);
  assert.equal(two.sessionId(), first.sent()[0].session_id);

  const otherTab = fakeEnv({ at: first.now });
  const three = start(otherTab);
  three.track('ui', 'c', { i: 3 });
  await three.flush();
  assert.notEqual(otherTab.sent()[0].session_id, first.sent()[0].session_id);
});

test('sessionId() reports the session without extending it', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  tracker.track('ui', 'a', { i: 1 });
  const id = tracker.sessionId();
  await env.advance(20 * MINUTE);
  assert.equal(tracker.sessionId(), id);
  await env.advance(11 * MINUTE); // 31 minutes since the event, though sessionId() was asked
  tracker.track('ui', 'b', { i: 2 });
  const [a, b] = await sessionsOf(env, tracker);
  assert.equal(a, id);
  assert.notEqual(b, id);
});

test('without working storage the session lives in memory', async () => {
  const throwing = {
    getItem() { throw new Error('SecurityError'); },
    setItem() { throw new Error('QuotaExceededError'); },
  };
  for (const storage of [throwing, null]) {
    const env = fakeEnv({ storage });
    const tracker = start(env);
    tracker.track('ui', 'a', { i: 1 });
    await env.advance(MINUTE);
    tracker.track('ui', 'b', { i: 2 });
    await env.advance(31 * MINUTE);
    tracker.track('ui', 'c', { i: 3 });
    const [a, b, c] = await sessionsOf(env, tracker);
    assert.match(a, /^[0-9a-f-]{36}$/);
    assert.equal(a, b);
    assert.notEqual(b, c);
  }
});

test('the storage option replaces sessionStorage', async () => {
  const items = new Map();
  const storage = { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v) };
  const env = fakeEnv();
  const tracker = start(env, { storage });
  tracker.track('ui', 'a', { i: 1 });
  assert.equal(env.sessionStorage.getItem('the-eye.session'), null);
  assert.equal(JSON.parse(items.get('the-eye.session')).id, tracker.sessionId());
});

test('a stored session that is not ours is replaced', async () => {
  const env = fakeEnv();
  env.sessionStorage.setItem('the-eye.session', '{"id": 5}');
  const tracker = start(env);
  tracker.track('ui', 'a', { i: 1 });
  await tracker.flush();
  assert.match(env.sent()[0].session_id, /^[0-9a-f-]{36}$/);
});

test('session ids are UUIDv7 of their start, sorting in the order sessions start', async () => {
  const env = fakeEnv();
  // No randomUUID, as in insecure contexts: only getRandomValues is needed.
  env.crypto = { getRandomValues: (a) => globalThis.crypto.getRandomValues(a) };
  const tracker = start(env, { sessionTimeoutMs: 1000 });
  const started = env.now;
  const ids = [];
  for (let i = 0; i < 3; i++) {
    tracker.track('ui', 'a', { i });
    ids.push(tracker.sessionId());
    await env.advance(5000); // past the timeout: the next event starts a new session
  }
  ids.forEach((id, i) => {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(parseInt(id.replace(/-/g, '').slice(0, 12), 16), started + i * 5000, 'its start in ms');
  });
  assert.equal(new Set(ids).size, 3);
  assert.deepEqual([...ids].sort(), ids, 'string order is start order');
  await tracker.flush();
  const sent = env.sent();
  assert.equal(sent.length, 3);
  sent.forEach((e, i) => {
    assert.equal(e.session_id, ids[i]);
    assert.ok(e.session_id < e.event_id, 'a session id sorts before its first event\'s id');
  });
});
