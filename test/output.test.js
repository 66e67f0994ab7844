'use strict';

// The children's stdout and stderr pass through the primary when the output is captured
// (`control`, on by default, or `logPrefix`): they reach the primary's own stdout and stderr
// unchanged, or line by line with `[<id> <time>] ` in front, without unbounded buffering.
// Children also get NODE_APP_INSTANCE (app workers only) and none of systemd's variables.

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const { fixture, until, spawnNode, waitForOutput } = require('./helpers');

/** The output-primary.js fixture with these options; its stdout and stderr kept apart too. */
function startPrimary(t, options, env = {}) {
  const child = spawnNode(t, [fixture('output-primary.js'), JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  child.out = '';
  child.err = '';
  child.stdout.on('data', (d) => (child.out += d));
  child.stderr.on('data', (d) => (child.err += d));
  child.command = (command) => child.stdin.write(`${JSON.stringify(command)}\n`);
  return child;
}

/** Waits for the primary's own report on its stderr (its stdout is the workers'). */
function report(child, pattern, ms = 15_000) {
  return until(() => pattern.exec(child.err), ms, () => `stderr matching ${pattern} (got: ${child.err})`);
}

async function ready(child) {
  const [, workers] = await report(child, /^READY (.*)$/m);
  return JSON.parse(workers);
}

const WORKER = { exec: 'output-worker.js', readiness: 'online', workers: 2 };

test('with the output captured, a worker\'s stdout and stderr reach the primary\'s unchanged', async (t) => {
  const child = startPrimary(t, { ...WORKER, control: true });
  const workers = await ready(child);
  for (const { id } of workers) {
    // Each worker's writes arrive whole and in order; another worker's may come between them,
    // as with an inherited stdout.
    await until(() => child.out.includes(`out ${id} tab\there "quoted" ünïcödé\n`), 10_000, `worker ${id}'s stdout (got: ${child.out})`);
    await until(() => child.out.includes(`out ${id} unterminated`), 10_000, `worker ${id}'s unfinished line (got: ${child.out})`);
    assert.ok(child.out.indexOf(`out ${id} tab`) < child.out.indexOf(`out ${id} unterminated`), 'in the order written');
    await until(() => child.err.includes(`err ${id} on stderr\n`), 10_000, `worker ${id}'s stderr (got: ${child.err})`);
  }
  assert.doesNotMatch(child.out, /\[\d+ \d{4}-/, 'no prefix');
  assert.doesNotMatch(child.out, /err \d+ on stderr/, 'stderr stays on stderr');
  assert.doesNotMatch(child.err, /out \d+ tab/, 'stdout stays on stdout');
});

test('without capture, the children inherit the primary\'s stdout and stderr', async (t) => {
  const child = startPrimary(t, { ...WORKER, control: false });
  const workers = await ready(child);
  for (const { id } of workers) {
    await until(() => child.out.includes(`out ${id} tab\there "quoted" ünïcödé\n`), 10_000, `worker ${id}'s stdout (got: ${child.out})`);
    await until(() => child.err.includes(`err ${id} on stderr\n`), 10_000, `worker ${id}'s stderr (got: ${child.err})`);
  }
});

test('with logPrefix, every line carries [id timestamp]; an unfinished line is ended when the pipe closes', async (t) => {
  const child = startPrimary(t, { ...WORKER, control: false, logPrefix: true });
  const workers = await ready(child);
  const stamp = '(\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z)';
  for (const { id } of workers) {
    const out = await until(() => new RegExp(`^\\[${id} ${stamp}\\] out ${id} tab\\there "quoted" ünïcödé$`, 'm').exec(child.out), 10_000, `worker ${id}'s prefixed stdout (got: ${child.out})`);
    const time = Date.parse(out[1]);
    assert.ok(Math.abs(Date.now() - time) < 60_000, `a current time: ${out[1]}`);
    await until(() => new RegExp(`^\\[${id} ${stamp}\\] err ${id} on stderr$`, 'm').test(child.err), 10_000, `worker ${id}'s prefixed stderr (got: ${child.err})`);
    assert.match(child.out, new RegExp(`^\\[${id} ${stamp}\\] env id=${id} kind=app`, 'm'));
  }
  // Every line of stdout has its prefix; the unfinished lines wait for the end of their pipe.
  for (const line of child.out.split('\n').filter(Boolean)) assert.match(line, /^\[\d+ \d{4}-\d\d-\d\dT[\d:.]+Z\] /);
  assert.doesNotMatch(child.out, /unterminated/);
  child.command({ stop: true });
  await report(child, /^STOPPED$/m);
  for (const { id } of workers) {
    await until(() => new RegExp(`^\\[${id} ${stamp}\\] out ${id} unterminated\\n`, 'm').test(child.out), 10_000, `worker ${id}'s last line (got: ${child.out})`);
  }
});

/** The primary's resident memory in bytes, from /proc. */
function rss(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)[1]) * 1024;
}

test('a worker that writes 50 MB to a slowly read stdout: every byte arrives and the primary does not buffer it', async (t) => {
  // Spawned here, not with spawnNode: its stdout is read at our pace, not collected.
  const options = { exec: 'output-worker.js', readiness: 'online', workers: 1 };
  const child = spawn(process.execPath, [fixture('output-primary.js'), JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, QUIET: '1' },
  });
  t.after(() => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  });
  child.output = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (child.output += d));
  await waitForOutput(child, /^READY /m, 15_000);
  const before = rss(child.pid);
  let peak = before;
  let received = 0;
  const hash = crypto.createHash('sha256');
  // About 8 MB/s: a 64 KiB read, then a pause of 8 ms.
  child.stdout.on('data', (chunk) => {
    received += chunk.length;
    hash.update(chunk);
    peak = Math.max(peak, rss(child.pid));
    child.stdout.pause();
    setTimeout(() => child.stdout.resume(), 8);
  });
  child.stdin.write(`${JSON.stringify({ send: 'flood' })}\n`);
  const [, bytes, digest] = await waitForOutput(child, /^flooded (\d+) ([0-9a-f]+)$/m, 60_000);
  await until(() => received >= Number(bytes), 30_000, () => `all ${bytes} bytes (got ${received})`);
  assert.strictEqual(received, Number(bytes));
  assert.strictEqual(hash.digest('hex'), digest, 'the bytes, unchanged and in order');
  const growth = peak - before;
  t.diagnostic(`RSS ${(before / 1048576).toFixed(1)} MiB before, ${(peak / 1048576).toFixed(1)} MiB at most`);
  assert.ok(growth < 24 * 1024 * 1024, `the primary's RSS grew by ${(growth / 1048576).toFixed(1)} MiB while 50 MB went through`);
});

