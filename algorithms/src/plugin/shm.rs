//! Shared-memory tensors for plug-ins (docs/plugins.md, "Shared memory"): one anonymous memory
//! file (`memfd_create(2)`) per plug-in child, inherited by the child and mapped by both
//! sides, so that a large tensor crosses as an offset in a frame instead of bytes in a pipe.
//!
//! Layout, owned by ianvs: `[0, placed_end)` holds tensors placed for the life of the child
//! ([`Region::place`]: a training set, a test set predicted batch by batch); the call's own
//! tensors follow (scratch, overwritten by the next call); the child writes its reply tensors
//! at or after the offset ianvs gives it (`shm_free`), growing the file with `ftruncate` when
//! they do not fit. A memfd has no name in any file system: it disappears with the last
//! descriptor and mapping, so nothing is left in `/dev/shm` whatever way ianvs or the child
//! ends (killed ones included).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Tensors from this many bytes on go through the region; smaller ones are cheaper inline.
pub const SHM_MIN: usize = 16 << 10;
/// Offsets of tensors in the region are multiples of this (a cache line; numpy and SIMD
/// loads on the other side stay aligned).
pub const ALIGN: usize = 64;
/// The region starts at this size and at least doubles when it grows.
const INITIAL: usize = 1 << 20;

/// `x` rounded up to [`ALIGN`].
pub fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// The shared region of one plug-in child, seen from ianvs.
pub struct Region {
    fd: OwnedFd,
    ptr: *mut u8,
    mapped: usize,
    placed_end: usize,
    /// Bumped by [`Region::clear_placed`]: a handle from before is refused.
    generation: u64,
}

// SAFETY: the region owns its mapping; access goes through `&mut self` (one call at a time,
// under the plug-in's lock), so moving it to another thread is sound.
unsafe impl Send for Region {}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("shared memory: {what}: {e}"))
}

impl Region {
    /// An empty region (no pages yet), close-on-exec: only the child it is given to (see
    /// [`Region::raw_fd`]) inherits it.
    pub fn create() -> io::Result<Self> {
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"ianvs-plugin".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_err("memfd_create"));
        }
        Ok(Region {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ptr: std::ptr::null_mut(),
            mapped: 0,
            placed_end: 0,
            generation: 0,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes mapped now (the file may be larger if the child grew it).
    pub fn mapped(&self) -> usize {
        self.mapped
    }

    fn file_size(&self) -> io::Result<usize> {
        // SAFETY: fstat on a descriptor this region owns into a zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(os_err("fstat"));
        }
        Ok(st.st_size as usize)
    }

    /// Maps the first `len` bytes of the file (moving the mapping if it must).
    fn map(&mut self, len: usize) -> io::Result<()> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a shared mapping of our own memfd, or a resize of the mapping we made; the
        // old pointer is not used after mremap moves it (all slices borrow `self`).
        let p = unsafe {
            if self.ptr.is_null() {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    0,
                )
            } else {
                libc::mremap(self.ptr.cast(), self.mapped, len, libc::MREMAP_MAYMOVE)
            }
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        self.ptr = p.cast();
        self.mapped = len;
        Ok(())
    }

    /// Makes `[0, end)` writable: grows the file (to at least twice its size) and the mapping.
    pub fn ensure(&mut self, end: usize) -> io::Result<()> {
        if end <= self.mapped {
            return Ok(());
        }
        let size = self.file_size()?;
        if size < end {
            let new = end.max(2 * size).max(INITIAL).next_multiple_of(1 << 16);
            // SAFETY: ftruncate on our own memfd (only ever grows it).
            if unsafe { libc::ftruncate(self.fd.as_raw_fd(), new as libc::off_t) } != 0 {
                return Err(os_err("ftruncate"));
            }
            self.map(new)
        } else {
            self.map(size)
        }
    }

    /// Copies `bytes` to `offset`.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(bytes.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        self.ensure(end)?;
        // SAFETY: `[offset, end)` is inside the mapping (ensured above); `bytes` is ianvs
        // memory, never inside the mapping, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len());
        }
        Ok(())
    }

    /// The `len` bytes at `offset`, written by the child: an offset past the file's end is
    /// `InvalidData` (a broken plug-in), never a fault.
    pub fn read_at(&mut self, offset: usize, len: usize) -> io::Result<&[u8]> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tensor offset overflows"))?;
        if end > self.mapped {
            let size = self.file_size()?;
            if size < end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tensor at bytes {offset}..{end} of the shared region, which has {size} bytes"
                    ),
                ));
            }
            self.map(size)?;
        }
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: `[offset, end)` is inside the mapping; the child does not write while ianvs
        // reads (one call at a time: it has answered).
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }

    /// Copies `bytes` after the placed ones, to stay until [`Region::clear_placed`] or the
    /// child's end; returns its offset and the generation a handle must carry.
    pub fn place(&mut self, bytes: &[u8]) -> io::Result<(usize, u64)> {
        let off = align(self.placed_end);
        self.write_at(off, bytes)?;
        self.placed_end = off + bytes.len();
        Ok((off, self.generation))
    }

    /// Frees every placed tensor (their handles are refused from now on).
    pub fn clear_placed(&mut self) {
        self.placed_end = 0;
        self.generation += 1;
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the call's own tensors start.
    pub fn scratch_start(&self) -> usize {
        align(self.placed_end)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: unmapping the mapping this region made; nothing borrows it any more.
            unsafe {
                libc::munmap(self.ptr.cast(), self.mapped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_demand_and_keeps_what_was_written() {
        let mut r = Region::create().unwrap();
        assert_eq!(r.mapped(), 0);
        r.write_at(0, b"abc").unwrap();
        assert_eq!(r.mapped(), INITIAL);
        let big = vec![7u8; 3 * INITIAL + 5];
        r.write_at(100, &big).unwrap();
        assert!(r.mapped() >= 3 * INITIAL + 105);
        assert_eq!(r.read_at(0, 3).unwrap(), b"abc");
        assert_eq!(r.read_at(100, big.len()).unwrap(), big.as_slice());
    }

    #[test]
    fn reads_past_the_end_are_errors_and_growth_by_the_other_side_is_seen() {
        let mut r = Region::create().unwrap();
        r.write_at(0, &[1]).unwrap();
        let e = r.read_at(INITIAL - 2, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("shared region"), "{e}");
        // The child grows the file and writes through its own mapping (here: the fd).
        let end = 4 * INITIAL;
        unsafe {
            assert_eq!(libc::ftruncate(r.raw_fd(), end as libc::off_t), 0);
            let b = [9u8; 4];
            assert_eq!(
                libc::pwrite(r.raw_fd(), b.as_ptr().cast(), 4, (end - 4) as libc::off_t),
                4
            );
        }
        assert_eq!(r.read_at(end - 4, 4).unwrap(), &[9, 9, 9, 9]);
    }

    #[test]
    fn placed_tensors_come_before_scratch_and_clearing_bumps_the_generation() {
        let mut r = Region::create().unwrap();
        let (a, g) = r.place(&[1; 10]).unwrap();
        let (b, _) = r.place(&[2; 10]).unwrap();
        assert_eq!((a, b), (0, 64));
        assert_eq!(r.scratch_start(), 128);
        r.clear_placed();
        assert_ne!(r.generation(), g);
        assert_eq!(r.scratch_start(), 0);
    }
}
