//! Sealed memory files: bytes written once into a memfd, then sealed so that the file can never
//! change or change size again, sent to other processes as a descriptor (SCM_RIGHTS) and mapped
//! there without a copy. The seals are what makes sharing it safe: a receiver's mapping can
//! neither change nor shrink under it (a shrinking file would fault the receiver on access), so
//! a receiver may even hand the memory to V8 as an external string. A received descriptor is
//! checked before it is trusted (`SealedFile::verify`). rcluster's messenger sends its large
//! payloads this way (docs/messenger-frames.md).

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, mprotect, munmap, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, SFlag};

/// The seals a file must carry before it is trusted.
fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL
}

/// A received sealed memory file, checked: its contents can no longer change. Clones share the
/// one descriptor.
#[derive(Debug, Clone)]
pub struct SealedFile {
    fd: Arc<OwnedFd>,
    len: usize,
}

impl PartialEq for SealedFile {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }
}
impl Eq for SealedFile {}

/// Why a received descriptor is not a sealed memory file of the expected size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl SealedFile {
    /// Checks a descriptor received as a file of `len` bytes: a sealed memory file of exactly
    /// that size. Anything else is refused (the sender broke its protocol).
    pub fn verify(fd: OwnedFd, len: usize) -> Result<Self, Refused> {
        let stat = fstat(&fd).map_err(|_| Refused("not a file"))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Refused("not a memory file"));
        }
        if len == 0 || usize::try_from(stat.st_size).ok() != Some(len) {
            return Err(Refused("file size does not match"));
        }
        let seals =
            fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|_| Refused("not a sealable memory file"))?;
        if !SealFlag::from_bits_truncate(seals).contains(required_seals()) {
            return Err(Refused("file is not sealed"));
        }
        Ok(SealedFile {
            fd: Arc::new(fd),
            len,
        })
    }

    pub fn size(&self) -> usize {
        self.len
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The file's bytes, read into memory.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.len];
        let mut at = 0;
        while at < out.len() {
            match nix::sys::uio::pread(self.fd.as_fd(), &mut out[at..], at as i64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

/// Creates a sealed memory file holding `payload` (at least 1 byte).
///
/// The bytes go in with write(2), not through a mapping: the file's new pages are then filled
/// as they are allocated, where a mapping would have them zeroed first and faulted in one by
/// one (about twice the cost, measured).
pub fn create(payload: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"rcluster-payload",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut at = 0;
    while at < payload.len() {
        match nix::unistd::write(&fd, &payload[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fcntl(&fd, FcntlArg::F_ADD_SEALS(required_seals()))?;
    Ok(fd)
}

/// A sealed memory file mapped into this process.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing about it is tied to a thread.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps a received file of `len` bytes. The pages are the sender's (no copy), read in
    /// up front; the mapping is then made writable and private, so the receiver may change its
    /// own view (a Buffer is mutable) at the cost of a copy of the pages it writes.
    pub fn receive(fd: &OwnedFd, len: usize) -> io::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE;
        // SAFETY: a fresh mapping of a file we hold, at an address the kernel picks.
        let ptr = unsafe { mmap(None, size, ProtFlags::PROT_READ, flags, fd, 0)? };
        let map = Mapping {
            ptr: ptr.cast(),
            len,
        };
        // SAFETY: the range is exactly the mapping just made.
        unsafe {
            mprotect(
                map.ptr.cast(),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            )?
        };
        Ok(map)
    }

    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn size(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is exactly this mapping, and nothing refers to it any more.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize) -> OwnedFd {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        create(&bytes).unwrap()
    }

    #[test]
    fn a_sealed_payload_is_verified_read_and_mapped() {
        let len = 4096 * 3 + 17;
        let payload = SealedFile::verify(filled(len), len).unwrap();
        let bytes = payload.read().unwrap();
        assert_eq!(bytes.len(), len);
        assert_eq!(payload.size(), len);
        assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let fd = payload.fd().try_clone_to_owned().unwrap();
        let map = Mapping::receive(&fd, len).unwrap();
        assert_eq!(map.as_slice(), &bytes[..]);
        // The receiver's view is its own: writing it changes nothing for the others.
        // SAFETY: the mapping is writable and `len` bytes long.
        unsafe { *map.as_mut_ptr() = 0xff };
        assert_eq!(payload.read().unwrap()[0], 0);
    }

    #[test]
    fn files_that_could_change_or_lie_are_refused() {
        assert!(SealedFile::verify(filled(100), 99).is_err());
        assert!(SealedFile::verify(filled(100), 0).is_err());
        let unsealed = memfd_create(c"t", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&unsealed, 100).unwrap();
        assert!(SealedFile::verify(unsealed, 100).is_err());
        let (socket, _other) = super::super::fd_socket::stream_pair().unwrap();
        assert!(SealedFile::verify(socket, 100).is_err());
    }
}
