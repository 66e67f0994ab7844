'use strict';

// Shared by the tests of clusters that span hosts (option `redis`): a real redis-server on a unix
// socket of the test's own, and hosts, each its own primary (test/fixtures/host-primary.js) with
// 2 app workers, on one machine.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { fixture, tempDir, until, alive, spawnProgram } = require('./helpers');

function installed(program) {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// Outside CI a machine without redis-server skips these; in CI (which installs it) they run.
const skip = !installed('redis-server') && !process.env.CI && 'redis-server is not installed (apt-get install redis-server)';

/** A redis-server on a unix socket in a folder of its own, stopped when the test ends. */
async function startRedis(t) {
  const dir = tempDir(t, 'rcluster-redis-');
  const socket = path.join(dir, 'redis.sock');
  const redis = {
    url: `unix://${socket}`,
    socket,
    process: null,
    async start() {
      this.process = spawnProgram(t, 'redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir]);
      await until(() => /ready to accept connections/i.test(this.process.output), 10_000, () => `redis-server ready (got: ${this.process.output})`);
    },
    /** SIGSTOP: the server hangs, answering nothing, until `resume()`. */
    pause() {
      process.kill(this.process.pid, 'SIGSTOP');
    },
    resume() {
      process.kill(this.process.pid, 'SIGCONT');
    },
    async kill() {
      const { pid } = this.process;
      process.kill(pid, 'SIGKILL');
      await until(() => !alive(pid), 5_000, 'redis-server gone');
    },
  };
  await redis.start();
  return redis;
}

/** Reads the JSON lines of a worker's record file (none yet: []). */
function lines(file) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw error;
  }
}

/**
 * Starts host `hostId` of `namespace` on `redis`; resolves once its workers are ready. `host.events`
 * holds what it told (host-join, host-leave, warning); `host.do(worker, op)` has a worker act.
 */
async function startHost(t, { redis, namespace, hostId, dir, options = {} }) {
  const hostOptions = { redis: redis.url, namespace, hostId, name: `host-${hostId}`, ...options };
  const child = spawnProgram(t, process.execPath, [fixture('host-primary.js')], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, HOST_OPTIONS: JSON.stringify(hostOptions), RECORD_DIR: dir },
  });
  const host = {
    hostId,
    child,
    events: [],
    workers: null,
    do: (worker, op) => child.send({ cmd: 'do', worker, op }),
    received: (id) => lines(path.join(dir, `${hostId}-${id}.received`)),
    errors: (id) => lines(path.join(dir, `${hostId}-${id}.errors`)),
    warnings: (code) => host.events.filter((e) => e.event === 'warning' && e.code === code),
  };
  child.on('message', (message) => host.events.push(message));
  const ready = await until(() => host.events.find((e) => e.event === 'ready'), 20_000, () => `host ${hostId} ready (output: ${child.output})`);
  host.workers = ready.workers;
  return host;
}

/**
 * A redis-server and hosts `ids` of one namespace, each seeing the others; `runs()` reads the
 * file the hosts' workers share (test/fixtures/host-worker.js writes a line per handler run).
 */
async function startHosts(t, ids) {
  const redis = await startRedis(t);
  const dir = tempDir(t, 'rcluster-hosts-');
  const namespace = `ns${process.pid}x${Date.now() % 100000}`;
  const hosts = [];
  for (const hostId of ids) hosts.push(await startHost(t, { redis, namespace, hostId, dir }));
  for (const host of hosts) {
    for (const other of ids.filter((id) => id !== host.hostId)) {
      await until(() => host.events.some((e) => e.event === 'host-join' && e.host === other), 10_000, `${host.hostId} sees ${other} join`);
    }
  }
  return { redis, dir, hosts, runs: () => lines(path.join(dir, 'runs')) };
}

module.exports = { skip, startRedis, lines, startHost, startHosts };
