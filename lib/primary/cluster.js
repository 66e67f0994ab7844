'use strict';

// `rcluster.start(options)`: the supervised cluster (README, API). The Rust supervisor
// decides everything (forks, restarts, readiness, stopping); this class turns its events into
// Node-style `Worker` objects and EventEmitter events.

const EventEmitter = require('node:events');
const { PrimaryCore, checkJson, checkFields } = require('./primary-core');
const { Worker, WorkerProcess } = require('./worker');
const { onWorkerEvent, settle, announce, forwardMessages } = require('./worker-events');
const { isLog4jsMessage, writeLog4jsMessage } = require('./log4js');
const { rclusterError } = require('../errors');
const { primaryMessenger, receivedFrame } = require('./primary-messenger');

function noop() {}

/** A supervised worker: Node's Worker plus `pid`, `kind` and its slot. */
function ClusterWorker(cluster, event) {
  const process = new WorkerProcess(cluster._core, event.id, event.pid, cluster._serialization);
  Worker.call(this, { id: event.id, process });
  this.kind = event.workerKind || 'app';
  this.slot = event.slot === undefined ? null : event.slot;
  this._cluster = cluster;
}
Object.setPrototypeOf(ClusterWorker.prototype, Worker.prototype);
Object.defineProperty(ClusterWorker.prototype, 'pid', {
  get() {
    return this.process.pid;
  },
});
ClusterWorker.prototype.disconnect = function disconnect() {
  this.exitedAfterDisconnect = true;
  if (this.process.connected) this._cluster._core.disconnect(this.id);
  return this;
};

/** Warnings that mean a worker was replaced (counted in `cluster.restarts`). */
const REPLACEMENTS = new Set([
  'ERR_RCLUSTER_WORKER_CRASHED',
  'ERR_RCLUSTER_UNRESPONSIVE',
  'ERR_RCLUSTER_UNCAUGHT_EXCEPTION',
  'ERR_RCLUSTER_MEMORY_LIMIT',
  'ERR_RCLUSTER_WORKER_DISCONNECTED',
]);
const RUNTIME = ['--require', require.resolve('../child/child-runtime.js')];
/** The largest ms count an option takes (src/primary/options.rs): about 24 days. */
const MAX_MS = 2 ** 31 - 1;

/**
 * The options as Rust takes them: every child preloads the child runtime
 * (lib/child/child-runtime.js), unless `childRuntime` is false; an agent whose readiness is
 * 'started' preloads it anyway, for its report that the main module has run. Bad values are left
 * for Rust to report.
 */
function withChildRuntime(options) {
  const runtime = options.childRuntime !== false;
  const out = { ...options };
  if (runtime && (options.execArgv === undefined || Array.isArray(options.execArgv))) {
    out.execArgv = [...RUNTIME, ...(options.execArgv || [])];
  }
  const { agent } = options;
  if (agent === undefined || agent === null) return out;
  const spec = typeof agent === 'string' ? { exec: agent } : agent;
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) return out;
  const started = spec.readiness === undefined || spec.readiness === 'started';
  // The agent's execArgv defaults to the app's, as the user gave it.
  const execArgv = spec.execArgv !== undefined ? spec.execArgv : options.execArgv;
  if ((runtime || started) && (execArgv === undefined || Array.isArray(execArgv))) {
    out.agent = { ...spec, execArgv: [...RUNTIME, ...(execArgv || [])] };
  }
  return out;
}

/** A promise settled by a later event, found by its ticket. */
class Tickets {
  constructor() {
    this.next = 1;
    this.waiting = new Map();
  }

  open() {
    const ticket = this.next++;
    const promise = new Promise((resolve, reject) => this.waiting.set(ticket, { resolve, reject }));
    return { ticket, promise };
  }

  /** Settles the waiting promises among `tickets`; returns how many there were. */
  settle(tickets, error, value) {
    let settled = 0;
    for (const ticket of tickets || []) {
      const waiter = this.waiting.get(ticket);
      if (!waiter) continue;
      this.waiting.delete(ticket);
      settled += 1;
      if (error) waiter.reject(error);
      else waiter.resolve(value);
    }
    return settled;
  }
}

