'use strict';

// Messenger throughput and latency: rcluster's messenger against the process.send relay that
// ThinkJS and Egg.js use (worker -> primary -> every worker), 2 workers, in one run.
//
//   node bench/messenger.js        (BENCH_SCALE=1 multiplies the message counts)

const path = require('node:path');
const os = require('node:os');
const { spawn } = require('node:child_process');

const scale = Number(process.env.BENCH_SCALE || 1);
const scenarios = [];
for (const binary of [false, true]) {
  scenarios.push({ kind: 'broadcast', size: 256, count: 20000 * scale, binary });
  scenarios.push({ kind: 'broadcast', size: 64 * 1024, count: 1000 * scale, binary });
  scenarios.push({ kind: 'broadcast', size: 1024 * 1024, count: 50 * scale, binary });
}
scenarios.push({ kind: 'map', count: 2000 * scale });

function run(script) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'primaries', script), JSON.stringify(scenarios)], {
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
  for (let i = 0; i < scenarios.length; i++) {
    const a = ours[i];
    const b = relay[i];
    if (a.kind === 'broadcast') {
      console.log(
        `${label(a).padEnd(26)} rcluster ${a.deliveriesPerSecond.toFixed(0).padStart(8)}/s   relay ${b.deliveriesPerSecond.toFixed(0).padStart(8)}/s   ${(a.deliveriesPerSecond / b.deliveriesPerSecond).toFixed(1)}x`,
      );
    } else {
      const [a50, a99, b50, b99] = [percentile(a.latencies, 50), percentile(a.latencies, 99), percentile(b.latencies, 50), percentile(b.latencies, 99)];
      console.log(`map round trip (sequential)  rcluster p50 ${a50.toFixed(3)} ms p99 ${a99.toFixed(3)} ms   relay p50 ${b50.toFixed(3)} ms p99 ${b99.toFixed(3)} ms   (${(a50 / b50).toFixed(2)}x, ${(a99 / b99).toFixed(2)}x of the relay)`);
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
