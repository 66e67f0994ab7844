'use strict';

// rcluster/think: a real ThinkJS app (fixtures/think-app) whose entry uses
// `require('rcluster/think')` instead of `require('thinkjs')`, started as ThinkJS starts it
// (`node production.js`: the primary runs ThinkJS's master side) and under `rcluster start`.
// The workers write what they do (messenger handlers, crontab runs) to a file, one JSON line each.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, until, alive, descendants, get, steadyLoad, spawnNode, waitForOutput } = require('./helpers');

const appDir = fixture('think-app');
const entry = path.join(appDir, 'production.js');
const cli = path.join(__dirname, '..', 'bin', 'rcluster.js');

/**
 * Runs the app (`args`: the entry, or the CLI and the entry) with its own folder for what it
 * writes. When the test ends the primary and every worker it logged are killed, and only then is
 * the folder removed (workers run in their own process group and write to it until they end).
 */
function runApp(t, args, extra = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-think-'));
  const env = { ...process.env, THINK_TEST_EVENTS: path.join(dir, 'events.log'), THINK_RUNTIME_PATH: path.join(dir, 'runtime'), ...extra };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_ENV;
  const primary = spawnNode(t, args, { cwd: appDir, env });
  t.after(async () => {
    const pids = [primary.pid, ...listening(primary.output).map((w) => w.pid)];
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await until(() => pids.every((pid) => !alive(pid)), 5000, () => `${pids.filter(alive)} to end`);
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });
  return { primary, env };
}

/** What the workers recorded, parsed. */
function events(env, event) {
  let text = '';
  try {
    text = fs.readFileSync(env.THINK_TEST_EVENTS, 'utf8');
  } catch {
    return [];
  }
  const all = text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
  return event ? all.filter((e) => e.event === event) : all;
}

/** The workers' "listening" log lines: [{ id, workers, pid, port }]. */
function listening(output) {
  return [...output.matchAll(/worker (\d+) of (\w+) \(pid (\d+)\) listening on (\d+)/g)].map((m) => ({
    id: Number(m[1]),
    workers: m[2],
    pid: Number(m[3]),
    port: Number(m[4]),
  }));
}

/** `node production.js` with 2 workers; resolves once both log that they listen. */
async function startApp(t, extra = {}) {
  const { primary, env } = runApp(t, [entry], extra);
  await until(() => listening(primary.output).length >= 2, 20_000, () => `both workers to listen (output: ${primary.output})`);
  const workers = listening(primary.output);
  return { primary, env, port: workers[0].port, workers };
}

async function getJson(port, urlPath) {
  const { status, body } = await get(port, { path: urlPath });
  assert.strictEqual(status, 200, `GET ${urlPath}: ${status} ${body}`);
  return JSON.parse(body);
}

test('the primary runs ThinkJS\'s master side; workers log, with THINK_WORKERS and THINK_PROCESS_ID as think-cluster sets them', async (t) => {
  const { primary, port, workers } = await startApp(t);
  assert.match(primary.output, /think master bootstrap in pid \d+/);
  assert.match(primary.output, /Workers: 2/);
  assert.match(primary.output, /ThinkJS version: 4\.0\.0/);
  // The workers' log4js lines reach the output (think-cluster would send them to its master).
  assert.deepStrictEqual(workers.map((w) => w.id).sort(), [1, 2]);
  assert.ok(workers.every((w) => w.workers === '2'), primary.output);
  const seen = new Set();
  await until(async () => {
    const info = await getJson(port, '/');
    assert.strictEqual(info.workers, '2');
    seen.add(info.id);
    return seen.size === 2;
  }, 10_000, 'an answer from each worker');
  assert.deepStrictEqual([...seen].sort(), ['1', '2']);
});

