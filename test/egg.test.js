'use strict';

// rcluster/egg: a real Egg app (fixtures/egg-app) started as eggctl starts it (egg's
// start-cluster script, which loads the framework and calls its startCluster), with its agent
// and 2 app workers run by rcluster's primary.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { fixture, until, alive, descendants, get, spawnProgram, waitForOutput, tempDir, freePort } = require('./helpers');

const ROOT = path.join(__dirname, '..');
const FRAMEWORK = path.join(ROOT, 'egg');
const APP = fixture('egg-app');
const START_CLUSTER = path.join(ROOT, 'node_modules', '@eggjs', 'scripts', 'scripts', 'start-cluster.cjs');
const EGGCTL = path.join(ROOT, 'node_modules', '.bin', 'eggctl');

async function json(port, urlPath) {
  const { status, body } = await get(port, { path: urlPath });
  assert.strictEqual(status, 200, `GET ${urlPath}: ${status} ${body}`);
  return JSON.parse(body);
}

/**
 * spawnProgram, plus the end of every process it starts, its workers' children too: the tree is
 * read as it grows (a master that exits by itself leaves its agent's children to init), and when
 * the test ends the master gets SIGTERM (egg's close), then whatever is left SIGKILL. Registered
 * before spawnProgram's own cleanup, which SIGKILLs the master's group first.
 */
