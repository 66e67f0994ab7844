//! Where a cluster's control socket lives, and how a cluster comes to own its name.
//!
//! The home folder is this user's alone (0700). In it, `<name>.lock` is held with `flock` for as
//! long as the primary runs, and `<name>.sock` is its socket (0600). The lock decides who owns
//! the name: the kernel drops it when the primary dies, however it dies, so a socket left behind
//! by a killed primary is known to be stale and is replaced, and two primaries starting at once
//! cannot both take the name.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::errors::{self, RcError, RcResult};

/// `sun_path` holds 108 bytes with its NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The control folder: `$RCLUSTER_HOME`, else `$XDG_RUNTIME_DIR/rcluster`, else `~/.rcluster`.
pub fn home(env: impl Fn(&str) -> Option<String>) -> RcResult<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(home) = set("RCLUSTER_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(runtime) = set("XDG_RUNTIME_DIR") {
        return Ok(Path::new(&runtime).join("rcluster"));
    }
    match set("HOME") {
        Some(user_home) => Ok(Path::new(&user_home).join(".rcluster")),
        None => Err(RcError::new(
            errors::CONTROL_UNSAFE,
            "no folder for the control socket: set RCLUSTER_HOME (or HOME), or start with control: false",
        )),
    }
}

/// A name this primary owns until it drops the claim.
pub struct Claim {
    pub socket_path: PathBuf,
    /// Held, not read: the flock is the claim.
    _lock: Flock<File>,
}

impl Claim {
    /// Takes `name` in `home` and binds its socket. A name held by a running primary is refused
    /// with that primary's pid.
    pub fn take(home: &Path, name: &str) -> RcResult<(Claim, UnixListener)> {
        ensure_private_folder(home)?;
        let socket_path = home.join(format!("{name}.sock"));
        if socket_path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(RcError::new(
                errors::CONTROL_UNSAFE,
                format!(
                    "the control socket's path {} is longer than {MAX_SOCKET_PATH} bytes: set RCLUSTER_HOME to a shorter folder",
                    socket_path.display()
                ),
            ));
        }
        let lock_path = home.join(format!("{name}.lock"));
        let io_error = |what: &str, e: std::io::Error| {
            RcError::new(
                errors::CONTROL_UNSAFE,
                format!("cannot {what} for cluster '{name}': {e}"),
            )
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| io_error("open the lock file", e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(RcError::new(
                    errors::NAME_IN_USE,
                    format!("a cluster named '{name}' is already running{holder}: give this one another name, or stop that one first"),
                ));
            }
            Err((_, e)) => return Err(io_error("lock the name", e.into())),
        };
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .map_err(|e| io_error("write the lock file", e))?;
        // The lock is ours, so a socket there is one a dead primary left behind.
        match std::fs::remove_file(&socket_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove a stale control socket", e)),
        }
        let listener =
            UnixListener::bind(&socket_path).map_err(|e| io_error("bind the control socket", e))?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("restrict the control socket", e))?;
        let claim = Claim {
            socket_path,
            _lock: lock,
        };
        Ok((claim, listener))
    }
}

impl Drop for Claim {
    /// The socket goes; the lock file stays (the lock is released as it closes). Unlinking a
    /// held lock file would let a primary that opened it before, and locks it after, own a name
    /// whose file a third one has created anew.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Creates `home` as 0700, or checks that it is a folder of this user that nobody else can use.
fn ensure_private_folder(home: &Path) -> RcResult<()> {
    let unsafe_folder = |why: String| {
        RcError::new(
            errors::CONTROL_UNSAFE,
            format!("the control folder {}: {why}", home.display()),
        )
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| unsafe_folder(format!("cannot create it: {e}")))?;
    let meta = std::fs::symlink_metadata(home)
        .map_err(|e| unsafe_folder(format!("cannot read it: {e}")))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(unsafe_folder("is not a folder".into()));
    }
    if meta.uid() != me {
        return Err(unsafe_folder(format!(
            "belongs to uid {}, not to this user ({me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_folder(format!(
            "is open to other users (mode {:o}); chmod 700 it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_home(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rcluster-home-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_home_folder_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        static ALL: [(&str, &str); 3] = [
            ("RCLUSTER_HOME", "/a"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("HOME", "/h"),
        ];
        assert_eq!(home(env(&ALL)), Ok(PathBuf::from("/a")));
        assert_eq!(
            home(env(&ALL[1..])),
            Ok(PathBuf::from("/run/user/1/rcluster"))
        );
        assert_eq!(home(env(&ALL[2..])), Ok(PathBuf::from("/h/.rcluster")));
        assert_eq!(
            home(env(&[])).map_err(|e| e.code),
            Err(errors::CONTROL_UNSAFE)
        );
    }

    #[test]
    fn a_name_is_owned_once_and_a_stale_socket_is_replaced() {
        let dir = temp_home("claim");
        let (claim, _listener) = Claim::take(&dir, "app").map_err(|e| e.to_string()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let socket_mode = std::fs::metadata(&claim.socket_path).unwrap().mode() & 0o777;
        assert_eq!(socket_mode, 0o600);
        let again = Claim::take(&dir, "app").err().unwrap();
        assert_eq!(again.code, errors::NAME_IN_USE);
        assert!(
            again
                .message
                .contains(&format!("pid {}", std::process::id())),
            "{again}"
        );
        drop(claim);
        assert!(!dir.join("app.sock").exists());
        // A socket file without its lock held: what a killed primary leaves.
        let _left = UnixListener::bind(dir.join("app.sock")).unwrap();
        let (claim, _listener) = Claim::take(&dir, "app").map_err(|e| e.to_string()).unwrap();
        drop(claim);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_others_can_use_is_refused() {
        let dir = temp_home("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = Claim::take(&dir, "app").err().unwrap();
        assert_eq!(error.code, errors::CONTROL_UNSAFE);
        assert!(error.message.contains("mode 755"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_refused() {
        let dir = temp_home(&"x".repeat(100));
        let error = Claim::take(&dir, "app").err().unwrap();
        assert!(error.message.contains("RCLUSTER_HOME"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
