'use strict';
// A worker of an rcluster host in bench/hosts.js: counts the broadcasts it gets and tells its
// primary when it has them all; the one told to send broadcasts them, yielding every 256 sends.
const rcluster = require('..');

const { messenger } = rcluster;
const COUNT = Number(process.env.BENCH_HOSTS_COUNT);
const SIZE = Number(process.env.BENCH_HOSTS_SIZE);
const now = () => performance.timeOrigin + performance.now();

let count = 0;
messenger.on('reset', () => (count = 0));
messenger.on('b', () => {
  count += 1;
  if (count === COUNT) messenger.sendTo('primary', 'counted', now());
});
messenger.on('error', (error) => {
  console.error(`bench: ${error.code}: ${error.message}`);
  process.exit(1);
});
messenger.on('send', async () => {
  const data = 'x'.repeat(SIZE);
  const started = now();
  for (let i = 1; i <= COUNT; i++) {
    try {
      messenger.broadcast('b', data);
    } catch (error) {
      if (error.code !== 'ERR_RCLUSTER_QUEUE_FULL') throw error;
      await messenger.drained();
      i -= 1;
      continue;
    }
    if (i % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  messenger.sendTo('primary', 'sent', started);
});
rcluster.ready();
