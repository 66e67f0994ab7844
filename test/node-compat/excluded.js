'use strict';

// Node cluster tests that exercise Node's private internals rather than its public behaviour;
// each entry says why it cannot apply to another primary. The README lists them too.
const EXCLUDED = {
  'test-cluster-net-listen-backlog.js':
    "replaces net.Server.prototype.listen in the primary and expects the primary's round-robin handle to call it; " +
    "rcluster's primary binds and listens in Rust, never through the primary's JavaScript net module " +
    '(the worker\'s backlog is still honoured: rcluster listens with the backlog the worker asked for)',
};

module.exports = { EXCLUDED };
