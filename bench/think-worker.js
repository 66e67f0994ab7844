'use strict';
// A worker of the messenger bench using think-cluster's messenger (ThinkJS), over Node's cluster.
const cluster = require('node:cluster');
const { messenger } = require('think-cluster');
const { runMaps } = require('./map-runs');

let expected = 0;
let received = 0;
messenger.on('bench', () => {
  received += 1;
  if (received === expected) process.send({ type: 'done', id: cluster.worker.id });
});
messenger.on('ping', () => 'pong');

process.on('message', async (message) => {
  switch (message.type) {
    case 'expect':
      expected = message.count;
      received = 0;
      process.send({ type: 'expecting', id: cluster.worker.id });
      return;
    case 'run-broadcast': {
      const { size, count, binary } = message;
      const data = binary ? Buffer.alloc(size, 97) : 'a'.repeat(size);
      for (let i = 0; i < count; i++) messenger.broadcast('bench', data);
      return;
    }
    case 'run-map': {
      const results = await runMaps(message, () => messenger.map('ping'));
      process.send({ type: 'map-results', ...results });
      return;
    }
    default:
  }
});
