// `require('rcluster/cluster')`: the API of Node's `cluster` module, run by rcluster's primary.
import type nodeCluster from 'node:cluster';

declare const cluster: typeof nodeCluster;
export = cluster;
