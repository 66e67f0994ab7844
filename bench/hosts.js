'use strict';

// Broadcast across hosts on one Redis, side by side in one run: rcluster (option `redis`: two
// host primaries with 2 workers each) against Socket.IO's Redis adapter (`serverSideEmit`, two
// "hosts" of 2 Socket.IO server processes each, the way a Socket.IO app scales out). One process
// of host a sends BENCH_HOSTS_COUNT messages of BENCH_HOSTS_SIZE bytes, yielding to its event
// loop every 256 sends (as a real sender does); the figure is deliveries per second at host b's
// two processes, from the first send to the last delivery there. Redis listens on TCP 127.0.0.1,
// as both would in production.
//
//   node bench/hosts.js           (BENCH_HOSTS_COUNT=100000, BENCH_HOSTS_SIZE=256, BENCH_RUNS=3)
//
// Needs redis-server (apt-get install redis-server).

const path = require('node:path');
const { median, start, startRedis, stopAll, waitForMessage: waitFor } = require('./lib');

const COUNT = Number(process.env.BENCH_HOSTS_COUNT || 100_000);
const SIZE = Number(process.env.BENCH_HOSTS_SIZE || 256);
const RUNS = Number(process.env.BENCH_RUNS || 3);
const YIELD_EVERY = 256;
const now = () => performance.timeOrigin + performance.now();
const payload = () => 'x'.repeat(SIZE);

// ---- the processes of each side (this file run with a role) ----

/** An rcluster host: a primary whose 2 workers (hosts-worker.js) send or count. */
function rclusterHost() {
  const rcluster = require('..');
  const cluster = rcluster.start({
    exec: path.join(__dirname, 'hosts-worker.js'),
    workers: 2,
    readiness: 'message',
    control: false,
    redis: process.env.BENCH_REDIS,
    namespace: process.env.BENCH_NAMESPACE,
    hostId: process.env.BENCH_HOST,
    env: { BENCH_HOSTS_COUNT: String(COUNT), BENCH_HOSTS_SIZE: String(SIZE) },
  });
  cluster.on('host-join', ({ host }) => process.send({ joined: host }));
  cluster.messenger.on('counted', (at) => process.send({ counted: at }));
  cluster.messenger.on('sent', (at) => process.send({ sent: at }));
  cluster.ready.then(() => process.send({ ready: true }));
  process.on('message', (message) => {
    if (message.send) cluster.messenger.sendTo(1, 'send', message.send);
    if (message.reset) cluster.messenger.broadcast('reset');
  });
}

