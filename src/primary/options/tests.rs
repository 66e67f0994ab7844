use super::*;
use serde_json::json;

fn script() -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("app.js");
    std::fs::write(&path, "").unwrap();
    (dir, path.to_string_lossy().into_owned())
}

/// A throwaway directory, removed on drop.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "rcluster-options-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn parse(v: Value) -> RcResult<ClusterOptions> {
    parse_cluster_options(
        &v,
        vec![("HOME".into(), "/root".into()), ("X".into(), "1".into())],
    )
}

/// `fork()`'s settings, with an existing `exec` unless they name one.
fn fork(mut v: Value) -> RcResult<ChildSpec> {
    if v.get("exec").is_none() {
        v["exec"] = json!("app.js");
    }
    parse_child_spec(v.as_object().unwrap(), Vec::new(), false)
}

/// `options` (with an existing `exec` unless they name one) must fail with
/// ERR_RCLUSTER_INVALID_OPTION, in a message that names `name`.
#[track_caller]
fn refused(exec: &str, mut options: Value, name: &str) -> String {
    if options.get("exec").is_none() {
        options["exec"] = json!(exec);
    }
    let e = parse(options.clone()).unwrap_err();
    assert_eq!(e.code, errors::INVALID_OPTION, "{options}: {}", e.message);
    assert!(
        e.message.contains(&format!("`{name}`")),
        "{options}: {}",
        e.message
    );
    e.message
}

