'use strict';

// A config file for `rcluster start`: one app (`{ name, script, ...start() options }`) or several
// (`{ apps: [...] }`), as JSON or as a JavaScript module (CommonJS or ES). Its keys are checked
// here, so that a mistake names the key, the app and the file; the values are left to start(),
// which names the option.

const fs = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { UsageError, CliError } = require('./failures');
const { defaultClusterName, isClusterName, NAME_RULE } = require('./home');

/**
 * A config file is recognised by its name: `*.config.js`, `.cjs`, `.mjs`, `.json`, or any
 * `*.json`. Anything else is a script: running it to find out would start the app in the CLI.
 */
function isConfigFile(file) {
  const base = path.basename(file);
  return /\.config\.(?:js|cjs|mjs)$/.test(base) || /\.json$/.test(base);
}

/** start()'s options (src/primary/options/raw.rs `RawOptions`), but `stdio`, which it refuses. */
const START_KEYS = new Set([
  'exec', 'args', 'execArgv', 'execPath', 'env', 'cwd', 'serialization', 'uid', 'gid',
  'workers', 'schedule', 'killTimeout', 'readiness', 'readyTimeout', 'maxRestarts', 'restartWindow',
  'restartDelay', 'maxRestartDelay', 'maxMessageSize', 'agent', 'reloadParallel', 'reloadAgent',
  'childRuntime', 'heartbeatInterval', 'heartbeatTimeout', 'maxMemory', 'listenFds', 'stopSignal',
  'name', 'control', 'metrics', 'logPrefix', 'redis', 'namespace', 'hostId',
]);

/** PM2 ecosystem keys a config copied from PM2 may hold, and what rcluster calls them. */
const PM2_KEYS = {
  instances: 'workers',
  exec_mode: 'nothing: every app runs as a cluster',
  node_args: 'execArgv',
  interpreter_args: 'execArgv',
  max_memory_restart: 'maxMemory',
  kill_timeout: 'killTimeout',
  listen_timeout: 'readyTimeout',
  wait_ready: "readiness: 'message'",
  max_restarts: 'maxRestarts',
  restart_delay: 'restartDelay',
  exp_backoff_restart_delay: 'restartDelay',
  watch: 'nothing: reload on deploy with rcluster reload',
};

function invalid(file, message) {
  return new UsageError(`${path.basename(file)}: ${message}`, 'start');
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Reads the file: JSON, or the module's default export (CommonJS `module.exports` included). */
async function loadConfig(file) {
  let config;
  try {
    if (/\.json$/.test(file)) {
      config = JSON.parse(fs.readFileSync(file, 'utf8'));
    } else {
      const namespace = await import(pathToFileURL(file).href);
      config = namespace.default !== undefined ? namespace.default : { ...namespace };
    }
  } catch (error) {
    const what = error.code === 'ENOENT' || error.code === 'ERR_MODULE_NOT_FOUND' ? 'no such file' : error.message;
    throw new CliError(`cannot read the config file ${file}: ${what}`, 1, 'ERR_RCLUSTER_CONFIG');
  }
  return config;
}

/** Resolves a relative path against the config file's folder. */
function resolveFrom(dir, value) {
  return typeof value === 'string' && value !== '' ? path.resolve(dir, value) : value;
}

/** One app of the file as start() options, `env_<environment>` merged over `env`. */
function appOptions(file, app, index, environment) {
  if (!isObject(app)) throw invalid(file, `app ${index + 1} must be an object`);
  const where = typeof app.name === 'string' ? `app '${app.name}'` : `app ${index + 1}`;
  const dir = path.dirname(file);
  const options = {};
  const envs = {};
  for (const [key, value] of Object.entries(app)) {
    if (key === 'script') continue;
    const selected = /^env_(.+)$/.exec(key);
    if (selected) {
      if (!isObject(value)) throw invalid(file, `${where}: '${key}' must be an object of variables`);
      envs[selected[1]] = value;
    } else if (START_KEYS.has(key)) {
      options[key] = value;
    } else {
      const hint = Object.hasOwn(PM2_KEYS, key) ? ` (rcluster's name for it: ${PM2_KEYS[key]})` : '';
      throw invalid(file, `${where}: unknown key '${key}'${hint}`);
    }
  }
  if (app.name !== undefined && !isClusterName(app.name)) throw invalid(file, `${where}: 'name' must be ${NAME_RULE}, got ${JSON.stringify(app.name)}`);
  if (app.script !== undefined && app.exec !== undefined) throw invalid(file, `${where}: give 'script' or 'exec', not both`);
  const script = app.script !== undefined ? app.script : app.exec;
  if (typeof script !== 'string' || script === '') throw invalid(file, `${where}: 'script' must be the path of the app's script`);
  options.exec = path.resolve(dir, script);
  if (options.cwd !== undefined) options.cwd = resolveFrom(dir, options.cwd);
  if (typeof options.agent === 'string') options.agent = resolveFrom(dir, options.agent);
  else if (isObject(options.agent) && options.agent.exec !== undefined) {
    options.agent = { ...options.agent, exec: resolveFrom(dir, options.agent.exec) };
  }
  if (environment !== null && Object.hasOwn(envs, environment)) {
    if (options.env !== undefined && !isObject(options.env)) throw invalid(file, `${where}: 'env' must be an object of variables`);
    options.env = { ...(options.env || {}), ...envs[environment] };
  }
  return { options, hasEnvironment: environment !== null && Object.hasOwn(envs, environment) };
}

/**
 * The apps of a loaded config, each as start() options: `only` picks some by name, `environment`
 * selects `env_<environment>`. Throws UsageError naming the file for a mistake in it.
 */
function appsFromConfig(config, file, { environment = null, only = null } = {}) {
  if (!isObject(config)) throw invalid(file, 'must export an object: { script, ... } or { apps: [...] }');
  let apps;
  if (config.apps !== undefined) {
    const extra = Object.keys(config).find((key) => key !== 'apps');
    if (extra !== undefined) throw invalid(file, `unknown key '${extra}' beside 'apps' (each app's options go in its object)`);
    if (!Array.isArray(config.apps) || config.apps.length === 0) throw invalid(file, "'apps' must be a non-empty array");
    apps = config.apps;
  } else {
    apps = [config];
  }
  let selected = apps.map((app, index) => appOptions(file, app, index, environment));
  const names = selected.map(({ options }) => (typeof options.name === 'string' ? options.name : defaultClusterName(options.exec)));
  const seen = new Set();
  for (const name of names) {
    if (seen.has(name)) throw invalid(file, `two apps are named '${name}' (give each its own 'name')`);
    seen.add(name);
  }
  if (only !== null) {
    for (const name of only) {
      if (!names.includes(name)) throw invalid(file, `--only ${name}: no such app (its apps: ${names.join(', ')})`);
    }
    selected = selected.filter((_, index) => only.includes(names[index]));
  }
  if (environment !== null && !selected.some(({ hasEnvironment }) => hasEnvironment)) {
    throw invalid(file, `--env ${environment}: no app has 'env_${environment}'`);
  }
  return selected.map(({ options }) => options);
}

module.exports = { isConfigFile, loadConfig, appsFromConfig, START_KEYS };
