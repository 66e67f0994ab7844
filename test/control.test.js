'use strict';

// Operating a running cluster: `rcluster start` in the background, each verb as its own process,
// against the control socket (docs/control-protocol.md). Every test has its own control folder.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { fixture, tempDir, until, alive, childrenOf, descendants, get, steadyLoad, spawnNode, spawnProgram, waitForOutput } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');
const NOBODY = 65534;

/** A fresh control folder (mode 0700, as mkdtemp makes it). */
function newHome(t) {
  return tempDir(t, 'rcluster-home-');
}

/** Whether a connection to the socket is accepted now. */
function accepts(file) {
  return new Promise((resolve) => {
    const socket = net.connect(file);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * `rcluster start <script> --name NAME ...` in the background; resolves once its workers are
 * ready and its control socket takes connections, with the port they listen on.
 */
async function startCli(t, home, name, args = [], script = fixture('cli-worker.js')) {
  const cli = spawnNode(t, [bin, 'start', script, '--name', name, ...args], { env: { ...process.env, RCLUSTER_HOME: home } });
  const [, port] = await waitForOutput(cli, /listening on \*:(\d+)/);
  await waitForOutput(cli, /\d+ workers ready/);
  const socket = path.join(home, `${name}.sock`);
  await until(() => accepts(socket), 10_000, `the control socket ${socket}`);
  cli.port = Number(port);
  cli.socket = socket;
  return cli;
}

/** Runs `rcluster ...args` to its end; resolves with its exit code, stdout and stderr apart. */
async function rcluster(t, home, args, options = {}) {
  const { node = process.execPath, ...spawnOptions } = options;
  const run = spawnProgram(t, node, [bin, ...args], { env: { ...process.env, RCLUSTER_HOME: home }, ...spawnOptions });
  let stdout = '';
  let stderr = '';
  run.stdout.on('data', (d) => (stdout += d));
  run.stderr.on('data', (d) => (stderr += d));
  // 'close': the process has exited and its output is all read.
  const code = await new Promise((resolve) => run.once('close', (exitCode) => resolve(exitCode)));
  return { code, stdout, stderr, output: run.output };
}

async function statusJson(t, home, name) {
  const run = await rcluster(t, home, ['status', name, '--json']);
  assert.strictEqual(run.code, 0, run.output);
  return JSON.parse(run.stdout);
}

const appWorkers = (status) => status.workers.filter((w) => w.kind === 'app');

/** Whether a user who is neither owner nor group can reach `file` (each folder searchable, the file `mode`). */
function reachableByOthers(file, mode) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    if ((fs.statSync(dir).mode & 0o001) === 0) return false;
    if (dir === path.dirname(dir)) break;
  }
  return (fs.statSync(file).mode & mode) === mode;
}

/**
 * A Node binary another user can run: this one, or a copy in a folder open to all (a Node
 * installed into a private folder, as `mktemp -d` makes them, is out of their reach).
 */
function nodeForOthers(t) {
  if (reachableByOthers(process.execPath, 0o005)) return process.execPath;
  const dir = tempDir(t, 'rcluster-node-');
  fs.chmodSync(dir, 0o755);
  const copy = path.join(dir, 'node');
  fs.copyFileSync(process.execPath, copy);
  fs.chmodSync(copy, 0o755);
  return copy;
}

/** The lines a raw client gets on the control socket; `send` writes bytes as they are. */
function rawClient(file) {
  const socket = net.connect(file);
  const lines = [];
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\n')) !== -1) {
      lines.push(JSON.parse(buffer.slice(0, end)));
      buffer = buffer.slice(end + 1);
    }
  });
  socket.on('error', () => {});
  const closed = new Promise((resolve) => socket.once('close', resolve));
  return { socket, lines, closed, send: (data) => socket.write(data) };
}

