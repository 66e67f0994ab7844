'use strict';

// consume across hosts (option `redis`): hosts are primaries of their own (test/fixtures/host-primary.js)
// with 2 app workers each, around a real redis-server. Every run of the 'job' handler is a line in a file
// the hosts share, so that the test counts where and how often each call ran.

const test = require('node:test');
const assert = require('node:assert');
const { until } = require('./helpers');
const { skip, startHosts } = require('./hosts-helpers');

const results = (host, id) => host.received(id).filter((r) => r.action === 'result');

test('consume from one host runs on every host in turn, each call once, and its answer comes back', { skip }, async (t) => {
  const { hosts: [a, b], runs } = await startHosts(t, ['a', 'b']);
  const [caller] = a.workers;
  a.do(caller.id, { op: 'consume', count: 40, timeout: 10_000 });
  await until(() => results(a, caller.id).length === 40, 15_000, () => `40 results (got ${results(a, caller.id).length})`);
  const got = results(a, caller.id).sort((x, y) => x.n - y.n);
  assert.deepStrictEqual(got.filter((r) => r.code), [], 'no call failed');
  const ran = runs();
  assert.strictEqual(ran.length, 40, 'each call ran once');
  assert.deepStrictEqual(new Set(ran.map((r) => r.n)).size, 40);
  for (const r of got) {
    const run = ran.find((x) => x.n === r.n);
    assert.deepStrictEqual(r.value, { n: r.n, host: run.host, id: run.id }, 'the answer of the run');
  }
  const onB = ran.filter((r) => r.host === 'b').length;
  assert.ok(onB >= 10 && onB <= 30, `spread over both hosts: ${onB} of 40 on b`);
  assert.deepStrictEqual(new Set(ran.filter((r) => r.host === 'b').map((r) => r.id)), new Set(b.workers.map((w) => w.id)), "both of b's workers ran some");
});

test('a consume goes on to a host that handles it; none does: ERR_RCLUSTER_NO_HANDLER', { skip }, async (t) => {
  const { hosts: [a, b] } = await startHosts(t, ['a', 'b']);
  const [caller] = a.workers;
  a.do(caller.id, { op: 'consume', action: 'nobody', count: 4, timeout: 10_000 });
  await until(() => results(a, caller.id).length === 4, 10_000, 'the 4 refusals');
  for (const r of results(a, caller.id)) assert.strictEqual(r.code, 'ERR_RCLUSTER_NO_HANDLER', r.message);
  assert.deepStrictEqual(b.workers.flatMap((w) => b.errors(w.id)), []);
});

test('a host SIGKILLed while it runs calls: each call runs at most once, and every caller settles with the truth', { skip }, async (t) => {
  const { hosts: [a, b], runs } = await startHosts(t, ['a', 'b', 'c']);
  const [caller] = a.workers;
  const COUNT = 90;
  // A call every 40 ms, each running 1.5 s: b always has some running, some on their way.
  a.do(caller.id, { op: 'consume', count: COUNT, ms: 1500, every: 40, timeout: 20_000 });
  await until(() => runs().filter((r) => r.host === 'b').length >= 5, 10_000, 'b runs some calls');
  process.kill(-b.child.pid, 'SIGKILL');
  const killedAt = Date.now();
  await until(() => results(a, caller.id).length === COUNT, 25_000, () => `${COUNT} results (got ${results(a, caller.id).length})`);
  const settledIn = Date.now() - killedAt;

  const ran = runs();
  const runsOf = (n) => ran.filter((r) => r.n === n);
  for (let n = 1; n <= COUNT; n++) assert.ok(runsOf(n).length <= 1, `call ${n} ran ${runsOf(n).length} times`);
  const got = results(a, caller.id);
  const died = got.filter((r) => r.code === 'ERR_RCLUSTER_HOST_DIED');
  assert.ok(died.length >= 1, 'calls that b had got ERR_RCLUSTER_HOST_DIED');
  for (const r of got) {
    if (r.code === undefined) {
      assert.strictEqual(runsOf(r.n).length, 1, `call ${r.n} answered: it ran`);
      assert.strictEqual(r.value.host, runsOf(r.n)[0].host);
      continue;
    }
    assert.strictEqual(r.code, 'ERR_RCLUSTER_HOST_DIED', `call ${r.n}: ${r.code} ${r.message}`);
    assert.strictEqual(r.host, 'b');
    assert.ok(r.ran === false || r.ran === 'unknown', `call ${r.n}: ran ${r.ran}`);
    if (r.ran === false) assert.strictEqual(runsOf(r.n).length, 0, `call ${r.n} said not run`);
    else assert.ok(runsOf(r.n).every((run) => run.host === 'b'), `call ${r.n} ran only on b`);
  }
  // Calls sent after the kill went to the hosts alive.
  assert.ok(got.filter((r) => r.code === undefined && r.value.host !== 'b').length >= 30);
  t.diagnostic(`${died.length} calls got HOST_DIED (${died.filter((r) => r.ran === false).length} with ran: false); all ${COUNT} settled ${settledIn} ms after the kill`);
});
