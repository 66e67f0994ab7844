//! What the children print, kept for `rcluster logs`: a bounded ring of recent lines, and a
//! feed for those who follow. The children's stdout and stderr reach the primary's own output as
//! before; these are copies, made as they pass through the primary (src/primary/child_output.rs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::child_command::WorkerKind;
use super::WorkerId;

/// Lines kept, and their bytes at most: whichever bound comes first drops the oldest.
const KEPT_LINES: usize = 2000;
const KEPT_BYTES: usize = 4 << 20;
/// Lines a follower may fall behind before it is told it missed some.
const FEED_LINES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub id: WorkerId,
    pub kind: WorkerKind,
    pub stream: Stream,
    pub time: SystemTime,
    /// Without its end of line. Shared: the ring and every follower hold the same text.
    pub text: Arc<str>,
}

struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

#[derive(Clone)]
pub struct OutputLog {
    ring: Arc<Mutex<Ring>>,
    feed: broadcast::Sender<LogLine>,
}

impl Default for OutputLog {
    fn default() -> Self {
        OutputLog {
            ring: Arc::new(Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
            })),
            feed: broadcast::channel(FEED_LINES).0,
        }
    }
}

impl OutputLog {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing can be left half-changed by a panic while it is held: keep using it.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `lines` (one lock for a whole read of a child's output) and passes them to followers.
    pub fn push(&self, lines: impl IntoIterator<Item = LogLine>) {
        let mut ring = self.lock();
        // Under the lock, so that `follow` splits the lines exactly between the ring and the
        // feed. Sending does not wait; with no follower there is nothing to send.
        let followed = self.feed.receiver_count() > 0;
        for line in lines {
            ring.bytes += line.text.len();
            if followed {
                let _ = self.feed.send(line.clone());
            }
            ring.lines.push_back(line);
        }
        while ring.lines.len() > KEPT_LINES || ring.bytes > KEPT_BYTES {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// The last `n` lines and every line after them, none twice and none missed.
    pub fn follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.lock();
        let skip = ring.lines.len().saturating_sub(n);
        let recent = ring.lines.iter().skip(skip).cloned().collect();
        (recent, self.feed.subscribe())
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<LogLine> {
        let ring = self.lock();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// Every line from now on. A follower that falls more than `FEED_LINES` behind gets
    /// `RecvError::Lagged(missed)`: it is told, not silently skipped.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            id: 1,
            kind: WorkerKind::App,
            stream: Stream::Stdout,
            time: SystemTime::now(),
            text: text.into(),
        }
    }

    #[test]
    fn keeps_the_most_recent_lines_within_its_bounds() {
        let log = OutputLog::default();
        for i in 0..KEPT_LINES + 10 {
            log.push([line(&format!("line {i}"))]);
        }
        let recent = log.recent(usize::MAX);
        assert_eq!(recent.len(), KEPT_LINES);
        assert_eq!(&*recent[0].text, "line 10");
        assert_eq!(&*log.recent(2)[1].text, format!("line {}", KEPT_LINES + 9));
        let big = "x".repeat(KEPT_BYTES / 2 + 1);
        log.push([line(&big)]);
        log.push([line(&big)]);
        assert_eq!(log.recent(usize::MAX).len(), 1);
    }

    #[test]
    fn a_follower_that_falls_behind_is_told_how_much_it_missed() {
        let log = OutputLog::default();
        let mut feed = log.subscribe();
        for i in 0..FEED_LINES + 5 {
            log.push([line(&format!("{i}"))]);
        }
        assert!(matches!(
            feed.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
    }
}
