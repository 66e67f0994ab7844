'use strict';

// What `rcluster/register` redirects, and where to: `cluster` and `node:cluster`, asked for by
// any module but rcluster's own, become rcluster's cluster module. Shared by the require hook
// (register.js) and the module hooks that do the same for `import` (register-hooks.mjs).

const path = require('node:path');
const { pathToFileURL, fileURLToPath } = require('node:url');

const ROOT = path.join(__dirname, '..', '..');
const OWN_DIR = path.join(ROOT, 'lib') + path.sep;
const OWN_FILES = new Set(['index.js', 'index.mjs', 'cluster.js', 'cluster.mjs', 'register.js'].map((file) => path.join(ROOT, file)));
const SPECIFIERS = new Set(['cluster', 'node:cluster']);
/** What `import` gets: the ES module face of rcluster/cluster, every name exported. */
const FOR_IMPORT = pathToFileURL(path.join(ROOT, 'cluster.mjs')).href;
/** What a require that reaches the module hooks gets: the module the require hook gives. */
const FOR_REQUIRE = pathToFileURL(path.join(__dirname, 'node-cluster.js')).href;

/** Whether the file is one of rcluster's own modules. */
function isOwnFile(filename) {
  return typeof filename === 'string' && (filename.startsWith(OWN_DIR) || OWN_FILES.has(filename));
}

/** Whether a request for `specifier`, from the module at `parent` (a path), is redirected. */
function redirects(specifier, parent) {
  return SPECIFIERS.has(specifier) && !isOwnFile(parent);
}

/**
 * A module hook's `resolve`, for module.registerHooks (synchronous) and module.register (whose
 * chain awaits what it returns).
 */
function resolve(specifier, context, nextResolve) {
  const parentURL = context.parentURL;
  const parent = typeof parentURL === 'string' && parentURL.startsWith('file:') ? fileURLToPath(parentURL) : undefined;
  if (redirects(specifier, parent)) {
    const forRequire = Array.isArray(context.conditions) && context.conditions.includes('require');
    return forRequire ? { url: FOR_REQUIRE, format: 'commonjs', shortCircuit: true } : { url: FOR_IMPORT, format: 'module', shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

module.exports = { redirects, resolve };
