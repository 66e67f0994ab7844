'use strict';

// What every bench needs: start a primary in its own process, read its CPU time and memory
// from /proc, run wrk, and stop everything it started. For the benches across hosts: a free TCP
// port, a redis-server of the bench's own, processes spoken to over IPC, and medians.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function rssMiB(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}

/** Spawns a primary; resolves with its first stdout line parsed as JSON. */
function startPrimary(args, env, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    let out = '';
    const timer = setTimeout(() => {
      stopPrimary(child);
      reject(new Error(`${args.join(' ')} did not report ready within ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const newline = out.indexOf('\n');
      if (newline === -1) return;
      clearTimeout(timer);
      resolve({ child, info: JSON.parse(out.slice(0, newline)) });
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited with ${code} before it was ready`));
    });
  });
}

/** SIGTERM, then SIGKILL of the whole process group after 5 s. */
function stopPrimary(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Runs wrk; resolves with requests, req/s and errors. */
function wrk({ port, seconds, connections, threads, close }) {
  const args = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency'];
  if (close) args.push('-H', 'Connection: close');
  args.push(`http://127.0.0.1:${port}/`);
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with ${code}: ${out}`));
      const number = (re) => {
        const m = re.exec(out);
        return m ? Number(m[1]) : 0;
      };
      const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      resolve({
        requests: number(/(\d+) requests in/),
        rps: number(/Requests\/sec:\s+([\d.]+)/),
        errors: (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + number(/Non-2xx or 3xx responses: (\d+)/),
        p99: (/^\s+99%\s+(\S+)/m.exec(out) || [])[1],
      });
    });
  });
}

function requireWrk() {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (error) {
    if (error.code === 'ENOENT') {
      throw new Error('wrk is not installed (Debian/Ubuntu: apt-get install wrk)');
    }
  }
}

/** A TCP port of 127.0.0.1 that nothing listens on (just now). */
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

/** What start() and startRedis() started: stopAll() SIGKILLs each one's process group. */
const started = [];

/** SIGKILL of the process group that `pid` leads (nothing if it is gone). */
function killGroup(pid) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone
  }
}

function stopAll() {
  for (const child of started) killGroup(child.pid);
}

/**
 * Spawns `program` in a process group of its own, with an IPC channel: what it sends lands in
 * `child.messages` (see waitForMessage). stdout is ignored, stderr inherited.
 */
function start(program, args, env) {
  const child = spawn(program, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'], detached: true });
  child.messages = [];
  child.on('message', (m) => child.messages.push(m));
  started.push(child);
  return child;
}

/** Polls `child.messages` until `test` finds one; fails if the process exits first, or after `ms`. */
async function waitForMessage(child, test, what, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = child.messages.find(test);
    if (found) return found;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode})`);
    if (Date.now() > deadline) throw new Error(`${what}: nothing within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Starts a redis-server of the bench's own, with nothing saved to disk: on TCP 127.0.0.1 at a free
 * port, or with `unixSocketDir`, on a unix socket in that folder (and no TCP). Resolves to
 * { child, url } once it accepts connections; stopAll() ends it.
 */
function startRedis({ unixSocketDir } = {}) {
  return (unixSocketDir ? Promise.resolve(null) : freePort()).then(
    (port) =>
      new Promise((resolve, reject) => {
        const socket = unixSocketDir && path.join(unixSocketDir, 'redis.sock');
        const where = socket ? ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', unixSocketDir] : ['--port', String(port), '--bind', '127.0.0.1'];
        const child = spawn('redis-server', [...where, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
        started.push(child);
        let output = '';
        const timer = setTimeout(() => reject(new Error(`redis-server not ready within 10 s: ${output}`)), 10_000);
        const fail = (error) => {
          clearTimeout(timer);
          reject(error.code === 'ENOENT' ? new Error('redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)') : error);
        };
        child.on('error', fail);
        child.on('exit', (code, signal) => fail(new Error(`redis-server exited (${code ?? signal}): ${output}`)));
        const onData = (data) => {
          output += data;
          if (!/ready to accept connections/i.test(output)) return;
          clearTimeout(timer);
          // Its log from now on is read and dropped, so that it never blocks on a full pipe.
          child.stdout.off('data', onData);
          child.stdout.resume();
          resolve({ child, url: socket ? `unix://${socket}` : `redis://127.0.0.1:${port}` });
        };
        child.stdout.on('data', onData);
      }),
  );
}

/** The middle value (the upper one of an even count). */
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

/** Nearest-rank percentile of sorted values. */
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];

module.exports = {
  cpuSeconds,
  rssMiB,
  startPrimary,
  stopPrimary,
  wrk,
  requireWrk,
  freePort,
  start,
  waitForMessage,
  startRedis,
  killGroup,
  stopAll,
  median,
  percentile,
};
