'use strict';

// Reads the messenger frames a child's channel hands over in one batch. The bytes were checked
// by the Rust decoder (src/channel/frames.rs, the one writer and validator of the format); this
// only reads header fields at their fixed offsets (docs/messenger-frames.md), which is much
// cheaper than building an object per frame in native code.

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

module.exports = { forEachFrame };
