//! Passes a child's stderr through to ours and remembers its last lines: when the agent dies
//! at startup, the error quotes what it said last.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How many lines are kept.
const KEPT_LINES: usize = 20;
/// A line longer than this is cut: a tail is for reading, not for storing a dump.
const MAX_LINE: usize = 1000;

#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    /// The child closed its end (it exited): the tail is complete.
    ended: bool,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if self.lines.len() == KEPT_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        out
    }
}

#[derive(Clone)]
pub struct StderrTail(Arc<(Mutex<Tail>, Condvar)>);

impl StderrTail {
    /// Starts a thread that copies `pipe` to our stderr until the child closes it.
    pub fn forward(pipe: OwnedFd) -> StderrTail {
        let tail = StderrTail(Arc::new((Mutex::new(Tail::default()), Condvar::new())));
        let kept = tail.clone();
        // Our ends of stdio pairs are non-blocking; this thread waits on its own.
        let mut source = std::os::unix::net::UnixStream::from(pipe);
        let _ = source.set_nonblocking(false);
        let copy = move || {
            let mut buf = [0u8; 8192];
            let mut stderr = std::io::stderr();
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let _ = stderr.write_all(&buf[..n]);
                kept.lock().push(&buf[..n]);
            }
            kept.lock().ended = true;
            kept.0 .1.notify_all();
        };
        // Without the thread, the child's stderr is lost but nothing else is.
        let _ = std::thread::Builder::new()
            .name("rcluster-stderr".into())
            .spawn(copy);
        tail
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last lines, once the child has closed its stderr (or after `wait`, whichever is
    /// first): when it has just exited, what it wrote last may still be in the pipe.
    pub fn lines_after_end(&self, wait: Duration) -> Vec<String> {
        let guard = self.lock();
        let (guard, _) = self
            .0
             .1
            .wait_timeout_while(guard, wait, |t| !t.ended)
            .unwrap_or_else(|e| e.into_inner());
        guard.lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_the_unfinished_one() {
        let mut t = Tail::default();
        for i in 0..30 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"Error: boom");
        let lines = t.lines();
        assert_eq!(lines.len(), KEPT_LINES + 1);
        assert_eq!(lines[0], "line 10");
        assert_eq!(lines.last().map(String::as_str), Some("Error: boom"));
    }
}