#[test]
fn defaults() {
    let (_d, exec) = script();
    let o = parse(json!({ "exec": exec })).unwrap();
    assert_eq!(
        o.workers,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(o.schedule, Schedule::Shared);
    assert_eq!(o.kill_timeout, Duration::from_secs(5));
    assert_eq!(o.readiness, Readiness::Listening);
    assert_eq!(o.ready_timeout, Duration::from_secs(30));
    assert_eq!(
        o.restart,
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    );
    assert_eq!(o.max_message, 64 << 20);
    assert!(o.agent.is_none());
    assert_eq!(o.child.ipc_fd(), 3);
    assert_eq!(o.child.serialization, Serialization::Json);
    assert_eq!(o.child.cwd, std::env::current_dir().unwrap());
    assert!(o.child.args.is_empty() && o.child.exec_argv.is_empty());
    assert_eq!(
        (o.child.exec_path, o.child.uid, o.child.gid),
        (None, None, None)
    );
    assert_eq!(
        o.reload,
        ReloadPolicy {
            parallel: 1,
            agent: false
        }
    );
    assert!(o.watchdog.child_runtime);
    assert_eq!(o.watchdog.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(o.watchdog.heartbeat_timeout, Some(Duration::from_secs(30)));
    assert_eq!(o.watchdog.max_memory, None);
    assert!(o.listen_fds.is_empty());
}

#[test]
fn null_is_left_out() {
    let (_d, exec) = script();
    let mut options = json!({ "exec": exec });
    for key in [
        "args",
        "execArgv",
        "execPath",
        "env",
        "cwd",
        "workers",
        "schedule",
        "killTimeout",
        "readiness",
        "readyTimeout",
        "maxRestarts",
        "restartWindow",
        "restartDelay",
        "maxRestartDelay",
        "maxMessageSize",
        "agent",
        "reloadParallel",
        "reloadAgent",
        "childRuntime",
        "heartbeatInterval",
        "heartbeatTimeout",
        "maxMemory",
        "listenFds",
        "serialization",
        "uid",
        "gid",
    ] {
        options[key] = Value::Null;
    }
    let o = parse(options).unwrap();
    assert_eq!(o.kill_timeout, Duration::from_secs(5));
    assert!(o.agent.is_none() && o.watchdog.child_runtime);
}

#[test]
fn values_are_read() {
    let (d, exec) = script();
    let o = parse(json!({
        "exec": exec, "args": ["a", "b"], "execArgv": ["--no-warnings"], "workers": 3,
        "schedule": "reuseport", "killTimeout": 0, "readiness": "message", "readyTimeout": 1,
        "maxRestarts": 0, "restartWindow": 1, "restartDelay": 0, "maxRestartDelay": 7,
        "maxMessageSize": 1, "reloadParallel": 4096, "reloadAgent": true, "childRuntime": false,
        "heartbeatInterval": 5, "serialization": "advanced", "uid": 0, "gid": 4294967295u32,
        "agent": "app.js", "cwd": d.path,
    }))
    .unwrap();
    assert_eq!(o.child.args, ["a", "b"]);
    assert_eq!(o.child.exec_argv, ["--no-warnings"]);
    assert_eq!(o.workers, 3);
    assert_eq!(o.schedule, Schedule::ReusePort);
    assert_eq!(o.kill_timeout, Duration::ZERO);
    assert_eq!(o.readiness, Readiness::Message);
    assert_eq!(o.ready_timeout, Duration::from_millis(1));
    assert_eq!(o.restart.max_restarts, 0);
    assert_eq!(o.restart.max_delay, Duration::from_millis(7));
    assert_eq!(o.max_message, 1);
    assert_eq!(
        o.reload,
        ReloadPolicy {
            parallel: 4096,
            agent: true
        }
    );
    assert_eq!(o.watchdog.heartbeat_timeout, None);
    assert_eq!(o.child.serialization, Serialization::Advanced);
    assert_eq!((o.child.uid, o.child.gid), (Some(0), Some(u32::MAX)));
    let agent = o.agent.unwrap();
    assert_eq!(agent.child.exec, d.path.join("app.js"));
    assert_eq!(agent.readiness, AgentReadiness::Started);
}

#[test]
fn memory_sizes_take_units() {
    let (_d, exec) = script();
    for (given, bytes) in [
        (json!(1000), Some(1000)),
        (json!("300M"), Some(300 << 20)),
        (json!("1.5G"), Some(3 << 29)),
        (json!("512mb"), Some(512 << 20)),
        (json!("64k"), Some(64 << 10)),
        (json!(" 2 K "), Some(2 << 10)),
        (json!("100B"), Some(100)),
        (json!(null), None),
        // Node-API passes integers past u32 as floats.
        (json!(5_368_709_120.0), Some(5 << 30)),
    ] {
        let o = parse(json!({ "exec": exec, "maxMemory": given })).unwrap();
        assert_eq!(o.watchdog.max_memory, bytes, "{given}");
    }
    for bad in [
        json!("lots"),
        json!("-1M"),
        json!(-5),
        json!(true),
        json!(0),
        json!("0M"),
        json!("0.1"),
        json!(1.5),
        json!("1e30G"),
        json!("inf"),
        json!("NaN"),
        json!("M"),
        json!(""),
        json!(9_007_199_254_740_992.0),
    ] {
        refused(&exec, json!({ "maxMemory": bad }), "maxMemory");
    }
}

#[test]
fn heartbeat_timeout_must_exceed_its_interval() {
    let (_d, exec) = script();
    let e = parse(json!({ "exec": exec, "heartbeatInterval": 1000, "heartbeatTimeout": 500 }))
        .unwrap_err();
    assert_eq!(e.code, errors::INVALID_OPTION);
    assert!(e.message.contains("heartbeatTimeout"), "{}", e.message);
    let o = parse(json!({ "exec": exec, "heartbeatTimeout": 0 })).unwrap();
    assert_eq!(o.watchdog.heartbeat_timeout, None);
    let o = parse(json!({ "exec": exec, "childRuntime": false })).unwrap();
    assert_eq!(o.watchdog.heartbeat_timeout, None);
    assert!(parse(json!({ "exec": exec, "reloadParallel": 0 })).is_err());
}

#[test]
fn exec_is_resolved_against_cwd_and_must_exist() {
    let (d, _exec) = script();
    let o = parse(json!({ "exec": "app.js", "cwd": d.path })).unwrap();
    assert_eq!(o.child.exec, d.path.join("app.js"));
    let e = parse(json!({ "exec": "nope.js", "cwd": d.path })).unwrap_err();
    assert_eq!(e.code, errors::EXEC_NOT_FOUND);
    let e = parse(json!({ "exec": ".", "cwd": d.path })).unwrap_err();
    assert_eq!(e.code, errors::EXEC_UNREADABLE);
    for no_exec in [json!({}), json!({ "exec": null })] {
        let e = parse(no_exec).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION);
        assert!(e.message.contains("`exec` is required"), "{}", e.message);
    }
    // A relative cwd is the primary's cwd joined with it.
    let o = parse(json!({ "exec": d.path.join("app.js"), "cwd": "." })).unwrap();
    assert_eq!(o.child.cwd, std::env::current_dir().unwrap());
    // fork() leaves a missing script to the child, as Node does.
    let spec = fork(json!({ "exec": "nope.js", "cwd": d.path })).unwrap();
    assert_eq!(spec.exec, d.path.join("nope.js"));
}

#[test]
fn bad_values_name_the_option() {
    let (_d, exec) = script();
    for (key, bad) in [
        ("workers", json!(-1)),
        ("workers", json!(1.5)),
        ("workers", json!("many")),
        ("workers", json!(4097)),
        ("schedule", json!("round-robin")),
        ("schedule", json!(1)),
        ("killTimeout", json!(-5)),
        ("killTimeout", json!("5s")),
        ("readiness", json!("soon")),
        ("args", json!("a b")),
        ("args[0]", json!([1])),
        ("args[1]", json!(["a", "b\0c"])),
        ("execArgv", json!({})),
        ("env", json!(["A=1"])),
        ("env.A", json!({"A": {"nested": 1}})),
        ("env.A", json!({"A": "a\0b"})),
        ("env", json!({"A=B": "1"})),
        ("env", json!({"": "1"})),
        ("cwd", json!("/definitely/not/here")),
        ("cwd", json!("")),
        ("exec", json!("")),
        ("exec", json!(5)),
        ("execPath", json!("/definitely/not/here")),
        ("execPath", json!(false)),
        ("serialization", json!("v8")),
        ("uid", json!(-1)),
        ("gid", json!(u64::from(u32::MAX) + 1)),
        ("restartWindow", json!(0)),
        ("restartWindow", json!(1.5)),
        ("restartWindow", json!(1e20)),
        ("restartDelay", json!(true)),
        ("maxRestartDelay", json!(MAX_MS + 1)),
        ("readyTimeout", json!(0)),
        ("heartbeatInterval", json!(0)),
        ("heartbeatTimeout", json!(-1)),
        ("killTimeout", json!(MAX_MS + 1)),
        ("maxRestarts", json!(-1)),
        ("maxRestarts", json!(u64::from(u32::MAX) + 1)),
        ("maxMessageSize", json!(0)),
        ("maxMessageSize", json!(MAX_MESSAGE_SIZE + 1)),
        ("reloadParallel", json!(0)),
        ("reloadParallel", json!(MAX_WORKERS + 1)),
        ("reloadAgent", json!(1)),
        ("childRuntime", json!("yes")),
        ("listenFds", json!(3)),
        ("listenFds[0]", json!([-1])),
        ("listenFds[0]", json!([1.5])),
        ("listenFds[0]", json!([2_147_483_648u64])),
        ("agent", json!(5)),
        ("agent", json!([])),
        ("agent", json!("")),
    ] {
        let mut options = json!({});
        options[key.split(['.', '[']).next().unwrap()] = bad;
        refused(&exec, options, key);
    }
}

#[test]
fn messages_say_what_was_expected_and_what_came() {
    let (_d, exec) = script();
    for (options, message) in [
        (
            json!({ "killTimeout": "5s" }),
            "option `killTimeout` must be an integer from 0 to 2147483647, got \"5s\"",
        ),
        (
            json!({ "restartWindow": 0 }),
            "option `restartWindow` must be an integer from 1 to 2147483647, got 0",
        ),
        (
            json!({ "workers": -1 }),
            "option `workers` must be an integer from 0 to 4096, or 'max', got -1",
        ),
        (
            json!({ "schedule": "random" }),
            "option `schedule` must be 'shared' or 'reuseport', got \"random\"",
        ),
        (
            json!({ "readiness": 1 }),
            "option `readiness` must be 'listening', 'online' or 'message', got 1",
        ),
        (
            json!({ "args": "a b" }),
            "option `args` must be an array, got \"a b\"",
        ),
        (
            json!({ "args": ["a", 1] }),
            "option `args[1]` must be a string without NUL bytes, got 1",
        ),
        (
            json!({ "env": ["A=1"] }),
            "option `env` must be an object, got [\"A=1\"]",
        ),
        (
            json!({ "childRuntime": "yes" }),
            "option `childRuntime` must be a boolean, got \"yes\"",
        ),
        (
            json!({ "agent": { "exec": exec, "env": { "PORT": [] } } }),
            "option `agent.env.PORT` must be a string, number, boolean or null, without NUL bytes, got []",
        ),
        (
            json!({ "agent": 5 }),
            "option `agent` must be a script path or { exec, args, execArgv, execPath, env, readiness, scope, lease }, got 5",
        ),
    ] {
        let mut options = options;
        if options.get("exec").is_none() {
            options["exec"] = json!(exec);
        }
        assert_eq!(parse(options).unwrap_err().message, message);
    }
    let long = "x".repeat(100);
    let e = parse(json!({ "exec": exec, "schedule": long })).unwrap_err();
    assert!(
        e.message.ends_with("...") && e.message.len() < 150,
        "{}",
        e.message
    );
}

#[test]
fn unknown_options_are_named() {
    let (_d, exec) = script();
    let e = parse(json!({ "exec": exec, "worker": 2 })).unwrap_err();
    assert_eq!(e.code, errors::INVALID_OPTION);
    assert!(
        e.message
            .starts_with("unknown option `worker` (expected one of "),
        "{}",
        e.message
    );
    assert!(e.message.contains("`workers`"), "{}", e.message);
    let e = parse(json!({ "exec": exec, "agent": { "exec": exec, "cwd": "/" } })).unwrap_err();
    assert_eq!(e.code, errors::INVALID_OPTION);
    assert!(
        e.message.starts_with("unknown option `agent.cwd`"),
        "{}",
        e.message
    );
    // stdio is fork()'s: the supervisor sets its workers' stdio.
    refused(&exec, json!({ "stdio": ["pipe"] }), "stdio");
}

#[test]
fn the_options_must_be_an_object() {
    for bad in [json!(5), json!([]), json!(null), json!("app.js")] {
        let e = parse(bad.clone()).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION);
        assert!(
            e.message.starts_with("option `options` must be an object"),
            "{bad}: {}",
            e.message
        );
    }
}

