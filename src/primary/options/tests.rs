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

/// `fork()`'s settings.
fn fork(v: Value) -> RcResult<ChildSpec> {
    parse_child_spec(v.as_object().unwrap(), Vec::new(), false)
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
    assert_eq!(o.restart.max_restarts, 5);
    assert_eq!(o.child.ipc_fd(), 3);
    assert_eq!(o.child.serialization, Serialization::Json);
    assert_eq!(
        o.reload,
        ReloadPolicy {
            parallel: 1,
            agent: false
        }
    );
    assert!(o.watchdog.child_runtime);
    assert_eq!(o.watchdog.heartbeat_timeout, Some(Duration::from_secs(30)));
    assert_eq!(o.watchdog.max_memory, None);
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
        json!(9_007_199_254_740_992.0),
    ] {
        let e = parse(json!({ "exec": exec, "maxMemory": bad })).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION, "{bad}");
        assert!(e.message.contains("`maxMemory`"), "{}", e.message);
    }
}

#[test]
fn heartbeat_timeout_must_exceed_its_interval() {
    let (_d, exec) = script();
    let e = parse(json!({ "exec": exec, "heartbeatInterval": 1000, "heartbeatTimeout": 500 }))
        .unwrap_err();
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
    assert_eq!(parse(json!({})).unwrap_err().code, errors::INVALID_OPTION);
}

#[test]
fn bad_values_name_the_option() {
    let (_d, exec) = script();
    for (key, bad) in [
        ("workers", json!(-1)),
        ("workers", json!(1.5)),
        ("workers", json!("many")),
        ("schedule", json!("round-robin")),
        ("killTimeout", json!(-5)),
        ("killTimeout", json!("5s")),
        ("readiness", json!("soon")),
        ("args", json!("a b")),
        ("args", json!([1])),
        ("env", json!({"A": {"nested": 1}})),
        ("env", json!(["A=1"])),
        ("cwd", json!("/definitely/not/here")),
        ("serialization", json!("v8")),
        ("uid", json!(-1)),
        ("restartWindow", json!(0)),
        ("restartWindow", json!(1.5)),
        ("restartWindow", json!(1e20)),
        ("readyTimeout", json!(0)),
        ("heartbeatInterval", json!(0)),
        ("killTimeout", json!(MAX_MS + 1)),
        ("maxRestarts", json!(-1)),
        ("maxRestarts", json!(u64::from(u32::MAX) + 1)),
        ("maxMessageSize", json!(0)),
        ("maxMessageSize", json!(MAX_MESSAGE_SIZE + 1)),
    ] {
        let mut o = json!({ "exec": exec });
        o[key] = bad.clone();
        let e = parse(o).unwrap_err();
        assert_eq!(e.code, errors::INVALID_OPTION, "{key}={bad}");
        assert!(e.message.contains(&format!("`{key}")), "{}", e.message);
    }
    let e = parse(json!({ "exec": exec, "worker": 2 })).unwrap_err();
    assert!(
        e.message.contains("unknown option `worker`"),
        "{}",
        e.message
    );
}

#[test]
fn env_overlays_the_process_environment() {
    let (_d, exec) = script();
    let o = parse(json!({ "exec": exec, "env": {"X": null, "PORT": 3000, "ON": true} })).unwrap();
    let env: BTreeMap<_, _> = o.child.env.into_iter().collect();
    assert_eq!(
        env.get(&OsString::from("HOME")),
        Some(&OsString::from("/root"))
    );
    assert_eq!(
        env.get(&OsString::from("PORT")),
        Some(&OsString::from("3000"))
    );
    assert_eq!(
        env.get(&OsString::from("ON")),
        Some(&OsString::from("true"))
    );
    assert!(!env.contains_key(&OsString::from("X")));
}

#[test]
fn workers_max_and_zero_mean_cpus() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(parse_workers(Some(&json!("max"))).unwrap(), cpus);
    assert_eq!(parse_workers(Some(&json!(0))).unwrap(), cpus);
    assert_eq!(parse_workers(Some(&json!(3))).unwrap(), 3);
    assert!(parse_workers(Some(&json!(100000))).is_err());
}

#[test]
fn stdio_like_node() {
    let stdio = |v: Value| fork(json!({ "exec": "app.js", "stdio": v })).map(|spec| spec.stdio);
    assert_eq!(
        stdio(json!(["pipe", "pipe", "pipe", "ipc", "pipe"])).unwrap(),
        vec![
            StdioEntry::Pipe,
            StdioEntry::Pipe,
            StdioEntry::Pipe,
            StdioEntry::Ipc,
            StdioEntry::Pipe
        ]
    );
    assert_eq!(
        stdio(json!(["ignore", "inherit", 2])).unwrap(),
        vec![
            StdioEntry::Ignore,
            StdioEntry::Fd(1),
            StdioEntry::Fd(2),
            StdioEntry::Ipc
        ]
    );
    assert!(stdio(json!(["ipc", "pipe", "pipe"])).is_err());
    assert!(stdio(json!(["pipe", "pipe", "pipe", "ipc", "ipc"])).is_err());
    assert!(stdio(json!(["pipe", "pipe", "pipe", -3])).is_err());
}