/** One Socket.IO server process with the Redis adapter: sends or counts `serverSideEmit`s. */
async function socketIoServer() {
  const { Server } = require('socket.io');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const { createClient } = require('redis');
  const pub = createClient({ url: process.env.BENCH_REDIS });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server();
  io.adapter(createAdapter(pub, sub, { key: process.env.BENCH_NAMESPACE }));
  let count = 0;
  io.on('b', () => {
    count += 1;
    if (count === COUNT) process.send({ counted: now() });
  });
  process.on('message', async (message) => {
    if (message.reset) count = 0;
    if (!message.send) return;
    const data = payload();
    const started = now();
    for (let i = 1; i <= COUNT; i++) {
      io.serverSideEmit('b', data);
      if (i % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    process.send({ sent: started });
  });
  // The adapter subscribes as it is made; one round trip on each connection makes sure of it.
  await Promise.all([pub.ping(), sub.ping()]);
  process.send({ ready: true });
}

// ---- the driver ----

/** One timed run: the sender sends, each receiver says when it has counted them all. */
async function timedRun(sender, receivers) {
  for (const p of [sender, ...receivers]) p.messages = [];
  sender.send({ send: true });
  const { sent } = await waitFor(sender, (m) => m.sent, 'the sender', 120_000);
  const ends = [];
  for (const r of receivers) ends.push((await waitFor(r, (m) => m.counted, 'a receiver', 120_000)).counted);
  const seconds = (Math.max(...ends) - sent) / 1000;
  return (COUNT * receivers.length) / seconds;
}

async function main() {
  const { url } = await startRedis();

  // rcluster: hosts a and b, 2 workers each.
  const rcEnv = { BENCH_REDIS: url, BENCH_NAMESPACE: 'bench-rc', BENCH_HOSTS_COUNT: String(COUNT), BENCH_HOSTS_SIZE: String(SIZE) };
  const a = start(process.execPath, [__filename, 'rcluster-host'], { ...rcEnv, BENCH_HOST: 'a' });
  const b = start(process.execPath, [__filename, 'rcluster-host'], { ...rcEnv, BENCH_HOST: 'b' });
  await Promise.all([waitFor(a, (m) => m.ready, 'host a'), waitFor(b, (m) => m.ready, 'host b')]);
  await waitFor(a, (m) => m.joined === 'b', 'a sees b');
  await waitFor(b, (m) => m.joined === 'a', 'b sees a');

  // Socket.IO: 4 server processes, "host a" = a1, a2 and "host b" = b1, b2.
  const ioEnv = { BENCH_REDIS: url, BENCH_NAMESPACE: 'bench-io', BENCH_HOSTS_COUNT: String(COUNT), BENCH_HOSTS_SIZE: String(SIZE) };
  const io = ['a1', 'a2', 'b1', 'b2'].map(() => start(process.execPath, [__filename, 'socket.io-server'], ioEnv));
  await Promise.all(io.map((p, i) => waitFor(p, (m) => m.ready, `socket.io server ${i}`)));

  const results = { rcluster: [], 'socket.io': [] };
  for (let run = 0; run < RUNS; run++) {
    // rcluster's receivers at host b report through b's primary; the sender is a's worker 1.
    results.rcluster.push(await timedRunRcluster(a, b));
    results['socket.io'].push(await timedRun(io[0], [io[2], io[3]]));
    for (const p of io) p.send({ reset: true });
  }
  const rc = median(results.rcluster);
  const sio = median(results['socket.io']);
  console.log(`${COUNT} broadcasts of ${SIZE} B from one process of host a; deliveries/s at host b's 2 processes; median of ${RUNS} runs, Node ${process.version}`);
  console.log(`rcluster (redis, 2 hosts x 2 workers)         ${Math.round(rc).toLocaleString('en-US').padStart(9)}/s  (${results.rcluster.map((x) => Math.round(x)).join(', ')})`);
  console.log(`socket.io redis-adapter serverSideEmit (2 x 2) ${Math.round(sio).toLocaleString('en-US').padStart(9)}/s  (${results['socket.io'].map((x) => Math.round(x)).join(', ')})`);
  console.log(`ratio ${(rc / sio).toFixed(1)}x`);
}

/** rcluster's run: a's worker 1 broadcasts; b's primary forwards each of its workers' counts. */
async function timedRunRcluster(a, b) {
  a.messages = [];
  b.messages = [];
  b.send({ reset: true });
  a.send({ reset: true });
  await new Promise((resolve) => setTimeout(resolve, 200));
  b.messages = [];
  a.send({ send: true });
  const { sent } = await waitFor(a, (m) => m.sent, 'the sender', 120_000);
  const deadline = Date.now() + 120_000;
  while (b.messages.filter((m) => m.counted).length < 2) {
    if (Date.now() > deadline) throw new Error('host b did not count every message');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const last = Math.max(...b.messages.filter((m) => m.counted).map((m) => m.counted));
  return (COUNT * 2) / ((last - sent) / 1000);
}

const role = process.argv[2];
if (role === 'rcluster-host') rclusterHost();
else if (role === 'socket.io-server') socketIoServer();
else {
  main()
    .catch((error) => {
      console.error(error);
      process.exitCode = 1;
    })
    .finally(stopAll);
}