class Cluster extends EventEmitter {
  constructor(options) {
    super();
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', 'rcluster.start(options): options must be an object');
    }
    this.workers = {};
    /** Workers replaced after they failed at work: crashed, hung, too big, an uncaught exception. */
    this.restarts = 0;
    this._serialization = options.serialization || 'json';
    this._settled = false;
    this._stopped = false;
    this._stopWaiters = [];
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this._reloads = new Tickets();
    this._scales = new Tickets();
    this._core = new PrimaryCore('supervised', withChildRuntime(options), (event) => this._onEvent(event));
    this._core.hold(true);
    this._core.start();
  }

  /** The messenger, used from the primary (README, The messenger). */
  get messenger() {
    if (!this._messenger) this._messenger = primaryMessenger(this._core);
    return this._messenger;
  }

  /**
   * Rolling reload: each worker is replaced by a new one, and leaves only once that one is ready.
   * Resolves to `{ replaced, workers, duration }`; rejects with ERR_RCLUSTER_RELOAD_ABORTED if a
   * replacement failed (the workers not yet replaced keep serving). A call while a reload runs
   * joins it.
   */
  reload(options = {}) {
    if (options === null || typeof options !== 'object') {
      return Promise.reject(rclusterError('ERR_RCLUSTER_INVALID_OPTION', 'reload(options): options must be an object'));
    }
    return this._settledBy(this._reloads, (ticket) => {
      checkFields(options);
      const trigger = options.trigger || 'reload()';
      if (typeof trigger !== 'string') {
        throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `option \`trigger\` must be a string, got ${typeof trigger}`);
      }
      this._core.call('reload', ticket, options, trigger);
    });
  }

  /**
   * Replaces one worker, as one step of a rolling reload: a new worker starts in its slot, and
   * once that one is ready the old one leaves gracefully. Resolves to `{ id, replaced }` (the new
   * worker's id, the old one's) once the old one has let go of its sockets. Rejects with
   * ERR_RCLUSTER_UNKNOWN_WORKER (not a current worker), ERR_RCLUSTER_NOT_RUNNING (starting,
   * stopping, or a reload under way) or ERR_RCLUSTER_RELOAD_ABORTED (the new worker failed to
   * start; the old one keeps serving).
   */
  replace(id) {
    return this._settledBy(this._reloads, (ticket) => {
      if (!Number.isInteger(id) || id < 1 || id > 2 ** 32 - 1) {
        throw rclusterError('ERR_RCLUSTER_UNKNOWN_WORKER', `replace(id): id must be a worker id, got ${String(id)}`);
      }
      this._core.call('replace', ticket, id);
    });
  }

  /** Changes the number of app workers; resolves to the new count once they are all ready. */
  scale(workers) {
    return this._settledBy(this._scales, (ticket) => {
      checkJson(workers, 'workers');
      this._core.call('scale', ticket, workers);
    });
  }

  _settledBy(tickets, command) {
    const { ticket, promise } = tickets.open();
    try {
      command(ticket);
    } catch (error) {
      tickets.settle([ticket], error);
    }
    return promise;
  }

  /** Graceful stop; resolves once every child has exited. */
  stop(options) {
    const timeout = options && options.timeout;
    // The bound of every other ms option; past 2^32 Node-API would wrap the number around.
    if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 0 || timeout > MAX_MS)) {
      return Promise.reject(
        rclusterError('ERR_RCLUSTER_INVALID_OPTION', `stop(): option \`timeout\` must be an integer of ms from 0 to ${MAX_MS}, got ${timeout}`),
      );
    }
    if (this._stopped) return Promise.resolve();
    const stopped = new Promise((resolve) => this._stopWaiters.push(resolve));
    this._core.stop(timeout);
    return stopped;
  }

  _onEvent(event) {
    const worker = event.id === undefined || event.id === null ? undefined : this.workers[event.id];
    if (worker && onWorkerEvent(this, worker, event)) return;
    switch (event.kind) {
      case 'fork': {
        const created = new ClusterWorker(this, event);
        forwardMessages(this, created);
        // log4js in a worker sends its logging events to the master, which writes them.
        created.on('message', (message) => isLog4jsMessage(message) && writeLog4jsMessage(message));
        this.workers[created.id] = created;
        this.emit('fork', created);
        break;
      }
      case 'frame':
        this.messenger._receive(receivedFrame(event));
        break;
      // Here a worker is marked before its `process` tells of it, and leaves `workers` at its
      // exit; node-cluster.js marks it from its process's events, as Node's cluster does.
      case 'disconnect':
        if (!worker) break;
        settle(worker, 'disconnected');
        worker.process._onDisconnect();
        announce(this, worker, 'disconnect');
        break;
      case 'exit':
        if (!worker) break;
        delete this.workers[worker.id];
        settle(worker, 'dead');
        worker.process._onExit(event);
        announce(this, worker, 'exit', worker.process.exitCode, worker.process.signalCode);
        break;
      case 'workerReady':
        if (worker) worker.emit('ready');
        break;
      case 'ready':
        this._settled = true;
        this._resolveReady();
        this.emit('ready');
        break;
      case 'error':
        this._fail(rclusterError(event.code, event.message, event.json ? { details: JSON.parse(event.json) } : undefined));
        break;
      case 'warning':
        this._warn(event);
        break;
      case 'reloadStarted':
        this.emit('reload', { trigger: event.message, workers: event.workers });
        break;
      case 'reloaded':
        this._onReloaded(event);
        break;
      case 'scaled': {
        const error = event.code ? rclusterError(event.code, event.message) : null;
        this._scales.settle(event.tickets, error, event.workers);
        if (!error) this.emit('scaled', event.workers);
        break;
      }
      case 'hostJoined':
        this.emit('host-join', JSON.parse(event.json));
        break;
      case 'hostLeft':
        this.emit('host-leave', JSON.parse(event.json));
        break;
      // agent: { scope: 'cluster' }: this host runs the namespace's agent, or stops it.
      case 'agentLead':
        this.emit('agent-lead', JSON.parse(event.json));
        break;
      case 'agentLose':
        // The primary sends the agent away: its exit is asked for.
        for (const w of Object.values(this.workers)) if (w.kind === 'agent') w.exitedAfterDisconnect = true;
        this.emit('agent-lose', JSON.parse(event.json));
        break;
      case 'stopping':
        this.emit('stopping', { trigger: event.message });
        break;
      case 'stopped':
        this._onStopped();
        break;
      default:
        break;
    }
  }

  _fail(error) {
    if (!this._settled) {
      this._settled = true;
      if (this.listenerCount('error') > 0) {
        // Reported as an event; the rejection must not also crash the process as unhandled.
        this.ready.catch(noop);
        this.emit('error', error);
      }
      this._rejectReady(error);
      return;
    }
    this.emit('error', error);
  }

  _onReloaded(event) {
    const details = event.json ? JSON.parse(event.json) : {};
    const { newWorkers, replacedWorker, ...figures } = details;
    if (!event.code && replacedWorker !== undefined && replacedWorker !== null) {
      // replace(id): its callers alone hear of it.
      this._reloads.settle(event.tickets, null, { id: newWorkers[0], replaced: replacedWorker });
      return;
    }
    if (!event.code) {
      this._reloads.settle(event.tickets, null, figures);
      this.emit('reloaded', figures);
      return;
    }
    const error = rclusterError(event.code, event.message, { details });
    // Nobody waits on a reload a child asked for: its failure is told as a warning.
    if (this._reloads.settle(event.tickets, error) === 0) this._warn(event);
  }

  _warn(event) {
    const warning = rclusterError(event.code, event.message, event.json ? { details: JSON.parse(event.json) } : undefined);
    warning.name = 'RclusterWarning';
    if (event.id !== undefined && event.id !== null) warning.workerId = event.id;
    if (REPLACEMENTS.has(event.code)) this.restarts++;
    if (this.listenerCount('warning') > 0) this.emit('warning', warning);
    else process.emitWarning(warning);
  }

  _onStopped() {
    this._stopped = true;
    this._core.hold(false);
    if (!this._settled) {
      this._settled = true;
      this.ready.catch(noop);
      this._rejectReady(rclusterError('ERR_RCLUSTER_NOT_RUNNING', 'the cluster was stopped before it was ready'));
    }
    for (const resolve of this._stopWaiters.splice(0)) resolve();
    this.emit('stopped');
  }
}

function start(options) {
  return new Cluster(options);
}

module.exports = { start, Cluster, ClusterWorker };
