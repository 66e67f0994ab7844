'use strict';

// The messenger of the primary of `rcluster.start()`: a Messenger whose frames are built in
// JavaScript as a child builds its own (lib/messenger/frames.js), then handed to the native
// primary, which checks them with the one parser its children's frames go through
// (src/binding.rs, sendFrame) and routes them. What the children send the primary arrives as
// `frame` events.

const { Messenger } = require('../messenger/messenger');
const { ReceivedFrame, writeFrame, frameLength, actionLength, asciiFlag } = require('../messenger/frames');
const { rclusterError } = require('../errors');

/** Frames up to this size are built in one buffer, kept and written again. */
const SCRATCH_BYTES = 64 * 1024;
/** The longest frame: its length prefix, 4 bytes, says the length of the rest as a u32. */
const MAX_FRAME = 4 + 0xffffffff;

/** A Messenger for the primary that `core` (a PrimaryCore) drives. */
function primaryMessenger(core) {
  let scratch = null;
  return new Messenger({
    // `bounded` is not read: the primary writes each frame at once, with no queue of its own.
    send: (kind, target, targetId, correlation, action, flags, payload) => {
      const payloadLen = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
      const actionLen = actionLength(action);
      const frameFlags = flags | asciiFlag(payload, payloadLen);
      const size = frameLength(actionLen, payloadLen, frameFlags);
      // The native side refuses a payload over maxMessageSize, after the frame is built: a
      // payload past what a frame can say is refused here, before a buffer is made for it.
      if (size > MAX_FRAME) {
        throw rclusterError('ERR_RCLUSTER_MESSAGE_TOO_LARGE', `a message of ${payloadLen} bytes for '${action}' exceeds maxMessageSize`);
      }
      let frame;
      if (size <= SCRATCH_BYTES) {
        if (scratch === null) scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
        // The native call copies the frame before it returns: the scratch is free again then.
        frame = scratch.subarray(0, size);
      } else {
        frame = Buffer.allocUnsafe(size);
      }
      writeFrame(frame, 0, kind, target, targetId, correlation, action, actionLen, frameFlags, payload, payloadLen);
      core.call('sendFrame', frame);
    },
    handler: (action, on) => core.call('handler', action, on),
    // The cluster holds the event loop while it runs.
    hold: () => {},
    // The primary sends each frame at once.
    flush: () => {},
  }, { host: core.native.hostId ?? undefined });
}

/** The ReceivedFrame of a native `frame` event: the header's fields, the payload's bytes. */
function receivedFrame(event) {
  return new ReceivedFrame(event.frameKind, 0, event.flags, event.id, event.pid, event.correlation, event.action, event.buffer, 0, event.buffer.length, event.host ?? undefined);
}

module.exports = { primaryMessenger, receivedFrame };
