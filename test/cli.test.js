'use strict';

// The `rcluster` command, run as a user would: its own process, signals, exit codes.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, until, alive, childrenOf, get, spawnNode, waitForOutput } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');

// The clusters these tests start keep their control sockets in a folder of their own.
process.env.RCLUSTER_HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-home-'));
test.after(() => fs.rmSync(process.env.RCLUSTER_HOME, { recursive: true, force: true }));

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`${signal}: graceful stop, exit 0, no child left`, async (t) => {
    const cli = spawnNode(t, [bin, 'start', fixture('http-worker.js'), '-i', '2']);
    const [, port] = await waitForOutput(cli, /listening on \*:(\d+)/);
    await waitForOutput(cli, /2 workers ready/);
    const workers = childrenOf(cli.pid);
    assert.strictEqual(workers.length, 2);
    assert.match((await get(Number(port))).body, /^\d+$/);
    cli.kill(signal);
    const { code, signal: killedBy } = await cli.exited;
    assert.deepStrictEqual({ code, killedBy }, { code: 0, killedBy: null }, cli.output);
    assert.match(cli.output, /stopping gracefully/);
    for (const pid of workers) assert.ok(!alive(pid), `worker ${pid} outlived the CLI`);
  });
}

test('prints the workers it started and passes script arguments through', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('args-worker.js'), '-i', '1', '--schedule', 'reuseport', '--kill-timeout', '1000', '--', '--flag', 'value']);
  await waitForOutput(cli, /worker 1 started \(pid \d+\)/);
  await waitForOutput(cli, /^args \["--flag","value"\]$/m);
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});

test('SIGHUP reloads every worker; SIGTTIN and SIGTTOU add and remove one', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('http-worker.js'), '-i', '2']);
  const [, port] = await waitForOutput(cli, /listening on \*:(\d+)/);
  await waitForOutput(cli, /2 workers ready/);
  const before = childrenOf(cli.pid).sort();
  cli.kill('SIGHUP');
  await waitForOutput(cli, /reloading 2 workers \(asked by SIGHUP\)/);
  await waitForOutput(cli, /reloaded: 2 workers replaced in \d+ ms/);
  await until(() => childrenOf(cli.pid).length === 2, 10_000, 'the old workers to leave');
  for (const pid of childrenOf(cli.pid)) assert.ok(!before.includes(pid), 'every worker was replaced');
  cli.kill('SIGTTIN');
  await waitForOutput(cli, /3 workers ready/);
  assert.strictEqual(childrenOf(cli.pid).length, 3);
  cli.kill('SIGTTOU');
  await waitForOutput(cli, /scaling to 2 workers[^]*2 workers ready/);
  assert.strictEqual(childrenOf(cli.pid).length, 2);
  assert.match((await get(Number(port))).body, /^\d+$/);
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});

test('--agent-arg, --agent-exec-arg and --agent-readiness message: an ES-module agent set up asynchronously is ready once it says so', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('agent-app.js'), '-i', '1', '--agent', fixture('esm-agent.mjs'),
    '--agent-arg', 'one', '--agent-arg=--two', '--agent-exec-arg=--max-old-space-size=64', '--agent-readiness', 'message']);
  await until(() => /1 workers ready/.test(cli.output), 10_000, 'the cluster');
  const setUp = cli.output.indexOf('esm agent set up: args ["one","--two"] execArgv ["--max-old-space-size=64"]');
  assert.ok(setUp !== -1, cli.output);
  assert.ok(setUp < cli.output.indexOf('worker 1 started'), `the app worker started before the agent was set up:\n${cli.output}`);
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
});

test('--stop-signal is passed on as stopSignal; a bad one is a usage error', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('stubborn-worker.js'), '-i', '1', '--kill-timeout', '60000', '--stop-signal', 'SIGTERM']);
  await until(() => /1 workers ready/.test(cli.output), 10_000, 'the cluster');
  const asked = Date.now();
  cli.kill('SIGTERM');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
  assert.ok(Date.now() - asked < 10_000, 'the worker left on the signal, long before killTimeout');
  for (const bad of ['SIGKILL', 'TERM', 'SIGNOPE']) {
    const refused = spawnNode(t, [bin, 'start', fixture('stubborn-worker.js'), '--stop-signal', bad]);
    assert.strictEqual((await refused.exited).code, 2, refused.output);
    assert.match(refused.output, /--stop-signal must be a signal name/);
  }
});

test('the agent flags are checked: a bad --agent-readiness, or one without --agent, is a usage error', async (t) => {
  for (const args of [['--agent', fixture('plain-agent.js'), '--agent-readiness', 'listening'], ['--agent-arg', 'x']]) {
    const cli = spawnNode(t, [bin, 'start', fixture('agent-app.js'), ...args]);
    const { code } = await cli.exited;
    assert.strictEqual(code, 2, cli.output);
    assert.match(cli.output, /--agent-(readiness must be started or message|arg needs --agent)/);
  }
});

test('--agent starts the agent; an agent that fails at startup makes the CLI exit 1 with the agent\'s words', async (t) => {
  const ok = spawnNode(t, [bin, 'start', fixture('agent-app.js'), '-i', '1', '--agent', fixture('plain-agent.js')]);
  await until(() => /1 workers ready/.test(ok.output), 10_000, 'the cluster');
  assert.match(ok.output, /agent 2 started/);
  assert.match(ok.output, /worker 1 started/);
  ok.kill('SIGTERM');
  assert.strictEqual((await ok.exited).code, 0, ok.output);

  const failing = spawnNode(t, [bin, 'start', fixture('agent-app.js'), '--agent', fixture('failing-agent.js')]);
  const { code } = await failing.exited;
  assert.strictEqual(code, 1, failing.output);
  assert.match(failing.output, /ERR_RCLUSTER_AGENT_FAILED/);
  assert.match(failing.output, /exited with code 2/);
  assert.match(failing.output, /AGENT_SECRET is not set/);
});

