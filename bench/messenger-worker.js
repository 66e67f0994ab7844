'use strict';
// A worker of the messenger bench under rcluster: sends and counts what the primary asks for.
const rcluster = require('..');
const { messenger } = rcluster;
const { runMaps } = require('./map-runs');

let expected = 0;
let received = 0;
messenger.on('bench', () => {
  received += 1;
  if (received === expected) messenger.sendTo('primary', 'done', rcluster.worker.id);
});
messenger.on('expect', (count) => {
  expected = count;
  received = 0;
  return true;
});
messenger.on('ping', () => 'pong');
messenger.on('run-broadcast', async ({ size, count, binary }) => {
  const data = binary ? Buffer.alloc(size, 97) : 'a'.repeat(size);
  for (let i = 0; i < count; i++) {
    // A real sender yields to its event loop now and then, as the relay's does.
    if (i % 256 === 255) await new Promise((resolve) => setImmediate(resolve));
    try {
      messenger.broadcast('bench', data);
    } catch (error) {
      // Back-pressure: the write queue is full; send the same message again once it drained.
      if (error.code !== 'ERR_RCLUSTER_QUEUE_FULL') throw error;
      await messenger.drained();
      i -= 1;
    }
  }
});
messenger.on('run-map', async (scenario) => {
  messenger.sendTo('primary', 'map-results', await runMaps(scenario, () => messenger.map('ping')));
});
rcluster.ready();
