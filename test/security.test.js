'use strict';

// A worker is untrusted code. Each test here is an attack a hostile or buggy worker can make on
// its primary (test/fixtures/hostile-worker.js), with the behaviour SECURITY.md promises.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { fixture, tempDir, until, alive, procStat, childrenOf, startCluster, get, spawnProgram, spawnNode, waitForOutput } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');
const hostile = fixture('hostile-worker.js');

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

test('a flood under a low descriptor limit stops at the reserve, and a replacement still starts', async (t) => {
  const dir = tempDir(t);
  // bash sets the limit and becomes the CLI (exec). With 200 descriptors, the flood reaches the
  // primary's reserve of 128 before the per-worker limit of 64.
  const primary = spawnProgram(t, 'bash', ['-c', `ulimit -n 200 && exec "${process.execPath}" "${bin}" start "${hostile}" -i 1`], {
    env: { ...process.env, ATTACK: 'listen-flood', FLOOD: '200', FLOOD_STAY: '1', MARKER_FILE: path.join(dir, 'marker') },
  });
  await waitForOutput(primary, /1 workers ready/, 20_000);
  await waitForOutput(primary, /fewer than 128 descriptors left; refused \(EMFILE\)/, 20_000);
  const [attacker] = childrenOf(primary.pid);
  process.kill(attacker, 'SIGKILL');
  // The replacement asks for a new socket: the flood's, held by nobody now, make room for it.
  const [, port] = await waitForOutput(primary, /listening on \*:(\d+)/, 10_000);
  const { body } = await get(Number(port));
  assert.notStrictEqual(Number(body), attacker);
  assert.doesNotMatch(primary.output, /ERR_RCLUSTER_SPAWN_FAILED|could not start a worker/);
});

test('a worker asking again and again for a socket it holds gets no more copies of it', async (t) => {
  const before = openDescriptors();
  const cluster = startCluster(t, { exec: hostile, workers: 1, env: { ATTACK: 'query-flood', QUERIES: '3000' } });
  const warnings = warningsOf(cluster);
  await nextMessage(cluster, 'queried', 30_000);
  await until(() => warnings.some((w) => w.code === 'ERR_RCLUSTER_LISTEN_REFUSED'), 5000, 'the refusal warning');
  assert.match(warnings.find((w) => w.code === 'ERR_RCLUSTER_LISTEN_REFUSED').message, /already holds/);
  const grown = openDescriptors() - before;
  assert.ok(grown < 20, `the primary holds ${grown} more descriptors after 3,000 queries`);
});

test('a worker that asks without reading the answers is cut off before the primary grows without end', async (t) => {
  const rssBefore = process.memoryUsage().rss;
  const dir = tempDir(t);
  const cluster = startCluster(t, {
    exec: hostile,
    workers: 1,
    env: { ATTACK: 'query-flood', QUERIES: '2000', QUERY_DATA: String(64 << 10), MARKER_FILE: path.join(dir, 'marker') },
  });
  const warnings = warningsOf(cluster);
  await until(() => warnings.some((w) => /does not read its IPC channel/.test(w.message)), 60_000, 'the protocol warning');
  // 2,000 answers of 64 KiB would be 125 MiB; the primary stops at 64 MiB.
  const grown = (process.memoryUsage().rss - rssBefore) >> 20;
  assert.ok(grown < 110, `the primary grew by ${grown} MiB`);
  await until(() => Object.values(cluster.workers).some((w) => w.state === 'listening'), 10_000, 'the replacement');
});

for (const channel of ['node', 'messenger']) {
  test(`20 descriptors in one message on the ${channel} channel: closed, reported, worker replaced`, async (t) => {
    const dir = tempDir(t);
    // The attacker sends descriptors of /dev/null: the primary must keep none of them.
    const devNull = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === '/dev/null';
      } catch {
        return false;
      }
    }).length;
    const before = devNull();
    const cluster = startCluster(t, {
      exec: hostile,
      workers: 1,
      readiness: 'listening',
      killTimeout: 500,
      env: { ATTACK: 'many-fds', CHANNEL: channel, MARKER_FILE: path.join(dir, 'marker') },
    });
    const warnings = warningsOf(cluster);
    await cluster.ready;
    await until(() => warnings.some((w) => w.code === 'ERR_RCLUSTER_PROTOCOL'), 10_000, 'the protocol warning');
    assert.match(warnings.find((w) => w.code === 'ERR_RCLUSTER_PROTOCOL').message, /descriptors/);
    // The attacker's channel closed; the replacement serves, and the primary kept none of the
    // descriptors it was sent.
    await until(() => Object.values(cluster.workers).length === 1 && Object.values(cluster.workers)[0].state === 'listening', 10_000, 'the replacement');
    await until(() => devNull() <= before, 5000, () => `the primary to hold no /dev/null beyond its ${before} (now ${devNull()})`);
  });
}

