'use strict';

// The messenger (README, The messenger), the same in the primary, the agent and app workers. It
// sends frames on rcluster's own channel (docs/messenger-frames.md); the Rust primary routes
// them on their header. This module only shapes data into payloads and payloads into calls.

const { rclusterError } = require('../errors');
const { MapAnswers, workerList } = require('./map-answers');

const KIND = { message: 1, request: 2, reply: 3, subscribe: 4, unsubscribe: 5, undeliverable: 6, received: 7, expect: 8 };
const TARGET = { primary: 0, broadcast: 1, apps: 2, agent: 3, randomApp: 4, one: 5, anyApp: 6, pid: 7 };
const FLAG_ERROR = 2;
const FLAG_FROM_AGENT = 4;
const FLAG_STRING = 8;
const { ReceivedFrame, FLAG_BINARY, FLAG_ASCII, FLAG_HOST, FLAG_ANSWER_HERE } = require('./frames');
/** ms a consume or map waits for its answers unless told otherwise. */
const DEFAULT_TIMEOUT = 30_000;
const EMPTY = Buffer.alloc(0);

/** Data as a payload: bytes travel raw, anything else as JSON (a TypeError if JSON can't carry it). */
function encodePayload(data) {
  if (Buffer.isBuffer(data)) return { flags: FLAG_BINARY, payload: data };
  if (ArrayBuffer.isView(data)) return { flags: FLAG_BINARY, payload: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
  if (data === undefined) return { flags: 0, payload: EMPTY };
  // A string travels as its UTF-8 bytes: no JSON quoting on the way out, no parsing on the way
  // in. It stays a string here; the transport writes it into the frame (or into a Buffer).
  // (UTF-8 cannot carry a lone surrogate; such a string goes as JSON, whose escapes can.)
  if (typeof data === 'string' && data.isWellFormed()) return { flags: FLAG_STRING, payload: data };
  // JSON text, written straight into the frame like a string. (What JSON leaves out, a
  // function or a symbol, arrives as undefined.)
  const json = JSON.stringify(data);
  return { flags: 0, payload: json === undefined ? EMPTY : json };
}

/** The data a ReceivedFrame (lib/messenger/frames.js) carries. */
function decodePayload(frame) {
  const { flags } = frame;
  if (flags & FLAG_BINARY) return frame.payload;
  if (flags & FLAG_STRING) return frame.text(flags & FLAG_ASCII ? 'latin1' : 'utf8');
  const text = frame.text('utf8');
  return text.length === 0 ? undefined : JSON.parse(text);
}

function checkAction(action) {
  if (typeof action !== 'string' || action.length === 0) {
    const error = new TypeError(`messenger: the action must be a non-empty string, got ${typeof action === 'string' ? "''" : typeof action}`);
    error.code = 'ERR_INVALID_ARG_TYPE';
    throw error;
  }
}

function requestTimeout(options) {
  const timeout = options && options.timeout !== undefined ? options.timeout : DEFAULT_TIMEOUT;
  if (!Number.isInteger(timeout) || timeout <= 0 || timeout > 2_147_483_647) {
    throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `messenger: timeout must be a positive integer of ms, got ${timeout}`);
  }
  return timeout;
}

/** An error that crossed the channel as `{ message, code, name }`. */
function errorFrom(frame, props) {
  let carried;
  try {
    carried = JSON.parse(frame.text('utf8'));
  } catch {
    carried = { message: 'an error that could not be read' };
  }
  const error = rclusterError(carried.code, carried.message, props);
  if (carried.code === undefined) delete error.code;
  // ERR_RCLUSTER_HOST_DIED: whether the call may have run (false or 'unknown'), and where.
  if (carried.ran !== undefined) error.ran = carried.ran;
  if (typeof carried.host === 'string') error.host = carried.host;
  if (carried.name && carried.name !== 'Error') error.name = carried.name;
  return error;
}

/** What crosses the channel of an error a handler threw or rejected with; whatever it is, this never throws. */
function errorPayload(error) {
  let carried;
  try {
    const plain = error instanceof Error ? error : new Error(String(error));
    const code = typeof plain.code === 'string' || typeof plain.code === 'number' ? plain.code : undefined;
    carried = { message: String(plain.message), code, name: String(plain.name) };
  } catch {
    carried = { message: 'a handler failed with something that is not an Error and cannot be told' };
  }
  return Buffer.from(JSON.stringify(carried));
}

