'use strict';

// Round trip of a "map" across hosts on one Redis, side by side in one run: rcluster (option
// `redis`: two host primaries with 2 workers each; `messenger.map('who', data)` from one app
// worker of host a, answered by every app worker of both hosts, 4 answers, the caller's
// included) against Socket.IO's Redis adapter (two "hosts" of 2 Socket.IO server processes each;
// `io.serverSideEmitWithAck('who', data)` from one process of host a, answered by the 3 others,
// which is how a Socket.IO app asks every server and gathers the answers). Each side makes
// BENCH_MAP_COUNT sequential round trips, after BENCH_MAP_WARMUP that are not timed, timing each
// in the calling process (performance.now()); the figures are p50 and p99 of those times. The
// runs alternate rcluster, Socket.IO. Redis listens on TCP 127.0.0.1, as both would in
// production.
//
//   node bench/hosts-map.js       (BENCH_MAP_COUNT=2000, BENCH_MAP_WARMUP=200, BENCH_RUNS=3)
//
// Needs redis-server (apt-get install redis-server).

const { median, percentile, start, startRedis, stopAll, waitForMessage: waitFor } = require('./lib');

const COUNT = Number(process.env.BENCH_MAP_COUNT || 2000);
const WARMUP = Number(process.env.BENCH_MAP_WARMUP || 200);
const RUNS = Number(process.env.BENCH_RUNS || 3);
// How long either side waits for its answers before it fails the call: rcluster's default for a
// map, given to the adapter too (its own default is 5 s). A call that fails ends the bench.
const TIMEOUT = 30_000;
const EXPECTED = { rcluster: 4, 'socket.io': 3 };
const smallData = (i) => ({ i, from: 'a' });

/** Times `call` COUNT times after WARMUP untimed calls; `check` sees each answer. Microseconds. */
async function roundTrips(call, check) {
  for (let i = 0; i < WARMUP; i++) {
    const data = smallData(i);
    check(await call(data), data);
  }
  const times = new Array(COUNT);
  for (let i = 0; i < COUNT; i++) {
    const data = smallData(i);
    const t0 = performance.now();
    const answers = await call(data);
    times[i] = (performance.now() - t0) * 1000;
    check(answers, data);
  }
  return times;
}

function checker(side) {
  return (answers, data) => {
    if (!Array.isArray(answers) || answers.length !== EXPECTED[side] || answers.some((x) => x?.i !== data.i)) {
      throw new Error(`${side}: ${EXPECTED[side]} answers expected, got ${JSON.stringify(answers)}`);
    }
  };
}

// ---- the processes of each side (this file run with a role) ----

/** An rcluster host: a primary whose 2 workers (this file, role 'rcluster-worker') answer 'who'. */
function rclusterHost() {
  const rcluster = require('..');
  const cluster = rcluster.start({
    exec: __filename,
    args: ['rcluster-worker'],
    workers: 2,
    readiness: 'message',
    control: false,
    redis: process.env.BENCH_REDIS,
    namespace: process.env.BENCH_NAMESPACE,
    hostId: process.env.BENCH_HOST,
  });
  cluster.on('host-join', ({ host }) => process.send({ joined: host }));
  cluster.messenger.on('times', (times) => process.send({ times }));
  cluster.messenger.on('failed', (message) => process.send({ failed: message }));
  cluster.ready.then(() => process.send({ ready: true }));
  process.on('message', (message) => {
    if (message.run) cluster.messenger.sendTo(1, 'run');
  });
  // The driver gone (even SIGKILLed): no host is left behind.
  process.on('disconnect', () => process.exit(1));
}

/** An app worker of an rcluster host: answers 'who'; the one told to run times the maps. */
function rclusterWorker() {
  const rcluster = require('..');
  const { messenger } = rcluster;
  messenger.on('who', (data) => data);
  messenger.on('error', (error) => {
    console.error(`bench: ${error.code}: ${error.message}`);
    process.exit(1);
  });
  messenger.on('run', async () => {
    try {
      const times = await roundTrips((data) => messenger.map('who', data, { timeout: TIMEOUT }), checker('rcluster'));
      messenger.sendTo('primary', 'times', times);
    } catch (error) {
      messenger.sendTo('primary', 'failed', `${error.code || error.name}: ${error.message}`);
    }
  });
  rcluster.ready();
}

