'use strict';

// rcluster/egg, the Egg framework (README, "Egg.js"): what egg's resolver loads for
// `--framework=rcluster/egg` or `"egg": { "framework": "rcluster/egg" }`.

module.exports = require('../lib/frameworks/egg/framework');
