'use strict';

// Shared by the integration tests: real clusters, real sockets, and cleanup that runs even
// when a test fails. Every wait has a timeout; nothing sleeps blindly.

const fs = require('node:fs');
const os = require('node:os');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const rcluster = require('..');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

// Each test file gets its own control folder (src/operate/home.rs): files run at once, and
// their clusters of the same fixture would otherwise claim the same name.
if (!process.env.RCLUSTER_HOME) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-home-'));
  process.env.RCLUSTER_HOME = home;
  process.on('exit', () => fs.rmSync(home, { recursive: true, force: true }));
}

/** Resolves with the event's arguments, or rejects after `ms`. */
function once(emitter, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, listener);
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    const listener = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, listener);
  });
}

/** Polls `check` every 20 ms until it returns a truthy value; rejects after `ms`. */
async function until(check, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The state letter and command name of a process from /proc, or null if it is gone. */
function procStat(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], ppid: Number(fields[1]), pgid: Number(fields[2]), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) };
  } catch {
    return null;
  }
}

/** Whether a process runs: a zombie has exited, whoever has yet to reap it. */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if (error.code !== 'EPERM') return false;
  }
  const stat = procStat(pid);
  return stat !== null && stat.state !== 'Z';
}

/** Pids of the live children of `pid` (zombies excluded), `rcluster-guard` included or not. */
function childrenOf(pid, { guard = false } = {}) {
  const children = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (!stat || stat.ppid !== pid || stat.state === 'Z') continue;
    if (stat.comm === 'rcluster-guard' && !guard) continue;
    children.push(Number(entry));
  }
  return children;
}

/** Every live process under `pid`, rcluster's guard included unless `guard: false`. */
function descendants(pid, { guard = true } = {}) {
  return childrenOf(pid, { guard }).flatMap((child) => [child, ...descendants(child, { guard })]);
}

/** A new temporary folder, removed when the test ends. */
function tempDir(t, prefix = 'rcluster-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts a cluster that is stopped (SIGKILL at once) when the test ends, whatever happened. */
function startCluster(t, options) {
  const cluster = rcluster.start(options);
  const pids = new Set();
  cluster.on('fork', (w) => pids.add(w.pid));
  // Warnings are expected in some tests; keep them off stderr.
  cluster.on('warning', () => {});
  t.after(async () => {
    await Promise.race([cluster.stop({ timeout: 0 }), new Promise((r) => setTimeout(r, 5000))]);
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  return cluster;
}

/**
 * A "release" on disk that test/fixtures/versioned-app.js reads at boot (its workers answer
 * `version:pid`); `deploy(version)` changes it for the workers started after.
 */
function release(t, version) {
  const file = path.join(tempDir(t, 'rcluster-release-'), 'VERSION');
  const deploy = (v) => fs.writeFileSync(file, v);
  deploy(version);
  return { file, deploy };
}

/** A cluster of versioned-app.js at release 'v1', 2 workers unless told; resolves once ready. */
async function startVersionedApp(t, options = {}) {
  const { file, deploy } = release(t, 'v1');
  const cluster = startCluster(t, { exec: fixture('versioned-app.js'), workers: 2, env: { VERSION_FILE: file }, killTimeout: 3000, ...options });
  const port = await readyPort(cluster);
  return { cluster, port, deploy };
}

/** The app workers that are not leaving. */
function appWorkers(cluster) {
  return Object.values(cluster.workers).filter((w) => w.kind === 'app' && !w.exitedAfterDisconnect);
}

/** The port the cluster's workers listen on, once the cluster is ready. */
async function readyPort(cluster) {
  let port;
  cluster.on('listening', (w, address) => (port = address.port));
  await cluster.ready;
  return port;
}

/** One HTTP GET on a fresh connection; resolves with { status, body }. */
function get(port, { path: urlPath = '/', timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

/** Runs `count` requests, `concurrency` at a time; resolves with bodies and errors. */
async function load(port, { count, concurrency }) {
  const bodies = [];
  const errors = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next += 1;
        try {
          bodies.push((await get(port)).body);
        } catch (error) {
          errors.push(error);
        }
      }
    }),
  );
  return { bodies, errors };
}

/**
 * Requests without a pause until stopped, from `connections` clients, each on one keep-alive
 * connection or on a new connection per request. `stop()` resolves with what was served and
 * every failure.
 */
function steadyLoad(port, { connections, keepAlive, path: urlPath = '/' }) {
  const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: connections }) : false;
  const bodies = [];
  const failures = [];
  let running = true;
  const one = () =>
    new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent, timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => {
          if (res.statusCode === 200) bodies.push(body);
          else failures.push(new Error(`status ${res.statusCode}`));
          resolve();
        });
        res.on('error', (error) => {
          failures.push(error);
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (error) => {
        failures.push(error);
        resolve();
      });
    });
  const clients = Array.from({ length: connections }, async () => {
    while (running) await one();
  });
  return {
    bodies,
    failures,
    async stop() {
      running = false;
      await Promise.all(clients);
      if (agent) agent.destroy();
      return { bodies, failures };
    },
  };
}

/**
 * Starts `program` in its own process group, collecting its output in `child.output`; the whole
 * group is SIGKILLed when the test ends.
 */
function spawnProgram(t, program, args, options = {}) {
  // Its own control folder, unless the test chose one: a primary this file started before may
  // still be dying (SIGKILL is not instant) and hold its cluster's name a moment longer.
  const env = options.env ?? process.env;
  if (env.RCLUSTER_HOME === process.env.RCLUSTER_HOME) options = { ...options, env: { ...env, RCLUSTER_HOME: tempDir(t, 'rcluster-home-') } };
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options });
  child.output = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => (child.output += d));
  child.stderr.on('data', (d) => (child.output += d));
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  });
  return child;
}

function spawnNode(t, args, options = {}) {
  return spawnProgram(t, process.execPath, args, options);
}

/** Resolves once the child's output matches `pattern`; returns the match. */
function waitForOutput(child, pattern, ms = 10_000) {
  return until(() => pattern.exec(child.output), ms, `output matching ${pattern} (got: ${child.output})`);
}

/** A TCP port on 127.0.0.1 that nobody listens on now (for a program that must be told one). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

module.exports = {
  freePort,
  fixture,
  tempDir,
  once,
  until,
  alive,
  procStat,
  childrenOf,
  descendants,
  startCluster,
  readyPort,
  release,
  startVersionedApp,
  appWorkers,
  get,
  load,
  steadyLoad,
  spawnProgram,
  spawnNode,
  waitForOutput,
};
