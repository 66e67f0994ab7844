'use strict';

// HTTP throughput: rcluster (shared, reuseport) against Node's cluster (SCHED_RR, SCHED_NONE),
// hello world, 2 workers, in one run. For each: req/s with a new connection per request and
// with keep-alive, each worker's share of the requests, the primary's CPU time (user + system,
// from /proc in clock ticks of 10 ms), and its RSS.
//
//   node bench/run.js            (BENCH_SECONDS=10 per measurement, BENCH_CONNECTIONS=50)

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cpuSeconds, rssMiB, startPrimary, stopPrimary, wrk, requireWrk } = require('./lib');

const SECONDS = Number(process.env.BENCH_SECONDS || 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS || 50);
const PORT = Number(process.env.BENCH_PORT || 8123);

const contenders = [
  { name: 'rcluster shared', args: [path.join(__dirname, 'primaries', 'rcluster.js'), 'shared'], env: {} },
  { name: 'rcluster reuseport', args: [path.join(__dirname, 'primaries', 'rcluster.js'), 'reuseport'], env: {} },
  { name: 'node cluster SCHED_RR', args: [path.join(__dirname, 'primaries', 'node-cluster.js')], env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } },
  { name: 'node cluster SCHED_NONE', args: [path.join(__dirname, 'primaries', 'node-cluster.js')], env: { NODE_CLUSTER_SCHED_POLICY: 'none' } },
];

const modes = [
  { name: 'conn-per-request', close: true },
  { name: 'keep-alive', close: false },
];

function readServed(dir, pids) {
  return pids.map((pid) => {
    try {
      return Number(fs.readFileSync(path.join(dir, String(pid)), 'utf8')) || 0;
    } catch {
      return 0;
    }
  });
}

async function until(check, ms) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

async function measure(contender, mode) {
  const statsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-bench-'));
  const { child, info } = await startPrimary(contender.args, { ...contender.env, PORT: String(PORT), STATS_DIR: statsDir });
  try {
    // Warm up (JIT, accept queues), then measure.
    await wrk({ port: PORT, seconds: 2, connections: CONNECTIONS, threads: 1, close: mode.close });
    await new Promise((r) => setTimeout(r, 300));
    const servedBefore = readServed(statsDir, info.workers);
    const cpuBefore = cpuSeconds(info.pid);
    const result = await wrk({ port: PORT, seconds: SECONDS, connections: CONNECTIONS, threads: 1, close: mode.close });
    const cpu = cpuSeconds(info.pid) - cpuBefore;
    const rss = rssMiB(info.pid);
    // Workers flush their counters every 200 ms.
    const target = servedBefore.reduce((a, b) => a + b, 0) + result.requests;
    await until(() => readServed(statsDir, info.workers).reduce((a, b) => a + b, 0) >= target, 1000);
    const served = readServed(statsDir, info.workers).map((n, i) => n - servedBefore[i]);
    const total = served.reduce((a, b) => a + b, 0) || 1;
    return {
      ...result,
      shares: served.map((n) => n / total),
      cpuMs: cpu * 1000,
      cpuMsPer1000: (cpu * 1000 * 1000) / Math.max(result.requests, 1),
      rss,
    };
  } finally {
    await stopPrimary(child);
    fs.rmSync(statsDir, { recursive: true, force: true });
  }
}

function pct(x) {
  return `${(x * 100).toFixed(0)}%`;
}

async function main() {
  requireWrk();
  console.log(`hello-world HTTP, 2 workers, wrk -t1 -c${CONNECTIONS} -d${SECONDS}s; ${os.cpus().length} CPUs (${os.cpus()[0].model}), Node ${process.version}\n`);
  const results = {};
  for (const mode of modes) {
    for (const contender of contenders) {
      const r = await measure(contender, mode);
      results[`${contender.name}/${mode.name}`] = r;
      console.log(
        `${mode.name.padEnd(17)} ${contender.name.padEnd(24)} ${r.rps.toFixed(0).padStart(7)} req/s  errors ${String(r.errors).padStart(4)}  p99 ${String(r.p99).padStart(8)}  ` +
          `shares ${r.shares.map(pct).join('/').padEnd(8)}  primary CPU ${r.cpuMsPer1000.toFixed(2).padStart(6)} ms/1000 req (${r.cpuMs.toFixed(0)} ms in all)  RSS ${r.rss.toFixed(1)} MiB`,
      );
    }
    const base = results[`node cluster SCHED_RR/${mode.name}`].rps;
    const best = Math.max(results[`node cluster SCHED_RR/${mode.name}`].rps, results[`node cluster SCHED_NONE/${mode.name}`].rps);
    for (const name of ['rcluster shared', 'rcluster reuseport']) {
      const rps = results[`${name}/${mode.name}`].rps;
      console.log(`  ${name}: ${(rps / base).toFixed(2)}x Node's default (SCHED_RR), ${(rps / best).toFixed(2)}x Node's best`);
    }
    console.log('');
  }
  const out = path.join(__dirname, 'results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, `http-${Date.now()}.json`), JSON.stringify({ node: process.version, seconds: SECONDS, connections: CONNECTIONS, results }, null, 2));
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
