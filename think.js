'use strict';

// `require('rcluster/think')`: a drop-in for `require('thinkjs')` in a ThinkJS app's entry that
// runs the app on rcluster. See README.md, "ThinkJS".

module.exports = require('./lib/frameworks/think/application.js');
