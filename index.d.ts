// Type definitions for rcluster: the public API of README.md.

import { EventEmitter } from 'node:events';
import type { Server, Socket } from 'node:net';

/** An `Error` raised by rcluster: `code` is one of the `ERR_RCLUSTER_...` codes. */
export interface RclusterError extends Error {
  code: string;
  /** Set on `ERR_RCLUSTER_RESTART_BUDGET` and `ERR_RCLUSTER_READY_TIMEOUT` errors. */
  details?: Record<string, unknown>;
  /** A `consume` that failed with `ERR_RCLUSTER_HOST_DIED` or `ERR_RCLUSTER_TIMEOUT`: `false` if its handler
   *  never started and never will, `'unknown'` if it may have run. */
  ran?: false | 'unknown';
  /** Option `redis`: the host an error is about (the host that died, or that reported it). */
  host?: string;
}

/** When a worker counts as ready (gates `cluster.ready`). */
export type Readiness = 'listening' | 'online' | 'message';

export interface ClusterOptions {
  /** The worker script, resolved against `cwd`. Required. */
  exec: string;
  /** Arguments for the script. Default `[]`. */
  args?: string[];
  /** Node flags for the workers. Default `[]`. */
  execArgv?: string[];
  /** Added to the primary's environment; `null` removes a variable. */
  env?: Record<string, string | number | boolean | null | undefined>;
  /** Working directory of the workers. Default `process.cwd()`. */
  cwd?: string;
  /** Number of app workers; `0` or `'max'` (default) = one per CPU. */
  workers?: number | 'max';
  /** `'shared'` (default): one listening socket, the kernel's accept queue shared by all workers.
   *  `'reuseport'`: one SO_REUSEPORT socket per worker slot, the kernel spreads connections. */
  schedule?: 'shared' | 'reuseport';
  /** ms a stopping worker gets before SIGKILL. Default 5000. */
  killTimeout?: number;
  /** A signal sent to each app worker the cluster sends away (stop, reload, scale), right after
   *  its disconnect: for apps that leave on SIGTERM, as Egg's workers do. Not SIGKILL or SIGSTOP.
   *  Default: none. */
  stopSignal?: Exclude<NodeJS.Signals, 'SIGKILL' | 'SIGSTOP'>;
  /** Default `'listening'`: a worker is ready at its first `listening`. */
  readiness?: Readiness;
  /** ms (at least 1) a new worker has to become ready. Default 30000. */
  readyTimeout?: number;
  /** Restarts of one worker slot allowed within `restartWindow`; one more and the cluster gives up. Default 5. */
  maxRestarts?: number;
  /** ms (at least 1) of the restart budget's sliding window. Default 60000. */
  restartWindow?: number;
  /** ms before a restart that follows others in the window; doubles each time. Default 100. */
  restartDelay?: number;
  /** Cap of the restart delay, ms. Default 10000. */
  maxRestartDelay?: number;
  /** Node IPC serialization of `worker.send` / `process.send`. Default `'json'`. */
  serialization?: 'json' | 'advanced';
  uid?: number;
  gid?: number;
  /** One agent process, started and ready before the app workers; restarted under the same budget,
   *  stopped after them. `readiness`: 'started' (default: its main module has run) or 'message'
   *  (it calls `rcluster.ready()`). `scope`: 'host' (default: one agent per cluster) or, with
   *  `redis`, 'cluster': one agent in the whole namespace, run by the host that holds the agent
   *  lease (`lease` ms, default 10000, at least 1000, and long enough for a renewal before
   *  lease - killTimeout - min(lease/10, 1000)); the app workers do not wait for it. */
  agent?: string | { exec: string; args?: string[]; execArgv?: string[]; execPath?: string; env?: ClusterOptions['env']; readiness?: 'started' | 'message'; scope?: 'host' | 'cluster'; lease?: number };
  /** The largest messenger payload in bytes (1 to 512 MiB); larger sends throw `ERR_RCLUSTER_MESSAGE_TOO_LARGE`. Default 64 MiB. */
  maxMessageSize?: number;
  /** The Node binary the children run (as `child_process.fork` takes it); default `process.execPath`. */
  execPath?: string;
  /** Descriptors of the primary (inherited listening sockets) that workers may `listen({ fd })` on; any other number is refused with EACCES. */
  listenFds?: number[];
  /** The cluster's name: its control socket is `$RCLUSTER_HOME/<name>.sock` and `rcluster status <name>`
   *  reaches it. 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`, no `..`. Default: the
   *  script's file name without its extension. A name a running cluster of this user holds is
   *  refused with `ERR_RCLUSTER_NAME_IN_USE`. */
  name?: string;
  /** Serve the control socket (`rcluster ls/status/reload/scale/restart/stop/logs`). Default true. */
  control?: boolean;
  /** `'HOST:PORT'` (or `':PORT'`, every interface) to serve Prometheus metrics on, at `/metrics`. */
  metrics?: string;
  /** Prefix every line a child prints with its worker id and a UTC timestamp. Default false. */
  logPrefix?: boolean;
  /** The Redis server through which clusters on several hosts form one cluster:
   *  `'redis://[user:pass@]host[:port][/db]'` or `'unix:///path'` (also `'redis+unix:///path'`).
   *  `rediss://` (TLS) is refused. Default: none (the cluster is this host's alone). */
  redis?: string;
  /** The cluster that spans hosts, the same on each of them. Needs `redis`. 1 to 64 of
   *  `A-Z a-z 0-9 . _ -`, not starting with `.`. Default: the cluster's `name`. */
  namespace?: string;
  /** This host's id within `namespace`, unique among its hosts. Needs `redis`. 1 to 128 of
   *  `A-Z a-z 0-9 . _ -`. Default: `<hostname>-<pid>-<4 random hex digits>`. */
  hostId?: string;
  /** Slots a rolling reload replaces at once. Default 1. */
  reloadParallel?: number;
  /** Whether a reload replaces the agent too (first). Default false. */
  reloadAgent?: boolean;
  /** Preload rcluster's child runtime into every child: heartbeats, graceful handling of an uncaught
   *  exception, keep-alive connections drained when a worker leaves. Default true. */
  childRuntime?: boolean;
  /** ms between heartbeats of a child's event loop. Default 1000. */
  heartbeatInterval?: number;
  /** ms without a heartbeat after which a child is killed and replaced; 0 turns the check off. Default 30000. */
  heartbeatTimeout?: number;
  /** Resident memory above which a worker is replaced gracefully: bytes, or `'300M'`, `'1G'`. Default (left out): no limit; 0 is refused. */
  maxMemory?: number | string;
}

