'use strict';

// Workers alive but useless: an uncaught exception, a blocked event loop, a memory leak. Each is
// replaced, and the requests the old worker was serving still complete where that is possible.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, once, until, alive, startCluster, readyPort, get, spawnNode, waitForOutput } = require('./helpers');

function versionFile(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-watchdog-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'VERSION');
  fs.writeFileSync(file, 'v1');
  return file;
}

async function startApp(t, options = {}) {
  const cluster = startCluster(t, { exec: fixture('versioned-app.js'), workers: 1, env: { VERSION_FILE: versionFile(t) }, ...options });
  const warnings = [];
  cluster.on('warning', (w) => warnings.push(w));
  const port = await readyPort(cluster);
  const [first] = Object.values(cluster.workers);
  return { cluster, port, warnings, first };
}

test('an uncaught exception: the replacement starts at once, the requests in flight complete', async (t) => {
  const { cluster, port, warnings, first } = await startApp(t);
  const order = [];
  cluster.on('fork', (w) => order.push(`fork ${w.id}`));
  cluster.on('exit', (w, code) => order.push(`exit ${w.id} ${code}`));
  const slow = Array.from({ length: 4 }, () => get(port, { path: '/slow?ms=800' }));
  // The slow requests have reached the worker before it throws.
  await new Promise((resolve) => setTimeout(resolve, 100));
  await get(port, { path: '/throw' });
  const results = await Promise.all(slow);
  for (const r of results) assert.strictEqual(r.body, `v1:${first.pid}`);
  await until(() => order.includes(`exit ${first.id} 1`), 10_000, 'the old worker to exit');
  const forked = order.findIndex((e) => e.startsWith('fork'));
  assert.ok(forked !== -1 && forked < order.indexOf(`exit ${first.id} 1`), `replacement started after the exit: ${order}`);
  const warning = warnings.find((w) => w.code === 'ERR_RCLUSTER_UNCAUGHT_EXCEPTION');
  assert.ok(warning, 'a warning names the failure');
  assert.match(warning.message, new RegExp(`worker ${first.id} \\(pid ${first.pid}\\).*boom from a timer`));
  assert.match((await get(port)).body, /^v1:/);
});

test('a worker that disconnects itself is replaced at once, let go, killed after killTimeout, never called unresponsive', async (t) => {
  const { cluster, port, warnings, first } = await startApp(t, { killTimeout: 1500, heartbeatInterval: 100, heartbeatTimeout: 600 });
  const order = [];
  cluster.on('fork', (w) => order.push(`fork ${w.id}`));
  cluster.on('exit', (w, code, signal) => order.push(`exit ${w.id} ${signal}`));
  const asked = Date.now();
  await get(port, { path: '/disconnect' });
  await until(() => order.some((e) => e.startsWith('fork')), 3000, 'the replacement');
  assert.ok(Date.now() - asked < 3000);
  assert.ok(alive(first.pid), 'the old worker serves on for now');
  const warning = warnings.find((w) => w.code === 'ERR_RCLUSTER_WORKER_DISCONNECTED');
  assert.ok(warning, `a warning says why: ${warnings.map((w) => w.code)}`);
  assert.strictEqual(warning.workerId, first.id);
  assert.match(warning.message, new RegExp(`worker ${first.id} \\(pid ${first.pid}\\) disconnected itself`));
  await until(() => order.includes(`exit ${first.id} SIGKILL`), 10_000, 'the old worker to be killed after killTimeout');
  assert.deepStrictEqual(warnings.map((w) => w.code), ['ERR_RCLUSTER_WORKER_DISCONNECTED']);
  assert.strictEqual(cluster.restarts, 1);
  assert.match((await get(port)).body, /^v1:/);
  assert.strictEqual(Object.keys(cluster.workers).length, 1);
});

