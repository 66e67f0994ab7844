'use strict';
// The app the reload bench deploys again and again: an ordinary hello world, no rcluster code.
const http = require('node:http');

http
  .createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('hello world\n');
  })
  .listen(Number(process.env.PORT));
