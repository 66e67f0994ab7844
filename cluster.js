'use strict';

// `require('rcluster/cluster')`: Node's cluster API. In a worker it is Node's own module (the
// worker side speaks to rcluster's primary unchanged); in a primary it is rcluster's.
const nodeCluster = require('node:cluster');

module.exports = nodeCluster.isWorker ? nodeCluster : require('./lib/primary/node-cluster');