/** `meta.from` of a frame; with `redis`, its `host` (this one's, `host`, unless it came from another). */
function fromOf(frame, host) {
  const from = {
    id: frame.sourceId,
    pid: frame.sourcePid,
    kind: frame.sourceId === 0 ? 'primary' : frame.flags & FLAG_FROM_AGENT ? 'agent' : 'app',
  };
  const fromHost = frame.host ?? host;
  if (fromHost !== undefined) from.host = fromHost;
  return from;
}

/** A payload with the host id it is for in front (FLAG_HOST), as bytes: it never goes in a memory file. */
function forHost(host, payload) {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const prefix = Buffer.allocUnsafe(1 + host.length);
  prefix[0] = host.length;
  prefix.write(host, 1, 'latin1');
  return Buffer.concat([prefix, bytes]);
}

const HOST_ID = /^[A-Za-z0-9._-]{1,128}$/;

class Messenger {
  /**
   * @param transport {{ send(kind, target, targetId, correlation, action, flags, payload, bounded): void,
   *                     handler(action, on): void, hold(yes): void, drained?(): Promise<void>,
   *                     checkSize?(action, payload): void }}
   *   `bounded` false: a frame the messenger itself must send (a receipt, an error answer),
   *   never refused for a full queue. `checkSize` throws what `send` would for a payload too
   *   large (a child's, for the answers it keeps, FLAG_ANSWER_HERE).
   * @param self {{ workerId?: number | null, host?: string }} this process's worker id, named in
   *   the errors it answers with (none in the primary), and with `redis`, its host's id.
   */
  constructor(transport, { workerId = null, host } = {}) {
    this._transport = transport;
    this._workerId = workerId;
    this._host = host;
    this._handlers = new Map();
    this._errorListeners = new Set();
    this._nextCorrelation = 1;
    /** consume/map calls waiting for answers, by correlation id. */
    this._requests = new Map();
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

  /** `target`: a worker id, a pid, 'primary', or with `redis`, `{ host, id }` (a worker of any host). */
  sendTo(target, action, data) {
    if (target === 'primary') return this._send(TARGET.primary, 0, action, data);
    if (target !== null && typeof target === 'object') return this._sendToHost(target, action, data);
    if (!Number.isInteger(target) || target <= 0 || target > 0xffffffff) {
      throw rclusterError('ERR_RCLUSTER_UNKNOWN_TARGET', `messenger.sendTo: target must be a worker id, a pid, 'primary' or { host, id }, got ${String(target)}`);
    }
    return this._send(TARGET.one, target, action, data);
  }

  _sendToHost({ host, id }, action, data) {
    if (typeof host !== 'string' || !HOST_ID.test(host) || !Number.isInteger(id) || id <= 0 || id > 0xffffffff) {
      throw rclusterError('ERR_RCLUSTER_UNKNOWN_TARGET', `messenger.sendTo: { host, id } takes a host id (A-Z a-z 0-9 . _ -) and a worker id, got ${JSON.stringify({ host, id })}`);
    }
    if (this._host === undefined) {
      throw rclusterError('ERR_RCLUSTER_UNKNOWN_TARGET', `messenger.sendTo: no host '${host}': this cluster spans one host (no redis option)`);
    }
    return this._send(TARGET.one, id, action, data, KIND.message, host === this._host ? undefined : host);
  }

  /**
   * Resolves once what this process sent has left its write queue: after a send threw
   * ERR_RCLUSTER_QUEUE_FULL, send again then. (The primary's own sends are never queued.)
   */
  drained() {
    return this._transport.drained ? this._transport.drained() : Promise.resolve();
  }

  /** Exactly one app worker with a handler runs it; resolves to what its handler returns. */
  consume(action, data, options) {
    // Out of time, the call may still be running where it went.
    const onTimeout = (settle, error) => settle(Object.assign(error, { ran: 'unknown' }));
    return this._request(
      TARGET.anyApp,
      action,
      data,
      options,
      (frame, settle) => {
        if (frame.flags & FLAG_ERROR) settle(errorFrom(frame, { workerId: frame.sourceId }));
        else settle(null, decodePayload(frame));
      },
      onTimeout,
    );
  }

  /** Every app worker runs its first handler; resolves to the results ordered by worker id. */
  map(action, data, options) {
    return this._mapRequest(action, data, options, false);
  }

  /** Like map, but one worker's failure is an entry `{ id, pid, status: 'rejected', reason }`. */
  mapSettled(action, data, options) {
    return this._mapRequest(action, data, options, true);
  }

  /** map and mapSettled: the answers are gathered by a MapAnswers (lib/messenger/map-answers.js). */
  _mapRequest(action, data, options, settled) {
    const answers = new MapAnswers(action);
    const finish = (settle) => {
      const entries = answers.entries();
      if (settled) return settle(null, entries);
      const failed = entries.find((e) => e.status === 'rejected');
      if (failed) return settle(failed.reason);
      const values = new Array(entries.length);
      for (let i = 0; i < entries.length; i++) values[i] = entries[i].value;
      return settle(null, values);
    };
    const onTimeout = settled ? (settle) => (answers.expected ? finish(settle) : settle(null, [])) : null;
    return this._request(
      TARGET.apps,
      action,
      data,
      options,
      (frame, settle) => {
        if (frame.kind === KIND.expect) {
          const list = frame.flags & FLAG_ERROR ? null : workerList(frame.text('utf8'));
          answers.onList(frame.host, list, () => errorFrom(frame, { host: frame.host }));
        } else if (frame.flags & FLAG_ERROR) {
          const host = frame.host ?? answers.me;
          const props = host === undefined ? { workerId: frame.sourceId } : { workerId: frame.sourceId, host };
          answers.onAnswer(frame.host, frame.sourceId, { status: 'rejected', reason: errorFrom(frame, props) });
        } else {
          answers.onAnswer(frame.host, frame.sourceId, { status: 'fulfilled', value: decodePayload(frame) });
        }
        // A host that failed fails a map at once: waiting for the others changes nothing.
        const failure = settled ? undefined : answers.failure();
        if (failure !== undefined) settle(failure);
        else if (answers.done()) finish(settle);
      },
      onTimeout,
    );
  }

  /** Sends a request and waits; `onFrame(frame, settle)` sees each answer, `settle(error, value)` ends it. */
  _request(target, action, data, options, onFrame, onTimeout) {
    const timeout = requestTimeout(options);
    const correlation = this._send(target, 0, action, data, KIND.request);
    return new Promise((resolve, reject) => {
      const settle = (error, value) => {
        if (!this._requests.has(correlation)) return;
        clearTimeout(timer);
        this._requests.delete(correlation);
        this._holdIfListening();
        if (error) reject(error);
        else resolve(value);
      };
      const timer = setTimeout(() => {
        const error = rclusterError('ERR_RCLUSTER_TIMEOUT', `messenger: no answer to '${action}' within ${timeout} ms`);
        if (onTimeout) return onTimeout(settle, error);
        settle(error);
      }, timeout);
      this._requests.set(correlation, {
        onFrame: (frame) => onFrame(frame, settle),
        fail: (error) => settle(error),
        /** A map this process is one of the targets of answers its own copy here (FLAG_ANSWER_HERE). */
        answerHere: false,
      });
      this._holdIfListening();
    });
  }

  /** `host`: another host the frame is for (`sendTo({ host, id })`). */
  _send(target, targetId, action, data, kind = KIND.message, host = undefined) {
    checkAction(action);
    const { flags, payload } = encodePayload(data);
    const correlation = this._nextCorrelation++;
    if (this._nextCorrelation > 0xffffffff) this._nextCorrelation = 1;
    if (host === undefined) this._transport.send(kind, target, targetId, correlation, action, flags, payload);
    else this._transport.send(kind, target, targetId, correlation, action, flags | FLAG_HOST, forHost(host, payload));
    return correlation;
  }

  /** rcluster.ready() on this channel: a message with no action, to the primary. */
  _signalReady() {
    this._transport.send(KIND.message, TARGET.primary, 0, 0, '', 0, EMPTY, false);
  }

  _holdIfListening() {
    this._transport.hold(this._handlers.size > 0 || this._requests.size > 0);
  }

  /** Runs the first handler for a request and sends its outcome back to the requester. */
  _answer(frame) {
    const toPrimary = frame.sourceId === 0;
    const target = toPrimary ? TARGET.primary : TARGET.one;
    // Only an answer's value can be refused for a full queue; the error that then replaces it,
    // like a receipt, is always sent: the requester must not wait in vain.
    // A call from another host (option `redis`) is answered there: the answer names that host.
    const host = frame.host !== undefined && frame.host !== this._host ? frame.host : undefined;
    const send = this._isAnsweredHere(frame)
      ? (kind, flags, payload) => this._answerHere(frame, flags, payload)
      : (kind, flags, payload, bounded = false) =>
          host === undefined
            ? this._transport.send(kind, target, frame.sourceId, frame.correlation, frame.action, flags, payload, bounded)
            : this._transport.send(kind, target, frame.sourceId, frame.correlation, frame.action, flags | FLAG_HOST, forHost(host, payload), bounded);
    // consume: tell the primary it arrived; from now on, if this process dies, the call failed
    // here and must not run elsewhere. (A map goes to every worker: there is no elsewhere.)
    if (frame.target === TARGET.anyApp) {
      send(KIND.received, 0, EMPTY);
      // It must be on its way before the handler can have any effect.
      this._transport.flush();
    }
    const list = this._handlers.get(frame.action);
    const reply = (error, value) => {
      if (error) return send(KIND.reply, FLAG_ERROR, errorPayload(error));
      let encoded;
      try {
        encoded = encodePayload(value);
      } catch (encodeError) {
        return send(KIND.reply, FLAG_ERROR, errorPayload(encodeError));
      }
      try {
        send(KIND.reply, encoded.flags, encoded.payload, true);
      } catch (sendError) {
        send(KIND.reply, FLAG_ERROR, errorPayload(sendError));
      }
    };
    if (!list || list.length === 0) {
      const me = this._workerId === null ? '?' : this._workerId;
      reply(rclusterError('ERR_RCLUSTER_NO_HANDLER', `no handler for '${frame.action}' in worker ${me} (pid ${process.pid})`));
      return;
    }
    const [entry] = list;
    if (entry.once) this.off(frame.action, entry.handler);
    let data;
    try {
      data = decodePayload(frame);
    } catch (error) {
      reply(error);
      return;
    }
    // A handler that returns a value is answered at once; a promise (any thenable), once it
    // settles. A throw, from the handler or from reading its value's `then`, is the answer.
    let value;
    let thenable;
    try {
      value = entry.handler(data, { from: fromOf(frame, this._host) });
      thenable = value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
    } catch (error) {
      reply(error);
      return;
    }
    if (!thenable) {
      reply(null, value);
      return;
    }
    Promise.resolve(value).then(
      (settledValue) => reply(null, settledValue),
      (error) => reply(error),
    );
  }

  /** Whether `request` is this process's own map, whose answer the primary said to keep here. */
  _isAnsweredHere(request) {
    if (request.target !== TARGET.apps || request.sourceId !== this._workerId || request.host !== undefined) return false;
    const pending = this._requests.get(request.correlation);
    return pending !== undefined && pending.answerHere;
  }

  /**
   * This process's answer to its own map, handed to the map as if it had travelled: a copy of its
   * bytes, and the same bound on its size as an answer sent.
   */
  _answerHere(request, flags, payload) {
    this._transport.checkSize?.(request.action, payload);
    const pending = this._requests.get(request.correlation);
    // Over (out of time): like an answer that arrives after the end of its map.
    if (pending === undefined) return;
    const bytes = typeof payload === 'string' ? payload : Buffer.from(payload);
    const { sourceId, sourcePid, correlation, action } = request;
    pending.onFrame(new ReceivedFrame(KIND.reply, TARGET.one, flags, sourceId, sourcePid, correlation, action, bytes, 0, bytes.length));
  }

  /** A frame that the channel delivered. */
  _receive(frame) {
    const pending = this._requests.get(frame.correlation);
    if (frame.kind === KIND.undeliverable) {
      // A full receiver's queue is reported with `count` messages, and the receiver (id 0: the
      // primary) as `workerId` and `pid`.
      const { code, message, count = 1, workerId, pid, host } = JSON.parse(frame.text('utf8'));
      const props = { action: frame.action, count };
      if (workerId !== undefined) Object.assign(props, { workerId, pid });
      if (host !== undefined) props.host = host;
      const what = count === 1 ? `'${frame.action}' was` : `${count} messages '${frame.action}' were`;
      const error = rclusterError(code, `messenger: ${what} not delivered: ${message}`, props);
      if (pending) pending.fail(error);
      else this._fail(error);
      return;
    }
    if (frame.kind === KIND.reply || frame.kind === KIND.expect) {
      if (!pending) return;
      // Only this host's primary can list this process (another host's list names that host).
      if (frame.kind === KIND.expect && frame.flags & FLAG_ANSWER_HERE && frame.host === undefined) pending.answerHere = true;
      pending.onFrame(frame);
      return;
    }
    if (frame.kind === KIND.request) {
      this._answer(frame);
      return;
    }
    if (frame.kind !== KIND.message) return;
    const list = this._handlers.get(frame.action);
    if (!list) return;
    const data = decodePayload(frame);
    const meta = { from: fromOf(frame, this._host) };
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
