'use strict';

// The one owner of a native primary (src/binding.rs): it forwards commands, drains the
// supervisor's events in batches, and matches send completions to their callbacks. Both public
// primaries (cluster.js and node-cluster.js, beside it) sit on top of this.

const { NativeCluster } = require('../addon');
const { fromNative, rclusterError } = require('../errors');

/**
 * Throws ERR_RCLUSTER_INVALID_OPTION, naming the option (`agent.env.PORT`, `args[1]`), for a
 * value that JSON cannot carry. Options reach Rust as JSON, and Node-API's conversion refuses
 * NaN, Infinity, functions, symbols and undefined array entries with a bare `InvalidArg` that
 * names nothing, before Rust could say which option was wrong.
 */
function checkJson(value, name, parents = []) {
  const invalid = (got) => rclusterError('ERR_RCLUSTER_INVALID_OPTION', `option \`${name}\` must be ${got}`);
  const type = typeof value;
  if (type === 'number' && !Number.isFinite(value)) throw invalid(`a finite number, got ${value}`);
  if (type === 'undefined') throw invalid('a value JSON can carry, got undefined');
  if (type === 'function' || type === 'symbol') throw invalid(`a value JSON can carry, got a ${type}`);
  if (type !== 'object' || value === null) return;
  if (parents.includes(value)) throw invalid('a value JSON can carry, got an object that contains itself');
  const inside = [...parents, value];
  if (!Array.isArray(value)) {
    checkFields(value, `${name}.`, inside);
    return;
  }
  // Indexed, not forEach: a hole in a sparse array is undefined to Node-API too.
  for (let i = 0; i < value.length; i++) checkJson(value[i], `${name}[${i}]`, inside);
}

/** checkJson for each field of an options object; undefined fields count as left out. */
function checkFields(options, prefix = '', parents = [options]) {
  for (const key of Object.keys(options)) {
    if (options[key] !== undefined) checkJson(options[key], `${prefix}${key}`, parents);
  }
}

class PrimaryCore {
  /**
   * @param {'supervised'|'manual'} plan
   * @param {object} options passed to Rust as JSON
   * @param {(event: import('./native').JsEvent) => void} onEvent
   */
  constructor(plan, options, onEvent) {
    this.onEvent = onEvent;
    this.pending = [];
    this.draining = false;
    this.sendCallbacks = new Map();
    this.nextTicket = 1;
    checkFields(options);
    try {
      this.native = new NativeCluster(plan, options, () => this.drain());
    } catch (error) {
      throw fromNative(error);
    }
  }

  drain() {
    if (this.draining) return;
    this.draining = true;
    try {
      for (const event of this.native.takeEvents()) this.pending.push(event);
      while (this.pending.length > 0) {
        const event = this.pending.shift();
        if (event.kind === 'sent') this.completeSend(event);
        else this.onEvent(event);
      }
    } finally {
      this.draining = false;
      // A listener threw: the rest of the batch is still delivered, after the throw surfaces.
      if (this.pending.length > 0) process.nextTick(() => this.drain());
    }
  }

  completeSend(event) {
    const callback = this.sendCallbacks.get(event.ticket);
    if (!callback) return;
    this.sendCallbacks.delete(event.ticket);
    callback(event.code || null);
  }

  /** Keeps Node's event loop alive while the primary has children to look after. */
  hold(yes) {
    this.native.setRef(yes);
  }

  call(method, ...args) {
    try {
      return this.native[method](...args);
    } catch (error) {
      throw fromNative(error);
    }
  }

  start() {
    this.call('start');
  }

  fork(spec) {
    checkFields(spec);
    return this.call('fork', spec);
  }

  /** `callback(code|null)` runs once the bytes are written (and a handle acknowledged). */
  send(id, payload, fd, callback) {
    const ticket = this.nextTicket++;
    this.sendCallbacks.set(ticket, callback);
    try {
      this.native.send(id, payload, ticket, fd === undefined ? null : fd);
    } catch (error) {
      this.sendCallbacks.delete(ticket);
      throw fromNative(error);
    }
  }

  disconnect(id) {
    this.call('disconnect', id);
  }

  closeChannel(id) {
    this.call('closeChannel', id);
  }

  kill(id, signal) {
    return this.call('kill', id, signal);
  }

  stop(timeoutMs) {
    this.call('stop', timeoutMs === undefined ? null : timeoutMs);
  }
}

module.exports = { PrimaryCore, checkJson, checkFields };
