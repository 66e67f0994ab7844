'use strict';

// Turns argv (without node and the bin) into a command: what to run and with what, or a
// UsageError that names the bad argument. Nothing here touches a file or a socket.

const { parseArgs } = require('node:util');
const os = require('node:os');
const path = require('node:path');
const { UsageError } = require('./failures');
const { isClusterName, NAME_RULE } = require('./home');
const { isConfigFile } = require('./config-file');

/** The largest ms count an option takes (src/primary/options.rs): about 24 days. */
const MAX_MS = 2 ** 31 - 1;
/** 8 PiB, JavaScript's largest exact integer: the largest maxMemory. */
const MAX_MEMORY = 2 ** 53 - 1;
const MAX_WORKERS = 4096;
const MAX_MESSAGE_SIZE = 512 * 2 ** 20;
const MAX_LOG_LINES = 2000;
const MEMORY_UNITS = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 };

const START_OPTIONS = {
  instances: { type: 'string', short: 'i' },
  name: { type: 'string' },
  agent: { type: 'string' },
  'agent-arg': { type: 'string', multiple: true },
  'agent-exec-arg': { type: 'string', multiple: true },
  'agent-readiness': { type: 'string' },
  'agent-scope': { type: 'string' },
  'agent-lease': { type: 'string' },
  'exec-arg': { type: 'string', multiple: true },
  cwd: { type: 'string' },
  schedule: { type: 'string' },
  readiness: { type: 'string' },
  'ready-timeout': { type: 'string' },
  'kill-timeout': { type: 'string' },
  'stop-signal': { type: 'string' },
  'max-memory': { type: 'string' },
  'max-restarts': { type: 'string' },
  'restart-window': { type: 'string' },
  'restart-delay': { type: 'string' },
  'max-restart-delay': { type: 'string' },
  'heartbeat-interval': { type: 'string' },
  'heartbeat-timeout': { type: 'string' },
  'reload-parallel': { type: 'string' },
  'max-message-size': { type: 'string' },
  metrics: { type: 'string' },
  redis: { type: 'string' },
  namespace: { type: 'string' },
  'host-id': { type: 'string' },
  'log-prefix': { type: 'boolean' },
  'no-control': { type: 'boolean' },
  'pid-file': { type: 'string' },
  env: { type: 'string' },
  only: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

const HELP = { help: { type: 'boolean', short: 'h' } };
const JSON_FLAG = { json: { type: 'boolean' }, ...HELP };

/** Each verb: its flags and its positional arguments' names. */
const VERBS = {
  ls: { options: JSON_FLAG, positionals: [] },
  status: { options: JSON_FLAG, positionals: ['NAME'] },
  reload: { options: HELP, positionals: ['NAME'] },
  scale: { options: HELP, positionals: ['NAME', 'N'] },
  restart: { options: HELP, positionals: ['NAME', 'ID'] },
  stop: { options: HELP, positionals: ['NAME'] },
  logs: { options: { lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' }, ...HELP }, positionals: ['NAME'] },
};

function parse(args, options, topic) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(error.message, topic);
  }
}

function parseCount(value) {
  if (value === 'max') return 'max';
  if (!/^\d+$/.test(value)) throw new UsageError(`--instances must be a whole number or 'max', got '${value}'`, 'start');
  return Number(value);
}

/** A whole number from `min` to `max`, or a UsageError that names the flag and the range. */
function parseWhole(name, value, min, max, what, topic = 'start') {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`${name} must be a whole number of ${what} from ${min} to ${max}, got '${value}'`, topic);
  }
  return Number(value);
}

function parseMs(name, value, min = 0) {
  return parseWhole(`--${name}`, value, min, MAX_MS, 'milliseconds');
}

