'use strict';

// More than one host (option `redis`): each host is its own primary (test/fixtures/host-primary.js)
// with 2 app workers, on one machine, around a real redis-server that each test starts on a unix
// socket of its own. The workers write what they receive, and each messenger error, to files.

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { fixture, tempDir, until, spawnNode } = require('./helpers');
const { skip, startRedis, startHost } = require('./hosts-helpers');

/** Two hosts, a and b, that see each other. */
async function twoHosts(t, options) {
  const redis = await startRedis(t);
  const dir = tempDir(t, 'rcluster-hosts-');
  const namespace = `ns${process.pid}x${Date.now() % 100000}`;
  const a = await startHost(t, { redis, namespace, hostId: 'a', dir, options });
  const b = await startHost(t, { redis, namespace, hostId: 'b', dir, options });
  await until(() => a.events.some((e) => e.event === 'host-join' && e.host === 'b'), 10_000, 'a sees b join');
  await until(() => b.events.some((e) => e.event === 'host-join' && e.host === 'a'), 10_000, 'b sees a join');
  return { redis, dir, namespace, a, b };
}

const notes = (host, id, from) => host.received(id).filter((r) => r.action === 'note' && (!from || r.from.host === from));

test('broadcast reaches every app worker of both hosts once, in order, with meta.from.host', { skip }, async (t) => {
  const { a, b } = await twoHosts(t);
  const [sender] = a.workers;
  a.do(sender.id, { op: 'broadcast', action: 'note', count: 500 });
  for (const host of [a, b]) {
    for (const w of host.workers) {
      await until(() => notes(host, w.id).length >= 500, 15_000, () => `${host.hostId}/${w.id} got 500 (got ${notes(host, w.id).length})`);
    }
  }
  for (const host of [a, b]) {
    for (const w of host.workers) {
      const got = notes(host, w.id);
      assert.strictEqual(got.length, 500, `${host.hostId}/${w.id}: each once`);
      assert.deepStrictEqual(got.map((r) => r.seq), Array.from({ length: 500 }, (_, i) => i + 1), 'in order');
      assert.deepStrictEqual(got[0].from, { id: sender.id, pid: sender.pid, kind: 'app', host: 'a' });
    }
  }
  for (const host of [a, b]) for (const w of host.workers) assert.deepStrictEqual(host.errors(w.id), []);
});

test('sendTo({ host, id }) reaches that worker of the other host; an unknown host or id is reported to the sender', { skip }, async (t) => {
  const { a, b } = await twoHosts(t);
  const [sender] = a.workers;
  const [target, other] = b.workers;
  a.do(sender.id, { op: 'sendTo', target: { host: 'b', id: target.id }, action: 'note', seq: 7 });
  await until(() => notes(b, target.id).length === 1, 10_000, 'the note on b');
  assert.deepStrictEqual(notes(b, target.id)[0], { action: 'note', seq: 7, from: { id: sender.id, pid: sender.pid, kind: 'app', host: 'a' } });
  assert.deepStrictEqual(notes(b, other.id), []);
  assert.deepStrictEqual(a.workers.flatMap((w) => notes(a, w.id)), []);

  // Its own host, named: delivered here.
  a.do(sender.id, { op: 'sendTo', target: { host: 'a', id: a.workers[1].id }, action: 'note', seq: 8 });
  await until(() => notes(a, a.workers[1].id).length === 1, 10_000, 'the note on a');

  a.do(sender.id, { op: 'sendTo', target: { host: 'nowhere', id: 1 }, action: 'note', seq: 9 });
  const [unknownHost] = await until(() => a.errors(sender.id).length >= 1 && a.errors(sender.id), 10_000, 'the error for an unknown host');
  assert.strictEqual(unknownHost.code, 'ERR_RCLUSTER_UNKNOWN_TARGET');
  assert.match(unknownHost.message, /nowhere/);

  a.do(sender.id, { op: 'sendTo', target: { host: 'b', id: 99 }, action: 'note', seq: 10 });
  const unknownId = await until(() => a.errors(sender.id)[1], 10_000, 'the error for an unknown worker of b');
  assert.strictEqual(unknownId.code, 'ERR_RCLUSTER_UNKNOWN_TARGET');
  assert.strictEqual(unknownId.host, 'b');
  assert.match(unknownId.message, /99/);

  // From the primary's own messenger: delivered, and an unknown worker of b reported to it.
  a.child.send({ cmd: 'sendTo', target: { host: 'b', id: other.id }, seq: 11 });
  await until(() => notes(b, other.id).length === 1, 10_000, "the primary's note on b");
  assert.deepStrictEqual(notes(b, other.id)[0].from, { id: 0, pid: a.child.pid, kind: 'primary', host: 'a' });
  a.child.send({ cmd: 'sendTo', target: { host: 'b', id: 99 }, seq: 12 });
  const reported = await until(() => a.events.find((e) => e.event === 'messenger-error'), 10_000, "the primary's error for an unknown worker of b");
  assert.deepStrictEqual([reported.code, reported.host], ['ERR_RCLUSTER_UNKNOWN_TARGET', 'b']);
});

