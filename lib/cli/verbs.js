'use strict';

// The commands that operate a running cluster through its control socket: ls, status, reload,
// scale, restart, stop, logs. Each prints what it did and resolves with its exit code, or
// rejects with a CliError.

const fs = require('node:fs');
const path = require('node:path');
const { connect, ask } = require('./control-client');
const { CliError, describeError } = require('./failures');
const { controlHome, isClusterName } = require('./home');
const { humanDuration, humanMemory, humanPercent, humanMs, describeAddresses, formatTable } = require('./table');

/** info and status answer at once; anything slower means a stuck cluster. */
const QUICK = 10_000;
/** While waiting for a stop: a request now and then, so that the idle timeout never closes us. */
const KEEP_ALIVE = 20_000;

function print(line) {
  process.stdout.write(`${line}\n`);
}

/** The names of the sockets in the control folder. */
function socketNames(home) {
  let entries;
  try {
    entries = fs.readdirSync(home);
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw new CliError(`cannot read ${home}: ${error.message}`, 1, error.code);
  }
  return entries
    .filter((entry) => entry.endsWith('.sock') && isClusterName(entry.slice(0, -'.sock'.length)))
    .map((entry) => entry.slice(0, -'.sock'.length))
    .sort();
}

async function ls({ json }) {
  const home = controlHome();
  const names = socketNames(home);
  const answers = await Promise.all(
    names.map((name) =>
      ask(name, 'info', {}, { timeout: QUICK, file: path.join(home, `${name}.sock`) }).then(
        (info) => ({ name, info }),
        (error) => ({ name, error }),
      ),
    ),
  );
  let code = 0;
  const running = [];
  for (const { name, info, error } of answers) {
    if (!error) running.push(info);
    // A stale socket (its primary was killed) is no running cluster: skipped without a word.
    else if (error.exitCode !== 3) {
      process.stderr.write(`rcluster: ${name}: ${describeError(error)}\n`);
      code = 1;
    }
  }
  if (json) {
    print(JSON.stringify(running, null, 2));
    return code;
  }
  if (running.length === 0) {
    if (code === 0) process.stderr.write('no cluster is running\n');
    return code;
  }
  const rows = running.map((info) => [info.name, info.pid, info.state, info.workers, humanDuration(info.uptime), describeAddresses(info.addresses)]);
  print(formatTable(['NAME', 'PID', 'STATE', 'WORKERS', 'UPTIME', 'ADDRESSES'], rows));
  return code;
}

function statusText(status) {
  const addresses = describeAddresses(status.addresses);
  const listening = addresses === '-' ? 'not listening' : `on ${addresses}`;
  const header = `${status.name} (pid ${status.pid}) ${status.state} ${listening}, up ${humanDuration(status.uptime)}`;
  const workers = Array.isArray(status.workers) ? status.workers : [];
  const rows = workers.map((w) => [
    w.id,
    w.pid,
    w.kind,
    w.state,
    w.restarts,
    humanDuration(w.uptime),
    humanMemory(w.memory),
    humanPercent(w.cpu),
    humanMs(w.loopDelay),
  ]);
  const table = formatTable(['ID', 'PID', 'KIND', 'STATE', 'RESTARTS', 'UPTIME', 'MEMORY', 'CPU', 'LOOP DELAY'], rows);
  return `${header}\n${table}${hostsText(status.hosts)}`;
}

/** With option `redis`: this host and the others of its namespace. */
function hostsText(hosts) {
  if (!hosts) return '';
  const others = hosts.others.map((h) => h.host).sort();
  const lost = hosts.lost > 0 ? `; ${hosts.lost} messages of other hosts lost here` : '';
  return `\nhost ${hosts.me}; other hosts: ${others.length > 0 ? others.join(', ') : 'none'}${lost}`;
}

async function status({ name, json }) {
  const result = await ask(name, 'status', {}, { timeout: QUICK });
  print(json ? JSON.stringify(result, null, 2) : statusText(result));
  return 0;
}

/** Puts what was asked in front of a failure the cluster reported. */
async function failing(what, promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof CliError && error.exitCode === 1 && error.code && error.code.startsWith('ERR_RCLUSTER_') && !error.code.startsWith('ERR_RCLUSTER_CONTROL')) {
      throw new CliError(`${what} failed: ${error.message}`, 1, error.code);
    }
    throw error;
  }
}

async function reload({ name }) {
  const { replaced, duration } = await failing(`reload of ${name}`, ask(name, 'reload'));
  print(`reloaded ${name}: ${replaced} workers replaced in ${duration} ms`);
  return 0;
}

async function scale({ name, workers }) {
  const result = await failing(`scaling ${name}`, ask(name, 'scale', { workers }));
  print(`scaled ${name} to ${result.workers} workers`);
  return 0;
}

async function restart({ name, id }) {
  const { id: replacement, duration } = await failing(`restart of worker ${id} of ${name}`, ask(name, 'restart', { worker: id }));
  print(`restarted worker ${id} of ${name}: worker ${replacement} took its place in ${duration} ms`);
  return 0;
}

async function stop({ name }) {
  const connection = await connect(name);
  try {
    const [info] = await Promise.all([connection.request('info', {}, { timeout: QUICK }), connection.request('stop')]);
    print(`stopping ${name} (pid ${info.pid})`);
    // The connection closes once the primary has stopped, however long its workers take.
    const keepAlive = setInterval(() => connection.request('info').catch(() => {}), KEEP_ALIVE);
    await connection.closed;
    clearInterval(keepAlive);
    print('stopped');
    return 0;
  } finally {
    connection.destroy();
  }
}

/**
 * A worker's text, made safe for a terminal: its control characters (escape sequences could
 * retitle the window or write the clipboard) shown as \xNN, as journalctl does. Piped output
 * is left as the worker wrote it.
 */
function forTerminal(text, out) {
  return out.isTTY ? text.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`) : text;
}

function printLog({ id, kind, stream, text }) {
  const out = stream === 'stderr' ? process.stderr : process.stdout;
  out.write(`${id}|${kind}| ${forTerminal(String(text).replace(/\n$/, ''), out)}\n`);
}

async function logs({ name, lines, follow }) {
  const connection = await connect(name);
  const onEvent = (event) => {
    if ('log' in event) printLog(event.log);
    else print(`... ${event.skipped} lines skipped ...`);
  };
  try {
    await connection.request('logs', follow ? { lines, follow: true } : { lines }, { timeout: follow ? null : QUICK, onEvent });
  } catch (error) {
    // Following ends when the primary stops: its connection closes.
    if (follow && error.code === 'ERR_RCLUSTER_CONTROL_CLOSED') {
      process.stderr.write(`rcluster: cluster ${name} stopped\n`);
      return 0;
    }
    throw error;
  } finally {
    connection.destroy();
  }
  return 0;
}

module.exports = { ls, status, reload, scale, restart, stop, logs, statusText };
