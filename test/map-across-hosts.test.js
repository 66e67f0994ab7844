'use strict';

// map and mapSettled across hosts (option `redis`): hosts are primaries of their own
// (test/fixtures/host-primary.js) with 2 app workers each, around a real redis-server. The 'who'
// handler answers with its host, id and pid.

const test = require('node:test');
const assert = require('node:assert');
const { until } = require('./helpers');
const { skip, startHosts } = require('./hosts-helpers');

const outcome = (host, id, op) => host.received(id).find((r) => r.action === op);
const byHostThenId = (x, y) => (x.host === y.host ? x.id - y.id : x.host < y.host ? -1 : 1);

test('map covers every app worker of every host, ordered by host then id; mapSettled entries name their host', { skip }, async (t) => {
  const { hosts } = await startHosts(t, ['a', 'b', 'c']);
  const [a] = hosts;
  const [caller] = a.workers;
  const everyone = hosts.flatMap((h) => h.workers.map((w) => ({ host: h.hostId, id: w.id, pid: w.pid }))).sort(byHostThenId);

  a.do(caller.id, { op: 'map', timeout: 10_000 });
  const mapped = await until(() => outcome(a, caller.id, 'map'), 10_000, 'the map');
  assert.deepStrictEqual(mapped.entries, everyone, 'one answer per worker of each host, in order');

  a.do(caller.id, { op: 'mapSettled', timeout: 10_000 });
  const settled = await until(() => outcome(a, caller.id, 'mapSettled'), 10_000, 'the mapSettled');
  assert.deepStrictEqual(
    settled.entries,
    everyone.map((w) => ({ ...w, status: 'fulfilled', value: w })),
  );
});

test('a host SIGKILLed during a map: its workers are ERR_RCLUSTER_HOST_DIED entries (mapSettled) or the rejection (map), never a shorter array', { skip }, async (t) => {
  const { hosts, runs } = await startHosts(t, ['a', 'b', 'c']);
  const [a, b] = hosts;
  const [settledCaller, mapCaller] = a.workers;
  a.do(settledCaller.id, { op: 'mapSettled', ms: 8000, timeout: 20_000 });
  a.do(mapCaller.id, { op: 'map', ms: 8000, timeout: 20_000 });
  await until(() => runs().filter((r) => r.who && r.host === 'b').length === 4, 10_000, "both maps running on b's workers");
  process.kill(-b.child.pid, 'SIGKILL');
  const killedAt = Date.now();

  const rejected = await until(() => outcome(a, mapCaller.id, 'map'), 15_000, 'the map settled');
  assert.strictEqual(rejected.error.code, 'ERR_RCLUSTER_HOST_DIED');
  assert.strictEqual(rejected.error.host, 'b');
  assert.match(rejected.error.message, /host 'b'/);
  const diedIn = Date.now() - killedAt;

  const settled = await until(() => outcome(a, settledCaller.id, 'mapSettled'), 15_000, 'the mapSettled');
  const everyone = hosts.flatMap((h) => h.workers.map((w) => ({ host: h.hostId, id: w.id, pid: w.pid }))).sort(byHostThenId);
  assert.deepStrictEqual(settled.entries.map(({ host, id, pid }) => ({ host, id, pid })), everyone, 'every worker, in order');
  for (const entry of settled.entries) {
    if (entry.host === 'b') {
      assert.strictEqual(entry.status, 'rejected');
      assert.strictEqual(entry.reason.code, 'ERR_RCLUSTER_HOST_DIED');
      assert.strictEqual(entry.reason.host, 'b');
    } else {
      assert.deepStrictEqual(entry, { host: entry.host, id: entry.id, pid: entry.pid, status: 'fulfilled', value: { host: entry.host, id: entry.id, pid: entry.pid } });
    }
  }
  t.diagnostic(`map rejected ${diedIn} ms after b was SIGKILLed`);
});