export interface ReloadOptions {
  /** Slots replaced at once; default the cluster's `reloadParallel`. */
  parallel?: number;
  /** Replace the agent too; default the cluster's `reloadAgent`. */
  agent?: boolean;
  /** Who asked, as the `'reload'` event reports it. Default `'reload()'`. */
  trigger?: string;
}

export interface ReloadResult {
  /** Slots whose worker was replaced. */
  replaced: number;
  /** Slots the reload set out to replace. */
  workers: number;
  /** ms from start to the last replacement ready. */
  duration: number;
}

/** What a worker reported when it started listening, as Node's cluster reports it. */
export interface Address {
  addressType: 4 | 6 | -1 | 'udp4' | 'udp6';
  address: string | null;
  port: number;
  fd: number | undefined;
}

export type SendHandle = Socket | Server;

/** The primary's view of a child process, shaped like Node's ChildProcess. */
export interface WorkerProcess extends EventEmitter {
  readonly pid: number;
  readonly connected: boolean;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  readonly killed: boolean;
  send(message: unknown, callback?: (error: Error | null) => void): boolean;
  send(message: unknown, handle?: SendHandle, callback?: (error: Error | null) => void): boolean;
  send(message: unknown, handle: SendHandle | undefined, options: { keepOpen?: boolean }, callback?: (error: Error | null) => void): boolean;
  kill(signal?: NodeJS.Signals | number): boolean;
  disconnect(): void;
}

