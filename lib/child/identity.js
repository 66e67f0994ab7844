'use strict';

// Who this process is in an rcluster cluster: the primary tells a child its role through
// RCLUSTER_WORKER_KIND and RCLUSTER_WORKER_ID (a worker of `rcluster/cluster`, through Node's
// NODE_UNIQUE_ID). Read once, from the environment only (environment.js takes rcluster's
// variables out of process.env as it reads them).

const variables = require('./environment');

const kind = variables.RCLUSTER_WORKER_KIND;
const isAgent = kind === 'agent';
const isWorker = kind === 'app' || (!isAgent && process.env.NODE_UNIQUE_ID !== undefined);
const isPrimary = !isWorker && !isAgent;

const worker = isPrimary
  ? null
  : Object.freeze({
      id: Number(variables.RCLUSTER_WORKER_ID || process.env.NODE_UNIQUE_ID),
      pid: process.pid,
      kind: isAgent ? 'agent' : 'app',
    });

// A cluster agent's epoch (agent: { scope: 'cluster' }): larger for each agent the namespace
// elects; null elsewhere.
const epoch = isAgent && variables.RCLUSTER_AGENT_EPOCH !== undefined ? Number(variables.RCLUSTER_AGENT_EPOCH) : NaN;
const agentEpoch = Number.isSafeInteger(epoch) ? epoch : null;

module.exports = { isPrimary, isWorker, isAgent, worker, agentEpoch };
