'use strict';

// The two encodings of Node's IPC channel (`serialization: 'json' | 'advanced'`). The Rust side
// frames and unframes the bytes; JavaScript turns values into bytes and back, exactly as Node's
// own child_process does, so a worker cannot tell the difference.

const v8 = require('node:v8');
const { isArrayBufferView } = require('node:util').types;

const ARRAY_BUFFER_VIEW_TAG = 0;
const NOT_ARRAY_BUFFER_VIEW_TAG = 1;

class ChannelSerializer extends v8.DefaultSerializer {
  _writeHostObject(object) {
    if (isArrayBufferView(object)) {
      this.writeUint32(ARRAY_BUFFER_VIEW_TAG);
      return super._writeHostObject(object);
    }
    this.writeUint32(NOT_ARRAY_BUFFER_VIEW_TAG);
    this.writeValue({ ...object });
  }
}

class ChannelDeserializer extends v8.DefaultDeserializer {
  _readHostObject() {
    const tag = this.readUint32();
    if (tag === ARRAY_BUFFER_VIEW_TAG) return super._readHostObject();
    return this.readValue();
  }
}

const json = {
  /** A string for the channel, or undefined when JSON cannot represent the value. */
  encode(message) {
    return JSON.stringify(message);
  },
  decode(event) {
    return JSON.parse(event.json);
  },
};

const advanced = {
  encode(message) {
    const serializer = new ChannelSerializer();
    serializer.writeHeader();
    serializer.writeValue(message);
    return serializer.releaseBuffer();
  },
  decode(event) {
    if (event.json !== undefined && event.json !== null) return JSON.parse(event.json);
    const deserializer = new ChannelDeserializer(event.buffer);
    deserializer.readHeader();
    return deserializer.readValue();
  },
};

function serializationFor(mode) {
  return mode === 'advanced' ? advanced : json;
}

module.exports = { serializationFor };
