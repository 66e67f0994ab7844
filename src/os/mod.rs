//! Operating-system primitives that know nothing of clusters: a Unix socket that carries
//! descriptors (`fd_socket`), sealed memory files shared without a copy (`memory_file`), a child
//! process held by a pidfd (`process`), what /proc tells of a process (`proc_stat`), the thread that forks children (`spawner`) and listening
//! sockets made the way libuv makes them (`sockets`). Their vocabulary is the system's
//! (descriptors, pids, signals, addresses), never workers, messages or options. They import
//! nothing of the crate but each other.

pub mod fd_socket;
pub mod memory_file;
pub mod proc_stat;
pub mod process;
pub mod sockets;
pub mod spawner;