test('the uncaught exception is logged with the worker id and pid', async (t) => {
  const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');
  const env = { ...process.env, VERSION_FILE: versionFile(t) };
  const primary = spawnNode(t, [bin, 'start', fixture('versioned-app.js'), '-i', '1'], { env });
  const [, port] = await waitForOutput(primary, /listening on \*:(\d+)/);
  const [, pid] = /:(\d+)$/.exec((await get(Number(port))).body);
  await get(Number(port), { path: '/throw' });
  await waitForOutput(primary, new RegExp(`worker \\d+ \\(pid ${pid}\\) threw an uncaught exception:\\n.*boom from a timer`));
});

test('an app with its own uncaughtException handler keeps its own behaviour', async (t) => {
  const { cluster, port, first } = await startApp(t, { execArgv: ['--require', fixture('keep-alive-on-error.js')] });
  await get(port, { path: '/throw' });
  // The handler logged the error and the worker goes on serving.
  for (let i = 0; i < 5; i += 1) assert.strictEqual((await get(port)).body, `v1:${first.pid}`);
  assert.ok(cluster.workers[first.id]);
});

test('a blocked event loop is killed and replaced within the heartbeat timeout plus 1 s', async (t) => {
  const heartbeatTimeout = 1500;
  const { cluster, port, warnings, first } = await startApp(t, { heartbeatInterval: 200, heartbeatTimeout });
  const replaced = once(cluster, 'fork', 10_000);
  await get(port, { path: '/block' });
  const blockedAt = Date.now();
  await replaced;
  const after = Date.now() - blockedAt;
  assert.ok(after < heartbeatTimeout + 1000, `replaced after ${after} ms`);
  const warning = warnings.find((w) => w.code === 'ERR_RCLUSTER_UNRESPONSIVE');
  assert.ok(warning);
  assert.match(warning.message, new RegExp(`worker ${first.id} \\(pid ${first.pid}\\) is unresponsive`));
  await until(() => !alive(first.pid), 5000, 'the blocked worker to be killed');
  await once(cluster, 'listening');
  assert.match((await get(port)).body, /^v1:/);
});

test('without the child runtime there are no heartbeats to miss', async (t) => {
  const { cluster, port, first } = await startApp(t, { childRuntime: false, heartbeatInterval: 100, heartbeatTimeout: 300 });
  // Long enough for several missed heartbeats, had any been expected.
  await get(port, { path: '/slow?ms=1000' });
  assert.strictEqual(Object.values(cluster.workers)[0].pid, first.pid);
});

test('a worker that grows past maxMemory is replaced gracefully', async (t) => {
  const { cluster, port, warnings, first } = await startApp(t, { maxMemory: '150M' });
  const exited = once(cluster, 'exit');
  const listening = once(cluster, 'listening');
  await get(port, { path: '/grow?mb=200' });
  const [newcomer] = await listening;
  assert.notStrictEqual(newcomer.pid, first.pid);
  const [gone] = await exited;
  assert.strictEqual(gone.pid, first.pid);
  assert.strictEqual(gone.exitedAfterDisconnect, true, 'asked to leave, not killed');
  const warning = warnings.find((w) => w.code === 'ERR_RCLUSTER_MEMORY_LIMIT');
  assert.match(warning.message, /over maxMemory \(150 MiB\)/);
});

test('a ready worker that hangs is replaced however often: the restart budget is for boot failures', async (t) => {
  const { cluster, port } = await startApp(t, { maxRestarts: 1, heartbeatInterval: 100, heartbeatTimeout: 500 });
  const errors = [];
  cluster.on('error', (e) => errors.push(e));
  for (let i = 1; i <= 3; i++) {
    const replaced = once(cluster, 'listening', 15_000);
    await get(port, { path: '/block' }).catch(() => {});
    await replaced;
    assert.strictEqual(cluster.restarts, i);
  }
  assert.deepStrictEqual(errors, []);
});

test('bad watchdog options are refused before anything starts', () => {
  const rcluster = require('..');
  const exec = fixture('versioned-app.js');
  for (const options of [{ maxMemory: 'lots' }, { heartbeatInterval: 1000, heartbeatTimeout: 500 }, { childRuntime: 'yes' }, { reloadParallel: 0 }]) {
    assert.throws(() => rcluster.start({ exec, ...options }), { code: 'ERR_RCLUSTER_INVALID_OPTION' }, JSON.stringify(options));
  }
});