test('a graceful stop is seen at once as a leave; a SIGKILLed host times out', { skip }, async (t) => {
  const redis = await startRedis(t);
  const dir = tempDir(t, 'rcluster-hosts-');
  const namespace = `ns${process.pid}y`;
  const a = await startHost(t, { redis, namespace, hostId: 'a', dir });
  const b = await startHost(t, { redis, namespace, hostId: 'b', dir });
  const c = await startHost(t, { redis, namespace, hostId: 'c', dir });
  await until(() => ['b', 'c'].every((h) => a.events.some((e) => e.event === 'host-join' && e.host === h)), 10_000, 'a sees b and c');

  b.child.send({ cmd: 'stop' });
  // 'left', not 'timeout': b said it leaves, the others did not wait for its heartbeats to stop.
  const left = await until(() => a.events.find((e) => e.event === 'host-leave' && e.host === 'b'), 10_000, 'b leaves');
  assert.strictEqual(left.reason, 'left');
  assert.strictEqual((await b.child.exited).code, 0);

  process.kill(c.child.pid, 'SIGKILL');
  const gone = await until(() => a.events.find((e) => e.event === 'host-leave' && e.host === 'c'), 15_000, 'c times out');
  assert.strictEqual(gone.reason, 'timeout');
});

test('Redis unreachable at start: the host serves and delivers locally; what crosses hosts fails with REMOTE_UNAVAILABLE', { skip }, async (t) => {
  const dir = tempDir(t, 'rcluster-hosts-');
  const nowhere = { url: `unix://${path.join(dir, 'no-redis.sock')}` };
  const a = await startHost(t, { redis: nowhere, namespace: 'lonely', hostId: 'a', dir });
  const [sender, other] = a.workers;
  a.do(sender.id, { op: 'broadcast', action: 'note', count: 10 });
  await until(() => notes(a, other.id).length === 10, 10_000, 'local delivery');
  // Reports come with counts, one per batch the primary read: wait for all 10.
  const errors = await until(() => a.errors(sender.id).reduce((n, e) => n + e.count, 0) >= 10 && a.errors(sender.id), 10_000, () => `the sender told of 10 (got ${JSON.stringify(a.errors(sender.id))})`);
  assert.ok(errors.every((e) => e.code === 'ERR_RCLUSTER_REMOTE_UNAVAILABLE'), JSON.stringify(errors));
  assert.strictEqual(errors.reduce((n, e) => n + e.count, 0), 10, 'each broadcast reported once');
  await until(() => a.warnings('ERR_RCLUSTER_REMOTE_UNAVAILABLE').length > 0, 10_000, 'the cluster warned');
});

test('a message over the cross-host limit is delivered on its host and reported for the others', { skip }, async (t) => {
  const { a, b } = await twoHosts(t);
  const [sender, other] = a.workers;
  a.do(sender.id, { op: 'broadcast', action: 'big', count: 1, size: 2 * 1024 * 1024 });
  await until(() => other && a.received(other.id).some((r) => r.action === 'big'), 10_000, 'local delivery');
  const [error] = await until(() => a.errors(sender.id).length > 0 && a.errors(sender.id), 10_000, 'the sender told');
  assert.strictEqual(error.code, 'ERR_RCLUSTER_MESSAGE_TOO_LARGE');
  assert.ok(b.workers.every((w) => !b.received(w.id).some((r) => r.action === 'big')));
});

