// `rcluster/register` exports nothing: loaded first (`node -r rcluster/register app.js`, or
// `import 'rcluster/register'` before the app asks for `cluster`), it makes `require('cluster')`
// in a primary give rcluster's cluster module (`rcluster/cluster`).
export {};
