'use strict';

// Node's IPC messages between the Rust primary and its workers: worker.send() and
// process.send(), in both directions. (rcluster's own messenger is messenger.test.js.)

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { fixture, once, until, alive, startCluster, spawnNode, waitForOutput } = require('./helpers');

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

test('log4js in a worker: the logging events it sends to the master are written on the primary\'s stdout, one line each', async (t) => {
  const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');
  const cli = spawnNode(t, [bin, 'start', fixture('log4js-worker.js'), '-i', '2']);
  // log4js's basic layout, in local time.
  const local = (() => {
    const d = new Date('2024-05-01T10:00:00.000Z');
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.000`;
  })();
  for (const id of [1, 2]) await waitForOutput(cli, new RegExp(`^\\[${local}\\] \\[INFO\\] app - hello world from ${id}$`, 'm'));
  await waitForOutput(cli, /^\[.*\] \[ERROR\] legacy - old format$/m);
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});
