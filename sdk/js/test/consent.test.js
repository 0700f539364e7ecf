// Consent in real headless Chromium (issue 30, item 5): while pending, events wait in memory
// only — nothing in sessionStorage, localStorage or cookies, nothing sent, not even a beacon
// when the page goes — and a reload forgets them; a grant sends them, marked `pending`, and
// stores the session; a denial drops what waits and removes what the SDK stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, servePages } from './e2e/scenario.js';
import { fakeReceiver, until } from './receiver.js';

const KEY = 'ik_consent';

// Everything the page keeps: both storages (every key) and its cookies, as the browser has them.
async function kept(page) {
  const storages = await page.evaluate(() => ({
    session: Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]),
    local: Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]),
    cookie: document.cookie,
  }));
  return { ...storages, cookies: await page.context().cookies() };
}

const nothingKept = { session: [], local: [], cookie: '', cookies: [] };

// The events the receiver got, by fetch or beacon.
const received = (receiver) => receiver.requests.filter((r) => r.method === 'POST').flatMap((r) => r.events);

async function start(t, options) {
  const receiver = await fakeReceiver();
  const pages = await servePages({ endpoint: receiver.url, key: KEY, options });
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await pages.close();
    await receiver.close();
  });
  return { receiver, pages, browser };
}

// A page of its own, granted, whose pageview arrives after anything the pages before it sent
// would have: so that "nothing else arrived" is seen rather than waited for.
async function sentinel(browser, origin, receiver) {
  const page = await browser.newPage();
  await page.goto(origin + '/?sentinel');
  await page.evaluate(() => window.tracker.setConsent('granted'));
  await until(() => received(receiver).some((e) => e.data.query === 'sentinel'), 10000, 'the sentinel');
  await page.close();
}

test('in Chromium: pending keeps events in memory only, a reload forgets them, a grant sends them', async (t) => {
  const { receiver, pages, browser } = await start(t, { consent: 'pending' });
  const page = await browser.newPage();
  await page.goto(pages.origin + '/?first');
  // The pageview and two clicks: a full batch (maxBatch 3), which would go at once.
  await page.click('#buy');
  await page.click('#buy');
  assert.equal(await page.evaluate(() => window.tracker.stats().queued), 3);
  assert.equal(await page.evaluate(() => window.tracker.consent()), 'pending');
  assert.deepEqual(await kept(page), nothingKept);

  // A reload while pending: the page goes (pagehide, no beacon), and its events with it.
  await page.reload();
  await page.waitForFunction(() => window.tracker);
  assert.equal(await page.evaluate(() => window.tracker.stats().queued), 1, 'the new page\'s pageview only');
  assert.deepEqual(await kept(page), nothingKept);
  assert.deepEqual(receiver.requests, [], 'nothing sent, not even a preflight');

  // The person agrees: what waits goes, marked as recorded while pending; what follows is
  // marked granted; the session is stored now and is the one the events carry.
  await page.click('#buy');
  await page.evaluate(() => window.tracker.setConsent('granted'));
  await until(() => received(receiver).length >= 2, 10000, 'the waiting events');
  await page.click('#buy');
  await page.evaluate(() => window.tracker.flush());
  await until(() => received(receiver).length >= 3, 10000, 'the granted click');
  const events = received(receiver);
  assert.deepEqual(
    events.map((e) => [e.name, e.data.query ?? e.data.button, e.data.consent]),
    [['pageview', 'first', 'pending'], ['click', 'buy', 'pending'], ['click', 'buy', 'granted']],
  );
  const stored = await kept(page);
  assert.deepEqual(stored.local, []);
  assert.deepEqual(stored.cookies, []);
  assert.deepEqual(stored.session.map(([k]) => k), ['the-eye.session']);
  const sessionId = JSON.parse(stored.session[0][1]).id;
  assert.ok(events.every((e) => e.session_id === sessionId), 'one session, the stored one');

  await page.close();
  await sentinel(browser, pages.origin, receiver);
  assert.equal(received(receiver).length, 4, 'the first page\'s events never left');
});

test('in Chromium: a denial drops what waits, removes what was stored, and sends nothing more', async (t) => {
  const { receiver, pages, browser } = await start(t, { consent: 'granted' });
  const page = await browser.newPage();
  await page.goto(pages.origin + '/?granted');
  await page.evaluate(() => window.tracker.identify('account-7'));
  await page.evaluate(() => window.tracker.flush());
  await until(() => received(receiver).length >= 1, 10000, 'the granted pageview');
  assert.deepEqual((await kept(page)).session.map(([k]) => k).sort(), ['the-eye.session', 'the-eye.user']);

  // Back to undecided: a click waits; then denied: it is dropped and the storage is cleared.
  await page.evaluate(() => window.tracker.setConsent('pending'));
  await page.click('#buy');
  assert.equal(await page.evaluate(() => window.tracker.stats().queued), 1);
  await page.evaluate(() => window.tracker.setConsent('denied'));
  assert.equal(await page.evaluate(() => window.tracker.stats().queued), 0);
  assert.deepEqual(await kept(page), nothingKept);
  // Tracking after the denial records nothing, stores nothing, and the page's exit sends nothing.
  await page.click('#buy');
  assert.equal(await page.evaluate(() => window.tracker.track('ui', 'click', { button: 'x' })), null);
  assert.equal(await page.evaluate(() => window.tracker.stats().queued), 0);
  await page.evaluate(() => window.tracker.flush());
  assert.deepEqual(await kept(page), nothingKept);
  await page.close();

  await sentinel(browser, pages.origin, receiver);
  assert.deepEqual(
    received(receiver).map((e) => [e.data.query ?? e.data.button, e.data.consent]),
    [['granted', 'granted'], ['sentinel', 'granted']],
  );
});

test('in Chromium: a consent that is not one of the three states is refused at init', async (t) => {
  const { pages, browser } = await start(t, { consent: 'yes' });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(pages.origin + '/');
  await until(() => errors.length > 0, 10000, 'the page error');
  assert.match(errors[0], /consent must be one of pending, granted, denied/);
  assert.deepEqual(await kept(page), nothingKept);
});