#[test]
fn env_overlays_the_process_environment() {
    let (_d, exec) = script();
    let o = parse(json!({ "exec": exec, "env": {"X": null, "PORT": 3000, "ON": true, "F": 1.5} }))
        .unwrap();
    let env: BTreeMap<_, _> = o.child.env.into_iter().collect();
    let get = |k: &str| env.get(OsStr::new(k)).and_then(|v| v.to_str());
    assert_eq!(get("HOME"), Some("/root"));
    assert_eq!(get("PORT"), Some("3000"));
    assert_eq!(get("ON"), Some("true"));
    assert_eq!(get("F"), Some("1.5"));
    assert_eq!(get("X"), None);
}

#[test]
fn the_agent_inherits_what_it_does_not_set() {
    let (d, exec) = script();
    let o = parse(json!({
        "exec": exec, "args": ["app"], "execArgv": ["--app"], "env": { "A": "1", "B": "2" },
        "agent": { "exec": "app.js", "env": { "B": "3", "A": null }, "readiness": "message" },
        "cwd": d.path,
    }))
    .unwrap();
    let agent = o.agent.unwrap();
    assert_eq!(agent.readiness, AgentReadiness::Message);
    assert!(agent.child.args.is_empty(), "the app's args are the app's");
    assert_eq!(agent.child.exec_argv, ["--app"]);
    let env: BTreeMap<_, _> = agent.child.env.into_iter().collect();
    assert_eq!(env.get(OsStr::new("B")), Some(&OsString::from("3")));
    assert!(!env.contains_key(OsStr::new("A")));

    for (agent, name) in [
        (json!({}), "agent.exec"),
        (json!({ "exec": exec, "args": [1] }), "agent.args[0]"),
        (json!({ "exec": exec, "execArgv": "x" }), "agent.execArgv"),
        (
            json!({ "exec": exec, "readiness": "soon" }),
            "agent.readiness",
        ),
        (json!({ "exec": exec, "env": { "A=": "1" } }), "agent.env"),
        (json!({ "exec": exec, "env": { "P": {} } }), "agent.env.P"),
        (
            json!({ "exec": exec, "execPath": "/nope" }),
            "agent.execPath",
        ),
    ] {
        refused(&exec, json!({ "agent": agent }), name);
    }
    let e = parse(json!({ "exec": exec, "agent": "nope.js", "cwd": d.path })).unwrap_err();
    assert_eq!(e.code, errors::EXEC_NOT_FOUND);
}