test('ls lists the running cluster; status --json matches its workers; status prints a table', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '2']);
  assert.match(cli.output, new RegExp(`primary pid ${cli.pid}, control: rcluster status web`));

  const ls = await rcluster(t, home, ['ls']);
  assert.strictEqual(ls.code, 0, ls.output);
  assert.match(ls.stdout, /^NAME\s+PID\s+STATE\s+WORKERS\s+UPTIME\s+ADDRESSES$/m);
  assert.match(ls.stdout, new RegExp(`^web\\s+${cli.pid}\\s+running\\s+2\\s+\\d+[smhd]\\s+.*${cli.port}`, 'm'));
  const listed = JSON.parse((await rcluster(t, home, ['ls', '--json'])).stdout);
  assert.strictEqual(listed.length, 1);
  assert.deepStrictEqual([listed[0].name, listed[0].pid, listed[0].state, listed[0].workers], ['web', cli.pid, 'running', 2]);
  assert.strictEqual(listed[0].script, fixture('cli-worker.js'));

  const status = await statusJson(t, home, 'web');
  assert.deepStrictEqual([status.name, status.pid, status.state, status.workers.length], ['web', cli.pid, 'running', 2]);
  const workers = appWorkers(status);
  assert.deepStrictEqual(workers.map((w) => w.pid).sort(), childrenOf(cli.pid).sort());
  assert.deepStrictEqual(workers.map((w) => w.instance).sort(), [0, 1]);
  for (const w of workers) {
    assert.strictEqual(w.state, 'ready');
    assert.strictEqual(w.restarts, 0);
    assert.ok(w.memory === null || w.memory > 1e6, `memory ${w.memory}`);
    assert.ok(w.cpu === null || (w.cpu >= 0 && w.cpu <= 100 * require('node:os').availableParallelism()), `cpu ${w.cpu}`);
    assert.ok(w.startedAt <= Date.now() && w.uptime >= 0);
  }

  const table = await rcluster(t, home, ['status', 'web']);
  assert.strictEqual(table.code, 0, table.output);
  const [header, columns, ...rows] = table.stdout.trimEnd().split('\n');
  assert.match(header, new RegExp(`^web \\(pid ${cli.pid}\\) running on .*:${cli.port}, up \\d+[smhd]$`));
  assert.match(columns, /^ID\s+PID\s+KIND\s+STATE\s+RESTARTS\s+UPTIME\s+MEMORY\s+CPU\s+LOOP DELAY$/);
  assert.strictEqual(rows.length, 2);
  for (const w of workers) assert.ok(rows.some((row) => new RegExp(`^${w.id}\\s+${w.pid}\\s+app\\s+ready\\s+0\\s`).test(row)), table.stdout);
});

test("the primary's JavaScript busy: status and stop are still answered, by the Rust primary", async (t) => {
  const home = newHome(t);
  const primary = spawnNode(t, [fixture('busy-primary.js')], { env: { ...process.env, RCLUSTER_HOME: home, BUSY_MS: '30000' } });
  await waitForOutput(primary, /busy from now/, 20_000);
  const status = await statusJson(t, home, 'busy');
  assert.strictEqual(status.pid, primary.pid);
  assert.deepStrictEqual(status.workers.map((w) => [w.kind, w.state]), [['app', 'ready']]);
  const stop = await rcluster(t, home, ['stop', 'busy']);
  assert.strictEqual(stop.code, 0, stop.output);
  await until(() => !alive(status.workers[0].pid), 10_000, 'the worker gone');
  // The answers came while the loop still ran: the busy spell (30 s) has not ended.
  assert.doesNotMatch(primary.output, /busy no more/);
});

test('reload under load: every worker replaced, not one request fails', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '2']);
  const before = appWorkers(await statusJson(t, home, 'web')).map((w) => w.pid);
  const keepAlive = steadyLoad(cli.port, { connections: 4, keepAlive: true });
  const fresh = steadyLoad(cli.port, { connections: 2, keepAlive: false });
  await until(() => keepAlive.bodies.length > 20 && fresh.bodies.length > 20, 10_000, 'requests before the reload');
  const reload = await rcluster(t, home, ['reload', 'web']);
  const served = keepAlive.bodies.length + fresh.bodies.length;
  await until(() => keepAlive.bodies.length + fresh.bodies.length > served + 20, 10_000, 'requests after the reload');
  const [a, b] = await Promise.all([keepAlive.stop(), fresh.stop()]);
  assert.strictEqual(reload.code, 0, reload.output);
  assert.match(reload.stdout, /^reloaded web: 2 workers replaced in \d+ ms$/m);
  assert.deepStrictEqual([...a.failures, ...b.failures].map((e) => e.message), []);
  // The old workers leave once their replacements are ready; status may list them until then.
  const after = await until(async () => {
    const pids = appWorkers(await statusJson(t, home, 'web')).map((w) => w.pid);
    return pids.length === 2 && pids.every((pid) => !before.includes(pid)) && pids;
  }, 10_000, 'status to list two new workers only');
  const servedBy = new Set([...a.bodies, ...b.bodies].map(Number));
  assert.ok(after.some((pid) => servedBy.has(pid)), 'the new workers served requests');
});

