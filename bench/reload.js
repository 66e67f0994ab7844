'use strict';

// Zero-downtime reload: rcluster's `reload()` against `pm2 reload`, on the same hello-world app
// (bench/reload-app.js, no cooperation from it), 2 workers, RELOADS reloads under steady load from
// keep-alive clients and new-connection clients at once (bench/reload-client.js, its own
// process). For each: failed requests by kind, each reload's duration, and the worst latency of
// a request that overlapped a reload.
//
//   node bench/reload.js          (BENCH_RELOADS=10, BENCH_PORT=8124)

const { fork, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const RELOADS = Number(process.env.BENCH_RELOADS || 10);
const PORT = Number(process.env.BENCH_PORT || 8124);
const APP = path.join(__dirname, 'reload-app.js');
// Between reloads: long enough for load to be steady again.
const PAUSE_MS = 1000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForPort(port, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${ms} ms`);
    await sleep(100);
  }
}

const rclusterContender = {
  name: 'rcluster reload()',
  async start() {
    const rcluster = require('..');
    this.cluster = rcluster.start({ exec: APP, workers: 2, env: { PORT: String(PORT) } });
    await this.cluster.ready;
  },
  async reload() {
    await this.cluster.reload();
  },
  async stop() {
    await this.cluster.stop();
  },
};

const pm2Contender = {
  name: 'pm2 reload',
  pm2(...args) {
    return new Promise((resolve, reject) => {
      execFile(process.execPath, [this.bin, ...args], { env: this.env, timeout: 60_000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`pm2 ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
        else resolve(stdout);
      });
    });
  },
  async start() {
    this.bin = require.resolve('pm2/bin/pm2');
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-bench-pm2-'));
    this.env = { ...process.env, PM2_HOME: this.home, PORT: String(PORT) };
    await this.pm2('start', APP, '-i', '2', '--name', 'reload-bench');
    await waitForPort(PORT);
  },
  async reload() {
    await this.pm2('reload', 'reload-bench');
  },
  async stop() {
    await this.pm2('kill');
    fs.rmSync(this.home, { recursive: true, force: true });
  },
};

function startLoad() {
  const client = fork(path.join(__dirname, 'reload-client.js'), { env: { ...process.env, PORT: String(PORT) } });
  return new Promise((resolve, reject) => {
    client.once('message', () => resolve(client));
    client.once('exit', (code) => reject(new Error(`the load client exited with ${code}`)));
  });
}

function stopLoad(client) {
  return new Promise((resolve) => {
    client.once('message', resolve);
    client.send('stop');
  });
}

async function measure(contender) {
  await contender.start();
  const client = await startLoad();
  const windows = [];
  let report;
  try {
    await sleep(2000);
    for (let i = 0; i < RELOADS; i += 1) {
      const start = Date.now();
      await contender.reload();
      windows.push([start, Date.now()]);
      await sleep(PAUSE_MS);
    }
  } finally {
    report = await stopLoad(client);
    await contender.stop();
  }
  const durations = windows.map(([a, b]) => b - a);
  const overlaps = ([start, latency]) => windows.some(([a, b]) => start <= b && start + latency >= a);
  const result = { name: contender.name, durations, kinds: {} };
  for (const [kind, stats] of Object.entries(report)) {
    const failed = Object.values(stats.failures).reduce((a, b) => a + b, 0);
    const worst = Math.max(0, ...stats.slow.filter(overlaps).map(([, latency]) => latency));
    result.kinds[kind] = { ok: stats.ok, failed, failures: stats.failures, worstLatencyMs: worst };
  }
  return result;
}

function describe(result) {
  const d = result.durations;
  const median = [...d].sort((a, b) => a - b)[Math.floor(d.length / 2)];
  const lines = [`${result.name}: ${d.length} reloads, duration median ${median} ms, max ${Math.max(...d)} ms`];
  for (const [kind, k] of Object.entries(result.kinds)) {
    const label = kind === 'keepAlive' ? 'keep-alive clients' : 'new-connection clients';
    const failures = Object.entries(k.failures).map(([code, n]) => `${n} ${code}`).join(', ');
    lines.push(`  ${label.padEnd(24)} ${String(k.ok).padStart(7)} ok  ${String(k.failed).padStart(4)} failed${failures ? ` (${failures})` : ''}  worst latency during a reload ${k.worstLatencyMs} ms`);
  }
  return lines.join('\n');
}

async function main() {
  try {
    require.resolve('pm2/bin/pm2');
  } catch {
    console.error('pm2 is not installed: run npm install first (it is a devDependency)');
    process.exitCode = 1;
    return;
  }
  console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0].model}), ${RELOADS} reloads of 2 workers each`);
  const results = [];
  for (const contender of [rclusterContender, pm2Contender]) {
    const result = await measure(contender);
    results.push(result);
    console.log(describe(result));
  }
  const file = path.join(__dirname, 'results', `reload-${Date.now()}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ node: process.version, reloads: RELOADS, results }, null, 2));
  console.log(`results: ${path.relative(process.cwd(), file)}`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
