'use strict';

// This process's platform in napi-rs's naming ('linux-arm64-musl'), and the ones rcluster ships
// prebuilt.

const fs = require('node:fs');

const SUPPORTED = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl'];

function libc() {
  // A glibc process reports its glibc version; a musl one reports none.
  const header = process.report?.getReport?.().header;
  if (header) return header.glibcVersionRuntime ? 'gnu' : 'musl';
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl') ? 'musl' : 'gnu';
  } catch {
    return 'gnu';
  }
}

function platformName() {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  return `linux-${process.arch}-${libc()}`;
}

module.exports = { SUPPORTED, platformName };