#[test]
fn a_cluster_agent_needs_redis_and_a_lease_that_leaves_a_renewal() {
    let (_d, exec) = script();
    let redis = "redis://localhost";
    let o = parse(json!({ "exec": exec, "agent": exec, "redis": redis })).unwrap();
    assert_eq!(o.agent.unwrap().scope, AgentScope::Host);
    let o = parse(json!({
        "exec": exec, "redis": redis, "agent": { "exec": exec, "scope": "cluster" },
    }))
    .unwrap();
    let lease = LeaseTiming::new(DEFAULT_LEASE, Duration::from_secs(5)).unwrap();
    assert_eq!(o.agent.unwrap().scope, AgentScope::Cluster(lease));
    let o = parse(json!({
        "exec": exec, "redis": redis, "killTimeout": 500,
        "agent": { "exec": exec, "scope": "cluster", "lease": 2000 },
    }))
    .unwrap();
    let lease = LeaseTiming::new(Duration::from_secs(2), Duration::from_millis(500)).unwrap();
    assert_eq!(o.agent.unwrap().scope, AgentScope::Cluster(lease));

    let message = refused(
        &exec,
        json!({ "agent": { "exec": exec, "scope": "cluster" } }),
        "agent.scope",
    );
    assert!(message.contains("needs `redis`"), "{message}");
    refused(
        &exec,
        json!({ "redis": redis, "agent": { "exec": exec, "scope": "everywhere" } }),
        "agent.scope",
    );
    let message = refused(
        &exec,
        json!({ "redis": redis, "agent": { "exec": exec, "lease": 5000 } }),
        "agent.lease",
    );
    assert!(message.contains("scope: 'cluster'"), "{message}");
    for lease in [json!(999), json!(-1), json!("10s"), json!(1.5)] {
        refused(
            &exec,
            json!({ "redis": redis, "agent": { "exec": exec, "scope": "cluster", "lease": lease } }),
            "agent.lease",
        );
    }
    // The default lease with a long killTimeout: the message says which lease would do.
    let message = refused(
        &exec,
        json!({ "redis": redis, "killTimeout": 8000, "agent": { "exec": exec, "scope": "cluster" } }),
        "agent.lease",
    );
    assert!(message.contains("10000 ms, the default"), "{message}");
    assert!(message.contains("at least 13501 ms"), "{message}");
}

