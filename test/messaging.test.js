'use strict';

// Node IPC between the Rust primary and its workers, and the disconnect flows.

const test = require('node:test');
const assert = require('node:assert');
const { fixture, once, until, alive, startCluster } = require('./helpers');

test('worker.send and process.send carry messages both ways', async (t) => {
  const cluster = startCluster(t, { exec: fixture('echo-worker.js'), workers: 2, readiness: 'online' });
  const hellos = new Map();
  cluster.on('message', (w, message) => {
    if (message.hello) hellos.set(w.id, message);
  });
  await cluster.ready;
  await until(() => hellos.size === 2, 5000, 'a hello from each worker');
  for (const [id, hello] of hellos) assert.deepStrictEqual(hello, { hello: id, isWorker: true });

  const [first] = Object.values(cluster.workers);
  assert.throws(() => first.send(undefined), { code: 'ERR_MISSING_ARGS' });
  assert.throws(() => first.send(() => {}), { code: 'ERR_INVALID_ARG_TYPE' });

  const payload = { text: 'héllo', list: [1, 2.5, null, true], nested: { deep: 'x'.repeat(100_000) } };
  for (const worker of Object.values(cluster.workers)) {
    const reply = once(worker, 'message');
    let sendError;
    const sent = new Promise((resolve) => worker.send(payload, (error) => resolve((sendError = error))));
    const [message] = await reply;
    await sent;
    assert.strictEqual(sendError, null);
    assert.deepStrictEqual(message, { echo: payload, id: worker.id });
  }
});

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

test('sending to a worker that has gone reports an error instead of throwing', async (t) => {
  const cluster = startCluster(t, { exec: fixture('echo-worker.js'), workers: 1, readiness: 'online' });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  const exited = once(worker, 'exit');
  worker.process.kill('SIGKILL');
  await exited;
  assert.ok(!alive(worker.pid));
  const error = await new Promise((resolve) => worker.send('anyone?', resolve));
  assert.strictEqual(error.code, 'ERR_IPC_CHANNEL_CLOSED');
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
