'use strict';

// systemd: the notifications of `rcluster start` (NOTIFY_SOCKET, WATCHDOG_USEC), and socket
// activation (LISTEN_FDS). Node has no datagram Unix sockets, so a small python3 program plays
// systemd's side: it receives the notifications, or binds the socket and execs the CLI with it.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { fixture, tempDir, until, spawnProgram, waitForOutput, childrenOf, get } = require('./helpers');

const cli = path.join(__dirname, '..', 'bin', 'rcluster.js');
const worker = fixture('http-worker.js');

// Prints each datagram it receives as one line, its newlines as '|'.
const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('bound', flush=True)
while True:
    data = s.recv(65536)
    print(data.decode('utf-8', 'replace').replace('\\n', '|'), flush=True)
`;

// Binds a listening TCP socket on a free port as descriptor 3, then becomes the CLI with
// LISTEN_PID (its own pid: exec keeps it) and LISTEN_FDS=1, as systemd would start it.
const ACTIVATOR = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(('0.0.0.0', 0))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
    s.close()
os.set_inheritable(3, True)
port = socket.socket(fileno=os.dup(3)).getsockname()[1]
print('port', port, flush=True)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', PORT=str(port))
os.execve(sys.argv[1], sys.argv[1:], env)
`;

/** The notifications received so far, one per datagram. */
function notifications(receiver) {
  return receiver.output.split('\n').filter((line) => line && line !== 'bound');
}

/** Resolves once a notification matching `pattern` arrived after the first `after` ones. */
function notified(receiver, pattern, after = 0, ms = 10_000) {
  return until(() => {
    const index = notifications(receiver).findIndex((line, i) => i >= after && pattern.test(line));
    return index >= 0 && { index };
  }, ms, () => `a notification matching ${pattern} (got: ${JSON.stringify(notifications(receiver))})`);
}

test('rcluster start tells systemd when it is ready, reloading and stopping, and pings its watchdog', async (t) => {
  const dir = tempDir(t);
  const socketPath = path.join(dir, 'notify.sock');
  const receiver = spawnProgram(t, 'python3', ['-c', RECEIVER, socketPath]);
  await waitForOutput(receiver, /bound/);
  const env = { ...process.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '200000' };
  delete env.WATCHDOG_PID;
  const primary = spawnProgram(t, process.execPath, [cli, 'start', worker, '-i', '2'], { env });

  const ready = await notified(receiver, /^READY=1\|STATUS=/);
  assert.ok(!notifications(receiver).slice(0, ready.index).some((l) => /READY=1/.test(l)));
  // The notifications are the primary's alone: a worker that said READY=1 would speak for all.
  const workers = childrenOf(primary.pid);
  assert.strictEqual(workers.length, 2);
  for (const pid of workers) {
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    assert.ok(!environ.some((v) => /^(NOTIFY_SOCKET|WATCHDOG_USEC)=/.test(v)), `worker ${pid} has no NOTIFY_SOCKET`);
  }
  // Every 100 ms (half of WATCHDOG_USEC), while the loop answers.
  const pings = () => notifications(receiver).filter((l) => l === 'WATCHDOG=1').length;
  const seen = pings();
  await until(() => pings() >= seen + 3, 5_000, 'three watchdog pings');

  process.kill(primary.pid, 'SIGHUP');
  const reloading = await notified(receiver, /^RELOADING=1\|MONOTONIC_USEC=\d+\|STATUS=reloading/, ready.index + 1);
  const [, usec] = /MONOTONIC_USEC=(\d+)/.exec(notifications(receiver)[reloading.index]);
  assert.ok(Number(usec) > 0);
  await notified(receiver, /^READY=1\|STATUS=ready: reloaded 2 workers/, reloading.index + 1, 20_000);

  process.kill(primary.pid, 'SIGTERM');
  await notified(receiver, /^STOPPING=1\|STATUS=stopping/);
  assert.deepStrictEqual(await primary.exited, { code: 0, signal: null });
});

/** The inode of each TCP socket listening on `port`, from /proc/net/tcp and tcp6. */
function listeningInodes(port) {
  const inodes = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      const localPort = parseInt(fields[1].split(':')[1], 16);
      // State 0A is LISTEN.
      if (localPort === port && fields[3] === '0A') inodes.push(fields[9]);
    }
  }
  return inodes;
}

test('a socket systemd passed (LISTEN_FDS) serves the workers that listen on its address', async (t) => {
  const primary = spawnProgram(t, 'python3', ['-c', ACTIVATOR, process.execPath, cli, 'start', worker, '-i', '2']);
  const [, portText] = await waitForOutput(primary, /port (\d+)/);
  const port = Number(portText);
  // The CLI is the python process itself, after exec.
  const workers = await until(() => {
    const pids = childrenOf(primary.pid);
    return pids.length === 2 && pids;
  }, 10_000, 'two workers');
  const bodies = new Set();
  await until(async () => {
    const res = await get(port).catch(() => null);
    if (res && res.status === 200) bodies.add(res.body);
    return bodies.size === 2;
  }, 10_000, () => `both workers to answer on the passed socket (got ${[...bodies]}; output ${primary.output})`);
  assert.deepStrictEqual([...bodies].sort(), workers.map(String).sort());

  // The primary bound no socket of its own: the one listening socket on the port is the one
  // systemd passed as descriptor 3.
  const passed = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${primary.pid}/fd/3`));
  assert.ok(passed, 'descriptor 3 is a socket');
  assert.deepStrictEqual(listeningInodes(port), [passed[1]]);
  // Close-on-exec, and the variables are the primary's alone.
  const flags = /flags:\s+(\d+)/.exec(fs.readFileSync(`/proc/${primary.pid}/fdinfo/3`, 'utf8'));
  assert.ok((parseInt(flags[1], 8) & 0o2000000) !== 0, 'FD_CLOEXEC on descriptor 3');
  for (const pid of workers) {
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    assert.ok(!environ.some((v) => v.startsWith('LISTEN_FDS=') || v.startsWith('LISTEN_PID=')), `worker ${pid} has no LISTEN_* variables`);
  }

  process.kill(primary.pid, 'SIGTERM');
  assert.deepStrictEqual(await primary.exited, { code: 0, signal: null });
});
