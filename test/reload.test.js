'use strict';

// Rolling reload: real HTTP load against real workers while they are replaced. (Scaling is
// scale.test.js; the agent's reload, agent.test.js; the CLI's SIGHUP, cli.test.js.)

const test = require('node:test');
const assert = require('node:assert');
const { fixture, once, until, startCluster, get, steadyLoad, release, startVersionedApp, appWorkers } = require('./helpers');

for (const schedule of ['shared', 'reuseport']) {
  test(`a reload under load fails no request, with keep-alive and new-connection clients (${schedule})`, async (t) => {
    const { cluster, port, deploy } = await startVersionedApp(t, { schedule });
    const before = appWorkers(cluster).map((w) => w.pid);
    const keepAlive = steadyLoad(port, { connections: 4, keepAlive: true });
    const fresh = steadyLoad(port, { connections: 4, keepAlive: false });
    t.after(() => Promise.all([keepAlive.stop(), fresh.stop()]));
    await until(() => keepAlive.bodies.length > 100 && fresh.bodies.length > 100, 10_000, 'traffic');
    for (const version of ['v2', 'v3']) {
      deploy(version);
      const result = await cluster.reload();
      assert.deepStrictEqual({ replaced: result.replaced, workers: result.workers }, { replaced: 2, workers: 2 });
      const served = keepAlive.bodies.length + fresh.bodies.length;
      await until(() => keepAlive.bodies.length + fresh.bodies.length > served + 200, 10_000, 'traffic after the reload');
    }
    const [kept, made] = await Promise.all([keepAlive.stop(), fresh.stop()]);
    assert.deepStrictEqual(kept.failures.map(String), [], 'keep-alive clients saw failures');
    assert.deepStrictEqual(made.failures.map(String), [], 'new-connection clients saw failures');
    const after = appWorkers(cluster).map((w) => w.pid);
    assert.strictEqual(after.length, 2);
    for (const pid of after) assert.ok(!before.includes(pid), 'every worker was replaced');
    const last = [...kept.bodies.slice(-20), ...made.bodies.slice(-20)];
    assert.ok(last.every((body) => body.startsWith('v3:')), `old code still serving: ${last}`);
  });
}

test('a reload to a version that crashes at boot is aborted and the old workers keep serving', async (t) => {
  const { cluster, port, deploy } = await startVersionedApp(t);
  const before = appWorkers(cluster).map((w) => w.pid).sort();
  const traffic = steadyLoad(port, { connections: 2, keepAlive: false });
  t.after(() => traffic.stop());
  deploy('crash');
  await assert.rejects(cluster.reload(), (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_RELOAD_ABORTED');
    assert.match(error.message, /exited with code 3 before it was ready/);
    assert.match(error.message, /0 of 2 workers were replaced/);
    return true;
  });
  const served = traffic.bodies.length;
  await until(() => traffic.bodies.length > served + 50, 10_000, 'traffic after the abort');
  const { bodies, failures } = await traffic.stop();
  assert.deepStrictEqual(failures.map(String), []);
  assert.ok(bodies.every((b) => b.startsWith('v1:')));
  assert.deepStrictEqual(appWorkers(cluster).map((w) => w.pid).sort(), before);
  // The failed deploy cost no restart budget: the next good one goes through.
  deploy('v2');
  assert.strictEqual((await cluster.reload()).replaced, 2);
  assert.match((await get(port)).body, /^v2:/);
});

test('a reload to a version that never becomes ready is aborted after readyTimeout', async (t) => {
  const { cluster, port, deploy } = await startVersionedApp(t, { readyTimeout: 1500 });
  const before = appWorkers(cluster).map((w) => w.pid).sort();
  deploy('hang');
  const exits = [];
  cluster.on('exit', (w) => exits.push(w.pid));
  await assert.rejects(cluster.reload(), (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_RELOAD_ABORTED');
    assert.match(error.message, /was not ready 1500 ms after it started/);
    return true;
  });
  const { failures } = await (async () => {
    const traffic = steadyLoad(port, { connections: 2, keepAlive: true });
    await until(() => traffic.bodies.length > 50, 10_000, 'traffic');
    return traffic.stop();
  })();
  assert.deepStrictEqual(failures.map(String), []);
  assert.deepStrictEqual(appWorkers(cluster).map((w) => w.pid).sort(), before);
  await until(() => exits.length === 1, 10_000, 'the hung replacement to be gone');
  assert.ok(!before.includes(exits[0]));
});

