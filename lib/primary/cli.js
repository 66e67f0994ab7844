'use strict';

// `rcluster start <script> ...`: runs a cluster in the foreground, the way systemd, Docker and
// Kubernetes expect. Exit codes: 0 after a graceful stop, 1 when the cluster fails, 2 on bad usage.

const { parseArgs } = require('node:util');
const path = require('node:path');

const USAGE = `Usage: rcluster start <script> [options] [-- script args...]

Runs <script> as a cluster of Node processes sharing its ports, in the foreground.

Options:
  -i, --instances N|max     number of app workers (default: max = one per CPU)
      --agent FILE          start FILE as the agent first, the app workers once it is ready
      --agent-arg ARG       an argument for the agent's script (repeatable; --agent-arg=-x)
      --agent-exec-arg FLAG a Node flag for the agent (repeatable; --agent-exec-arg=--inspect)
      --agent-readiness R   when the agent is ready: started (its main module has run, the
                            default) | message (it calls rcluster.ready(): an ES-module or
                            async agent)
      --schedule MODE       shared (one listening socket) | reuseport (one per worker)
      --kill-timeout MS     ms a stopping worker gets before SIGKILL (default 5000)
      --stop-signal SIG     send SIG (e.g. SIGTERM) to each leaving worker after its disconnect
      --max-memory SIZE     replace a worker whose RSS passes SIZE (bytes, or 300M, 1G)
      --max-restarts N      restart budget: restarts of one worker slot within the window
                            before the cluster gives up and exits 1 (default 5)
      --restart-window MS   the restart budget's sliding window in ms (default 60000)
  -h, --help                print this help
  -v, --version             print the version

Signals: SIGINT/SIGTERM stop gracefully (exit 0); a second one kills the workers at once.
         SIGHUP reloads every worker, one at a time, without refusing a connection.
         SIGTTIN adds a worker; SIGTTOU removes one.`;

class UsageError extends Error {}

/** The largest ms count an option takes (src/primary/options.rs): about 24 days. */
const MAX_MS = 2 ** 31 - 1;
/** 8 PiB, JavaScript's largest exact integer: the largest maxMemory. */
const MAX_MEMORY = 2 ** 53 - 1;
const MEMORY_UNITS = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 };

function parseCount(value) {
  if (value === 'max') return 'max';
  if (!/^\d+$/.test(value)) throw new UsageError(`--instances must be a whole number or 'max', got '${value}'`);
  return Number(value);
}

