'use strict';

// What `require('rcluster')` means inside a child: who am I (identity.js), and how to talk to the
// primary.

const { isPrimary, isWorker, isAgent, worker, agentEpoch } = require('./identity');

/**
 * Tells the primary this process is ready (readiness: 'message'). When this process uses the
 * messenger, the signal goes on the messenger's channel, after the handlers registered before it:
 * once the cluster is ready, every worker can be asked.
 */
function ready() {
  if (isPrimary) return false;
  const messenger = require('./child-messenger').openedMessenger();
  if (messenger) {
    messenger._signalReady();
    return true;
  }
  if (typeof process.send !== 'function' || !process.connected) return false;
  process.send('ready');
  return true;
}

/**
 * Sends a message on Node's channel to the primary; false when there is no open channel. With a
 * callback, a channel that closes meanwhile is no 'error' event on process.
 */
function tellPrimary(message) {
  if (typeof process.send !== 'function' || !process.connected) return false;
  process.send(message, undefined, undefined, () => {});
  return true;
}

/**
 * Asks the primary for a rolling reload of the cluster (it joins one under way). False in a
 * primary, or when the channel to the primary is closed.
 */
function reload() {
  return !isPrimary && tellPrimary({ cmd: 'NODE_RCLUSTER_RELOAD' });
}

module.exports = { isPrimary, isWorker, isAgent, worker, agentEpoch, ready, reload, tellPrimary };
