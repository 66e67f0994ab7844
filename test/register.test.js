'use strict';

// `node -r rcluster/register app.js`: an app's own primary, unchanged, on rcluster's primary.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { fixture, spawnNode, waitForOutput, until, get, childrenOf, alive } = require('./helpers');

const root = path.join(__dirname, '..');
const register = path.join(root, 'register.js');

/** Whether rcluster's native primary (the addon) is loaded in process `pid`. */
function runsRclusterPrimary(pid) {
  return /rcluster\.[\w-]+\.node$/m.test(fs.readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/** The bodies (parsed) of requests to `port` until `count` distinct pids have answered. */
async function answers(port, count) {
  const byPid = new Map();
  await until(async () => {
    const { body } = await get(port).catch(() => ({ body: '' }));
    if (body) {
      const answer = JSON.parse(body);
      byPid.set(answer.pid, answer);
    }
    return byPid.size >= count;
  }, 20_000, () => `${count} workers to answer on port ${port} (got ${[...byPid.keys()]})`);
  return byPid;
}

/** Every descendant of `pid` (rcluster's guard left out), by parent. */
function tree(pid) {
  const children = childrenOf(pid);
  return Object.fromEntries([[pid, children], ...children.flatMap((child) => Object.entries(tree(child)))]);
}

/** Samples the process tree under `pid` for a second: it must stay exactly `workers` children. */
async function assertSteady(pid, workers) {
  const end = Date.now() + 1000;
  while (Date.now() < end) {
    const now = tree(pid);
    const children = now[pid];
    assert.strictEqual(children.length, workers, `children of the primary: ${JSON.stringify(now)}`);
    for (const child of children) assert.deepStrictEqual(now[child], [], `a worker has children: ${JSON.stringify(now)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('a hand-written primary runs on rcluster\'s primary: workers share a port, messages, re-fork, no fork loop', async (t) => {
  // By its package name, as an app preloads it (here the package resolves itself, from its folder).
  const primary = spawnNode(t, ['-r', 'rcluster/register', fixture('register-primary.js')], { cwd: root });
  const [, pid] = await waitForOutput(primary, /^primary (\d+)$/m);
  const [, port] = await waitForOutput(primary, /^listening (\d+) /m, 15_000);
  await waitForOutput(primary, /listening \d+ pid \d+\n[^]*listening \d+ pid \d+/, 15_000);

  // Both workers serve. They were given the preload too (Node's fork passes the primary's
  // execArgv), and in them `require('cluster')` is Node's worker side.
  const served = await answers(Number(port), 2);
  for (const answer of served.values()) {
    assert.deepStrictEqual(answer.execArgv, ['-r', 'rcluster/register'], JSON.stringify(answer));
    assert.strictEqual(answer.isWorker, true, JSON.stringify(answer));
  }
  assert.deepStrictEqual([...served.values()].map((answer) => answer.id).sort(), [1, 2]);

  // The primary's greeting (worker.send) reached each worker, whose answer (process.send) came back.
  await waitForOutput(primary, /ack 1 from pid \d+[^]*ack 2 from pid \d+|ack 2 from pid \d+[^]*ack 1 from pid \d+/);

  // rcluster's native primary runs in the app's primary process.
  assert.ok(runsRclusterPrimary(Number(pid)), 'the addon is loaded in the primary');
  await assertSteady(Number(pid), 2);

  // The app's own exit handler replaces a killed worker.
  const [victim] = served.keys();
  process.kill(victim, 'SIGKILL');
  await waitForOutput(primary, new RegExp(`exit pid ${victim} SIGKILL; forking another`));
  await waitForOutput(primary, /ack 3 from pid \d+/);
  await until(async () => {
    const { body } = await get(Number(port)).catch(() => ({ body: '' }));
    return body && JSON.parse(body).id === 3;
  }, 20_000, 'worker 3 to answer');
  await assertSteady(Number(pid), 2);
  assert.ok(!alive(victim));
});

test('without the preload, the same primary is Node\'s own (the comparison the test above relies on)', async (t) => {
  const primary = spawnNode(t, [fixture('register-primary.js')]);
  const [, pid] = await waitForOutput(primary, /^primary (\d+)$/m);
  const [, port] = await waitForOutput(primary, /^listening (\d+) /m, 15_000);
  await answers(Number(port), 2);
  assert.ok(!runsRclusterPrimary(Number(pid)), 'no addon in Node\'s primary');
});

test('an ES-module primary (import cluster from \'node:cluster\') runs on rcluster\'s primary', async (t) => {
  const primary = spawnNode(t, ['-r', register, fixture('register-primary.mjs')]);
  const [, pid] = await waitForOutput(primary, /^primary (\d+)$/m);
  const [, port] = await waitForOutput(primary, /^listening (\d+) /m, 15_000);
  const served = await answers(Number(port), 2);
  for (const answer of served.values()) assert.strictEqual(answer.isWorker, true, JSON.stringify(answer));
  assert.ok(runsRclusterPrimary(Number(pid)), 'the addon is loaded in the primary');
  await assertSteady(Number(pid), 2);
});

test('a program that is no cluster primary runs unchanged under the preload', async (t) => {
  for (const [script, args] of [['register-plain.js', ['one', 'two']], ['register-plain.js', ['cluster']], ['register-plain.mjs', ['one']], ['register-plain.mjs', ['cluster']]]) {
    const plain = spawnNode(t, [fixture(script), ...args]);
    const preloaded = spawnNode(t, ['-r', register, fixture(script), ...args]);
    const [without, withPreload] = await Promise.all([plain.exited, preloaded.exited]);
    assert.deepStrictEqual(withPreload, without);
    assert.deepStrictEqual(withPreload, { code: 3, signal: null });
    assert.strictEqual(preloaded.output, plain.output);
  }
});

test('think-cluster\'s master (npm think-cluster) runs on rcluster\'s primary: forks, its messenger, its re-fork', async (t) => {
  const primary = spawnNode(t, ['-r', register, fixture('register-think.js')]);
  const [, pids, port] = await waitForOutput(primary, /^think started (\d+,\d+) port (\d+)$/m, 20_000);
  const started = pids.split(',').map(Number).sort();
  const pid = primary.pid;
  assert.ok(runsRclusterPrimary(pid), 'the addon is loaded in the primary');

  const served = await answers(Number(port), 2);
  assert.deepStrictEqual([...served.keys()].sort(), started);

  // think-cluster's messenger: a worker's map() goes through the master's cluster.on('message')
  // and worker.send() to every worker and back.
  const { body } = await get(Number(port), { path: '/map' });
  assert.deepStrictEqual(JSON.parse(body).sort(), started);
  await assertSteady(pid, 2);

  // think-cluster forks a replacement for a worker that exits.
  process.kill(started[0], 'SIGKILL');
  await until(() => !alive(started[0]) && childrenOf(pid).length === 2 && !childrenOf(pid).includes(started[0]), 20_000, 'a replacement worker');
  const after = await answers(Number(port), 2);
  assert.ok(after.has(started[1]));
  assert.ok(!after.has(started[0]));
  await assertSteady(pid, 2);
});
