'use strict';

// The messenger of a child (an app worker or the agent): a Messenger over the child's end of
// rcluster's channel, opened on first use. Null where there is no channel (not an rcluster child).

const { Messenger, KIND, TARGET } = require('./messenger');
const { forEachFrame, encodeFrame, asciiFlag, MAX_ACTION_LEN } = require('./frames');
const { rclusterError } = require('./errors');

let messenger;
/** Frames up to this size are joined into one write. */
const BATCH_BYTES = 64 * 1024;

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
  channel = new ChildChannel(fd, drain);

  // Frames sent in one tick after the first leave together: one native call, one write.
  const outgoing = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    // Small frames are joined into one write; a large one is written as it is (no copy).
    let small = [];
    let smallBytes = 0;
    const writeSmall = () => {
      if (small.length > 0) channel.write(small.length === 1 ? small[0] : Buffer.concat(small, smallBytes));
      small = [];
      smallBytes = 0;
    };
    for (const frame of outgoing) {
      if (frame.length >= BATCH_BYTES) {
        writeSmall();
        channel.write(frame);
      } else {
        small.push(frame);
        smallBytes += frame.length;
        if (smallBytes >= BATCH_BYTES) writeSmall();
      }
    }
    writeSmall();
    outgoing.length = 0;
  };
  // What was sent just before process.exit() still goes out.
  process.on('exit', flush);

  const result = new Messenger({
    send: (kind, target, targetId, correlation, action, flags, payload) => {
      const payloadLen = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
      if (payloadLen > maxMessage) {
        throw rclusterError(
          'ERR_RCLUSTER_MESSAGE_TOO_LARGE',
          `a message of ${payloadLen} bytes for '${action}' exceeds maxMessageSize (${maxMessage} bytes)`,
        );
      }
      if (Buffer.byteLength(action) > MAX_ACTION_LEN) {
        throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `messenger: an action name is at most ${MAX_ACTION_LEN} bytes`);
      }
      const frame = encodeFrame(kind, target, targetId, correlation, action, flags | asciiFlag(payload, payloadLen), payload, payloadLen);
      if (flushScheduled) {
        outgoing.push(frame);
        return;
      }
      // The first frame of a tick leaves at once (no added latency for a lone message); the
      // ones that follow it in the same tick are joined and leave together.
      channel.write(frame);
      flushScheduled = true;
      process.nextTick(flush);
    },
    handler: (action, on) => result._transport.send(on ? KIND.subscribe : KIND.unsubscribe, TARGET.primary, 0, 0, action, 0, Buffer.alloc(0)),
    flush,
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