test('NODE_APP_INSTANCE is 0..N-1 for the app workers, also after a scale-up, and absent in the agent; systemd\'s variables reach no child', async (t) => {
  const env = { NODE_APP_INSTANCE: '7', NOTIFY_SOCKET: '/run/systemd/notify', LISTEN_FDS: '2', LISTEN_PID: String(process.pid), WATCHDOG_USEC: '1000000' };
  const child = startPrimary(t, { exec: 'output-worker.js', agent: 'output-worker.js', readiness: 'online', workers: 2 }, env);
  const workers = await ready(child);
  assert.strictEqual(workers.length, 3);
  const seen = () => {
    const lines = [...child.out.matchAll(/env id=(\d+) kind=(\w+) instance=(\S+) notify=(\S+) listen=(\S+)/g)];
    return new Map(lines.map(([, id, kind, instance, notify, listen]) => [Number(id), { kind, instance, notify, listen }]));
  };
  await until(() => seen().size === 3, 10_000, () => `three env lines (got: ${child.out})`);
  child.command({ scale: 3 });
  await report(child, /^SCALED /m);
  await until(() => seen().size === 4, 10_000, () => `four env lines (got: ${child.out})`);
  const all = [...seen().values()];
  assert.deepStrictEqual(all.filter((w) => w.kind === 'app').map((w) => w.instance).sort(), ['0', '1', '2']);
  assert.deepStrictEqual(all.filter((w) => w.kind === 'agent').map((w) => w.instance), ['none']);
  for (const w of all) {
    assert.strictEqual(w.notify, 'none');
    assert.strictEqual(w.listen, 'none/none/none');
  }
});

for (const control of [true, false]) {
  test(`an agent that dies at startup: the error quotes its stderr (control: ${control})`, async (t) => {
    const child = startPrimary(t, { exec: 'output-worker.js', agent: 'failing-agent.js', readiness: 'online', workers: 1, control });
    const [, code, message] = await report(child, /^FAILED (\S+) (.*)$/m);
    assert.strictEqual(code, 'ERR_RCLUSTER_AGENT_FAILED');
    assert.match(JSON.parse(message), /AGENT_SECRET is not set/);
    // Its stderr still reaches ours.
    await until(() => /^Error: AGENT_SECRET is not set$/m.test(child.err), 10_000, () => `the agent's stderr (got: ${child.err})`);
  });
}