/** A size as maxMemory takes it; checked here so that a bad one is a usage error (exit 2). */
function parseMemory(value) {
  const size = /^(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?$/.exec(value);
  const bytes = size && Number(size[1]) * MEMORY_UNITS[size[2].toLowerCase()];
  if (!size || !(bytes >= 1 && bytes <= MAX_MEMORY)) {
    throw new UsageError(`--max-memory must be a size from 1 byte to 8 PiB such as 300M or 1G, got '${value}'`, 'start');
  }
  return value;
}

function parseChoice(name, value, choices) {
  if (!choices.includes(value)) {
    throw new UsageError(`--${name} must be ${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1]}, got '${value}'`, 'start');
  }
  return value;
}

function parseName(value, topic) {
  if (!isClusterName(value)) throw new UsageError(`a cluster name is ${NAME_RULE}, got '${value}'`, topic);
  return value;
}

function parseSignal(signal) {
  if (!/^SIG[A-Z0-9]+$/.test(signal) || !(signal in os.constants.signals) || ['SIGKILL', 'SIGSTOP'].includes(signal)) {
    throw new UsageError(`--stop-signal must be a signal name such as SIGTERM (not SIGKILL or SIGSTOP), got '${signal}'`, 'start');
  }
  return signal;
}

function parseMetrics(value) {
  const match = /^(.+):(\d+)$/.exec(value);
  if (!match || Number(match[2]) > 65535) {
    throw new UsageError(`--metrics must be HOST:PORT such as 127.0.0.1:9209, got '${value}'`, 'start');
  }
  return value;
}

/** The agent's options: its script, and its own arguments, Node flags, readiness, scope and lease if given. */
function parseAgent(values) {
  const agent = { exec: path.resolve(values.agent) };
  if (values['agent-arg'] !== undefined) agent.args = values['agent-arg'];
  if (values['agent-exec-arg'] !== undefined) agent.execArgv = values['agent-exec-arg'];
  if (values['agent-readiness'] !== undefined) {
    agent.readiness = parseChoice('agent-readiness', values['agent-readiness'], ['started', 'message']);
  }
  if (values['agent-scope'] !== undefined) agent.scope = parseChoice('agent-scope', values['agent-scope'], ['host', 'cluster']);
  // Whether it fits killTimeout, and needs scope 'cluster' and --redis, is start()'s to say.
  if (values['agent-lease'] !== undefined) agent.lease = parseMs('agent-lease', values['agent-lease']);
  return agent;
}

/** start()'s options that the flags set, nothing for a flag not given. */
function startOverrides(values) {
  const options = {};
  if (values.instances !== undefined) options.workers = parseCount(values.instances);
  if (values.name !== undefined) options.name = parseName(values.name, 'start');
  if (values.agent !== undefined) options.agent = parseAgent(values);
  for (const flag of ['agent-arg', 'agent-exec-arg', 'agent-readiness', 'agent-scope', 'agent-lease']) {
    if (values[flag] !== undefined && values.agent === undefined) throw new UsageError(`--${flag} needs --agent`, 'start');
  }
  if (values['exec-arg'] !== undefined) options.execArgv = values['exec-arg'];
  if (values.cwd !== undefined) options.cwd = path.resolve(values.cwd);
  if (values.schedule !== undefined) options.schedule = parseChoice('schedule', values.schedule, ['shared', 'reuseport']);
  if (values.readiness !== undefined) options.readiness = parseChoice('readiness', values.readiness, ['listening', 'online', 'message']);
  // Zero would fail every worker before it could start (src/primary/options/raw.rs refuses it too).
  if (values['ready-timeout'] !== undefined) options.readyTimeout = parseMs('ready-timeout', values['ready-timeout'], 1);
  if (values['kill-timeout'] !== undefined) options.killTimeout = parseMs('kill-timeout', values['kill-timeout']);
  if (values['stop-signal'] !== undefined) options.stopSignal = parseSignal(values['stop-signal']);
  if (values['max-memory'] !== undefined) options.maxMemory = parseMemory(values['max-memory']);
  if (values['max-restarts'] !== undefined) {
    options.maxRestarts = parseWhole('--max-restarts', values['max-restarts'], 0, 2 ** 32 - 1, 'restarts');
  }
  // Zero would switch the budget and the backoff off.
  if (values['restart-window'] !== undefined) options.restartWindow = parseMs('restart-window', values['restart-window'], 1);
  if (values['restart-delay'] !== undefined) options.restartDelay = parseMs('restart-delay', values['restart-delay']);
  if (values['max-restart-delay'] !== undefined) options.maxRestartDelay = parseMs('max-restart-delay', values['max-restart-delay']);
  if (values['heartbeat-interval'] !== undefined) options.heartbeatInterval = parseMs('heartbeat-interval', values['heartbeat-interval'], 1);
  if (values['heartbeat-timeout'] !== undefined) options.heartbeatTimeout = parseMs('heartbeat-timeout', values['heartbeat-timeout']);
  if (values['reload-parallel'] !== undefined) {
    options.reloadParallel = parseWhole('--reload-parallel', values['reload-parallel'], 1, MAX_WORKERS, 'worker slots');
  }
  if (values['max-message-size'] !== undefined) {
    options.maxMessageSize = parseWhole('--max-message-size', values['max-message-size'], 1, MAX_MESSAGE_SIZE, 'bytes');
  }
  if (values.metrics !== undefined) options.metrics = parseMetrics(values.metrics);
  // Left to start(), which names the option: whether --namespace has a `redis` to go with it
  // may depend on the config file, and the URL's rule is the primary's.
  if (values.redis !== undefined) options.redis = values.redis;
  if (values.namespace !== undefined) options.namespace = values.namespace;
  if (values['host-id'] !== undefined) options.hostId = values['host-id'];
  if (values['log-prefix']) options.logPrefix = true;
  if (values['no-control']) options.control = false;
  return options;
}

function parseStart(args) {
  const split = args.indexOf('--');
  const ours = split === -1 ? args : args.slice(0, split);
  const scriptArgs = split === -1 ? null : args.slice(split + 1);
  const { values, positionals } = parse(ours, START_OPTIONS, 'start');
  if (values.help) return { command: 'help', topic: 'start' };
  const [target, ...rest] = positionals;
  if (target === undefined) throw new UsageError('missing <script> (or config file)', 'start');
  const config = isConfigFile(target);
  if (!config) {
    for (const flag of ['env', 'only']) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} applies to a config file, not to a script ('${target}')`, 'start');
    }
  }
  let only = null;
  if (values.only !== undefined) {
    only = values.only.split(',').filter((name) => name !== '');
    if (only.length === 0) throw new UsageError("--only needs an app's name", 'start');
  }
  const extra = [...rest, ...(scriptArgs || [])];
  return {
    command: 'start',
    target: path.resolve(target),
    config,
    // A script's arguments; with a config file, they replace each app's `args` if given.
    args: extra.length > 0 || scriptArgs !== null ? extra : null,
    overrides: startOverrides(values),
    environment: values.env === undefined ? null : values.env,
    only,
    pidFile: values['pid-file'] === undefined ? null : path.resolve(values['pid-file']),
  };
}

function parseVerb(verb, args) {
  const spec = VERBS[verb];
  const { values, positionals } = parse(args, spec.options, verb);
  if (values.help) return { command: 'help', topic: verb };
  if (positionals.length < spec.positionals.length) {
    throw new UsageError(`missing <${spec.positionals[positionals.length]}>`, verb);
  }
  if (positionals.length > spec.positionals.length) {
    throw new UsageError(`unexpected argument '${positionals[spec.positionals.length]}'`, verb);
  }
  const command = { command: verb };
  if (spec.positionals.includes('NAME')) command.name = parseName(positionals[0], verb);
  if ('json' in spec.options) command.json = Boolean(values.json);
  if (verb === 'scale') command.workers = parseWhole('<N>', positionals[1], 1, MAX_WORKERS, 'workers', verb);
  if (verb === 'restart') command.id = parseWhole('<ID>', positionals[1], 0, 2 ** 32 - 1, 'worker id', verb);
  if (verb === 'logs') {
    command.lines = values.lines === undefined ? 100 : parseWhole('--lines', values.lines, 0, MAX_LOG_LINES, 'lines', verb);
    command.follow = Boolean(values.follow);
  }
  return command;
}

/** Turns argv (without node and the bin) into a command, or throws UsageError. */
function parseCommandLine(argv) {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('missing command');
  if (first === '-h' || first === '--help' || first === 'help') {
    return { command: 'help', topic: rest[0] === 'start' || rest[0] in VERBS ? rest[0] : null };
  }
  if (first === '-v' || first === '--version') return { command: 'version' };
  if (first.startsWith('-')) throw new UsageError(`unknown option '${first}' (the command comes first)`);
  if (first === 'start') return parseStart(rest);
  if (Object.hasOwn(VERBS, first)) return parseVerb(first, rest);
  throw new UsageError(`unknown command '${first}'`);
}

module.exports = { parseCommandLine };