/** One child of a supervised cluster. */
export interface Worker extends EventEmitter {
  readonly id: number;
  readonly pid: number;
  readonly kind: 'app' | 'agent';
  /** The worker slot it fills (a replacement takes its predecessor's slot). */
  readonly slot: number | null;
  state: 'none' | 'online' | 'listening' | 'disconnected' | 'dead';
  readonly process: WorkerProcess;
  exitedAfterDisconnect: boolean | undefined;
  send: WorkerProcess['send'];
  kill(signal?: NodeJS.Signals | number): void;
  destroy(signal?: NodeJS.Signals | number): void;
  disconnect(): this;
  isDead(): boolean;
  isConnected(): boolean;

  on(event: 'online' | 'disconnect' | 'ready', listener: () => void): this;
  on(event: 'listening', listener: (address: Address) => void): this;
  on(event: 'message', listener: (message: any, handle?: SendHandle) => void): this;
  on(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
}

/** Who sent a messenger message: id 0 and kind 'primary' for the primary. */
export interface MessageMeta {
  /** `host`: with option `redis`, the host it came from (this one's id for a message from here). */
  from: { id: number; pid: number; kind: 'app' | 'agent' | 'primary'; host?: string };
}

/** A worker of any host of the namespace (option `redis`). */
export interface HostTarget {
  host: string;
  id: number;
}

/** Data a message carries: any JSON value, or bytes (a Buffer or typed array arrives as a Buffer). */
export type MessageData = unknown;

/** What `messenger.on('error', listener)` hears: messages this process sent that were not delivered. */
export interface UndeliveredError extends RclusterError {
  action: string;
  /** How many messages of `action` this error stands for (a receiver's full queue is reported once per batch). */
  count: number;
  /** With `ERR_RCLUSTER_QUEUE_FULL`: the receiver whose queue was full (id 0: the primary). */
  workerId?: number;
  pid?: number;
  /** The host that reported it, when another host did (option `redis`). */
  host?: string;
}

/** The messenger (api.md section 3), the same in the primary and in every child.
 *  A send throws `ERR_RCLUSTER_QUEUE_FULL`, and sends nothing, when this process's write queue is
 *  full: send again once `drained()` resolves. */
export interface Messenger {
  /** Failures to deliver what this process sent (`ERR_RCLUSTER_UNKNOWN_TARGET`, `ERR_RCLUSTER_NO_HANDLER`,
   *  `ERR_RCLUSTER_QUEUE_FULL`; with `redis`, `ERR_RCLUSTER_REMOTE_UNAVAILABLE` and `ERR_RCLUSTER_MESSAGE_TOO_LARGE`
   *  for what did not reach the other hosts). */
  on(action: 'error', listener: (error: UndeliveredError) => void): this;
  on(action: string, handler: (data: any, meta: MessageMeta) => unknown): this;
  once(action: string, handler: (data: any, meta: MessageMeta) => unknown): this;
  off(action: string, handler?: (...args: any[]) => unknown): this;
  /** Every app worker and the agent, the sender included (with `redis`, of every host). */
  broadcast(action: string, data?: MessageData): void;
  /** Every app worker, the sender included (with `redis`, of every host). */
  sendToApp(action: string, data?: MessageData): void;
  sendToAgent(action: string, data?: MessageData): void;
  /** One app worker with a handler for `action`, picked at random (with `redis`: of this host if one handles
   *  it, else of another host). */
  sendRandom(action: string, data?: MessageData): void;
  /** One process: a worker id, a pid, 'primary', or with `redis`, `{ host, id }`. */
  sendTo(target: number | 'primary' | HostTarget, action: string, data?: MessageData): void;
  /** Resolves once what this process sent has left its write queue (at once in the primary); after a
   *  send threw `ERR_RCLUSTER_QUEUE_FULL`, send again then. Rejects with `ERR_RCLUSTER_NOT_RUNNING`
   *  if the channel is gone. */
  drained(): Promise<void>;
  /** Exactly one app worker with a handler runs it (with `redis`, of any host); resolves to the handler's
   *  (awaited) result. Rejects with `ERR_RCLUSTER_NO_HANDLER`, `ERR_RCLUSTER_TIMEOUT`, `ERR_RCLUSTER_WORKER_DIED`,
   *  `ERR_RCLUSTER_HOST_DIED` (with `error.ran`) or the handler's error. */
  consume<T = any>(action: string, data?: MessageData, options?: RequestOptions): Promise<T>;
  /** Every app worker runs its first handler; the results ordered by worker id (with `redis`: every app worker
   *  of the hosts that were members when it started, ordered by host then id). One failure rejects (a host
   *  that died: `ERR_RCLUSTER_HOST_DIED`, with `error.host`). */
  map<T = any>(action: string, data?: MessageData, options?: RequestOptions): Promise<T[]>;
  /** Like map, never rejecting for one worker's failure. */
  mapSettled<T = any>(action: string, data?: MessageData, options?: RequestOptions): Promise<Array<SettledEntry<T>>>;
}

export interface RequestOptions {
  /** ms to wait for the answers. Default 30000. */
  timeout?: number;
}

/** With `redis`, each entry names its `host`; a host that failed before it listed its workers is one
 *  entry `{ host, id: 0, pid: 0, status: 'rejected' }`. */
export type SettledEntry<T> =
  | { host?: string; id: number; pid: number; status: 'fulfilled'; value: T }
  | { host?: string; id: number; pid: number; status: 'rejected'; reason: RclusterError & { workerId?: number } };

export interface ReplaceResult {
  /** The new worker's id. */
  id: number;
  /** The id of the worker it replaced. */
  replaced: number;
}

export interface StopOptions {
  /** ms before the remaining workers are SIGKILLed; default: the cluster's `killTimeout`. */
  timeout?: number;
}

export interface Cluster extends EventEmitter {
  /** Resolves once every worker is ready; rejects with an `RclusterError` if startup fails. */
  readonly ready: Promise<void>;
  /** Live workers by id, as Node's `cluster.workers`. */
  readonly workers: Record<number, Worker>;
  /** Workers replaced after they failed at work (crashed, hung, over maxMemory, threw): a counter to alert on. */
  readonly restarts: number;
  /** The messenger, used from the primary. */
  readonly messenger: Messenger;
  /** Graceful stop: no more restarts, disconnect every worker, SIGKILL after the timeout. */
  stop(options?: StopOptions): Promise<void>;
  /** Rolling reload: each worker is replaced by a new one and leaves only once that one is ready.
   *  Rejects with `ERR_RCLUSTER_RELOAD_ABORTED` if a replacement exits or is not ready within
   *  `readyTimeout` (the workers not yet replaced keep serving). A call during a reload joins it. */
  reload(options?: ReloadOptions): Promise<ReloadResult>;
  /** Replaces one worker, as one step of a rolling reload: a new worker starts in its slot, and
   *  the old one leaves gracefully once that one is ready. Resolves to the new worker's id and
   *  the old one's, once the old one has let go of its sockets. Rejects with
   *  `ERR_RCLUSTER_UNKNOWN_WORKER` (not a current worker), `ERR_RCLUSTER_NOT_RUNNING` (starting,
   *  stopping, or a reload under way) or `ERR_RCLUSTER_RELOAD_ABORTED` (the new worker failed;
   *  the old one keeps serving). */
  replace(id: number): Promise<ReplaceResult>;
  /** Sets the number of app workers (`0` or `'max'`: one per CPU); resolves to it once the new
   *  workers are ready and the removed ones have exited. */
  scale(workers: number | 'max'): Promise<number>;

