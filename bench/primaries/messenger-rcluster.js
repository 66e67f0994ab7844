'use strict';
// The rcluster side of the messenger bench: runs the scenarios of argv[2] (JSON), prints results.
const path = require('node:path');
const rcluster = require('../..');

const { workers, scenarios } = JSON.parse(process.argv[2]);
// A burst of hundreds of MiB is sent faster than the receivers read it: the largest
// maxMessageSize makes the per-receiver bound 1 GiB, as unbounded as the relay's buffers.
const cluster = rcluster.start({
  exec: path.join(__dirname, '..', 'messenger-worker.js'),
  workers,
  readiness: 'message',
  maxMessageSize: 512 * 1024 * 1024,
});

function waitFor(action, count) {
  return new Promise((resolve) => {
    const got = [];
    const handler = (data) => {
      got.push(data);
      if (got.length === count) {
        cluster.messenger.off(action, handler);
        resolve(got);
      }
    };
    cluster.messenger.on(action, handler);
  });
}

/** One sender broadcasts `s.count` messages; resolves with the seconds until every worker had them all. */
async function broadcast(sender, s) {
  await cluster.messenger.map('expect', s.count);
  const done = waitFor('done', workers);
  const start = process.hrtime.bigint();
  cluster.messenger.sendTo(sender.id, 'run-broadcast', s);
  await done;
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function main() {
  await cluster.ready;
  const [sender] = Object.values(cluster.workers);
  const results = [];
  for (const s of scenarios) {
    if (s.kind === 'broadcast') {
      await broadcast(sender, { ...s, count: Math.ceil(s.count / 10) });
      const seconds = await broadcast(sender, s);
      results.push({ ...s, deliveriesPerSecond: (workers * s.count) / seconds });
    } else {
      const reported = waitFor('map-results', 1);
      cluster.messenger.sendTo(sender.id, 'run-map', s);
      results.push({ ...s, ...(await reported)[0] });
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
  await cluster.stop();
}
main();
