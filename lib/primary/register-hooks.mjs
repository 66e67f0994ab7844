// rcluster/register's module hooks where Node has only module.register (Node 20.6 to 22.14):
// they run on Node's hooks thread and redirect `import ... from 'node:cluster'` as
// register-resolve.js says.
export { resolve } from './register-resolve.js';
