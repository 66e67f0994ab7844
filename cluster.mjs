// `import ... from 'rcluster/cluster'`: the module `require('rcluster/cluster')` gives (Node's
// own `node:cluster` in a worker, rcluster's in a primary), with every name of its declarations
// exported in both, where `node:cluster` has only those of its side. Names are read once, at
// import, as `node:cluster` does: `workers` is one object changed in place and a worker's
// `worker` is set before its code runs, so both stay current; `settings` is replaced by
// `setupPrimary()`, so the default export has the current one.
import cluster from './cluster.js';

// A named import is called without its object: a method gets it bound.
const method = (name) => (typeof cluster[name] === 'function' ? cluster[name].bind(cluster) : undefined);

export default cluster;
export const { isPrimary, isMaster, isWorker, Worker, worker, workers, settings, schedulingPolicy, SCHED_NONE, SCHED_RR } = cluster;
export const fork = method('fork');
export const disconnect = method('disconnect');
export const setupPrimary = method('setupPrimary');
export const setupMaster = method('setupMaster');
export const addListener = method('addListener');
export const on = method('on');
export const once = method('once');
export const off = method('off');
export const prependListener = method('prependListener');
export const prependOnceListener = method('prependOnceListener');
export const removeListener = method('removeListener');
export const removeAllListeners = method('removeAllListeners');
export const emit = method('emit');
export const listeners = method('listeners');
export const rawListeners = method('rawListeners');
export const listenerCount = method('listenerCount');
export const eventNames = method('eventNames');
export const setMaxListeners = method('setMaxListeners');
export const getMaxListeners = method('getMaxListeners');