#[test]
fn exec_path_must_be_executable() {
    let (d, exec) = script();
    let o = parse(json!({ "exec": exec, "execPath": "/bin/sh" })).unwrap();
    assert_eq!(o.child.exec_path, Some(PathBuf::from("/bin/sh")));
    let e = parse(json!({ "exec": exec, "execPath": "app.js", "cwd": d.path })).unwrap_err();
    assert!(
        e.message.contains("is not an executable file"),
        "{}",
        e.message
    );
}

#[test]
fn listen_fds_must_be_open_sockets() {
    let (_d, exec) = script();
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let o = parse(json!({ "exec": exec, "listenFds": [fd] })).unwrap();
    assert_eq!(o.listen_fds, [fd]);
    let file = std::fs::File::open(&exec).unwrap();
    let not_socket = std::os::fd::AsRawFd::as_raw_fd(&file);
    let message = refused(
        &exec,
        json!({ "listenFds": [fd, not_socket] }),
        "listenFds[1]",
    );
    assert!(message.contains("is not an open socket"), "{message}");
}

#[test]
fn workers_max_and_zero_mean_cpus() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(parse_workers(Some(&json!("max"))).unwrap(), cpus);
    assert_eq!(parse_workers(Some(&json!(0))).unwrap(), cpus);
    assert_eq!(parse_workers(None).unwrap(), cpus);
    assert_eq!(parse_workers(Some(&json!(3))).unwrap(), 3);
    // Node-API passes integers past u32 as floats; 3.0 is still 3.
    assert_eq!(parse_workers(Some(&json!(3.0))).unwrap(), 3);
    let e = parse_workers(Some(&json!(100000))).unwrap_err();
    assert_eq!(e.code, errors::INVALID_OPTION);
    assert!(
        e.message.starts_with("option `workers` must be"),
        "{}",
        e.message
    );
}

#[test]
fn reload_parallel_is_at_least_one() {
    assert_eq!(parse_reload_parallel(None).unwrap(), 1);
    assert_eq!(parse_reload_parallel(Some(&json!(null))).unwrap(), 1);
    assert_eq!(parse_reload_parallel(Some(&json!(8))).unwrap(), 8);
    for bad in [json!(0), json!(-1), json!(1.5), json!("2"), json!(4097)] {
        let e = parse_reload_parallel(Some(&bad)).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION);
        assert!(e.message.contains("`reloadParallel`"), "{}", e.message);
    }
}

