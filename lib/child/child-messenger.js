'use strict';

// The messenger of a child (an app worker or the agent): a Messenger over the child's end of
// rcluster's channel. Null where there is no channel (not an rcluster child).

const { Messenger, KIND, TARGET } = require('../messenger/messenger');
const { forEachFrame, writeFrame, frameLength, actionLength, asciiFlag, FLAG_ASCII, FLAG_SHARED, FLAG_HOST, MAX_ACTION_LEN } = require('../messenger/frames');
const { rclusterError } = require('../errors');
const { worker } = require('./identity');

let messenger;
/** Whether the channel is open: the messenger has been used, not only looked at. */
let opened = false;
/** Frames up to this size are joined into one write. */
const BATCH_BYTES = 64 * 1024;
/** What one read brings is copied into a buffer of this size, kept from one read to the next. */
const INBOX_BYTES = 256 * 1024;
/**
 * Payloads from this size travel in a sealed memory file (docs/messenger-frames.md): written
 * once by the sender and mapped by every receiver, where copying them through the sockets
 * costs more than the file's few system calls.
 */
const SHARED_PAYLOAD_BYTES = 32 * 1024;
/** The buffer a large string is encoded into is kept for the next one up to this size. */
const MAX_KEPT_STAGING = 4 * 1024 * 1024;
/** ms an exiting process waits for its messenger messages to be written. */
const EXIT_WAIT_MS = 2000;
/** What may wait in one messenger queue, in bytes: 64 MiB or two of the largest frames (the primary's bound per process is the same). */
const queueLimit = (maxMessage) => Math.max(64 * 1024 * 1024, 2 * (maxMessage + 4 + 22 + MAX_ACTION_LEN));

const utf8 = new TextEncoder();
let staging = null;

/**
 * A large string's UTF-8 bytes, in a buffer kept from one send to the next (they are copied into
 * a memory file before the send returns). One pass gives the bytes and their count: measuring
 * the string alone (Buffer.byteLength) costs twice that pass at 64 KiB on Node 20, and more on
 * Node 24.
 */
function stagedUtf8(text) {
  // Room for the longest UTF-8 a string of this length can have (3 bytes a UTF-16 unit), in the
  // buffer that is kept; a longer string gets a buffer of its exact size, measured first.
  const room = text.length * 3;
  let into = staging;
  if (room > MAX_KEPT_STAGING) {
    into = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  } else if (into === null || into.length < room) {
    into = staging = Buffer.allocUnsafeSlow(room);
  }
  return into.subarray(0, utf8.encodeInto(text, into).written);
}

/** The channel's descriptor, or null where this process has none. */
function channelFd() {
  const fd = Number(require('./environment').RCLUSTER_CHANNEL_FD);
  return Number.isInteger(fd) && fd >= 0 ? fd : null;
}

