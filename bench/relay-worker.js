'use strict';
// A worker of the messenger bench under Node's cluster: the process.send relay that ThinkJS and
// Egg.js use (worker -> primary -> every worker).
const cluster = require('node:cluster');
const { runMaps } = require('./map-runs');

/** A sender yields to its event loop every this many sends, as any real one does. */
const YIELD_EVERY = 256;
/** A map waits for an answer from each. */
const WORKERS = Number(process.env.BENCH_WORKERS);

let expected = 0;
let received = 0;
const waiting = new Map();
let nextId = 1;

function map(action) {
  const id = nextId++;
  return new Promise((resolve) => {
    waiting.set(id, { replies: [], resolve });
    process.send({ type: 'map', id, action, from: cluster.worker.id });
  });
}

process.on('message', async (message) => {
  switch (message.type) {
    case 'broadcast':
      if (message.action !== 'bench') return;
      received += 1;
      if (received === expected) process.send({ type: 'done', id: cluster.worker.id });
      return;
    case 'expect':
      expected = message.count;
      received = 0;
      process.send({ type: 'expecting', id: cluster.worker.id });
      return;
    case 'map':
      process.send({ type: 'map-reply', id: message.id, to: message.from, value: 'pong' });
      return;
    case 'map-reply': {
      const entry = waiting.get(message.id);
      entry.replies.push(message.value);
      if (entry.replies.length === WORKERS) {
        waiting.delete(message.id);
        entry.resolve(entry.replies);
      }
      return;
    }
    case 'run-broadcast': {
      const { size, count, binary } = message;
      const data = binary ? Buffer.alloc(size, 97) : 'a'.repeat(size);
      for (let i = 0; i < count; i++) {
        process.send({ type: 'broadcast', action: 'bench', data });
        // A real sender yields to its event loop now and then: Node's IPC writes meanwhile.
        if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((resolve) => setImmediate(resolve));
      }
      return;
    }
    case 'run-map': {
      const results = await runMaps(message, () => map('ping'));
      process.send({ type: 'map-results', ...results });
      return;
    }
    default:
  }
});
