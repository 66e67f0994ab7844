'use strict';

// Egg and @eggjs/cluster are the app's, not rcluster's: both are resolved from the app's
// directory (its baseDir), never from where rcluster is installed.

const path = require('node:path');

/**
 * The app's directory: the options egg passes as the first argument of its master and of each
 * worker entry, else RCLUSTER_EGG_BASE_DIR (set for rcluster/egg's children), else the cwd.
 */
function appBaseDir() {
  const arg = process.argv[2];
  if (typeof arg === 'string' && arg.startsWith('{')) {
    try {
      const options = JSON.parse(arg);
      if (options && typeof options.baseDir === 'string') return options.baseDir;
    } catch {
      // not egg's options
    }
  }
  return process.env.RCLUSTER_EGG_BASE_DIR || process.cwd();
}

function notFound(name, baseDir, cause) {
  const error = new Error(
    `rcluster/egg: cannot find \`${name}\` from the app's directory ${baseDir}; install it in the app (\`npm install ${name}\`), rcluster/egg uses the app's own copy`,
  );
  error.code = 'ERR_RCLUSTER_EGG_NOT_FOUND';
  error.cause = cause;
  return error;
}

/** The resolved files of the app's `egg` and `@eggjs/cluster` (egg's own dependency if the app has none). */
function resolveEgg(baseDir = appBaseDir()) {
  let egg;
  try {
    egg = require.resolve('egg', { paths: [baseDir] });
  } catch (error) {
    throw notFound('egg', baseDir, error);
  }
  let eggCluster;
  try {
    eggCluster = require.resolve('@eggjs/cluster', { paths: [baseDir] });
  } catch {
    try {
      eggCluster = require.resolve('@eggjs/cluster', { paths: [path.dirname(egg)] });
    } catch (error) {
      throw notFound('@eggjs/cluster', baseDir, error);
    }
  }
  return { baseDir, egg, eggCluster };
}

module.exports = { appBaseDir, resolveEgg };
