'use strict';

// consume / map / mapSettled on egg's messenger (egg has none), over rcluster's requests: an
// app worker's egg handler for `action` answers `consume(action)` and `map(action)`, with what
// it returns (awaited), as rcluster's messenger does (README, "The messenger").

const PREFIX = 'egg:request:';
/** Egg's own actions and rcluster's reserved one: never answered as requests. */
const SKIPPED = new Set(['error', 'egg-ready', 'egg-pids', 'agent-start', 'newListener', 'removeListener']);

/** Adds the requests to `eggMessenger`; in an app worker, its handlers answer them. */
function addRequests(eggMessenger, rcluster) {
  const messenger = rcluster.messenger;
  if (!messenger || !eggMessenger || typeof eggMessenger.on !== 'function') return;
  eggMessenger.consume = (action, data, options) => messenger.consume(PREFIX + action, data, options);
  eggMessenger.map = (action, data, options) => messenger.map(PREFIX + action, data, options);
  eggMessenger.mapSettled = (action, data, options) => messenger.mapSettled(PREFIX + action, data, options);
  if (!rcluster.isWorker) return;

  const answered = new Set();
  const answer = (action) => {
    if (typeof action !== 'string' || answered.has(action) || SKIPPED.has(action)) return;
    answered.add(action);
    messenger.on(PREFIX + action, (data) => {
      const [first] = eggMessenger.rawListeners(action);
      if (!first) {
        const error = new Error(`no handler for ${action} in app worker ${process.pid}`);
        error.code = 'ERR_RCLUSTER_NO_HANDLER';
        throw error;
      }
      return first.call(eggMessenger, data);
    });
  };
  for (const action of eggMessenger.eventNames()) answer(action);
  for (const method of ['on', 'addListener', 'once', 'prependListener', 'prependOnceListener']) {
    const original = eggMessenger[method];
    eggMessenger[method] = function register(action, ...rest) {
      answer(action);
      return original.call(this, action, ...rest);
    };
  }
}

module.exports = { addRequests };
