'use strict';

// Does option `redis` slow the local messenger down? One rcluster host (a primary with 2 app
// workers; options `redis`, `namespace`, `hostId`, and no other host) against the same cluster
// without `redis`, both running side by side, the runs alternating (the order swaps each run):
//   broadcast: worker 1 broadcasts BENCH_LOCAL_COUNT strings of BENCH_LOCAL_SIZE bytes, yielding
//     to its event loop every 256 sends (as a real sender does); the figure is deliveries per
//     second at the 2 workers (the sender counts too: a broadcast reaches its sender), from the
//     first send to the last delivery. With `redis` set, each broadcast is also written to Redis
//     for hosts that may join. Before the runs, each side broadcasts a tenth as many, untimed;
//   map: worker 1 makes BENCH_MAP_COUNT sequential `messenger.map` calls (2 answers), after
//     BENCH_MAP_WARMUP untimed ones, timing each (performance.now()); the figures are p50 and p99.
// Each run also shows the CPU seconds the primary, the 2 workers and redis-server used, from
// /proc. Redis listens on TCP 127.0.0.1, as it would in production.
//
//   node bench/hosts-local.js     (BENCH_LOCAL_COUNT=200000, BENCH_LOCAL_SIZE=256,
//                                  BENCH_MAP_COUNT=2000, BENCH_MAP_WARMUP=200, BENCH_RUNS=3)
//
// Needs redis-server (apt-get install redis-server).

const { cpuSeconds, median, percentile, rssMiB, start, startRedis, stopAll, waitForMessage: waitFor } = require('./lib');

const COUNT = Number(process.env.BENCH_LOCAL_COUNT || 200_000);
const SIZE = Number(process.env.BENCH_LOCAL_SIZE || 256);
const MAP_COUNT = Number(process.env.BENCH_MAP_COUNT || 2000);
const MAP_WARMUP = Number(process.env.BENCH_MAP_WARMUP || 200);
const RUNS = Number(process.env.BENCH_RUNS || 3);
const YIELD_EVERY = 256;
const TIMEOUT = 30_000;
const now = () => performance.timeOrigin + performance.now();

// ---- the processes (this file run with a role) ----

/** A host: a primary with 2 app workers (this file, role 'worker'), with `redis` if given. */
function host() {
  const rcluster = require('..');
  const redis = process.env.BENCH_REDIS;
  const cluster = rcluster.start({
    exec: __filename,
    args: ['worker'],
    workers: 2,
    readiness: 'message',
    control: false,
    ...(redis && { redis, namespace: process.env.BENCH_NAMESPACE, hostId: process.env.BENCH_HOST }),
  });
  for (const action of ['counted', 'sent', 'times', 'failed']) {
    cluster.messenger.on(action, (data) => process.send({ [action]: data }));
  }
  cluster.on('warning', (w) => console.error(`bench (${redis ? 'with' : 'without'} redis): warning ${w.code}: ${w.message}`));
  cluster.ready.then(() => process.send({ ready: true, workers: Object.values(cluster.workers).map((w) => w.pid) }));
  process.on('message', async (message) => {
    if (message.broadcast) {
      // Both workers expect this many before worker 1 sends the first.
      await cluster.messenger.map('expect', message.broadcast);
      cluster.messenger.sendTo(1, 'send', message.broadcast);
    }
    if (message.map) cluster.messenger.sendTo(1, 'run-map');
  });
  // The driver gone (even SIGKILLed): no host is left behind.
  process.on('disconnect', () => process.exit(1));
}

