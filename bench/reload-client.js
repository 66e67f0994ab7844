'use strict';
// The reload bench's load: `KEEP_ALIVE` clients on one keep-alive connection each and `FRESH`
// clients on a new connection per request, each sending its next request as soon as the last
// one is answered. On 'stop' it sends back what happened, requests slower than SLOW_MS with
// their start time, so that the bench can find the worst latency inside each reload.
const http = require('node:http');

const port = Number(process.env.PORT);
const slowMs = Number(process.env.SLOW_MS || 5);
const kinds = { keepAlive: Number(process.env.KEEP_ALIVE || 4), fresh: Number(process.env.FRESH || 4) };
const report = {};
let running = true;

function client(kind, agent) {
  const stats = report[kind];
  return new Promise((done) => {
    const next = () => {
      if (!running) return done();
      const start = Date.now();
      const settle = (error) => {
        const latency = Date.now() - start;
        if (error) stats.failures[error.code || error.message] = (stats.failures[error.code || error.message] || 0) + 1;
        else stats.ok += 1;
        if (latency >= slowMs) stats.slow.push([start, latency]);
        setImmediate(next);
      };
      const req = http.get({ host: '127.0.0.1', port, agent, timeout: 10_000 }, (res) => {
        res.resume();
        res.on('end', () => settle(res.statusCode === 200 ? null : { code: `HTTP ${res.statusCode}` }));
        res.on('error', settle);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      req.on('error', settle);
    };
    next();
  });
}

const clients = [];
for (const [kind, count] of Object.entries(kinds)) {
  report[kind] = { ok: 0, failures: {}, slow: [] };
  const agent = kind === 'keepAlive' ? new http.Agent({ keepAlive: true, maxSockets: count }) : false;
  for (let i = 0; i < count; i += 1) clients.push(client(kind, agent));
}
process.send('started');
process.on('message', async (message) => {
  if (message !== 'stop') return;
  running = false;
  await Promise.all(clients);
  process.send(report, () => process.exit(0));
});
