'use strict';

// How fast a cluster that spans hosts (option `redis`) reacts when a host goes away, with a real
// redis-server on a unix socket of its own and each host its own primary (2 app workers), all on
// this machine, so one clock (Date.now()) serves every process:
//   1. a dead host: host b's primary and workers are SIGKILLed, at a random moment of the 1 s
//      heartbeat cycle; the time until host a emits 'host-leave' { reason: 'timeout' } (hosts
//      time out 5 s after their last heartbeat, and see that at their own next one: 4-6 s);
//   2. the cluster agent after a crash (agent: { scope: 'cluster' }): the leading host is
//      SIGKILLed, at a random moment of its renewal cycle (lease/3); the times until the other
//      host emits 'agent-lead' and until its new agent runs its first line (the lease has to
//      expire first: 2/3 to all of a lease, then up to the 1 s between a candidate's tries, then
//      the agent's boot);
//   3. the cluster agent after a graceful stop: the leading host's primary gets SIGTERM
//      (cluster.stop()); the times until its agent has stopped, until the other host emits
//      'agent-lead' and until the new agent runs its first line (the lease is given up at once).
// Each is measured BENCH_RUNS times; in 2 and 3 the host that took over leads the next run, beside
// a new host. The agent is this file in role 'agent': first thing, it appends
// `start <host> <epoch> <ms> <pid>` to a file, and `stop ...` when it gets SIGTERM.
//
//   node bench/hosts-failover.js      (BENCH_RUNS=3, BENCH_AGENT_LEASE=10000 ms, at least 1000)
//
// Needs redis-server (apt-get install redis-server). About 70 s with the defaults.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { killGroup, median, startRedis, stopAll } = require('./lib');

const RUNS = Number(process.env.BENCH_RUNS || 3);
const LEASE = Number(process.env.BENCH_AGENT_LEASE || 10_000);
// rcluster refuses a lease that leaves no renewal before lease - killTimeout - lease/10; half the
// lease always leaves one, and 1 s is plenty for this agent, which leaves on SIGTERM at once.
const KILL_TIMEOUT = Math.min(1000, Math.floor(LEASE / 2));
const HOST_TIMEOUT = 5000;

// ---- the processes (this file run with a role) ----

/** A host: a primary with 2 app workers, and with BENCH_AGENT_LOG, a candidate for the agent. */
function host() {
  const rcluster = require('..');
  const candidate = Boolean(process.env.BENCH_AGENT_LOG);
  const cluster = rcluster.start({
    exec: __filename,
    args: ['worker'],
    workers: 2,
    readiness: 'message',
    control: false,
    killTimeout: KILL_TIMEOUT,
    redis: process.env.BENCH_REDIS,
    namespace: process.env.BENCH_NAMESPACE,
    hostId: process.env.BENCH_HOST,
    ...(candidate && { agent: { exec: __filename, args: ['agent'], scope: 'cluster', lease: LEASE } }),
  });
  // Stamped here, not when the driver gets it: the driver's event loop may be late.
  const tell = (message) => process.connected && process.send({ ...message, at: Date.now() });
  for (const event of ['host-join', 'host-leave', 'agent-lead', 'agent-lose']) {
    cluster.on(event, (info) => tell({ event, ...info }));
  }
  cluster.on('warning', (w) => tell({ event: 'warning', code: w.code, message: w.message }));
  cluster.on('error', (e) => tell({ event: 'error', code: e.code, message: e.message }));
  cluster.ready.then(() => tell({ event: 'ready', pids: Object.values(cluster.workers).map((w) => w.pid) }));
  process.on('SIGTERM', () => cluster.stop().then(() => process.exit(0)));
  // A driver that died leaves no host behind (the workers die with their primary).
  process.on('disconnect', () => process.exit(1));
}

/** An app worker: ready at once; it leaves when its primary disconnects it. */
function worker() {
  require('..').ready();
}

/** The cluster agent: says when its code starts running, and when it is told to stop. */
function agent() {
  const line = (what) => `${what} ${process.env.BENCH_HOST} ${process.env.RCLUSTER_AGENT_EPOCH} ${Date.now()} ${process.pid}\n`;
  fs.appendFileSync(process.env.BENCH_AGENT_LOG, line('start'));
  process.on('SIGTERM', () => {
    fs.appendFileSync(process.env.BENCH_AGENT_LOG, line('stop'));
    process.exit(0);
  });
  setInterval(() => {}, 1 << 30);
}

// ---- the driver ----

/** The driver's temp folder: redis-server's socket and the agents' file. */
let dir = null;
let agentLog = null;
/** What to SIGKILL at the end, whatever happens: redis-server, and each host still running. */
const hosts = [];
let redis = null;

/** A host is its primary's group, and its workers' and agents' (each leads a group of its own). */
function killHost(h) {
  killGroup(h.child.pid);
  for (const pid of [...h.pids, ...agents().filter((a) => a.host === h.id).map((a) => a.pid)]) killGroup(pid);
}

