// End to end: the built SDK in headless Chromium against a running The Eye, then the
// events read back from its API (so from ClickHouse), in order and in one session; a page
// on an origin nobody registered, which must be told so; and The Eye's documentation pages,
// which must load nothing from elsewhere and whose "Try it out" must work as it is.
//
//   THE_EYE_URL       the server's base URL, e.g. http://127.0.0.1:8080
//   THE_EYE_KEY       an ingest key whose application has the test pages' origin registered
//   THE_EYE_READ_KEY  a key allowed to read GET /api/sessions/{id}/events
//   THE_EYE_PAGE_PORT optional: serve the test pages on this port instead of an ephemeral one,
//                     for when the registered origin must be known in advance
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, servePages, visit, expectedEvents } from './scenario.js';

const { THE_EYE_URL, THE_EYE_KEY, THE_EYE_READ_KEY, THE_EYE_PAGE_PORT } = process.env;
const missing = ['THE_EYE_URL', 'THE_EYE_KEY', 'THE_EYE_READ_KEY'].filter((name) => !process.env[name]);
if (missing.length) {
  console.error(`npm run test:e2e needs a running The Eye: set ${missing.join(', ')} ` +
    '(see the comment at the top of test/e2e/e2e.test.js). Nothing was tested.');
  process.exit(1);
}

const base = THE_EYE_URL.replace(/\/+$/, '');

// Every event of the session, following next_cursor; none while it is still unknown (404).
async function readSession(sessionId) {
  const items = [];
  let cursor = null;
  do {
    const url = new URL(`${base}/api/sessions/${encodeURIComponent(sessionId)}/events`);
    if (cursor) url.searchParams.set('cursor', cursor);
    const response = await fetch(url, { headers: { Authorization: 'Bearer ' + THE_EYE_READ_KEY } });
    if (response.status === 404) return items;
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}: ${await response.text()}`);
    const page = await response.json();
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

// RFC 3339, or ClickHouse's `YYYY-MM-DD hh:mm:ss.fff` in UTC.
const millis = (timestamp) => Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(timestamp) ? timestamp : timestamp.replace(' ', 'T') + 'Z');

test('a visit in Chromium lands in The Eye in order, in one session', async (t) => {
  const pages = await servePages({ endpoint: base, key: THE_EYE_KEY, port: Number(THE_EYE_PAGE_PORT || 0) });
  console.log(`test pages served from ${pages.origin}: this origin must be registered for THE_EYE_KEY`);
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await pages.close();
  });

  const { sessionId, pageErrors, sdkErrors } = await visit(browser, pages.origin);
  console.log(`session ${sessionId}`);
  assert.deepEqual(pageErrors, [], 'errors in the page (CORS? origin not registered?)');
  assert.deepEqual(sdkErrors, [], 'errors reported by the SDK');

  const expected = expectedEvents(pages.origin);
  let items = [];
  const deadline = Date.now() + 60000;
  while (items.length < expected.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    items = await readSession(sessionId);
  }
  // A little longer, so that a duplicate arriving late would be seen too.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  items = await readSession(sessionId);

  const shape = (e) => [e.category, e.name, e.data];
  const shown = items.map((e) =>
    `${e.timestamp} (client ${e.client_timestamp}, sent ${e.sent_at}, received ${e.received_at}) ` +
    `${e.category}/${e.name} ${JSON.stringify(e.data)}`).join('\n');
  assert.ok(items.every((e) => e.session_id === sessionId));
  assert.equal(new Set(items.map((e) => e.event_id)).size, items.length, 'each event once:\n' + shown);

  // What the SDK sent: every event, in the order of the browser's clock.
  const byClient = [...items].sort((a, b) =>
    millis(a.client_timestamp ?? a.timestamp) - millis(b.client_timestamp ?? b.timestamp) ||
    (a.event_id < b.event_id ? -1 : 1));
  assert.deepEqual(byClient.map(shape), expected, `session ${sessionId} by client time:\n${shown}`);
  const ids = byClient.map((e) => e.event_id);
  assert.deepEqual([...ids].sort(), ids, 'UUIDv7 event ids follow the client timestamps');

  // What an analyst reads: the session "in the order the events happened", which the server
  // orders by its skew-corrected timestamp.
  assert.deepEqual(items.map(shape), expected, `session ${sessionId} as the read API orders it:\n${shown}`);
});

test('a page on an unregistered origin is told origin_not_allowed at once and does not retry', async (t) => {
  // An ephemeral port: not the origin registered for THE_EYE_KEY.
  const pages = await servePages({ endpoint: base, key: THE_EYE_KEY });
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    await pages.close();
  });
  const page = await browser.newPage();
  await page.goto(pages.origin + '/');
  // The pageview and two clicks fill a batch of 3, which goes by fetch at once.
  await page.click('#buy');
  await page.click('#buy');
  // Before, the refused preflight made this a network error: `unreachable` after ~30 s of
  // retries, and retried at every flush for ever.
  await page.waitForFunction(() => window.errors.length > 0, null, { timeout: 60000 });
  const [error, ...more] = await page.evaluate(() => window.errors);
  assert.deepEqual(more, []);
  assert.deepEqual(
    { reason: error.reason, status: error.status, code: error.code, events: error.eventIds.length },
    { reason: 'refused', status: 403, code: 'origin_not_allowed', events: 3 },
    JSON.stringify(error),
  );
  assert.match(error.message, /origin/);
  // Not retried: nothing is left to send, and another flush reports nothing new.
  await page.evaluate(() => window.tracker.flush());
  assert.deepEqual(await page.evaluate(() => window.tracker.stats()),
    { accepted: 0, beaconed: 0, rejected: 3, dropped: 0, queued: 0 });
  assert.equal((await page.evaluate(() => window.errors)).length, 1);
});

test('Swagger UI and Redoc load nothing from elsewhere, and "Try it out" of POST /api/events works as it is', async (t) => {
  const browser = await launch();
  t.after(() => browser.close());
  const page = await browser.newPage();
  const elsewhere = [];
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(base + '/') && !/^(data|blob):/.test(url)) elsewhere.push(url);
  });

  await page.goto(base + '/redoc');
  await page.locator('h1', { hasText: 'The Eye' }).first().waitFor({ timeout: 60000 });
  await page.waitForLoadState('networkidle');

  await page.goto(base + '/swagger/');
  await page.click('button.authorize');
  const bearer = page.locator('.modal-ux .auth-container', { hasText: 'http, Bearer' });
  await bearer.locator('input').fill(THE_EYE_KEY);
  await bearer.locator('button.authorize').click();
  await page.locator('.modal-ux button.btn-done').first().click();
  const operation = page.locator('#operations-ingest-post_events');
  await operation.locator('.opblock-summary').click();
  await operation.locator('button.try-out__btn').click();
  // The body Swagger fills in is the document's example: sent unchanged.
  const body = JSON.parse(await operation.locator('textarea.body-param__text').inputValue());
  assert.equal(body.length, 3);
  await operation.locator('button.execute').click();
  const status = operation.locator('.live-responses-table tbody .response-col_status').first();
  await status.waitFor({ timeout: 60000 });
  assert.equal((await status.innerText()).trim(), '202');
  const answer = JSON.parse(await operation.locator('.live-responses-table tbody .response-col_description pre').first().innerText());
  assert.deepEqual([answer.accepted, answer.rejected], [3, 0], JSON.stringify(answer));
  await page.waitForLoadState('networkidle');

  assert.deepEqual(elsewhere, [], 'requests that left The Eye');
});