  on(event: 'fork' | 'online' | 'disconnect', listener: (worker: Worker) => void): this;
  on(event: 'listening', listener: (worker: Worker, address: Address) => void): this;
  on(event: 'exit', listener: (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => void): this;
  on(event: 'message', listener: (worker: Worker, message: any, handle?: SendHandle) => void): this;
  on(event: 'ready' | 'stopped', listener: () => void): this;
  on(event: 'reload', listener: (info: { trigger: string; workers: number }) => void): this;
  /** A stop began; `trigger` says who asked: `'stop()'`, `'rcluster stop'`, a failure. */
  on(event: 'stopping', listener: (info: { trigger: string }) => void): this;
  /** Option `redis`: another host of the namespace is a member (`incarnation`: 16 hex digits, new at each start). */
  on(event: 'host-join', listener: (host: { host: string; incarnation: string }) => void): this;
  /** Option `redis`: another host left: `'left'` (a stop), `'timeout'` (no heartbeat), `'restarted'`. */
  on(event: 'host-leave', listener: (host: { host: string; incarnation: string; reason: 'left' | 'timeout' | 'restarted' }) => void): this;
  /** `agent: { scope: 'cluster' }`: this host holds the agent lease and starts the agent, whose
   *  `rcluster.agentEpoch` is `epoch` (larger than any before it in the namespace). */
  on(event: 'agent-lead', listener: (info: { epoch: number }) => void): this;
  /** `agent: { scope: 'cluster' }`: this host lost the agent lease, or would before it could renew
   *  it, and stops the agent now (SIGTERM, SIGKILL after killTimeout). */
  on(event: 'agent-lose', listener: (info: { epoch: number; reason: string }) => void): this;
  on(event: 'reloaded', listener: (result: ReloadResult) => void): this;
  on(event: 'scaled', listener: (workers: number) => void): this;
  /** A failure that ends the cluster: `ERR_RCLUSTER_RESTART_BUDGET`, `ERR_RCLUSTER_READY_TIMEOUT`. */
  on(event: 'error', listener: (error: RclusterError) => void): this;
  /** Something the operator should know that the cluster survived: a worker broke the protocol,
   *  was replaced (`ERR_RCLUSTER_UNCAUGHT_EXCEPTION`, `ERR_RCLUSTER_UNRESPONSIVE`,
   *  `ERR_RCLUSTER_MEMORY_LIMIT`), a reload a child asked for was aborted, ...
   *  Without a listener, warnings go to `process.emitWarning`. */
  on(event: 'warning', listener: (warning: RclusterError & { workerId?: number }) => void): this;
}

/** Starts a supervised cluster. Throws an `RclusterError` on bad options, before spawning anything. */
export function start(options: ClusterOptions): Cluster;

/** True in a process that is not an rcluster child. */
export const isPrimary: boolean;
/** True in an app worker. */
export const isWorker: boolean;
/** True in the agent. */
export const isAgent: boolean;
/** In the agent of `agent: { scope: 'cluster' }`: its epoch, a fencing token that grows with each
 *  agent the namespace elects (also in its environment as `RCLUSTER_AGENT_EPOCH`); `null` elsewhere. */
export const agentEpoch: number | null;
/** This child's identity; `null` in the primary. */
export const worker: { readonly id: number; readonly pid: number; readonly kind: 'app' | 'agent' } | null;
/** This child's messenger; `null` outside an rcluster child (in a primary, use `cluster.messenger`). */
export const messenger: Messenger | null;
/** Tells the primary this process is ready (readiness `'message'`); false where there is no primary. */
export function ready(): boolean;
/** Asks the primary for a rolling reload (`process.send('think-cluster-reload-workers')` works too);
 *  false where there is no primary. */
export function reload(): boolean;
