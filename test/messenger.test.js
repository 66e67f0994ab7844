'use strict';

// The messenger over rcluster's own channel: who receives what, from the primary and from workers.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, until, startCluster } = require('./helpers');

/** A cluster of messenger workers; `got` collects what they report receiving. */
async function messengerCluster(t, options = {}) {
  const cluster = startCluster(t, { exec: fixture('messenger-worker.js'), workers: 2, readiness: 'message', ...options });
  const got = [];
  const threw = [];
  const failed = [];
  cluster.messenger.on('got', (report) => got.push(report));
  cluster.messenger.on('threw', (report) => threw.push(report));
  cluster.messenger.on('failed', (report) => failed.push(report));
  await cluster.ready;
  const workers = Object.values(cluster.workers).sort((a, b) => a.id - b.id);
  return { cluster, got, threw, failed, workers };
}

const receivers = (got, action) => got.filter((r) => r.action === action).map((r) => r.me).sort();

test('from the primary: broadcast, sendToApp, sendTo (id and pid), sendRandom', async (t) => {
  const { cluster, got, workers } = await messengerCluster(t);
  const [a, b] = workers;
  cluster.messenger.broadcast('news', { n: 1 });
  cluster.messenger.sendToApp('app-news', 'x');
  cluster.messenger.sendTo(b.id, 'direct', 42);
  cluster.messenger.sendTo(a.pid, 'direct', 'by pid');
  for (let i = 0; i < 20; i++) cluster.messenger.sendRandom('random', i);
  await until(() => got.length >= 2 + 2 + 2 + 20, 5000, 'deliveries');
  assert.deepStrictEqual(receivers(got, 'news'), [a.id, b.id]);
  assert.deepStrictEqual(receivers(got, 'app-news'), [a.id, b.id]);
  assert.deepStrictEqual(receivers(got, 'direct'), [a.id, b.id]);
  assert.strictEqual(receivers(got, 'random').length, 20);
  const news = got.find((r) => r.action === 'news');
  assert.deepStrictEqual(news.data, { n: 1 });
  assert.deepStrictEqual(news.from, { id: 0, pid: process.pid, kind: 'primary' });
  // FIFO from one sender to one receiver.
  const randomToA = got.filter((r) => r.action === 'random' && r.me === a.id).map((r) => r.data);
  assert.deepStrictEqual(randomToA, [...randomToA].sort((x, y) => x - y));
});

test('from a worker: broadcast and sendToApp reach the sender too; meta.from names it', async (t) => {
  const { cluster, got, workers } = await messengerCluster(t);
  const [a, b] = workers;
  cluster.messenger.sendTo(a.id, 'do', { method: 'broadcast', args: ['news', 'from a'] });
  cluster.messenger.sendTo(a.id, 'do', { method: 'sendTo', args: [b.id, 'direct', 'a to b'] });
  await until(() => got.length >= 3, 5000, 'deliveries');
  assert.deepStrictEqual(receivers(got, 'news'), [a.id, b.id]);
  for (const report of got) assert.deepStrictEqual(report.from, { id: a.id, pid: a.pid, kind: 'app' });
  assert.deepStrictEqual(got.find((r) => r.action === 'direct'), { action: 'direct', data: 'a to b', from: { id: a.id, pid: a.pid, kind: 'app' }, me: b.id });
});

test('Buffers arrive as Buffers with the same bytes', async (t) => {
  const { cluster, got, workers } = await messengerCluster(t);
  const sizes = [0, 1, 1000, 1 << 20];
  for (const size of sizes) {
    const bytes = Buffer.alloc(size, 7);
    cluster.messenger.sendTo(workers[0].id, 'bytes', bytes);
  }
  await until(() => got.length >= sizes.length, 5000, 'deliveries');
  assert.deepStrictEqual(got.map((r) => r.data), sizes.map((size) => ({ bytes: size, sum: size * 7 })));
});

test('an unknown target, a missing agent and a missing handler are reported to the sender', async (t) => {
  const { cluster, failed, workers } = await messengerCluster(t);
  const errors = [];
  cluster.messenger.on('error', (error) => errors.push(error));
  cluster.messenger.sendTo(999999, 'direct', 1);
  cluster.messenger.sendToAgent('anything', 1);
  cluster.messenger.sendRandom('nobody-handles-this', 1);
  await until(() => errors.length >= 3, 5000, 'errors at the primary');
  assert.deepStrictEqual(errors.map((e) => e.code), ['ERR_RCLUSTER_UNKNOWN_TARGET', 'ERR_RCLUSTER_UNKNOWN_TARGET', 'ERR_RCLUSTER_NO_HANDLER']);
  cluster.messenger.sendTo(workers[0].id, 'do', { method: 'sendTo', args: [999999, 'x', 1] });
  await until(() => failed.length >= 1, 5000, 'the error at the worker');
  assert.deepStrictEqual(failed, [{ code: 'ERR_RCLUSTER_UNKNOWN_TARGET', action: 'x' }]);
});

