'use strict';
// rcluster with the schedule given as argv[2]; prints {pid, workers} once ready.
const path = require('node:path');
const rcluster = require('../..');

const cluster = rcluster.start({ exec: path.join(__dirname, '..', 'app.js'), workers: 2, schedule: process.argv[2] });
cluster.ready.then(() => {
  process.stdout.write(`${JSON.stringify({ pid: process.pid, workers: Object.values(cluster.workers).map((w) => w.pid) })}\n`);
});
process.on('SIGTERM', () => cluster.stop());
