'use strict';

// Egg's master (@eggjs/cluster's Master, the app's own copy) with its agent and app workers run
// by rcluster's primary instead of child_process.fork and cfork. Everything else is egg's: its
// messenger and its routing (to parent / master / agent / app, receiverPid), `egg-pids`,
// `agent-start`, `egg-ready`, its log lines, its signals (SIGINT, SIGQUIT, SIGTERM), the pid
// file. The children run egg's real entries (app_worker.js, agent_worker.js) with
// lib/frameworks/egg/child.js preloaded, which puts egg's user messages on rcluster's own
// channel and tells rcluster when egg's agent has started.

const fs = require('node:fs');
const path = require('node:path');

const CHILD = require.resolve('./child.js');
/** ms a child gets to start: egg's own default workerStartTimeout, 10 minutes. */
const START_TIMEOUT = 10 * 60 * 1000;

/** The pids of every descendant of `pid`, read from /proc. */
function descendants(pid) {
  const children = new Map();
  let entries = [];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  const found = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()) || []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** Whether `pid` is not rcluster's guard (the process that ends the workers if the primary is killed). */
function notGuard(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'rcluster-guard';
  } catch {
    return false;
  }
}

function signal(pids, name) {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch {
      // already gone
    }
  }
}

/** Kills what a child left behind (egg's terminate does the same with ps-tree): SIGTERM, then SIGKILL after `timeout`. */
async function killTree(pids, timeout) {
  if (pids.length === 0) return;
  signal(pids, 'SIGTERM');
  const deadline = Date.now() + timeout;
  const alive = () => pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  while (alive().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  signal(alive(), 'SIGKILL');
}

/** Node flags the children get: the master's own, as cfork gives them, without its inspector. */
function childExecArgv() {
  return process.execArgv.filter((flag) => !/^--(inspect|debug)/.test(flag));
}

/** An egg message, as egg's master takes it from a child. */
function eggMessage(message) {
  return typeof message === 'string' ? { action: message, data: message } : message;
}

/**
 * Whether `message` is an egg-ready that `worker` already had: egg's master sends egg-ready to
 * every app worker each time one starts after the launch, and each process gets it once.
 */
function onceReady(worker, message) {
  if (!message || message.action !== 'egg-ready') return false;
  if (worker.toldReady) return true;
  worker.toldReady = true;
  return false;
}

/**
 * Whether `message` is an egg-ready for an app worker that does not listen yet. Egg's master sends
 * egg-ready to every app worker when one starts, including one still loading, whose messenger may
 * not exist yet; it sends it again once that worker listens, so this early one is left out
 * rather than lost (and counted as told) in a worker that cannot hear it.
 */
function tooEarly(worker, message) {
  return Boolean(message) && message.action === 'egg-ready' && worker.state !== 'listening';
}

/** Egg's view of one app worker (what AppProcessWorker gives egg's master), over an rcluster worker. */
class EggAppWorker {
  constructor(worker, id) {
    this.worker = worker;
    this.id = id;
    this.workerId = worker.pid;
    this.state = 'none';
    this.disableRefork = true;
    this.isDevReload = false;
    this.pending = [];
    this.announced = false;
    this.toldReady = false;
  }

  get exitedAfterDisconnect() {
    return Boolean(this.worker.exitedAfterDisconnect);
  }

  get exitCode() {
    return this.worker.process.exitCode;
  }

  send(message) {
    if (!this.worker.process.connected || tooEarly(this, message) || onceReady(this, message)) return;
    try {
      this.worker.send(message);
    } catch {
      // its channel closed meanwhile: egg's sendmessage drops it too
    }
  }

  clean() {
    this.worker.removeAllListeners('message');
  }
}

/** Egg's view of the agent (what AgentProcessWorker gives egg's master). */
class EggAgentWorker {
  constructor(worker, id) {
    this.worker = worker;
    this.id = id;
    this.workerId = worker.pid;
    this.status = 'starting';
    this.toldReady = false;
  }

  send(message) {
    if (!this.worker.process.connected || onceReady(this, message)) return;
    try {
      this.worker.send(message);
    } catch {
      // closed meanwhile
    }
  }
}

/**
 * The rcluster cluster behind egg's master: started when egg forks its agent, with the app
 * workers forked by rcluster once the agent is ready (egg's order).
 */
class Driver {
  constructor(master, rcluster) {
    this.master = master;
    this.rcluster = rcluster;
    this.cluster = null;
    this.agentUtils = null;
    this.appUtils = null;
    this.stopping = null;
    this.appIds = 0;
    this.apps = new Map();
    this.terminated = new WeakSet();
  }

  start() {
    if (this.cluster) return;
    const { options } = this.master;
    const args = [JSON.stringify(options)];
    const execArgv = [...childExecArgv(), '--require', CHILD];
    const agentExecArgv = [...execArgv];
    if (options.isDebug) {
      agentExecArgv.push(`--inspect-port=${process.env.EGG_AGENT_DEBUG_PORT ?? 5800}`);
    }
    const timeout = closeTimeouts().app;
    this.cluster = this.rcluster.start({
      exec: this.appUtils.getAppWorkerFile(),
      args,
      workers: options.workers,
      cwd: options.baseDir,
      execArgv,
      env: { RCLUSTER_EGG_BASE_DIR: options.baseDir },
      readyTimeout: START_TIMEOUT,
      killTimeout: timeout,
      agent: {
        exec: this.agentUtils.getAgentWorkerFile(),
        args,
        execArgv: agentExecArgv,
        readiness: 'message',
      },
    });
    this.cluster.ready.catch(() => {});
    this.cluster.on('error', (error) => this.master.logger.error(error));
    this.cluster.on('warning', (warning) => this.master.logger.warn('[master] %s', warning.message));
    this.cluster.on('fork', (worker) => (worker.kind === 'agent' ? this.agentUtils.adopt(worker) : this.appUtils.adopt(worker)));
    this.cluster.on('online', (worker) => {
      const app = this.apps.get(worker.id);
      if (app && app.state === 'none') app.state = 'online';
    });
    this.cluster.on('disconnect', (worker) => {
      if (worker.kind === 'agent') return;
      const app = this.apps.get(worker.id);
      if (app) {
        app.state = 'disconnected';
        this.appUtils.onDisconnect(app);
      }
      // Egg's workers leave on SIGTERM (graceful-process): a worker that rcluster sent away
      // (a reload, a stop) gets it once its channel is closed.
      this.terminate(worker);
    });
    this.cluster.on('exit', (worker, code, signalName) => {
      if (worker.kind === 'agent') this.agentUtils.onExit(worker, code, signalName);
      else this.appUtils.onExit(worker, code, signalName);
    });
  }

  /**
   * Sends SIGTERM to `worker` once: egg's graceful-process handles one (`process.once`), and a
   * second would kill the worker in the middle of its close.
   */
  terminate(worker) {
    if (this.terminated.has(worker)) return;
    this.terminated.add(worker);
    worker.process.kill('SIGTERM');
  }

  /** Stops the cluster once (app workers first, the agent last), with egg's close timeout. */
  stop() {
    if (!this.stopping) {
      this.stopping = this.cluster ? this.cluster.stop({ timeout: closeTimeouts().app }) : Promise.resolve();
    }
    return this.stopping;
  }
}

/** Egg's close timeouts (EGG_APP_CLOSE_TIMEOUT, EGG_AGENT_CLOSE_TIMEOUT, EGG_MASTER_CLOSE_TIMEOUT). */
function closeTimeouts() {
  const legacy = process.env.EGG_MASTER_CLOSE_TIMEOUT || '5000';
  return {
    app: parseInt(process.env.EGG_APP_CLOSE_TIMEOUT || legacy, 10),
    agent: parseInt(process.env.EGG_AGENT_CLOSE_TIMEOUT || legacy, 10),
  };
}

/** The Master class of the app's @eggjs/cluster (its CommonJS entry, `eggClusterFile`), run on rcluster. */
function createMaster(eggClusterFile, rcluster) {
  const { Master } = require(eggClusterFile);
  return class RclusterEggMaster extends Master {
    startByProcess() {
      const EventEmitter = require('node:events');
      const master = this;
      const driver = new Driver(this, rcluster);
      this.rcluster = driver;
      const entries = workerEntries();

      class AgentUtils extends EventEmitter {
        constructor() {
          super();
          this.options = master.options;
          this.startTime = 0;
          this.instance = null;
          this.ids = 0;
          this.pending = null;
        }

        getAgentWorkerFile() {
          return entries.agent;
        }

        fork() {
          this.startTime = Date.now();
          driver.start();
          // A replacement rcluster forked while egg's master still had the old one.
          if (this.pending && (!this.instance || this.instance.worker.isDead())) this.announce(this.pending);
          return this;
        }

        adopt(worker) {
          const agent = { worker, messages: [] };
          worker.on('message', (message) => {
            if (this.instance && this.instance.worker === worker) this.relay(message);
            else agent.messages.push(message);
          });
          if (this.instance && !this.instance.worker.isDead()) {
            this.pending = agent;
            return;
          }
          this.announce(agent);
        }

        announce(agent) {
          this.pending = null;
          this.startTime = this.startTime || Date.now();
          const instance = new EggAgentWorker(agent.worker, ++this.ids);
          this.instance = instance;
          this.emit('agent_forked', instance);
          master.log('[master] agent_worker#%s:%s start with clusterPort:%s', instance.id, instance.workerId, master.options.clusterPort);
          if (master.options.isDebug) {
            master.messenger.send({
              to: 'parent',
              from: 'agent',
              action: 'debug',
              data: { debugPort: process.env.EGG_AGENT_DEBUG_PORT ?? 5800, pid: instance.workerId, workerId: instance.workerId },
            });
          }
          for (const message of agent.messages.splice(0)) this.relay(message);
        }

        relay(message) {
          const msg = eggMessage(message);
          if (!msg || typeof msg !== 'object') return;
          msg.from = 'agent';
          master.messenger.send(msg);
        }

        onExit(worker, code, signalName) {
          if (this.pending && this.pending.worker === worker) {
            this.pending = null;
            return;
          }
          if (!this.instance || this.instance.worker !== worker) return;
          master.messenger.send({ action: 'agent-exit', data: { code, signal: signalName }, to: 'master', from: 'agent' });
          // egg's master forks a new agent a second later; rcluster has done it already.
          if (this.pending && master.isStarted) this.startTime = Date.now();
        }

        clean() {
          if (this.instance) this.instance.worker.removeAllListeners('message');
        }

        async kill(timeout) {
          if (!this.instance) return;
          master.log('[master] kill agent worker with signal SIGTERM');
          this.clean();
          const tree = descendants(this.instance.workerId);
          await Promise.race([driver.stop(), new Promise((resolve) => setTimeout(resolve, timeout + 1000).unref())]);
          await killTree(tree, timeout);
        }
      }

      class AppUtils extends EventEmitter {
        constructor() {
          super();
          this.options = master.options;
          this.startTime = 0;
          this.startSuccessCount = 0;
          this.isAllWorkerStarted = false;
          this.forked = false;
        }

        getAppWorkerFile() {
          return entries.app;
        }

        fork() {
          this.startTime = Date.now();
          this.startSuccessCount = 0;
          master.log('[master] start appWorker with args %j (process)', [JSON.stringify(master.options)]);
          this.forked = true;
          this.debugPort = process.debugPort;
          for (const app of driver.apps.values()) if (!app.announced) this.announce(app);
          return this;
        }

        adopt(worker) {
          const app = new EggAppWorker(worker, ++driver.appIds);
          driver.apps.set(worker.id, app);
          worker.on('message', (message) => {
            if (app.announced) this.relay(message);
            else app.pending.push(message);
          });
          if (this.forked) this.announce(app);
        }

        announce(app) {
          app.announced = true;
          this.emit('worker_forked', app);
          app.disableRefork = true;
          master.log('[master] app_worker#%s:%s start, state: %s, current workers: %j',
            app.id, app.workerId, app.state, this.currentIds());
          if (master.options.isDebug) {
            this.debugPort += 1;
            master.messenger.send({
              to: 'parent',
              from: 'app',
              action: 'debug',
              data: { debugPort: this.debugPort, pid: app.workerId, workerId: app.workerId },
            });
          }
          for (const message of app.pending.splice(0)) this.relay(message);
        }

        currentIds() {
          return [...driver.apps.values()].filter((app) => app.state !== 'dead').map((app) => String(app.id));
        }

        relay(message) {
          const msg = eggMessage(message);
          if (!msg || typeof msg !== 'object') return;
          msg.from = 'app';
          master.messenger.send(msg);
        }

        onDisconnect(app) {
          if (!app.announced) return;
          master.log('[master] app_worker#%s:%s disconnect, suicide: %s, state: %s, current workers: %j',
            app.id, app.workerId, app.exitedAfterDisconnect, app.state, this.currentIds());
        }

        onExit(worker, code, signalName) {
          const app = driver.apps.get(worker.id);
          if (!app) return;
          driver.apps.delete(worker.id);
          app.state = 'dead';
          if (!app.announced) return;
          master.messenger.send({
            action: 'app-exit',
            data: { workerId: app.workerId, code, signal: signalName },
            to: 'master',
            from: 'app',
          });
        }

        async kill(timeout) {
          const apps = [...driver.apps.values()];
          const trees = apps.map((app) => descendants(app.workerId));
          const stopping = driver.stop();
          for (const app of apps) driver.terminate(app.worker);
          const exited = Promise.all(apps.map((app) => (app.worker.isDead() ? null : new Promise((resolve) => app.worker.once('exit', resolve)))));
          await Promise.race([exited, stopping, new Promise((resolve) => setTimeout(resolve, timeout + 1000).unref())]);
          await killTree(trees.flat(), timeout);
        }
      }

      // Egg's master ends itself with process.exit(1) when a worker fails at boot: the workers
      // die with it (rcluster), and what they started is ended here rather than left to init.
      process.once('exit', () => signal(descendants(process.pid).filter(notGuard), 'SIGKILL'));

      this.agentWorker = new AgentUtils();
      this.appWorker = new AppUtils();
      driver.agentUtils = this.agentWorker;
      driver.appUtils = this.appWorker;
    }

    startByWorkerThreads() {
      this.logger.warn('[master] startMode worker_threads is not run by rcluster/egg: starting processes');
      this.options.startMode = 'process';
      this.startByProcess();
    }

    /** Egg's `reload-worker` (its development reload): a rolling reload of every app worker. */
    onReload() {
      this.log('[master] reload %s workers...', this.options.workers);
      for (const worker of this.workerManager.listWorkers()) worker.isDevReload = true;
      if (this.rcluster.cluster) {
        this.rcluster.cluster.reload().catch((error) => this.logger.error('[master] reload failed: %s', error.message));
      }
    }
  };

  function workerEntries() {
    const dir = path.dirname(eggClusterFile);
    return { app: path.join(dir, 'app_worker.js'), agent: path.join(dir, 'agent_worker.js') };
  }
}

module.exports = { createMaster, descendants };
