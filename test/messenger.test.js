'use strict';

// The messenger over rcluster's own channel: who receives what, from the primary and from workers.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fixture, once, until, alive, startCluster, freePort } = require('./helpers');

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

test('a worker that only looks at its messenger opens no channel; its first handler opens it', async (t) => {
  const cluster = startCluster(t, { exec: fixture('messenger-lazy-worker.js'), workers: 1, readiness: 'message' });
  const reported = once(cluster, 'message');
  await cluster.ready;
  const [, report] = await reported;
  assert.deepStrictEqual(report, { looked: false, used: true });
  assert.strictEqual(await cluster.messenger.consume('ping', null, { timeout: 5000 }), 'pong');
});

test('a handler that throws loses nothing that came with its message, and the throw surfaces', async (t) => {
  const cluster = startCluster(t, { exec: fixture('messenger-throwing-worker.js'), workers: 1, readiness: 'message' });
  const uncaught = new Promise((resolve) => cluster.messenger.on('uncaught', resolve));
  await cluster.ready;
  const [worker] = Object.values(cluster.workers);
  // One turn of the primary's loop: they reach the worker together, two of them as memory files.
  cluster.messenger.sendTo(worker.id, 'first', null);
  cluster.messenger.sendTo(worker.id, 'second', 'x');
  cluster.messenger.sendTo(worker.id, 'big', Buffer.alloc(40 * 1024, 1));
  cluster.messenger.sendTo(worker.id, 'big', Buffer.alloc(40 * 1024, 2));
  assert.strictEqual(await uncaught, 'thrown by a handler');
  const seen = await cluster.messenger.consume('report', null, { timeout: 5000 });
  assert.deepStrictEqual(seen, ['first', 'second:x', `big:${40 * 1024}:1`, `big:${40 * 1024}:2`]);
});

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
  const later = await cluster.messenger.mapSettled('reject-in-1');
  assert.deepStrictEqual(later.map((e) => [e.id, e.status, e.value ?? e.reason.code]), [[1, 'rejected', 'E_LATER'], [2, 'fulfilled', 'later']]);
  const thenless = await cluster.messenger.mapSettled('bad-thenable');
  assert.deepStrictEqual(thenless.map((e) => [e.status, e.reason.message]), [['rejected', 'no then here'], ['rejected', 'no then here']]);
  await assert.rejects(cluster.messenger.map('nobody-handles-this'), { code: 'ERR_RCLUSTER_NO_HANDLER' });
  const timedOut = await cluster.messenger.mapSettled('hang', null, { timeout: 150 });
  assert.deepStrictEqual(timedOut.map((e) => e.reason.code), ['ERR_RCLUSTER_TIMEOUT', 'ERR_RCLUSTER_TIMEOUT']);
  await assert.rejects(cluster.messenger.map('die'), { code: 'ERR_RCLUSTER_WORKER_DIED' });
});

/** The primary's count of the messages it routed (option `metrics`). */
async function routedCount(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(/^rcluster_messenger_messages_total\{[^}]*\} (\d+)$/m.exec(text)[1]);
}

