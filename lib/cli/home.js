'use strict';

// Where running clusters are found (docs/control-protocol.md, "Where"): the control folder, the
// socket of a name, and the rule a name follows (the same as the primary's).

const os = require('node:os');
const path = require('node:path');

/** `$RCLUSTER_HOME`, else `$XDG_RUNTIME_DIR/rcluster`, else `~/.rcluster`. */
function controlHome(env = process.env) {
  if (env.RCLUSTER_HOME) return path.resolve(env.RCLUSTER_HOME);
  if (env.XDG_RUNTIME_DIR) return path.join(path.resolve(env.XDG_RUNTIME_DIR), 'rcluster');
  return path.join(os.homedir(), '.rcluster');
}

function socketPath(name, env = process.env) {
  return path.join(controlHome(env), `${name}.sock`);
}

/** 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`, without `..`. */
function isClusterName(name) {
  return typeof name === 'string' && /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(name) && !name.includes('..');
}

const NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-' and without '..'";

/**
 * The name a cluster gets when none is given, as the primary computes it: the script's file name
 * without its extension, with what a name cannot hold replaced by '-'.
 */
function defaultClusterName(exec) {
  let name = path.parse(exec).name.replace(/[^A-Za-z0-9_.-]/g, '-');
  name = Array.from(name).slice(0, 64).join('');
  while (name.includes('..')) name = name.replace(/\.\./g, '.');
  name = name.replace(/^[.-]+/, '');
  return name === '' ? 'app' : name;
}

module.exports = { controlHome, socketPath, isClusterName, defaultClusterName, NAME_RULE };
