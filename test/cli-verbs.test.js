'use strict';

// The verbs as clients: each runs as its own process against a stand-in control server written
// here, which answers as docs/control-protocol.md says and records what it was asked. What the
// verbs print, their exit codes, timeouts and the protocol's corners (logs, a refused peer, a
// stale socket). test/control.test.js runs them against a real cluster.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { tempDir, until, spawnNode } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');

const INFO = { name: 'web', pid: 4242, version: '0.1.0', state: 'running', startedAt: Date.now() - 7_300_000, uptime: 7_300_000, workers: 2, addresses: ['*:3000'], script: '/srv/app.js' };
const STATUS = {
  ...INFO,
  workers: [
    { id: 3, pid: 5001, kind: 'agent', slot: null, instance: null, state: 'ready', restarts: 0, startedAt: 0, uptime: 7_300_000, memory: 41_000_000, cpu: 0, loopDelay: 0.4 },
    { id: 4, pid: 5002, kind: 'app', slot: 0, instance: 0, state: 'ready', restarts: 2, startedAt: 0, uptime: 840_000, memory: 63_200_000, cpu: 1.5, loopDelay: 12.3 },
    { id: 5, pid: 5003, kind: 'app', slot: 1, instance: 1, state: 'starting', restarts: 0, startedAt: 0, uptime: 5_000, memory: null, cpu: null, loopDelay: null },
  ],
};

/**
 * A control server on `<home>/<name>.sock`: `handle(request, reply, socket)` answers each request
 * line; `requests` records them.
 */
