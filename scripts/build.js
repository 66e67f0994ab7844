'use strict';

// `npm install` in a clone of rcluster, or of a git dependency on it, builds the native addon
// from source, which needs Rust. Installs from the npm registry never run this: they get a
// prebuilt platform package instead.

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' });
if (cargo.error || cargo.status !== 0) {
  console.error(
    [
      'rcluster: building the native addon from source needs Rust, and `cargo` was not found on PATH.',
      '  - Install Rust (https://rustup.rs) and run `npm install` again, or',
      '  - install rcluster from the npm registry, which has prebuilt binaries for Linux x64 and arm64 (glibc and musl).',
    ].join('\n'),
  );
  process.exit(1);
}

// npm puts node_modules/.bin, where @napi-rs/cli's `napi` is, on PATH for package scripts.
const args = ['build', '--platform', '--release', '--output-dir', 'lib', '--no-js', '--dts', '../target/native.d.ts'];
const build = spawnSync('napi', args, { stdio: 'inherit', cwd: path.join(__dirname, '..') });
if (build.error) console.error(`rcluster: cannot run napi (${build.error.message}); run this through npm (npm run build)`);
process.exit(build.status ?? 1);
