'use strict';

// The help texts: an overview of the commands, `start`'s options, and one line per verb.

const OVERVIEW = `Usage: rcluster <command> [arguments]

Commands:
  start <script|config file> [options]   run a cluster in the foreground (rcluster start --help)
  ls [--json]                            the running clusters of this user
  status <NAME> [--json]                 a cluster and its workers
  reload <NAME>                          replace every worker, one after another; waits for the end
  scale <NAME> <N>                       run N app workers
  restart <NAME> <ID>                    replace worker ID gracefully
  stop <NAME>                            stop a cluster gracefully; waits until it has stopped
  logs <NAME> [--lines N] [--follow]     the workers' recent output

Options:
  -h, --help       print this help (rcluster <command> --help: that command's)
  -v, --version    print the version

Exit codes: 0 done, 1 failed, 2 bad usage, 3 no cluster of that name is running.`;

const START = `Usage: rcluster start <script|config file> [options] [-- script args...]

Runs <script> as a cluster of Node processes sharing its ports, in the foreground. A config
file (*.config.js, *.config.cjs, *.config.mjs, *.config.json or any *.json) describes one app
({ name, script, ...options }) or several ({ apps: [...] }); flags override its values.

Options:
  -i, --instances N|max     number of app workers (default: max = one per CPU)
      --name NAME           the cluster's name, its handle for the other commands (default:
                            the script's file name without its extension)
      --agent FILE          start FILE as the agent first, the app workers once it is ready
      --agent-arg ARG       an argument for the agent's script (repeatable; --agent-arg=-x)
      --agent-exec-arg FLAG a Node flag for the agent (repeatable; --agent-exec-arg=--inspect)
      --agent-readiness R   when the agent is ready: started (its main module has run, the
                            default) | message (it calls rcluster.ready(): an ES-module or
                            async agent)
      --agent-scope S       host (one agent per cluster, the default) | cluster (with --redis:
                            one agent in the whole namespace, on the host that holds its lease)
      --agent-lease MS      with --agent-scope cluster: ms the agent lease lives unrenewed
                            (default 10000)
      --exec-arg FLAG       a Node flag for the app workers (repeatable; --exec-arg=--inspect)
      --cwd DIR             the workers' working folder
      --schedule MODE       shared (one listening socket) | reuseport (one per worker)
      --readiness R         when a worker is ready: listening (the default) | online |
                            message (it calls rcluster.ready())
      --ready-timeout MS    ms a new worker has to become ready (default 30000)
      --kill-timeout MS     ms a stopping worker gets before SIGKILL (default 5000)
      --stop-signal SIG     send SIG (e.g. SIGTERM) to each leaving worker after its disconnect
      --max-memory SIZE     replace a worker whose RSS passes SIZE (bytes, or 300M, 1G)
      --max-restarts N      restart budget: restarts of one worker slot within the window
                            before the cluster gives up and exits 1 (default 5)
      --restart-window MS   the restart budget's sliding window in ms (default 60000)
      --restart-delay MS    ms before a restart that follows another (doubles each time)
      --max-restart-delay MS  the longest delay between restarts
      --heartbeat-interval MS  ms between a child's heartbeats (default 1000)
      --heartbeat-timeout MS   ms without a heartbeat before a child is replaced (0: never)
      --reload-parallel N   worker slots a reload replaces at once (default 1)
      --max-message-size BYTES  the largest messenger payload
      --metrics HOST:PORT   serve Prometheus metrics at http://HOST:PORT/metrics
      --redis URL           the Redis server through which clusters on several hosts form
                            one: redis://[user:pass@]host[:port][/db] or unix:///path
      --namespace NAME      the cluster that spans hosts (needs --redis; default: its name)
      --host-id ID          this host's id in the namespace (needs --redis; default:
                            <hostname>-<pid>-<4 hex digits>)
      --log-prefix          prefix every line a worker prints with its id
      --no-control          serve no control socket (the other commands cannot reach it)
      --pid-file FILE       write this process's pid to FILE once started; removed at exit
      --env ENVIRONMENT     (config file) merge each app's env_ENVIRONMENT over its env
      --only NAME[,NAME]    (config file) start only these apps
  -h, --help                print this help

Signals: SIGINT/SIGTERM stop gracefully (exit 0); a second one kills the workers at once.
         SIGHUP reloads every worker, one at a time, without refusing a connection.
         SIGTTIN adds a worker; SIGTTOU removes one.`;

const VERBS = {
  ls: 'Usage: rcluster ls [--json]\n\nLists the running clusters of this user: name, pid, state, workers, uptime, addresses.',
  status: 'Usage: rcluster status <NAME> [--json]\n\nThe cluster NAME and its workers: id, pid, kind, state, restarts, uptime, memory, CPU, event-loop delay.',
  reload: 'Usage: rcluster reload <NAME>\n\nReplaces every worker of NAME, each leaving once its replacement is ready; waits for the end.',
  scale: 'Usage: rcluster scale <NAME> <N>\n\nMakes NAME run N app workers (1 to 4096); waits until it does.',
  restart: 'Usage: rcluster restart <NAME> <ID>\n\nReplaces worker ID of NAME: the old one leaves once its replacement is ready.',
  stop: 'Usage: rcluster stop <NAME>\n\nStops NAME gracefully and waits until it has stopped.',
  logs: 'Usage: rcluster logs <NAME> [-n|--lines N] [-f|--follow]\n\nThe last N (default 100, at most 2000) lines its workers printed; --follow keeps printing new ones.',
};

function usage(topic) {
  if (topic === 'start') return START;
  return VERBS[topic] || OVERVIEW;
}

module.exports = { usage, VERBS };
