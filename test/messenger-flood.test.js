'use strict';

// A worker that floods the messenger: every message is delivered or reported to its sender, the
// sender's own queue is bounded (ERR_RCLUSTER_QUEUE_FULL, then messenger.drained()), and what the
// primary holds for a receiver that does not keep up is bounded and given back once it drains.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { fixture, until, startCluster } = require('./helpers');

const MiB = 1024 * 1024;
/** The bound of one messenger queue with maxMessageSize 1 MiB (README: 64 MiB). */
const QUEUE_BOUND = 64 * MiB;
/** Memory files that may wait in one queue (docs/messenger-frames.md). */
const MAX_FILES = 512;

const rssOf = (pid = 'self') => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024;
const fdsOf = (pid = 'self') => fs.readdirSync(`/proc/${pid}/fd`).length;

/** This process's RSS once it has not moved by more than 1 MiB for 600 ms. */
async function settledRss() {
  let [last, since] = [rssOf(), Date.now()];
  return until(
    () => {
      const now = rssOf();
      if (Math.abs(now - last) > MiB) [last, since] = [now, Date.now()];
      return Date.now() - since >= 600 && now;
    },
    5000,
    'the RSS to settle',
  );
}

async function floodCluster(t, workers) {
  const cluster = startCluster(t, { exec: fixture('messenger-flood-worker.js'), workers, readiness: 'message', maxMessageSize: MiB });
  await cluster.ready;
  const ids = Object.values(cluster.workers).sort((a, b) => a.id - b.id);
  // Every worker has told the primary about its handlers.
  await cluster.messenger.map('stats');
  return { cluster, workers: ids };
}

/** Stops a worker (it reads nothing) until the test resumes it, or ends. */
function stop(t, worker) {
  worker.process.kill('SIGSTOP');
  t.after(() => worker.isDead() || worker.process.kill('SIGCONT'));
}

/** The flood's outcome once it has ended (a stopped worker answers nothing: it is not waited for). */
async function flooded(cluster, sender) {
  const answers = await cluster.messenger.mapSettled('flooded', null, { timeout: 500 });
  return answers.find((a) => a.id === sender.id).value;
}

/** Orders a flood and resolves with its outcome; `sample` runs every 20 ms meanwhile. */
async function flood(cluster, sender, order, sample = () => {}) {
  cluster.messenger.sendTo(sender.id, 'flood', order);
  const timer = setInterval(sample, 20);
  try {
    return await until(() => flooded(cluster, sender), 20_000, 'the end of the flood');
  } finally {
    clearInterval(timer);
  }
}

const stats = async (cluster) => Object.fromEntries((await cluster.messenger.mapSettled('stats', null, { timeout: 5000 })).map((e) => [e.id, e.value]));

/** Waits until each receiver got or was reported every message sent; returns the last stats. */
async function everyMessageAccounted(cluster, sender, receivers, sent) {
  let last;
  const account = () =>
    receivers.map((r) => `worker ${r.id}: ${last[r.id] ? last[r.id].received : '?'} received + ${last[sender.id] ? last[sender.id].reported[r.id] || 0 : '?'} reported of ${sent}`).join('; ');
  await until(
    async () => {
      last = await stats(cluster);
      return receivers.every((r) => last[r.id] && last[sender.id] && last[r.id].received + (last[sender.id].reported[r.id] || 0) === sent);
    },
    15_000,
    () => (last ? account() : 'stats'),
  );
  return last;
}

test('the primary\'s memory and descriptors are bounded during a flood and given back after it', async (t) => {
  const { cluster, workers } = await floodCluster(t, 2);
  const [sender, stopped] = workers;
  // First in this file, so that no earlier flood left its pages in this process.
  const [rss0, fds0] = [await settledRss(), fdsOf()];
  stop(t, stopped);
  let [maxRss, maxFds] = [rss0, fds0];
  const kinds = ['big-bytes', 'big-string', 'small-string'];
  const outcome = await flood(cluster, sender, { count: 6000, kinds, to: 'broadcast' }, () => {
    maxRss = Math.max(maxRss, rssOf());
    maxFds = Math.max(maxFds, fdsOf());
  });
  // Two queues (the stopped worker's and the sender's own) and what is read ahead of routing.
  assert.ok(maxRss - rss0 < 2 * QUEUE_BOUND + 64 * MiB, `the primary grew by ${(maxRss - rss0) / MiB} MiB`);
  // Two queues' files, those read ahead of routing (64), and a few on their way.
  assert.ok(maxFds - fds0 <= 2 * MAX_FILES + 64 + 32, `the primary held ${maxFds - fds0} more descriptors`);
  // It held enough for its return to mean something.
  assert.ok(maxRss - rss0 > 24 * MiB, `the primary held only ${(maxRss - rss0) / MiB} MiB`);
  stopped.process.kill('SIGCONT');
  await everyMessageAccounted(cluster, sender, workers, outcome.sent);
  await until(() => rssOf() < rss0 + 24 * MiB && fdsOf() <= fds0 + 4, 10_000, () => `the primary at ${(rssOf() - rss0) / MiB} MiB and ${fdsOf() - fds0} descriptors over its start`);
});

