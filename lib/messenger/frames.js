'use strict';

// The messenger frames as JavaScript reads and writes them (docs/messenger-frames.md). The
// primary side, which must survive anything a child sends, is src/wire/frames.rs: it validates
// every frame a child writes, and every frame the primary's own JavaScript writes, with the same
// parser. Here a child reads the frames its channel hands over in one batch (checked by the Rust
// decoder of the child's channel) at their fixed offsets; a child, and the primary, build the
// frames they send in JavaScript: in a child, many sends in one tick become one native call and
// one write.

const { rclusterError } = require('../errors');

const PREFIX_LEN = 4;
const HEADER_LEN = 22;
const VERSION = 1;
/** A payload of bytes (a Buffer), not JSON. */
const FLAG_BINARY = 1;
/** A string payload (not JSON). */
const FLAG_STRING = 8;
/** A string payload that is all ASCII: its bytes are the same in UTF-8 and Latin-1. */
const FLAG_ASCII = 16;
/** The payload is in a sealed memory file sent with the frame; the frame carries its length. */
const FLAG_SHARED = 32;
const SHARED_LEN_BYTES = 4;
/** A host id (u8 length, then the id) precedes the payload: the host a frame came from, or is for. */
const FLAG_HOST = 64;
/** On an expect frame: the requester is one of the workers listed and answers its own copy itself. */
const FLAG_ANSWER_HERE = 128;
/** The longest action name, in UTF-8 bytes (src/wire/frames.rs refuses longer ones). */
const MAX_ACTION_LEN = 1024;

/**
 * A received frame. Its payload stays in the batch it came in until it is asked for: a string
 * payload is decoded from there, without a Buffer view in between. A child's batch is reused for
 * its next read, so there the payload is read while the frame is handled, never later.
 */
class ReceivedFrame {
  constructor(kind, target, flags, sourceId, sourcePid, correlation, action, bytes, start, end, host) {
    this.kind = kind;
    this.target = target;
    this.flags = flags;
    this.sourceId = sourceId;
    this.sourcePid = sourcePid;
    this.correlation = correlation;
    this.action = action;
    this._bytes = bytes;
    this._start = start;
    this._end = end;
    /** The host it came from, when that is another host. */
    this.host = host;
  }

  /** The payload's bytes, a view of the batch (or of the mapped memory file). */
  get payload() {
    if (typeof this._bytes === 'string') return Buffer.from(this._bytes, 'latin1');
    return this._bytes.subarray(this._start, this._end);
  }

  /** The payload as text. */
  text(encoding) {
    // An ASCII string payload that came in a memory file is a string over it already.
    if (typeof this._bytes === 'string') return this._bytes;
    return this._bytes.toString(encoding, this._start, this._end);
  }
}

/**
 * A copy of `bytes` in memory of its own, to be kept: a small Buffer made the usual way is a
 * slice of a shared 8 KiB pool, which it would keep alive for good.
 */
function keptCopy(bytes) {
  const copy = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(copy);
  return copy;
}

// Actions repeat: the last one seen of each length is kept with its bytes, so a frame whose
// action matches it byte for byte costs no new string.
const SHORT_ACTION = 64;
const recentActions = new Array(SHORT_ACTION + 1);

function actionAt(batch, start, len) {
  const known = recentActions[len];
  if (known !== undefined) {
    const { bytes } = known;
    let i = 0;
    while (i < len && batch[start + i] === bytes[i]) i++;
    if (i === len) return known.action;
  }
  const action = batch.toString('utf8', start, start + len);
  if (len <= SHORT_ACTION) recentActions[len] = { bytes: keptCopy(batch.subarray(start, start + len)), action };
  return action;
}

/**
 * Calls `onFrame(frame)` with a ReceivedFrame for each frame of the first `length` bytes of the
 * batch. `takeShared(ascii)` gives the payload of each FLAG_SHARED frame, in order: a Buffer over
 * the mapped memory file, or for an ASCII string, a string over it. A batch that is `reused` for
 * the next read lends no Buffer payload a view of itself: each gets a copy of its bytes (its
 * frames' text must be read within `onFrame`).
 *
 * Every frame is delivered even if `onFrame` throws for one: what `onFrame` throws surfaces
 * afterwards as an uncaught exception, as a throwing listener's does, and the frames after it,
 * and their memory files, are not lost or taken for the next batch's.
 */
function forEachFrame(batch, onFrame, takeShared, length = batch.length, reused = false) {
  let thrown = null;
  let at = 0;
  while (at + PREFIX_LEN + HEADER_LEN <= length) {
    const end = at + PREFIX_LEN + getUInt32(batch, at);
    const h = at + PREFIX_LEN;
    const actionLen = batch[h + 20] | (batch[h + 21] << 8);
    const flags = batch[h + 3];
    let [bytes, start, stop] = [batch, h + HEADER_LEN + actionLen, end];
    let host;
    if (flags & FLAG_HOST) {
      const hostLen = batch[start];
      host = batch.toString('latin1', start + 1, start + 1 + hostLen);
      start += 1 + hostLen;
    }
    if (flags & FLAG_SHARED) {
      bytes = takeShared((flags & (FLAG_STRING | FLAG_ASCII)) === (FLAG_STRING | FLAG_ASCII));
      [start, stop] = [0, bytes.length];
    } else if (reused && flags & FLAG_BINARY) {
      bytes = Buffer.allocUnsafe(stop - start);
      batch.copy(bytes, 0, start, stop);
      [start, stop] = [0, bytes.length];
    }
    const frame = new ReceivedFrame(
      batch[h + 1],
      batch[h + 2],
      flags,
      getUInt32(batch, h + 8),
      getUInt32(batch, h + 12),
      getUInt32(batch, h + 16),
      actionAt(batch, h + HEADER_LEN, actionLen),
      bytes,
      start,
      stop,
      host,
    );
    try {
      onFrame(frame);
    } catch (error) {
      (thrown ??= []).push(error);
    }
    at = end;
  }
  if (thrown !== null) {
    for (const error of thrown) {
      process.nextTick(() => {
        throw error;
      });
    }
  }
}

