// Automatic pageviews: on load, on single-page-app navigation, and the opt-out; and the
// page's default tracker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as TheEye from '../src/the-eye.js';
import { fakeEnv } from './fake-env.js';

const { createTracker } = TheEye;

function start(env, options = {}) {
  return createTracker({ endpoint: 'https://eye.example', key: 'k', ...options }, env);
}

async function pageviews(env, tracker) {
  await tracker.flush();
  return env.sent().map((e) => {
    assert.equal(e.category, 'page interaction');
    assert.equal(e.name, 'pageview');
    return e.data;
  });
}

test('a pageview is recorded on load with host, path, title, referrer and query', async () => {
  const env = fakeEnv({
    url: 'https://shop.example:8443/products/42?color=red&size=m#reviews',
    title: 'Red shoe',
    referrer: 'https://search.example/?q=shoe',
  });
  const tracker = start(env);
  assert.deepEqual(await pageviews(env, tracker), [{
    host: 'shop.example:8443',
    path: '/products/42',
    title: 'Red shoe',
    referrer: 'https://search.example/?q=shoe',
    query: 'color=red&size=m',
  }]);
});

test('title, referrer and query are left out when empty', async () => {
  const env = fakeEnv({ url: 'https://shop.example/?', title: '', referrer: '' });
  const tracker = start(env);
  assert.deepEqual(await pageviews(env, tracker), [{ host: 'shop.example', path: '/' }]);
});

test('pageview fields are cut to the lengths the server schema allows, by code point', async () => {
  const long = (n) => '😀'.repeat(n); // two UTF-16 units each
  const env = fakeEnv({
    url: 'https://shop.example/' + 'p'.repeat(3000) + '?' + 'q'.repeat(3000),
    title: 't' + long(1500),
    referrer: 'https://ref.example/' + 'r'.repeat(3000),
  });
  const tracker = start(env);
  const [data] = await pageviews(env, tracker);
  assert.equal(data.path, '/' + 'p'.repeat(2047));
  assert.equal(data.query, 'q'.repeat(2048));
  assert.equal(data.title, 't' + long(1023));
  assert.equal([...data.title].length, 1024);
  assert.equal(data.referrer, ('https://ref.example/' + 'r'.repeat(3000)).slice(0, 2048));
});

test('pushState, replaceState to a new URL and popstate record pageviews', async () => {
  const env = fakeEnv({ url: 'https://shop.example/', title: 'Home' });
  const originalPush = env.history.pushState;
  const tracker = start(env);
  env.history.pushState({ page: 1 }, '', '/cart');
  env.document.title = 'Cart';
  env.history.replaceState({ page: 1, scrolled: true }, ''); // state only: not a pageview
  env.history.replaceState(null, '', '/cart#summary'); // hash only: not a pageview
  env.history.replaceState(null, '', '/cart?step=2');
  env.history.back();
  assert.notEqual(env.history.pushState, originalPush);
  assert.deepEqual(await pageviews(env, tracker), [
    { host: 'shop.example', path: '/', title: 'Home' },
    { host: 'shop.example', path: '/cart', title: 'Home', referrer: 'https://shop.example/' },
    { host: 'shop.example', path: '/cart', title: 'Cart', referrer: 'https://shop.example/cart', query: 'step=2' },
    { host: 'shop.example', path: '/', title: 'Cart', referrer: 'https://shop.example/cart?step=2' },
  ]);
});

test('the patched history methods still do their job and pass on what they return', () => {
  const env = fakeEnv();
  const calls = [];
  env.history.pushState = function (...args) {
    calls.push({ self: this, args });
    return 'done';
  };
  start(env);
  assert.equal(env.history.pushState({ a: 1 }, '', '/x'), 'done');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].self, env.history);
  assert.deepEqual(calls[0].args, [{ a: 1 }, '', '/x']);
});

test('autoPageviews: false records nothing and leaves history alone', async () => {
  const env = fakeEnv();
  const { pushState, replaceState } = env.history;
  const tracker = start(env, { autoPageviews: false });
  assert.equal(env.history.pushState, pushState);
  assert.equal(env.history.replaceState, replaceState);
  assert.equal(env.count('popstate'), 0);
  env.history.pushState(null, '', '/elsewhere');
  env.history.back();
  await tracker.flush();
  assert.equal(env.requests.length, 0);
  tracker.pageview();
  assert.deepEqual(await pageviews(env, tracker), [{ host: 'shop.example', path: '/', title: 'Shop' }]);
});

test('shutdown restores history and stops counting navigation', async () => {
  const env = fakeEnv();
  const { pushState, replaceState } = env.history;
  const tracker = start(env);
  await tracker.shutdown();
  assert.equal(env.history.pushState, pushState);
  assert.equal(env.history.replaceState, replaceState);
  assert.equal(env.count('popstate'), 0);
  env.history.pushState(null, '', '/after');
  await tracker.flush();
  assert.equal(env.sent().length, 1, 'only the pageview on load');
});

test('a tracker patched over by someone else is muted by shutdown, not unpatched', async () => {
  const env = fakeEnv();
  const tracker = start(env);
  const ours = env.history.pushState;
  const theirs = function (...args) { return ours.apply(this, args); };
  env.history.pushState = theirs;
  await tracker.shutdown();
  assert.equal(env.history.pushState, theirs);
  env.history.pushState(null, '', '/muted');
  await tracker.flush();
  assert.equal(env.sent().length, 1);
});

test('the default tracker: init, track, pageview, flush, shutdown', async () => {
  assert.throws(() => TheEye.track('ui', 'click', { a: 1 }), /call init\(\) first/);
  const env = fakeEnv();
  const tracker = TheEye.init({ endpoint: 'https://eye.example', key: 'k' }, env);
  const id = TheEye.track('ui', 'click', { a: 1 });
  TheEye.pageview();
  await TheEye.flush();
  assert.deepEqual(env.sent().map((e) => e.name), ['pageview', 'click', 'pageview']);
  assert.equal(env.sent()[1].event_id, id);

  // init again replaces the tracker, flushing and unhooking the old one.
  const next = fakeEnv();
  const replacement = TheEye.init({ endpoint: 'https://eye.example', key: 'k', autoPageviews: false }, next);
  assert.notEqual(replacement, tracker);
  assert.equal(env.count('pagehide'), 0);
  TheEye.track('ui', 'again', { a: 2 });
  await TheEye.shutdown();
  assert.deepEqual(next.sent().map((e) => e.name), ['again']);
  assert.throws(() => TheEye.flush(), /call init\(\) first/);
});