test('think.messenger.broadcast reaches every worker, the sender included', async (t) => {
  const { port, env } = await startApp(t);
  for (const token of ['a', 'b', 'c']) {
    const { sent } = await getJson(port, `/index/broadcast?token=${token}`);
    assert.strictEqual(sent, token);
    const got = await until(() => {
      const hellos = events(env, 'hello').filter((e) => e.token === token);
      return hellos.length >= 2 && hellos;
    }, 5000, `both workers to get broadcast ${token}`);
    assert.deepStrictEqual(got.map((e) => e.id).sort(), [1, 2]);
    assert.ok(got.some((e) => e.id === e.sender), 'the sender got its own broadcast');
  }
});

test('consume and runInOne, called by every worker, run in exactly one: the first worker', async (t) => {
  const { port, env } = await startApp(t);
  for (const token of ['x', 'y']) {
    await getJson(port, `/index/consume?token=${token}`);
    const decided = await until(() => {
      const d = events(env, 'decided').filter((e) => e.token === token);
      return d.length === 2 && d;
    }, 10_000, `both workers to decide on ${token}`);
    assert.deepStrictEqual(decided.filter((d) => d.ran).map((d) => d.id), [1]);
    const jobs = await until(() => {
      const j = events(env, 'job').filter((e) => e.token === token);
      const r = events(env, 'runInOne').filter((e) => e.token === token);
      return j.length >= 1 && r.length >= 1 && { j, r };
    }, 5000, `the job ${token} to run`);
    assert.deepStrictEqual(jobs.j.map((e) => e.id), [1]);
    assert.deepStrictEqual(jobs.r.map((e) => e.id), [1]);
  }
});

test('think.messenger.map: every worker\'s result in worker order; rejects on a timeout and on a dead worker', async (t) => {
  const { port } = await startApp(t);
  const { results } = await getJson(port, '/index/map');
  assert.deepStrictEqual(results.map((r) => r.id), [1, 2]);

  // Worker 2 answers after 5 s; the map gives up after 300 ms instead of waiting.
  const started = Date.now();
  const late = await getJson(port, '/index/map?slow=2&delay=5000&timeout=300');
  assert.strictEqual(late.error, 'ERR_RCLUSTER_TIMEOUT');
  assert.ok(Date.now() - started < 4000, `the timeout took ${Date.now() - started} ms`);

  // The other worker dies while it runs the handler.
  const dead = await getJson(port, '/index/map?dieUnless=1');
  assert.strictEqual(dead.error, 'ERR_RCLUSTER_WORKER_DIED');
});

test('a crontab job of type \'one\' runs once per tick in the cluster, and goes on after its worker is killed', async (t) => {
  const { env, workers } = await startApp(t);
  const first = await until(() => {
    const runs = events(env, 'cron');
    return runs.length >= 8 && runs;
  }, 10_000, 'eight crontab runs');
  // Both workers tick every 300 ms; only worker 1 runs the job.
  assert.deepStrictEqual([...new Set(first.map((e) => e.id))], [1]);
  const span = first.at(-1).at - first[0].at;
  assert.ok(first.length <= span / 300 + 2, `${first.length} runs in ${span} ms: more than one per tick`);

  const one = workers.find((w) => w.id === 1);
  process.kill(one.pid, 'SIGKILL');
  await until(() => !alive(one.pid), 5000, 'worker 1 to die');
  const after = await until(() => {
    const runs = events(env, 'cron').filter((e) => e.pid !== one.pid);
    return runs.length >= 8 && runs;
  }, 15_000, 'eight crontab runs after worker 1 died');
  // Worker 2 is now the first; its replacement (worker 3) does not run the job too.
  assert.deepStrictEqual([...new Set(after.map((e) => e.id))], [2]);
});