#[test]
fn stdio_like_node() {
    use StdioEntry::*;
    let stdio = |v: Value| fork(json!({ "stdio": v })).map(|spec| spec.stdio);
    assert_eq!(stdio(Value::Null).unwrap(), [Fd(0), Fd(1), Fd(2), Ipc]);
    assert_eq!(
        stdio(json!(["pipe", "pipe", "pipe", "ipc", "pipe"])).unwrap(),
        [Pipe, Pipe, Pipe, Ipc, Pipe]
    );
    assert_eq!(
        stdio(json!(["ignore", "inherit", 2])).unwrap(),
        [Ignore, Fd(1), Fd(2), Ipc]
    );
    assert_eq!(
        stdio(json!([null, "overlapped", null, null, "ipc"])).unwrap(),
        [Pipe, Pipe, Pipe, Ignore, Ipc]
    );
    assert_eq!(stdio(json!([])).unwrap(), [Pipe, Pipe, Pipe, Ipc]);
    for (bad, name) in [
        (json!(["ipc", "pipe", "pipe"]), "stdio"),
        (json!(["pipe", "pipe", "pipe", "ipc", "ipc"]), "stdio"),
        (
            json!(vec!["pipe"; 3 + crate::os::spawner::MAX_EXTRA_FDS + 1]),
            "stdio",
        ),
        (json!("pipe"), "stdio"),
        (json!(["pipe", "pipe", "pipe", -3]), "stdio[3]"),
        (json!(["pipe", "pipe", "socket"]), "stdio[2]"),
    ] {
        let e = stdio(bad.clone()).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION, "{bad}");
        assert!(
            e.message.contains(&format!("`{name}`")),
            "{bad}: {}",
            e.message
        );
    }
}

#[test]
fn fork_reads_node_settings() {
    let spec = fork(json!({
        "args": ["x"], "execArgv": ["--inspect"], "env": { "A": "1" }, "serialization": "advanced",
        "uid": 1000, "gid": 1000,
    }))
    .unwrap();
    assert_eq!(spec.args, ["x"]);
    assert_eq!(spec.exec_argv, ["--inspect"]);
    assert_eq!(spec.env, [(OsString::from("A"), OsString::from("1"))]);
    assert_eq!(spec.serialization, Serialization::Advanced);
    assert_eq!((spec.uid, spec.gid), (Some(1000), Some(1000)));
    assert_eq!(spec.script_name(), "app.js");
    let e = fork(json!({ "uid": "root" })).unwrap_err();
    assert!(e.message.contains("`uid`"), "{}", e.message);
}

#[test]
fn stop_signal_is_a_signal_name_that_lets_a_worker_finish() {
    let (_d, exec) = script();
    assert_eq!(parse(json!({ "exec": exec })).unwrap().stop_signal, None);
    let o = parse(json!({ "exec": exec, "stopSignal": "SIGTERM" })).unwrap();
    assert_eq!(o.stop_signal, Some(nix::sys::signal::Signal::SIGTERM));
    for bad in [
        json!("SIGKILL"),
        json!("SIGSTOP"),
        json!("TERM"),
        json!(15),
        json!(true),
    ] {
        let message = refused(&exec, json!({ "stopSignal": bad }), "stopSignal");
        assert!(message.contains("signal name"), "{message}");
    }
}

#[test]
fn a_cluster_is_named_after_its_script_unless_named() {
    let (_dir, exec) = script();
    let options = parse(json!({ "exec": exec })).unwrap();
    assert_eq!(options.operations.name, "app");
    assert!(options.operations.control);
    assert!(!options.operations.log_prefix);
    let named = parse(json!({ "exec": exec, "name": "shop-api.v2", "control": false })).unwrap();
    assert_eq!(named.operations.name, "shop-api.v2");
    assert!(!named.operations.control);
    assert_eq!(
        default_cluster_name(Path::new("/srv/my app!.js")),
        "my-app-"
    );
    assert_eq!(
        default_cluster_name(Path::new("/srv/..hidden.js")),
        "hidden"
    );
    assert_eq!(default_cluster_name(Path::new("/srv/.js")), "js");
    assert_eq!(default_cluster_name(Path::new("/")), "app");
}

#[test]
fn a_name_cannot_leave_the_control_folder() {
    for bad in [
        json!(""),
        json!("a/b"),
        json!(".."),
        json!("a..b"),
        json!(".hidden"),
        json!("-flag"),
        json!("x".repeat(65)),
        json!("sp ace"),
        json!(7),
    ] {
        let message = refused("app.js", json!({ "name": bad }), "name");
        assert!(message.contains("option `name`"), "{message}");
    }
}

