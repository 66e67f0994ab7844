'use strict';

// Preloaded into the agent (`--require`) when its readiness is 'started': tells the primary once
// the agent's main module has run, so that an agent needs no rcluster code to be waited for.
// (An ES-module agent loads asynchronously: give it readiness 'message' and call ready().)
setImmediate(() => {
  if (typeof process.send === 'function' && process.connected) {
    process.send({ cmd: 'NODE_RCLUSTER_AGENT_STARTED' });
  }
});