function spawnTracked(t, program, args, options) {
  const seen = new Set();
  let child = null;
  let sampled = 0;
  const sample = () => {
    if (!child || Date.now() - sampled < 100) return;
    sampled = Date.now();
    for (const pid of descendants(child.pid)) seen.add(pid);
  };
  t.after(async () => {
    if (!child) return;
    sampled = 0;
    sample();
    if (alive(child.pid)) {
      try {
        child.kill('SIGTERM');
      } catch {
        // gone meanwhile
      }
      await Promise.race([child.exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    }
    for (const pid of seen) {
      if (!alive(pid)) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  });
  child = spawnProgram(t, program, args, options);
  child.tree = seen;
  child.stdout.on('data', sample);
  child.stderr.on('data', sample);
  return child;
}

/** The app's state as each app worker reports it, by pid (asks until both workers answered). */
async function workersState(port, count = 2) {
  const seen = new Map();
  await until(async () => {
    const state = await json(port, '/state');
    seen.set(state.pid, state);
    return seen.size >= count;
  }, 20_000, `${count} app workers answering /state`);
  return seen;
}

/** The app has rcluster installed: its node_modules/rcluster is this package (until the test ends). */
function installRcluster(t) {
  const modules = path.join(APP, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  fs.rmSync(path.join(modules, 'rcluster'), { force: true });
  fs.symlinkSync(ROOT, path.join(modules, 'rcluster'), 'dir');
  t.after(() => fs.rmSync(modules, { recursive: true, force: true }));
}

/** Starts the fixture app as eggctl does; resolves once egg's master says it started. */
async function startApp(t, { workers = 2, env = {}, extra = {} } = {}) {
  const port = await freePort();
  const options = { framework: FRAMEWORK, baseDir: APP, port, workers, ...extra };
  const master = spawnTracked(t, process.execPath, [START_CLUSTER, JSON.stringify(options)], {
    cwd: APP,
    env: { ...process.env, EGG_MASTER_CLOSE_TIMEOUT: '3000', ...env },
  });
  await waitForOutput(master, /\[master\] rcluster\/egg started on http:\/\/127\.0\.0\.1:\d+/, 60_000);
  return { master, port };
}

test('an Egg app under rcluster/egg: agent first, 2 app workers numbered from 1, serving HTTP, egg-ready once per process, egg-pids', async (t) => {
  const { master, port } = await startApp(t);
  const out = master.output;
  assert.match(out, /\[master\] =================== rcluster\/egg start/);
  assert.match(out, /\[master\] agent_worker#1:\d+ start with clusterPort:\d+/);
  assert.match(out, /\[master\] agent_worker#1:\d+ started \(\d+ms\)/);
  assert.match(out, /\[master\] app_worker#[12]:\d+ started at \d+, remain 1/);
  assert.match(out, /\[master\] app_worker#[12]:\d+ started at \d+, remain 0/);
  assert.ok(out.indexOf('agent_worker#1') < out.indexOf('app_worker#1'), 'the agent starts before the app workers');

  const { status, body } = await get(port);
  assert.strictEqual(status, 200);
  assert.match(body, /^hello from \d+$/);

  const states = await workersState(port);
  const agentPid = Number(/agent_worker#1:(\d+) started/.exec(out)[1]);
  for (const state of states.values()) {
    assert.strictEqual(state.eggReady, 1, 'egg-ready once per app worker');
    assert.strictEqual(state.eggReadyData.port, port);
    // Each app worker is told the agent's pid.
    assert.deepStrictEqual(state.eggPids.at(-1), [agentPid]);
  }
  const appPids = [...states.keys()].sort();
  const appWorkerPids = [...out.matchAll(/app_worker#\d+:(\d+) started at/g)].map((m) => Number(m[1])).sort();
  assert.deepStrictEqual(appPids, appWorkerPids);
});

test("egg's messenger: to app, to agent, broadcast, sendTo a pid, sendRandom, agent to app; consume / map / mapSettled", async (t) => {
  const { port } = await startApp(t);
  const states = await workersState(port);
  const [a, b] = [...states.keys()];

  // From one worker to every app worker (the sender too).
  await json(port, '/send?how=sendToApp&action=to-app');
  await until(async () => {
    const now = await workersState(port);
    return [...now.values()].every((s) => s.received.some((m) => m.action === 'to-app'));
  }, 10_000, 'to-app at both workers');

  // The agent tells every app worker (sendToApp from the agent), when asked by a worker.
  await json(port, '/send?how=sendToAgent&action=agent-say');
  await until(async () => {
    const now = await workersState(port);
    return [...now.values()].every((s) => s.received.some((m) => m.action === 'from-agent'));
  }, 10_000, 'from-agent at both workers');

  // broadcast: both app workers.
  await json(port, '/send?how=broadcast&action=to-all');
  await until(async () => {
    const now = await workersState(port);
    return [...now.values()].every((s) => s.received.some((m) => m.action === 'to-all'));
  }, 10_000, 'to-all at both workers');

  // sendTo a pid: only that worker.
  await json(port, `/send?how=sendTo&action=to-pid&to=${b}`);
  await until(async () => (await workersState(port)).get(b).received.some((m) => m.action === 'to-pid'), 10_000, 'to-pid at worker b');
  assert.ok(!(await workersState(port)).get(a).received.some((m) => m.action === 'to-pid'), 'sendTo reaches only its pid');

  // Requests: egg's messenger gains consume / map / mapSettled.
  const consumed = await json(port, '/request?how=consume&action=double&n=21');
  assert.strictEqual(consumed.result, 42);
  const mapped = await json(port, '/request?how=map&action=double&n=4');
  assert.deepStrictEqual(mapped.result, [8, 8]);
  const settled = await json(port, '/request?how=mapSettled&action=whoami&n=0');
  assert.strictEqual(settled.result.length, 2);
  assert.deepStrictEqual(settled.result.map((r) => r.value.pid).sort(), [a, b].sort());
  assert.ok(settled.result.every((r) => r.status === 'fulfilled'));
});

test('a crashed app worker is replaced: the agent gets egg-pids after the exit and the start, the replacement gets egg-ready', async (t) => {
  const { master, port } = await startApp(t);
  const states = await workersState(port);
  const [victim] = states.keys();
  await until(async () => (await get(port, { path: `/crash?pid=${victim}` })).body === 'bye', 20_000, 'the victim crashing');
  await waitForOutput(master, /\[master\] app_worker#\d+:\d+ died \(code: 7/, 20_000);
  await waitForOutput(master, /\[master\] app_worker#3:\d+ started at/, 30_000);
  const after = await until(async () => {
    const now = await workersState(port);
    return [...now.values()].find((s) => !states.has(s.pid) && s.eggReady >= 1);
  }, 20_000, 'the replacement answering, told egg-ready');
  assert.strictEqual(after.eggReady, 1, 'the replacement gets egg-ready');
});

test('SIGTERM stops egg as egg does: app workers, then the agent, no process left (their children too), pid file removed, exit 0', async (t) => {
  const dir = tempDir(t, 'rcluster-egg-');
  const pidFile = path.join(dir, 'master.pid');
  const { master } = await startApp(t, { extra: { pidFile } });
  assert.strictEqual(fs.readFileSync(pidFile, 'utf8'), String(master.pid));
  const tree = descendants(master.pid);
  assert.ok(tree.length >= 4, `agent, 2 app workers and the agent's child: ${tree}`);
  master.kill('SIGTERM');
  const { code } = await master.exited;
  assert.strictEqual(code, 0);
  assert.match(master.output, /\[master\] master is killed by signal SIGTERM, closing/);
  assert.match(master.output, /\[master\] close done, exiting with code:0/);
  assert.match(master.output, /\[master\] exit with code:0/);
  assert.ok(master.output.indexOf('send kill SIGTERM to app workers') < master.output.indexOf('send kill SIGTERM to agent worker'));
  await until(() => tree.every((pid) => !alive(pid)), 10_000, () => `no process left of ${tree}: ${tree.filter(alive)}`);
  assert.ok(!fs.existsSync(pidFile), 'the pid file is removed');
});

test('eggctl start, the framework named in package.json ("egg": { "framework": "rcluster/egg" }): SIGINT stops it', async (t) => {
  const port = await freePort();
  installRcluster(t);
  const ctl = spawnTracked(t, process.execPath, [EGGCTL, 'start', '--workers=2', `--port=${port}`, '--title=rcluster-egg-test', APP], {
    cwd: APP,
    env: { ...process.env, EGG_MASTER_CLOSE_TIMEOUT: '3000' },
  });
  await waitForOutput(ctl, /\[master\] rcluster\/egg started on http:\/\/127\.0\.0\.1:\d+/, 60_000);
  assert.match(ctl.output, /Starting rcluster\/egg application/);
  const { status } = await get(port);
  assert.strictEqual(status, 200);
  const tree = descendants(ctl.pid);
  process.kill(ctl.pid, 'SIGINT');
  await waitForOutput(ctl, /\[master\] exit with code:0/, 20_000);
  await until(() => tree.every((pid) => !alive(pid)), 10_000, () => `no process left: ${tree.filter(alive)}`);
});

test("the agent's side of egg's messenger: from app workers (to agent, broadcast, no `to`), egg-pids of the listening app workers, egg-ready once", async (t) => {
  const { port } = await startApp(t);
  const states = await workersState(port);
  const appPids = [...states.keys()].sort();
  await json(port, '/send?how=sendToAgent&action=to-agent');
  await json(port, '/send?how=broadcast&action=to-all');
  await json(port, '/send?how=send&action=from-app');
  const record = await until(async () => {
    const now = await json(port, '/agent');
    const actions = now.received.map((m) => m.action);
    return ['to-agent', 'to-all', 'from-app'].every((a) => actions.includes(a)) && now;
  }, 10_000, 'the agent receiving to-agent, to-all and from-app');
  assert.strictEqual(record.eggReady, 1);
  assert.deepStrictEqual([...record.eggPids.at(-1)].sort(), appPids);
  assert.ok(appPids.includes(record.received.find((m) => m.action === 'from-app').data.from));
});

test('a crashed agent is replaced: app workers get egg-pids [] then the new pid, the new agent gets egg-pids and egg-ready', async (t) => {
  const { master, port } = await startApp(t);
  const states = await workersState(port);
  const before = await json(port, '/agent');
  await json(port, '/send?how=sendToAgent&action=agent-crash');
  await waitForOutput(master, /\[master\] agent_worker#1:\d+ died \(code: 3/, 20_000);
  await waitForOutput(master, /\[master\] agent_worker#2:\d+ started/, 30_000);
  // @eggjs/cluster's agent_worker.test, 'should refork new agent_worker after app started'.
  assert.match(master.output, /\[master\] try to start a new agent_worker after 1s .../);
  assert.doesNotMatch(master.output, /app_worker#3/);
  const after = await until(async () => {
    const now = await json(port, '/agent').catch(() => null);
    return now && now.pid !== before.pid && now.eggReady >= 1 && now.eggPids.length > 0 && now;
  }, 20_000, 'the new agent answering, told egg-ready');
  assert.strictEqual(after.eggReady, 1);
  assert.deepStrictEqual([...after.eggPids.at(-1)].sort(), [...states.keys()].sort());
  const now = await workersState(port);
  for (const state of now.values()) {
    const pids = state.eggPids.map((p) => JSON.stringify(p));
    assert.ok(pids.includes('[]'), `egg-pids [] after the agent's exit: ${pids}`);
    assert.deepStrictEqual(state.eggPids.at(-1), [after.pid]);
  }
});

test("egg's reload-worker: every app worker replaced, no worker died error, each new one gets egg-ready once", async (t) => {
  const { master, port } = await startApp(t);
  const states = await workersState(port);
  await json(port, '/reload');
  await waitForOutput(master, /\[master\] reload 2 workers\.\.\./, 10_000);
  await waitForOutput(master, /\[master\] app_worker#4:\d+ started at/, 60_000);
  await until(() => [...states.keys()].every((pid) => !alive(pid)), 15_000, 'the old workers gone');
  // A worker serves before its egg-ready arrives (as under egg's own master): wait for it.
  const fresh = await until(async () => {
    const now = await workersState(port);
    return [...now.values()].every((s) => !states.has(s.pid) && s.eggReady >= 1) && now;
  }, 20_000, 'two new app workers told egg-ready');
  for (const state of fresh.values()) assert.strictEqual(state.eggReady, 1);
  assert.doesNotMatch(master.output, /AppWorkerDiedError/);
});

test("mm.cluster({ framework: 'rcluster/egg' }) of @eggjs/mock: egg-ready reaches the test, HTTP through supertest, close()", async (t) => {
  const { mm } = require('@eggjs/mock');
  installRcluster(t);
  const port = await freePort();
  const app = mm.cluster({ baseDir: APP, framework: 'rcluster/egg', workers: 2, port, coverage: false, cache: false });
  t.after(() => app.close());
  await app.ready();
  const res = await app.httpRequest().get('/');
  assert.strictEqual(res.status, 200);
  assert.match(res.text, /^hello from \d+$/);
  const tree = descendants(app.process.pid);
  assert.ok(tree.length >= 3, `the agent and 2 app workers: ${tree}`);
  await app.close();
  await until(() => tree.every((pid) => !alive(pid)), 15_000, () => `no process left: ${tree.filter(alive)}`);
});

// Egg's own messenger tests (eggjs/egg test/lib/core/messenger/ipc.test.ts, the cluster blocks),
// their assertions unchanged, on an app of ours that does what theirs do.
const MESSENGER_APP = fixture('egg-messenger');

async function startMessengerApp(t, workers) {
  const port = await freePort();
  const options = { framework: FRAMEWORK, baseDir: MESSENGER_APP, port, workers };
  const master = spawnTracked(t, process.execPath, [START_CLUSTER, JSON.stringify(options)], { cwd: MESSENGER_APP, env: { ...process.env, EGG_SERVER_ENV: 'default' } });
  await waitForOutput(master, /\[master\] rcluster\/egg started on/, 60_000);
  return master;
}

function count(data, key) {
  return data.split('\n').filter((line) => line.indexOf(key) >= 0).length;
}

test("egg's ipc.test: broadcast each other, sendToApp and sendToAgent, agent can't send before started (2 workers)", async (t) => {
  const app = await startMessengerApp(t, 2);
  await until(() => (app.output.match(/(app|agent) \d+ receive message from (app|agent) pid \d+/g) || []).length >= 9 && count(app.output, 'app2app') >= 4, 10_000, () => `the messages (got: ${app.output})`);
  // As egg's test: wait a moment for any extra delivery.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const m = app.output.match(/(app|agent) \d+ receive message from (app|agent) pid \d+/g);
  assert.equal(m.length, 9);
  assert(count(app.output, 'agent2app') === 2);
  assert(count(app.output, 'app2app') === 4);
  assert(count(app.output, 'agent2agent') === 1);
  assert(count(app.output, 'app2agent') === 2);
  assert.match(app.output, /agent can't call sendToApp before server started/);
});

test("egg's ipc.test: sendRandom from the agent reaches several of 4 app workers", async (t) => {
  const app = await startMessengerApp(t, 4);
  await until(() => (app.output.match(/\d+=\d+/g) || []).length >= 40, 15_000, 'the 40 random messages');
  const m = app.output.match(/\d+=\d+/g);
  const map = new Map();
  for (const item of m) {
    const a = item.split('=');
    map.set(a[0], a[1]);
  }
  assert(map.size <= 4);
  assert(map.size >= 2);
});

// @eggjs/cluster's master.test, app_worker.test and agent_worker.test, their assertions unchanged
// (stdout and stderr are one output here).

for (const signal of ['SIGINT', 'SIGQUIT']) {
  test(`master.test: use ${signal} close master`, async (t) => {
    const { master } = await startApp(t);
    master.kill(signal);
    await master.exited;
    assert.match(master.output, new RegExp(`\\[master\\] master is killed by signal ${signal}, closing`));
    assert.match(master.output, /\[master\] system memory: total \d+, free \d+/);
    assert.match(master.output, /\[master\] process info: heap_limit \d+, heap_used \d+/);
    assert.match(master.output, /\[master\] exit with code:0/);
  });
}

test('master.test: master will close agent and app worker (egg-ready logs of each side, no disconnect event)', async (t) => {
  const { master } = await startApp(t, {
    env: {
      EGG_SERVER_ENV: 'local',
      EGG_APP_WORKER_LOGGER_LEVEL: 'INFO',
      EGG_AGENT_WORKER_LOGGER_LEVEL: 'INFO',
      EGG_MASTER_LOGGER_LEVEL: 'DEBUG',
      EGG_MASTER_CLOSE_TIMEOUT: '5000',
    },
  });
  master.kill('SIGTERM');
  await master.exited;
  const out = master.output;
  assert.match(out, /INFO \d+ \[master\] master is killed by signal SIGTERM, closing/);
  assert.match(out, /DEBUG \d+ \[master\] close done, exiting with code:0/);
  assert.match(out, /INFO \d+ \[master\] exit with code:0/);
  assert.match(out, /INFO \d+ \[app_worker\] receive signal SIGTERM, exiting with code:0/);
  assert.match(out, /INFO \d+ \[agent_worker\] receive signal SIGTERM, exiting with code:0/);
  assert.doesNotMatch(out, /\[app_worker\] receive disconnect event in cluster fork mode/);
  assert.doesNotMatch(out, /\[agent_worker\] receive disconnect event /);
  assert.match(out, /INFO \d+ \[app_worker\] exit with code:0/);
  assert.match(out, /INFO \d+ \[agent_worker\] exit with code:0/);
  assert.match(out, /INFO \d+ \[master\] wait 5000ms/);
});

test('master.test: should close when set EGG_MASTER_CLOSE_TIMEOUT', async (t) => {
  const { master } = await startApp(t, { env: { EGG_MASTER_CLOSE_TIMEOUT: '1000' } });
  master.kill('SIGTERM');
  await master.exited;
  assert.match(master.output, /INFO \d+ \[master\] exit with code:0/);
  assert.match(master.output, /INFO \d+ \[master\] wait 1000ms/);
});

/** Starts the fixture app expecting it to fail; resolves with its exit code and output. */
async function failingApp(t, env) {
  const port = await freePort();
  const options = { framework: FRAMEWORK, baseDir: APP, port, workers: 2 };
  const master = spawnTracked(t, process.execPath, [START_CLUSTER, JSON.stringify(options)], { cwd: APP, env: { ...process.env, ...env } });
  const { code } = await master.exited;
  return { code, out: master.output, tree: [...master.tree] };
}

test('agent_worker.test: should exist when error happened during boot, should not start app', async (t) => {
  const { code, out } = await failingApp(t, { EGG_TEST_AGENT_THROW: '1' });
  assert.strictEqual(code, 1);
  assert.match(out, /\[master\] agent_worker#1:\d+ start fail, exiting with code:1/);
  assert.match(out, /agent throw on boot/);
  assert.doesNotMatch(out, /app_worker#1/);
});

test('app_worker.test: should exit when app worker error during boot (no process left)', async (t) => {
  const { code, out, tree } = await failingApp(t, { EGG_TEST_APP_THROW: '1' });
  assert.strictEqual(code, 1);
  assert.match(out, /\[master\] app_worker#\d+:\d+ start fail, exiting with code:1/);
  // The agent's own child too: no process is left.
  assert.ok(tree.length >= 2, `the agent and its child at least: ${tree}`);
  await until(() => tree.every((pid) => !alive(pid)), 10_000, () => `no process left of ${tree}: ${tree.filter(alive)}`);
});

for (const [env, port] of [[{}, 5800], [{ EGG_AGENT_DEBUG_PORT: '15800' }, 15800]]) {
  test(`agent_worker.test: agent debug port ${port} with isDebug`, async (t) => {
    const { master } = await startApp(t, { env: { EGG_TEST_PRINT_EXEC_ARGV: '1', ...env }, extra: { isDebug: true } });
    assert.match(master.output, new RegExp(`=${port}`));
  });
}

test("egg and @eggjs/cluster are the app's: resolved from its directory, never from where rcluster is installed", (t) => {
  const { resolveEgg } = require('../lib/frameworks/egg/resolve');
  const found = resolveEgg(APP);
  assert.strictEqual(found.egg, require.resolve('egg', { paths: [APP] }));
  assert.strictEqual(found.eggCluster, require.resolve('@eggjs/cluster', { paths: [APP] }));
  // An app without egg: no fallback to a copy beside rcluster.
  const bare = tempDir(t, 'rcluster-egg-bare-');
  assert.throws(() => resolveEgg(bare), (error) => error.code === 'ERR_RCLUSTER_EGG_NOT_FOUND' && error.message.includes(bare));
});