test("a worker's own map: its own answer, kept in its process, is what it would be had it travelled", async (t) => {
  const port = await freePort();
  const { cluster, workers } = await messengerCluster(t, { maxMessageSize: 1024, metrics: `127.0.0.1:${port}` });
  const [a, b] = workers;
  const mapHere = (action, data, times) => cluster.messenger.consume('map-here', { action, data, times }, { timeout: 10_000 });
  const whoami = await mapHere('whoami');
  assert.deepStrictEqual(
    whoami.entries.map(({ id, pid, value }) => ({ id, pid, value })),
    [{ id: a.id, pid: a.pid, value: { id: a.id, pid: a.pid } }, { id: b.id, pid: b.pid, value: { id: b.id, pid: b.pid } }],
  );
  // Kept in its process: of 10 maps, the primary routes each request and the other worker's
  // answer, not the requester's own (and the consume that asked, and its answer).
  const before = await routedCount(port);
  await mapHere('whoami', null, 10);
  assert.strictEqual((await routedCount(port)) - before, 2 + 10 * 2);
  // A copy, as JSON carries it: an undefined property is left out, a Date becomes a string.
  const shaped = await mapHere('json-shaped');
  for (const entry of shaped.entries) assert.deepStrictEqual([entry.keys, entry.type], [['n', 'when'], 'string']);
  // Asked by each worker (consume takes them in turn).
  const asked = new Set();
  for (let i = 0; i < 4 && asked.size < 2; i++) {
    const bytes = await mapHere('bytes-changed-after');
    asked.add(bytes.me);
    for (const entry of bytes.entries) assert.deepStrictEqual(entry.value, { bytes: [1, 2, 3] });
  }
  assert.strictEqual(asked.size, 2);
  // Worker 1 throws: whether or not it asked, its entry says so, in its name.
  const failing = await mapHere('fail-in-1');
  assert.deepStrictEqual(
    failing.entries.map((e) => [e.id, e.status, e.code ?? e.value, e.workerId]),
    [[1, 'rejected', 'E_MINE', 1], [2, 'fulfilled', 'ok', undefined]],
  );
  // Too large to travel is too large for the requester's own answer too.
  const large = await mapHere('too-large', 2000);
  assert.deepStrictEqual(large.entries.map((e) => e.code), ['ERR_RCLUSTER_MESSAGE_TOO_LARGE', 'ERR_RCLUSTER_MESSAGE_TOO_LARGE']);
  // A consume is not a map: one that goes to its own requester is answered through the primary,
  // and answered.
  const twice = await cluster.messenger.consume('consume-twice', 'whoami', { timeout: 10_000 });
  assert.deepStrictEqual(twice.map((answer) => answer.id).sort(), [a.id, b.id]);
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
  // The calls the killed worker had not received moved to the survivor: more answers came
  // after the kill than the survivor's share of the calls made before it.
  assert.ok(outcomes.filter((o) => 'value' in o).length > 150, 'calls were lost with the killed worker');
});

test('Buffers round-trip byte for byte, from 0 B to 16 MiB', async (t) => {
  const { cluster } = await messengerCluster(t);
  for (const size of [0, 1, 255, 64 * 1024, 1 << 20, 16 << 20]) {
    const bytes = require('node:crypto').randomBytes(size);
    const back = await cluster.messenger.consume('echo-bytes', bytes, { timeout: 20_000 });
    assert.ok(Buffer.isBuffer(back), `${size} B: not a Buffer`);
    assert.ok(back.equals(bytes), `${size} B: different bytes`);
  }
});

test('large payloads between workers (in memory files) arrive whole: ASCII, UTF-8 and bytes', async (t) => {
  const { cluster, got, workers } = await messengerCluster(t);
  const [a, b] = workers;
  const cases = [
    { bigData: 40 * 1024, fill: 'y' },
    { bigData: 3 << 20, fill: 'q' },
    { bigData: 100_000, fill: 'é' },
    // Shorter than 32 Ki UTF-16 units, longer than 32 KiB in UTF-8; and longer in both, at 3
    // bytes a unit (the most there is) and at 4 bytes for two.
    { bigData: 20_000, fill: '字' },
    { bigData: 40_000, fill: '字' },
    { bigData: 40_000, fill: '😀' },
    { bigData: 1 << 20, fill: 'z', bytes: true },
  ];
  for (const c of cases) {
    got.length = 0;
    cluster.messenger.sendTo(a.id, 'do', { method: 'broadcast', args: ['news', null], ...c });
    // Each worker, the sender included, reports what it got (the string itself back, or the
    // length and byte sum of a Buffer).
    await until(() => got.length === 2, 10_000, `the ${c.bigData} ${c.bytes ? 'bytes' : `'${c.fill}'`}`);
    assert.deepStrictEqual(got.map((r) => r.me).sort(), [a.id, b.id]);
    for (const report of got) {
      assert.strictEqual(report.from.id, a.id);
      if (c.bytes) assert.deepStrictEqual(report.data, { bytes: c.bigData, sum: c.bigData * c.fill.charCodeAt(0) });
      else assert.ok(report.data === c.fill.repeat(c.bigData), `'${c.fill}' x ${c.bigData} came back different`);
    }
  }
});

test('a burst of large messages from one loop reaches everyone, the sender included, with no error', async (t) => {
  const { cluster, failed, workers } = await messengerCluster(t);
  // More files than may wait for one process (512): the sender reads while it sends, and what
  // still waits past that bound goes in line.
  const [count, size] = [1200, 40 * 1024];
  cluster.messenger.sendTo(workers[0].id, 'big-burst', { count, size });
  await until(async () => (await cluster.messenger.map('big-seen')).every((n) => n === count * size), 20_000, 'the burst at every worker');
  assert.deepStrictEqual(failed, []);
});

