'use strict';

// The agent: started first, app workers once it is ready, restarted, stopped last, told when
// the cluster is up, and replaced by reload({ agent: true }). (The CLI's --agent is cli.test.js.)

const test = require('node:test');
const assert = require('node:assert');
const { fixture, until, alive, startCluster } = require('./helpers');

function agentCluster(t, agent, options = {}) {
  const cluster = startCluster(t, { exec: fixture('agent-app.js'), workers: 2, agent, ...options });
  const events = [];
  cluster.on('fork', (w) => events.push(['fork', w.kind, w.id]));
  cluster.on('exit', (w, code, signal) => events.push(['exit', w.kind, w.id, code, signal]));
  const told = [];
  cluster.messenger.on('told', (worker) => told.push(worker));
  return { cluster, events, told };
}

test('the agent starts first; app workers start once it is ready; every process is told the cluster is up', async (t) => {
  const { cluster, events, told } = agentCluster(t, fixture('agent.js'));
  let agentReadyAt = null;
  cluster.on('fork', (w) => {
    if (w.kind === 'agent') w.once('ready', () => (agentReadyAt = events.length));
  });
  await cluster.ready;
  assert.deepStrictEqual(events.map((e) => e.slice(0, 2)), [['fork', 'agent'], ['fork', 'app'], ['fork', 'app']]);
  assert.strictEqual(agentReadyAt, 1, 'an app worker was forked before the agent was ready');
  const workers = Object.values(cluster.workers);
  assert.deepStrictEqual(workers.map((w) => w.kind).sort(), ['agent', 'app', 'app']);
  await until(() => told.length === 3, 5000, "'rcluster-ready' in every process");
  assert.deepStrictEqual(told.map((w) => w.kind).sort(), ['agent', 'app', 'app']);
});

test('app workers are numbered 1..N as without an agent; the agent, started first, has N+1', async (t) => {
  const { cluster, events, told } = agentCluster(t, fixture('agent.js'));
  await cluster.ready;
  // (The app workers are spawned together: their forks come in either order.)
  assert.deepStrictEqual(events[0].slice(1), ['agent', 3]);
  assert.deepStrictEqual(events.slice(1).map((e) => e.slice(1)).sort(), [['app', 1], ['app', 2]]);
  await until(() => told.length === 3, 5000, "'rcluster-ready' in every process");
  // What each process itself sees as its id.
  const ids = Object.fromEntries(told.map((w) => [w.id, w.kind]));
  assert.deepStrictEqual(ids, { 1: 'app', 2: 'app', 3: 'agent' });
});

test('sendToAgent and the agent\'s identity; messages sent before the cluster is up arrive', async (t) => {
  const { cluster } = agentCluster(t, fixture('agent.js'));
  const pongs = [];
  cluster.messenger.on('pong', (data) => pongs.push(data));
  // Sent at once, while the agent and the workers are still starting: held, then delivered.
  cluster.messenger.sendToApp('go');
  await cluster.ready;
  await until(() => pongs.length === 2, 5000, 'a pong for each app worker');
  for (const pong of pongs) {
    assert.strictEqual(pong.isAgent, true);
    assert.strictEqual(pong.isWorker, false);
    assert.strictEqual(pong.agent.kind, 'agent');
  }
  assert.deepStrictEqual(pongs.map((p) => p.me).sort(), Object.values(cluster.workers).filter((w) => w.kind === 'app').map((w) => w.id).sort());
});

test('an agent without rcluster code is ready once its main module has run', async (t) => {
  const { cluster } = agentCluster(t, fixture('plain-agent.js'));
  await cluster.ready;
  assert.strictEqual(Object.values(cluster.workers).filter((w) => w.kind === 'agent').length, 1);
});

test('a dead agent is restarted, and told again once it is up; stop() stops the app workers, then the agent', async (t) => {
  const { cluster, events, told } = agentCluster(t, fixture('agent.js'));
  await cluster.ready;
  await until(() => told.length === 3, 5000, "'rcluster-ready' in every process");
  const agent = Object.values(cluster.workers).find((w) => w.kind === 'agent');
  const replaced = new Promise((resolve) => cluster.on('fork', (w) => w.kind === 'agent' && resolve(w)));
  agent.process.kill('SIGKILL');
  const replacement = await replaced;
  await until(() => told.some((w) => w.id === replacement.id), 5000, "'rcluster-ready' for the new agent");
  events.length = 0;
  await cluster.stop();
  const exits = events.filter((e) => e[0] === 'exit');
  assert.deepStrictEqual(exits.map((e) => e[1]), ['app', 'app', 'agent']);
  assert.ok(!alive(replacement.pid));
});

test('an agent that dies at startup: ready rejects with its exit code and last stderr lines', async (t) => {
  const { cluster, events } = agentCluster(t, fixture('failing-agent.js'));
  await assert.rejects(cluster.ready, (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_AGENT_FAILED');
    assert.match(error.message, /failing-agent\.js .* exited with code 2 before it was ready/);
    assert.match(error.message, /AGENT_SECRET is not set/);
    assert.strictEqual(error.details.exitCode, 2);
    return true;
  });
  // The cluster stops itself; stop() resolves once it has.
  await cluster.stop();
  assert.deepStrictEqual(events.filter((e) => e[0] === 'fork').map((e) => e[1]), ['agent'], 'no app worker was started');
});

test('reload({ agent: true }) replaces the agent first, then the app workers; the new agent gets what is sent to the agent', async (t) => {
  const { cluster, events } = agentCluster(t, fixture('agent.js'));
  await cluster.ready;
  const before = Object.values(cluster.workers).map((w) => w.pid);
  events.length = 0;
  const result = await cluster.reload({ agent: true });
  assert.deepStrictEqual({ replaced: result.replaced, workers: result.workers }, { replaced: 3, workers: 3 });
  assert.deepStrictEqual(events.filter((e) => e[0] === 'fork').map((e) => e[1]), ['agent', 'app', 'app']);
  const agent = Object.values(cluster.workers).find((w) => w.kind === 'agent' && !w.exitedAfterDisconnect && !before.includes(w.pid));
  assert.ok(agent, 'a new agent');
  const pongs = [];
  cluster.messenger.on('pong', (data) => pongs.push(data));
  cluster.messenger.sendToApp('go');
  await until(() => pongs.length === 2, 5000, 'a pong for each app worker');
  for (const pong of pongs) assert.strictEqual(pong.agent.pid, agent.pid);
  // Without the option, only the app workers are replaced.
  assert.strictEqual((await cluster.reload()).replaced, 2);
});
