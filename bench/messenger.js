'use strict';

// Messenger throughput and latency: rcluster's messenger against the process.send relay that
// ThinkJS and Egg.js use (worker -> primary -> every worker), written plainly and as
// think-cluster's own messenger, in one run. (egg-cluster's messenger runs only inside an Egg
// application's master, agent and app workers, so it is not in this bench.)
//
//   node bench/messenger.js                 2 workers, every scenario
//   node bench/messenger.js --workers 8     the same with 8 workers
//   node bench/messenger.js --hog           with a busy-loop process pinned to CPU 0 beside them
//   node bench/messenger.js --only broadcast-string,map
//                                           some scenarios: broadcast-string, broadcast-buffer,
//                                           map (one at a time), map-in-flight (64 at a time)
//   BENCH_SCALE=2 multiplies the message counts
//
// Every contender sends a tenth of each scenario first, not measured: JIT warm-up, as a
// long-running process has had. Senders yield to their event loop every 256 sends.

const path = require('node:path');
const os = require('node:os');
const { spawn } = require('node:child_process');

/** `--name value`, or `fallback` when the option is not given; an option that needs a value and has none stops the bench. */
function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = process.argv[at + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`--${name} needs a value`);
  return value;
}

const workers = Number(option('workers', '2'));
if (!Number.isInteger(workers) || workers < 2) throw new Error('--workers: a whole number, 2 or more');
const hog = process.argv.includes('--hog');
const only = option('only', 'broadcast-string,broadcast-buffer,map,map-in-flight').split(',');
const scale = Number(process.env.BENCH_SCALE || 1);
// Each run lasts seconds for the slowest contender, so that start-up does not decide the
// figures. (The relay turns a Buffer into a JSON array of numbers: Buffer runs are shorter, or
// the relay would take minutes.) Counts are per sender: deliveries are `workers` times as many.
// (20,000 256 B Buffers lasted a tenth of a second for rcluster: 378-493k deliveries/s from run
// to run, with 2 workers, and 165-184k with 8.)
const counts = {
  string: { 256: 200_000, [64 * 1024]: 4000, [1024 * 1024]: 200 },
  buffer: { 256: 100_000, [64 * 1024]: 500, [1024 * 1024]: 30 },
};
const perWorker = (count) => Math.max(1, Math.round((count * scale * 2) / workers));
const scenarios = [];
for (const binary of [false, true]) {
  if (!only.includes(binary ? 'broadcast-buffer' : 'broadcast-string')) continue;
  for (const size of [256, 64 * 1024, 1024 * 1024]) {
    scenarios.push({ kind: 'broadcast', size, count: perWorker(counts[binary ? 'buffer' : 'string'][size]), binary });
  }
}
if (only.includes('map')) scenarios.push({ kind: 'map', count: 2000 * scale });
// In flight, a second of maps for the fastest: 20,000 (a quarter of a second) measured its
// start-up, 72-91k maps/s against 95-126k over 100,000 (the relay: 31-36k against 35-39k).
if (only.includes('map-in-flight')) scenarios.push({ kind: 'map', count: 100_000 * scale, inFlight: 64 });

function run(script, ...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'primaries', script), JSON.stringify({ workers, scenarios }), ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('['));
      if (!line) return reject(new Error(`${script} exited with ${code}: ${out}`));
      resolve(JSON.parse(line));
    });
  });
}

/** A process that keeps CPU 0 busy for as long as the bench runs. */
function startHog() {
  const child = spawn('taskset', ['-c', '0', process.execPath, '-e', 'for (;;) {}'], { stdio: 'ignore' });
  child.on('error', (error) => {
    console.error(`--hog needs taskset (util-linux): ${error.message}`);
    process.exit(1);
  });
  const stop = () => child.kill('SIGKILL');
  process.on('exit', stop);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));
  return stop;
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function label(s) {
  const size = s.size >= 1 << 20 ? `${s.size >> 20} MiB` : s.size >= 1024 ? `${s.size >> 10} KiB` : `${s.size} B`;
  return `broadcast ${size.padStart(6)} ${s.binary ? 'Buffer' : 'string'}`;
}

async function main() {
  const cpus = os.cpus();
  console.log(`messenger, ${workers} workers${hog ? ', a busy loop pinned to CPU 0' : ''}; ${cpus.length} CPUs (${cpus[0].model}), Node ${process.version}\n`);
  const stopHog = hog ? startHog() : () => {};
  try {
    const ours = await run('messenger-rcluster.js');
    const relay = await run('messenger-relay.js');
    const think = await run('messenger-relay.js', 'think');
    for (let i = 0; i < scenarios.length; i++) {
      const [a, b, c] = [ours[i], relay[i], think[i]];
      if (a.kind === 'broadcast') {
        const rate = (r) => `${r.deliveriesPerSecond.toFixed(0).padStart(8)}/s`;
        console.log(
          `${label(a).padEnd(26)} rcluster ${rate(a)}   relay ${rate(b)} (${(a.deliveriesPerSecond / b.deliveriesPerSecond).toFixed(1)}x)   think-cluster ${rate(c)} (${(a.deliveriesPerSecond / c.deliveriesPerSecond).toFixed(1)}x)`,
        );
      } else if (a.inFlight) {
        const rate = (r) => `${r.mapsPerSecond.toFixed(0).padStart(6)} maps/s`;
        console.log(`map, ${a.inFlight} in flight            rcluster ${rate(a)}   relay ${rate(b)} (${(a.mapsPerSecond / b.mapsPerSecond).toFixed(1)}x)   think-cluster ${rate(c)} (${(a.mapsPerSecond / c.mapsPerSecond).toFixed(1)}x)`);
      } else {
        const p = (r, q) => percentile(r.latencies, q).toFixed(3);
        const ratio = (q) => `${(percentile(a.latencies, q) / percentile(b.latencies, q)).toFixed(2)}x`;
        console.log(`map round trip (sequential)  rcluster p50 ${p(a, 50)} ms p99 ${p(a, 99)} ms   relay p50 ${p(b, 50)} ms p99 ${p(b, 99)} ms (${ratio(50)}, ${ratio(99)} of the relay)   think-cluster p50 ${p(c, 50)} ms p99 ${p(c, 99)} ms`);
      }
    }
  } finally {
    stopHog();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
