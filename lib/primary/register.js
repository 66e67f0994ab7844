'use strict';

// `rcluster/register` in a primary: `require('cluster')` and `require('node:cluster')`, and
// `import ... from 'node:cluster'`, give rcluster's Node-compatible cluster module
// (node-cluster.js; `import` gets it through cluster.mjs). It is loaded only when the app asks
// for it, so a program that never asks runs as it would without the preload.
//
// It is installed in a primary only (register.js): in a worker, `rcluster/cluster` (cluster.js at
// the package root) and the child runtime (lib/child/) must get Node's worker side, or the worker
// believes it is a primary and forks in turn, without end. rcluster's own modules get Node's
// module in the primary too: they ask it which side they run on, and must hear the truth.

const Module = require('node:module');
const { pathToFileURL } = require('node:url');
const { redirects, resolve } = require('./register-resolve');

let installed = false;

/** Redirects `cluster` for every module but rcluster's own; once per process. */
function install() {
  if (installed) return;
  installed = true;
  // require: Node's CommonJS loader, through which every require passes (Node 20 has no hook
  // for the requires of built-in modules).
  const load = Module._load;
  Module._load = function _load(request, parent, isMain) {
    if (redirects(request, parent && parent.filename)) return require('./node-cluster');
    return load.apply(this, arguments);
  };
  // import: module hooks. Node 22.15 and later run them in this thread; before, module.register
  // runs them on a thread of their own.
  if (typeof Module.registerHooks === 'function') {
    Module.registerHooks({ resolve });
  } else if (typeof Module.register === 'function') {
    Module.register('./register-hooks.mjs', pathToFileURL(__filename));
  }
}

module.exports = { install };
