'use strict';

// The `rcluster` command's parsing: config files (their forms, env selection, --only, unknown
// keys), the verbs' arguments, names, start's flags, the pid file; and a config file's apps run
// as several clusters in one process.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { fixture, tempDir, until, alive, descendants, get, spawnNode, waitForOutput } = require('./helpers');
const { parseCommandLine } = require('../lib/cli/command-line');
const { isConfigFile, loadConfig, appsFromConfig } = require('../lib/cli/config-file');
const { appsToStart } = require('../lib/cli/start');
const { isClusterName, defaultClusterName, controlHome } = require('../lib/cli/home');
const { UsageError, CliError } = require('../lib/cli/failures');
const { checkPidFile } = require('../lib/cli/pid-file');
const { humanDuration, humanMemory, formatTable } = require('../lib/cli/table');

const bin = path.join(__dirname, '..', 'bin', 'rcluster.js');

/** Writes `files` ({ name: text }) into a new folder; returns its path. */
function folder(t, files) {
  const dir = tempDir(t, 'rcluster-config-');
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

/** The CLI run with its control folder in a fresh temporary folder. */
function cli(t, args, env = {}) {
  const home = env.RCLUSTER_HOME || tempDir(t, 'rcluster-home-');
  return spawnNode(t, [bin, ...args], { env: { ...process.env, RCLUSTER_HOME: home, ...env } });
}

async function apps(file, options) {
  return appsFromConfig(await loadConfig(file), file, options);
}

test('a config file is known by its name', () => {
  for (const name of ['rcluster.config.js', 'ecosystem.config.js', 'app.config.cjs', 'x.config.mjs', 'app.config.json', 'apps.json', '/srv/app/prod.json']) {
    assert.ok(isConfigFile(name), name);
  }
  for (const name of ['app.js', 'server.mjs', 'config.js', 'app.configjs', 'json.js']) assert.ok(!isConfigFile(name), name);
});

test('one app as JSON: script, cwd and agent resolved against the file\'s folder, other keys as given', async (t) => {
  const dir = folder(t, {
    'app.config.json': JSON.stringify({ name: 'web', script: 'server.js', cwd: 'run', agent: 'jobs.js', workers: 3, killTimeout: 1000, env: { A: '1' } }),
  });
  assert.deepStrictEqual(await apps(path.join(dir, 'app.config.json')), [
    { name: 'web', exec: path.join(dir, 'server.js'), cwd: path.join(dir, 'run'), agent: path.join(dir, 'jobs.js'), workers: 3, killTimeout: 1000, env: { A: '1' } },
  ]);
});

test('the agent as an object: its exec resolved, its other keys kept; absolute paths unchanged', async (t) => {
  const dir = folder(t, { 'a.json': JSON.stringify({ script: '/srv/app.js', cwd: '/srv', agent: { exec: 'agent.mjs', readiness: 'message', args: ['x'] } }) });
  const [app] = await apps(path.join(dir, 'a.json'));
  assert.deepStrictEqual(app, { exec: '/srv/app.js', cwd: '/srv', agent: { exec: path.join(dir, 'agent.mjs'), readiness: 'message', args: ['x'] } });
});

test('apps in a CommonJS, an ES-module and a .cjs file', async (t) => {
  const config = { apps: [{ name: 'api', script: 'api.js' }, { name: 'jobs', script: 'jobs.js', workers: 1 }] };
  const dir = folder(t, {
    'rcluster.config.js': `module.exports = ${JSON.stringify(config)};`,
    'rcluster.config.mjs': `export default ${JSON.stringify(config)};`,
    'named.config.mjs': `export const apps = ${JSON.stringify(config.apps)};`,
    'rcluster.config.cjs': `module.exports = ${JSON.stringify(config)};`,
  });
  const expected = [{ name: 'api', exec: path.join(dir, 'api.js') }, { name: 'jobs', exec: path.join(dir, 'jobs.js'), workers: 1 }];
  for (const file of ['rcluster.config.js', 'rcluster.config.mjs', 'named.config.mjs', 'rcluster.config.cjs']) {
    assert.deepStrictEqual(await apps(path.join(dir, file)), expected, file);
  }
});

test('--env merges env_<environment> over env, app by app, as PM2\'s ecosystem file does', async (t) => {
  const dir = folder(t, {
    'rcluster.config.js': `module.exports = { apps: [
      { name: 'api', script: 'api.js', env: { LEVEL: 'debug', PORT: 3000 }, env_production: { LEVEL: 'warn' } },
      { name: 'jobs', script: 'jobs.js', env_production: { LEVEL: 'error' } },
      { name: 'plain', script: 'plain.js', env: { LEVEL: 'info' } },
    ] };`,
  });
  const file = path.join(dir, 'rcluster.config.js');
  const envs = (list) => list.map((app) => app.env);
  assert.deepStrictEqual(envs(await apps(file)), [{ LEVEL: 'debug', PORT: 3000 }, undefined, { LEVEL: 'info' }]);
  assert.deepStrictEqual(envs(await apps(file, { environment: 'production' })), [{ LEVEL: 'warn', PORT: 3000 }, { LEVEL: 'error' }, { LEVEL: 'info' }]);
  await assert.rejects(apps(file, { environment: 'staging' }), (error) => {
    assert.ok(error instanceof UsageError);
    assert.match(error.message, /rcluster\.config\.js: --env staging: no app has 'env_staging'/);
    return true;
  });
});

test('an unknown key is an error naming the key, the app and the file; PM2\'s names get a hint', async (t) => {
  const dir = folder(t, {
    'one.json': JSON.stringify({ name: 'web', script: 'a.js', workerz: 2 }),
    'pm2.config.js': "module.exports = { apps: [{ script: 'a.js' }, { name: 'api', script: 'b.js', instances: 4 }] };",
    'top.json': JSON.stringify({ apps: [{ script: 'a.js' }], env: {} }),
    'stdio.json': JSON.stringify({ script: 'a.js', stdio: ['ignore'] }),
  });
  const cases = [
    ['one.json', /^one\.json: app 'web': unknown key 'workerz'$/],
    ['pm2.config.js', /^pm2\.config\.js: app 'api': unknown key 'instances' \(rcluster's name for it: workers\)$/],
    ['top.json', /^top\.json: unknown key 'env' beside 'apps'/],
    ['stdio.json', /^stdio\.json: app 1: unknown key 'stdio'$/],
  ];
  for (const [name, message] of cases) {
    await assert.rejects(apps(path.join(dir, name)), (error) => {
      assert.ok(error instanceof UsageError, name);
      assert.match(error.message, message);
      return true;
    });
  }
});

test('every start() option is a known key', async (t) => {
  const options = {
    args: [], execArgv: [], execPath: process.execPath, env: {}, cwd: '.', serialization: 'json', uid: 0, gid: 0, workers: 1,
    schedule: 'shared', killTimeout: 1, readiness: 'online', readyTimeout: 1, maxRestarts: 1, restartWindow: 1, restartDelay: 1,
    maxRestartDelay: 1, maxMessageSize: 1, agent: 'a.js', reloadParallel: 1, reloadAgent: true, childRuntime: true,
    heartbeatInterval: 1, heartbeatTimeout: 1, maxMemory: '1G', listenFds: [3], stopSignal: 'SIGTERM', name: 'x', control: false,
    metrics: '127.0.0.1:9209', logPrefix: true, redis: 'redis://127.0.0.1:6379/0', namespace: 'shop', hostId: 'web-1',
  };
  const dir = folder(t, { 'all.json': JSON.stringify({ script: 'a.js', ...options }) });
  const [app] = await apps(path.join(dir, 'all.json'));
  assert.deepStrictEqual(Object.keys(app).sort(), [...Object.keys(options), 'exec'].sort());
});

test('a config without a script, or not an object, two apps of one name, a bad name', async (t) => {
  const dir = folder(t, {
    'none.json': JSON.stringify({ name: 'web' }),
    'list.json': JSON.stringify([{ script: 'a.js' }]),
    'twice.json': JSON.stringify({ apps: [{ script: 'a/app.js' }, { script: 'b/app.js' }] }),
    'both.json': JSON.stringify({ script: 'a.js', exec: 'b.js' }),
    'badname.json': JSON.stringify({ apps: [{ name: 'web', script: 'a.js' }, { name: '../web', script: 'b.js' }] }),
  });
  const cases = [
    ['none.json', /app 'web': 'script' must be the path/],
    ['list.json', /must export an object/],
    ['twice.json', /two apps are named 'app'/],
    ['both.json', /give 'script' or 'exec', not both/],
    ['badname.json', /badname\.json: app '\.\.\/web': 'name' must be 1 to 64 letters/],
  ];
  for (const [name, message] of cases) await assert.rejects(apps(path.join(dir, name)), message);
});

test('a config file that cannot be read or run: exit 1 naming the file', async (t) => {
  await assert.rejects(loadConfig('/nonexistent/rcluster.config.js'), (error) => error instanceof CliError && error.exitCode === 1 && /no such file/.test(error.message));
  const dir = folder(t, { 'bad.config.js': 'module.exports = {', 'bad.json': '{ "script": ' });
  for (const name of ['bad.config.js', 'bad.json']) {
    await assert.rejects(loadConfig(path.join(dir, name)), (error) => error instanceof CliError && error.message.includes(name));
  }
});

test('--only picks apps by name (given or from the script); an unknown one lists the apps', async (t) => {
  const dir = folder(t, { 'rcluster.config.json': JSON.stringify({ apps: [{ name: 'api', script: 'api.js' }, { script: 'jobs.js' }, { name: 'cron', script: 'c.js' }] }) });
  const file = path.join(dir, 'rcluster.config.json');
  assert.deepStrictEqual((await apps(file, { only: ['jobs'] })).map((app) => app.exec), [path.join(dir, 'jobs.js')]);
  assert.deepStrictEqual((await apps(file, { only: ['cron', 'api'] })).map((app) => app.name), ['api', 'cron']);
  await assert.rejects(apps(file, { only: ['web'] }), /--only web: no such app \(its apps: api, jobs, cron\)/);
});

test('flags override the config file\'s values; --name needs one app; -- args replace each app\'s args', async (t) => {
  const dir = folder(t, {
    'one.json': JSON.stringify({ script: 'a.js', workers: 4, killTimeout: 9000, args: ['--old'] }),
    'two.json': JSON.stringify({ apps: [{ name: 'a', script: 'a.js' }, { name: 'b', script: 'b.js' }] }),
  });
  const [app] = await appsToStart(parseCommandLine(['start', path.join(dir, 'one.json'), '-i', '2', '--name', 'x', '--', '--new']));
  assert.deepStrictEqual(app, { exec: path.join(dir, 'a.js'), workers: 2, killTimeout: 9000, args: ['--new'], name: 'x' });
  const [kept] = await appsToStart(parseCommandLine(['start', path.join(dir, 'one.json')]));
  assert.deepStrictEqual(kept.args, ['--old']);
  await assert.rejects(appsToStart(parseCommandLine(['start', path.join(dir, 'two.json'), '--name', 'x'])), /--name names one cluster, and the config file starts 2 apps/);
  const [only] = await appsToStart(parseCommandLine(['start', path.join(dir, 'two.json'), '--only', 'b', '--name', 'x']));
  assert.strictEqual(only.name, 'x');
  const [script] = await appsToStart(parseCommandLine(['start', 'app.js', 'one', '--', 'two']));
  assert.deepStrictEqual(script, { exec: path.resolve('app.js'), args: ['one', 'two'], workers: 'max' });
});

test('start\'s flags map to start() options', () => {
  const { overrides } = parseCommandLine([
    'start', 'app.js', '--readiness', 'message', '--ready-timeout', '5000', '--heartbeat-interval', '500', '--heartbeat-timeout', '0',
    '--restart-delay', '10', '--max-restart-delay', '2000', '--reload-parallel', '2', '--max-message-size', '1048576',
    '--exec-arg=--max-old-space-size=64', '--exec-arg=--no-warnings', '--cwd', 'srv', '--metrics', '127.0.0.1:9209',
    '--no-control', '--log-prefix', '--name', 'web', '-i', '3', '--redis', 'redis://:pw@10.0.0.5:6380/2', '--namespace', 'shop',
    '--host-id', 'web-1',
  ]);
  assert.deepStrictEqual(overrides, {
    readiness: 'message', readyTimeout: 5000, heartbeatInterval: 500, heartbeatTimeout: 0, restartDelay: 10, maxRestartDelay: 2000,
    reloadParallel: 2, maxMessageSize: 1048576, execArgv: ['--max-old-space-size=64', '--no-warnings'], cwd: path.resolve('srv'),
    metrics: '127.0.0.1:9209', control: false, logPrefix: true, name: 'web', workers: 3, redis: 'redis://:pw@10.0.0.5:6380/2',
    namespace: 'shop', hostId: 'web-1',
  });
  const { pidFile } = parseCommandLine(['start', 'app.js', '--pid-file', 'run/app.pid']);
  assert.strictEqual(pidFile, path.resolve('run/app.pid'));
});

test('bad values of start\'s new flags are usage errors naming the flag', () => {
  const bad = [
    ['--readiness', 'ready'], ['--ready-timeout', '0'], ['--heartbeat-interval', '0'], ['--heartbeat-timeout', '-1'],
    ['--restart-delay', '1s'], ['--max-restart-delay', '2147483648'], ['--reload-parallel', '0'], ['--reload-parallel', '4097'],
    ['--max-message-size', '0'], ['--max-message-size', '536870913'], ['--metrics', '9209'], ['--metrics', 'host:99999'],
    ['--name', '.hidden'], ['--env', 'production'], ['--only', 'api'],
  ];
  for (const [flag, value] of bad) {
    assert.throws(() => parseCommandLine(['start', 'app.js', `${flag}=${value}`]), (error) => {
      assert.ok(error instanceof UsageError, `${flag} ${value}`);
      assert.strictEqual(error.topic, 'start');
      assert.ok(error.message.includes(flag === '--name' ? 'cluster name' : flag), `${flag} ${value}: ${error.message}`);
      return true;
    });
  }
});

test('the verbs\' arguments: names, counts and ids are checked before anything connects', () => {
  assert.deepStrictEqual(parseCommandLine(['ls']), { command: 'ls', json: false });
  assert.deepStrictEqual(parseCommandLine(['ls', '--json']), { command: 'ls', json: true });
  assert.deepStrictEqual(parseCommandLine(['status', 'web', '--json']), { command: 'status', name: 'web', json: true });
  assert.deepStrictEqual(parseCommandLine(['reload', 'web']), { command: 'reload', name: 'web' });
  assert.deepStrictEqual(parseCommandLine(['scale', 'web', '3']), { command: 'scale', name: 'web', workers: 3 });
  assert.deepStrictEqual(parseCommandLine(['restart', 'web', '1']), { command: 'restart', name: 'web', id: 1 });
  assert.deepStrictEqual(parseCommandLine(['stop', 'web']), { command: 'stop', name: 'web' });
  assert.deepStrictEqual(parseCommandLine(['logs', 'web']), { command: 'logs', name: 'web', lines: 100, follow: false });
  assert.deepStrictEqual(parseCommandLine(['logs', 'web', '--lines', '5', '--follow']), { command: 'logs', name: 'web', lines: 5, follow: true });
  assert.deepStrictEqual(parseCommandLine(['status', '--help']), { command: 'help', topic: 'status' });
  for (const args of [
    ['scale', 'web', '0'], ['scale', 'web', 'lots'], ['scale', 'web', '1.5'], ['scale', 'web', '-2'], ['scale', 'web', '4097'], ['scale', 'web'],
    ['restart', 'web', 'first'], ['restart', 'web'], ['status'], ['status', 'a', 'b'], ['ls', 'web'], ['logs', 'web', '--lines', '2001'],
    ['logs', 'web', '--lines', 'all'], ['stop', '../etc'], ['status', '--verbose', 'web'], ['reload', '-web'],
  ]) {
    assert.throws(() => parseCommandLine(args), (error) => error instanceof UsageError && error.topic === args[0], args.join(' '));
  }
});

test('a cluster name follows the primary\'s rule', () => {
  for (const name of ['a', 'web', 'my-app.v2_1', 'A0', '_x', 'x'.repeat(64), 'a.b.c', 'app-']) assert.ok(isClusterName(name), name);
  for (const name of ['', '.a', '-a', 'a..b', 'x'.repeat(65), 'a/b', 'a b', 'é', '..', 'a\0b', 'web.sock/..']) assert.ok(!isClusterName(name), JSON.stringify(name));
  // The name a script gives is always a valid one.
  for (const [script, name] of [['/srv/app.js', 'app'], ['/srv/my app.mjs', 'my-app'], ['/srv/.hidden.js', 'hidden'], ['/srv/a..b.js', 'a.b'], ['/srv/-x.js', 'x'], ['/srv/..js', 'app']]) {
    assert.strictEqual(defaultClusterName(script), name, script);
    assert.ok(isClusterName(defaultClusterName(script)));
  }
});

test('the control folder: RCLUSTER_HOME, else XDG_RUNTIME_DIR/rcluster, else ~/.rcluster', () => {
  assert.strictEqual(controlHome({ RCLUSTER_HOME: '/run/x', XDG_RUNTIME_DIR: '/run/user/1' }), '/run/x');
  assert.strictEqual(controlHome({ XDG_RUNTIME_DIR: '/run/user/1' }), '/run/user/1/rcluster');
  assert.strictEqual(controlHome({}), path.join(require('node:os').homedir(), '.rcluster'));
});

test('what status prints: durations, sizes, columns', () => {
  assert.deepStrictEqual([0, 5_400, 180_000, 7_300_000, 4 * 86_400_000 + 1].map(humanDuration), ['0s', '5s', '3m', '2h', '4d']);
  assert.deepStrictEqual([45_200_000, 312_000_000, null].map(humanMemory), ['45.2 MB', '312 MB', '-']);
  assert.strictEqual(formatTable(['ID', 'PID'], [[1, 12345], [10, 7]]), 'ID  PID\n1   12345\n10  7');
});

test('a pid file naming a live process other than this one is refused; a stale one is not', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'app.pid');
  checkPidFile(file);
  fs.writeFileSync(file, `${process.pid}\n`);
  checkPidFile(file);
  fs.writeFileSync(file, 'garbage');
  checkPidFile(file);
  fs.writeFileSync(file, `${process.ppid}\n`);
  assert.throws(() => checkPidFile(file), (error) => error instanceof CliError && error.exitCode === 1 && error.message.includes(String(process.ppid)));
});

test('usage errors from the command line: exit 2, the message first, before connecting to anything', async (t) => {
  const dir = folder(t, {
    'app.config.json': JSON.stringify({ apps: [{ name: 'web', script: 'a.js', workerz: 2 }] }),
    'ok.config.json': JSON.stringify({ apps: [{ name: 'web', script: 'a.js' }] }),
  });
  const cases = [
    [['scale', 'web', '0'], /^rcluster: <N> must be a whole number of workers from 1 to 4096, got '0'/, /Usage: rcluster scale <NAME> <N>/],
    [['restart', 'web', 'x'], /^rcluster: <ID> must be a whole number/, /Usage: rcluster restart/],
    [['status', 'a..b'], /^rcluster: a cluster name is 1 to 64/, /Usage: rcluster status/],
    [['start', fixture('http-worker.js'), '--env', 'production'], /^rcluster: --env applies to a config file/, /Usage: rcluster start/],
    [['start', path.join(dir, 'app.config.json')], /^rcluster: app\.config\.json: app 'web': unknown key 'workerz'/, /Usage: rcluster start/],
    [['start', path.join(dir, 'ok.config.json'), '--only', 'api'], /^rcluster: ok\.config\.json: --only api: no such app/, /Usage: rcluster start/],
  ];
  for (const [args, first, usage] of cases) {
    const run = cli(t, args);
    const { code } = await run.exited;
    assert.strictEqual(code, 2, run.output);
    assert.match(run.output, first);
    assert.match(run.output, usage);
  }
});

test('--redis, --namespace and --host-id reach start(): with a config file\'s redis, and refused naming the option (exit 1)', async (t) => {
  const dir = folder(t, { 'app.config.json': JSON.stringify({ script: fixture('http-worker.js'), redis: 'unix:///run/redis.sock' }) });
  const [app] = await appsToStart(parseCommandLine(['start', path.join(dir, 'app.config.json'), '--namespace', 'shop', '--host-id', 'web-1']));
  assert.deepStrictEqual([app.redis, app.namespace, app.hostId], ['unix:///run/redis.sock', 'shop', 'web-1']);
  const script = fixture('http-worker.js');
  const cases = [
    [['--redis', 'rediss://h:6379'], /`redis` must be 'redis:\/\/\[user:pass@\]host\[:port\]\[\/db\]' or 'unix:\/\/\/path'.*ERR_RCLUSTER_INVALID_OPTION/],
    [['--redis', 'redis://h', '--namespace', 'a:b'], /`namespace` must be .*ERR_RCLUSTER_INVALID_OPTION/],
    [['--redis', 'redis://h', '--host-id', 'a b'], /`hostId` must be .*ERR_RCLUSTER_INVALID_OPTION/],
    [['--namespace', 'shop'], /`namespace` needs `redis`.*ERR_RCLUSTER_INVALID_OPTION/],
    [['--host-id', 'web-1'], /`hostId` needs `redis`.*ERR_RCLUSTER_INVALID_OPTION/],
  ];
  for (const [flags, message] of cases) {
    const run = cli(t, ['start', script, '-i', '1', '--no-control', ...flags]);
    const { code } = await run.exited;
    assert.strictEqual(code, 1, `${flags.join(' ')}: ${run.output}`);
    assert.match(run.output, message);
  }
});

test('--agent-scope and --agent-lease reach start(): checked there with --redis and killTimeout (exit 1), their form here (exit 2)', async (t) => {
  const script = fixture('http-worker.js');
  const agent = fixture('plain-agent.js');
  const [app] = await appsToStart(parseCommandLine(['start', script, '--agent', agent, '--agent-scope', 'cluster', '--agent-lease', '3000', '--redis', 'redis://h']));
  assert.deepStrictEqual([app.agent.scope, app.agent.lease], ['cluster', 3000]);
  const cases = [
    [['--agent', agent, '--agent-scope', 'cluster'], 1, /`agent.scope` 'cluster' needs `redis`.*ERR_RCLUSTER_INVALID_OPTION/],
    [['--agent', agent, '--agent-lease', '3000', '--redis', 'redis://h'], 1, /`agent.lease` only means something with `agent.scope: 'cluster'`/],
    [['--agent', agent, '--agent-scope', 'cluster', '--agent-lease', '3000', '--kill-timeout', '5000', '--redis', 'redis://h'], 1, /`agent.lease` \(3000 ms\) leaves no time to renew it/],
    [['--agent', agent, '--agent-scope', 'namespace'], 2, /--agent-scope must be host or cluster/],
    [['--agent-scope', 'cluster'], 2, /--agent-scope needs --agent/],
    [['--agent', agent, '--agent-lease', 'soon'], 2, /--agent-lease must be/],
  ];
  for (const [flags, code, message] of cases) {
    const run = cli(t, ['start', script, '-i', '1', '--no-control', ...flags]);
    assert.strictEqual((await run.exited).code, code, `${flags.join(' ')}: ${run.output}`);
    assert.match(run.output, message);
  }
});

test('a config file\'s apps run as clusters in one process, --env selected; a signal stops them all, exit 0', async (t) => {
  const dir = folder(t, {
    'rcluster.config.js': `module.exports = { apps: [
      { name: 'api', script: ${JSON.stringify(fixture('cli-worker.js'))}, workers: 2, env: { GREETING: 'hi', LEVEL: 'debug' }, env_production: { LEVEL: 'warn' } },
      { name: 'jobs', script: ${JSON.stringify(fixture('cli-worker.js'))}, workers: 1, cwd: '.', execArgv: ['--no-warnings'] },
    ] };`,
  });
  const run = cli(t, ['start', path.join(dir, 'rcluster.config.js'), '--env', 'production', '--no-control']);
  await waitForOutput(run, /api: 2 workers ready/);
  await waitForOutput(run, /jobs: 1 workers ready/);
  assert.match(run.output, new RegExp(`\\[rcluster\\] primary pid ${run.pid}, no control socket`));
  assert.strictEqual((run.output.match(/greeting=hi level=warn /g) || []).length, 2, run.output);
  assert.match(run.output, new RegExp(`greeting= level= cwd=${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} execArgv=\\["--no-warnings"\\]`));
  const [, port] = await waitForOutput(run, /api: listening on \*:(\d+)/);
  assert.match((await get(Number(port))).body, /^\d+$/);
  const processes = descendants(run.pid);
  assert.strictEqual(processes.filter((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cli-worker.js')).length, 3);
  run.kill('SIGTERM');
  const { code } = await run.exited;
  assert.strictEqual(code, 0, run.output);
  assert.match(run.output, /SIGTERM: stopping gracefully[^]*\[rcluster\] stopped/);
  for (const pid of processes) await until(() => !alive(pid), 5000, `process ${pid} to end`);
});

test('an app of a config file that cannot start stops the others: exit 1 naming the app', async (t) => {
  const dir = folder(t, {
    'rcluster.config.json': JSON.stringify({ apps: [{ name: 'api', script: fixture('cli-worker.js'), workers: 1 }, { name: 'broken', script: 'missing.js' }] }),
  });
  const run = cli(t, ['start', path.join(dir, 'rcluster.config.json'), '--no-control']);
  const { code } = await run.exited;
  assert.strictEqual(code, 1, run.output);
  assert.match(run.output, /broken: .*ERR_RCLUSTER_EXEC_NOT_FOUND/);
});

test('--pid-file: written with the CLI\'s pid once started, removed at exit; one naming a live process is refused', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'app.pid');
  const run = cli(t, ['start', fixture('cli-worker.js'), '-i', '1', '--pid-file', file, '--name', 'web', '--no-control']);
  await waitForOutput(run, /primary pid \d+/);
  assert.strictEqual(fs.readFileSync(file, 'utf8'), `${run.pid}\n`);

  const second = cli(t, ['start', fixture('cli-worker.js'), '-i', '1', '--pid-file', file, '--name', 'web2', '--no-control']);
  const refused = await second.exited;
  assert.strictEqual(refused.code, 1, second.output);
  assert.match(second.output, new RegExp(`pid file .*app\\.pid names process ${run.pid}, which is running`));
  assert.doesNotMatch(second.output, /worker \d+ started/);
  assert.strictEqual(fs.readFileSync(file, 'utf8'), `${run.pid}\n`);

  await waitForOutput(run, /1 workers ready/);
  run.kill('SIGTERM');
  assert.strictEqual((await run.exited).code, 0, run.output);
  assert.ok(!fs.existsSync(file), 'the pid file is removed at exit');

  // A pid file left by a process that is gone is taken over.
  fs.writeFileSync(file, `${second.pid}\n`);
  const third = cli(t, ['start', fixture('cli-worker.js'), '-i', '1', '--pid-file', file, '--no-control']);
  await waitForOutput(third, /1 workers ready/);
  assert.strictEqual(fs.readFileSync(file, 'utf8'), `${third.pid}\n`);
  third.kill('SIGINT');
  assert.strictEqual((await third.exited).code, 0, third.output);
});

test('start\'s flags reach the workers: --exec-arg, --cwd, --readiness online, --name in the first line', async (t) => {
  const dir = tempDir(t);
  const run = cli(t, ['start', fixture('cli-worker.js'), '-i', '1', '--exec-arg=--no-warnings', '--exec-arg=--max-old-space-size=64', '--cwd', dir,
    '--readiness', 'online', '--ready-timeout', '5000', '--heartbeat-interval', '500', '--restart-delay', '10', '--reload-parallel', '2', '--name', 'flags']);
  await waitForOutput(run, /1 workers ready/);
  await waitForOutput(run, /hello from/);
  assert.match(run.output, new RegExp(`^\\[rcluster\\] primary pid ${run.pid}, control: rcluster status flags$`, 'm'));
  assert.ok(run.output.includes(`cwd=${dir} execArgv=["--no-warnings","--max-old-space-size=64"]`), run.output);
  run.kill('SIGTERM');
  assert.strictEqual((await run.exited).code, 0, run.output);
});
