'use strict';

// The floor under any messenger round trip on this machine: two Node processes bounce 32 bytes
// over their stdio sockets (socketpairs, read on Node's event loop), one at a time, with no
// framing or serialization. A messenger round trip through the primary crosses twice as many
// process boundaries.
//
//   node bench/socket-round-trip.js

const { spawn } = require('node:child_process');

const COUNT = 20_000;

if (process.argv[2] === 'echo') {
  process.stdin.on('data', (chunk) => process.stdout.write(chunk));
} else {
  const child = spawn(process.execPath, [__filename, 'echo'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const message = Buffer.alloc(32, 97);
  const latencies = [];
  let start = 0n;
  const next = () => {
    start = process.hrtime.bigint();
    child.stdin.write(message);
  };
  child.stdout.on('data', () => {
    latencies.push(Number(process.hrtime.bigint() - start) / 1e3);
    if (latencies.length < COUNT) return next();
    child.kill();
    latencies.sort((a, b) => a - b);
    const at = (q) => latencies[Math.floor(q * latencies.length)].toFixed(1);
    console.log(`socket round trip between two Node processes, ${COUNT} times: p50 ${at(0.5)} µs, p99 ${at(0.99)} µs (Node ${process.version})`);
  });
  next();
}