test('Redis restarts: the hosts join again, and every broadcast is delivered, reported to its sender, or reported lost', { skip }, async (t) => {
  const { redis, a, b } = await twoHosts(t);
  const [sender] = a.workers;
  const [receiver] = b.workers;
  a.do(sender.id, { op: 'broadcast', action: 'note', count: 100 });
  await until(() => notes(b, receiver.id).length === 100, 10_000, 'the first 100');

  await redis.kill();
  a.do(sender.id, { op: 'broadcast', action: 'note', count: 100 });
  await until(() => a.received(sender.id).filter((r) => r.action === 'done').length === 2, 10_000, 'the second 100 sent');
  await redis.start();
  const joins = () => a.events.filter((e) => e.event === 'host-join' && e.host === 'b').length;
  await until(() => joins() >= 2, 20_000, () => `a sees b join again (events: ${JSON.stringify(a.events)})`);
  a.do(sender.id, { op: 'broadcast', action: 'note', count: 100 });
  await until(() => a.received(sender.id).filter((r) => r.action === 'done').length === 3, 10_000, 'the third 100 sent');

  // Every message of the 300: delivered to b, or reported to the sender, or reported lost by b.
  const settled = () => {
    const delivered = notes(b, receiver.id).length;
    const reported = a.errors(sender.id).reduce((n, e) => n + (e.count || 1), 0);
    const lost = b.warnings('ERR_RCLUSTER_MESSAGES_LOST').reduce((n, w) => n + w.details.count, 0);
    return { delivered, reported, lost, total: delivered + reported + lost };
  };
  await until(() => settled().total === 300, 15_000, () => `300 accounted for (got ${JSON.stringify(settled())})`);
  assert.ok(settled().delivered >= 200, JSON.stringify(settled()));
});

test('without redis, sendTo({ host, id }) is refused at once', async (t) => {
  const primary = spawnNode(t, ['-e', `
    const rcluster = require(${JSON.stringify(path.join(__dirname, '..'))});
    try { rcluster.start({ exec: ${JSON.stringify(fixture('http-worker.js'))}, workers: 1, control: false }).messenger.sendTo({ host: 'b', id: 1 }, 'x'); }
    catch (e) { console.log(e.code, e.message); process.exit(0); }
    process.exit(1);
  `]);
  const { code } = await primary.exited;
  assert.strictEqual(code, 0, primary.output);
  assert.match(primary.output, /ERR_RCLUSTER_UNKNOWN_TARGET .*no redis option/);
});

test('sendRandom prefers a worker of its own host, else reaches a host that handles it; none does: NO_HANDLER', { skip }, async (t) => {
  const redis = await startRedis(t);
  const dir = tempDir(t, 'rcluster-hosts-');
  const namespace = `ns${process.pid}x${Date.now() % 100000}`;
  // The fixture's env option replaces its default, which names the host.
  const withHandler = { env: { HOST_NAME: 'c', RANDOM_HANDLER: '1' } };
  const a = await startHost(t, { redis, namespace, hostId: 'a', dir });
  const b = await startHost(t, { redis, namespace, hostId: 'b', dir });
  const c = await startHost(t, { redis, namespace, hostId: 'c', dir, options: withHandler });
  for (const host of [a, b]) await until(() => host.events.filter((e) => e.event === 'host-join').length === 2, 10_000, `${host.hostId} sees the others`);
  const randoms = (host) => host.workers.flatMap((w) => host.received(w.id).filter((r) => r.action === 'random'));

  // a and b have no handler: each message reaches c, some after b said it has none.
  const [sender] = a.workers;
  a.do(sender.id, { op: 'sendRandom', count: 30 });
  await until(() => randoms(c).length === 30, 10_000, () => `30 at c (got ${randoms(c).length})`);
  assert.deepStrictEqual(randoms(c).map((r) => r.seq).sort((x, y) => x - y), Array.from({ length: 30 }, (_, i) => i + 1));
  assert.ok(randoms(c).every((r) => r.from.host === 'a' && r.from.id === sender.id));
  assert.deepStrictEqual(a.errors(sender.id), []);

  // c handles it: its own workers get what it sends, none crosses.
  c.do(c.workers[0].id, { op: 'sendRandom', count: 10 });
  await until(() => randoms(c).length === 40, 10_000, 'the 10 of c at c');
  assert.strictEqual(randoms(c).filter((r) => r.from.host === 'c').length, 10);
  assert.deepStrictEqual([...randoms(a), ...randoms(b)], []);

  // Nobody handles it: its sender is told.
  a.do(sender.id, { op: 'sendRandom', action: 'nobody', count: 3 });
  const refused = await until(() => a.errors(sender.id).length > 0 && a.errors(sender.id), 10_000, 'NO_HANDLER for the sender');
  assert.strictEqual(refused[0].code, 'ERR_RCLUSTER_NO_HANDLER');
  await until(() => a.errors(sender.id).reduce((n, e) => n + (e.count || 1), 0) === 3, 10_000, () => `3 reported (got ${JSON.stringify(a.errors(sender.id))})`);
});
