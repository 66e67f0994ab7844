'use strict';

// The messenger frames as a child reads and writes them (docs/messenger-frames.md). The primary
// side, which must survive anything a child sends, is src/channel/frames.rs: it validates every
// frame a child writes. Here a child reads the frames its channel hands over in one batch (checked
// by the Rust decoder of the child's channel) at their fixed offsets, and builds the frames it
// sends in JavaScript, so that many sends in one tick become one native call and one write.

const PREFIX_LEN = 4;
const HEADER_LEN = 22;

/** Calls `onFrame({ kind, target, flags, sourceId, sourcePid, correlation, action, payload })` per frame. */
function forEachFrame(batch, onFrame) {
  let at = 0;
  while (at + PREFIX_LEN + HEADER_LEN <= batch.length) {
    const end = at + PREFIX_LEN + batch.readUInt32LE(at);
    const h = at + PREFIX_LEN;
    const actionEnd = h + HEADER_LEN + batch.readUInt16LE(h + 20);
    onFrame({
      kind: batch[h + 1],
      target: batch[h + 2],
      flags: batch[h + 3],
      sourceId: batch.readUInt32LE(h + 8),
      sourcePid: batch.readUInt32LE(h + 12),
      correlation: batch.readUInt32LE(h + 16),
      action: batch.toString('utf8', h + HEADER_LEN, actionEnd),
      payload: batch.subarray(actionEnd, end),
    });
    at = end;
  }
}

const VERSION = 1;
/** A string payload that is all ASCII: its bytes are the same in UTF-8 and Latin-1. */
const FLAG_ASCII = 16;

/**
 * The flag bit for a string payload of `payloadLen` UTF-8 bytes: a string whose UTF-8 length is
 * its length has no byte above 0x7f, and is read (and written) as Latin-1, a plain copy.
 */
function asciiFlag(payload, payloadLen) {
  return typeof payload === 'string' && payloadLen === payload.length ? FLAG_ASCII : 0;
}

/**
 * One frame, ready for the wire. `payload` is a Buffer, or a string written as UTF-8 straight
 * into the frame (with `payloadLen`, its byte length): no intermediate copy.
 */
function encodeFrame(kind, target, targetId, correlation, action, flags, payload, payloadLen = payload.length) {
  const actionLen = Buffer.byteLength(action);
  const frame = Buffer.allocUnsafe(PREFIX_LEN + HEADER_LEN + actionLen + payloadLen);
  frame.writeUInt32LE(HEADER_LEN + actionLen + payloadLen, 0);
  frame[4] = VERSION;
  frame[5] = kind;
  frame[6] = target;
  frame[7] = flags;
  frame.writeUInt32LE(targetId, 8);
  // Source id and pid: the primary stamps them.
  frame.writeUInt32LE(0, 12);
  frame.writeUInt32LE(0, 16);
  frame.writeUInt32LE(correlation, 20);
  frame.writeUInt16LE(actionLen, 24);
  frame.write(action, PREFIX_LEN + HEADER_LEN, 'utf8');
  if (typeof payload === 'string') frame.write(payload, PREFIX_LEN + HEADER_LEN + actionLen, flags & FLAG_ASCII ? 'latin1' : 'utf8');
  else payload.copy(frame, PREFIX_LEN + HEADER_LEN + actionLen);
  return frame;
}

module.exports = { forEachFrame, encodeFrame, asciiFlag, FLAG_ASCII, MAX_ACTION_LEN: 1024 };
