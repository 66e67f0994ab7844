// `import ... from 'rcluster'`: the CommonJS module itself (one instance, however it is loaded),
// with its names exported one by one: Node's detection of CommonJS exports misses them.
import rcluster from './index.js';

export default rcluster;
// `messenger` is read once, here: it is made when first asked for and opens its channel only
// when it is used, so importing it costs a child nothing.
export const { isPrimary, isWorker, isAgent, worker, agentEpoch, messenger, ready, reload, start } = rcluster;
