//! A private `redis-server` for the tests, on a Unix socket in a fresh directory, killed when
//! dropped (also when a test fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SERVERS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct RedisServer {
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// `None` when the environment asks to skip (`RCLUSTER_SKIP_REDIS=1`); panics with what to
    /// install when `redis-server` is missing.
    pub fn start() -> Option<RedisServer> {
        if std::env::var("RCLUSTER_SKIP_REDIS").as_deref() == Ok("1") {
            eprintln!("RCLUSTER_SKIP_REDIS=1: skipping a test that needs redis-server");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "rcluster-redis-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer { dir, child: None };
        server.spawn();
        Some(server)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "these tests need redis-server on PATH: install it (Debian: apt-get install \
                 redis-server), or set RCLUSTER_SKIP_REDIS=1 to skip them"
            ),
            Err(error) => panic!("redis-server did not start: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: the data is gone (no persistence), as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server hangs (no answers) until `resume`.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("the server runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// A new, empty server on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
