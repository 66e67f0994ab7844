'use strict';

// `require('rcluster/cluster')` in a primary: the surface of Node's `cluster` module, with the
// children started and driven by rcluster's Rust primary. The bookkeeping below follows Node's
// lib/internal/cluster/primary.js step for step, so that code written against `cluster` (and
// Node's own cluster tests) sees the same events in the same order. What Node does in its
// primary's handle classes (SharedHandle, RoundRobinHandle) is done in Rust.

const EventEmitter = require('node:events');
const net = require('node:net');
const { PrimaryCore } = require('./primary-core');
const { Worker, WorkerProcess } = require('./worker');
const { onWorkerEvent, settle, announce, forwardMessages } = require('./worker-events');
const { rclusterError, typeError } = require('../errors');

const SCHED_NONE = 1;
const SCHED_RR = 2;
const INSPECT_ARG = /--inspect(?:-brk|-port)?|--debug-port/;

const cluster = new EventEmitter();
const intercom = new EventEmitter();
module.exports = cluster;

/** Node's Worker, with the primary-side methods. */
function NodeWorker(options) {
  if (!(this instanceof NodeWorker)) return new NodeWorker(options);
  Worker.call(this, options);
}
Object.setPrototypeOf(NodeWorker.prototype, Worker.prototype);
Object.setPrototypeOf(NodeWorker, Worker);

NodeWorker.prototype.disconnect = function disconnect() {
  this.exitedAfterDisconnect = true;
  if (core && this.process && this.process.connected) core.disconnect(this.id);
  removeWorker(this);
  return this;
};

cluster.isWorker = false;
cluster.isMaster = true;
cluster.isPrimary = true;
cluster.Worker = NodeWorker;
cluster.workers = {};
cluster.settings = {};
cluster.SCHED_NONE = SCHED_NONE;
cluster.SCHED_RR = SCHED_RR;

const envPolicy = process.env.NODE_CLUSTER_SCHED_POLICY;
cluster.schedulingPolicy = envPolicy === 'none' ? SCHED_NONE : SCHED_RR;

let initialized = false;
let schedulingPolicy;
/** @type {PrimaryCore | null} created on the first fork, once the policy is frozen. */
let core = null;
/** Every worker whose process has not exited, by id (cluster.workers loses them earlier). */
const live = new Map();
let debugPortOffset = 1;

cluster.setupPrimary = function setupPrimary(options) {
  const settings = {
    args: process.argv.slice(2),
    exec: process.argv[1],
    execArgv: process.execArgv,
    silent: false,
    ...cluster.settings,
    ...options,
  };
  // V8 profiles of several processes in one file are unusable: give each its own.
  if (settings.execArgv.some((s) => s.startsWith('--prof')) && !settings.execArgv.some((s) => s.startsWith('--logfile='))) {
    settings.execArgv = [...settings.execArgv, '--logfile=v8-%p.log'];
  }
  cluster.settings = settings;
  if (initialized) {
    process.nextTick(() => cluster.emit('setup', settings));
    return;
  }
  initialized = true;
  schedulingPolicy = cluster.schedulingPolicy;
  if (schedulingPolicy !== SCHED_NONE && schedulingPolicy !== SCHED_RR) {
    throw rclusterError('ERR_INTERNAL_ASSERTION', `Bad cluster.schedulingPolicy: ${schedulingPolicy}`);
  }
  process.nextTick(() => cluster.emit('setup', settings));
};
cluster.setupMaster = cluster.setupPrimary;

function primaryCore() {
  if (core === null) {
    core = new PrimaryCore('manual', { schedulingPolicy: schedulingPolicy === SCHED_RR ? 'rr' : 'none' }, onEvent);
  }
  return core;
}

function isUsingInspector(execArgv) {
  return execArgv.some((arg) => INSPECT_ARG.test(arg)) || INSPECT_ARG.test(process.env.NODE_OPTIONS || '');
}

function inspectPort(configured) {
  let port = configured;
  if (typeof port === 'function') {
    port = port();
  } else if (port === undefined || port === null) {
    port = process.debugPort + debugPortOffset;
    if (port > 65535) port = port - 65535 + 1024 - 1;
    debugPortOffset++;
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535 || (port > 0 && port < 1024)) {
    const error = new RangeError(`Port should be >= 0 and < 65536. Received ${port}.`);
    error.code = 'ERR_SOCKET_BAD_PORT';
    throw error;
  }
  return port;
}

