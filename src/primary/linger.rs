//! While frames come close together, the I/O thread lingers before it sleeps: it keeps polling
//! its sockets for a short while after it routed frames, yielding its CPU to any other thread
//! that wants it.
//!
//! Why: a message between two workers crosses the primary, and on a virtual machine waking a
//! thread that sleeps on an idle CPU costs more than everything else of a hop. Measured (Node
//! 20, 2 vCPUs): a map round trip (four hops) took 251 µs at the median; with the I/O thread
//! awake for 150 µs after each batch of frames, 98-129 µs, as the answers and the next request
//! arrive while it polls.
//!
//! It yields its CPU on every turn, so a thread that wants this CPU runs first. A thread woken
//! on the other CPU while this one lingers may wait there for its turn (the kernel does not move
//! it to a CPU that looks busy): the round trips' tail, not their median, pays for that. (Lingering
//! only while /proc/loadavg showed no thread waiting was tried: it gave up most of the gain,
//! p50 0.144 ms against 0.083-0.106, without a better tail.) Under a CPU quota its polling counts
//! against the quota the workers share.
//!
//! What it costs: CPU, and only while frames come less than `WINDOW_MICROS` apart: in back to
//! back round trips the I/O thread uses 84-110 µs of CPU a map instead of 100-118 µs (a send no
//! longer wakes a sleeper, which costs the sender too: the requesting worker went from 130-180
//! to 50-60 µs). Frames further apart, or one now and then, let it sleep at once: a worker
//! sending to the primary once a millisecond costs the I/O thread 4% of a CPU. It never lingers
//! on a machine with one CPU, where nothing could arrive while it polls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::Notify;

/// How long the thread lingers after the last frames, and how close together frames must come
/// for it to linger at all: about the round trip of a request through a worker here.
pub const WINDOW_MICROS: u64 = 150;

/// Whether frames that arrive `gap` µs after the previous ones are worth lingering for.
pub fn worth_lingering(gap: u64) -> bool {
    gap < WINDOW_MICROS
}

struct Linger {
    started: Instant,
    /// When frames last arrived, in µs since `started`.
    last_frames: AtomicU64,
    wake: Notify,
}

fn linger() -> &'static Linger {
    static LINGER: OnceLock<Linger> = OnceLock::new();
    LINGER.get_or_init(|| Linger {
        started: Instant::now(),
        last_frames: AtomicU64::new(0),
        wake: Notify::new(),
    })
}

fn now_micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Frames have arrived (the supervisor calls this as it routes them).
pub fn frames_arrived() {
    let l = linger();
    let now = now_micros(l.started);
    let before = l.last_frames.swap(now, Ordering::AcqRel);
    if worth_lingering(now.saturating_sub(before)) {
        l.wake.notify_one();
    }
}

/// Starts the lingering task on the current runtime, once for the process (the primaries of
/// one process share the I/O thread).
pub fn start() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        let l = linger();
        loop {
            l.wake.notified().await;
            while now_micros(l.started) < l.last_frames.load(Ordering::Acquire) + WINDOW_MICROS {
                // The CPU goes to any thread that wants it; then this task yields to the
                // runtime, which looks at the sockets (without sleeping) before it comes back.
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_close_together_are_worth_lingering_for_and_sparse_ones_are_not() {
        assert!(worth_lingering(0));
        assert!(worth_lingering(WINDOW_MICROS - 1));
        assert!(!worth_lingering(WINDOW_MICROS));
        assert!(!worth_lingering(1_000_000));
    }
}