#[test]
fn metrics_takes_an_ip_or_localhost_and_a_port() {
    let (_d, exec) = script();
    for (text, addr) in [
        ("127.0.0.1:9100", "127.0.0.1:9100"),
        ("localhost:9100", "127.0.0.1:9100"),
        (":9100", "[::]:9100"),
        ("[::1]:9100", "[::1]:9100"),
        ("0.0.0.0:65535", "0.0.0.0:65535"),
    ] {
        let o = parse(json!({ "exec": exec, "metrics": text })).unwrap();
        assert_eq!(o.operations.metrics, Some(addr.parse().unwrap()), "{text}");
    }
    assert_eq!(
        parse(json!({ "exec": exec })).unwrap().operations.metrics,
        None
    );
    for bad in [
        json!("9100"),
        json!("example.com:9100"),
        json!("127.0.0.1:0"),
        json!("127.0.0.1:65536"),
        json!("127.0.0.1:+80"),
        json!("::1:9100"),
        json!("[127.0.0.1]:80"),
        json!(":"),
        json!(9100),
    ] {
        refused(&exec, json!({ "metrics": bad }), "metrics");
    }
}

#[test]
fn systemd_variables_stay_with_the_primary() {
    let (_d, exec) = script();
    let me = std::process::id().to_string();
    let process_env = [
        ("HOME", "/root"),
        ("LISTEN_PID", me.as_str()),
        ("LISTEN_FDS", "0"),
        ("LISTEN_FDNAMES", "web"),
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("WATCHDOG_USEC", "1000000"),
        ("WATCHDOG_PID", me.as_str()),
    ]
    .map(|(k, v)| (k.into(), v.into()))
    .to_vec();
    let o = parse_cluster_options(
        &json!({ "exec": exec, "env": { "NOTIFY_SOCKET": "/mine" } }),
        process_env,
    )
    .unwrap();
    let env: BTreeMap<_, _> = o.child.env.into_iter().collect();
    let names: Vec<_> = env
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect();
    // What the app sets for its workers, it gets.
    assert_eq!(names, ["HOME", "NOTIFY_SOCKET"]);
    assert_eq!(
        env.get(OsStr::new("NOTIFY_SOCKET")),
        Some(&OsString::from("/mine"))
    );
    assert!(o.systemd_fds.is_empty(), "LISTEN_FDS=0");
}

#[test]
fn redis_urls_of_the_taken_forms() {
    use super::remote::check_redis_url;
    for url in [
        "redis://localhost",
        "redis://127.0.0.1:6379",
        "redis://redis.internal:6380/2",
        "redis://user:s3cret@redis.internal:6379/0",
        "redis://:s3cret@h",
        "redis://h/",
        "redis://[::1]:6379/1",
        "redis://[::1]",
        "REDIS://h",
        "unix:///run/redis/redis.sock",
        "redis+unix:///run/redis.sock",
    ] {
        assert_eq!(check_redis_url(url), Ok(()), "{url}");
    }
    for url in [
        "",
        "localhost:6379",
        "rediss://h:6379",
        "http://h:6379",
        "redis://",
        "redis://:6379",
        "redis://user:pass@",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:",
        "redis://h:+80",
        "redis://h:port",
        "redis://h/db",
        "redis://h/1/2",
        "redis://h/-1",
        "redis://h?db=1",
        "redis://h#x",
        "redis://a b",
        "redis://h\n",
        "redis://::1:6379",
        "redis://[::1",
        "redis://[nope]:1",
        "redis://[::1]6379",
        "redis://h%41",
        "unix://host/run/redis.sock",
        "unix://",
        "unix:///",
        "unix:///run/",
        "unix:///run/redis.sock?db=1",
    ] {
        assert!(check_redis_url(url).is_err(), "{url:?}");
    }
}

#[test]
fn a_password_is_hidden_from_messages() {
    use super::remote::hide_password;
    assert_eq!(
        hide_password("redis://user:s3cret@h:1/2"),
        "redis://user:***@h:1/2"
    );
    assert_eq!(hide_password("redis://s3cret@h"), "redis://:***@h");
    assert_eq!(hide_password("redis://a:b@c@h"), "redis://a:***@h");
    assert_eq!(hide_password("redis://h:1"), "redis://h:1");
    assert_eq!(hide_password("nothing"), "nothing");
    let (_d, exec) = script();
    let message = refused(
        &exec,
        json!({ "redis": "rediss://user:s3cret@h:6379" }),
        "redis",
    );
    assert!(!message.contains("s3cret"), "{message}");
    let o = parse(json!({ "exec": exec, "redis": "redis://u:s3cret@h" })).unwrap();
    assert!(!format!("{o:?}").contains("s3cret"));
}

