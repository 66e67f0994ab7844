'use strict';

// Handles that travel with a message (`worker.send(msg, handle)`, `process.send(msg, handle)`):
// the Rust side moves the descriptor; here a JavaScript handle becomes a descriptor and back,
// with the type names Node's child_process puts on the wire.

const net = require('node:net');
const dgram = require('node:dgram');
const { typeError } = require('../errors');

function dgramHandle(socket) {
  // dgram keeps its libuv handle behind a private symbol; `_handle` is a deprecated alias.
  const state = Object.getOwnPropertySymbols(socket)
    .map((symbol) => socket[symbol])
    .find((value) => value && typeof value === 'object' && 'handle' in value && 'bindState' in value);
  return state ? state.handle : null;
}

/** The wire type and descriptor of a handle the user wants to send. */
function describeHandle(handle) {
  if (handle instanceof net.Socket) {
    return { type: 'net.Socket', fd: handle._handle ? handle._handle.fd : -1 };
  }
  if (handle instanceof net.Server) {
    return { type: 'net.Server', fd: handle._handle ? handle._handle.fd : -1 };
  }
  if (handle instanceof dgram.Socket) {
    const native = dgramHandle(handle);
    return { type: 'dgram.Socket', fd: native ? native.fd : -1, dgramType: handle.type };
  }
  if (handle && typeof handle.fd === 'number' && ['TCP', 'Pipe'].includes(handle.constructor && handle.constructor.name)) {
    return { type: 'net.Native', fd: handle.fd };
  }
  throw typeError('ERR_INVALID_HANDLE_TYPE', 'This handle type cannot be sent');
}

/**
 * Turns a received descriptor into the object Node's child_process would emit; calls back once
 * usable. A received dgram socket is typed 'udp4': the descriptor keeps its real family.
 */
function adoptHandle(type, fd, callback) {
  switch (type) {
    case 'net.Server': {
      const server = new net.Server();
      server.listen({ fd }, () => callback(server));
      return;
    }
    case 'net.Socket':
      callback(new net.Socket({ fd, readable: true, writable: true }));
      return;
    case 'net.Native':
      callback(new net.Socket({ fd, readable: true, writable: true })._handle);
      return;
    case 'dgram.Socket': {
      const socket = dgram.createSocket('udp4');
      socket.bind({ fd }, () => callback(socket));
      return;
    }
    default:
      require('node:fs').closeSync(fd);
      callback(undefined);
  }
}

module.exports = { describeHandle, adoptHandle };
