'use strict';
// Node's own cluster (policy from NODE_CLUSTER_SCHED_POLICY); prints {pid, workers} once listening.
const cluster = require('node:cluster');
const path = require('node:path');

cluster.setupPrimary({ exec: path.join(__dirname, '..', 'app.js') });
const workers = [cluster.fork(), cluster.fork()];
let listening = 0;
cluster.on('listening', () => {
  listening += 1;
  if (listening === 2) process.stdout.write(`${JSON.stringify({ pid: process.pid, workers: workers.map((w) => w.process.pid) })}\n`);
});
process.on('SIGTERM', () => cluster.disconnect());
