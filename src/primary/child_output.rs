//! A supervised child's stdout and stderr, when they pass through the primary: copied to our own
//! (src/primary/foreground.rs), unchanged or with `[<id> <time>] ` in front of every line
//! (`logPrefix`), their lines kept in the cluster's `OutputLog` (src/primary/output.rs), and,
//! for the agent, the last lines of its stderr, which the error quotes if it dies at startup.
//!
//! Which pipes there are is the launcher's choice (src/primary/launcher.rs): both streams of
//! every child when the output is captured (`control` or `logPrefix`), else only the agent's
//! stderr, and the other streams are inherited, at no cost.
//!
//! One tokio task per pipe, not a thread: children can be many, and a task that waits costs
//! next to nothing. A task reads at most `READ_CHUNK` bytes, hands them to our stream's writer and
//! waits for it to take them before it reads again: nothing is buffered without bound, and a
//! child whose output is not taken blocks in its writes, as it would on an inherited stdout.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;

use super::child_command::WorkerKind;
use super::foreground;
use super::options::Operations;
use super::output::{LogLine, OutputLog, Stream};
use super::WorkerId;
use crate::os::fd_socket;

/// The most one read takes from a child's pipe.
const READ_CHUNK: usize = 64 << 10;
/// A line kept in the `OutputLog` is cut there: the log is for reading, not for storing dumps.
pub const LOG_LINE_MAX: usize = 16 << 10;
/// With a prefix, a line longer than this is written in pieces, each a line with its prefix:
/// a line is held whole until its end, and a child must not make us hold a dump.
const PREFIXED_PIECE: usize = 64 << 10;

/// Whether the children's output passes through the primary, and how it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Every child's stdout and stderr are pipes that the primary reads.
    pub on: bool,
    /// Lines are written with `[<id> <time>] ` in front.
    pub prefix: bool,
}

impl Capture {
    /// The control socket serves the lines (`rcluster logs`); the prefix needs the lines.
    pub fn of(operations: &Operations) -> Capture {
        Capture {
            on: operations.control || operations.log_prefix,
            prefix: operations.log_prefix,
        }
    }
}

/// A child's pipes, and what is done with what comes out of them.
pub struct ChildOutput {
    pub id: WorkerId,
    pub kind: WorkerKind,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Where whole lines are kept; None: the pipes are only copied through.
    pub log: Option<OutputLog>,
    pub prefix: bool,
}

impl ChildOutput {
    /// Starts copying, on the current runtime. Returns the stderr tail of the agent.
    pub fn start(self) -> Option<StderrTail> {
        let tail =
            (self.kind == WorkerKind::Agent && self.stderr.is_some()).then(StderrTail::default);
        let pipes = [(Stream::Stdout, self.stdout), (Stream::Stderr, self.stderr)];
        for (stream, pipe) in pipes {
            let Some(pipe) = pipe else { continue };
            let copier = Copier {
                id: self.id,
                kind: self.kind,
                stream,
                lines: Lines::new(self.id, self.prefix, self.log.is_some()),
                log: self.log.clone(),
                tail: tail.clone().filter(|_| stream == Stream::Stderr),
            };
            tokio::spawn(copier.run(pipe));
        }
        tail
    }
}

struct Copier {
    id: WorkerId,
    kind: WorkerKind,
    stream: Stream,
    lines: Lines,
    log: Option<OutputLog>,
    tail: Option<StderrTail>,
}

impl Copier {
    async fn run(mut self, pipe: OwnedFd) {
        // Our ends of the pipes are non-blocking sockets (src/os/fd_socket.rs). If the reactor
        // refuses one, the child's writes to it fail; nothing else does.
        if let Ok(pipe) = fd_socket::watch(pipe, Interest::READABLE) {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let read = pipe
                    .async_io(Interest::READABLE, |fd| read(fd.as_raw_fd(), &mut buf))
                    .await;
                let n = match read {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if let Some(tail) = &self.tail {
                    tail.push(&buf[..n]);
                }
                let fed = self.lines.feed(&buf[..n], SystemTime::now());
                self.deliver(fed).await;
                // The loop shares this runtime: a child that prints without pause gets one
                // chunk at a time, not the thread.
                tokio::task::yield_now().await;
            }
        }
        let fed = self.lines.finish(SystemTime::now());
        self.deliver(fed).await;
        if let Some(tail) = &self.tail {
            tail.end();
        }
    }

