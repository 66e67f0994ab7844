'use strict';

// Bad input to rcluster.start(): a thrown Error with a code, and nothing spawned.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const rcluster = require('..');
const { fixture, childrenOf } = require('./helpers');

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
