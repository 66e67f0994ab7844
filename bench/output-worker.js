'use strict';
// Writes BENCH_OUTPUT_MB of 128-byte lines to stdout as fast as stdout takes them, then tells the
// primary how long it took.
const rcluster = require('..');

const total = Number(process.env.BENCH_OUTPUT_MB || 200) * 1024 * 1024;
const line = `${'x'.repeat(127)}\n`;
const chunk = line.repeat(512);

async function main() {
  const started = process.hrtime.bigint();
  for (let written = 0; written < total; written += chunk.length) {
    if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
  }
  await new Promise((resolve) => process.stdout.write('', resolve));
  rcluster.messenger.sendTo('primary', 'done', Number(process.hrtime.bigint() - started) / 1e6);
}
main();
setInterval(() => {}, 1 << 30);