/** Opens the channel: the transport of `owner`, which receives what arrives on it. */
function open(fd, owner) {
  const maxMessage = Number(require('./environment').RCLUSTER_MAX_MESSAGE_SIZE) || 64 * 1024 * 1024;
  const { ChildChannel } = require('../addon');
  const limit = queueLimit(maxMessage);
  let channel;
  const receive = (frame) => owner._receive(frame);
  const takeShared = (ascii) => (ascii ? channel.nextSharedLatin1() : channel.nextShared());
  // What each read brings is copied into this one buffer (src/child/mod.rs, take_into); a batch
  // larger than it, and the end of the channel, come as a Buffer of their own.
  const inbox = Buffer.allocUnsafeSlow(INBOX_BYTES);
  const drain = () => {
    const length = channel.takeInto(inbox);
    if (length >= 0) return forEachFrame(inbox, receive, takeShared, length, true);
    const batch = channel.take();
    forEachFrame(batch.frames, receive, takeShared);
    // The channel ended (the primary is gone): nothing more will come, so nothing to wait for.
    if (batch.closed !== undefined && batch.closed !== null) hold(false);
  };
  // messenger.drained(): promises settled once the channel's write queue is empty.
  let drainedWaiters = [];
  const onDrained = () => {
    if (drainedWaiters.length === 0) return;
    let empty;
    try {
      empty = channel.waitDrained();
    } catch (error) {
      empty = error;
    }
    if (empty === false) return;
    const waiters = drainedWaiters;
    drainedWaiters = [];
    for (const { resolve, reject } of waiters) (empty === true ? resolve() : reject(empty));
  };
  channel = new ChildChannel(fd, drain, onDrained, limit);
  // Whether the channel keeps the event loop alive: asked on every request and answer, changed
  // seldom, so the native call is made only on a change.
  let held = false;
  const hold = (yes) => {
    if (yes === held) return;
    held = yes;
    channel.setRef(yes);
  };
  // A write also reads what has come meanwhile (src/child/mod.rs); when it did, the event loop
  // will not call drain for it, so it is called on the loop's next turn. It also says how many
  // bytes wait for the channel's writer: kept here, so that a send checks the bound without a
  // native call until the queue is near it.
  let queued = 0;
  let drainScheduled = false;
  const drainSoon = (result) => {
    queued = Math.floor(result / 2);
    if (result % 2 === 0 || drainScheduled) return;
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
  // What was sent just before process.exit() still goes out: the writer thread, which has what
  // the socket did not take at once, ends with the process, so the exit waits for it (a while at
  // most, as the primary may not be reading), and says what it could not send.
  process.on('exit', () => {
    flush();
    const left = channel.finish(EXIT_WAIT_MS);
    if (left > 0) process.stderr.write(`rcluster: ${left} bytes of messenger messages were not sent before this process exited (pid ${process.pid})\n`);
  });

  /** The payload's length in bytes, if it is at most maxMessageSize. */
  const checkedLength = (action, payload) => {
    const payloadLen = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    if (payloadLen > maxMessage) {
      throw rclusterError(
        'ERR_RCLUSTER_MESSAGE_TOO_LARGE',
        `a message of ${payloadLen} bytes for '${action}' exceeds maxMessageSize (${maxMessage} bytes)`,
      );
    }
    return payloadLen;
  };

  const transport = {
    // `bounded`: false for what the messenger itself must say (subscriptions, receipts, error
    // answers): small, and never refused.
    send: (kind, target, targetId, correlation, action, flags, payload, bounded = true) => {
      // A string that goes in a memory file goes as its UTF-8 bytes (an ASCII one is read as
      // Latin-1 at the other end, as in line). A string has at least as many bytes as its
      // length, so one too long is refused before it is encoded.
      let ascii = 0;
      if (typeof payload === 'string' && payload.length >= SHARED_PAYLOAD_BYTES && payload.length <= maxMessage && !(flags & FLAG_HOST)) {
        const length = payload.length;
        payload = stagedUtf8(payload);
        if (payload.length === length) ascii = FLAG_ASCII;
      }
      const payloadLen = checkedLength(action, payload);
      const actionLen = actionLength(action);
      let frameFlags = flags | ascii | asciiFlag(payload, payloadLen);
      // A frame for another host carries its payload in line (the primary sends it on as bytes).
      if (payloadLen >= SHARED_PAYLOAD_BYTES && !(flags & FLAG_HOST)) frameFlags |= FLAG_SHARED;
      const size = frameLength(actionLen, payloadLen, frameFlags);
      // A message that would overfill the write queue is refused whole (the cached count of what
      // waits only ever overstates it; it is read again before refusing). One always fits an
      // empty queue. A memory file is checked natively too, against the count of files.
      const cost = frameFlags & FLAG_SHARED ? size + payloadLen : size;
      if (bounded && queued + used > 0 && queued + used + cost > limit) {
        queued = channel.queuedBytes();
        if (queued + used > 0 && queued + used + cost > limit) {
          throw rclusterError(
            'ERR_RCLUSTER_QUEUE_FULL',
            `messenger: ${queued + used} bytes of this process's messages wait to be written (the bound is ${limit}); '${action}' was not sent: send it again once messenger.drained() resolves`,
            { action },
          );
        }
      }
      if (frameFlags & FLAG_SHARED || size > BATCH_BYTES) {
        // A frame with a memory file, or a large one, is built and written on its own, after
        // what is pending.
        writePending();
        const frame = Buffer.allocUnsafe(size);
        writeFrame(frame, 0, kind, target, targetId, correlation, action, actionLen, frameFlags, payload, payloadLen);
        try {
          if (!(frameFlags & FLAG_SHARED)) drainSoon(channel.write(frame));
          else if (typeof payload !== 'string') drainSoon(channel.writeSharedBytes(frame, payload));
          else drainSoon(channel.writeSharedString(frame, payload, !(frameFlags & FLAG_ASCII), payloadLen));
        } catch (error) {
          if (error.code === 'ERR_RCLUSTER_QUEUE_FULL') {
            error.message = `${error.message}; '${action}' was not sent: send it again once messenger.drained() resolves`;
            error.action = action;
          }
          throw error;
        }
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
    handler: (action, on) => transport.send(on ? KIND.subscribe : KIND.unsubscribe, TARGET.primary, 0, 0, action, 0, Buffer.alloc(0), false),
    flush,
    checkSize: (action, payload) => void checkedLength(action, payload),
    drained: () => {
      writePending();
      return new Promise((resolve, reject) => {
        drainedWaiters.push({ resolve, reject });
        onDrained();
      });
    },
    // Like Node's own channel: handlers keep the process alive, until the primary lets it go.
    hold: (yes) => hold(yes && process.connected !== false),
  };
  // Disconnected (stop, reload, scale down): the messenger must not keep the worker from exiting.
  process.once('disconnect', () => hold(false));
  // Join the cluster's messenger now: until a child says hello, the primary sends it nothing.
  transport.handler('', true);
  return transport;
}

/**
 * The messenger is made when it is first asked for, its channel opened when it is first used:
 * `import { messenger } from 'rcluster'` asks as soon as the module is imported, and a child
 * that only imports rcluster must not join the messenger, nor wait for it when it exits.
 * Nothing arrives before the hello that opening sends; nothing unsent waits to be drained.
 */
function create(fd) {
  let transport = null;
  const channel = () => {
    if (transport === null) {
      transport = open(fd, result);
      opened = true;
    }
    return transport;
  };
  const result = new Messenger(
    {
      send: (...args) => channel().send(...args),
      handler: (action, on) => channel().handler(action, on),
      flush: () => channel().flush(),
      checkSize: (action, payload) => channel().checkSize(action, payload),
      drained: () => (transport === null ? Promise.resolve() : transport.drained()),
      hold: (yes) => channel().hold(yes),
    },
    { workerId: worker && worker.id, host: require('./environment').RCLUSTER_HOST_ID },
  );
  return result;
}

function childMessenger() {
  if (messenger === undefined) {
    const fd = channelFd();
    messenger = fd === null ? null : create(fd);
  }
  return messenger;
}

/** The messenger if this process has used it, without opening it. */
function openedMessenger() {
  return opened ? messenger : null;
}

module.exports = { childMessenger, openedMessenger };