function cleanUp() {
  for (const h of hosts) if (h.child.exitCode === null && h.child.signalCode === null) killHost(h);
  stopAll(); // redis-server
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

/** Starts host `id` of `namespace`; resolves once its workers are ready. */
async function startHost(url, namespace, id, { agent = false } = {}) {
  const env = { ...process.env, BENCH_REDIS: url, BENCH_NAMESPACE: namespace, BENCH_HOST: id, BENCH_AGENT_LOG: agent ? agentLog : '' };
  const child = spawn(process.execPath, [__filename, 'host'], { env, stdio: ['ignore', 'ignore', 'inherit', 'ipc'], detached: true });
  const h = { id, child, messages: [], pids: [] };
  child.on('message', (m) => {
    h.messages.push(m);
    if (m.event === 'warning' || m.event === 'error') console.error(`host ${id}: ${m.event} ${m.code}: ${m.message}`);
    if (m.event === 'agent-lose') console.error(`host ${id}: agent-lose ${m.epoch}: ${m.reason}`);
  });
  hosts.push(h);
  h.pids = (await waitFor(h, (m) => m.event === 'ready', `host ${id} ready`)).pids;
  return h;
}

/** The first message of host `h` that passes `test` (one already received, or the next). */
function waitFor(h, test, what, ms = 30_000) {
  const found = h.messages.find(test);
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const onMessage = (m) => test(m) && done(null, m);
    const onExit = (code, signal) => done(new Error(`${what}: host ${h.id} exited (${code ?? signal})`));
    const timer = setTimeout(() => done(new Error(`${what}: nothing within ${ms} ms`)), ms);
    function done(error, m) {
      clearTimeout(timer);
      h.child.off('message', onMessage);
      h.child.off('exit', onExit);
      if (error) reject(error);
      else resolve(m);
    }
    if (h.child.exitCode !== null || h.child.signalCode !== null) return onExit(h.child.exitCode, h.child.signalCode);
    h.child.on('message', onMessage);
    h.child.on('exit', onExit);
  });
}

/** Resolves to true once `child` has exited, or to false after `ms`. */
function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Not to wait for anything: it picks the moment of a crash. Right after two hosts see each other
 * both have just beaten, and a crash then would always be seen one whole host timeout later (a
 * lease, likewise, may have just been renewed); a real crash comes at any point of the cycle.
 */
const randomMoment = (cycle) => new Promise((resolve) => setTimeout(resolve, Math.random() * cycle));

/** The agents' lines so far: { what, host, epoch, ms, pid }. */
function agents() {
  let text = '';
  try {
    text = fs.readFileSync(agentLog, 'utf8');
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [what, host, epoch, ms, pid] = line.split(' ');
      return { what, host, epoch: Number(epoch), ms: Number(ms), pid: Number(pid) };
    });
}

