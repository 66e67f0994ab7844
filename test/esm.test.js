'use strict';

// rcluster from ES modules: every name the declarations of an entry point export can be imported
// by name, in a primary and in workers, and is the CommonJS module's own (one instance).

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { fixture, once, spawnNode } = require('./helpers');
const pkg = require('../package.json');

const root = path.join(__dirname, '..');

/** Entry points loaded for what they do, with no names to import: `rcluster/register`. */
const PRELOADS = ['./register'];

/** The package's entry points with names, from its `exports`: 'rcluster', 'rcluster/cluster'. */
const entries = Object.entries(pkg.exports)
  .filter(([subpath]) => subpath !== './package.json' && !PRELOADS.includes(subpath))
  .map(([subpath, targets]) => ({ specifier: path.posix.join(pkg.name, subpath), targets }));
const specifiers = entries.map((entry) => entry.specifier).sort();

let declared;
/**
 * The value names each entry point's declarations export, as TypeScript reads them (for
 * `rcluster/cluster`, the properties of its `export =`, which TypeScript lets a module import by
 * name): what a TypeScript user may import, and so what the ES modules must export.
 */
function declaredNames() {
  if (declared) return declared;
  const ts = require('typescript');
  const files = entries.map((entry) => path.join(root, entry.targets.types));
  const program = ts.createProgram(files, { strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: ['node'] });
  const checker = program.getTypeChecker();
  declared = {};
  entries.forEach((entry, i) => {
    const symbol = checker.getSymbolAtLocation(program.getSourceFile(files[i]));
    declared[entry.specifier] = checker
      .getExportsAndPropertiesOfModule(symbol)
      .filter((s) => s.flags & ts.SymbolFlags.Value)
      .map((s) => s.name)
      // A member named by a symbol cannot be imported.
      .filter((name) => !name.startsWith('__@'))
      .sort();
  });
  return declared;
}

/** Runs an ES module fixture to its end; resolves with the report it prints. */
async function run(t, name) {
  const child = spawnNode(t, [fixture(name)], { cwd: root, env: { ...process.env, ESM_ENTRIES: specifiers.join(',') } });
  const [code, signal] = await once(child, 'close', 30_000);
  assert.strictEqual(code, 0, `${name} exited with ${code} ${signal}:\n${child.output}`);
  const line = /^esm-result (.*)$/m.exec(child.output);
  assert.ok(line, `${name} printed no result:\n${child.output}`);
  return JSON.parse(line[1]);
}

/** Checks what one process saw of the entry points (test/fixtures/esm-report.mjs). */
function checkEntries(report, where) {
  assert.deepStrictEqual(Object.keys(report).sort(), specifiers, where);
  for (const specifier of specifiers) {
    const seen = report[specifier];
    const names = declaredNames()[specifier];
    assert.ok(names.length > 0, `no names declared for ${specifier}`);
    const at = `${where}, ${specifier}`;
    assert.deepStrictEqual(names.filter((name) => !seen.names.includes(name)), [], `${at}: declared, not exported by the ES module`);
    assert.deepStrictEqual(seen.names.filter((name) => !names.includes(name) && seen.notInCjs.includes(name)), [], `${at}: exported, neither declared nor in the CommonJS module`);
    assert.deepStrictEqual(seen.differing, [], `${at}: not the CommonJS module's values`);
    assert.strictEqual(seen.defaultIsCjs, true, `${at}: the default export is not the CommonJS module`);
  }
}

test('each entry point: types first, an ES module for import, and both in the packed tarball', () => {
  assert.deepStrictEqual(specifiers, ['rcluster', 'rcluster/cluster', 'rcluster/think']);
  const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', timeout: 60_000 }))[0].files.map((f) => f.path);
  for (const { specifier, targets } of entries) {
    assert.strictEqual(Object.keys(targets)[0], 'types', `${specifier}: TypeScript takes the first condition it knows`);
    assert.match(targets.import, /\.mjs$/, specifier);
    for (const file of Object.values(targets)) assert.ok(packed.includes(path.posix.normalize(file)), `${specifier}: ${file} is not packed`);
  }
  // A preload is required (`node -r`) or imported (`--import`) as one CommonJS file, typed too.
  for (const subpath of PRELOADS) {
    const targets = pkg.exports[subpath];
    assert.deepStrictEqual(Object.keys(targets), ['types', 'default'], subpath);
    for (const file of Object.values(targets)) assert.ok(packed.includes(path.posix.normalize(file)), `${subpath}: ${file} is not packed`);
  }
});

test('an ES module primary imports every name of rcluster; its two ES module workers, every name of both entry points', async (t) => {
  const { primary, workers } = await run(t, 'esm-primary.mjs');
  checkEntries(primary.entries, 'primary');
  assert.deepStrictEqual(
    { isPrimary: primary.isPrimary, isWorker: primary.isWorker, isAgent: primary.isAgent, worker: primary.worker, messenger: primary.messenger, ready: primary.ready, reload: primary.reload },
    { isPrimary: true, isWorker: false, isAgent: false, worker: null, messenger: null, ready: false, reload: false },
  );
  // Both answered on the messenger they imported, after ready() (readiness 'message') and each
  // once: two processes.
  assert.strictEqual(workers.length, 2);
  assert.strictEqual(new Set(workers.map((w) => w.pid)).size, 2);
  for (const w of workers) {
    const where = `worker ${w.workerId}`;
    checkEntries(w.entries, where);
    assert.deepStrictEqual(
      { isPrimary: w.isPrimary, isWorker: w.isWorker, isAgent: w.isAgent, clusterIsPrimary: w.clusterIsPrimary, clusterIsWorker: w.clusterIsWorker },
      { isPrimary: false, isWorker: true, isAgent: false, clusterIsPrimary: false, clusterIsWorker: true },
      where,
    );
    // Node's `cluster.worker` is set before the worker's code runs, so the imported one is it.
    assert.ok(w.workerId > 0, where);
    assert.strictEqual(w.clusterWorkerId, w.workerId, where);
    // on, once, emit, listenerCount and off by name act on Node's cluster object.
    assert.deepStrictEqual(w.events, { heard: [1, 1], counted: 1 }, where);
    // Importing the messenger opened nothing; its first handler opened the channel.
    assert.deepStrictEqual({ atImport: w.channelAtImport, afterUse: w.channelAfterUse }, { atImport: false, afterUse: true }, where);
  }
});

test("an ES module primary of rcluster/cluster: fork, on, once, workers and disconnect by name, with an ES module worker", async (t) => {
  const { primary, worker } = await run(t, 'esm-cluster-primary.mjs');
  checkEntries(primary.entries, 'primary');
  checkEntries(worker.entries, 'worker');
  assert.strictEqual(primary.isPrimary, true);
  assert.strictEqual(primary.isWorker, false);
  assert.deepStrictEqual(primary.forked, [primary.id]);
  // `workers`, imported once, is the object the cluster fills and empties.
  assert.strictEqual(primary.listed, true);
  assert.strictEqual(primary.left, 0);
  assert.deepStrictEqual(primary.exit, { id: primary.id, code: 0, signal: null });
  assert.strictEqual(worker.from, primary.id);
  assert.deepStrictEqual({ isPrimary: worker.clusterIsPrimary, isWorker: worker.clusterIsWorker, id: worker.clusterWorkerId }, { isPrimary: false, isWorker: true, id: primary.id });
  assert.deepStrictEqual(worker.events, { heard: [1, 1], counted: 1 });
});
