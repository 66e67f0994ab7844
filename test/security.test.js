'use strict';

// A worker is untrusted code. Each test here is an attack a hostile or buggy worker can make on
// its primary (test/fixtures/hostile-worker.js), with the behaviour SECURITY.md promises.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { fixture, once, until, alive, procStat, childrenOf, startCluster, get, spawnNode, waitForOutput } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');
const hostile = fixture('hostile-worker.js');

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const openDescriptors = (pid = process.pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

/** The next message of `kind` ('granted', 'flood', ...) from any worker. */
function nextMessage(cluster, kind, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${kind}' message within ${ms} ms`)), ms);
    cluster.on('message', function listener(worker, msg) {
      if (msg && msg[kind] !== undefined) {
        clearTimeout(timer);
        cluster.removeListener('message', listener);
        resolve({ worker, value: msg[kind] });
      }
    });
  });
}

function warningsOf(cluster) {
  const warnings = [];
  cluster.on('warning', (w) => warnings.push(w));
  return warnings;
}

/** Kills the pids when the test ends, whatever happened. */
function killAfter(t, pids) {
  t.after(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone, as it should be.
      }
    }
  });
}

test('a worker gets none of the primary\'s own descriptors by number (listen({ fd }))', async (t) => {
  const cluster = startCluster(t, { exec: hostile, workers: 2, env: { ATTACK: 'fd-scan' } });
  const warnings = warningsOf(cluster);
  const scans = [nextMessage(cluster, 'granted'), nextMessage(cluster, 'granted')];
  const [a] = await Promise.all(scans);
  assert.deepStrictEqual(a.value, [], 'descriptors granted to a worker that asked by number');
  await cluster.ready;
  await until(() => warnings.some((w) => w.code === 'ERR_RCLUSTER_LISTEN_REFUSED'), 5000, 'the refusal warning');
  const refused = warnings.filter((w) => w.code === 'ERR_RCLUSTER_LISTEN_REFUSED');
  assert.ok(refused.length <= 2, `one warning per worker, not one per attempt (${refused.length})`);
  assert.match(refused[0].message, /descriptor \d+ of the primary, which is not one of listenFds/);
});

test('a descriptor the operator gave (listenFds) is served by the workers', async (t) => {
  // The primary inherits a listening socket at fd 3, as from systemd or a parent supervisor.
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const options = { exec: hostile, workers: 2, listenFds: [3], env: { LISTEN_FD: '3' } };
  const primary = spawnNode(t, [fixture('fd-primary.js')], {
    stdio: ['ignore', 'pipe', 'pipe', server._handle.fd],
    env: { ...process.env, RCLUSTER_OPTIONS: JSON.stringify(options) },
  });
  // From here on only the primary holds the socket, and it never accepts on it.
  server.close();
  await waitForOutput(primary, /^ready$/m, 15_000);
  const workers = new Set(childrenOf(primary.pid));
  for (let i = 0; i < 4; i++) {
    const { body } = await get(port);
    assert.ok(workers.has(Number(body)), `answered by ${body}, not a worker of ${[...workers]}`);
  }
  assert.doesNotMatch(primary.output, /LISTEN_REFUSED/);
});

test('listenFds must name open sockets', () => {
  const rcluster = require('..');
  const file = fs.openSync(__filename, 'r');
  try {
    assert.throws(() => rcluster.start({ exec: hostile, listenFds: [file] }), { code: 'ERR_RCLUSTER_INVALID_OPTION', message: /listenFds.*not an open socket/ });
    assert.throws(() => rcluster.start({ exec: hostile, listenFds: [-1] }), { code: 'ERR_RCLUSTER_INVALID_OPTION', message: /listenFds/ });
    assert.throws(() => rcluster.start({ exec: hostile, listenFds: 3 }), { code: 'ERR_RCLUSTER_INVALID_OPTION', message: /listenFds/ });
  } finally {
    fs.closeSync(file);
  }
});

test('listening sockets are bounded per worker, and given back once nobody uses them', async (t) => {
  const dir = tempDir(t);
  const before = openDescriptors();
  const cluster = startCluster(t, {
    exec: hostile,
    workers: 1,
    env: { ATTACK: 'listen-flood', FLOOD: '200', MARKER_FILE: path.join(dir, 'marker') },
  });
  const warnings = warningsOf(cluster);
  const { worker, value } = await nextMessage(cluster, 'flood');
  assert.strictEqual(value.ok, 64, `sockets granted: ${JSON.stringify(value)}`);
  assert.deepStrictEqual(value.errors, { EMFILE: 136 });
  assert.strictEqual(warnings.filter((w) => w.code === 'ERR_RCLUSTER_LISTEN_REFUSED').length, 1);
  const held = openDescriptors() - before;
  assert.ok(held >= 64 && held < 64 + 30, `the primary holds ${held} more descriptors`);
  // The flooding worker goes; its replacement listens on one port. The 64 sockets belong to no
  // current worker and close once the cluster has been settled for the linger time (10 s).
  worker.kill('SIGKILL');
  await until(() => Object.values(cluster.workers).some((w) => w.id !== worker.id && w.state === 'listening'), 10_000, 'the replacement');
  await until(() => openDescriptors() - before < 20, 30_000, () => `the sockets to close (${openDescriptors() - before} more than before)`);
});

test('floods under a low descriptor limit leave room for replacements', async (t) => {
  const dir = tempDir(t);
  // bash sets the limit and becomes the CLI (exec). With 200 descriptors, the floods reach the
  // primary's reserve of 128 before the per-worker limit.
  const primary = spawn('bash', ['-c', `ulimit -n 200 && exec "${process.execPath}" "${bin}" start "${hostile}" -i 2`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, ATTACK: 'listen-flood', FLOOD: '200', MARKER_FILE: path.join(dir, 'marker') },
  });
  primary.output = '';
  for (const stream of [primary.stdout, primary.stderr]) stream.on('data', (d) => (primary.output += d));
  t.after(() => {
    try {
      process.kill(-primary.pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  });
  await waitForOutput(primary, /2 workers ready/, 20_000);
  await waitForOutput(primary, /fewer than 128 descriptors left; refused \(EMFILE\)/, 20_000);
  const workers = childrenOf(primary.pid);
  assert.strictEqual(workers.length, 2);
  for (const pid of workers) process.kill(pid, 'SIGKILL');
  await until(() => {
    const now = childrenOf(primary.pid);
    return now.length === 2 && now.every((p) => !workers.includes(p));
  }, 10_000, 'two replacements');
  await waitForOutput(primary, /(exited with signal SIGKILL after it was ready[^]*){2}/, 10_000);
  const [, port] = await waitForOutput(primary, /listening on \*:(\d+)/);
  await until(async () => {
    const answer = await get(Number(port)).catch(() => ({ body: '' }));
    return answer.body !== '' && !workers.includes(Number(answer.body));
  }, 10_000, 'a replacement to serve');
  assert.doesNotMatch(primary.output, /ERR_RCLUSTER_SPAWN_FAILED|could not start a worker/);
  assert.ok(alive(primary.pid));
});
