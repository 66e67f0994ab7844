'use strict';

// The messenger of a child (an app worker or the agent): a Messenger over the child's end of
// rcluster's channel, opened on first use. Null where there is no channel (not an rcluster child).

const { Messenger, KIND, TARGET } = require('./messenger');
const { forEachFrame } = require('./frames');

let messenger;

function open() {
  const fd = Number(process.env.RCLUSTER_CHANNEL_FD);
  if (!Number.isInteger(fd) || fd < 0) return null;
  const maxMessage = Number(process.env.RCLUSTER_MAX_MESSAGE_SIZE) || 64 * 1024 * 1024;
  const { ChildChannel } = require('./native.js');
  let channel;
  const drain = () => {
    const batch = channel.take();
    forEachFrame(batch.frames, (frame) => result._receive(frame));
    // The channel ended (the primary is gone): nothing more will come, so nothing to wait for.
    if (batch.closed !== undefined && batch.closed !== null) channel.setRef(false);
  };
  channel = new ChildChannel(fd, maxMessage, drain);
  const result = new Messenger({
    send: (kind, target, targetId, correlation, action, flags, payload) =>
      channel.send(kind, target, targetId, correlation, action, flags, payload),
    handler: (action, on) =>
      channel.send(on ? KIND.subscribe : KIND.unsubscribe, TARGET.primary, 0, 0, action, 0, Buffer.alloc(0)),
    // Like Node's own channel: handlers keep the process alive, until the primary lets it go.
    hold: (yes) => channel.setRef(yes && process.connected !== false),
  });
  // Disconnected (stop, reload, scale down): the messenger must not keep the worker from exiting.
  process.once('disconnect', () => channel.setRef(false));
  // Join the cluster's messenger now: until a child says hello, the primary sends it nothing.
  result._transport.handler('', true);
  return result;
}

function childMessenger() {
  if (messenger === undefined) messenger = open();
  return messenger;
}

/** The messenger if this process has opened it, without opening it. */
function openedMessenger() {
  return messenger || null;
}

module.exports = { childMessenger, openedMessenger };
