// What the Chromium tests deliver to: a fake receiver on another port that answers like The
// Eye (CORS for any origin, 202 with per-event results) and records every request.
import http from 'node:http';

// Answers like The Eye: CORS for any origin, 202 with per-event results; records requests.
export async function fakeReceiver() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const cors = { 'Access-Control-Allow-Origin': req.headers.origin || '*', Vary: 'Origin' };
    if (req.method === 'OPTIONS') {
      requests.push({ method: 'OPTIONS', path: req.url, headers: req.headers });
      res.writeHead(204, {
        ...cors,
        'Access-Control-Allow-Methods': 'POST',
        'Access-Control-Allow-Headers': 'authorization, content-type, prefer',
      });
      return res.end();
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://receiver');
      const events = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      requests.push({ method: req.method, path: url.pathname, query: url.searchParams, headers: req.headers, events });
      res.writeHead(202, { ...cors, 'Content-Type': 'application/json' });
      res.end(JSON.stringify({
        accepted: events.length,
        rejected: 0,
        results: events.map((e, index) => ({ status: 'accepted', index, event_id: e.event_id })),
      }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

export async function until(condition, ms, what) {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