test('a line with no end on Node\'s channel is cut at maxMessageSize, and its memory is not kept', async (t) => {
  const dir = tempDir(t);
  const rssBefore = process.memoryUsage().rss;
  const cluster = startCluster(t, {
    exec: hostile,
    workers: 1,
    maxMessageSize: 1 << 20,
    killTimeout: 500,
    env: { ATTACK: 'endless-line', MIB: '48', MARKER_FILE: path.join(dir, 'marker') },
  });
  const warnings = warningsOf(cluster);
  await cluster.ready;
  const warning = await until(() => warnings.find((w) => w.code === 'ERR_RCLUSTER_PROTOCOL'), 15_000, 'the protocol warning');
  assert.match(warning.message, /exceeded 1048576 bytes/);
  const grown = (process.memoryUsage().rss - rssBefore) >> 20;
  assert.ok(grown < 24, `the primary grew by ${grown} MiB for a 48 MiB line`);
});

test('a worker gets none of the descriptors its primary inherited', async (t) => {
  const dir = tempDir(t);
  const secret = path.join(dir, 'inherited-secret');
  fs.writeFileSync(secret, 'not for workers');
  const fd = fs.openSync(secret, 'r');
  t.after(() => fs.closeSync(fd));
  // The primary gets the file at fd 9 without CLOEXEC, as from a shell or a supervisor.
  const stdio = ['ignore', 'pipe', 'pipe', 'ignore', 'ignore', 'ignore', 'ignore', 'ignore', 'ignore', fd];
  const primary = spawnNode(t, [fixture('fd-primary.js')], {
    stdio,
    env: { ...process.env, RCLUSTER_OPTIONS: JSON.stringify({ exec: hostile, workers: 1, env: { ATTACK: 'list-fds' } }) },
  });
  const [line] = await waitForOutput(primary, /^\{"fds".*$/m, 15_000);
  const fds = JSON.parse(line).fds;
  assert.ok(Object.keys(fds).length > 3, JSON.stringify(fds));
  assert.ok(!Object.values(fds).includes(secret), `the worker has the primary's file: ${JSON.stringify(fds)}`);
  assert.strictEqual(fs.readlinkSync(`/proc/${primary.pid}/fd/9`), secret, 'the primary has it');
});

test('one request type that crashes workers does not end the service', async (t) => {
  const cli = spawnNode(t, [bin, 'start', hostile, '-i', '2']);
  const [, port] = await waitForOutput(cli, /listening on \*:(\d+)/);
  await waitForOutput(cli, /2 workers ready/);
  // The scenario: 11 crashing requests 0.3 s apart.
  for (let i = 0; i < 11; i++) {
    await get(Number(port), { path: '/boom', timeout: 2000 }).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  await until(async () => (await get(Number(port)).catch(() => ({ status: 0 }))).status === 200, 15_000, 'the service to answer');
  assert.ok(alive(cli.pid), 'the CLI is still running');
  assert.doesNotMatch(cli.output, /ERR_RCLUSTER_RESTART_BUDGET|keeps exiting/);
  assert.match(cli.output, /uncaught exception/);
});

test('the processes a worker or the agent starts inherit none of rcluster\'s variables nor its preload', async (t) => {
  const worker = fixture('grandchild-env-worker.js');
  const cluster = startCluster(t, { exec: worker, workers: 1, agent: worker });
  const reports = [];
  cluster.on('message', (w, msg) => msg && msg.grandchildren && reports.push({ kind: w.kind, ...msg }));
  await until(() => reports.length === 2, 15_000, 'the reports of the worker and the agent');
  for (const { kind, worker: self, grandchildren } of reports) {
    // The worker itself ran the child runtime, and then took it and the variables out.
    assert.ok(self.runtime, `${kind}: the child runtime ran`);
    assert.deepStrictEqual(self.rcluster, [], `${kind}: its RCLUSTER_ variables are gone from process.env`);
    assert.ok(!self.execArgv.some((a) => a.endsWith('child-runtime.js')), `${kind}: ${self.execArgv}`);
    for (const [how, seen] of [['fork', grandchildren[0]], ['spawn', grandchildren[1]]]) {
      assert.deepStrictEqual(seen.rcluster, [], `${kind}, ${how}: no RCLUSTER_ variable`);
      assert.strictEqual(seen.runtime, false, `${kind}, ${how}: no child runtime`);
      assert.ok(!seen.execArgv.some((a) => a.endsWith('child-runtime.js')), `${kind}, ${how}: ${seen.execArgv}`);
    }
  }
});

test('a worker\'s grandchildren end with it: when it crashes, at a graceful stop, when the primary is killed', async (t) => {
  const grandchildren = [];
  killAfter(t, grandchildren);
  const started = (output, from) => {
    const pids = [...output.slice(from).matchAll(/"grandchild":(\d+)/g)].map((m) => Number(m[1]));
    grandchildren.push(...pids);
    return pids;
  };
  const run = (options) => spawnNode(t, [fixture('fd-primary.js')], {
    env: { ...process.env, RCLUSTER_OPTIONS: JSON.stringify({ exec: hostile, workers: 2, killTimeout: 1000, env: { ATTACK: 'grandchild' }, ...options }) },
  });

  // A crash: the worker's group goes with it.
  let primary = run();
  await waitForOutput(primary, /^ready$/m, 15_000);
  let pids = await until(() => started(primary.output, 0).length === 2 && started(primary.output, 0), 5000, 'the grandchildren');
  const [worker] = childrenOf(primary.pid);
  const mine = pids.filter((p) => procStat(p)?.pgid === worker);
  assert.strictEqual(mine.length, 1);
  process.kill(worker, 'SIGKILL');
  await until(() => !alive(mine[0]), 5000, 'the crashed worker\'s grandchild to end');

  // A graceful stop: everything goes.
  const mark = primary.output.length;
  await until(() => started(primary.output, mark).length === 1, 10_000, 'the replacement\'s grandchild');
  pids = grandchildren.filter(alive);
  primary.kill('SIGTERM');
  await primary.exited;
  await until(() => pids.every((p) => !alive(p)), 5000, () => `grandchildren ${pids.filter(alive)} to end after a stop`);

  // The primary SIGKILLed: its guard ends the groups.
  primary = run();
  await waitForOutput(primary, /^ready$/m, 15_000);
  pids = await until(() => started(primary.output, 0).length === 2 && started(primary.output, 0), 5000, 'the grandchildren');
  primary.kill('SIGKILL');
  await until(() => pids.every((p) => !alive(p)), 5000, () => `grandchildren ${pids.filter(alive)} to end after the primary was killed`);
});

test('a grandchild that ignores SIGTERM ends killTimeout after its worker is replaced, and at a graceful stop', async (t) => {
  const grandchildren = [];
  killAfter(t, grandchildren);
  const started = (output, from) => {
    const pids = [...output.slice(from).matchAll(/"grandchild":(\d+)/g)].map((m) => Number(m[1]));
    grandchildren.push(...pids.filter((p) => !grandchildren.includes(p)));
    return pids;
  };
  const primary = spawnNode(t, [fixture('fd-primary.js')], {
    env: { ...process.env, RCLUSTER_OPTIONS: JSON.stringify({ exec: hostile, workers: 2, killTimeout: 1000, env: { ATTACK: 'stubbornGrandchild' } }) },
  });
  await waitForOutput(primary, /^ready$/m, 15_000);
  const pids = await until(() => started(primary.output, 0).length === 2 && started(primary.output, 0), 5000, 'the grandchildren');
  const [worker] = childrenOf(primary.pid);
  const [mine] = pids.filter((p) => procStat(p)?.pgid === worker);
  // The replacement starts at once: its grandchild may be reported before the old one has ended.
  const mark = primary.output.length;
  process.kill(worker, 'SIGKILL');
  await until(() => !alive(mine), 6000, 'the replaced worker\'s stubborn grandchild to end');

  await until(() => started(primary.output, mark).length === 1, 10_000, 'the replacement\'s grandchild');
  const left = grandchildren.filter(alive);
  assert.strictEqual(left.length, 2);
  primary.kill('SIGTERM');
  await primary.exited;
  await until(() => left.every((p) => !alive(p)), 5000, () => `grandchildren ${left.filter(alive)} to end after a stop`);
});

test('as PID 1 every orphan is reaped: no zombie is left', { skip: process.getuid() !== 0 && 'unshare needs root' }, async (t) => {
  const cli = spawnProgram(t, 'unshare', ['--pid', '--fork', '--mount-proc', process.execPath, bin, 'start', hostile, '-i', '2'], {
    env: { ...process.env, ATTACK: 'grandchild' },
  });
  await waitForOutput(cli, /2 workers ready/, 15_000);
  // PID 1 of the new namespace is the CLI, unshare's child.
  const init = await until(() => childrenOf(cli.pid)[0], 5000, 'PID 1');
  // Orphans: each reload leaves the old workers' grandchildren behind, and they are killed.
  for (let i = 1; i <= 3; i++) {
    process.kill(init, 'SIGHUP');
    await waitForOutput(cli, new RegExp(`(reloaded: 2 workers replaced[^]*){${i}}`), 15_000);
  }
  const zombies = () => fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => {
    const s = procStat(p);
    return s && s.ppid === init && s.state === 'Z';
  });
  // The old workers leave within killTimeout (their grandchild keeps their event loop alive).
  await until(() => childrenOf(init, { guard: true }).length === 2 + 1, 10_000, () => `PID 1 to have 2 workers and the guard (${childrenOf(init, { guard: true }).length} children)`);
  await until(() => zombies().length === 0, 5000, () => `no zombie under PID 1 (${zombies().length} left)`);
});
