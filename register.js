'use strict';

// `node -r rcluster/register app.js`: an app's own primary (`require('cluster')`,
// `cluster.fork()`, ...) runs on rcluster's primary, unchanged. See lib/primary/register.js.
//
// Only in a primary. The workers that primary forks inherit its execArgv, and so this preload:
// there it does nothing, and `require('cluster')` is Node's worker side, as it must be. By now
// Node's bootstrap has deleted NODE_UNIQUE_ID from a worker's environment, but it has loaded
// `node:cluster` for the worker first, so that module knows the role.
if (require('node:cluster').isPrimary) require('./lib/primary/register').install();
