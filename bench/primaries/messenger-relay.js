'use strict';
// Node's cluster with a process.send relay, as ThinkJS and Egg.js do it: the same scenarios.
// With argv[3] = 'think', the relay is think-cluster's own messenger (ThinkJS).
const cluster = require('node:cluster');
const path = require('node:path');

const { workers: count, scenarios } = JSON.parse(process.argv[2]);
const think = process.argv[3] === 'think';
// think-cluster's messenger relays in the primary once loaded there.
if (think) require('think-cluster');
cluster.setupPrimary({ exec: path.join(__dirname, '..', think ? 'think-worker.js' : 'relay-worker.js') });
// BENCH_WORKERS: how many answers a map waits for.
const workers = Array.from({ length: count }, () => cluster.fork({ BENCH_WORKERS: String(count) }));
let waiter = null;

cluster.on('message', (worker, message) => {
  switch (message.type) {
    case 'broadcast':
    case 'map':
      if (!think) for (const w of workers) w.send(message);
      return;
    case 'map-reply':
      if (!think) cluster.workers[message.to].send(message);
      return;
    default:
      if (waiter) waiter(message);
  }
});

function collect(type, wanted) {
  return new Promise((resolve) => {
    const got = [];
    waiter = (message) => {
      if (message.type !== type) return;
      got.push(message);
      if (got.length === wanted) {
        waiter = null;
        resolve(got);
      }
    };
  });
}

/** One sender broadcasts `s.count` messages; resolves with the seconds until every worker had them all. */
async function broadcast(s) {
  const expecting = collect('expecting', count);
  for (const w of workers) w.send({ type: 'expect', count: s.count });
  await expecting;
  const done = collect('done', count);
  const start = process.hrtime.bigint();
  workers[0].send({ type: 'run-broadcast', ...s });
  await done;
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function main() {
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
  const results = [];
  for (const s of scenarios) {
    if (s.kind === 'broadcast') {
      await broadcast({ ...s, count: Math.ceil(s.count / 10) });
      const seconds = await broadcast(s);
      results.push({ ...s, deliveriesPerSecond: (count * s.count) / seconds });
    } else {
      const reported = collect('map-results', 1);
      workers[0].send({ type: 'run-map', ...s });
      const { type, ...figures } = (await reported)[0];
      results.push({ ...s, ...figures });
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
  cluster.disconnect();
}
main();