// [what, arguments, the flag the message must name]
const badArguments = [
  ['no command', []],
  ['an unknown command', ['launch', 'app.js']],
  ['no script', ['start']],
  ['a bad instance count', ['start', 'app.js', '-i', 'lots'], '--instances'],
  ['an unknown schedule', ['start', 'app.js', '--schedule', 'random'], '--schedule'],
  ['a bad kill timeout', ['start', 'app.js', '--kill-timeout', 'soon'], '--kill-timeout'],
  ['a kill timeout past 24 days', ['start', 'app.js', '--kill-timeout', '2147483648'], '--kill-timeout'],
  ['a bad memory limit', ['start', 'app.js', '--max-memory', 'lots'], '--max-memory'],
  ['a zero memory limit', ['start', 'app.js', '--max-memory', '0'], '--max-memory'],
  ['a memory limit past 8 PiB', ['start', 'app.js', '--max-memory', '9999999999G'], '--max-memory'],
  ['a bad restart budget', ['start', 'app.js', '--max-restarts', 'few'], '--max-restarts'],
  ['a negative restart budget', ['start', 'app.js', '--max-restarts=-1'], '--max-restarts'],
  ['a fractional restart budget', ['start', 'app.js', '--max-restarts', '1.5'], '--max-restarts'],
  ['a restart budget past 2^32', ['start', 'app.js', '--max-restarts', '4294967296'], '--max-restarts'],
  ['a restart budget without its value', ['start', 'app.js', '--max-restarts'], '--max-restarts'],
  ['a zero restart window', ['start', 'app.js', '--restart-window', '0'], '--restart-window'],
  ['a restart window with a unit', ['start', 'app.js', '--restart-window', '60s'], '--restart-window'],
  ['a restart window past 24 days', ['start', 'app.js', '--restart-window', '2147483648'], '--restart-window'],
  ['an unknown option', ['start', 'app.js', '--turbo'], '--turbo'],
];
for (const [name, args, flag] of badArguments) {
  test(`${name}: usage on stderr, exit 2`, async (t) => {
    const cli = spawnNode(t, [bin, ...args]);
    const { code } = await cli.exited;
    assert.strictEqual(code, 2, cli.output);
    assert.match(cli.output, args[0] === 'start' ? /Usage: rcluster start <script/ : /Usage: rcluster <command>/);
    if (flag) assert.match(cli.output.split('\n')[0], new RegExp(`^rcluster: .*${flag}`), cli.output);
  });
}

test('--max-restarts 1: a worker that exits at boot is forked twice, then exit 1', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('exit-at-boot.js'), '-i', '1', '--max-restarts', '1']);
  const { code } = await cli.exited;
  assert.strictEqual(code, 1, cli.output);
  // The first start and one restart; the default budget (5) would have allowed six.
  assert.strictEqual(cli.output.match(/worker \d+ started/g).length, 2, cli.output);
  assert.match(cli.output, /exited 2 times within 60 s/);
  assert.match(cli.output, /restart budget: 1 restarts per 60 s\) \(ERR_RCLUSTER_RESTART_BUDGET\)/);
});

test('--restart-window: exits further apart than the window never spend the budget', async (t) => {
  // Each boot takes far longer than 1 ms, so no restart is still in the window at the next exit.
  const cli = spawnNode(t, [bin, 'start', fixture('exit-at-boot.js'), '-i', '1', '--max-restarts', '1', '--restart-window', '1']);
  await waitForOutput(cli, /worker 4 started/);
  cli.kill('SIGTERM');
  const { code } = await cli.exited;
  assert.strictEqual(code, 0, cli.output);
  assert.doesNotMatch(cli.output, /ERR_RCLUSTER_RESTART_BUDGET/);
});

test('a crash loop: exit 1 with a message naming the script and its exit codes', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('exit-at-boot.js'), '-i', '1'], { env: { ...process.env, EXIT_CODE: '7' } });
  const { code } = await cli.exited;
  assert.strictEqual(code, 1, cli.output);
  assert.match(cli.output, /exit-at-boot\.js keeps exiting/);
  assert.match(cli.output, /last exit codes, oldest first: 7, 7, 7/);
  assert.match(cli.output, /ERR_RCLUSTER_RESTART_BUDGET/);
});

test('a missing script: exit 1 before anything starts', async (t) => {
  const cli = spawnNode(t, [bin, 'start', 'no-such-app.js']);
  const { code } = await cli.exited;
  assert.strictEqual(code, 1);
  assert.match(cli.output, /ERR_RCLUSTER_EXEC_NOT_FOUND/);
  assert.doesNotMatch(cli.output, /started/);
});

test('a second SIGINT kills the workers at once', async (t) => {
  const cli = spawnNode(t, [bin, 'start', fixture('stubborn-worker.js'), '-i', '1', '--kill-timeout', '60000']);
  await waitForOutput(cli, /1 workers ready/);
  const [worker] = childrenOf(cli.pid);
  cli.kill('SIGINT');
  await waitForOutput(cli, /stopping gracefully/);
  cli.kill('SIGINT');
  assert.strictEqual((await cli.exited).code, 0, cli.output);
  await until(() => !alive(worker), 2000, 'the worker to die');
});
