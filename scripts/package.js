'use strict';

// `npm run package`: builds the addon for every platform rcluster ships and writes into dist/
// the main package's tarball and one tarball per platform package (napi-rs layout, npm/<name>/),
// all at the main package's version. `--host` packs the main package and this machine's
// platform package from the local build (lib/), without cross builds: for tests. `--out DIR`
// writes into DIR instead of dist/.
//
// Cross builds go through @napi-rs/cli's `--cross-compile`, which runs cargo-zigbuild with zig
// (from the `ziglang` Python package). The glibc builds target glibc 2.17, so that they load on
// every distribution still in use; the musl builds link musl dynamically, as Node's musl builds
// load addons.
//
// Each tarball is packed from a staging folder, so that the published manifest carries no
// build scripts: a consumer's npm has nothing to run and nothing to warn about.

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
// `--out DIR` writes the tarballs there instead of dist/.
const outAt = process.argv.indexOf('--out');
const dist = outAt > 0 ? path.resolve(process.argv[outAt + 1]) : path.join(root, 'dist');
const manifest = require('../package.json');

const TARGETS = [
  { platform: 'linux-x64-gnu', target: 'x86_64-unknown-linux-gnu.2.17' },
  { platform: 'linux-arm64-gnu', target: 'aarch64-unknown-linux-gnu.2.17' },
  { platform: 'linux-x64-musl', target: 'x86_64-unknown-linux-musl' },
  { platform: 'linux-arm64-musl', target: 'aarch64-unknown-linux-musl' },
];

function run(program, args, options = {}) {
  console.log(`$ ${program} ${args.join(' ')}`);
  const result = spawnSync(program, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.error || result.status !== 0) {
    console.error(`rcluster package: ${program} failed (${result.error ? result.error.message : `exit ${result.status}`})`);
    process.exit(1);
  }
}

/** The folder of the zig binary that the `ziglang` Python package ships. */
function zigFolder() {
  try {
    return execFileSync('python3', ['-c', 'import ziglang, os; print(os.path.dirname(ziglang.__file__))'], { encoding: 'utf8' }).trim();
  } catch {
    console.error('rcluster package: cross builds need zig (`pip install ziglang`) and cargo-zigbuild (`cargo install cargo-zigbuild`)');
    process.exit(1);
  }
}

/** A fresh, empty staging folder for one tarball. */
function stage(name) {
  const dir = path.join(dist, '.stage', name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Writes `pkg` as the staged folder's manifest and packs the folder into dist/. */
function pack(dir, pkg) {
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  run('npm', ['pack', '--pack-destination', dist, '--ignore-scripts'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  fs.rmSync(dir, { recursive: true, force: true });
}

function packMain() {
  const published = { ...manifest };
  delete published.scripts;
  delete published.devDependencies;
  const dir = stage('main');
  // The folders and files the manifest lists, less the local build (`!lib/*.node`).
  const files = manifest.files.filter((f) => !f.startsWith('!')).map((f) => f.replace(/\/$/, ''));
  for (const file of [...files, 'README.md', 'SECURITY.md']) {
    fs.cpSync(path.join(root, file), path.join(dir, file), { recursive: true, filter: (src) => !src.endsWith('.node') });
  }
  pack(dir, published);
}

function packPlatform(platform, addon) {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'npm', platform, 'package.json'), 'utf8'));
  if (pkg.version !== manifest.version) {
    console.error(`rcluster package: npm/${platform} is at ${pkg.version}, the main package at ${manifest.version}`);
    process.exit(1);
  }
  const dir = stage(platform);
  fs.copyFileSync(addon, path.join(dir, `rcluster.${platform}.node`));
  pack(dir, pkg);
}

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist, { recursive: true });
if (process.argv.includes('--host')) {
  const { platformName } = require('../lib/platform');
  const platform = platformName();
  const addon = path.join(root, 'lib', `rcluster.${platform}.node`);
  if (!fs.existsSync(addon)) run('npm', ['run', 'build']);
  packPlatform(platform, addon);
} else {
  const env = { ...process.env, PATH: `${zigFolder()}${path.delimiter}${process.env.PATH}` };
  const built = path.join(root, 'target', 'packages');
  for (const { platform, target } of TARGETS) {
    const out = path.join(built, platform);
    // `--dts` is relative to the output folder; the type file is not shipped.
    const dts = path.relative(out, path.join(root, 'target', 'native.d.ts'));
    run('napi', ['build', '--platform', '--release', '--cross-compile', '--target', target, '--output-dir', out, '--no-js', '--dts', dts], {
      env: { ...env, RUSTFLAGS: target.includes('musl') ? '-C target-feature=-crt-static' : '' },
    });
    packPlatform(platform, path.join(out, `rcluster.${platform}.node`));
  }
}
packMain();
fs.rmSync(path.join(dist, '.stage'), { recursive: true, force: true });
console.log(`dist/: ${fs.readdirSync(dist).join(', ')}`);
