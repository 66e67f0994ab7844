// The public API as a user writes it, compiled by `npm run test:types` (test/types/run.js) as an
// ES module under `module: nodenext` and to CommonJS under `module: commonjs` with
// `esModuleInterop`. main() is only type-checked; what runs is the end of the file.
import rcluster, { start, isPrimary, isWorker, isAgent, worker, agentEpoch, messenger, ready, reload } from 'rcluster';
import type { Cluster, ClusterOptions, Messenger, RclusterError, Worker } from 'rcluster';
import nodeCluster, {
  isPrimary as clusterIsPrimary,
  isMaster,
  isWorker as clusterIsWorker,
  worker as clusterWorker,
  workers,
  settings,
  schedulingPolicy,
  SCHED_NONE,
  SCHED_RR,
  fork,
  disconnect,
  setupPrimary,
  setupMaster,
  addListener,
  on,
  once,
  off,
  prependListener,
  prependOnceListener,
  removeListener,
  removeAllListeners,
  emit,
  listeners,
  rawListeners,
  listenerCount,
  eventNames,
  setMaxListeners,
  getMaxListeners,
} from 'rcluster/cluster';

export async function main(): Promise<void> {
  const cluster: Cluster = rcluster.start({
    exec: 'app.js',
    args: ['--port', '3000'],
    env: { NODE_ENV: 'production', DEBUG: null },
    workers: 'max',
    schedule: 'reuseport',
    killTimeout: 5000,
    stopSignal: 'SIGTERM',
    readiness: 'message',
    maxRestarts: 5,
    restartWindow: 60_000,
    name: 'api',
    control: true,
    metrics: '127.0.0.1:9464',
    logPrefix: true,
    redis: 'redis://127.0.0.1:6379/0',
    namespace: 'shop',
    hostId: 'web-1',
    agent: { exec: 'cron.js', scope: 'cluster', lease: 10_000 },
  });
  cluster.on('stopping', ({ trigger }) => console.log(trigger.toUpperCase()));
  cluster.on('fork', (worker) => console.log(worker.id, worker.pid, worker.kind, worker.slot));
  cluster.on('listening', (worker, address) => console.log(worker.id, address.port, address.addressType));
  cluster.on('exit', (worker, code, signal) => console.log(worker.exitedAfterDisconnect, code, signal));
  cluster.on('message', (worker, message) => worker.send({ reply: message }));
  cluster.on('error', (error) => console.error(error.code, error.details));
  cluster.on('warning', (warning) => console.warn(warning.workerId, warning.message));
  cluster.messenger.on('stats', (data: { rps: number }, meta) => console.log(data.rps, meta.from.kind));
  cluster.messenger.on('error', (error) => console.error(error.code, error.action, error.count, error.workerId));
  cluster.messenger.broadcast('config', { level: 'debug' });
  cluster.messenger.sendTo('primary', 'hello');
  cluster.messenger.sendTo(3, 'bytes', Buffer.from('raw'));
  cluster.messenger.sendTo({ host: 'web-2', id: 1 }, 'hello');
  cluster.messenger.on('where', (_data, meta) => console.log(meta.from.host ?? 'this host'));
  cluster.on('host-join', ({ host, incarnation }) => console.log(host, incarnation));
  cluster.on('host-leave', ({ host, reason }) => console.log(host, reason === 'timeout'));
  cluster.on('agent-lead', ({ epoch }) => console.log(epoch + 1));
  cluster.on('agent-lose', ({ epoch, reason }) => console.log(epoch, reason.length));
  await cluster.ready;
  const total: number = await cluster.messenger.consume<number>('sum', [1, 2], { timeout: 1000 });
  const pids: number[] = await cluster.messenger.map<number>('pid');
  for (const entry of await cluster.messenger.mapSettled<string>('version')) {
    if (entry.status === 'fulfilled') console.log(entry.id, entry.value.toUpperCase());
    else console.log(entry.pid, entry.reason.code);
  }
  console.log(total, pids);
  const drained: Promise<void> = cluster.messenger.drained();
  await drained;
  for (const worker of Object.values(cluster.workers)) {
    worker.send('hello', (error) => error && console.error(error.message));
    const alive: boolean = !worker.isDead() && worker.isConnected();
    if (alive && worker.process.pid > 0) worker.kill('SIGTERM');
  }
  const { replaced, duration }: { replaced: number; duration: number } = await cluster.reload({ parallel: 2 });
  cluster.on('reload', ({ trigger, workers }) => console.log(trigger.length + workers));
  const count: number = await cluster.scale('max');
  console.log(replaced, duration, count, rcluster.reload());
  // Typed only (not run here): replace(id) resolves to the new id and the old one.
  const replacing: (id: number) => Promise<{ id: number; replaced: number }> = (id) => cluster.replace(id);
  void replacing;
  // @ts-expect-error: replace takes a worker id
  void (() => cluster.replace('1'));
  // @ts-expect-error: scale takes a count
  void cluster.scale('many');
  // @ts-expect-error: maxMemory is bytes or a size string
  rcluster.start({ exec: 'app.js', maxMemory: true });
  // @ts-expect-error: an agent's scope is 'host' or 'cluster'
  rcluster.start({ exec: 'app.js', agent: { exec: 'a.js', scope: 'namespace' } });
  await cluster.stop({ timeout: 1000 });

  if (rcluster.isWorker && rcluster.worker) {
    const id: number = rcluster.worker.id;
    const kind: 'app' | 'agent' = rcluster.worker.kind;
    console.log(id, kind, rcluster.ready());
  }

  if (nodeCluster.isPrimary) {
    nodeCluster.setupPrimary({ exec: 'worker.js', silent: true });
    const w = nodeCluster.fork({ ROLE: 'web' });
    w.on('online', () => w.disconnect());
    nodeCluster.disconnect(() => console.log('done'));
  }
}

