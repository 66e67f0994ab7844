'use strict';

// `npm run test:types`: compiles consumer/usage.ts, a project that depends on rcluster, under each
// of its tsconfig files (`module: nodenext`, where its package.json makes it an ES module, and
// `module: commonjs` with `esModuleInterop`), then runs what was emitted. The consumer finds
// rcluster in its node_modules, as an installed package is found: a link to this package, made
// here and removed at the end (TypeScript's `commonjs` resolution never finds a package from
// inside it).

const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const EventEmitter = require('node:events');
const { execFileSync } = require('node:child_process');

const consumer = path.join(__dirname, 'consumer');
const modules = path.join(consumer, 'node_modules');
const link = path.join(modules, 'rcluster');
const out = path.join(consumer, 'out');
const tsc = require.resolve('typescript/bin/tsc');

/** What each build leaves undefined of the names usage.ts imports, run in a primary. */
const expected = {
  // A primary has no `cluster.worker`; every other name is there.
  nodenext: (names) => assert.deepStrictEqual(names, ['clusterWorker']),
  // TypeScript's CommonJS helper copies the module's own properties: the event methods a cluster
  // inherits are missing (README: call them on the default import).
  commonjs: (names) => assert.deepStrictEqual(names.filter((name) => name !== 'clusterWorker' && !(name in EventEmitter.prototype)), []),
};

function clean() {
  fs.rmSync(out, { recursive: true, force: true });
  // The link alone, never what it points to.
  if (fs.existsSync(modules)) {
    if (fs.lstatSync(link, { throwIfNoEntry: false })) fs.unlinkSync(link);
    fs.rmdirSync(modules);
  }
}

clean();
try {
  fs.mkdirSync(modules);
  fs.symlinkSync(path.relative(modules, path.join(__dirname, '..', '..')), link, 'dir');
  for (const [name, check] of Object.entries(expected)) {
    execFileSync(process.execPath, [tsc, '-p', path.join(consumer, `tsconfig.${name}.json`)], { stdio: 'inherit', timeout: 120_000 });
    // Emitted .js files are CommonJS only where a package.json says so: the consumer's says module.
    if (name === 'commonjs') fs.writeFileSync(path.join(out, name, 'package.json'), '{ "type": "commonjs" }\n');
    const printed = execFileSync(process.execPath, [path.join(out, name, 'usage.js')], { cwd: consumer, encoding: 'utf8', timeout: 30_000 });
    check(JSON.parse(printed.trim().split('\n').pop()).undefined);
    console.log(`types: usage.ts compiled and ran under module ${name}`);
  }
} finally {
  clean();
}
