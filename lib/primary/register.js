'use strict';

// `rcluster/register` in a primary: `require('cluster')` and `require('node:cluster')` give
// rcluster's Node-compatible cluster module (node-cluster.js), which is loaded only when the app
// asks for it, so a program that never asks runs as it would without the preload.
//
// It is installed in a primary only (register.js): in a worker, `rcluster/cluster` (cluster.js at
// the package root) and the child runtime (lib/child/) must get Node's worker side, or the worker
// believes it is a primary and forks in turn, without end. rcluster's own modules get Node's
// module in the primary too: they ask it which side they run on, and must hear the truth.

const Module = require('node:module');
const path = require('node:path');

const ROOT = path.join(__dirname, '..', '..');
const OWN_DIR = path.join(ROOT, 'lib') + path.sep;
const OWN_FILES = new Set(['index.js', 'cluster.js', 'register.js'].map((file) => path.join(ROOT, file)));
const REQUESTS = new Set(['cluster', 'node:cluster']);

/** Whether `parent` (the module that calls require) is one of rcluster's own. */
function isOwn(parent) {
  const filename = parent && parent.filename;
  return typeof filename === 'string' && (filename.startsWith(OWN_DIR) || OWN_FILES.has(filename));
}

let installed = false;

/** Redirects `require('cluster')` of every module but rcluster's own; once per process. */
function install() {
  if (installed) return;
  installed = true;
  const load = Module._load;
  Module._load = function _load(request, parent, isMain) {
    if (REQUESTS.has(request) && !isOwn(parent)) return require('./node-cluster');
    return load.apply(this, arguments);
  };
}

module.exports = { install, isOwn };