test('strings round-trip exactly: ASCII, Latin-1, other scripts, emoji, lone surrogates', async (t) => {
  const { cluster, workers } = await messengerCluster(t);
  const strings = ['', 'plain ascii', 'x'.repeat(1 << 20), 'café ÿ\u0080', '日本語のテキスト', 'boom 💥', 'lone \ud800 surrogate', '\udc00', `${'é'.repeat(70_000)}`];
  for (const text of strings) {
    // Out through the primary's encoder, back through each worker's.
    const back = await cluster.messenger.map('echo-bytes', text);
    assert.strictEqual(back.length, workers.length);
    for (const value of back) assert.ok(value === text, `${JSON.stringify(text.slice(0, 20))} (${text.length} chars) came back different`);
  }
});

test('messages from one sender arrive in the order sent, at every receiver', async (t) => {
  const { cluster, workers } = await messengerCluster(t);
  const [a, b] = workers;
  cluster.messenger.sendTo(a.id, 'burst', 2000);
  const reports = await until(async () => {
    const got = await cluster.messenger.map('report-seq');
    return got.every((seen) => seen.length > 0) && got;
  }, 5000, 'the bursts');
  // Both received all 2000 from worker a, in order (later reports are empty: map drains).
  let all = reports;
  while (all.some((seen) => seen.length < 2000)) {
    const more = await cluster.messenger.map('report-seq');
    all = all.map((seen, i) => seen.concat(more[i]));
  }
  for (const seen of all) {
    assert.deepStrictEqual(seen.map(([from]) => from), Array(2000).fill(a.id));
    assert.deepStrictEqual(seen.map(([, n]) => n), Array.from({ length: 2000 }, (_, i) => i));
  }
  assert.ok(b.id > a.id);
});

test('a receiver that stops reading holds bounded memory and never stalls the others', async (t) => {
  const { cluster, got, workers } = await messengerCluster(t, { maxMessageSize: 1 << 20 });
  const [stopped, reading] = workers;
  const errors = [];
  cluster.messenger.on('error', (error) => errors.push(error));
  // A stopped process reads nothing: its socket fills, then its queue in the primary.
  stopped.process.kill('SIGSTOP');
  t.after(() => stopped.isDead() || stopped.process.kill('SIGCONT'));
  const payload = Buffer.alloc(1 << 20, 1);
  // Paced so that a reading worker keeps up: only the stopped one falls behind.
  const atReading = () => got.filter((r) => r.me === reading.id).length;
  for (let sent = 0; sent < 100; sent += 5) {
    for (let i = 0; i < 5; i++) cluster.messenger.sendToApp('bytes', payload);
    await until(() => atReading() === sent + 5, 20_000, () => `message ${sent + 5} at the reading worker (got ${atReading()})`);
  }
  await until(() => errors.length > 0, 5000, 'the queue-full error');
  assert.ok(errors.every((e) => e.code === 'ERR_RCLUSTER_QUEUE_FULL'), errors.map((e) => e.code).join());
  for (const error of errors) {
    assert.match(error.message, new RegExp(`worker ${stopped.id} has \\d+ bytes of messages it has not read`));
  }
  // Everything the primary accepted for it arrives once it reads again.
  stopped.process.kill('SIGCONT');
  const expected = 100 - errors.length;
  await until(() => got.filter((r) => r.me === stopped.id).length === expected, 20_000, 'the held messages');
});

for (const [garbage, why] of [
  ['version', /unknown version/],
  ['shared', /without its memory file/],
  ['host', /a host id is 1 to 128 characters/],
  ['host-reply', /must answer a call of that host/],
]) {
  test(`a worker that writes garbage (${garbage}) on the messenger channel is replaced; the primary reports it`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const cluster = startCluster(t, {
      exec: fixture('messenger-garbage-once.js'),
      workers: 1,
      readiness: 'message',
      env: { MARKER_FILE: path.join(dir, 'marker'), GARBAGE: garbage },
    });
    const warnings = [];
    cluster.on('warning', (w) => warnings.push(w));
    const first = (await once(cluster, 'fork'))[0];
    await cluster.ready;
    const [replacement] = Object.values(cluster.workers);
    assert.notStrictEqual(replacement.pid, first.pid);
    assert.ok(!alive(first.pid));
    const protocol = warnings.find((w) => w.code === 'ERR_RCLUSTER_PROTOCOL');
    assert.ok(protocol, 'no protocol warning');
    assert.match(protocol.message, /broke the messenger protocol/);
    assert.match(protocol.message, why);
    assert.strictEqual(await cluster.messenger.consume('ping'), 'pong');
  });
}
