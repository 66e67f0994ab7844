'use strict';

// What the primary passed to this child for rcluster alone: its RCLUSTER_* variables, and the
// `--require` of the child runtime in its execArgv. Read once, on the first require (the child
// runtime's, or the app's `require('rcluster')`), then taken out of `process.env` and
// `process.execArgv`, so that the processes this child starts (`child_process.fork`, `spawn`,
// `exec`) inherit neither: a grandchild is no worker and runs no child runtime. A process that
// is no child of a supervised cluster (RCLUSTER_WORKER_KIND is what says it is one) is left as
// it is: a primary's own variables are its business. One variable stays: a cluster agent's
// RCLUSTER_AGENT_EPOCH, its fencing token, which the agent's program and what it starts may read
// from the environment.

const RUNTIME = require.resolve('./child-runtime.js');

const isChild = process.env.RCLUSTER_WORKER_KIND !== undefined;
const variables = {};
for (const name of isChild ? Object.keys(process.env) : []) {
  if (name.startsWith('RCLUSTER_')) {
    variables[name] = process.env[name];
    if (name !== 'RCLUSTER_AGENT_EPOCH') delete process.env[name];
  }
}

const execArgv = isChild ? process.execArgv : [];
for (let i = 0; i < execArgv.length; ) {
  if ((execArgv[i] === '--require' || execArgv[i] === '-r') && execArgv[i + 1] === RUNTIME) {
    execArgv.splice(i, 2);
  } else if (execArgv[i] === `--require=${RUNTIME}` || execArgv[i] === `-r=${RUNTIME}`) {
    execArgv.splice(i, 1);
  } else {
    i++;
  }
}

module.exports = Object.freeze(variables);
