'use strict';

// The one owner of a native primary (src/binding.rs): it forwards commands, drains the
// supervisor's events in batches, and matches send completions to their callbacks. Both public
// primaries (lib/cluster.js and lib/node-cluster.js) sit on top of this.

const { NativeCluster } = require('./native.js');
const { fromNative } = require('./errors');

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

module.exports = { PrimaryCore };
