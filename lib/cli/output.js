'use strict';

// The CLI's own lines: `[rcluster] ...` on stdout, problems on stderr.

function log(line) {
  process.stdout.write(`[rcluster] ${line}\n`);
}

function logError(line) {
  process.stderr.write(`[rcluster] ${line}\n`);
}

module.exports = { log, logError };
