'use strict';

// require('rcluster/cluster'): Node's cluster API on the Rust primary. Node's own cluster test
// suite runs against it too (npm run test:node-compat); this is the quick check.

const test = require('node:test');
const assert = require('node:assert');
const { fixture, spawnNode, waitForOutput } = require('./helpers');

test('fork() without setupPrimary re-runs the main script with its arguments, as Node does', async (t) => {
  const primary = spawnNode(t, [fixture('compat-primary.js'), 'one', 'two']);
  const [line] = await waitForOutput(primary, /^\{"ids".*$/m);
  assert.deepStrictEqual(JSON.parse(line), { ids: [1, 2] });
  await waitForOutput(primary, /all disconnected/);
  const { code } = await primary.exited;
  assert.strictEqual(code, 0, primary.output);
});

test('in a worker, rcluster/cluster is Node\'s own cluster module', async (t) => {
  const child = spawnNode(t, ['-e', "const c = require('node:cluster'); if (c.isPrimary) c.fork(); else { process.stdout.write(String(require(process.argv[1]) === c)); process.disconnect(); }", require.resolve('../cluster')]);
  const { code } = await child.exited;
  assert.strictEqual(code, 0, child.output);
  assert.strictEqual(child.output, 'true');
});
