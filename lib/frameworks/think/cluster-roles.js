'use strict';

// What replaces think-cluster's Master and Worker in an app started through `rcluster/think`.
// - Master (the primary): forks nothing itself; it starts an rcluster cluster of the app's entry
//   script with think's settings (`workers`, `processKillTimeout`, `reloadSignal`), reloads on the
//   reload signal (and on `think-cluster-reload-workers`, which rcluster's primary treats as a
//   reload request), and stops gracefully on SIGINT / SIGTERM.
// - Worker: think-cluster's own, except that when the app asks to leave after an uncaught
//   exception or rejection it tells rcluster's primary, which starts the replacement at once,
//   instead of waiting for think-cluster's master to answer.

const os = require('node:os');
const cluster = require('node:cluster');

const LEAVING = Symbol('rcluster.think.leaving');

function stickyError(side) {
  const error = new Error(
    `rcluster/think: stickyCluster is not supported (${side}): rcluster's primary does not hand connections ` +
      'to workers by client address; remove `stickyCluster: true` from the config, or keep `require(\'thinkjs\')` ' +
      'to run on think-cluster',
  );
  error.code = 'ERR_RCLUSTER_THINK_STICKY';
  return error;
}

/** think-cluster's option parsing: `workers` 0 or unset means one per CPU. */
function workerCount(workers) {
  return Number(workers) || os.cpus().length;
}

class RclusterMaster {
  /** Options as ThinkJS passes them to think-cluster's Master. */
  constructor(options = {}) {
    this.options = { port: 0, host: '', sticky: false, workers: 0, reloadSignal: '', ...options };
    this.options.workers = workerCount(this.options.workers);
    if (this.options.sticky) throw stickyError('in the primary');
    this.cluster = null;
  }

  startServer() {
    const rcluster = require('../../../index.js');
    const config = (name) => (typeof think === 'object' && typeof think.config === 'function' ? think.config(name) : undefined);
    const logger = typeof think === 'object' && think.logger ? think.logger : console;
    const killTimeout = Number(config('processKillTimeout')) || 10_000;
    const entry = (require.main && require.main.filename) || process.argv[1];
    const workers = this.options.workers;
    const started = rcluster.start({
      exec: entry,
      args: process.argv.slice(2),
      execArgv: process.execArgv,
      workers,
      killTimeout,
      env: { THINK_WORKERS: String(workers) },
    });
    this.cluster = started;
    started.on('warning', (warning) => logger.warn(`${warning.message} (${warning.code})`));
    started.on('error', (error) => {
      logger.error(`${error.message} (${error.code})`);
      process.exitCode = 1;
    });
    started.on('stopped', () => {
      if (process.exitCode) process.exit();
    });
    this.captureSignals();
    return started.ready.then(() => Object.values(started.workers).filter((w) => w.kind === 'app').map((worker) => ({ worker })));
  }

  captureSignals() {
    const signal = this.options.reloadSignal;
    if (signal) process.on(signal, () => this.forceReloadWorkers());
    let stopping = false;
    const stop = () => {
      if (stopping) {
        this.cluster.stop({ timeout: 0 });
        return;
      }
      stopping = true;
      this.cluster.stop().then(() => process.exit(process.exitCode || 0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  }

  /** think-cluster reloads every worker on a code change (development); here, a rolling reload. */
  forceReloadWorkers() {
    if (!this.cluster) return Promise.resolve();
    const logger = typeof think === 'object' && think.logger ? think.logger : console;
    return this.cluster.reload().catch((error) => logger.error(`reload failed: ${error.message}`));
  }
}

/** think-cluster's Worker class, run on rcluster. */
function rclusterWorker(Base) {
  return class RclusterWorker extends Base {
    constructor(options) {
      super(options);
      if (this.options.sticky) throw stickyError('in a worker');
    }

    /**
     * think-cluster asks its master for a replacement and waits for it before closing; here
     * rcluster's primary is told (as its child runtime tells it of an uncaught exception), starts
     * the replacement at once, and this worker closes its server and leaves.
     */
    disconnectWorker(sendSignal) {
      if (this[LEAVING]) return;
      this[LEAVING] = true;
      if (sendSignal) {
        require('../../child/child').tellPrimary({
          cmd: 'NODE_RCLUSTER_UNCAUGHT',
          error: 'the ThinkJS app asked to leave (onUncaughtException / onUnhandledRejection returned true)',
        });
      }
      this.closeServer();
    }
  };
}

/** Whether this worker is leaving (Node's cluster marks it before closing its servers). */
function leaving() {
  return Boolean(cluster.isWorker && cluster.worker && cluster.worker.exitedAfterDisconnect === true) || !process.connected;
}

module.exports = { RclusterMaster, rclusterWorker, stickyError, leaving };
