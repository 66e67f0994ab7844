'use strict';

// Preloaded (--require) into egg's agent and app workers under rcluster/egg:
// - egg's user messages (what a child's egg messenger sends to the app workers, the agent or a
//   pid) travel on rcluster's own channel instead of through the master's process.send relay,
//   with egg's routing: no `to` goes from an app worker to the agent and from the agent to the
//   app workers, `to: 'app'` reaches every app worker (the sender too), a receiverPid one
//   process. What is for the master or its parent still goes on Node's channel;
// - the agent is ready for rcluster when egg's agent says `agent-start`.

const rcluster = require('../../../index.js');

/** The one rcluster action that carries egg's messages. */
const ACTION = 'egg:message';

function install() {
  if (!rcluster.isAgent && !rcluster.isWorker) return;
  if (typeof process.send !== 'function') return;
  const from = rcluster.isAgent ? 'agent' : 'app';
  const messenger = rcluster.messenger;
  const nodeSend = process.send;
  // A message to nobody (a pid that is gone) is dropped, as egg's master drops it.
  messenger.on('error', () => {});
  messenger.on(ACTION, (message) => process.emit('message', message));

  /** Sends `message` on rcluster's channel; false when it is for the master or its parent. */
  function route(message) {
    const receiver = message.receiverWorkerId ?? message.receiverPid;
    if (receiver !== undefined && receiver !== null) {
      const pid = Number(receiver);
      if (String(receiver) === String(process.ppid) || !Number.isInteger(pid) || pid <= 0) return false;
      messenger.sendTo(pid, ACTION, { ...message, from });
      return true;
    }
    const to = message.to || (from === 'agent' ? 'app' : 'agent');
    if (to === 'app') {
      messenger.sendToApp(ACTION, { ...message, from, to });
      return true;
    }
    if (to === 'agent') {
      messenger.sendToAgent(ACTION, { ...message, from, to });
      return true;
    }
    return false;
  }

  process.send = function send(message, ...rest) {
    if (message && typeof message === 'object' && typeof message.action === 'string') {
      if (message.to === 'master' && message.action === 'agent-start' && rcluster.isAgent) {
        const sent = nodeSend.call(process, message, ...rest);
        rcluster.ready();
        return sent;
      }
      let routed = false;
      try {
        routed = route(message);
      } catch (error) {
        // Data JSON cannot carry, or a full queue: as egg's relay would, say so and drop it.
        process.emitWarning(error);
        routed = true;
      }
      if (routed) {
        const callback = rest.find((arg) => typeof arg === 'function');
        if (callback) process.nextTick(callback, null);
        return true;
      }
    }
    return nodeSend.call(process, message, ...rest);
  };
}

install();
