'use strict';

// `think.messenger` on rcluster's messenger. think-cluster's own messenger is JSON relayed over
// `process.send` by think-cluster's master, which an rcluster cluster does not run; this one keeps
// its API and semantics (lib/messenger.js of think-cluster 1.x) on rcluster's native channel:
// - broadcast(action, data): every app worker, the sender included, emits `action`;
// - consume(action, data) / consume(fn) / runInOne(fn): runs only in the first worker (the one
//   with the lowest id that is not leaving), asked at each call, so that a call every worker
//   makes (a crontab of type 'one', a bootstrap job) runs once in the cluster, and still runs
//   after that worker died;
// - map(action, data[, { timeout }]): every app worker's first listener, the results in worker
//   order; rejects on a timeout or a worker that dies, instead of waiting for ever.

const EventEmitter = require('node:events');
const assert = require('node:assert');

const RELAY = 'think-messenger';
const MAP = 'think-messenger:map';
const ALIVE = 'think-messenger:alive';
const DEFAULT_TIMEOUT = 30_000;
const ALIVE_TIMEOUT = 5_000;

class ThinkMessenger extends EventEmitter {
  /**
   * @param {() => object} transport rcluster's messenger (a child's, or a started cluster's)
   * @param {{ workerId?: number, leaving?: () => boolean }} self who this process is (a worker)
   */
  constructor(transport, self = {}) {
    super();
    this._transport = transport;
    this._self = self;
  }

  /** Registers the handlers rcluster's messenger delivers think's messages to (in a worker). */
  attach() {
    const messenger = this._transport();
    messenger.on(RELAY, (message) => {
      if (message && typeof message.action === 'string') this.emit(message.action, message.data);
    });
    messenger.on(MAP, (message) => {
      const listener = this.listeners(message.action)[0];
      assert(typeof listener === 'function', `${message.action} listener must be a function`);
      return listener(message.data);
    });
    messenger.on(ALIVE, () => ({ leaving: Boolean(this._self.leaving && this._self.leaving()) }));
    return this;
  }

  broadcast(action, data) {
    assert(this.listenerCount(action) > 0, `can not find \`${action}\` listeners`);
    this._transport().sendToApp(RELAY, { action, data });
  }

  map(action, mapData, { timeout = DEFAULT_TIMEOUT } = {}) {
    return this._transport().map(MAP, { action, data: mapData }, { timeout });
  }

  /** Deprecated in think-cluster, kept: consume(callback). */
  runInOne(callback) {
    return this.consume(callback);
  }

  /**
   * Runs `action`'s listeners with `data` (or the callback) here if this worker is the first one.
   * Resolves to whether it ran here; never rejects (think-cluster's consume returns nothing).
   */
  consume(action, data) {
    let run;
    if (typeof action === 'function') {
      const callback = action;
      run = () => callback(data);
    } else {
      assert(this.listenerCount(action) > 0, `can not find \`${action}\` listeners`);
      run = () => this.emit(action, data);
    }
    return this.isFirstWorker().then(
      (first) => {
        // Out of the promise chain: a listener's error is an uncaught exception, as in think-cluster.
        if (first) setImmediate(run);
        return first;
      },
      () => false,
    );
  }

  /** Whether this worker has the lowest id among the app workers that are not leaving. */
  async isFirstWorker() {
    const me = this._self.workerId;
    if (me === undefined) throw new Error('think.messenger.consume runs in a worker');
    if (this._self.leaving && this._self.leaving()) return false;
    const answers = await this._transport().mapSettled(ALIVE, null, { timeout: ALIVE_TIMEOUT });
    const alive = answers.filter((a) => a.status === 'fulfilled' && a.value && !a.value.leaving).map((a) => a.id);
    return alive.length > 0 && Math.min(...alive) === me;
  }
}

module.exports = { ThinkMessenger };