test('data JSON cannot carry is a TypeError; data over maxMessageSize is refused; nothing is sent', async (t) => {
  const { cluster, got, threw, workers } = await messengerCluster(t, { maxMessageSize: 1024 });
  const circular = {};
  circular.self = circular;
  assert.throws(() => cluster.messenger.broadcast('news', circular), TypeError);
  assert.throws(() => cluster.messenger.broadcast('news', { n: 1n }), TypeError);
  assert.throws(() => cluster.messenger.broadcast('news', 'x'.repeat(2000)), { code: 'ERR_RCLUSTER_MESSAGE_TOO_LARGE' });
  assert.throws(() => cluster.messenger.sendTo('nobody', 'news', 1), { code: 'ERR_RCLUSTER_UNKNOWN_TARGET' });
  cluster.messenger.sendTo(workers[0].id, 'do', { method: 'broadcast', args: ['news', null], bigData: 2000 });
  await until(() => threw.length >= 1, 5000, 'the refusal at the worker');
  assert.deepStrictEqual(threw, [{ method: 'broadcast', code: 'ERR_RCLUSTER_MESSAGE_TOO_LARGE', name: 'Error' }]);
  // The cluster still works, and none of the refused messages was delivered.
  cluster.messenger.broadcast('news', 'fine');
  await until(() => got.length >= 2, 5000, 'deliveries');
  assert.deepStrictEqual(got.map((r) => r.data), ['fine', 'fine']);
});

test('consume: exactly one worker runs it, calls spread over the workers with a handler', async (t) => {
  const { cluster, workers } = await messengerCluster(t);
  // A map answered by both means both have told the primary about their handlers.
  assert.deepStrictEqual((await cluster.messenger.map('whoami')).map((w) => w.id), workers.map((w) => w.id));
  const answers = [];
  for (let i = 0; i < 10; i++) answers.push(await cluster.messenger.consume('whoami'));
  const ids = new Set(answers.map((a) => a.id));
  assert.deepStrictEqual([...ids].sort(), workers.map((w) => w.id));
  assert.deepStrictEqual((await cluster.messenger.consume('echo-bytes', Buffer.from([0, 255, 1]))), Buffer.from([0, 255, 1]));
  await assert.rejects(cluster.messenger.consume('nobody-handles-this'), { code: 'ERR_RCLUSTER_NO_HANDLER' });
  await assert.rejects(cluster.messenger.consume('hang', null, { timeout: 100 }), { code: 'ERR_RCLUSTER_TIMEOUT' });
  assert.throws(() => cluster.messenger.consume('whoami', null, { timeout: -1 }), { code: 'ERR_RCLUSTER_INVALID_OPTION' });
});

test('map and mapSettled: a throwing handler, a missing handler, a timeout, a dying worker', async (t) => {
  const { cluster, workers } = await messengerCluster(t);
  const [a, b] = workers;
  assert.deepStrictEqual(await cluster.messenger.map('whoami'), [{ id: a.id, pid: a.pid }, { id: b.id, pid: b.pid }]);
  // Ids 1 and 2: worker 1 throws.
  await assert.rejects(cluster.messenger.map('fail-in-1'), { code: 'E_MINE', workerId: 1 });
  const settled = await cluster.messenger.mapSettled('fail-in-1');
  assert.deepStrictEqual(settled.map((e) => [e.id, e.status]), [[1, 'rejected'], [2, 'fulfilled']]);
  assert.strictEqual(settled[0].reason.message, 'worker 1 fails');
  assert.strictEqual(settled[1].value, 'ok');
  await assert.rejects(cluster.messenger.map('nobody-handles-this'), { code: 'ERR_RCLUSTER_NO_HANDLER' });
  const timedOut = await cluster.messenger.mapSettled('hang', null, { timeout: 150 });
  assert.deepStrictEqual(timedOut.map((e) => e.reason.code), ['ERR_RCLUSTER_TIMEOUT', 'ERR_RCLUSTER_TIMEOUT']);
  await assert.rejects(cluster.messenger.map('die'), { code: 'ERR_RCLUSTER_WORKER_DIED' });
});

test('consume rejects with ERR_RCLUSTER_WORKER_DIED when the worker running it dies', async (t) => {
  const { cluster } = await messengerCluster(t, { workers: 1 });
  await assert.rejects(cluster.messenger.consume('die'), (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_WORKER_DIED');
    assert.match(error.message, /died while it ran 'die'/);
    return true;
  });
});

test('consume while a worker is SIGKILLed mid-stream: every call runs at most once, and none is lost in silence', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const countFile = path.join(dir, 'ran');
  fs.writeFileSync(countFile, '');
  const { cluster, workers } = await messengerCluster(t, { env: { COUNT_FILE: countFile } });
  await cluster.messenger.map('whoami');
  const outcomes = [];
  let resolved = 0;
  const calls = Array.from({ length: 300 }, (_, n) =>
    cluster.messenger.consume('count', n, { timeout: 10_000 }).then(
      (value) => {
        resolved += 1;
        outcomes[n] = { value };
      },
      (error) => (outcomes[n] = { code: error.code }),
    ),
  );
  await until(() => resolved >= 50, 5000, '50 answers');
  workers[0].process.kill('SIGKILL');
  await Promise.all(calls);
  const ran = fs.readFileSync(countFile, 'utf8').split('\n').filter(Boolean).map(Number);
  assert.strictEqual(new Set(ran).size, ran.length, 'a call ran twice');
  for (let n = 0; n < 300; n++) {
    const outcome = outcomes[n];
    if ('value' in outcome) {
      assert.strictEqual(outcome.value, n);
      assert.ok(ran.includes(n));
    } else {
      assert.strictEqual(outcome.code, 'ERR_RCLUSTER_WORKER_DIED', `call ${n}: ${outcome.code}`);
    }
  }
  assert.ok(outcomes.filter((o) => 'value' in o).length >= 250, 'most calls went to the surviving worker');
});
