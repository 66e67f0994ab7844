'use strict';

// Messenger throughput and latency: rcluster's messenger against the process.send relay that
// ThinkJS and Egg.js use (worker -> primary -> every worker), written plainly and as
// think-cluster's own messenger, 2 workers, in one run. (egg-cluster's messenger runs only
// inside an Egg application's master, agent and app workers, so it is not in this bench.)
//
//   node bench/messenger.js        (BENCH_SCALE=1 multiplies the message counts)

const path = require('node:path');
const os = require('node:os');
const { spawn } = require('node:child_process');

const scale = Number(process.env.BENCH_SCALE || 1);
// Each run lasts seconds for the slowest contender, so that start-up and JIT warm-up do not
// decide the figures. (The relay turns a Buffer into a JSON array of numbers: Buffer runs are
// shorter, or the relay would take minutes.)
const counts = {
  string: { 256: 200_000, [64 * 1024]: 4000, [1024 * 1024]: 200 },
  buffer: { 256: 20_000, [64 * 1024]: 500, [1024 * 1024]: 30 },
};
const scenarios = [];
for (const binary of [false, true]) {
  for (const size of [256, 64 * 1024, 1024 * 1024]) {
    scenarios.push({ kind: 'broadcast', size, count: counts[binary ? 'buffer' : 'string'][size] * scale, binary });
  }
}
scenarios.push({ kind: 'map', count: 2000 * scale });

function run(script, ...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'primaries', script), JSON.stringify(scenarios), ...args], {
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

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function label(s) {
  const size = s.size >= 1 << 20 ? `${s.size >> 20} MiB` : s.size >= 1024 ? `${s.size >> 10} KiB` : `${s.size} B`;
  return `broadcast ${size.padStart(6)} ${s.binary ? 'Buffer' : 'string'}`;
}

async function main() {
  console.log(`messenger, 2 workers; ${os.cpus().length} CPUs (${os.cpus()[0].model}), Node ${process.version}\n`);
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
    } else {
      const p = (r, q) => percentile(r.latencies, q).toFixed(3);
      const ratio = (q) => `${(percentile(a.latencies, q) / percentile(b.latencies, q)).toFixed(2)}x`;
      console.log(`map round trip (sequential)  rcluster p50 ${p(a, 50)} ms p99 ${p(a, 99)} ms   relay p50 ${p(b, 50)} ms p99 ${p(b, 99)} ms (${ratio(50)}, ${ratio(99)} of the relay)   think-cluster p50 ${p(c, 50)} ms p99 ${p(c, 99)} ms`);
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
