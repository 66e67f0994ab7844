'use strict';

// rcluster start examples/rcluster.config.js                   # development
// rcluster start examples/rcluster.config.js --env production  # env_production over env
// rcluster start examples/rcluster.config.js --only web        # one of the apps
//
// Each app is a cluster of its own, with its own name and control socket (rcluster status web).
// Paths are resolved against this file's folder.

module.exports = {
  apps: [
    {
      name: 'web',
      script: 'hello.js',
      workers: 2,
      killTimeout: 10000,
      maxMemory: '300M',
      env: { PORT: 3000, LOG_LEVEL: 'debug' },
      env_production: { LOG_LEVEL: 'warn', NODE_ENV: 'production' },
    },
    {
      name: 'jobs',
      script: 'hello.js',
      workers: 1,
      env: { PORT: 3001, LOG_LEVEL: 'debug' },
      env_production: { LOG_LEVEL: 'info', NODE_ENV: 'production' },
    },
  ],
};
