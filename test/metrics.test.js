'use strict';

// Prometheus metrics (option `metrics`): served by the Rust primary at /metrics, in the text
// format a real Prometheus parser reads, and still while the primary's JavaScript is blocked.

const test = require('node:test');
const assert = require('node:assert');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const parsePrometheus = require('parse-prometheus-text-format');
const rcluster = require('..');
const { fixture, startCluster, appWorkers, until, once, spawnNode, waitForOutput, tempDir, freePort } = require('./helpers');

const worker = fixture('http-worker.js');

/** One request on a fresh connection: { status, headers, body }. */
function request(port, { method = 'GET', path: urlPath = '/metrics', timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent: false, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** The metrics, parsed: name -> the family's samples. */
async function scrape(port) {
  const res = await request(port);
  assert.strictEqual(res.status, 200, res.body);
  const families = {};
  for (const family of parsePrometheus(res.body)) families[family.name] = family;
  return families;
}

/** The samples of `name` whose labels include `labels`. */
function samples(families, name, labels = {}) {
  const family = families[name];
  if (!family) return [];
  return family.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels[k] === v));
}

function value(families, name, labels) {
  const found = samples(families, name, labels);
  assert.strictEqual(found.length, 1, `one sample of ${name} ${JSON.stringify(labels)} in ${JSON.stringify(families[name])}`);
  return Number(found[0].value);
}

async function startWithMetrics(t, options = {}) {
  const port = await freePort();
  const cluster = startCluster(t, { exec: worker, workers: 2, metrics: `127.0.0.1:${port}`, name: `metrics-${port}`, ...options });
  await cluster.ready;
  return { cluster, port };
}

test('the metrics show the workers, their memory, restarts, messages and event loop delay', async (t) => {
  // No liveness checks: the metrics alone get the workers their heartbeats.
  const { cluster, port } = await startWithMetrics(t, { heartbeatInterval: 100, heartbeatTimeout: 0 });
  const res = await request(port);
  assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);

  let m = await scrape(port);
  const cluster_ = { cluster: `metrics-${port}` };
  assert.strictEqual(value(m, 'rcluster_up', cluster_), 1);
  assert.strictEqual(m.rcluster_workers.type, 'GAUGE');
  assert.strictEqual(value(m, 'rcluster_workers', { kind: 'app', state: 'ready' }), 2);
  assert.strictEqual(value(m, 'rcluster_workers_target'), 2);
  const start = value(m, 'rcluster_start_time_seconds');
  assert.ok(Math.abs(start - Date.now() / 1000) < 60, `start time ${start}`);
  const memory = samples(m, 'rcluster_worker_resident_memory_bytes', { kind: 'app' });
  assert.strictEqual(memory.length, 2);
  for (const sample of memory) {
    assert.ok(Number(sample.value) > 1 << 20, `memory ${sample.value}`);
    assert.ok(appWorkers(cluster).some((w) => String(w.pid) === sample.labels.pid));
    assert.match(sample.labels.instance, /^[01]$/);
  }
  assert.strictEqual(samples(m, 'rcluster_worker_cpu_seconds_total', { kind: 'app' }).length, 2);
  assert.strictEqual(m.rcluster_worker_cpu_seconds_total.type, 'COUNTER');
  const restarts = samples(m, 'rcluster_worker_restarts_total', { kind: 'app' });
  assert.deepStrictEqual(restarts.map((s) => [s.labels.slot, s.value]).sort(), [['0', '0'], ['1', '0']]);

  // Every worker reports its event loop delay with its heartbeats.
  m = await until(async () => {
    const now = await scrape(port);
    return samples(now, 'rcluster_worker_event_loop_delay_seconds', { kind: 'app' }).length === 2 && now;
  }, 10_000, 'the loop delay of both workers');
  for (const sample of samples(m, 'rcluster_worker_event_loop_delay_seconds')) {
    const delay = Number(sample.value);
    assert.ok(delay >= 0 && delay < 5, `delay ${delay}`);
  }

  // Messages the primary broadcasts are routed by the messenger, and counted.
  const before = value(m, 'rcluster_messenger_messages_total');
  for (let i = 0; i < 5; i++) cluster.messenger.broadcast('news', i);
  await until(async () => value(await scrape(port), 'rcluster_messenger_messages_total') >= before + 5, 10_000, 'messages_total to grow by 5');

  // A killed worker is restarted in its slot: that slot counts one restart.
  const [victim] = appWorkers(cluster);
  const restarted = once(cluster, 'fork');
  process.kill(victim.process.pid, 'SIGKILL');
  await restarted;
  m = await until(async () => {
    const now = await scrape(port);
    const total = samples(now, 'rcluster_worker_restarts_total').reduce((sum, s) => sum + Number(s.value), 0);
    return total === 1 && now;
  }, 10_000, 'one restart');
  assert.ok(samples(m, 'rcluster_worker_restarts_total').some((s) => s.value === '1'));

  // Only GET and HEAD, only /metrics.
  assert.strictEqual((await request(port, { path: '/' })).status, 404);
  const post = await request(port, { method: 'POST' });
  assert.strictEqual(post.status, 405);
  assert.strictEqual(post.headers.allow, 'GET, HEAD');
  const head = await request(port, { method: 'HEAD' });
  assert.strictEqual(head.status, 200);
  assert.strictEqual(head.body, '');
});

