'use strict';

// The messenger of a child (an app worker or the agent): a Messenger over the child's end of
// rcluster's channel, opened on first use. Null where there is no channel (not an rcluster child).

const { Messenger, KIND, TARGET } = require('./messenger');
const { forEachFrame, writeFrame, frameLength, asciiFlag, FLAG_ASCII, FLAG_SHARED, MAX_ACTION_LEN } = require('./frames');
const { rclusterError } = require('./errors');

let messenger;
/** Frames up to this size are joined into one write. */
const BATCH_BYTES = 64 * 1024;
/**
 * Payloads from this size travel in a sealed memory file (docs/messenger-frames.md): written
 * once by the sender and mapped by every receiver, where copying them through the sockets
 * costs more than the file's few system calls.
 */
const SHARED_PAYLOAD_BYTES = 32 * 1024;

function open() {
  const fd = Number(process.env.RCLUSTER_CHANNEL_FD);
  if (!Number.isInteger(fd) || fd < 0) return null;
  const maxMessage = Number(process.env.RCLUSTER_MAX_MESSAGE_SIZE) || 64 * 1024 * 1024;
  const { ChildChannel } = require('./native.js');
  let channel;
  const drain = () => {
    const batch = channel.take();
    forEachFrame(batch.frames, (frame) => result._receive(frame), (ascii) => (ascii ? channel.nextSharedLatin1() : channel.nextShared()));
    // The channel ended (the primary is gone): nothing more will come, so nothing to wait for.
    if (batch.closed !== undefined && batch.closed !== null) channel.setRef(false);
  };
  channel = new ChildChannel(fd, drain);
  // A write also reads what has come meanwhile (src/child/mod.rs); when it did, the event loop
  // will not call drain for it, so it is called on the loop's next turn.
  let drainScheduled = false;
  const drainSoon = (read) => {
    if (!read || drainScheduled) return;
    drainScheduled = true;
    setImmediate(() => {
      drainScheduled = false;
      drain();
    });
  };

  // Frames are written into one buffer: the first frame of a tick leaves at once (no added
  // latency for a lone message); the ones that follow it in the same tick are joined and leave
  // together, one native call and one write per BATCH_BYTES. (The channel copies what the socket
  // does not take at once, so the buffer is free again when write() returns.)
  const pending = Buffer.allocUnsafeSlow(BATCH_BYTES);
  let used = 0;
  let flushScheduled = false;
  const writePending = () => {
    if (used > 0) drainSoon(channel.write(pending.subarray(0, used)));
    used = 0;
  };
  const flush = () => {
    flushScheduled = false;
    writePending();
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
      const actionLen = Buffer.byteLength(action);
      if (actionLen > MAX_ACTION_LEN) {
        throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `messenger: an action name is at most ${MAX_ACTION_LEN} bytes`);
      }
      let frameFlags = flags | asciiFlag(payload, payloadLen);
      if (payloadLen >= SHARED_PAYLOAD_BYTES) frameFlags |= FLAG_SHARED;
      const size = frameLength(actionLen, payloadLen, frameFlags);
      if (frameFlags & FLAG_SHARED || size > BATCH_BYTES) {
        // A frame with a memory file, or a large one, is built and written on its own, after
        // what is pending.
        writePending();
        const frame = Buffer.allocUnsafe(size);
        writeFrame(frame, 0, kind, target, targetId, correlation, action, actionLen, frameFlags, payload, payloadLen);
        if (!(frameFlags & FLAG_SHARED)) drainSoon(channel.write(frame));
        else if (typeof payload !== 'string') drainSoon(channel.writeSharedBytes(frame, payload));
        else drainSoon(channel.writeSharedString(frame, payload, !(frameFlags & FLAG_ASCII), payloadLen));
      } else {
        if (used + size > BATCH_BYTES) writePending();
        used = writeFrame(pending, used, kind, target, targetId, correlation, action, actionLen, frameFlags, payload, payloadLen);
      }
      if (!flushScheduled) {
        writePending();
        flushScheduled = true;
        process.nextTick(flush);
      }
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
