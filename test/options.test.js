'use strict';

// Bad input to rcluster.start(): a thrown Error with a code, and nothing spawned.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const rcluster = require('..');
const { fixture, childrenOf, startCluster } = require('./helpers');

const worker = fixture('http-worker.js');

const cases = [
  ['no options', undefined, 'ERR_RCLUSTER_INVALID_OPTION', /options/],
  ['no exec', {}, 'ERR_RCLUSTER_INVALID_OPTION', /exec/],
  ['a missing script', { exec: path.join(os.tmpdir(), 'rcluster-no-such-script.js') }, 'ERR_RCLUSTER_EXEC_NOT_FOUND', /does not exist/],
  ['a directory as script', { exec: __dirname }, 'ERR_RCLUSTER_EXEC_UNREADABLE', /not a file/],
  ['an unknown schedule', { exec: worker, schedule: 'random' }, 'ERR_RCLUSTER_INVALID_OPTION', /schedule/],
  ['negative workers', { exec: worker, workers: -1 }, 'ERR_RCLUSTER_INVALID_OPTION', /workers/],
  ['fractional workers', { exec: worker, workers: 1.5 }, 'ERR_RCLUSTER_INVALID_OPTION', /workers/],
  ['a string killTimeout', { exec: worker, killTimeout: '5s' }, 'ERR_RCLUSTER_INVALID_OPTION', /killTimeout/],
  ['args not strings', { exec: worker, args: [1] }, 'ERR_RCLUSTER_INVALID_OPTION', /args/],
  ['a misspelled option', { exec: worker, worker: 2 }, 'ERR_RCLUSTER_INVALID_OPTION', /worker/],
  ['a missing cwd', { exec: 'x.js', cwd: path.join(os.tmpdir(), 'rcluster-no-such-dir') }, 'ERR_RCLUSTER_INVALID_OPTION', /cwd/],
  // JSON cannot carry these: each is named before the options cross to Rust.
  ['a NaN killTimeout', { exec: worker, killTimeout: NaN }, 'ERR_RCLUSTER_INVALID_OPTION', /`killTimeout` must be a finite number, got NaN/],
  ['an infinite restartWindow', { exec: worker, restartWindow: Infinity }, 'ERR_RCLUSTER_INVALID_OPTION', /`restartWindow` must be a finite number, got Infinity/],
  ['a -Infinity maxMemory', { exec: worker, maxMemory: -Infinity }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxMemory`/],
  ['a NaN in the agent', { exec: worker, agent: { exec: worker, env: { PORT: NaN } } }, 'ERR_RCLUSTER_INVALID_OPTION', /`agent\.env\.PORT`/],
  ['a NaN stdio descriptor', { exec: worker, stdio: ['pipe', 'pipe', 'pipe', NaN] }, 'ERR_RCLUSTER_INVALID_OPTION', /`stdio\[3\]`/],
  ['a function as workers', { exec: worker, workers: () => 2 }, 'ERR_RCLUSTER_INVALID_OPTION', /`workers`/],
  ['an undefined argument', { exec: worker, args: ['a', undefined] }, 'ERR_RCLUSTER_INVALID_OPTION', /`args\[1\]`/],
  // Zero would switch a safeguard off or make the cluster useless.
  ['an unknown stopSignal', { exec: worker, stopSignal: 'SIGFOO' }, 'ERR_RCLUSTER_INVALID_OPTION', /`stopSignal` must be a signal name/],
  ['SIGKILL as stopSignal', { exec: worker, stopSignal: 'SIGKILL' }, 'ERR_RCLUSTER_INVALID_OPTION', /`stopSignal`/],
  ['a number as stopSignal', { exec: worker, stopSignal: 15 }, 'ERR_RCLUSTER_INVALID_OPTION', /`stopSignal`/],
  ['a zero restartWindow', { exec: worker, restartWindow: 0 }, 'ERR_RCLUSTER_INVALID_OPTION', /`restartWindow` must be an integer from 1 to/],
  ['a zero readyTimeout', { exec: worker, readyTimeout: 0 }, 'ERR_RCLUSTER_INVALID_OPTION', /`readyTimeout`/],
  ['a zero maxMessageSize', { exec: worker, maxMessageSize: 0 }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxMessageSize`/],
  ['a zero maxMemory', { exec: worker, maxMemory: 0 }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxMemory`/],
  ['a zero maxMemory with a unit', { exec: worker, maxMemory: '0M' }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxMemory`/],
  // Negative, fractional and absurdly large values.
  ['a negative maxRestarts', { exec: worker, maxRestarts: -1 }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxRestarts`/],
  ['a fractional maxRestarts', { exec: worker, maxRestarts: 1.5 }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxRestarts`/],
  ['a fractional restartWindow', { exec: worker, restartWindow: 1000.5 }, 'ERR_RCLUSTER_INVALID_OPTION', /`restartWindow`/],
  ['a killTimeout past 24 days', { exec: worker, killTimeout: 2 ** 31 }, 'ERR_RCLUSTER_INVALID_OPTION', /`killTimeout` must be an integer from 0 to 2147483647/],
  ['a restartWindow past any Duration', { exec: worker, restartWindow: 1e300 }, 'ERR_RCLUSTER_INVALID_OPTION', /`restartWindow`/],
  ['a maxRestarts past u32', { exec: worker, maxRestarts: 2 ** 32 }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxRestarts`/],
  ['a maxMemory past 2^53 bytes', { exec: worker, maxMemory: '1e30G' }, 'ERR_RCLUSTER_INVALID_OPTION', /`maxMemory`/],
  // The cluster that spans hosts: a Redis URL of a taken form, names that fit in Redis keys.
  ['a TLS redis URL', { exec: worker, redis: 'rediss://h:6379' }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be 'redis:\/\/\[user:pass@\]host\[:port\]\[\/db\]' or 'unix:\/\/\/path'/],
  ['an http URL as redis', { exec: worker, redis: 'http://h:6379' }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be .*scheme/],
  ['an empty redis', { exec: worker, redis: '' }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be .*empty/],
  ['a redis port out of range', { exec: worker, redis: 'redis://h:65536' }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be .*port/],
  ['a non-numeric redis db', { exec: worker, redis: 'redis://h:6379/main' }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be .*database/],
  ['a number as redis', { exec: worker, redis: 6379 }, 'ERR_RCLUSTER_INVALID_OPTION', /`redis` must be/],
  ['a namespace with braces', { exec: worker, redis: 'redis://h', namespace: 'a{b}' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace` must be a name of 1 to 64/],
  ['a namespace with a colon', { exec: worker, redis: 'redis://h', namespace: 'a:b' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace`/],
  ['a namespace with a slash', { exec: worker, redis: 'redis://h', namespace: 'a/b' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace`/],
  ['a namespace with a space', { exec: worker, redis: 'redis://h', namespace: 'a b' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace`/],
  ['a namespace starting with a dot', { exec: worker, redis: 'redis://h', namespace: '.shop' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace`/],
  ['a namespace of 65 characters', { exec: worker, redis: 'redis://h', namespace: 'n'.repeat(65) }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace`/],
  ['an empty hostId', { exec: worker, redis: 'redis://h', hostId: '' }, 'ERR_RCLUSTER_INVALID_OPTION', /`hostId` must be an id of 1 to 128/],
  ['a hostId with a colon', { exec: worker, redis: 'redis://h', hostId: 'web:1' }, 'ERR_RCLUSTER_INVALID_OPTION', /`hostId`/],
  ['a hostId of 129 characters', { exec: worker, redis: 'redis://h', hostId: 'h'.repeat(129) }, 'ERR_RCLUSTER_INVALID_OPTION', /`hostId`/],
  ['a namespace without redis', { exec: worker, namespace: 'shop' }, 'ERR_RCLUSTER_INVALID_OPTION', /`namespace` needs `redis`/],
  ['a hostId without redis', { exec: worker, hostId: 'web-1' }, 'ERR_RCLUSTER_INVALID_OPTION', /`hostId` needs `redis`/],
];

for (const [name, options, code, message] of cases) {
  test(`start() rejects ${name} before spawning anything`, () => {
    const before = childrenOf(process.pid).length;
    assert.throws(() => rcluster.start(options), (error) => {
      assert.ok(error instanceof Error);
      assert.strictEqual(error.code, code);
      assert.match(error.message, message);
      return true;
    });
    assert.strictEqual(childrenOf(process.pid).length, before);
  });
}

test('a refused redis URL is shown without its password', () => {
  assert.throws(() => rcluster.start({ exec: worker, redis: 'rediss://user:s3cret@h:6379' }), (error) => {
    assert.strictEqual(error.code, 'ERR_RCLUSTER_INVALID_OPTION');
    assert.match(error.message, /`redis`.*rediss:\/\/user:\*\*\*@h:6379/);
    assert.doesNotMatch(error.message, /s3cret/);
    return true;
  });
});

test('redis, namespace and hostId of the taken forms are accepted; nothing connects at start', async (t) => {
  // Port 1: nothing listens there, and start() must not care.
  const cluster = startCluster(t, {
    exec: worker, workers: 1, control: false, redis: 'redis://user:pass@127.0.0.1:1/3', namespace: 'shop_prod-1.eu', hostId: 'web-01.eu',
  });
  await cluster.ready;
  const unix = startCluster(t, { exec: worker, workers: 1, control: false, redis: 'unix:///run/redis/redis.sock' });
  await unix.ready;
});

test('an unreadable script is reported as such', { skip: process.getuid() === 0 && 'root reads every file' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-'));
  const script = path.join(dir, 'secret.js');
  fs.writeFileSync(script, '');
  fs.chmodSync(script, 0);
  try {
    assert.throws(() => rcluster.start({ exec: script }), { code: 'ERR_RCLUSTER_EXEC_UNREADABLE' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('stop() rejects a bad timeout', async (t) => {
  const cluster = rcluster.start({ exec: worker, workers: 1 });
  t.after(() => cluster.stop({ timeout: 0 }));
  await assert.rejects(cluster.stop({ timeout: -5 }), { code: 'ERR_RCLUSTER_INVALID_OPTION' });
});

test('maxMemory takes a number of bytes past 4 GiB', async (t) => {
  // Node-API passes such integers to Rust as floats; they are still whole numbers of bytes.
  const cluster = startCluster(t, { exec: worker, workers: 1, maxMemory: 5 * 2 ** 30 });
  await cluster.ready;
});

test('reload(), scale() and stop() name a bad value', async (t) => {
  const cluster = startCluster(t, { exec: worker, workers: 1 });
  await cluster.ready;
  const invalid = (pattern) => ({ code: 'ERR_RCLUSTER_INVALID_OPTION', message: pattern });
  await assert.rejects(cluster.reload({ parallel: NaN }), invalid(/`parallel` must be a finite number/));
  await assert.rejects(cluster.reload({ trigger: 5 }), invalid(/`trigger`/));
  await assert.rejects(cluster.scale(Infinity), invalid(/`workers` must be a finite number/));
  await assert.rejects(cluster.scale(-1), invalid(/`workers`/));
  // Past 2^32 Node-API would have wrapped this around to 1 ms.
  await assert.rejects(cluster.stop({ timeout: 2 ** 32 + 1 }), invalid(/`timeout`/));
  assert.strictEqual(Object.keys(cluster.workers).length, 1);
});