test('scale 3 then scale 1: the cluster runs that many app workers', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '2']);
  const up = await rcluster(t, home, ['scale', 'web', '3']);
  assert.strictEqual(up.code, 0, up.output);
  assert.match(up.stdout, /^scaled web to 3 workers$/m);
  assert.strictEqual(appWorkers(await statusJson(t, home, 'web')).length, 3);
  assert.strictEqual((await statusJson(t, home, 'web')).workers.filter((w) => w.state === 'ready').length, 3);
  const down = await rcluster(t, home, ['scale', 'web', '1']);
  assert.strictEqual(down.code, 0, down.output);
  assert.match(down.stdout, /^scaled web to 1 workers$/m);
  await until(() => childrenOf(cli.pid).length === 1, 10_000, 'the retired workers to leave');
  await until(async () => (await statusJson(t, home, 'web')).workers.length === 1, 10_000, 'status to list one worker');
  const listed = JSON.parse((await rcluster(t, home, ['ls', '--json'])).stdout);
  assert.strictEqual(listed[0].workers, 1);
  assert.match((await get(cli.port)).body, /^\d+$/);
});

test('restart 1 replaces worker 1 only; an unknown id is an error', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '2']);
  const before = await statusJson(t, home, 'web');
  const one = before.workers.find((w) => w.id === 1);
  const other = before.workers.find((w) => w.id !== 1);
  assert.ok(one && other, JSON.stringify(before));
  const restart = await rcluster(t, home, ['restart', 'web', '1']);
  assert.strictEqual(restart.code, 0, restart.output);
  assert.match(restart.stdout, /^restarted worker 1 of web: worker \d+ took its place in \d+ ms$/m);
  await until(() => !alive(one.pid), 10_000, 'worker 1 to leave');
  const after = await until(async () => {
    const status = await statusJson(t, home, 'web');
    return status.workers.length === 2 && status;
  }, 10_000, 'status to list two workers');
  assert.ok(!after.workers.some((w) => w.id === 1 || w.pid === one.pid), 'worker 1 is gone');
  const kept = after.workers.find((w) => w.id === other.id);
  assert.ok(kept && kept.pid === other.pid && alive(other.pid), 'the other worker was left alone');
  const replacement = after.workers.find((w) => w.id !== other.id);
  assert.strictEqual(replacement.slot, one.slot);
  assert.strictEqual(replacement.instance, one.instance);
  assert.match((await get(cli.port)).body, /^\d+$/);

  const unknown = await rcluster(t, home, ['restart', 'web', '99']);
  assert.strictEqual(unknown.code, 1, unknown.output);
  assert.match(unknown.stderr, /^rcluster: .*\(ERR_RCLUSTER_UNKNOWN_WORKER\)$/m);
});

test('logs shows what the workers printed, stderr on stderr; --follow shows new lines', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '1']);
  const [worker] = childrenOf(cli.pid);
  const id = (await statusJson(t, home, 'web')).workers[0].id;
  await waitForOutput(cli, new RegExp(`warn from ${worker}`));
  const logs = await rcluster(t, home, ['logs', 'web', '--lines', '50']);
  assert.strictEqual(logs.code, 0, logs.output);
  assert.match(logs.stdout, new RegExp(`^${id}\\|app\\| hello from ${worker} greeting=`, 'm'));
  assert.match(logs.stderr, new RegExp(`^${id}\\|app\\| warn from ${worker}$`, 'm'));
  assert.doesNotMatch(logs.stdout, /warn from/);
  const last = await rcluster(t, home, ['logs', 'web', '--lines', '1']);
  assert.strictEqual(last.code, 0, last.output);
  assert.strictEqual((last.stdout + last.stderr).trim().split('\n').length, 1, last.output);

  const follow = spawnNode(t, [bin, 'logs', 'web', '--follow'], { env: { ...process.env, RCLUSTER_HOME: home } });
  await waitForOutput(follow, new RegExp(`\\|app\\| hello from ${worker} `));
  const scale = await rcluster(t, home, ['scale', 'web', '2']);
  assert.strictEqual(scale.code, 0, scale.output);
  const added = childrenOf(cli.pid).find((pid) => pid !== worker);
  await waitForOutput(follow, new RegExp(`\\|app\\| hello from ${added} `));
  await waitForOutput(follow, new RegExp(`\\|app\\| warn from ${added}`));
  // A follower ends when the cluster stops.
  cli.kill('SIGTERM');
  const { code } = await follow.exited;
  assert.strictEqual(code, 0, follow.output);
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});