    async fn deliver(&self, fed: Fed) {
        if let Some(log) = &self.log {
            log.push(fed.lines.into_iter().map(|(time, text)| LogLine {
                id: self.id,
                kind: self.kind,
                stream: self.stream,
                time,
                text,
            }));
        }
        if !fed.foreground.is_empty() {
            foreground::write(self.stream, fed.foreground).await;
        }
    }
}

fn read(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reads into a valid slice from a descriptor the caller owns.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What one read (or the end of the pipe) gives: bytes for our stream, lines for the log.
#[derive(Debug, Default)]
pub struct Fed {
    pub foreground: Vec<u8>,
    pub lines: Vec<(SystemTime, Arc<str>)>,
}

/// Splits a stream into lines, for the log and for the prefix.
pub struct Lines {
    id: WorkerId,
    prefix: bool,
    keep: bool,
    /// The start of the current line for the log (a few bytes over `LOG_LINE_MAX`, so that the
    /// cut can fall on a character boundary).
    logged: Vec<u8>,
    /// With a prefix: the current line's bytes not written yet.
    pending: Vec<u8>,
    /// With a prefix: pieces of the current line have been written.
    pieced: bool,
}

impl Lines {
    pub fn new(id: WorkerId, prefix: bool, keep: bool) -> Self {
        Lines {
            id,
            prefix,
            keep,
            logged: Vec::new(),
            pending: Vec::new(),
            pieced: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], time: SystemTime) -> Fed {
        let mut fed = Fed::default();
        if !self.prefix {
            // Byte for byte, as the child wrote it.
            fed.foreground = chunk.to_vec();
        }
        if !self.prefix && !self.keep {
            return fed;
        }
        let mut stamp = None;
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            let body = if ends {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if self.keep {
                let room = (LOG_LINE_MAX + 3).saturating_sub(self.logged.len());
                self.logged.extend_from_slice(&body[..body.len().min(room)]);
                if ends {
                    fed.lines.push((time, log_text(&self.logged)));
                    self.logged.clear();
                }
            }
            if self.prefix {
                let stamp = stamp.get_or_insert_with(|| prefix(self.id, time));
                self.pending.extend_from_slice(body);
                while self.pending.len() >= PREFIXED_PIECE {
                    let rest = self.pending.split_off(PREFIXED_PIECE);
                    write_line(&mut fed.foreground, stamp, &self.pending);
                    self.pending = rest;
                    self.pieced = true;
                }
                if ends {
                    if !(self.pieced && self.pending.is_empty()) {
                        write_line(&mut fed.foreground, stamp, &self.pending);
                    }
                    self.pending.clear();
                    self.pieced = false;
                }
            }
        }
        fed
    }

    /// The pipe closed: an unfinished last line is a line. (It is not flushed earlier, after a
    /// pause: a line written in several pieces stays one line with one prefix, and what is held
    /// is bounded by `PREFIXED_PIECE`.)
    pub fn finish(&mut self, time: SystemTime) -> Fed {
        let mut fed = Fed::default();
        if self.keep && !self.logged.is_empty() {
            fed.lines.push((time, log_text(&self.logged)));
        }
        if self.prefix && !self.pending.is_empty() {
            write_line(&mut fed.foreground, &prefix(self.id, time), &self.pending);
        }
        self.logged.clear();
        self.pending.clear();
        self.pieced = false;
        fed
    }
}

fn write_line(out: &mut Vec<u8>, prefix: &str, line: &[u8]) {
    out.reserve(prefix.len() + line.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// A line as the log keeps it: at most `LOG_LINE_MAX` bytes, cut on a character boundary,
/// without a carriage return at its end.
fn log_text(bytes: &[u8]) -> Arc<str> {
    let mut end = bytes.len();
    if end > LOG_LINE_MAX {
        end = LOG_LINE_MAX;
        while end > 0 && bytes[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    let bytes = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
    Arc::from(String::from_utf8_lossy(bytes).as_ref())
}

/// `[<id> <time>] `, the time in UTC with milliseconds.
pub fn prefix(id: WorkerId, time: SystemTime) -> String {
    format!("[{id} {}] ", iso_utc(time))
}

/// `2026-12-02T20:01:02.345Z`.
pub fn iso_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// How many stderr lines of the agent are kept for the error.
const TAIL_LINES: usize = 20;
/// A tail line longer than this is cut.
const TAIL_LINE_MAX: usize = 1000;

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
                if self.lines.len() == TAIL_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else if self.partial.len() < TAIL_LINE_MAX {
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

/// The last lines the agent wrote to stderr.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<(Mutex<Tail>, Condvar)>);

impl StderrTail {
    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    fn end(&self) {
        self.lock().ended = true;
        self.0 .1.notify_all();
    }

    /// The last lines, once the child has closed its stderr (or after `wait`, whichever is
    /// first): when it has just exited, what it wrote last may still be in the pipe.
    pub fn lines_after_end(&self, wait: Duration) -> Vec<String> {
        let wait_for_end = || {
            let guard = self.lock();
            let (guard, _) = self
                .0
                 .1
                .wait_timeout_while(guard, wait, |t| !t.ended)
                .unwrap_or_else(|e| e.into_inner());
            guard.lines()
        };
        // The copier that ends the wait is a task of this runtime: let it run elsewhere while
        // this thread waits (only on the agent's failure at startup, for `wait` at most).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait_for_end)
            }
            _ => wait_for_end(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn texts(fed: &Fed) -> Vec<&str> {
        fed.lines.iter().map(|(_, t)| &**t).collect()
    }

    #[test]
    fn formats_utc_times_with_milliseconds() {
        assert_eq!(iso_utc(at(0)), "1970-01-01T00:00:00.000Z");
        // 2026-12-02T20:01:02.345Z
        assert_eq!(iso_utc(at(1_796_241_662_345)), "2026-12-02T20:01:02.345Z");
        assert_eq!(iso_utc(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(at(4_107_542_399_999)), "2100-02-28T23:59:59.999Z");
        assert_eq!(
            prefix(2, at(1_796_241_662_345)),
            "[2 2026-12-02T20:01:02.345Z] "
        );
    }

    #[test]
    fn without_a_prefix_the_bytes_pass_unchanged_and_whole_lines_are_kept() {
        let mut lines = Lines::new(1, false, true);
        let fed = lines.feed(b"one\ntw", at(0));
        assert_eq!(fed.foreground, b"one\ntw");
        assert_eq!(texts(&fed), ["one"]);
        let fed = lines.feed(b"o\r\n\nthree", at(0));
        assert_eq!(fed.foreground, b"o\r\n\nthree");
        assert_eq!(texts(&fed), ["two", ""]);
        let fed = lines.finish(at(0));
        assert!(fed.foreground.is_empty());
        assert_eq!(texts(&fed), ["three"]);
        assert!(texts(&lines.finish(at(0))).is_empty());
    }

    #[test]
    fn copied_through_without_keeping_lines() {
        let mut lines = Lines::new(1, false, false);
        let fed = lines.feed(b"a\nb", at(0));
        assert_eq!(fed.foreground, b"a\nb");
        assert!(fed.lines.is_empty());
        assert!(lines.finish(at(0)).lines.is_empty());
    }

    #[test]
    fn with_a_prefix_every_line_gets_its_id_and_time() {
        let mut lines = Lines::new(3, true, true);
        let fed = lines.feed(b"listening\nhal", at(1_000));
        assert_eq!(
            String::from_utf8(fed.foreground.clone()).unwrap(),
            "[3 1970-01-01T00:00:01.000Z] listening\n"
        );
        let fed = lines.feed(b"f a line\n", at(2_000));
        assert_eq!(
            String::from_utf8(fed.foreground.clone()).unwrap(),
            "[3 1970-01-01T00:00:02.000Z] half a line\n"
        );
        assert_eq!(texts(&fed), ["half a line"]);
        lines.feed(b"no end", at(2_000));
        let fed = lines.finish(at(3_000));
        assert_eq!(
            String::from_utf8(fed.foreground.clone()).unwrap(),
            "[3 1970-01-01T00:00:03.000Z] no end\n"
        );
        assert_eq!(texts(&fed), ["no end"]);
    }

    #[test]
    fn a_long_line_is_cut_for_the_log_and_written_in_pieces_with_a_prefix() {
        let mut lines = Lines::new(1, true, true);
        let long = vec![b'x'; PREFIXED_PIECE * 2 + 10];
        let mut out = Vec::new();
        for part in long.chunks(5000) {
            let fed = lines.feed(part, at(0));
            assert!(fed.lines.is_empty());
            out.extend(fed.foreground.clone());
        }
        let fed = lines.feed(b"\n", at(0));
        out.extend(fed.foreground.clone());
        assert_eq!(texts(&fed), ["x".repeat(LOG_LINE_MAX)]);
        let written = String::from_utf8(out).unwrap();
        let pieces: Vec<&str> = written.lines().collect();
        let p = prefix(1, at(0));
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0], format!("{p}{}", "x".repeat(PREFIXED_PIECE)));
        assert_eq!(pieces[2], format!("{p}{}", "x".repeat(10)));
        // A line of exactly whole pieces gets no empty line after it.
        let fed = lines.feed(&vec![b'y'; PREFIXED_PIECE], at(0));
        assert_eq!(fed.foreground.len(), p.len() + PREFIXED_PIECE + 1);
        assert!(lines.feed(b"\n", at(0)).foreground.is_empty());
    }

    #[test]
    fn the_log_cut_falls_on_a_character_boundary() {
        let mut line = vec![b'a'; LOG_LINE_MAX - 1];
        line.extend("é".repeat(10).as_bytes());
        let text = log_text(&line);
        assert_eq!(text.len(), LOG_LINE_MAX - 1);
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_the_unfinished_one() {
        let mut t = Tail::default();
        for i in 0..30 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"Error: boom");
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES + 1);
        assert_eq!(lines[0], "line 10");
        assert_eq!(lines.last().map(String::as_str), Some("Error: boom"));
    }

    #[tokio::test]
    async fn copies_a_childs_pipe_into_the_log_until_it_closes() {
        let log = OutputLog::default();
        let (ours, theirs) = fd_socket::stream_pair().unwrap();
        let tail = ChildOutput {
            id: 4,
            kind: WorkerKind::Agent,
            stdout: None,
            stderr: Some(ours),
            log: Some(log.clone()),
            prefix: false,
        }
        .start()
        .unwrap();
        let mut theirs = std::os::unix::net::UnixStream::from(theirs);
        theirs.set_nonblocking(false).unwrap();
        std::io::Write::write_all(&mut theirs, b"first\nlast words").unwrap();
        drop(theirs);
        let lines =
            tokio::task::spawn_blocking(move || tail.lines_after_end(Duration::from_secs(5)))
                .await
                .unwrap();
        assert_eq!(lines, ["first", "last words"]);
        let kept = log.recent(10);
        assert_eq!(
            kept.iter().map(|l| &*l.text).collect::<Vec<_>>(),
            ["first", "last words"]
        );
        assert!(kept
            .iter()
            .all(|l| l.id == 4 && l.stream == Stream::Stderr && l.kind == WorkerKind::Agent));
    }
}