/** An app worker: counts broadcasts; worker 1, when told, broadcasts or times maps. */
function worker() {
  const rcluster = require('..');
  const { messenger } = rcluster;
  let expected = 0;
  let count = 0;
  messenger.on('expect', (n) => {
    expected = n;
    count = 0;
    return true;
  });
  messenger.on('b', () => {
    count += 1;
    if (count === expected) messenger.sendTo('primary', 'counted', now());
  });
  messenger.on('who', (data) => data);
  messenger.on('error', (error) => {
    console.error(`bench: ${error.code}: ${error.message}`);
    process.exit(1);
  });
  messenger.on('send', async (n) => {
    const data = 'x'.repeat(SIZE);
    const started = now();
    for (let i = 1; i <= n; i++) {
      try {
        messenger.broadcast('b', data);
      } catch (error) {
        if (error.code !== 'ERR_RCLUSTER_QUEUE_FULL') throw error;
        await messenger.drained();
        i -= 1;
        continue;
      }
      if (i % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    messenger.sendTo('primary', 'sent', started);
  });
  messenger.on('run-map', async () => {
    try {
      const call = async (i) => {
        const answers = await messenger.map('who', { i }, { timeout: TIMEOUT });
        if (!Array.isArray(answers) || answers.length !== 2 || answers.some((x) => x?.i !== i)) {
          throw new Error(`2 answers expected, got ${JSON.stringify(answers)}`);
        }
      };
      for (let i = 0; i < MAP_WARMUP; i++) await call(i);
      const times = new Array(MAP_COUNT);
      for (let i = 0; i < MAP_COUNT; i++) {
        const t0 = performance.now();
        await call(i);
        times[i] = (performance.now() - t0) * 1000;
      }
      messenger.sendTo('primary', 'times', times);
    } catch (error) {
      messenger.sendTo('primary', 'failed', `${error.code || error.name}: ${error.message}`);
    }
  });
  rcluster.ready();
}

// ---- the driver ----

/** CPU seconds so far of a side's primary, its workers (together) and redis-server. */
function cpu(side, redis) {
  return { primary: cpuSeconds(side.child.pid), workers: side.workers.reduce((sum, pid) => sum + cpuSeconds(pid), 0), redis: cpuSeconds(redis.pid) };
}
const cpuSince = (before, after) => Object.fromEntries(Object.keys(before).map((k) => [k, after[k] - before[k]]));

/** `n` broadcasts from worker 1 of `side`: deliveries per second at its 2 workers. */
async function broadcastRun(side, n) {
  const { child } = side;
  child.messages = [];
  child.send({ broadcast: n });
  const { sent } = await waitFor(child, (m) => m.sent, `${side.name}: the sender`, 300_000);
  const deadline = Date.now() + 300_000;
  while (child.messages.filter((m) => m.counted).length < 2) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${side.name}: the primary exited`);
    if (Date.now() > deadline) throw new Error(`${side.name}: the workers did not count every broadcast`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const last = Math.max(...child.messages.filter((m) => m.counted).map((m) => m.counted));
  return (2 * n) / ((last - sent) / 1000);
}

/** MAP_COUNT maps from worker 1 of `side`: p50, p99 and max in microseconds. */
async function mapRun(side) {
  const { child } = side;
  child.messages = [];
  child.send({ map: true });
  const m = await waitFor(child, (x) => x.times || x.failed, `${side.name}: maps`, 300_000);
  if (m.failed) throw new Error(`${side.name}: ${m.failed}`);
  const sorted = [...m.times].sort((x, y) => x - y);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1] };
}

async function main() {
  const { child: redis, url } = await startRedis();
  const startSide = async (name, env) => {
    const child = start(process.execPath, [__filename, 'host'], env);
    const { workers } = await waitFor(child, (m) => m.ready, `${name}: ready`);
    return { name, child, workers };
  };
  const without = await startSide('without redis', {});
  const withRedis = await startSide('with redis', { BENCH_REDIS: url, BENCH_NAMESPACE: 'bench-local', BENCH_HOST: 'a' });

  for (const side of [without, withRedis]) await broadcastRun(side, Math.ceil(COUNT / 10));

  const rate = (x) => `${Math.round(x).toLocaleString('en-US')}/s`.padStart(11);
  const seconds = (c) => `cpu s: primary ${c.primary.toFixed(2)}, workers ${c.workers.toFixed(2)}, redis ${c.redis.toFixed(2)}`;
  const us = (x) => `${Math.round(x)}`.padStart(6);
  const results = { without: { broadcast: [], map: [] }, with: { broadcast: [], map: [] } };
  const key = (side) => (side === withRedis ? 'with' : 'without');
  for (let run = 0; run < RUNS; run++) {
    const order = run % 2 === 0 ? [without, withRedis] : [withRedis, without];
    console.log(`run ${run + 1}`);
    for (const side of order) {
      const before = cpu(side, redis);
      const r = await broadcastRun(side, COUNT);
      results[key(side)].broadcast.push(r);
      console.log(`  broadcast  ${side.name.padEnd(14)} ${rate(r)}    ${seconds(cpuSince(before, cpu(side, redis)))}; redis rss ${rssMiB(redis.pid).toFixed(0)} MiB`);
    }
    for (const side of order) {
      const before = cpu(side, redis);
      const r = await mapRun(side);
      results[key(side)].map.push(r);
      console.log(`  map        ${side.name.padEnd(14)} p50 ${us(r.p50)} us  p99 ${us(r.p99)} us  max ${us(r.max)} us    ${seconds(cpuSince(before, cpu(side, redis)))}`);
    }
  }

  const med = (k) => ({
    broadcast: median(results[k].broadcast),
    p50: median(results[k].map.map((r) => r.p50)),
    p99: median(results[k].map.map((r) => r.p99)),
  });
  const a = med('without');
  const b = med('with');
  console.log(`\none host, 2 workers; ${COUNT} broadcasts of ${SIZE} B from worker 1 (deliveries/s at both workers), ${MAP_COUNT} sequential maps from worker 1 (after ${MAP_WARMUP} untimed); median of ${RUNS} runs, Node ${process.version}`);
  console.log(`without redis  broadcast ${rate(a.broadcast)}   map p50 ${us(a.p50)} us  p99 ${us(a.p99)} us`);
  console.log(`with redis     broadcast ${rate(b.broadcast)}   map p50 ${us(b.p50)} us  p99 ${us(b.p99)} us`);
  console.log(`ratio with / without: broadcast ${(b.broadcast / a.broadcast).toFixed(2)}x  map p50 ${(b.p50 / a.p50).toFixed(2)}x  p99 ${(b.p99 / a.p99).toFixed(2)}x`);
}

const role = process.argv[2];
if (role === 'host') host();
else if (role === 'worker') worker();
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
