'use strict';

// A client of a cluster's control socket (docs/control-protocol.md): connects to `<home>/<name>.sock`,
// sends requests as JSON lines and matches the answers to them by id. Failures become CliErrors
// with the CLI's exit codes: 3 when no cluster of that name runs, 1 for anything else.

const net = require('node:net');
const { CliError } = require('./failures');
const { socketPath } = require('./home');

function notRunning(name) {
  return new CliError(`no cluster named ${name} is running (rcluster ls lists them)`, 3, 'ERR_RCLUSTER_NO_SUCH_CLUSTER');
}

/** What a failed connect means for the CLI. */
function connectError(name, file, error) {
  // No socket, or one left by a primary that was killed: nobody listens on it.
  if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') return notRunning(name);
  if (error.code === 'EACCES' || error.code === 'EPERM') {
    return new CliError(`cannot connect to cluster ${name}: permission denied on ${file} (a cluster can be reached only by the user who runs it)`, 1, error.code);
  }
  return new CliError(`cannot connect to cluster ${name} at ${file}: ${error.message}`, 1, error.code);
}

/** An answer's error as a CliError (exit 1) with the server's code. */
function answerError(error) {
  const message = error && typeof error.message === 'string' ? error.message : 'the cluster refused the request';
  return new CliError(message, 1, error && error.code);
}

class ControlConnection {
  constructor(name, socket) {
    this.name = name;
    this.socket = socket;
    this.nextId = 1;
    /** id -> { resolve, reject, onEvent, timer } */
    this.pending = new Map();
    this.buffer = '';
    this.closed = new Promise((resolve) => socket.once('close', resolve));
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', () => {});
    socket.once('close', () => this.failAll(new CliError(`cluster ${name} closed the connection before answering`, 1, 'ERR_RCLUSTER_CONTROL_CLOSED')));
  }

  onData(chunk) {
    this.buffer += chunk;
    let end;
    while ((end = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      if (line.trim() !== '') this.onLine(line);
    }
  }

  onLine(line) {
    let answer;
    try {
      answer = JSON.parse(line);
    } catch {
      this.failAll(new CliError(`cluster ${this.name} answered something that is not JSON: ${line.slice(0, 200)}`, 1, 'ERR_RCLUSTER_CONTROL_PROTOCOL'));
      this.socket.destroy();
      return;
    }
    const waiter = answer && this.pending.get(answer.id);
    if (!waiter) {
      // An error for no request of ours (a refused peer, a busy server): it is for all of them.
      if (answer && answer.ok === false) this.failAll(answerError(answer.error));
      return;
    }
    if ('log' in answer || 'skipped' in answer) {
      if (waiter.onEvent) waiter.onEvent(answer);
      return;
    }
    this.pending.delete(answer.id);
    clearTimeout(waiter.timer);
    if (answer.ok === true) waiter.resolve(answer.result);
    else waiter.reject(answerError(answer.error));
  }

  failAll(error) {
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.pending.clear();
  }

  /**
   * Sends `{ id, command, ...args }`; resolves with the result, rejects with a CliError. `timeout`
   * (ms) gives up and closes the connection; `onEvent` receives the lines before the answer
   * (`logs`' lines and `skipped` notices).
   */
  request(command, args = {}, { timeout = null, onEvent = null } = {}) {
    const id = this.nextId++;
    if (this.pending.has(id)) return Promise.reject(new CliError(`request ${id} is already waiting for its answer`, 1, 'ERR_RCLUSTER_CONTROL_PROTOCOL'));
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed) {
        reject(new CliError(`the connection to cluster ${this.name} is closed`, 1, 'ERR_RCLUSTER_CONTROL_CLOSED'));
        return;
      }
      const waiter = { resolve, reject, onEvent, timer: null };
      if (timeout !== null) {
        waiter.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new CliError(`cluster ${this.name} did not answer '${command}' within ${timeout / 1000} s`, 1, 'ERR_RCLUSTER_TIMEOUT'));
          this.socket.destroy();
        }, timeout);
      }
      this.pending.set(id, waiter);
      this.socket.write(`${JSON.stringify({ id, command, ...args })}\n`);
    });
  }

  close() {
    this.socket.end();
  }

  destroy() {
    this.socket.destroy();
  }
}

/** Connects to the control socket of cluster `name`; rejects with a CliError. */
function connect(name, { env = process.env, file = socketPath(name, env) } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(file);
    const onError = (error) => reject(connectError(name, file, error));
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.removeListener('error', onError);
      resolve(new ControlConnection(name, socket));
    });
  });
}

/** One request on its own connection. */
async function ask(name, command, args = {}, options = {}) {
  const connection = await connect(name, options);
  try {
    return await connection.request(command, args, options);
  } finally {
    connection.destroy();
  }
}

module.exports = { connect, ask, ControlConnection, notRunning };