test('reload calls made while a reload runs join it', async (t) => {
  const { cluster, deploy } = await startVersionedApp(t);
  deploy('v2');
  let forks = 0;
  cluster.on('fork', () => (forks += 1));
  const [a, b] = await Promise.all([cluster.reload(), cluster.reload()]);
  assert.deepStrictEqual(a, b);
  assert.strictEqual(forks, 2, 'one reload, not two');
});

test('a worker asks for a reload: rcluster.reload() and ThinkJS\'s message', async (t) => {
  const { cluster, port, deploy } = await startVersionedApp(t);
  for (const [route, version] of [['/reload', 'v2'], ['/think-reload', 'v3']]) {
    deploy(version);
    const reloaded = once(cluster, 'reloaded');
    const started = once(cluster, 'reload');
    await get(port, { path: route });
    const [{ trigger }] = await started;
    assert.match(trigger, /^worker \d+$/);
    const [{ replaced }] = await reloaded;
    assert.strictEqual(replaced, 2);
    assert.match((await get(port)).body, new RegExp(`^${version}:`));
  }
});

test('reload() before the cluster is up, or with a bad option, is an error', async (t) => {
  const { file } = release(t, 'v1');
  const cluster = startCluster(t, { exec: fixture('versioned-app.js'), workers: 1, env: { VERSION_FILE: file } });
  await assert.rejects(cluster.reload(), { code: 'ERR_RCLUSTER_NOT_RUNNING' });
  await cluster.ready;
  await assert.rejects(cluster.reload({ parallel: 0 }), { code: 'ERR_RCLUSTER_INVALID_OPTION' });
});

test('reload({ parallel: 2 }) starts both replacements before either old worker is asked to leave', async (t) => {
  const { cluster, deploy } = await startVersionedApp(t);
  deploy('v2');
  const old = appWorkers(cluster);
  const leavingAtFork = [];
  cluster.on('fork', () => leavingAtFork.push(old.filter((w) => w.exitedAfterDisconnect).length));
  assert.strictEqual((await cluster.reload({ parallel: 2 })).replaced, 2);
  assert.deepStrictEqual(leavingAtFork, [0, 0]);
});

test('replace(id): a new worker starts in that slot and the old one leaves once it is ready; coded errors otherwise', async (t) => {
  const { cluster, port, deploy } = await startVersionedApp(t);
  const traffic = steadyLoad(port, { connections: 2, keepAlive: true });
  t.after(() => traffic.stop());
  await until(() => traffic.bodies.length > 50, 10_000, 'traffic');
  const [first, second] = appWorkers(cluster).sort((a, b) => a.id - b.id);
  let reloadEvents = 0;
  cluster.on('reload', () => reloadEvents++);
  cluster.on('reloaded', () => reloadEvents++);
  deploy('v2');
  const order = [];
  cluster.on('fork', (w) => order.push(`fork ${w.id}`));
  cluster.on('exit', (w) => order.push(`exit ${w.id}`));
  const result = await cluster.replace(first.id);
  assert.strictEqual(result.replaced, first.id);
  const fresh = cluster.workers[result.id];
  assert.ok(fresh && fresh.id > second.id, `a new worker with a new id: ${JSON.stringify(result)}`);
  assert.strictEqual(order[0], `fork ${result.id}`);
  await until(() => order.includes(`exit ${first.id}`), 10_000, 'the old worker to exit');
  assert.ok(cluster.workers[second.id], 'the other worker was left alone');
  assert.strictEqual(reloadEvents, 0, 'no reload events for a replace');
  assert.match((await get(port)).body, /^v[12]:/);

  await assert.rejects(cluster.replace(first.id), { code: 'ERR_RCLUSTER_UNKNOWN_WORKER' });
  await assert.rejects(cluster.replace('x'), { code: 'ERR_RCLUSTER_UNKNOWN_WORKER' });
  deploy('crash');
  await assert.rejects(cluster.replace(second.id), (error) => error.code === 'ERR_RCLUSTER_RELOAD_ABORTED' && new RegExp(`worker ${second.id} keeps serving`).test(error.message));
  assert.ok(cluster.workers[second.id] && !cluster.workers[second.id].exitedAfterDisconnect, 'the worker whose replacement failed keeps serving');
  const { failures } = await traffic.stop();
  assert.deepStrictEqual(failures.map(String), [], 'clients saw failures');
  const stopping = cluster.stop();
  await assert.rejects(cluster.replace(second.id), { code: 'ERR_RCLUSTER_NOT_RUNNING' });
  await stopping;
});
