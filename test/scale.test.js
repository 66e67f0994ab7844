'use strict';

// Scaling: cluster.scale(n) adds and removes app workers while real HTTP traffic flows. (The
// CLI's SIGTTIN and SIGTTOU are cli.test.js.)

const test = require('node:test');
const assert = require('node:assert');
const { until, steadyLoad, startVersionedApp, appWorkers } = require('./helpers');

test('scale() adds and removes workers while traffic flows', async (t) => {
  const { cluster, port } = await startVersionedApp(t, { workers: 1 });
  // New connections, so that new workers get some.
  const traffic = steadyLoad(port, { connections: 3, keepAlive: false });
  t.after(() => traffic.stop());
  assert.strictEqual(await cluster.scale(3), 3);
  assert.strictEqual(appWorkers(cluster).length, 3);
  const pids = appWorkers(cluster).map((w) => String(w.pid));
  await until(() => pids.every((pid) => traffic.bodies.some((b) => b.endsWith(`:${pid}`))), 10_000, 'every worker to serve');
  assert.strictEqual(await cluster.scale(1), 1);
  assert.strictEqual(Object.values(cluster.workers).filter((w) => w.kind === 'app').length, 1, 'the removed workers have exited');
  const served = traffic.bodies.length;
  await until(() => traffic.bodies.length > served + 100, 10_000, 'traffic after scaling down');
  const { failures } = await traffic.stop();
  assert.deepStrictEqual(failures.map(String), []);
});

test('scale() with a bad count is an error', async (t) => {
  const { cluster } = await startVersionedApp(t, { workers: 1 });
  await assert.rejects(cluster.scale(-1), { code: 'ERR_RCLUSTER_INVALID_OPTION' });
});
