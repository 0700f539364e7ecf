// The built SDK in real headless Chromium, delivering to a fake receiver on another port
// (so CORS preflights, keepalive fetches and beacons are the browser's real ones).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, servePages, visit, expectedEvents } from './e2e/scenario.js';
import { fakeReceiver, until } from './receiver.js';

const KEY = 'ik_test/key+1';

test('in Chromium: events go by fetch and by beacon, in order, in one session', async (t) => {
  const receiver = await fakeReceiver();
  const pages = await servePages({ endpoint: receiver.url, key: KEY });
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await pages.close();
    await receiver.close();
  });

  const { sessionId, pageErrors, sdkErrors } = await visit(browser, pages.origin);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(sdkErrors, []);
  const posts = () => receiver.requests.filter((r) => r.method === 'POST');
  await until(() => posts().flatMap((r) => r.events).length >= 6, 10000, 'six events');

  // The first three events fill a batch and go by fetch. The fourth goes by beacon when
  // the first page goes, or by fetch if it was queued while that fetch was still under way
  // (a flush sends what arrives meanwhile). The second page's two events can only leave by
  // beacon. A beacon may overtake a fetch on the way, so requests are told apart by path,
  // and events put in order by time, as the server does.
  const fetches = posts().filter((r) => r.path === '/api/events');
  const beacons = posts().filter((r) => r.path === '/api/events/beacon');
  const summary = posts().map((r) => `${r.path} ${r.events.map((e) => e.data.path || e.data.button)}`).join('; ');
  assert.equal(fetches.length + beacons.length, posts().length, 'no other paths: ' + summary);
  assert.ok(fetches.length >= 1 && beacons.length >= 1, summary);
  const [fetched] = fetches;
  for (const request of fetches) {
    assert.equal(request.headers.authorization, 'Bearer ' + KEY);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers.origin, pages.origin);
  }
  assert.ok(receiver.requests.some((r) => r.method === 'OPTIONS' && r.path === '/api/events'), 'preflight');
  for (const beacon of beacons) {
    assert.equal(beacon.query.get('key'), KEY);
    assert.equal(beacon.headers.authorization, undefined);
    assert.match(beacon.headers['content-type'], /^text\/plain;charset=utf-8$/i);
    assert.equal(beacon.headers.origin, pages.origin);
  }

  const expected = expectedEvents(pages.origin);
  const shape = (e) => [e.category, e.name, e.data];
  assert.deepEqual(fetched.events.map(shape), expected.slice(0, 3), summary);
  assert.deepEqual(beacons.at(-1).events.map(shape), expected.slice(4), summary);
  const events = posts().flatMap((r) => r.events)
    .sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp) || (a.event_id < b.event_id ? -1 : 1));
  assert.deepEqual(events.map(shape), expected, summary);
  for (const e of events) {
    assert.deepEqual(Object.keys(e).sort(), ['category', 'data', 'event_id', 'name', 'sent_at', 'session_id', 'timestamp']);
    assert.equal(e.session_id, sessionId);
  }
  const ids = events.map((e) => e.event_id);
  assert.deepEqual([...ids].sort(), ids, 'UUIDv7 ids in the order of the events');
  // The session id is a UUIDv7 made before the first event's id, by the same generator.
  assert.equal(sessionId[14], '7', sessionId);
  assert.ok(sessionId < ids[0], `${sessionId} sorts before ${ids[0]}`);
});
