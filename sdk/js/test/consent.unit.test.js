// Consent against the fake browser: the paths a real browser cannot steer on demand — a
// withdrawal during a retry's backoff, the queue's bound while pending, the flush timer — and
// the field analysts filter on. The browser behaviour itself is in consent.test.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTracker } from '../src/the-eye.js';
import { fakeEnv, answer } from './fake-env.js';

function start(env, options = {}) {
  const errors = [];
  const tracker = createTracker(
    { endpoint: 'https://eye.example', key: 'k', autoPageviews: false, onError: (e) => errors.push(e), ...options },
    env,
  );
  return { tracker, errors };
}

test('pending: no timer, no request, no beacon, no storage; the queue keeps its bound', async () => {
  const env = fakeEnv();
  const { tracker, errors } = start(env, { consent: 'pending', maxQueue: 2, maxBatch: 1 });
  tracker.identify('account-7');
  for (const i of [1, 2, 3]) tracker.track('ui', 'click', { i });
  await env.advance(60 * 60 * 1000);
  env.hide();
  await tracker.flush();
  assert.equal(env.pendingTimers(), 0);
  assert.deepEqual([env.requests, env.beacons], [[], []]);
  assert.equal(env.sessionStorage.getItem('the-eye.session'), null);
  assert.equal(env.sessionStorage.getItem('the-eye.user'), null);
  assert.deepEqual(errors.map((e) => e.reason), ['dropped']);
  assert.equal(tracker.stats().queued, 2);

  assert.equal(tracker.setConsent('granted'), true);
  await env.advance(0);
  assert.deepEqual(env.sent().map((e) => [e.data.i, e.data.consent, e.user_id]),
    [[2, 'pending', 'account-7'], [3, 'pending', 'account-7']]);
  assert.equal(JSON.parse(env.sessionStorage.getItem('the-eye.session')).id, env.sent()[0].session_id);
  assert.equal(env.sessionStorage.getItem('the-eye.user'), 'account-7');
});

test('a denial during a retry backoff stops the batch; without the option nothing is added', async () => {
  const env = fakeEnv();
  const { tracker } = start(env, { consent: 'granted' });
  env.responses.push(answer(503, null, { 'Retry-After': '5' }));
  tracker.track('ui', 'click', { a: 1 });
  const flushed = tracker.flush();
  await env.advance(0);
  assert.equal(env.requests.length, 1);
  assert.equal(env.requests[0].events[0].data.consent, 'granted');
  tracker.setConsent('denied');
  await env.advance(60000);
  await flushed;
  assert.equal(env.requests.length, 1, 'not retried after the denial');
  assert.equal(tracker.stats().queued, 0);
  assert.equal(tracker.track('ui', 'click', { a: 2 }), null);
  assert.equal(tracker.setConsent('maybe'), false);

  const plain = fakeEnv();
  start(plain).tracker.track('ui', 'click', { a: 1 });
  await plain.advance(10000);
  assert.deepEqual(plain.sent()[0].data, { a: 1 });
  assert.throws(() => start(fakeEnv(), { consent: 'yes' }), /consent must be one of/);
});
