//! Operating-system primitives that know nothing of clusters.
pub mod fd_socket;
pub mod memory_file;
pub mod process;
pub mod sockets;
pub mod spawner;