function fakeCluster(t, home, name, handle) {
  const requests = [];
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.setEncoding('utf8');
    let buffer = '';
    socket.on('data', (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n')) !== -1) {
        const request = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        requests.push(request);
        handle(request, (answer) => socket.write(`${JSON.stringify({ id: request.id, ...answer })}\n`), socket);
      }
    });
  });
  const listening = new Promise((resolve) => server.listen(path.join(home, `${name}.sock`), resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return { requests, listening, sockets };
}

/** Answers info and status with the canned ones, anything else with `others`. */
function answering(others = () => {}) {
  return (request, reply, socket) => {
    if (request.command === 'info') reply({ ok: true, result: INFO });
    else if (request.command === 'status') reply({ ok: true, result: STATUS });
    else others(request, reply, socket);
  };
}

async function rcluster(t, home, args) {
  const run = spawnNode(t, [bin, ...args], { env: { ...process.env, RCLUSTER_HOME: home } });
  let stdout = '';
  let stderr = '';
  run.stdout.on('data', (d) => (stdout += d));
  run.stderr.on('data', (d) => (stderr += d));
  const started = Date.now();
  const code = await new Promise((resolve) => run.once('close', (exitCode) => resolve(exitCode)));
  return { code, stdout, stderr, output: run.output, took: Date.now() - started };
}

test('status: a header line and a row per worker, humanized; --json as the server sent it', async (t) => {
  const home = tempDir(t);
  await fakeCluster(t, home, 'web', answering()).listening;
  const run = await rcluster(t, home, ['status', 'web']);
  assert.strictEqual(run.code, 0, run.output);
  assert.strictEqual(
    run.stdout,
    [
      'web (pid 4242) running on *:3000, up 2h',
      'ID  PID   KIND   STATE     RESTARTS  UPTIME  MEMORY   CPU   LOOP DELAY',
      '3   5001  agent  ready     0         2h      41.0 MB  0.0%  0.4 ms',
      '4   5002  app    ready     2         14m     63.2 MB  1.5%  12 ms',
      '5   5003  app    starting  0         5s      -        -     -',
      '',
    ].join('\n'),
  );
  const json = await rcluster(t, home, ['status', 'web', '--json']);
  assert.deepStrictEqual(JSON.parse(json.stdout), STATUS);
});

test('ls: the running clusters; a stale socket is skipped in silence; one that fails is named, exit 1', async (t) => {
  const home = tempDir(t);
  await fakeCluster(t, home, 'web', answering()).listening;
  // A socket whose server was killed: the file stays, nobody listens.
  const stale = spawnNode(t, ['-e', `require('net').createServer().listen(${JSON.stringify(path.join(home, 'old.sock'))}, () => console.log('up'))`]);
  await until(() => stale.output.includes('up'), 10_000, 'the stale server');
  stale.kill('SIGKILL');
  await stale.exited;
  assert.ok(fs.existsSync(path.join(home, 'old.sock')));
  fs.writeFileSync(path.join(home, 'notes.txt'), '');

  const ls = await rcluster(t, home, ['ls']);
  assert.strictEqual(ls.code, 0, ls.output);
  assert.strictEqual(ls.stderr, '');
  assert.strictEqual(ls.stdout, 'NAME  PID   STATE    WORKERS  UPTIME  ADDRESSES\nweb   4242  running  2        2h      *:3000\n');
  assert.deepStrictEqual(JSON.parse((await rcluster(t, home, ['ls', '--json'])).stdout), [INFO]);

  await fakeCluster(t, home, 'busy', (request, reply) => reply({ ok: false, error: { code: 'ERR_RCLUSTER_CONTROL_BUSY', message: 'too many connections' } })).listening;
  const busy = await rcluster(t, home, ['ls']);
  assert.strictEqual(busy.code, 1, busy.output);
  assert.match(busy.stdout, /^web\s+4242/m);
  assert.strictEqual(busy.stderr, 'rcluster: busy: too many connections (ERR_RCLUSTER_CONTROL_BUSY)\n');
});

test('ls with no cluster, and a control folder that does not exist: nothing running, exit 0', async (t) => {
  const home = path.join(tempDir(t), 'absent');
  const ls = await rcluster(t, home, ['ls']);
  assert.strictEqual(ls.code, 0, ls.output);
  assert.strictEqual(ls.stdout, '');
  assert.match(ls.stderr, /no cluster is running/);
  assert.deepStrictEqual(JSON.parse((await rcluster(t, home, ['ls', '--json'])).stdout), []);
});

test('a verb for a name nobody runs: exit 3 and the hint', async (t) => {
  const home = tempDir(t);
  for (const args of [['status', 'nope'], ['reload', 'nope'], ['stop', 'nope'], ['logs', 'nope'], ['scale', 'nope', '2'], ['restart', 'nope', '1']]) {
    const run = await rcluster(t, home, args);
    assert.strictEqual(run.code, 3, run.output);
    assert.strictEqual(run.stderr, 'rcluster: no cluster named nope is running (rcluster ls lists them) (ERR_RCLUSTER_NO_SUCH_CLUSTER)\n');
  }
});

test('reload, scale and restart: the request sent, what is printed; they wait as long as it takes', async (t) => {
  const home = tempDir(t);
  const delay = 11_000;
  const cluster = fakeCluster(t, home, 'web', answering((request, reply) => {
    if (request.command === 'reload') setTimeout(() => reply({ ok: true, result: { replaced: 4, duration: 812 } }), delay);
    else if (request.command === 'scale') reply({ ok: true, result: { workers: request.workers } });
    else if (request.command === 'restart') reply({ ok: true, result: { id: 9, replaced: request.worker, duration: 95 } });
  }));
  await cluster.listening;
  const [reload, scale, restart] = await Promise.all([
    rcluster(t, home, ['reload', 'web']),
    rcluster(t, home, ['scale', 'web', '3']),
    rcluster(t, home, ['restart', 'web', '7']),
  ]);
  assert.deepStrictEqual([reload.code, reload.stdout], [0, 'reloaded web: 4 workers replaced in 812 ms\n'], reload.output);
  assert.ok(reload.took >= delay, 'reload waited for its answer, past the 10 s of info and status');
  assert.deepStrictEqual([scale.code, scale.stdout], [0, 'scaled web to 3 workers\n'], scale.output);
  assert.deepStrictEqual([restart.code, restart.stdout], [0, 'restarted worker 7 of web: worker 9 took its place in 95 ms\n'], restart.output);
  const sent = (command) => cluster.requests.filter((r) => r.command === command);
  assert.deepStrictEqual(sent('scale').map(({ id, ...rest }) => rest), [{ command: 'scale', workers: 3 }]);
  assert.deepStrictEqual(sent('restart').map(({ id, ...rest }) => rest), [{ command: 'restart', worker: 7 }]);
  assert.deepStrictEqual(sent('reload').map(({ id, ...rest }) => rest), [{ command: 'reload' }]);
});

test('a reload that aborts: the reason, exit 1', async (t) => {
  const home = tempDir(t);
  await fakeCluster(t, home, 'web', answering((request, reply) => {
    reply({ ok: false, error: { code: 'ERR_RCLUSTER_RELOAD_ABORTED', message: 'worker 9 exited with code 1 before it was ready; 2 of 4 workers replaced' } });
  })).listening;
  const run = await rcluster(t, home, ['reload', 'web']);
  assert.strictEqual(run.code, 1, run.output);
  assert.strictEqual(run.stderr, 'rcluster: reload of web failed: worker 9 exited with code 1 before it was ready; 2 of 4 workers replaced (ERR_RCLUSTER_RELOAD_ABORTED)\n');
});

test('status gives up after 10 s without an answer: exit 1', async (t) => {
  const home = tempDir(t);
  await fakeCluster(t, home, 'web', () => {}).listening;
  const run = await rcluster(t, home, ['status', 'web']);
  assert.strictEqual(run.code, 1, run.output);
  assert.strictEqual(run.stderr, "rcluster: cluster web did not answer 'status' within 10 s (ERR_RCLUSTER_TIMEOUT)\n");
  assert.ok(run.took >= 10_000 && run.took < 20_000, `${run.took} ms`);
});

test('a peer the server refuses: its one error line, without an id, fails the verb with its code', async (t) => {
  const home = tempDir(t);
  await fakeCluster(t, home, 'web', (request, reply, socket) => {
    socket.end(`${JSON.stringify({ ok: false, error: { code: 'ERR_RCLUSTER_CONTROL_FORBIDDEN', message: 'uid 65534 may not use this cluster' } })}\n`);
  }).listening;
  for (const args of [['status', 'web'], ['stop', 'web']]) {
    const run = await rcluster(t, home, args);
    assert.strictEqual(run.code, 1, run.output);
    assert.strictEqual(run.stderr, 'rcluster: uid 65534 may not use this cluster (ERR_RCLUSTER_CONTROL_FORBIDDEN)\n');
  }
});

test('stop: info and stop on one connection, then it waits for the connection to close', async (t) => {
  const home = tempDir(t);
  let closedAt = 0;
  const cluster = fakeCluster(t, home, 'web', answering((request, reply, socket) => {
    reply({ ok: true, result: { stopping: true } });
    setTimeout(() => {
      closedAt = Date.now();
      socket.end();
    }, 500);
  }));
  await cluster.listening;
  const run = await rcluster(t, home, ['stop', 'web']);
  assert.strictEqual(run.code, 0, run.output);
  assert.strictEqual(run.stdout, 'stopping web (pid 4242)\nstopped\n');
  assert.ok(closedAt > 0);
  assert.deepStrictEqual(cluster.requests.map((r) => r.command), ['info', 'stop']);
});

test('logs: each line prefixed by its worker, stderr lines on stderr, a skipped notice', async (t) => {
  const home = tempDir(t);
  const cluster = fakeCluster(t, home, 'web', (request, reply) => {
    const line = (id, kind, stream, text) => reply({ log: { id, kind, stream, time: Date.now(), text } });
    line(4, 'app', 'stdout', 'listening on 3000');
    line(3, 'agent', 'stderr', 'cache cold');
    reply({ skipped: 42 });
    line(5, 'app', 'stdout', 'ready');
    if (!request.follow) reply({ ok: true, result: { lines: 3 } });
  });
  await cluster.listening;
  const run = await rcluster(t, home, ['logs', 'web', '--lines', '3']);
  assert.strictEqual(run.code, 0, run.output);
  assert.strictEqual(run.stdout, '4|app| listening on 3000\n... 42 lines skipped ...\n5|app| ready\n');
  assert.strictEqual(run.stderr, '3|agent| cache cold\n');
  assert.deepStrictEqual(cluster.requests.map(({ id, ...rest }) => rest), [{ command: 'logs', lines: 3 }]);
});

test('logs --follow: lines as they come, until the cluster stops (exit 0)', async (t) => {
  const home = tempDir(t);
  const cluster = fakeCluster(t, home, 'web', (request, reply) => {
    reply({ log: { id: 1, kind: 'app', stream: 'stdout', time: Date.now(), text: 'first' } });
  });
  await cluster.listening;
  const follow = spawnNode(t, [bin, 'logs', 'web', '--follow'], { env: { ...process.env, RCLUSTER_HOME: home } });
  await until(() => follow.output.includes('1|app| first\n'), 10_000, 'the first line');
  const [socket] = cluster.sockets;
  const request = cluster.requests[0];
  assert.deepStrictEqual({ ...request, id: undefined }, { id: undefined, command: 'logs', lines: 100, follow: true });
  socket.write(`${JSON.stringify({ id: request.id, log: { id: 2, kind: 'app', stream: 'stdout', time: Date.now(), text: 'second' } })}\n`);
  await until(() => follow.output.includes('2|app| second\n'), 10_000, 'the second line');
  socket.end();
  const { code } = await follow.exited;
  assert.strictEqual(code, 0, follow.output);
  assert.match(follow.output, /cluster web stopped/);
});
