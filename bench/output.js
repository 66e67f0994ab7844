'use strict';

// What passing the children's output through the primary costs: one worker writes
// BENCH_OUTPUT_MB MB of 128-byte lines to stdout under each setting in one run: inherited
// (control: false, no capture), captured (control on, the default: copied unchanged and kept for
// `rcluster logs`), and captured with logPrefix. The primary's stdout is a pipe this process
// drains (as journald, Docker or a log shipper read it), or /dev/null with BENCH_SINK=null (the
// floor: writes that cost nothing).
//
//   node bench/output.js          (BENCH_OUTPUT_MB=200, BENCH_RUNS=3, BENCH_SINK=pipe)

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const RUNS = Number(process.env.BENCH_RUNS || 3);
const MB = Number(process.env.BENCH_OUTPUT_MB || 200);
const SINK = process.env.BENCH_SINK || 'pipe';
const SETTINGS = {
  inherited: { control: false },
  captured: { control: true },
  prefixed: { control: true, logPrefix: true },
};

const PRIMARY = `
const rcluster = require(${JSON.stringify(path.join(__dirname, '..'))});
const cluster = rcluster.start({ ...JSON.parse(process.env.BENCH_OPTIONS), exec: ${JSON.stringify(path.join(__dirname, 'output-worker.js'))}, workers: 1 });
cluster.messenger.on('done', (ms) => { process.send(ms); cluster.stop(); });
`;

function once(setting) {
  return new Promise((resolve, reject) => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-bench-'));
    const out = SINK === 'null' ? fs.openSync('/dev/null', 'w') : 'pipe';
    const child = spawn(process.execPath, ['-e', PRIMARY], {
      stdio: ['ignore', out, 'inherit', 'ipc'],
      env: { ...process.env, BENCH_OUTPUT_MB: String(MB), BENCH_OPTIONS: JSON.stringify(SETTINGS[setting]), RCLUSTER_HOME: home },
    });
    if (SINK === 'null') fs.closeSync(out);
    else child.stdout.resume();
    let ms = null;
    child.on('message', (m) => (ms = m));
    child.on('exit', (code) => {
      fs.rmSync(home, { recursive: true, force: true });
      if (ms === null) reject(new Error(`${setting}: the primary exited ${code} without a figure`));
      else resolve(ms);
    });
  });
}

async function main() {
  const results = Object.fromEntries(Object.keys(SETTINGS).map((s) => [s, []]));
  for (let run = 0; run < RUNS; run++) {
    for (const setting of Object.keys(SETTINGS)) results[setting].push(await once(setting));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const sink = SINK === 'null' ? '/dev/null' : 'a pipe read as fast as it fills';
  console.log(`${MB} MB of 128-byte lines from one worker to a primary whose stdout is ${sink}, ${RUNS} runs each, Node ${process.version}`);
  const base = median(results.inherited);
  for (const [setting, times] of Object.entries(results)) {
    const m = median(times);
    console.log(`${setting.padEnd(10)} median ${m.toFixed(0).padStart(6)} ms  ${((MB / m) * 1000).toFixed(0).padStart(5)} MB/s  ${(m / base).toFixed(2)}x the inherited time  (${times.map((x) => x.toFixed(0)).join(', ')})`);
  }
}
main().catch((error) => {
  console.error(error);
  process.exit(1);
});
