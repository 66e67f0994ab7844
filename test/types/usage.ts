// Type-checked (never run) by `npm run test:types`: the public API as a user writes it.
import rcluster = require('rcluster');
import nodeCluster = require('rcluster/cluster');

async function main(): Promise<void> {
  const cluster: rcluster.Cluster = rcluster.start({
    exec: 'app.js',
    args: ['--port', '3000'],
    env: { NODE_ENV: 'production', DEBUG: null },
    workers: 'max',
    schedule: 'reuseport',
    killTimeout: 5000,
    readiness: 'message',
    maxRestarts: 5,
    restartWindow: 60_000,
  });
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
  // @ts-expect-error: scale takes a count
  void cluster.scale('many');
  // @ts-expect-error: maxMemory is bytes or a size string
  rcluster.start({ exec: 'app.js', maxMemory: true });
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

// @ts-expect-error a target is a number or 'primary'
rcluster.messenger?.sendTo('agent', 'x');
// @ts-expect-error exec is required
rcluster.start({ workers: 2 });
// @ts-expect-error an unknown schedule
rcluster.start({ exec: 'a.js', schedule: 'random' });

void main();
