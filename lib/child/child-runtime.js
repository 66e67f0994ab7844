'use strict';

// rcluster's child runtime, preloaded (`--require`) by the primary into every child of a
// supervised cluster, so that unmodified apps get it too (option `childRuntime: false` turns it
// off). What it does:
// - heartbeats from the event loop, so that the primary notices a worker whose loop is blocked
//   (src/primary/watchdog.rs);
// - an exception nobody caught in an app worker: the worker tells the primary, which starts its
//   replacement at once; it stops accepting, finishes what it serves, then exits with code 1;
// - a leaving worker's HTTP servers close keep-alive connections after their next response
//   (`Connection: close`) instead of dropping idle ones under their clients' feet;
// - the agent reports once its main module has run (agent readiness 'started').

// First: rcluster's variables and this preload leave process.env and process.execArgv here.
const variables = require('./environment');

const kind = variables.RCLUSTER_WORKER_KIND;
const workerId = variables.RCLUSTER_WORKER_ID;
const heartbeatInterval = Number(variables.RCLUSTER_HEARTBEAT_INTERVAL);
const enabled = variables.RCLUSTER_CHILD_RUNTIME !== '0';
const { tellPrimary } = require('./child');

if (kind === 'agent') {
  // After the main module (a CommonJS one) has run.
  setImmediate(() => tellPrimary({ cmd: 'NODE_RCLUSTER_AGENT_STARTED' }));
}

if (enabled && heartbeatInterval > 0) {
  // Each timed beat says how late its timer fired, in ms: the event loop's delay, as the
  // primary's metrics show it. Measured on the beat's own timer, so it costs no extra wake-ups
  // (perf_hooks.monitorEventLoopDelay would wake an idle worker every few milliseconds).
  const { performance } = require('node:perf_hooks');
  let due = performance.now() + heartbeatInterval;
  const timedBeat = () => {
    const now = performance.now();
    const delay = Math.max(0, now - due);
    due = now + heartbeatInterval;
    tellPrimary({ cmd: 'NODE_RCLUSTER_HEARTBEAT', delay: Math.round(delay * 1000) / 1000 });
  };
  setImmediate(() => tellPrimary({ cmd: 'NODE_RCLUSTER_HEARTBEAT' }));
  // The beat never keeps the process alive by itself.
  setInterval(timedBeat, heartbeatInterval).unref();
}

if (enabled && kind === 'app') {
  process.on('uncaughtException', onUncaughtException);
  drainKeepAliveWhenLeaving();
}

let failing = false;

function onUncaughtException(error) {
  // An app with its own handler decides for itself, as it would without rcluster.
  if (process.listenerCount('uncaughtException') > 1) return;
  const util = require('node:util');
  const text = util.inspect(error);
  const when = failing ? ' while it was leaving' : '';
  process.stderr.write(`rcluster: worker ${workerId} (pid ${process.pid}) threw an uncaught exception${when}:\n${text}\n`);
  process.exitCode = 1;
  if (failing) return;
  failing = true;
  const cluster = require('node:cluster');
  if (!cluster.isWorker || !process.connected) {
    process.exit(1);
    return;
  }
  tellPrimary({ cmd: 'NODE_RCLUSTER_UNCAUGHT', error: text });
  // Closes its servers and waits for their connections to end, then closes the channel.
  process.once('disconnect', () => process.exit(1));
  cluster.worker.disconnect();
}

/**
 * Node's `server.close()` drops every idle keep-alive connection at once, and a client that
 * sends its next request on one at that moment gets ECONNRESET. While this worker leaves the
 * cluster (Node's cluster sets `exitedAfterDisconnect` before it closes the servers), each
 * connection is closed by the server after its next response instead, with `Connection:
 * close`; one that stays idle closes after the server's `keepAliveTimeout`.
 */
function drainKeepAliveWhenLeaving() {
  const http = require('node:http');
  const closeIdleConnections = http.Server.prototype.closeIdleConnections;
  if (typeof closeIdleConnections !== 'function') return;
  const draining = Symbol('rcluster.draining');
  const closeAfterResponse = (req, res) => {
    res.shouldKeepAlive = false;
  };
  http.Server.prototype.closeIdleConnections = function closeIdleConnectionsUnlessLeaving() {
    const cluster = require('node:cluster');
    const leaving = cluster.isWorker && cluster.worker && cluster.worker.exitedAfterDisconnect === true;
    if (!leaving) return Reflect.apply(closeIdleConnections, this, arguments);
    if (!this[draining]) {
      this[draining] = true;
      this.prependListener('request', closeAfterResponse);
    }
    return undefined;
  };
}