test('the metrics count reloads and their duration', async (t) => {
  const { cluster, port } = await startWithMetrics(t, { control: false });
  let m = await scrape(port);
  assert.strictEqual(value(m, 'rcluster_reloads_total', { outcome: 'done' }), 0);
  assert.strictEqual(value(m, 'rcluster_reloads_total', { outcome: 'aborted' }), 0);
  await cluster.reload();
  m = await scrape(port);
  assert.strictEqual(value(m, 'rcluster_reloads_total', { outcome: 'done' }), 1);
  assert.strictEqual(value(m, 'rcluster_reloads_total', { outcome: 'aborted' }), 0);
  const [duration] = samples(m, 'rcluster_reload_duration_seconds');
  assert.strictEqual(m.rcluster_reload_duration_seconds.type, 'SUMMARY');
  assert.strictEqual(Number(duration.count), 1);
  assert.ok(Number(duration.sum) > 0 && Number(duration.sum) < 60, `sum ${duration.sum}`);
});

test('the metrics answer while the primary\'s JavaScript is blocked', async (t) => {
  const dir = tempDir(t);
  const port = await freePort();
  const script = path.join(dir, 'blocking-primary.js');
  require('node:fs').writeFileSync(
    script,
    `'use strict';
const rcluster = require(${JSON.stringify(path.join(__dirname, '..'))});
const cluster = rcluster.start({ exec: ${JSON.stringify(worker)}, workers: 2, metrics: '127.0.0.1:${port}', control: false });
cluster.ready.then(() => {
  process.stdout.write('blocking\\n');
  const until = Date.now() + 3000;
  while (Date.now() < until);
  process.stdout.write('unblocked\\n');
  cluster.stop();
});
`,
  );
  const primary = spawnNode(t, [script]);
  await waitForOutput(primary, /blocking/);
  const res = await request(port, { timeout: 2500 });
  assert.strictEqual(res.status, 200);
  assert.ok(!primary.output.includes('unblocked'), 'answered while blocked');
  const families = {};
  for (const family of parsePrometheus(res.body)) families[family.name] = family;
  assert.strictEqual(value(families, 'rcluster_workers', { kind: 'app', state: 'ready' }), 2);
  assert.deepStrictEqual(await primary.exited, { code: 0, signal: null });
});

test('a metrics address in use fails the start with a clear error, and a bad one is refused', async (t) => {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const { port } = server.address();
  assert.throws(() => rcluster.start({ exec: worker, workers: 1, metrics: `127.0.0.1:${port}`, control: false }), (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_METRICS_UNAVAILABLE');
    assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    return true;
  });
  for (const bad of ['9100', 'example.com:9100', '127.0.0.1:0', '[::1]', 42]) {
    assert.throws(() => rcluster.start({ exec: worker, metrics: bad }), (error) => {
      assert.strictEqual(error.code, 'ERR_RCLUSTER_INVALID_OPTION');
      assert.match(error.message, /`metrics`/);
      return true;
    });
  }
});
