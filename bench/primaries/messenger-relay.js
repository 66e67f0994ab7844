'use strict';
// Node's cluster with a process.send relay, as ThinkJS and Egg.js do it: the same scenarios.
// With argv[3] = 'think', the relay is think-cluster's own messenger (ThinkJS).
const cluster = require('node:cluster');
const path = require('node:path');

const scenarios = JSON.parse(process.argv[2]);
const think = process.argv[3] === 'think';
// think-cluster's messenger relays in the primary once loaded there.
if (think) require('think-cluster');
cluster.setupPrimary({ exec: path.join(__dirname, '..', think ? 'think-worker.js' : 'relay-worker.js') });
const workers = [cluster.fork(), cluster.fork()];
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

function collect(type, count) {
  return new Promise((resolve) => {
    const got = [];
    waiter = (message) => {
      if (message.type !== type) return;
      got.push(message);
      if (got.length === count) {
        waiter = null;
        resolve(got);
      }
    };
  });
}

async function main() {
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
  const results = [];
  for (const s of scenarios) {
    if (s.kind === 'broadcast') {
      const expecting = collect('expecting', 2);
      for (const w of workers) w.send({ type: 'expect', count: s.count });
      await expecting;
      const done = collect('done', 2);
      const start = process.hrtime.bigint();
      workers[0].send({ type: 'run-broadcast', ...s });
      await done;
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      results.push({ ...s, deliveriesPerSecond: (2 * s.count) / seconds });
    } else {
      const latencies = collect('latencies', 1);
      workers[0].send({ type: 'run-map', ...s });
      results.push({ ...s, latencies: (await latencies)[0].latencies });
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
  cluster.disconnect();
}
main();
