// Who the person is: identify() adds `user_id` to every later event, across page loads of
// the tab; reset() forgets it and starts a new session; a bad id is refused and reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTracker } from '../src/the-eye.js';
import { fakeEnv } from './fake-env.js';

function start(env, options = {}) {
  return createTracker({ endpoint: 'https://eye.example', key: 'k', autoPageviews: false, ...options }, env);
}

test('identify adds user_id to later events; reset removes it and starts a new session', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  tracker.track('ui', 'click', { n: 1 });
  assert.equal(tracker.identify('account-1234'), true);
  tracker.track('ui', 'click', { n: 2 });
  const before = tracker.sessionId();
  tracker.reset();
  tracker.track('ui', 'click', { n: 3 });
  await tracker.flush();
  const sent = env.sent();
  assert.deepEqual(sent.map((e) => e.user_id), [undefined, 'account-1234', undefined]);
  assert.equal(sent[0].session_id, before);
  assert.equal(sent[1].session_id, before);
  assert.notEqual(sent[2].session_id, before);
});

test('the user is kept in the tab storage, so a new page load still sends it', async () => {
  const env = fakeEnv();
  start(env).identify('account-7');
  const again = start(env);
  again.track('ui', 'click', { n: 1 });
  await again.flush();
  assert.equal(env.sent()[0].user_id, 'account-7');
});

test('a blank or too long id is refused and reported, and the previous one stays', async () => {
  const env = fakeEnv();
  const errors = [];
  const tracker = start(env, { onError: (error) => errors.push(error) });
  tracker.identify('account-1');
  for (const bad of ['', '   ', 'x'.repeat(129), 42]) {
    assert.equal(tracker.identify(bad), false);
  }
  assert.equal(errors.length, 4);
  assert.ok(errors.every((e) => e.reason === 'invalid'));
  tracker.track('ui', 'click', { n: 1 });
  await tracker.flush();
  assert.equal(env.sent()[0].user_id, 'account-1');
});

test('without storage the user lives in memory', async () => {
  const env = fakeEnv();
  const tracker = start(env, { storage: null });
  tracker.identify('account-9');
  tracker.track('ui', 'click', { n: 1 });
  await tracker.flush();
  assert.equal(env.sent()[0].user_id, 'account-9');
});
