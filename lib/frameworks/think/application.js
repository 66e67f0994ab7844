'use strict';

// `require('rcluster/think')`: ThinkJS's Application, run on rcluster. Drop-in for
// `require('thinkjs')` in an app's entry (`new Application({ ROOT_PATH, APP_PATH, env }).run()`).
//
// ThinkJS and think-cluster are the app's, not rcluster's: they are resolved from the app's
// ROOT_PATH (the copy think-crontab uses as well), and patched before ThinkJS loads:
// - think-cluster's `messenger` becomes ./messenger.js on rcluster's messenger;
// - its `Master` becomes an rcluster primary, its `Worker` tells rcluster when it must be replaced
//   (./cluster-roles.js);
// - log4js (think-logger3) logs in each process instead of sending each line to a think-cluster
//   master over `process.send`;
// - a worker's THINK_PROCESS_ID is its rcluster worker id (think-cluster numbers its forks from 1).

const fs = require('node:fs');
const path = require('node:path');
const child = require('../../child/child');
const { ThinkMessenger } = require('./messenger');
const { RclusterMaster, rclusterWorker, leaving } = require('./cluster-roles');

const PATCHED = Symbol.for('rcluster.think.patched');

function missing(name, root, cause) {
  const error = new Error(
    `rcluster/think: cannot find '${name}' from the app's folder ${root}; rcluster/think runs the app's own ` +
      `ThinkJS: install it in the app (npm install ${name})`,
  );
  error.code = 'ERR_RCLUSTER_THINK_NOT_FOUND';
  error.cause = cause;
  return error;
}

/** The folder of package `name` as resolved from `from`, or null. */
function packageDir(name, from) {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [from] }));
  } catch {
    return null;
  }
}

/** The messenger `think.messenger` is, in this process. */
let thinkMessenger = null;
let master = null;

function messengerFor() {
  if (thinkMessenger) return thinkMessenger;
  if (child.isWorker) {
    thinkMessenger = new ThinkMessenger(() => require('../../../index.js').messenger, { workerId: child.worker.id, leaving }).attach();
  } else {
    thinkMessenger = new ThinkMessenger(() => {
      if (!master || !master.cluster) throw new Error('think.messenger: the cluster has not started yet');
      return master.cluster.messenger;
    });
  }
  return thinkMessenger;
}

function patchThinkCluster(thinkCluster, messenger) {
  if (thinkCluster[PATCHED]) return;
  thinkCluster[PATCHED] = true;
  thinkCluster.messenger = messenger;
  thinkCluster.Worker = rclusterWorker(thinkCluster.Worker);
  thinkCluster.Master = class extends RclusterMaster {
    constructor(options) {
      super(options);
      master = this;
    }
  };
}

function patchLog4js(log4js) {
  if (!log4js || log4js[PATCHED]) return;
  log4js[PATCHED] = true;
  const configure = log4js.configure;
  log4js.configure = function configureWithoutClusterRelay(config) {
    const own = typeof config === 'object' && config !== null ? { ...config, disableClustering: true } : config;
    return Reflect.apply(configure, this, [own]);
  };
}

/** Loads the app's ThinkJS, patched; returns its Application class. */
function loadThink(root) {
  const thinkDir = packageDir('thinkjs', root);
  if (!thinkDir) throw missing('thinkjs', root);
  const clusterDirs = new Set();
  const own = packageDir('think-cluster', thinkDir);
  if (!own) throw missing('think-cluster', thinkDir);
  clusterDirs.add(own);
  const crontab = packageDir('think-crontab', thinkDir);
  const crontabCluster = crontab && packageDir('think-cluster', crontab);
  if (crontabCluster) clusterDirs.add(crontabCluster);
  const messenger = messengerFor();
  for (const dir of clusterDirs) patchThinkCluster(require(dir), messenger);
  const logger = packageDir('think-logger3', thinkDir);
  const log4js = logger && packageDir('log4js', logger);
  if (log4js) patchLog4js(require(log4js));
  if (child.isWorker && child.worker) process.env.THINK_PROCESS_ID = String(child.worker.id);
  const Application = require(thinkDir);
  if (global.think) global.think.messenger = messenger;
  return Application;
}

/**
 * ThinkJS's Application (the app's own copy), for the app's ROOT_PATH. `new` returns an instance
 * of the app's class, patched to run on rcluster.
 */
class Application {
  constructor(options = {}) {
    if (!options || !options.ROOT_PATH) throw new TypeError('options.ROOT_PATH must be set');
    const ThinkApplication = loadThink(options.ROOT_PATH);
    const app = new ThinkApplication(options);
    // Every process writes runtime/config/<env>.json as it starts, and ThinkJS's mkdir of that
    // folder fails when two processes create it at once (a fresh app: one gets EEXIST on
    // runtime/, gives up, and then cannot write). A recursive mkdir is safe to race.
    try {
      fs.mkdirSync(path.join(app.options.RUNTIME_PATH, 'config'), { recursive: true });
    } catch {
      // ThinkJS reports what is wrong with the folder itself when it writes.
    }
    return app;
  }

  /** The app's own ThinkJS Application class, found from `rootPath`, patched to run on rcluster. */
  static loadThinkJS(rootPath) {
    return loadThink(rootPath);
  }

  /** ThinkJS's global `think` (once ThinkJS is loaded), as `require('thinkjs').think`. */
  static get think() {
    return global.think;
  }
}

module.exports = Application;
