// What the browser tests share: Chromium, a local server for the test pages, and the
// visit they make. The pages load the built SDK (npm run build) as a person's site would:
// the first with a script tag, the second as an ES module.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const DIST = new URL('../../dist/', import.meta.url);

/** Headless Debian Chromium (never a downloaded browser); CHROMIUM_PATH overrides. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * Serves the test pages on 127.0.0.1 (an ephemeral port unless `port` is given), with the
 * SDK configured for `endpoint` and `key` (and any other `options`, e.g. `consent`). Resolves
 * to {origin, close}.
 */
export async function servePages({ endpoint, key, port = 0, options = {} }) {
  const config = JSON.stringify({ endpoint, key, maxBatch: 3, flushIntervalMs: 10 * 60 * 1000, ...options });
  const setup = `window.errors = []; const options = { ...${config}, onError: (e) => errors.push(e) };`;
  const home = `<!doctype html><meta charset="utf-8"><title>Home</title>
<script src="/the-eye.min.js"></script>
<script>${setup} window.tracker = TheEye.init(options);</script>
<button id="buy" onclick="TheEye.track('ui', 'click', { button: 'buy' })">Buy</button>
<a id="spa" href="/spa/cart" onclick="event.preventDefault(); history.pushState({}, '', this.href)">Cart</a>
<a id="next" href="/page2.html?utm_source=home">Page 2</a>`;
  const page2 = `<!doctype html><meta charset="utf-8"><title>Page 2</title>
<script type="module">
  import { init, track } from '/the-eye.min.mjs';
  ${setup} window.tracker = init(options);
  document.getElementById('checkout').onclick = () => track('ui', 'click', { button: 'checkout' });
</script>
<button id="checkout">Checkout</button>`;
  const files = {
    '/': ['text/html', home],
    '/spa/cart': ['text/html', home],
    '/page2.html': ['text/html', page2],
    '/the-eye.min.js': ['text/javascript', await readFile(new URL('the-eye.min.js', DIST))],
    '/the-eye.min.mjs': ['text/javascript', await readFile(new URL('the-eye.min.mjs', DIST))],
  };
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://page').pathname;
    if (path === '/favicon.ico') return res.writeHead(204).end();
    const file = files[path];
    res.writeHead(file ? 200 : 404, { 'Content-Type': file ? file[0] : 'text/plain', 'Cache-Control': 'no-store' });
    res.end(file ? file[1] : 'not found');
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * The visit: load the home page, click, move with pushState and back (popstate), follow a
 * link to a second page (a real navigation), click there, close the page. With maxBatch 3
 * the first three events travel by fetch, the rest by beacon on pagehide.
 * Resolves to the session id the pages used and anything that went wrong in them.
 */
export async function visit(browser, origin) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  // CORS refusals and failed requests show up here, not as exceptions.
  page.on('console', (message) => message.type() === 'error' && pageErrors.push(message.text()));
  // At a person's pace: The Eye corrects each request's timestamps by its own clock, and
  // events a few milliseconds apart in different requests could swap places there.
  const step = () => page.waitForTimeout(250);
  await page.goto(origin + '/');
  await step();
  await page.click('#buy');
  await step();
  await page.click('#spa');
  await page.waitForURL(origin + '/spa/cart');
  await step();
  await page.goBack();
  await page.waitForURL(origin + '/');
  await step();
  await page.click('#next');
  await page.waitForURL(origin + '/page2.html?utm_source=home');
  await page.waitForFunction(() => window.tracker);
  await step();
  await page.click('#checkout');
  const sessionId = await page.evaluate(() => window.tracker.sessionId());
  const sdkErrors = await page.evaluate(() => window.errors);
  await page.close(); // fires pagehide: the SDK beacons what is left
  return { sessionId, pageErrors, sdkErrors };
}

/** The events the visit makes, in order: [category, name, data]. */
export function expectedEvents(origin) {
  const host = new URL(origin).host;
  return [
    ['page interaction', 'pageview', { host, path: '/', title: 'Home' }],
    ['ui', 'click', { button: 'buy' }],
    ['page interaction', 'pageview', { host, path: '/spa/cart', title: 'Home', referrer: origin + '/' }],
    ['page interaction', 'pageview', { host, path: '/', title: 'Home', referrer: origin + '/spa/cart' }],
    ['page interaction', 'pageview', { host, path: '/page2.html', title: 'Page 2', referrer: origin + '/', query: 'utm_source=home' }],
    ['ui', 'click', { button: 'checkout' }],
  ];
}
