'use strict';

// An ordinary Node HTTP server: no rcluster code in it. Run it as a cluster with
//   npx rcluster start examples/hello.js -i max
const http = require('node:http');
const cluster = require('node:cluster');

const port = Number(process.env.PORT || 3000);

http
  .createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from worker ${cluster.isWorker ? cluster.worker.id : '-'} (pid ${process.pid})\n`);
  })
  .listen(port);