function stdioSpec(settings) {
  if (settings.stdio !== undefined) {
    if (!Array.isArray(settings.stdio)) throw typeError('ERR_INVALID_ARG_TYPE', 'settings.stdio must be an array');
    return settings.stdio.map((entry) => {
      if (entry === 'inherit' || entry === 'pipe' || entry === 'ignore' || entry === 'ipc' || entry === 'overlapped') return entry;
      if (entry === undefined || entry === null) return null;
      if (typeof entry === 'number') return entry;
      // A stream or socket: share its descriptor.
      const fd = typeof entry.fd === 'number' ? entry.fd : entry._handle && entry._handle.fd;
      if (typeof fd === 'number' && fd >= 0) return fd;
      throw typeError('ERR_INVALID_ARG_VALUE', 'settings.stdio entries must be strings, descriptors or streams with one');
    });
  }
  const mode = settings.silent ? 'pipe' : 'inherit';
  return [mode, mode, mode, 'ipc'];
}

function childEnv(env) {
  const merged = { ...process.env, ...env };
  const out = {};
  for (const key of Object.keys(merged)) {
    if (merged[key] !== undefined) out[key] = `${merged[key]}`;
  }
  return out;
}

/** Our ends of the child's 'pipe' stdio entries, as Node's ChildProcess exposes them. */
function attachStdio(workerProcess, stdio, pipes) {
  workerProcess.stdio = stdio.map(() => null);
  for (const { index, fd } of pipes) {
    const stream = new net.Socket({ fd, readable: index !== 0, writable: index === 0 || index > 2 });
    if (index !== 0 && index <= 2) stream.end();
    workerProcess.stdio[index] = stream;
  }
  [workerProcess.stdin, workerProcess.stdout, workerProcess.stderr] = workerProcess.stdio;
}

function createWorkerProcess(env) {
  const settings = cluster.settings;
  const execArgv = [...settings.execArgv];
  if (settings.inspectPort === null) {
    const error = new RangeError('Port should be > 0 and < 65536. Received null.');
    error.code = 'ERR_SOCKET_BAD_PORT';
    throw error;
  }
  if (isUsingInspector(settings.execArgv)) execArgv.push(`--inspect-port=${inspectPort(settings.inspectPort)}`);
  const stdio = stdioSpec(settings);
  const spec = {
    exec: settings.exec,
    args: settings.args,
    execArgv,
    env: childEnv(env),
    cwd: settings.cwd,
    stdio,
    serialization: settings.serialization,
    uid: settings.uid,
    gid: settings.gid,
  };
  const primary = primaryCore();
  const forked = primary.fork(spec);
  const workerProcess = new WorkerProcess(primary, forked.id, forked.pid, settings.serialization);
  attachStdio(workerProcess, stdio, forked.pipes);
  return { id: forked.id, workerProcess };
}

function removeWorker(worker) {
  delete cluster.workers[worker.id];
  if (Object.keys(cluster.workers).length === 0) intercom.emit('disconnect');
}

cluster.fork = function fork(env) {
  cluster.setupPrimary();
  const { id, workerProcess } = createWorkerProcess(env);
  const worker = new NodeWorker({ id, process: workerProcess });
  forwardMessages(cluster, worker);
  // As in Node, the worker is marked when its process tells of an exit or a disconnect (the
  // supervised primary, cluster.js, marks it before).
  workerProcess.once('exit', (exitCode, signalCode) => {
    // Keep a worker that is still connected: its messages may still be wanted.
    if (!worker.isConnected()) removeWorker(worker);
    settle(worker, 'dead');
    announce(cluster, worker, 'exit', exitCode, signalCode);
  });
  workerProcess.once('disconnect', () => {
    if (worker.isDead()) removeWorker(worker);
    settle(worker, 'disconnected');
    announce(cluster, worker, 'disconnect');
  });
  live.set(id, worker);
  core.hold(true);
  process.nextTick(() => cluster.emit('fork', worker));
  cluster.workers[worker.id] = worker;
  return worker;
};

cluster.disconnect = function disconnect(cb) {
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) {
    process.nextTick(() => intercom.emit('disconnect'));
  } else {
    for (const worker of workers) {
      if (worker.isConnected()) worker.disconnect();
    }
  }
  if (typeof cb === 'function') intercom.once('disconnect', cb);
};

function onEvent(event) {
  const worker = live.get(event.id);
  if (!worker || onWorkerEvent(cluster, worker, event)) return;
  switch (event.kind) {
    // The worker's process tells of these; the listeners fork() put on it do the rest.
    case 'disconnect':
      worker.process._onDisconnect();
      break;
    case 'exit':
      live.delete(event.id);
      if (live.size === 0) core.hold(false);
      worker.process._onExit(event);
      break;
    case 'warning':
      process.emitWarning(event.message, { code: event.code });
      break;
    default:
      break;
  }
}
