//! The primary's own stdout and stderr, where the children's output is copied
//! (src/primary/child_output.rs): one writer thread for each, fed by a bounded queue.
//!
//! Threads, not tasks: our stdout may be a terminal, a regular file or a pipe, blocking or not
//! (Node may have made it non-blocking), and epoll cannot watch a regular file. A writer that
//! waits on a slow stdout must not hold a runtime thread, and there are only two of them, however
//! many children there are. One writer per stream also means that what one child's copier hands
//! over in one piece (a line, with `--log-prefix`) is written in one piece: lines of different
//! children never interleave.
//!
//! Backpressure: the queue holds `QUEUED_BYTES` at most (or one piece, if larger). When our
//! stdout does not take bytes, the writer waits, the queue fills, the copiers wait on it and stop
//! reading the children's pipes, and the children's writes block, as with an inherited stdout.
//! The bound is on bytes, not on pieces: with prefixes, a read of short lines grows manyfold.

use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::output::Stream;

/// Bytes waiting for one writer.
const QUEUED_BYTES: usize = 1 << 20;

/// A piece, and its room in the queue, given back once it is written.
type Piece = (Vec<u8>, OwnedSemaphorePermit);

struct Queue {
    pieces: mpsc::UnboundedSender<Piece>,
    room: Arc<Semaphore>,
}

static STDOUT: OnceLock<Option<Queue>> = OnceLock::new();
static STDERR: OnceLock<Option<Queue>> = OnceLock::new();

/// Writes `bytes` to our own `stream`, in one piece, after what was handed over before. Waits
/// while the queue is full.
pub async fn write(stream: Stream, bytes: Vec<u8>) {
    let (cell, fd) = match stream {
        Stream::Stdout => (&STDOUT, libc::STDOUT_FILENO),
        Stream::Stderr => (&STDERR, libc::STDERR_FILENO),
    };
    let Some(queue) = cell.get_or_init(|| start_writer(fd)) else {
        return;
    };
    let size = bytes.len().clamp(1, QUEUED_BYTES) as u32;
    // The semaphore is never closed; the writer never ends while the queue exists.
    if let Ok(room) = queue.room.clone().acquire_many_owned(size).await {
        let _ = queue.pieces.send((bytes, room));
    }
}

fn start_writer(fd: RawFd) -> Option<Queue> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Piece>();
    let name = format!("rcluster-out{fd}");
    let writer = move || {
        while let Some((bytes, room)) = rx.blocking_recv() {
            write_all(fd, &bytes);
            drop(room);
        }
    };
    // Without the thread, the children's output is dropped (the pipes are still read, so
    // that the children do not block), but nothing else is lost.
    std::thread::Builder::new().name(name).spawn(writer).ok()?;
    Some(Queue {
        pieces: tx,
        room: Arc::new(Semaphore::new(QUEUED_BYTES)),
    })
}

/// Writes everything, waiting for a non-blocking descriptor to take bytes. Gives up when our
/// stream is gone (EPIPE, EBADF): the children's output then goes nowhere, as it would have.
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid slice to a descriptor number; a closed one fails with EBADF.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                let mut pollfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; no timeout: the wait is the backpressure.
                unsafe { libc::poll(&mut pollfd, 1, -1) };
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn writes_everything_to_a_non_blocking_pipe_that_is_read_slowly() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let raw = writer.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let sender = std::thread::spawn(move || {
            write_all(writer.as_raw_fd(), &data);
            drop(writer);
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        sender.join().unwrap();
        assert_eq!(got, expected);
    }
}