#[test]
fn no_remote_without_redis() {
    let (_d, exec) = script();
    assert_eq!(parse(json!({ "exec": exec })).unwrap().remote, None);
    let o = parse(json!({ "exec": exec, "redis": null, "namespace": null, "hostId": null }));
    assert_eq!(o.unwrap().remote, None);
}

#[test]
fn remote_defaults_the_namespace_to_the_name_and_the_host_id_to_host_pid_random() {
    let (_d, exec) = script();
    let o = parse(json!({ "exec": exec, "redis": "redis://127.0.0.1:6379/0" })).unwrap();
    let remote = o.remote.unwrap();
    assert_eq!(remote.url, "redis://127.0.0.1:6379/0");
    assert_eq!(remote.namespace, o.operations.name);
    assert_eq!(remote.namespace, "app");
    let named = parse(json!({ "exec": exec, "redis": "unix:///run/r.sock", "name": "shop" }));
    let named = named.unwrap();
    assert_eq!(named.remote.unwrap().namespace, named.operations.name);

    // `<hostname>-<pid>-<4 hex digits>`, a valid host id whatever the hostname holds.
    let id = remote.host_id;
    assert!(super::remote::is_host_id(&id), "{id}");
    let (rest, random) = id.rsplit_once('-').unwrap();
    assert!(
        random.len() == 4 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let (host, pid) = rest.rsplit_once('-').unwrap();
    assert_eq!(pid, std::process::id().to_string());
    assert!(!host.is_empty(), "{id}");
}

#[test]
fn remote_values_are_read() {
    let (_d, exec) = script();
    let o = parse(json!({
        "exec": exec, "name": "api", "redis": "redis+unix:///run/redis.sock",
        "namespace": "shop_prod-1.eu", "hostId": ".web-01_A",
    }))
    .unwrap();
    assert_eq!(
        o.remote,
        Some(RemoteOptions {
            url: "redis+unix:///run/redis.sock".into(),
            namespace: "shop_prod-1.eu".into(),
            host_id: ".web-01_A".into(),
        })
    );
    let long = parse(json!({
        "exec": exec, "redis": "redis://h", "namespace": "n".repeat(64), "hostId": "h".repeat(128),
    }));
    let remote = long.unwrap().remote.unwrap();
    assert_eq!((remote.namespace.len(), remote.host_id.len()), (64, 128));
}

#[test]
fn bad_remote_values_name_the_option() {
    let (_d, exec) = script();
    for bad in [
        json!(""),
        json!("rediss://h"),
        json!("http://h:6379"),
        json!("redis://h:70000"),
        json!("redis://h/zero"),
        json!(6379),
        json!({ "host": "h" }),
    ] {
        let message = refused(&exec, json!({ "redis": bad }), "redis");
        assert!(
            message.contains("'redis://[user:pass@]host[:port][/db]' or 'unix:///path'"),
            "{message}"
        );
    }
    for bad in [
        json!(""),
        json!(".hidden"),
        json!("a{b}"),
        json!("a:b"),
        json!("a/b"),
        json!("a b"),
        json!("é"),
        json!("n".repeat(65)),
        json!(7),
    ] {
        refused(
            &exec,
            json!({ "redis": "redis://h", "namespace": bad }),
            "namespace",
        );
    }
    for bad in [
        json!(""),
        json!("a:b"),
        json!("a/b"),
        json!("{a}"),
        json!("a b"),
        json!("h".repeat(129)),
        json!(false),
    ] {
        refused(
            &exec,
            json!({ "redis": "redis://h", "hostId": bad }),
            "hostId",
        );
    }
}

#[test]
fn namespace_and_host_id_need_redis() {
    let (_d, exec) = script();
    for (options, name) in [
        (json!({ "namespace": "shop" }), "namespace"),
        (json!({ "hostId": "web-1" }), "hostId"),
        (
            json!({ "namespace": "shop", "hostId": "web-1" }),
            "namespace",
        ),
    ] {
        let message = refused(&exec, options, name);
        assert!(message.contains("needs `redis`"), "{message}");
    }
}
