'use strict';

// The `rcluster` command, run as a user would: its own process, signals, exit codes.

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { fixture, until, alive, childrenOf, get, spawnNode, waitForOutput } = require('./helpers');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');

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

const badArguments = [
  ['no command', []],
  ['an unknown command', ['launch', 'app.js']],
  ['no script', ['start']],
  ['a bad instance count', ['start', 'app.js', '-i', 'lots']],
  ['an unknown schedule', ['start', 'app.js', '--schedule', 'random']],
  ['a bad kill timeout', ['start', 'app.js', '--kill-timeout', 'soon']],
  ['a bad memory limit', ['start', 'app.js', '--max-memory', 'lots']],
  ['an unknown option', ['start', 'app.js', '--turbo']],
];
for (const [name, args] of badArguments) {
  test(`${name}: usage on stderr, exit 2`, async (t) => {
    const cli = spawnNode(t, [bin, ...args]);
    const { code } = await cli.exited;
    assert.strictEqual(code, 2, cli.output);
    assert.match(cli.output, /Usage: rcluster start <script>/);
  });
}

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