/** A whole number from `min` to `max`, or a UsageError that names the flag and the range. */
function parseWhole(name, value, min, max, what) {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${name} must be a whole number of ${what} from ${min} to ${max}, got '${value}'`);
  }
  return Number(value);
}

function parseMs(name, value, min = 0) {
  return parseWhole(name, value, min, MAX_MS, 'milliseconds');
}

/** A size as maxMemory takes it; checked here so that a bad one is a usage error (exit 2). */
function parseMemory(value) {
  const size = /^(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?$/.exec(value);
  const bytes = size && Number(size[1]) * MEMORY_UNITS[size[2].toLowerCase()];
  if (!size || !(bytes >= 1 && bytes <= MAX_MEMORY)) {
    throw new UsageError(`--max-memory must be a size from 1 byte to 8 PiB such as 300M or 1G, got '${value}'`);
  }
  return value;
}

/** The agent's options: its script, and its own arguments, Node flags and readiness if given. */
function parseAgent(values) {
  const readiness = values['agent-readiness'];
  if (readiness !== undefined && !['started', 'message'].includes(readiness)) {
    throw new UsageError(`--agent-readiness must be started or message, got '${readiness}'`);
  }
  const agent = { exec: path.resolve(values.agent) };
  if (values['agent-arg'] !== undefined) agent.args = values['agent-arg'];
  if (values['agent-exec-arg'] !== undefined) agent.execArgv = values['agent-exec-arg'];
  if (readiness !== undefined) agent.readiness = readiness;
  return agent;
}

/** Turns argv (without node and the bin) into a command, or throws UsageError. */
function parseCommandLine(argv) {
  const split = argv.indexOf('--');
  const ours = split === -1 ? argv : argv.slice(0, split);
  const scriptArgs = split === -1 ? [] : argv.slice(split + 1);
  let parsed;
  try {
    parsed = parseArgs({
      args: ours,
      allowPositionals: true,
      strict: true,
      options: {
        instances: { type: 'string', short: 'i' },
        agent: { type: 'string' },
        'agent-arg': { type: 'string', multiple: true },
        'agent-exec-arg': { type: 'string', multiple: true },
        'agent-readiness': { type: 'string' },
        schedule: { type: 'string' },
        'kill-timeout': { type: 'string' },
        'stop-signal': { type: 'string' },
        'max-memory': { type: 'string' },
        'max-restarts': { type: 'string' },
        'restart-window': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    throw new UsageError(error.message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: 'help' };
  if (values.version) return { command: 'version' };
  const [command, script, ...rest] = positionals;
  if (command === undefined) throw new UsageError('missing command');
  if (command !== 'start') throw new UsageError(`unknown command '${command}'`);
  if (script === undefined) throw new UsageError('missing <script>');
  const options = { exec: path.resolve(script), args: [...rest, ...scriptArgs] };
  options.workers = values.instances === undefined ? 'max' : parseCount(values.instances);
  if (values.schedule !== undefined) {
    if (!['shared', 'reuseport'].includes(values.schedule)) {
      throw new UsageError(`--schedule must be shared or reuseport, got '${values.schedule}'`);
    }
    options.schedule = values.schedule;
  }
  if (values.agent !== undefined) options.agent = parseAgent(values);
  for (const flag of ['agent-arg', 'agent-exec-arg', 'agent-readiness']) {
    if (values[flag] !== undefined && values.agent === undefined) throw new UsageError(`--${flag} needs --agent`);
  }
  if (values['kill-timeout'] !== undefined) options.killTimeout = parseMs('kill-timeout', values['kill-timeout']);
  if (values['stop-signal'] !== undefined) {
    const signal = values['stop-signal'];
    if (!/^SIG[A-Z0-9]+$/.test(signal) || !(signal in require('node:os').constants.signals) || ['SIGKILL', 'SIGSTOP'].includes(signal)) {
      throw new UsageError(`--stop-signal must be a signal name such as SIGTERM (not SIGKILL or SIGSTOP), got '${signal}'`);
    }
    options.stopSignal = signal;
  }
  if (values['max-memory'] !== undefined) options.maxMemory = parseMemory(values['max-memory']);
  if (values['max-restarts'] !== undefined) {
    options.maxRestarts = parseWhole('max-restarts', values['max-restarts'], 0, 2 ** 32 - 1, 'restarts');
  }
  // Zero would switch the budget and the backoff off (src/primary/options.rs refuses it too).
  if (values['restart-window'] !== undefined) options.restartWindow = parseMs('restart-window', values['restart-window'], 1);
  return { command: 'start', options };
}

function describeAddress(info) {
  if (info.addressType === -1) return `unix:${info.address}`;
  const udp = info.addressType === 'udp4' || info.addressType === 'udp6';
  const host = info.address === null || info.address === undefined ? '*' : info.address.includes(':') ? `[${info.address}]` : info.address;
  return `${udp ? 'udp ' : ''}${host}:${info.port}`;
}

function log(line) {
  process.stdout.write(`[rcluster] ${line}\n`);
}

function logError(line) {
  process.stderr.write(`[rcluster] ${line}\n`);
}

function run(options) {
  const rcluster = require('../../index');
  let cluster;
  try {
    cluster = rcluster.start(options);
  } catch (error) {
    logError(`${error.message} (${error.code})`);
    process.exitCode = 1;
    return;
  }
  const addresses = new Set();
  let stopping = false;
  let failed = false;
  cluster.on('fork', (w) => log(`${w.kind === 'agent' ? 'agent' : 'worker'} ${w.id} started (pid ${w.pid})`));
  cluster.on('listening', (w, info) => {
    const address = describeAddress(info);
    if (!addresses.has(address)) {
      addresses.add(address);
      log(`listening on ${address}`);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    if (stopping || w.exitedAfterDisconnect) return;
    logError(`${w.kind === 'agent' ? 'agent' : 'worker'} ${w.id} (pid ${w.pid}) exited unexpectedly (${signal ? `signal ${signal}` : `code ${code}`})`);
  });
  cluster.on('warning', (warning) => logError(`warning: ${warning.message}`));
  cluster.on('error', (error) => {
    failed = true;
    logError(`${error.message} (${error.code})`);
  });
  cluster.ready.then(
    () => log(`${Object.values(cluster.workers).filter((w) => w.kind === 'app').length} workers ready`),
    () => {},
  );
  const onSignal = (signal) => {
    if (stopping) {
      log(`${signal} again: killing the workers now`);
      cluster.stop({ timeout: 0 });
      return;
    }
    stopping = true;
    log(`${signal}: stopping gracefully`);
    cluster.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  cluster.on('reload', ({ trigger, workers }) => log(`reloading ${workers} workers (asked by ${trigger})`));
  cluster.on('reloaded', ({ replaced, duration }) => log(`reloaded: ${replaced} workers replaced in ${duration} ms`));
  const onReload = () => {
    if (stopping) return;
    cluster.reload({ trigger: 'SIGHUP' }).catch((error) => logError(`${error.message} (${error.code})`));
  };
  const appWorkers = () => Object.values(cluster.workers).filter((w) => w.kind === 'app' && !w.exitedAfterDisconnect).length;
  let target = null;
  const onScale = (delta) => () => {
    if (stopping) return;
    target = Math.max(1, (target === null ? appWorkers() : target) + delta);
    log(`scaling to ${target} workers`);
    cluster.scale(target).then(
      (count) => log(`${count} workers ready`),
      (error) => logError(`${error.message} (${error.code})`),
    );
  };
  const signals = { SIGHUP: onReload, SIGTTIN: onScale(+1), SIGTTOU: onScale(-1) };
  for (const [signal, handler] of Object.entries(signals)) process.on(signal, handler);
  cluster.on('stopped', () => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    for (const [signal, handler] of Object.entries(signals)) process.removeListener(signal, handler);
    process.exitCode = failed ? 1 : 0;
    log('stopped');
  });
}

function main(argv) {
  let command;
  try {
    command = parseCommandLine(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`rcluster: ${error.message}\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (command.command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (command.command === 'version') {
    process.stdout.write(`${require('../../package.json').version}\n`);
    return;
  }
  run(command.options);
}

module.exports = { main, parseCommandLine, describeAddress };