test('think-cluster-reload-workers and the reload signal replace both workers without a failed request', async (t) => {
  const { primary, port, workers } = await startApp(t);
  const load = steadyLoad(port, { connections: 4, keepAlive: true });
  t.after(() => load.stop());
  await until(() => load.bodies.length >= 20, 10_000, 'requests served before the reload');

  await getJson(port, '/index/reload');
  await until(() => listening(primary.output).length >= 4, 20_000, () => `two new workers (output: ${primary.output})`);
  await until(() => workers.every((w) => !alive(w.pid)), 10_000, 'the old workers to exit');
  assert.deepStrictEqual(listening(primary.output).slice(2).map((w) => w.id).sort(), [3, 4]);

  // The reload signal of the config (reloadSignal: 'SIGUSR2').
  process.kill(primary.pid, 'SIGUSR2');
  await until(() => listening(primary.output).length >= 6, 20_000, () => `two more workers (output: ${primary.output})`);
  const served = load.bodies.length;
  await until(() => load.bodies.length >= served + 20, 10_000, 'requests served after the reloads');
  const { bodies, failures } = await load.stop();
  assert.deepStrictEqual(failures.map((f) => f.message), []);
  const ids = new Set(bodies.map((b) => JSON.parse(b).id));
  assert.ok(ids.has('5') || ids.has('6'), `served by ${[...ids]}`);
});

test('a worker that crashes with onUncaughtException: () => true is replaced at once', async (t) => {
  const { primary, port, workers } = await startApp(t);
  // The crashing worker still serves this request for 4 s; its replacement must not wait for that.
  let answered = false;
  const inFlight = get(port, { path: '/index/crash?hold=4000' }).then((response) => {
    answered = true;
    return response;
  });
  const [, pid] = await waitForOutput(primary, /uncaughtException, times: 1, pid: (\d+)/, 5000);
  const crashed = workers.find((w) => w.pid === Number(pid));
  const replacement = await until(() => listening(primary.output).find((w) => w.id === 3), 10_000, () => `a replacement (output: ${primary.output})`);
  assert.strictEqual(answered, false, 'the replacement waited for the crashed worker to finish');
  assert.ok(alive(crashed.pid), 'the crashed worker left before finishing its request');
  assert.strictEqual(replacement.workers, '2');
  const { status, body } = await inFlight;
  assert.strictEqual(status, 200);
  assert.strictEqual(JSON.parse(body).crashing, crashed.id);
  await until(() => !alive(crashed.pid), 10_000, 'the crashed worker to exit');
  const info = await getJson(port, '/');
  assert.notStrictEqual(Number(info.id), crashed.id);
});

test('SIGTERM stops the app and leaves no process behind, the workers\' trees included', async (t) => {
  const { primary } = await startApp(t);
  const pids = descendants(primary.pid);
  assert.ok(pids.length >= 2, `processes under the primary: ${pids}`);
  primary.kill('SIGTERM');
  const { code } = await Promise.race([primary.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('the primary did not exit')), 10_000))]);
  assert.strictEqual(code, 0, primary.output);
  await until(() => pids.every((p) => !alive(p)), 5000, () => `${pids.filter(alive)} to end`);
});

test('stickyCluster: true fails loudly, with the reason', async (t) => {
  const { primary } = runApp(t, [entry], { THINK_TEST_STICKY: '1' });
  const { code } = await Promise.race([primary.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('the primary did not exit')), 10_000))]);
  assert.notStrictEqual(code, 0);
  assert.match(primary.output, /stickyCluster is not supported/);
  assert.strictEqual(listening(primary.output).length, 0);
});

test('under `rcluster start production.js -i 2`: the messenger, the crontab and the logs work', async (t) => {
  const { primary, env } = runApp(t, [cli, 'start', entry, '-i', '2']);
  await until(() => listening(primary.output).length >= 2, 20_000, () => `both workers to listen (output: ${primary.output})`);
  const { port } = listening(primary.output)[0];
  await getJson(port, '/index/broadcast?token=cli');
  await until(() => events(env, 'hello').filter((e) => e.token === 'cli').length === 2, 5000, 'the broadcast in both workers');
  const { results } = await getJson(port, '/index/map');
  assert.deepStrictEqual(results.map((r) => r.id), [1, 2]);
  const runs = await until(() => {
    const r = events(env, 'cron');
    return r.length >= 5 && r;
  }, 10_000, 'crontab runs');
  assert.deepStrictEqual([...new Set(runs.map((e) => e.id))], [1]);
  primary.kill('SIGTERM');
  const { code } = await primary.exited;
  assert.strictEqual(code, 0, primary.output);
});
