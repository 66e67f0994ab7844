'use strict';

// A Worker of rcluster.start(): worker.disconnect() and a worker that disconnects itself,
// worker.kill(); its state and exitedAfterDisconnect along the way.

const test = require('node:test');
const assert = require('node:assert');
const { fixture, once, startCluster } = require('./helpers');

test('worker.disconnect(): the worker exits after disconnect, exitedAfterDisconnect is true, its slot is refilled', async (t) => {
  const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 1 });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  const order = [];
  worker.on('disconnect', () => order.push('disconnect'));
  worker.on('exit', () => order.push('exit'));
  const exited = once(cluster, 'exit');
  const refilled = once(cluster, 'listening');
  assert.strictEqual(worker.disconnect(), worker);
  const [, code, signal] = await exited;
  assert.deepStrictEqual([code, signal], [0, null]);
  assert.deepStrictEqual(order, ['disconnect', 'exit']);
  assert.strictEqual(worker.exitedAfterDisconnect, true);
  assert.strictEqual(worker.state, 'dead');
  assert.ok(worker.isDead());
  assert.ok(!worker.isConnected());
  const [replacement] = await refilled;
  assert.notStrictEqual(replacement.id, worker.id);
});

test('a worker that disconnects itself: exitedAfterDisconnect is true', async (t) => {
  const cluster = startCluster(t, { exec: fixture('echo-worker.js'), workers: 1, readiness: 'online' });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  const exited = once(worker, 'exit');
  worker.send('disconnect-yourself');
  const [code] = await exited;
  assert.strictEqual(code, 0);
  assert.strictEqual(worker.exitedAfterDisconnect, true);
});

test('worker.kill() signals the worker; an unknown signal is a TypeError', async (t) => {
  const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 1 });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  assert.throws(() => worker.kill('SIGNOPE'), (e) => e instanceof TypeError && e.code === 'ERR_UNKNOWN_SIGNAL');
  const exited = once(worker, 'exit');
  worker.kill('SIGTERM');
  const [code, signal] = await exited;
  assert.deepStrictEqual([code, signal], [null, 'SIGTERM']);
});