/** One Socket.IO server process with the Redis adapter: answers 'who', or times the asks. */
async function socketIoServer() {
  const { Server } = require('socket.io');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const { createClient } = require('redis');
  const pub = createClient({ url: process.env.BENCH_REDIS });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server();
  io.adapter(createAdapter(pub, sub, { key: process.env.BENCH_NAMESPACE, requestsTimeout: TIMEOUT }));
  io.on('who', (data, ack) => ack(data));
  process.on('message', async (message) => {
    if (!message.run) return;
    try {
      const times = await roundTrips((data) => io.serverSideEmitWithAck('who', data), checker('socket.io'));
      process.send({ times });
    } catch (error) {
      process.send({ failed: `${error.name}: ${error.message}` });
    }
  });
  process.on('disconnect', () => process.exit(1));
  // The adapter subscribes as it is made; one round trip on each connection makes sure of it.
  await Promise.all([pub.ping(), sub.ping()]);
  process.send({ ready: true });
}

// ---- the driver ----

/** One timed run: the caller (a process, or a primary whose worker 1 calls) reports its times. */
async function timedRun(caller, what) {
  caller.messages = [];
  caller.send({ run: true });
  const m = await waitFor(caller, (x) => x.times || x.failed, what, 300_000);
  if (m.failed) throw new Error(`${what}: ${m.failed}`);
  return summary(m.times);
}

function summary(times) {
  const sorted = [...times].sort((x, y) => x - y);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1] };
}

async function main() {
  const { url } = await startRedis();

  // rcluster: hosts a and b, 2 workers each.
  const rcEnv = { BENCH_REDIS: url, BENCH_NAMESPACE: 'bench-rc-map' };
  const a = start(process.execPath, [__filename, 'rcluster-host'], { ...rcEnv, BENCH_HOST: 'a' });
  const b = start(process.execPath, [__filename, 'rcluster-host'], { ...rcEnv, BENCH_HOST: 'b' });
  await Promise.all([waitFor(a, (m) => m.ready, 'host a'), waitFor(b, (m) => m.ready, 'host b')]);
  await waitFor(a, (m) => m.joined === 'b', 'a sees b');
  await waitFor(b, (m) => m.joined === 'a', 'b sees a');

  // Socket.IO: 4 server processes, "host a" = a1, a2 and "host b" = b1, b2; a1 asks.
  const ioEnv = { BENCH_REDIS: url, BENCH_NAMESPACE: 'bench-io-map' };
  const io = ['a1', 'a2', 'b1', 'b2'].map(() => start(process.execPath, [__filename, 'socket.io-server'], ioEnv));
  await Promise.all(io.map((p, i) => waitFor(p, (m) => m.ready, `socket.io server ${i}`)));

  const us = (x) => `${Math.round(x)}`.padStart(6);
  const line = (name, r) => `  ${name.padEnd(10)} p50 ${us(r.p50)} us  p99 ${us(r.p99)} us  max ${us(r.max)} us`;
  const results = { rcluster: [], 'socket.io': [] };
  for (let run = 0; run < RUNS; run++) {
    results.rcluster.push(await timedRun(a, 'rcluster (host a, worker 1)'));
    results['socket.io'].push(await timedRun(io[0], 'socket.io (a1)'));
    console.log(`run ${run + 1}`);
    console.log(line('rcluster', results.rcluster[run]));
    console.log(line('socket.io', results['socket.io'][run]));
  }
  const med = (side, key) => median(results[side].map((r) => r[key]));
  const rc = { p50: med('rcluster', 'p50'), p99: med('rcluster', 'p99') };
  const sio = { p50: med('socket.io', 'p50'), p99: med('socket.io', 'p99') };
  console.log(`${COUNT} sequential round trips (after ${WARMUP} untimed) from one process of host a, 2 hosts x 2 processes, one Redis on TCP; median of ${RUNS} runs, Node ${process.version}`);
  console.log(`rcluster messenger.map (4 answers)                     p50 ${us(rc.p50)} us  p99 ${us(rc.p99)} us`);
  console.log(`socket.io redis-adapter serverSideEmitWithAck (3 acks) p50 ${us(sio.p50)} us  p99 ${us(sio.p99)} us`);
  console.log(`ratio socket.io / rcluster: p50 ${(sio.p50 / rc.p50).toFixed(2)}x  p99 ${(sio.p99 / rc.p99).toFixed(2)}x`);
}

const role = process.argv[2];
if (role === 'rcluster-host') rclusterHost();
else if (role === 'rcluster-worker') rclusterWorker();
else if (role === 'socket.io-server') socketIoServer();
else {
  // Interrupted: what was started goes too.
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      stopAll();
      process.exit(1);
    });
  }
  main()
    .catch((error) => {
      console.error(error);
      process.exitCode = 1;
    })
    .finally(stopAll);
}
