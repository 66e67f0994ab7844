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
/** A string payload (not JSON). */
const FLAG_STRING = 8;
/** A string payload that is all ASCII: its bytes are the same in UTF-8 and Latin-1. */
const FLAG_ASCII = 16;
/** The payload is in a sealed memory file sent with the frame; the frame carries its length. */
const FLAG_SHARED = 32;
const SHARED_LEN_BYTES = 4;
/** A host id (u8 length, then the id) precedes the payload: the host a frame came from, or is for. */
const FLAG_HOST = 64;
/** The longest action name, in UTF-8 bytes (src/wire/frames.rs refuses longer ones). */
const MAX_ACTION_LEN = 1024;

/**
 * A received frame. Its payload stays in the batch it came in until it is asked for: a string
 * payload is decoded from there, without a Buffer view in between.
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
  if (len <= SHORT_ACTION) recentActions[len] = { bytes: Buffer.from(batch.subarray(start, start + len)), action };
  return action;
}

/**
 * Calls `onFrame(frame)` with a ReceivedFrame for each frame of the batch. `takeShared(ascii)`
 * gives the payload of each FLAG_SHARED frame, in order: a Buffer over the mapped memory file, or
 * for an ASCII string, a string over it.
 */
function forEachFrame(batch, onFrame, takeShared) {
  let at = 0;
  while (at + PREFIX_LEN + HEADER_LEN <= batch.length) {
    const end = at + PREFIX_LEN + batch.readUInt32LE(at);
    const h = at + PREFIX_LEN;
    const actionLen = batch.readUInt16LE(h + 20);
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
    }
    onFrame(
      new ReceivedFrame(
        batch[h + 1],
        batch[h + 2],
        flags,
        batch.readUInt32LE(h + 8),
        batch.readUInt32LE(h + 12),
        batch.readUInt32LE(h + 16),
        actionAt(batch, h + HEADER_LEN, actionLen),
        bytes,
        start,
        stop,
        host,
      ),
    );
    at = end;
  }
}

/**
 * The flag bit for a string payload of `payloadLen` UTF-8 bytes: a string whose UTF-8 length is
 * its length has no byte above 0x7f, and is read (and written) as Latin-1, a plain copy.
 */
function asciiFlag(payload, payloadLen) {
  return typeof payload === 'string' && payloadLen === payload.length ? FLAG_ASCII : 0;
}

/** An action name's length in UTF-8 bytes; ERR_RCLUSTER_INVALID_OPTION if it is too long. */
function actionLength(action) {
  const len = Buffer.byteLength(action);
  if (len > MAX_ACTION_LEN) {
    throw rclusterError('ERR_RCLUSTER_INVALID_OPTION', `messenger: an action name is at most ${MAX_ACTION_LEN} bytes`);
  }
  return len;
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
  out.writeUInt32LE(frameLength(actionLen, payloadLen, flags) - PREFIX_LEN, at);
  out[at + 4] = VERSION;
  out[at + 5] = kind;
  out[at + 6] = target;
  out[at + 7] = flags;
  out.writeUInt32LE(targetId, at + 8);
  // Source id and pid: the primary stamps them.
  out.writeUInt32LE(0, at + 12);
  out.writeUInt32LE(0, at + 16);
  out.writeUInt32LE(correlation, at + 20);
  out.writeUInt16LE(actionLen, at + 24);
  const actionAtOut = at + PREFIX_LEN + HEADER_LEN;
  if (actionLen > 0) out.write(action, actionAtOut, actionLen, 'utf8');
  const payloadAt = actionAtOut + actionLen;
  if (flags & FLAG_SHARED) {
    out.writeUInt32LE(payloadLen, payloadAt);
    return payloadAt + SHARED_LEN_BYTES;
  }
  if (typeof payload === 'string') out.write(payload, payloadAt, payloadLen, flags & FLAG_ASCII ? 'latin1' : 'utf8');
  else payload.copy(out, payloadAt);
  return payloadAt + payloadLen;
}

module.exports = { ReceivedFrame, forEachFrame, writeFrame, frameLength, actionLength, asciiFlag, FLAG_ASCII, FLAG_SHARED, FLAG_HOST, MAX_ACTION_LEN };
