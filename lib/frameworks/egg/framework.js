'use strict';

// rcluster/egg: everything the app's `egg` exports, with
// - startCluster: egg's master (the app's @eggjs/cluster) on rcluster's primary (master.js);
// - Application and Agent whose messenger also has consume / map / mapSettled (requests.js).

const path = require('node:path');
const { resolveEgg } = require('./resolve');
const { addRequests } = require('./requests');

const FRAMEWORK_DIR = path.join(__dirname, '..', '..', '..', 'egg');
const rcluster = require('../../../index.js');
const resolved = resolveEgg();
const egg = require(resolved.egg);

class Application extends egg.Application {
  constructor(options) {
    super(options);
    addRequests(this.messenger, rcluster);
  }
}

class Agent extends egg.Agent {
  constructor(options) {
    super(options);
    addRequests(this.messenger, rcluster);
  }
}

/** Starts the app as egg's startCluster does, with rcluster's primary running the processes. */
async function startCluster(options = {}) {
  const { eggCluster } = resolveEgg(options.baseDir || resolved.baseDir);
  const { createMaster } = require('./master');
  const Master = createMaster(eggCluster, rcluster);
  await new Master({ framework: FRAMEWORK_DIR, ...options }).ready();
}

module.exports = { ...egg, Application, Agent, startCluster };
