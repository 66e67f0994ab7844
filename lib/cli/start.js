'use strict';

// `rcluster start`: runs one cluster (a script) or several (a config file's apps) in this
// process, in the foreground, the way systemd, Docker and Kubernetes expect. Signals apply to
// every cluster; the process ends once all have stopped: 0, or 1 if any failed.

const { loadConfig, appsFromConfig } = require('./config-file');
const { UsageError, describeError } = require('./failures');
const { defaultClusterName } = require('./home');
const { log, logError } = require('./output');
const { checkPidFile, writePidFile, removePidFile } = require('./pid-file');
const { describeAddress } = require('./table');

/** Each app's start() options: the config file's (or the script), the flags over them. */
async function appsToStart(command) {
  let apps;
  if (command.config) {
    const config = await loadConfig(command.target);
    apps = appsFromConfig(config, command.target, { environment: command.environment, only: command.only });
    if (command.overrides.name !== undefined && apps.length > 1) {
      throw new UsageError(`--name names one cluster, and the config file starts ${apps.length} apps (pick one with --only)`, 'start');
    }
    if (command.args !== null) apps = apps.map((app) => ({ ...app, args: command.args }));
  } else {
    apps = [{ exec: command.target, args: command.args || [] }];
  }
  return apps.map((app) => {
    const options = { ...app, ...command.overrides };
    if (options.workers === undefined) options.workers = 'max';
    return options;
  });
}

/** One cluster and what it prints. */
function watch(cluster, name, say, sayError, state) {
  const addresses = new Set();
  cluster.on('fork', (w) => say(`${w.kind === 'agent' ? 'agent' : 'worker'} ${w.id} started (pid ${w.pid})`));
  cluster.on('listening', (w, info) => {
    const address = describeAddress(info);
    if (!addresses.has(address)) {
      addresses.add(address);
      say(`listening on ${address}`);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    if (state.stopping || w.exitedAfterDisconnect) return;
    sayError(`${w.kind === 'agent' ? 'agent' : 'worker'} ${w.id} (pid ${w.pid}) exited unexpectedly (${signal ? `signal ${signal}` : `code ${code}`})`);
  });
  cluster.on('warning', (warning) => sayError(`warning: ${describeError(warning)}`));
  cluster.on('error', (error) => {
    state.failed = true;
    sayError(describeError(error));
  });
  cluster.ready.then(
    () => say(`${Object.values(cluster.workers).filter((w) => w.kind === 'app').length} workers ready`),
    () => {},
  );
  cluster.on('reload', ({ trigger, workers }) => say(`reloading ${workers} workers (asked by ${trigger})`));
  cluster.on('agent-lead', ({ epoch }) => say(`this host runs the cluster's agent (epoch ${epoch})`));
  cluster.on('agent-lose', ({ epoch, reason }) => sayError(`this host stops the cluster's agent (epoch ${epoch}): ${reason}`));
  cluster.on('reloaded', ({ replaced, duration }) => say(`reloaded: ${replaced} workers replaced in ${duration} ms`));
}

/** Scaling by SIGTTIN / SIGTTOU: one worker more or less than the last target. */
function scaler(cluster, say, sayError) {
  let target = null;
  const appWorkers = () => Object.values(cluster.workers).filter((w) => w.kind === 'app' && !w.exitedAfterDisconnect).length;
  return (delta) => {
    target = Math.max(1, (target === null ? appWorkers() : target) + delta);
    say(`scaling to ${target} workers`);
    cluster.scale(target).then(
      (count) => say(`${count} workers ready`),
      (error) => sayError(describeError(error)),
    );
  };
}

function runClusters(apps, { pidFile }) {
  const rcluster = require('../../index');
  const several = apps.length > 1;
  const state = { stopping: false, failed: false };
  const running = [];
  let pending = 0;

  const signals = {};
  const finish = () => {
    for (const [signal, handler] of Object.entries(signals)) process.removeListener(signal, handler);
    if (pidFile !== null) removePidFile(pidFile);
    process.exitCode = state.failed ? 1 : 0;
    log('stopped');
  };
  const stopAll = (options) => {
    for (const { cluster } of running) cluster.stop(options);
  };

  for (const options of apps) {
    const name = options.name !== undefined ? options.name : defaultClusterName(options.exec);
    const say = several ? (line) => log(`${name}: ${line}`) : log;
    const sayError = several ? (line) => logError(`${name}: ${line}`) : logError;
    let cluster;
    try {
      cluster = rcluster.start(options);
    } catch (error) {
      sayError(describeError(error));
      state.failed = true;
      break;
    }
    pending += 1;
    watch(cluster, name, say, sayError, state);
    cluster.on('stopped', () => {
      pending -= 1;
      if (pending === 0) finish();
    });
    running.push({ cluster, name, say, sayError, scale: scaler(cluster, say, sayError), control: options.control !== false });
  }

  if (state.failed) {
    // An app that cannot start fails the whole start: the others stop again.
    state.stopping = true;
    if (running.length === 0) process.exitCode = 1;
    else stopAll();
    return;
  }

  if (pidFile !== null) {
    try {
      writePidFile(pidFile);
    } catch (error) {
      logError(describeError(error));
      state.failed = true;
      state.stopping = true;
      stopAll();
      return;
    }
  }
  const controlled = running.filter((r) => r.control).map((r) => `rcluster status ${r.name}`);
  log(`primary pid ${process.pid}, ${controlled.length > 0 ? `control: ${controlled.join(', ')}` : 'no control socket'}`);

  const onStop = (signal) => {
    if (state.stopping) {
      log(`${signal} again: killing the workers now`);
      stopAll({ timeout: 0 });
      return;
    }
    state.stopping = true;
    log(`${signal}: stopping gracefully`);
    stopAll();
  };
  signals.SIGINT = onStop;
  signals.SIGTERM = onStop;
  signals.SIGHUP = () => {
    if (state.stopping) return;
    for (const { cluster, sayError } of running) {
      cluster.reload({ trigger: 'SIGHUP' }).catch((error) => sayError(describeError(error)));
    }
  };
  signals.SIGTTIN = () => {
    if (!state.stopping) for (const { scale } of running) scale(+1);
  };
  signals.SIGTTOU = () => {
    if (!state.stopping) for (const { scale } of running) scale(-1);
  };
  for (const [signal, handler] of Object.entries(signals)) process.on(signal, handler);
  if (pidFile !== null) process.once('exit', () => removePidFile(pidFile));
}

/** `rcluster start`: resolves once the clusters run; the process ends when they stop. */
async function start(command) {
  const apps = await appsToStart(command);
  if (command.pidFile !== null) checkPidFile(command.pidFile);
  runClusters(apps, { pidFile: command.pidFile });
}

module.exports = { start, appsToStart };
