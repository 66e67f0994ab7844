'use strict';

// rcluster.start(): shared ports, replacement of dead workers, the restart budget, stopping.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, once, until, alive, startCluster, readyPort, get, load, spawnNode, waitForOutput } = require('./helpers');

test('every worker of a shared port is reached', async (t) => {
  const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 3, env: { BUSY_MS: 20 } });
  const port = await readyPort(cluster);
  const pids = Object.values(cluster.workers).map((w) => String(w.pid));
  assert.strictEqual(pids.length, 3);
  const { bodies, errors } = await load(port, { count: 150, concurrency: 6 });
  assert.deepStrictEqual(errors, []);
  for (const pid of pids) assert.ok(bodies.includes(pid), `worker ${pid} served none of 150 requests`);
});

test('reuseport spreads connections over the workers', async (t) => {
  const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 2, schedule: 'reuseport' });
  const port = await readyPort(cluster);
  const { bodies, errors } = await load(port, { count: 400, concurrency: 4 });
  assert.deepStrictEqual(errors, []);
  const counts = Object.values(cluster.workers).map((w) => bodies.filter((b) => b === String(w.pid)).length);
  for (const count of counts) assert.ok(count >= 400 * 0.2, `uneven spread: ${counts}`);
});

for (const schedule of ['shared', 'reuseport']) {
  test(`a worker SIGKILLed under load is replaced and no connection is refused (${schedule})`, async (t) => {
    const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 2, schedule });
    const port = await readyPort(cluster);
    const victim = Object.values(cluster.workers)[0];
    let stop = false;
    const failures = [];
    let served = 0;
    const clients = Array.from({ length: 4 }, async () => {
      while (!stop) {
        try {
          await get(port);
          served += 1;
        } catch (error) {
          failures.push(error);
        }
      }
    });
    await until(() => served >= 100, 10_000, 'traffic');
    const replaced = once(cluster, 'listening');
    victim.process.kill('SIGKILL');
    const [replacement] = await replaced;
    const servedAtReplacement = served;
    await until(() => served >= servedAtReplacement + 200, 10_000, 'traffic after the replacement');
    stop = true;
    await Promise.all(clients);
    assert.notStrictEqual(replacement.pid, victim.pid);
    assert.strictEqual(replacement.slot, victim.slot, 'the replacement takes the dead worker\'s slot');
    const refused = failures.filter((e) => e.code === 'ECONNREFUSED');
    assert.deepStrictEqual(refused, [], 'a connection was refused');
    // Requests in flight inside the killed worker die with it; only those may fail.
    assert.ok(failures.every((e) => e.code === 'ECONNRESET' || /socket hang up/.test(e.message)), String(failures));
    assert.ok(failures.length <= 4, `${failures.length} failed requests, more than were in flight`);
  });
}

test('a script that dies at boot spends the restart budget, then the cluster gives up', async (t) => {
  const cluster = startCluster(t, {
    exec: fixture('exit-at-boot.js'),
    workers: 2,
    maxRestarts: 3,
    restartDelay: 10,
  });
  let forks = 0;
  cluster.on('fork', () => (forks += 1));
  const failed = once(cluster, 'error');
  await assert.rejects(cluster.ready, (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_RESTART_BUDGET');
    assert.match(error.message, /exit-at-boot\.js/);
    assert.deepStrictEqual(error.details.exitCodes, [3, 3, 3, 3]);
    return true;
  });
  await failed;
  await cluster.stop(); // resolves once the cluster has stopped itself
  // Each slot: the first start and at most maxRestarts restarts.
  assert.ok(forks <= 2 * (1 + 3), `${forks} forks`);
  assert.deepStrictEqual(cluster.workers, {});
});

test('stop() disconnects every worker and resolves when all have exited', async (t) => {
  const cluster = startCluster(t, { exec: fixture('http-worker.js'), workers: 2 });
  await cluster.ready;
  const workers = Object.values(cluster.workers);
  const exits = [];
  cluster.on('exit', (w, code, signal) => exits.push({ id: w.id, code, signal, afterDisconnect: w.exitedAfterDisconnect }));
  await cluster.stop();
  assert.deepStrictEqual(exits.map((e) => [e.code, e.signal, e.afterDisconnect]), [[0, null, true], [0, null, true]]);
  for (const w of workers) assert.ok(!alive(w.pid), `worker ${w.pid} still alive`);
  assert.deepStrictEqual(cluster.workers, {});
});

test('stop() SIGKILLs a worker that ignores the disconnect after killTimeout', async (t) => {
  const cluster = startCluster(t, { exec: fixture('stubborn-worker.js'), workers: 1, killTimeout: 300 });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  const exited = once(cluster, 'exit');
  await cluster.stop();
  const [, code, signal] = await exited;
  assert.deepStrictEqual([code, signal], [null, 'SIGKILL']);
  assert.ok(!alive(worker.pid));
});

test('stopSignal: a worker that waits for a signal, not for the disconnect, gets it right after the disconnect', async (t) => {
  const cluster = startCluster(t, { exec: fixture('stubborn-worker.js'), workers: 1, killTimeout: 60_000, stopSignal: 'SIGTERM' });
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  const exited = once(cluster, 'exit');
  const asked = Date.now();
  await cluster.stop();
  const [, code, signal] = await exited;
  assert.deepStrictEqual([code, signal], [null, 'SIGTERM']);
  assert.ok(Date.now() - asked < 10_000, 'it left long before killTimeout');
  assert.ok(!alive(worker.pid));
});

test('when the primary is SIGKILLed its workers exit within 2 s', async (t) => {
  const primary = spawnNode(t, [fixture('primary.js')]);
  const [line] = await waitForOutput(primary, /^\[.*\]$/m);
  const pids = JSON.parse(line);
  assert.strictEqual(pids.length, 2);
  primary.kill('SIGKILL');
  await primary.exited;
  await until(() => pids.every((pid) => !alive(pid)), 2000, 'the workers to exit');
});

test('a worker that writes garbage on its channel is disconnected and replaced; the primary reports it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cluster = startCluster(t, {
    exec: fixture('garbage-once.js'),
    workers: 1,
    readiness: 'online',
    killTimeout: 500,
    env: { MARKER_FILE: path.join(dir, 'marker') },
  });
  const warnings = [];
  cluster.on('warning', (w) => warnings.push(w));
  await cluster.ready;
  const [first] = Object.values(cluster.workers);
  const [replacement, address] = await once(cluster, 'listening');
  assert.notStrictEqual(replacement.pid, first.pid);
  assert.ok(!alive(first.pid));
  const protocol = warnings.find((w) => w.code === 'ERR_RCLUSTER_PROTOCOL');
  assert.ok(protocol, 'no protocol warning');
  assert.match(protocol.message, new RegExp(`pid ${first.pid}`));
  // The primary still works: the replacement serves.
  assert.strictEqual((await get(address.port)).body, 'ok');
});