/**
 * The flag bit for a string payload of `payloadLen` UTF-8 bytes: a string whose UTF-8 length is
 * its length has no byte above 0x7f, and is read (and written) as Latin-1, a plain copy.
 */
function asciiFlag(payload, payloadLen) {
  return typeof payload === 'string' && payloadLen === payload.length ? FLAG_ASCII : 0;
}

// The UTF-8 bytes of the actions sent, kept: a process sends few distinct actions, many times
// each, and copying a handful of known bytes costs much less than encoding the string again.
const MAX_KEPT_ACTIONS = 1024;
const actionsSent = new Map();
let lastAction = '';
let lastActionBytes = Buffer.alloc(0);

/** An action name's UTF-8 bytes; ERR_RCLUSTER_INVALID_OPTION if it is too long. */
function actionBytes(action) {
  if (action === lastAction) return lastActionBytes;
  let bytes = actionsSent.get(action);
  if (bytes === undefined) {
    bytes = Buffer.from(action, 'utf8');
    if (bytes.length > MAX_ACTION_LEN) {
      throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `messenger: an action name is at most ${MAX_ACTION_LEN} bytes`);
    }
    bytes = keptCopy(bytes);
    if (actionsSent.size >= MAX_KEPT_ACTIONS) actionsSent.clear();
    actionsSent.set(action, bytes);
  }
  lastAction = action;
  lastActionBytes = bytes;
  return bytes;
}

/** An action name's length in UTF-8 bytes; ERR_RCLUSTER_INVALID_OPTION if it is too long. */
function actionLength(action) {
  return actionBytes(action).length;
}

/** The bytes a frame takes on the wire: a FLAG_SHARED frame carries only its payload's length. */
function frameLength(actionLen, payloadLen, flags = 0) {
  return PREFIX_LEN + HEADER_LEN + actionLen + (flags & FLAG_SHARED ? SHARED_LEN_BYTES : payloadLen);
}

/**
 * Writes one frame into `out` at `at` (which must have `frameLength(...)` bytes free) and returns
 * where it ends. `payload` is a Buffer, or a string written straight into the frame: as Latin-1
 * when `flags` says it is ASCII, else as UTF-8 (`payloadLen` is its byte length either way).
 */
function writeFrame(out, at, kind, target, targetId, correlation, action, actionLen, flags, payload, payloadLen) {
  // Bytes set one by one: Buffer's writeUInt32LE checks its arguments, and costs more than the
  // rest of a small frame's header. The caller made `out` large enough.
  setUInt32(out, at, frameLength(actionLen, payloadLen, flags) - PREFIX_LEN);
  out[at + 4] = VERSION;
  out[at + 5] = kind;
  out[at + 6] = target;
  out[at + 7] = flags;
  setUInt32(out, at + 8, targetId);
  // Source id and pid: the primary stamps them.
  setUInt32(out, at + 12, 0);
  setUInt32(out, at + 16, 0);
  setUInt32(out, at + 20, correlation);
  out[at + 24] = actionLen & 0xff;
  out[at + 25] = actionLen >>> 8;
  const actionAtOut = at + PREFIX_LEN + HEADER_LEN;
  const actionUtf8 = actionBytes(action);
  for (let i = 0; i < actionLen; i++) out[actionAtOut + i] = actionUtf8[i];
  const payloadAt = actionAtOut + actionLen;
  if (flags & FLAG_SHARED) {
    setUInt32(out, payloadAt, payloadLen);
    return payloadAt + SHARED_LEN_BYTES;
  }
  if (typeof payload !== 'string') payload.copy(out, payloadAt);
  else if (flags & FLAG_ASCII) writeLatin1(out, payload, payloadAt, payloadLen);
  else writeUtf8(out, payload, payloadAt, payloadLen);
  return payloadAt + payloadLen;
}

// Buffer's own latin1Write and utf8Write, which write() calls once it has looked the encoding
// up (a third of its cost for a small frame); write() where a Node has them no more.
const writeLatin1 =
  typeof Buffer.prototype.latin1Write === 'function'
    ? (out, text, at, len) => out.latin1Write(text, at, len)
    : (out, text, at, len) => out.write(text, at, len, 'latin1');
const writeUtf8 =
  typeof Buffer.prototype.utf8Write === 'function'
    ? (out, text, at, len) => out.utf8Write(text, at, len)
    : (out, text, at, len) => out.write(text, at, len, 'utf8');

function setUInt32(out, at, value) {
  out[at] = value;
  out[at + 1] = value >>> 8;
  out[at + 2] = value >>> 16;
  out[at + 3] = value >>> 24;
}

function getUInt32(batch, at) {
  return (batch[at] | (batch[at + 1] << 8) | (batch[at + 2] << 16)) + batch[at + 3] * 0x1000000;
}

module.exports = {
  ReceivedFrame,
  forEachFrame,
  writeFrame,
  frameLength,
  actionLength,
  asciiFlag,
  FLAG_BINARY,
  FLAG_ASCII,
  FLAG_SHARED,
  FLAG_HOST,
  FLAG_ANSWER_HERE,
  MAX_ACTION_LEN,
};
