'use strict';
// The benchmarked app: hello world over HTTP. Each worker counts what it served into
// STATS_DIR/<pid>, so the bench can tell how evenly the requests were spread.
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

let served = 0;
const statsFile = path.join(process.env.STATS_DIR, String(process.pid));
const flush = () => fs.writeFileSync(statsFile, String(served));
setInterval(flush, 200).unref();
process.on('disconnect', flush);

http
  .createServer((req, res) => {
    served += 1;
    res.setHeader('content-type', 'text/plain');
    res.end('hello world\n');
  })
  .listen(Number(process.env.PORT));
