'use strict';

// rcluster: a Node.js cluster whose primary is written in Rust. See README.md and index.d.ts.

// The native addon first: on a platform without it, `require('rcluster')` fails here, with an
// error that says what is missing, rather than later in start().
require('./lib/addon');
const child = require('./lib/child/child');

module.exports = {
  isPrimary: child.isPrimary,
  isWorker: child.isWorker,
  isAgent: child.isAgent,
  worker: child.worker,
  /** A cluster agent's epoch (`agent: { scope: 'cluster' }`); null elsewhere. */
  agentEpoch: child.agentEpoch,
  ready: child.ready,
  reload: child.reload,
  /** This child's messenger; in a primary, use `cluster.messenger`. */
  get messenger() {
    return require('./lib/child/child-messenger').childMessenger();
  },
  // The native primary is loaded only where one can run: a child never starts a cluster.
  start(options) {
    return require('./lib/primary/cluster').start(options);
  },
  get Cluster() {
    return require('./lib/primary/cluster').Cluster;
  },
};