test('stop: the foreground CLI exits 0 and no process is left; then the name is free', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '2', '--agent', fixture('plain-agent.js')]);
  const processes = descendants(cli.pid);
  assert.ok(processes.length >= 3, `${processes}`);
  const stop = await rcluster(t, home, ['stop', 'web']);
  assert.strictEqual(stop.code, 0, stop.output);
  assert.match(stop.stdout, new RegExp(`^stopping web \\(pid ${cli.pid}\\)\\nstopped\\n$`));
  const { code, signal } = await cli.exited;
  assert.deepStrictEqual({ code, signal }, { code: 0, signal: null }, cli.output);
  for (const pid of processes) await until(() => !alive(pid), 5000, `process ${pid} to end`);
  const status = await rcluster(t, home, ['status', 'web']);
  assert.strictEqual(status.code, 3, status.output);
  assert.match(status.stderr, /^rcluster: no cluster named web is running \(rcluster ls lists them\)/);
  const again = await startCli(t, home, 'web', ['-i', '1']);
  assert.strictEqual((await statusJson(t, home, 'web')).pid, again.pid);
});

test('a stale socket: ls skips it, the verbs say no such cluster, and a new start takes the name', async (t) => {
  const home = newHome(t);
  const killed = await startCli(t, home, 'web', ['-i', '1']);
  const other = await startCli(t, home, 'api', ['-i', '1']);
  const [worker] = childrenOf(killed.pid);
  process.kill(killed.pid, 'SIGKILL');
  await killed.exited;
  await until(() => !alive(worker), 10_000, 'the workers of the killed primary to end');
  assert.ok(fs.existsSync(path.join(home, 'web.sock')), 'the socket of the killed primary is left behind');

  const ls = await rcluster(t, home, ['ls']);
  assert.strictEqual(ls.code, 0, ls.output);
  assert.strictEqual(ls.stderr, '');
  assert.doesNotMatch(ls.stdout, /^web\s/m);
  assert.match(ls.stdout, new RegExp(`^api\\s+${other.pid}\\s`, 'm'));
  const status = await rcluster(t, home, ['status', 'web']);
  assert.strictEqual(status.code, 3, status.output);
  assert.match(status.stderr, /no cluster named web is running/);

  const restarted = await startCli(t, home, 'web', ['-i', '1']);
  assert.strictEqual((await statusJson(t, home, 'web')).pid, restarted.pid);
});

test('a second start with a name in use exits 1 naming the pid that holds it; the first goes on', async (t) => {
  const home = newHome(t);
  const first = await startCli(t, home, 'web', ['-i', '1']);
  const second = spawnNode(t, [bin, 'start', fixture('cli-worker.js'), '-i', '1', '--name', 'web'], { env: { ...process.env, RCLUSTER_HOME: home } });
  const { code } = await second.exited;
  assert.strictEqual(code, 1, second.output);
  assert.match(second.output, /ERR_RCLUSTER_NAME_IN_USE/);
  assert.match(second.output, new RegExp(`\\b${first.pid}\\b`));
  assert.doesNotMatch(second.output, /worker \d+ started/);
  assert.strictEqual((await statusJson(t, home, 'web')).pid, first.pid);
});