test('a flood against a slow receiver and a stopped one: every message is delivered or reported to its sender', async (t) => {
  const { cluster, workers } = await floodCluster(t, 3);
  const [sender, slow, stopped] = workers;
  await cluster.messenger.map('slow', { id: slow.id, ms: 0.2 });
  stop(t, stopped);
  // Strings and Buffers, small and in memory files: about 140 MiB in all, past the stopped
  // worker's bound.
  const kinds = ['small-string', 'big-string', 'small-bytes', 'big-bytes'];
  const outcome = await flood(cluster, sender, { count: 6000, kinds, to: 'broadcast' });
  assert.strictEqual(outcome.sent, 6000);
  stopped.process.kill('SIGCONT');
  const last = await everyMessageAccounted(cluster, sender, workers, outcome.sent);
  const reported = last[sender.id].reported;
  assert.ok(reported[stopped.id] > 0, 'the stopped worker held everything: the flood was too small to test anything');
  assert.deepStrictEqual(last[sender.id].codes, ['ERR_RCLUSTER_QUEUE_FULL']);
});

test('the sender\'s own queue is bounded: ERR_RCLUSTER_QUEUE_FULL at once, nothing of it sent, and drained() resumes', async (t) => {
  const { cluster, workers } = await floodCluster(t, 1);
  const [sender] = workers;
  // Messages to itself, sent from a loop that never returns to the event loop on its own: the
  // sender reads (while sending) only so much, the primary holds only so much for it, then
  // stops reading it, and its own queue fills. In line first (the bound in bytes), then in
  // memory files (the bound on files).
  for (const [kind, count] of [['mid-string', 9000], ['big-bytes', 4000]]) {
    let maxFds = 0;
    const before = (await stats(cluster))[sender.id];
    const outcome = await flood(cluster, sender, { count, kinds: [kind], to: sender.id }, () => {
      maxFds = Math.max(maxFds, fdsOf(sender.pid));
    });
    assert.ok(outcome.firstError, `${kind}: the queue never filled`);
    const { code, isError, action, message, sentBefore } = outcome.firstError;
    assert.deepStrictEqual({ code, isError, action }, { code: 'ERR_RCLUSTER_QUEUE_FULL', isError: true, action: 'item' });
    assert.match(message, /wait to be written/);
    assert.ok(sentBefore > 0);
    assert.strictEqual(outcome.sent, count, `${kind}: drained() did not let the sender resume`);
    // What threw was not sent: what arrived and what was reported add up to what did not throw.
    await until(
      async () => {
        const now = (await stats(cluster))[sender.id];
        const reported = (now.reported[sender.id] || 0) - (before.reported[sender.id] || 0);
        return now.received - before.received + reported === count;
      },
      15_000,
      `${kind}: every message sent accounted for`,
    );
    assert.ok(maxFds < MAX_FILES + 200, `${kind}: the sender held ${maxFds} descriptors`);
  }
});

test('the primary\'s own messenger is a bounded receiver: what it cannot hold is reported', async (t) => {
  const { cluster, workers } = await floodCluster(t, 1);
  const [sender] = workers;
  let received = 0;
  cluster.messenger.on('item', () => (received += 1));
  cluster.messenger.sendTo(sender.id, 'flood', { count: 2500, kinds: ['big-bytes'], to: 'primary' });
  // The primary's JavaScript is busy (its event loop blocked) while 160 MiB come for it.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4000);
  const outcome = await until(() => flooded(cluster, sender), 20_000, 'the end of the flood');
  let reported;
  await until(
    async () => {
      reported = (await stats(cluster))[sender.id].reported[0] || 0;
      return received + reported === outcome.sent;
    },
    15_000,
    () => `${received} received + ${reported} reported of ${outcome.sent}`,
  );
  assert.ok(reported > 0, 'the primary held the whole flood: nothing was tested');
});

test('what a worker sends just before it exits still goes out', async (t) => {
  const { cluster, workers } = await floodCluster(t, 1);
  const [sender] = workers;
  let received = 0;
  cluster.messenger.on('item', () => (received += 1));
  const errors = [];
  cluster.messenger.on('error', (error) => errors.push(error));
  // 45 MiB, within the bounds, more than the channel takes at once: most of it still waits in
  // the sender's write queue when it exits.
  const exited = new Promise((resolve) => cluster.once('exit', (worker, code) => resolve(code)));
  cluster.messenger.sendTo(sender.id, 'flood-and-exit', { count: 1500, kinds: ['mid-string'], to: 'primary' });
  assert.strictEqual(await exited, 0);
  await until(() => received === 1500, 10_000, () => `${received} of 1500 messages`);
  assert.deepStrictEqual(errors, []);
});

test('a process that keeps asking what nobody answers: the primary follows a bounded number of its requests', async (t) => {
  const { cluster, workers } = await floodCluster(t, 2);
  const [asker] = workers;
  // Past 8192 unanswered requests from one process, the next ones are refused at once.
  cluster.messenger.sendTo(asker.id, 'ask-forever', 9000);
  const refused = () => stats(cluster).then((s) => s[asker.id].rejected.ERR_RCLUSTER_QUEUE_FULL || 0);
  await until(async () => (await refused()) >= 9000 - 8192, 10_000, 'the refusals');
  // The others still work, and the count is exact: no more than that was refused.
  assert.deepStrictEqual((await cluster.messenger.map('stats')).length, 2);
  assert.strictEqual(await refused(), 9000 - 8192);
});
