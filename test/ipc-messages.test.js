'use strict';

// Node's IPC messages between the Rust primary and its workers: worker.send() and
// process.send(), in both directions. (rcluster's own messenger is messenger.test.js.)

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
