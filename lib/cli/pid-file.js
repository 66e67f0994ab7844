'use strict';

// `--pid-file FILE`: this process's pid, written once the clusters have started and removed at
// exit. A file that names another live process is someone else's: it is left alone.

const fs = require('node:fs');
const path = require('node:path');
const { CliError } = require('./failures');

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** The pid the file holds, or null (no file, or not a pid). */
function readPid(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return null;
    throw new CliError(`cannot read the pid file ${file}: ${error.message}`, 1, error.code);
  }
  return /^\s*\d+\s*$/.test(text) ? Number(text) : null;
}

/** Refuses a pid file that names a live process other than this one. */
function checkPidFile(file) {
  const pid = readPid(file);
  if (pid !== null && pid !== process.pid && pid > 0 && isAlive(pid)) {
    throw new CliError(`the pid file ${file} names process ${pid}, which is running (is this app started already?)`, 1, 'ERR_RCLUSTER_PID_FILE');
  }
}

/** Writes this process's pid, whole or not at all (a temporary file renamed over it). */
function writePidFile(file) {
  checkPidFile(file);
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, `${process.pid}\n`, { mode: 0o644 });
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new CliError(`cannot write the pid file ${file}: ${error.message}`, 1, error.code);
  }
}

/** Removes the file if it still holds this process's pid. */
function removePidFile(file) {
  try {
    if (readPid(file) === process.pid) fs.unlinkSync(file);
  } catch {
    // Gone already, or not ours to remove.
  }
}

module.exports = { checkPidFile, writePidFile, removePidFile, isAlive };
