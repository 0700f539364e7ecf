// The page /debugger in real headless Chromium against a running The Eye: a read key pasted
// in, events sent (one good and one bad with Node's fetch, as curl would; one bad through the
// page's own form), and the rows that must appear: the accepted event, and the rejected ones
// with each problem at its field. The page must load nothing from elsewhere. A screenshot is
// kept as a test artefact (THE_EYE_ARTEFACTS, by default test-results/ here).
//
//   THE_EYE_URL       the server's base URL
//   THE_EYE_KEY       an ingest key
//   THE_EYE_READ_KEY  a read key of the same application
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './scenario.js';

const { THE_EYE_URL, THE_EYE_KEY, THE_EYE_READ_KEY } = process.env;
const missing = ['THE_EYE_URL', 'THE_EYE_KEY', 'THE_EYE_READ_KEY'].filter((name) => !process.env[name]);
if (missing.length) {
  console.error(`the debugger test needs a running The Eye: set ${missing.join(', ')}. Nothing was tested.`);
  process.exit(1);
}
const base = THE_EYE_URL.replace(/\/+$/, '');
const artefacts = process.env.THE_EYE_ARTEFACTS || path.resolve('test-results');

async function send(body) {
  const response = await fetch(`${base}/api/events`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${THE_EYE_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return response.status;
}

test('/debugger shows accepted and rejected events as they arrive, problems at their fields', async (t) => {
  const browser = await launch();
  t.after(() => browser.close());
  const page = await browser.newPage();
  const elsewhere = [];
  const pageErrors = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(base)) elsewhere.push(request.url());
  });
  page.on('pageerror', (error) => pageErrors.push(error.message));

  const response = await page.goto(`${base}/debugger`);
  assert.equal(response.status(), 200);
  await page.fill('#read-key', THE_EYE_READ_KEY);
  const session = `debugger-e2e-${Date.now()}`;
  await page.fill('#session', session);
  await page.click('#connect');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'connected');

  const now = new Date().toISOString();
  const good = { session_id: session, category: 'page interaction', name: 'pageview', data: { host: 'e2e.example', path: '/' }, timestamp: now };
  const bad = { session_id: session, category: 'page interaction', name: 'pageview', data: { host: 'e2e.example', path: '/' }, timestamp: 'yesterday' };
  assert.equal(await send([good, bad]), 202);

  // A bad event through the page's own form: its answer next to what arrives.
  await page.fill('#ingest-key', THE_EYE_KEY);
  await page.fill('#body', JSON.stringify({ session_id: session, category: 'page interaction', data: {}, timestamp: now }));
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('answer').textContent.startsWith('400'));
  assert.match(await page.textContent('#answer'), /all_rejected/);

  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length >= 3);
  const rows = await page.$$eval('#rows tr', (trs) => trs.map((tr) => ({
    outcome: tr.className,
    cells: [...tr.children].map((td) => td.textContent),
    problems: [...tr.querySelectorAll('.problem')].map((div) => div.textContent),
  })));
  // Newest first.
  const [formBad, curlBad, curlGood] = rows;
  assert.equal(curlGood.outcome, 'accepted', JSON.stringify(rows));
  assert.equal(curlGood.cells[2], 'page interaction / pageview');
  assert.equal(curlGood.cells[3], session);
  assert.equal(curlBad.outcome, 'rejected', JSON.stringify(rows));
  assert.ok(curlBad.problems.some((p) => p.startsWith('timestamp: invalid_timestamp')), JSON.stringify(curlBad));
  assert.equal(formBad.outcome, 'rejected', JSON.stringify(rows));
  assert.ok(formBad.problems.some((p) => p.startsWith('name: missing_field')), JSON.stringify(formBad));
  const colour = await page.$eval('#rows tr.rejected', (tr) => getComputedStyle(tr).backgroundColor);
  assert.notEqual(colour, 'rgba(0, 0, 0, 0)', 'rejected rows are highlighted');

  fs.mkdirSync(artefacts, { recursive: true });
  const screenshot = path.join(artefacts, 'debugger.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);

  assert.deepEqual(elsewhere, [], 'the page loads nothing from elsewhere');
  assert.deepEqual(pageErrors, []);
});
