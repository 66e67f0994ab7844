'use strict';
// Node's cluster with a process.send relay, as ThinkJS and Egg.js do it: the same scenarios.
const cluster = require('node:cluster');
const path = require('node:path');

const scenarios = JSON.parse(process.argv[2]);
cluster.setupPrimary({ exec: path.join(__dirname, '..', 'relay-worker.js') });
const workers = [cluster.fork(), cluster.fork()];
let waiter = null;

cluster.on('message', (worker, message) => {
  switch (message.type) {
    case 'broadcast':
      for (const w of workers) w.send(message);
      return;
    case 'map':
      for (const w of workers) w.send(message);
      return;
    case 'map-reply':
      cluster.workers[message.to].send(message);
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
