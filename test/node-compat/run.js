'use strict';

// Runs Node's own cluster tests (test/parallel/test-cluster-*.js of Node v20) against
// rcluster's Node-compatible primary: each file is run unchanged except that
// `require('cluster')` becomes `require('rcluster/cluster')`. The Node sources are downloaded
// once (checked against a fixed SHA-256) into .cache/.
//
//   node test/node-compat/run.js [name-filter]

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { EXCLUDED } = require('./excluded');

const NODE_VERSION = '20.19.2';
const SOURCE_URL = `http://deb.debian.org/debian/pool/main/n/nodejs/nodejs_${NODE_VERSION}+dfsg.orig.tar.xz`;
const SOURCE_SHA256 = '5e5559381ad031d245a8efa403458abbb73755f74c3e6380f185a4dd342b7949';
const TIMEOUT_MS = 60_000;
const CONCURRENCY = 2;

const projectRoot = path.resolve(__dirname, '../..');
const cache = path.join(__dirname, '.cache');
const tree = path.join(cache, `node-v${NODE_VERSION}`);
const testDir = path.join(tree, 'test', 'rcluster');

async function download() {
  const archive = path.join(cache, path.basename(SOURCE_URL));
  if (!fs.existsSync(archive)) {
    console.log(`downloading ${SOURCE_URL}`);
    const response = await fetch(SOURCE_URL);
    if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
    fs.mkdirSync(cache, { recursive: true });
    fs.writeFileSync(`${archive}.part`, Buffer.from(await response.arrayBuffer()));
    fs.renameSync(`${archive}.part`, archive);
  }
  const digest = crypto.createHash('sha256').update(fs.readFileSync(archive)).digest('hex');
  if (digest !== SOURCE_SHA256) {
    fs.rmSync(archive);
    throw new Error(`${archive}: SHA-256 ${digest}, expected ${SOURCE_SHA256}; removed it, run again`);
  }
  return archive;
}

async function prepare() {
  if (!fs.existsSync(path.join(tree, 'test', 'common', 'index.js'))) {
    const archive = await download();
    const prefix = `node-v${NODE_VERSION}/test`;
    execFileSync('tar', ['-xJf', archive, '-C', cache, '--wildcards', `${prefix}/parallel/test-cluster-*`, `${prefix}/common`, `${prefix}/fixtures`]);
  }
  // `require('rcluster')` from the copied tests (and the processes they spawn) finds this checkout.
  const modules = path.join(cache, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  const link = path.join(modules, 'rcluster');
  if (!fs.existsSync(link)) fs.symlinkSync(projectRoot, link, 'dir');
  fs.rmSync(testDir, { recursive: true, force: true });
  fs.mkdirSync(testDir, { recursive: true });
  const sources = path.join(tree, 'test', 'parallel');
  const names = fs.readdirSync(sources).filter((n) => /^test-cluster-.*\.js$/.test(n)).sort();
  for (const name of names) {
    const text = fs.readFileSync(path.join(sources, name), 'utf8');
    fs.writeFileSync(path.join(testDir, name), text.replace(/require\((['"])(?:node:)?cluster\1\)/g, "require('rcluster/cluster')"));
  }
  return { names, modules };
}

function flagsOf(file) {
  const match = /^\/\/ Flags: (.+)$/m.exec(fs.readFileSync(file, 'utf8'));
  return match ? match[1].trim().split(/\s+/) : [];
}

function runOne(name, slot, modules) {
  const file = path.join(testDir, name);
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [...flagsOf(file), file], {
      cwd: testDir,
      env: {
        ...process.env,
        NODE_PATH: modules,
        TEST_THREAD_ID: String(slot),
        NODE_COMMON_PORT: String(12346 + slot * 1000),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[timed out after ${TIMEOUT_MS} ms]`;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // Kill whatever the test left behind in its process group.
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
      resolve({ name, ok: code === 0, code, signal, output, ms: Date.now() - started });
    });
  });
}

async function main() {
  const filter = process.argv[2];
  const { names, modules } = await prepare();
  const selected = names.filter((n) => !filter || n.includes(filter));
  const queue = selected.filter((n) => !EXCLUDED[n]);
  const results = [];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, slot) => {
      while (queue.length > 0) {
        const result = await runOne(queue.shift(), slot, modules);
        results.push(result);
        console.log(`${result.ok ? 'ok  ' : 'FAIL'} ${result.name} (${result.ms} ms)`);
        if (!result.ok) console.log(result.output.replace(/^/gm, '    | '));
      }
    }),
  );
  const failed = results.filter((r) => !r.ok);
  const skipped = selected.length - results.length;
  console.log(`\nNode ${NODE_VERSION} cluster tests on ${process.version}: ${results.length - failed.length} passed, ${failed.length} failed, ${skipped} excluded (see excluded.js)`);
  if (failed.length > 0) {
    console.log(`failed: ${failed.map((r) => r.name).join(' ')}`);
    process.exitCode = 1;
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
