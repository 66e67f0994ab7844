'use strict';

// The messenger of api.md section 3, the same in the primary, the agent and app workers. It
// sends frames on rcluster's own channel (docs/messenger-frames.md); the Rust primary routes
// them on their header. This module only shapes data into payloads and payloads into calls.

const { rclusterError } = require('./errors');

const KIND = { message: 1, request: 2, reply: 3, subscribe: 4, unsubscribe: 5, undeliverable: 6 };
const TARGET = { primary: 0, broadcast: 1, apps: 2, agent: 3, randomApp: 4, one: 5, anyApp: 6, pid: 7 };
const FLAG_BINARY = 1;
const FLAG_FROM_AGENT = 4;
const EMPTY = Buffer.alloc(0);

/** Data as a payload: bytes travel raw, anything else as JSON (a TypeError if JSON can't carry it). */
function encodePayload(data) {
  if (Buffer.isBuffer(data)) return { flags: FLAG_BINARY, payload: data };
  if (ArrayBuffer.isView(data)) return { flags: FLAG_BINARY, payload: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
  if (data === undefined) return { flags: 0, payload: EMPTY };
  return { flags: 0, payload: Buffer.from(JSON.stringify(data)) };
}

function decodePayload(flags, payload) {
  if (flags & FLAG_BINARY) return payload;
  if (payload.length === 0) return undefined;
  return JSON.parse(payload.toString('utf8'));
}

function checkAction(action) {
  if (typeof action !== 'string' || action.length === 0) {
    const error = new TypeError(`messenger: the action must be a non-empty string, got ${typeof action === 'string' ? "''" : typeof action}`);
    error.code = 'ERR_INVALID_ARG_TYPE';
    throw error;
  }
}

class Messenger {
  /**
   * @param transport {{ send(kind, target, targetId, correlation, action, flags, payload): void,
   *                     handler(action, on): void, hold(yes): void }}
   */
  constructor(transport) {
    this._transport = transport;
    this._handlers = new Map();
    this._errorListeners = new Set();
    this._nextCorrelation = 1;
  }

  /** `handler(data, meta)`; `meta.from = { id, pid, kind }`. `on('error', fn)` hears delivery failures. */
  on(action, handler) {
    if (action === 'error') {
      this._errorListeners.add(handler);
      return this;
    }
    checkAction(action);
    if (typeof handler !== 'function') throw new TypeError('messenger.on: the handler must be a function');
    let list = this._handlers.get(action);
    if (!list) {
      list = [];
      this._handlers.set(action, list);
      this._transport.handler(action, true);
      this._holdIfListening();
    }
    list.push({ handler, once: false });
    return this;
  }

  once(action, handler) {
    this.on(action, handler);
    const list = this._handlers.get(action);
    if (list) list[list.length - 1].once = true;
    return this;
  }

  off(action, handler) {
    if (action === 'error') {
      this._errorListeners.delete(handler);
      return this;
    }
    const list = this._handlers.get(action);
    if (!list) return this;
    const index = handler === undefined ? 0 : list.findIndex((entry) => entry.handler === handler);
    if (handler === undefined) list.length = 0;
    else if (index !== -1) list.splice(index, 1);
    if (list.length === 0) {
      this._handlers.delete(action);
      this._transport.handler(action, false);
      this._holdIfListening();
    }
    return this;
  }

  broadcast(action, data) {
    this._send(TARGET.broadcast, 0, action, data);
  }

  sendToApp(action, data) {
    this._send(TARGET.apps, 0, action, data);
  }

  sendToAgent(action, data) {
    this._send(TARGET.agent, 0, action, data);
  }

  sendRandom(action, data) {
    this._send(TARGET.randomApp, 0, action, data);
  }

  /** `target`: a worker id, a pid, or 'primary'. */
  sendTo(target, action, data) {
    if (target === 'primary') return this._send(TARGET.primary, 0, action, data);
    if (!Number.isInteger(target) || target <= 0 || target > 0xffffffff) {
      throw rclusterError('ERR_RCLUSTER_UNKNOWN_TARGET', `messenger.sendTo: target must be a worker id, a pid or 'primary', got ${String(target)}`);
    }
    return this._send(TARGET.one, target, action, data);
  }

  _send(target, targetId, action, data) {
    checkAction(action);
    const { flags, payload } = encodePayload(data);
    const correlation = this._nextCorrelation++;
    if (this._nextCorrelation > 0xffffffff) this._nextCorrelation = 1;
    this._transport.send(KIND.message, target, targetId, correlation, action, flags, payload);
  }

  _holdIfListening() {
    this._transport.hold(this._handlers.size > 0);
  }

  /** A frame that the channel delivered. */
  _receive(frame) {
    if (frame.kind === KIND.undeliverable) {
      const { code, message } = JSON.parse(frame.payload.toString('utf8'));
      this._fail(rclusterError(code, `messenger: '${frame.action}' was not delivered: ${message}`, { action: frame.action }));
      return;
    }
    if (frame.kind !== KIND.message) return;
    const list = this._handlers.get(frame.action);
    if (!list) return;
    const data = decodePayload(frame.flags, frame.payload);
    const meta = {
      from: {
        id: frame.sourceId,
        pid: frame.sourcePid,
        kind: frame.sourceId === 0 ? 'primary' : frame.flags & FLAG_FROM_AGENT ? 'agent' : 'app',
      },
    };
    for (const entry of [...list]) {
      if (entry.once) this.off(frame.action, entry.handler);
      entry.handler(data, meta);
    }
  }

  _fail(error) {
    if (this._errorListeners.size === 0) {
      process.emitWarning(error);
      return;
    }
    for (const listener of this._errorListeners) listener(error);
  }
}

module.exports = { Messenger, KIND, TARGET };