/** The same API by name. */
export async function byName(options: ClusterOptions): Promise<void> {
  const cluster: Cluster = start(options);
  cluster.on('error', (error: RclusterError) => console.error(error.code));
  await cluster.ready;
  const bus: Messenger | null = messenger;
  bus?.on('ping', (data: unknown, meta) => (meta.from.kind === 'primary' ? data : null));
  if (isWorker && worker) console.log(worker.id, worker.kind, ready(), reload());
  if (isAgent) bus?.sendTo('primary', 'agent-up', { epoch: agentEpoch ?? 0 });
  const byId: Worker | undefined = cluster.workers[1];
  console.log(isPrimary, byId?.slot);

  if (clusterIsPrimary && isMaster && !clusterIsWorker) {
    setupPrimary({ exec: 'worker.js', args: ['--port', '0'] });
    setupMaster({ silent: false });
    const w = fork({ ROLE: 'web' });
    on('exit', (exited, code, signal) => console.log(exited.id === w.id, code, signal));
    once('online', (online) => online.send('hello'));
    addListener('listening', (listening, address) => console.log(listening.id, address.port));
    prependListener('fork', (forked) => console.log(forked.process.pid));
    prependOnceListener('disconnect', (left) => console.log(left.exitedAfterDisconnect));
    const count: number = listenerCount('exit') + listeners('exit').length + rawListeners('exit').length;
    const names: Array<string | symbol> = eventNames();
    setMaxListeners(getMaxListeners() + count + names.length);
    emit('setup', settings);
    off('exit', () => {});
    removeListener('online', () => {});
    removeAllListeners('fork');
    for (const each of Object.values(workers ?? {})) each?.disconnect();
    console.log(schedulingPolicy === SCHED_RR || schedulingPolicy === SCHED_NONE);
    disconnect(() => console.log('done'));
  } else if (clusterWorker) {
    clusterWorker.send({ id: clusterWorker.id });
  }
}

export function rejected(): void {
  // @ts-expect-error a target is a number or 'primary'
  rcluster.messenger?.sendTo('agent', 'x');
  // @ts-expect-error exec is required
  rcluster.start({ workers: 2 });
  // @ts-expect-error an unknown schedule
  rcluster.start({ exec: 'a.js', schedule: 'random' });
  // @ts-expect-error not a name of rcluster
  void rcluster.startCluster;
}

// What runs: the imports (an ES module whose named imports do not exist fails before any of its
// code) and every name read as the compiled code reads it. Prints those that are undefined.
const named = {
  start, isPrimary, isWorker, isAgent, worker, agentEpoch, messenger, ready, reload,
  clusterIsPrimary, isMaster, clusterIsWorker, clusterWorker, workers, settings, schedulingPolicy, SCHED_NONE, SCHED_RR,
  fork, disconnect, setupPrimary, setupMaster, addListener, on, once, off, prependListener, prependOnceListener,
  removeListener, removeAllListeners, emit, listeners, rawListeners, listenerCount, eventNames, setMaxListeners, getMaxListeners,
};
console.log(JSON.stringify({ undefined: Object.keys(named).filter((name) => named[name as keyof typeof named] === undefined) }));