/** Polls the agents' file (its lines carry their own time) until `test` finds a line. */
async function agentLine(test, what, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = agents().find(test);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`${what}: no such line within ${ms} ms (${JSON.stringify(agents())})`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Each other sees the other as a member: both beat, both read. */
function joined(x, y) {
  return Promise.all([
    waitFor(x, (m) => m.event === 'host-join' && m.host === y.id, `${x.id} sees ${y.id}`),
    waitFor(y, (m) => m.event === 'host-join' && m.host === x.id, `${y.id} sees ${x.id}`),
  ]);
}

/** 1: kill a host, time host `watch`'s host-leave { reason: 'timeout' } for it. */
async function deadHost(url, namespace, watch, run) {
  const dead = await startHost(url, namespace, `d${run}`);
  await joined(watch, dead);
  await randomMoment(1000);
  const killedAt = Date.now();
  killHost(dead);
  const leave = await waitFor(watch, (m) => m.event === 'host-leave' && m.host === dead.id, `${watch.id} sees ${dead.id} leave`, HOST_TIMEOUT + 10_000);
  if (leave.reason !== 'timeout') throw new Error(`${dead.id} left with reason '${leave.reason}', not 'timeout'`);
  return leave.at - killedAt;
}

/** The leader's agent, once it runs: its start line. */
function agentOf(leader, epoch) {
  return agentLine((a) => a.what === 'start' && a.host === leader.id && a.epoch === epoch, `${leader.id}'s agent`, 10_000);
}

/**
 * 2 and 3: ends the leading host (SIGKILL of everything, or SIGTERM of its primary), and times
 * the other host's agent-lead and its agent's first line, in ms from the end.
 */
async function moveAgent(leader, standby, how) {
  const lead = await waitFor(leader, (m) => m.event === 'agent-lead', `${leader.id} leads`);
  const old = await agentOf(leader, lead.epoch);
  await joined(leader, standby);
  if (how === 'crash') await randomMoment(LEASE / 3);
  const endedAt = Date.now();
  if (how === 'crash') killHost(leader);
  else process.kill(leader.child.pid, 'SIGTERM');
  // The lease can outlive a crashed leader by a whole lease; then a candidate tries within 1 s.
  const wait = how === 'crash' ? LEASE + 10_000 : 10_000;
  const next = await waitFor(standby, (m) => m.event === 'agent-lead' && m.epoch > lead.epoch, `${standby.id} leads`, wait);
  const started = await agentOf(standby, next.epoch);
  const times = { lead: next.at - endedAt, start: started.ms - endedAt };
  // What the lease had left at the kill depends on how long it was held (renewed every lease/3).
  if (how === 'crash') times.held = endedAt - lead.at;
  if (how === 'stop') {
    const stopped = agents().find((a) => a.what === 'stop' && a.pid === old.pid);
    times.stopped = stopped ? stopped.ms - endedAt : NaN;
    if (!(await exited(leader.child, 10_000))) throw new Error(`${leader.id} still runs 10 s after SIGTERM`);
    if (leader.child.exitCode !== 0) throw new Error(`${leader.id} exited with ${leader.child.exitCode ?? leader.child.signalCode} after SIGTERM`);
  }
  return times;
}

async function main() {
  if (!(LEASE >= 1000)) throw new Error(`BENCH_AGENT_LEASE must be at least 1000 (ms), got ${process.env.BENCH_AGENT_LEASE}`);
  let url;
  ({ child: redis, url } = await startRedis({ unixSocketDir: dir }));
  const progress = (what, run, times) => console.error(`  ${what} run ${run}: ${Object.entries(times).map(([k, v]) => `${k} ${v} ms`).join(', ')}`);

  const detection = [];
  const watch = await startHost(url, 'detect', 'watch');
  for (let run = 1; run <= RUNS; run++) {
    detection.push(await deadHost(url, 'detect', watch, run));
    progress('dead host', run, { detected: detection.at(-1) });
  }
  killHost(watch);

  // One namespace for 2 and 3: only its first lease waits a whole lease before its agent starts
  // (Redis may have lost the lease of a leader that does not know it yet). Each run ends the
  // leader; the host that took over leads the next run, beside a new standby.
  let id = 0;
  const agentHost = () => startHost(url, 'agents', `h${++id}`, { agent: true });
  let [x, y] = [await agentHost(), await agentHost()];
  const first = await agentLine((a) => a.what === 'start', 'the first agent', 2 * LEASE + 10_000);
  let [leader, standby] = first.host === x.id ? [x, y] : [y, x];
  const crash = [];
  const graceful = [];
  for (const [how, results] of [['crash', crash], ['stop', graceful]]) {
    for (let run = 1; run <= RUNS; run++) {
      results.push(await moveAgent(leader, standby, how));
      progress(how === 'crash' ? 'crash failover' : 'graceful handover', run, results.at(-1));
      [leader, standby] = [standby, await agentHost()];
    }
  }

  const cell = (v) => String(Number.isNaN(v) ? '-' : v).padStart(7);
  const row = (label, xs) => console.log(`${label.padEnd(44)}${xs.map(cell).join('')}${cell(median(xs))}`);
  console.log(`\nClusters across hosts: 2 hosts x 2 workers, redis-server on a unix socket; BENCH_RUNS=${RUNS}, Node ${process.version}`);
  console.log(`agent lease ${LEASE} ms, killTimeout ${KILL_TIMEOUT} ms; host timeout ${HOST_TIMEOUT} ms, heartbeat 1000 ms; times in ms`);
  console.log(`${''.padEnd(44)}${Array.from({ length: RUNS }, (_, i) => `run ${i + 1}`.padStart(7)).join('')}${'median'.padStart(7)}`);
  row('dead host: SIGKILL -> host-leave (timeout)', detection);
  row('crash: SIGKILL -> agent-lead elsewhere', crash.map((t) => t.lead));
  row('crash: SIGKILL -> new agent runs', crash.map((t) => t.start));
  row('graceful: SIGTERM -> old agent stopped', graceful.map((t) => t.stopped));
  row('graceful: SIGTERM -> agent-lead elsewhere', graceful.map((t) => t.lead));
  row('graceful: SIGTERM -> new agent runs', graceful.map((t) => t.start));
}

const role = process.argv[2];
if (role === 'host') host();
else if (role === 'worker') worker();
else if (role === 'agent') agent();
else {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-failover-'));
  agentLog = path.join(dir, 'agents.log');
  process.on('exit', cleanUp);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
  // The hosts left running would keep this process alive: end them, and reap them (and
  // redis-server) rather than leave zombies to init.
  const shutDown = async (code) => {
    const children = [redis, ...hosts.map((h) => h.child)].filter(Boolean);
    cleanUp();
    await Promise.all(children.map((child) => exited(child, 5000)));
    process.exit(code);
  };
  main().then(
    () => shutDown(0),
    (error) => {
      console.error(error);
      return shutDown(1);
    },
  );
}
