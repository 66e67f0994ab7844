'use strict';

// A worker's life as Node's cluster tells it, for both primaries: cluster.js (`rcluster.start()`)
// and node-cluster.js (`rcluster/cluster`). The native events about a worker (src/binding.rs,
// JsEvent) become the Worker's state, the Worker's event, then the cluster's event with the
// worker first, as in Node's lib/internal/cluster/primary.js.
//
// Where the two primaries differ, they say so at the call: when a worker is marked
// disconnected or dead relative to its `process` events ('disconnect', 'exit'), and what else
// they keep about it (`cluster.workers`, the event loop's hold, warnings).

/** The worker's event, then the cluster's, with the worker first. */
function announce(cluster, worker, name, ...args) {
  worker.emit(name, ...args);
  cluster.emit(name, worker, ...args);
}

/**
 * A worker that disconnected ('disconnected') or died ('dead'): from now on
 * `exitedAfterDisconnect` is a boolean (undefined until then, as in Node).
 */
function settle(worker, state) {
  worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
  worker.state = state;
}

/** A worker's messages are the cluster's too, with the worker first. */
function forwardMessages(cluster, worker) {
  worker.on('message', (message, handle) => cluster.emit('message', worker, message, handle));
}

/** A native `listening` event as Node's cluster reports it: these four keys, `fd` undefined if unset. */
function listeningInfo(event) {
  const message = JSON.parse(event.json);
  return {
    addressType: message.addressType,
    address: message.address,
    port: message.port,
    fd: message.fd === null ? undefined : message.fd,
  };
}

/**
 * Handles a native event about `worker` that both primaries handle alike. Returns false for the
 * others ('disconnect', 'exit', and what only one primary hears), which the caller handles.
 */
function onWorkerEvent(cluster, worker, event) {
  switch (event.kind) {
    case 'online':
      worker.state = 'online';
      announce(cluster, worker, 'online');
      return true;
    case 'listening': {
      const info = listeningInfo(event);
      worker.state = 'listening';
      announce(cluster, worker, 'listening', info);
      return true;
    }
    case 'message':
      worker.process._deliver(event);
      return true;
    case 'internalMessage':
      worker.process._onInternal(JSON.parse(event.json));
      return true;
    case 'exitedAfterDisconnect':
      worker.exitedAfterDisconnect = true;
      return true;
    default:
      return false;
  }
}

module.exports = { onWorkerEvent, settle, announce, forwardMessages };
