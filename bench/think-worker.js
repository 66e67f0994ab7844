'use strict';
// A worker of the messenger bench using think-cluster's messenger (ThinkJS), over Node's cluster.
const cluster = require('node:cluster');
const { messenger } = require('think-cluster');

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
      const latencies = [];
      // Round trips before the measured ones, not counted: JIT warm-up (as for every contender).
      for (let i = 0; i < message.count / 10; i++) await messenger.map('ping');
      for (let i = 0; i < message.count; i++) {
        const start = process.hrtime.bigint();
        await messenger.map('ping');
        latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
      }
      process.send({ type: 'latencies', latencies });
      return;
    }
    default:
  }
});
