'use strict';

// The primary's view of one child: `Worker` (as Node's cluster.Worker) and its `process` (a
// `WorkerProcess`, shaped like the ChildProcess that Node's cluster.fork() returns). The primary
// that owns them feeds them what the Rust side reports, through the `_on...` methods.

const EventEmitter = require('node:events');
const { serializationFor } = require('./serialization');
const { describeHandle, adoptHandle } = require('./handles');
const { rclusterError, typeError } = require('../errors');

/** Node's `cluster.Worker`, callable with or without `new`, as Node's own is. */
function Worker(options) {
  if (!(this instanceof Worker)) return new Worker(options);
  EventEmitter.call(this);
  if (options === null || typeof options !== 'object') options = {};
  this.exitedAfterDisconnect = undefined;
  this.state = options.state || 'none';
  this.id = options.id | 0;
  if (options.process) {
    this.process = options.process;
    this.process.on('error', (code, signal) => this.emit('error', code, signal));
    this.process.on('message', (message, handle) => this.emit('message', message, handle));
  }
}
Object.setPrototypeOf(Worker.prototype, EventEmitter.prototype);
Object.setPrototypeOf(Worker, EventEmitter);

Worker.prototype.kill = function kill(...args) {
  return this.destroy(...args);
};
Worker.prototype.destroy = function destroy(signal) {
  this.process.kill(signal || 'SIGTERM');
};
Worker.prototype.send = function send(...args) {
  return this.process.send(...args);
};
Worker.prototype.isDead = function isDead() {
  return this.process.exitCode != null || this.process.signalCode != null;
};
Worker.prototype.isConnected = function isConnected() {
  return this.process.connected;
};

function channelClosedError() {
  return rclusterError('ERR_IPC_CHANNEL_CLOSED', 'Channel closed');
}

/** What a failed write looks like in Node: the peer closed its end of the channel. */
function writeError(code) {
  if (code === 'ERR_IPC_CHANNEL_CLOSED') {
    return rclusterError('EPIPE', 'write EPIPE', { errno: -32, syscall: 'write' });
  }
  return rclusterError(code, `write ${code}`, { syscall: 'write' });
}

class WorkerProcess extends EventEmitter {
  constructor(core, id, pid, serialization) {
    super();
    this._core = core;
    this._id = id;
    this._serialization = serializationFor(serialization);
    this.pid = pid;
    this.connected = true;
    this.exitCode = null;
    this.signalCode = null;
    this.killed = false;
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [null, null, null];
    /** Sockets received from the child, by the key of the server they came from. */
    this._socketLists = new Map();
  }

  send(message, handle, options, callback) {
    if (typeof handle === 'function') {
      callback = handle;
      handle = undefined;
      options = undefined;
    } else if (typeof options === 'function') {
      callback = options;
      options = undefined;
    } else if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw typeError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be of type object.');
    }
    options = { swallowErrors: false, ...options };
    if (!this.connected) {
      const error = channelClosedError();
      if (typeof callback === 'function') process.nextTick(callback, error);
      else process.nextTick(() => this.emit('error', error));
      return false;
    }
    if (message === undefined) {
      throw typeError('ERR_MISSING_ARGS', 'The "message" argument must be specified');
    }
    if (!['string', 'object', 'number', 'boolean'].includes(typeof message)) {
      throw typeError(
        'ERR_INVALID_ARG_TYPE',
        `The "message" argument must be one of type string, object, number, or boolean. Received type ${typeof message}`,
      );
    }
    let wire = message;
    let fd;
    let handleType;
    if (handle) {
      const described = describeHandle(handle);
      handleType = described.type;
      fd = described.fd;
      wire = { cmd: 'NODE_HANDLE', type: described.type, msg: message };
      if (described.dgramType) wire.dgramType = described.dgramType;
    }
    this._core.send(this._id, this._serialization.encode(wire), fd, (code) => {
      // Node hands a sent socket over to the receiver: the sender's copy is closed.
      if (handleType === 'net.Socket' && !options.keepOpen) handle.destroy();
      const error = code ? writeError(code) : null;
      if (typeof callback === 'function') callback(error);
      else if (error && !options.swallowErrors) this.emit('error', error);
    });
    return true;
  }

  disconnect() {
    if (!this.connected) {
      this.emit('error', rclusterError('ERR_IPC_DISCONNECTED', 'IPC channel is already disconnected'));
      return;
    }
    this.connected = false;
    this._core.closeChannel(this._id);
  }

  kill(signal) {
    const sent = this._core.kill(this._id, signal === undefined ? 'SIGTERM' : signal);
    if (sent) this.killed = true;
    return sent;
  }

  ref() {}

  unref() {}

  /** A user message from the child, with the handle it carried if any. */
  _deliver(event) {
    const message = this._serialization.decode(event);
    if (event.fd === undefined || event.fd === null) {
      this.emit('message', message);
      return;
    }
    adoptHandle(event.handleType, event.fd, (handle) => {
      if (handle && event.handleType === 'net.Socket' && event.handleKey) this._trackSocket(event.handleKey, handle);
      this.emit('message', message, handle);
    });
  }

  // A child that sent us sockets of its server asks, before closing that server, whether we
  // still hold any (NODE_SOCKET_NOTIFY_CLOSE / NODE_SOCKET_GET_COUNT); Node's child_process
  // answers, and so do we, or the child's server.close() never completes.
  _trackSocket(key, socket) {
    let list = this._socketLists.get(key);
    if (!list) {
      list = { connections: 0, notifyWhenEmpty: false };
      this._socketLists.set(key, list);
    }
    list.connections += 1;
    socket.once('close', () => {
      list.connections -= 1;
      if (list.connections === 0 && list.notifyWhenEmpty) {
        list.notifyWhenEmpty = false;
        this._sendInternal({ cmd: 'NODE_SOCKET_ALL_CLOSED', key });
      }
    });
  }

  /** A `NODE_*` message outside the cluster protocol. */
  _onInternal(message) {
    const list = this._socketLists.get(message.key);
    if (!list) return;
    if (message.cmd === 'NODE_SOCKET_NOTIFY_CLOSE') {
      if (list.connections === 0) this._sendInternal({ cmd: 'NODE_SOCKET_ALL_CLOSED', key: message.key });
      else list.notifyWhenEmpty = true;
    } else if (message.cmd === 'NODE_SOCKET_GET_COUNT') {
      this._sendInternal({ cmd: 'NODE_SOCKET_COUNT', key: message.key, count: list.connections });
    }
  }

  _sendInternal(message) {
    if (!this.connected) return;
    this._core.send(this._id, this._serialization.encode(message), undefined, () => {});
  }

  _onDisconnect() {
    this.connected = false;
    this.emit('disconnect');
  }

  /** The native `exit` event: `exitCode` or `signal` (the other one absent). */
  _onExit(event) {
    this.connected = false;
    this.exitCode = event.exitCode === undefined ? null : event.exitCode;
    this.signalCode = event.signal === undefined ? null : event.signal;
    this.emit('exit', this.exitCode, this.signalCode);
    const streams = this.stdio.filter(Boolean);
    let open = streams.filter((s) => !s.destroyed).length;
    const close = () => this.emit('close', this.exitCode, this.signalCode);
    if (open === 0) process.nextTick(close);
    for (const stream of streams) {
      if (stream.destroyed) continue;
      stream.once('close', () => {
        open -= 1;
        if (open === 0) close();
      });
    }
  }
}

module.exports = { Worker, WorkerProcess };