test('a client of another user is refused: by the folder (EACCES), then by the peer check', { skip: process.getuid() !== 0 && 'needs root to run a client as nobody' }, async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '1']);
  assert.ok(reachableByOthers(bin, 0o004), `${bin} must be readable by nobody for this test: open the checkout's folders to others`);
  const asNobody = { uid: NOBODY, gid: NOBODY, cwd: '/', node: nodeForOthers(t) };

  // The folder is 0700: nobody cannot even reach the socket.
  assert.strictEqual(fs.statSync(home).mode & 0o777, 0o700);
  const denied = await rcluster(t, home, ['status', 'web'], asNobody);
  assert.strictEqual(denied.code, 1, denied.output);
  assert.match(denied.stderr, /^rcluster: cannot connect to cluster web: permission denied .*\(EACCES\)$/m);

  // Folder and socket opened to everyone: the primary checks who connects.
  fs.chmodSync(home, 0o777);
  fs.chmodSync(cli.socket, 0o777);
  const forbidden = await rcluster(t, home, ['status', 'web'], asNobody);
  assert.strictEqual(forbidden.code, 1, forbidden.output);
  assert.match(forbidden.stderr, /\(ERR_RCLUSTER_CONTROL_FORBIDDEN\)$/m);
  const stop = await rcluster(t, home, ['stop', 'web'], asNobody);
  assert.strictEqual(stop.code, 1, stop.output);
  assert.match(stop.stderr, /ERR_RCLUSTER_CONTROL_FORBIDDEN/);
  await waitForOutput(cli, /warning: .*\(ERR_RCLUSTER_CONTROL_FORBIDDEN\)/);
  assert.strictEqual((await statusJson(t, home, 'web')).state, 'running');
  assert.match((await get(cli.port)).body, /^\d+$/);
});

test('malformed requests get errors on an open connection; an oversized one closes it; the cluster keeps serving', async (t) => {
  const home = newHome(t);
  const cli = await startCli(t, home, 'web', ['-i', '1']);
  const client = rawClient(cli.socket);
  const requests = [
    'this is not JSON\n',
    '[1, 2]\n',
    '"status"\n',
    '{"id": 3, "command": "launch"}\n',
    '{"id": 4}\n',
    '{"id": 5, "command": "scale", "workers": 0}\n',
    '{"id": 6, "command": "scale", "workers": "many"}\n',
    '{"id": 7, "command": "reload", "parallel": "all"}\n',
  ];
  for (const request of requests) client.send(request);
  client.send('{"id": 8, "command": "info"}\n');
  await until(() => client.lines.length === requests.length + 1, 10_000, () => `answers (got ${JSON.stringify(client.lines)})`);
  for (const [index, answer] of client.lines.slice(0, -1).entries()) {
    assert.strictEqual(answer.ok, false, requests[index]);
    assert.strictEqual(answer.error.code, 'ERR_RCLUSTER_CONTROL_BAD_REQUEST', requests[index]);
    assert.strictEqual(typeof answer.error.message, 'string');
  }
  assert.deepStrictEqual(client.lines.slice(3, -1).map((answer) => answer.id), [3, 4, 5, 6, 7]);
  const info = client.lines[client.lines.length - 1];
  assert.deepStrictEqual([info.id, info.ok, info.result.name, info.result.pid], [8, true, 'web', cli.pid]);
  client.socket.destroy();

  const big = rawClient(cli.socket);
  big.send(`{"id": 1, "command": "status", "pad": "${'x'.repeat(70 * 1024)}"}\n`);
  await big.closed;
  assert.strictEqual(big.lines.length, 1, JSON.stringify(big.lines));
  assert.strictEqual(big.lines[0].ok, false);
  assert.strictEqual(big.lines[0].error.code, 'ERR_RCLUSTER_CONTROL_REQUEST_TOO_LARGE');

  // Without a newline either: the line is too long once it passes 64 KiB.
  const endless = rawClient(cli.socket);
  endless.send('x'.repeat(65 * 1024 + 1));
  await endless.closed;
  assert.strictEqual(endless.lines[0].error.code, 'ERR_RCLUSTER_CONTROL_REQUEST_TOO_LARGE');

  assert.match((await get(cli.port)).body, /^\d+$/);
  assert.strictEqual((await statusJson(t, home, 'web')).state, 'running');
  assert.strictEqual(childrenOf(cli.pid).length, 1);
});

test('--no-control: no socket, and the verbs find no cluster', async (t) => {
  const home = newHome(t);
  const cli = spawnNode(t, [bin, 'start', fixture('cli-worker.js'), '-i', '1', '--name', 'quiet', '--no-control'], { env: { ...process.env, RCLUSTER_HOME: home } });
  await waitForOutput(cli, /1 workers ready/);
  assert.match(cli.output, /primary pid \d+, no control socket/);
  assert.ok(!fs.existsSync(path.join(home, 'quiet.sock')));
  const status = await rcluster(t, home, ['status', 'quiet']);
  assert.strictEqual(status.code, 3, status.output);
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});
