//! Page-aligned byte buffers ([`IoBuf`]) for every bulk copy: file reads, socket reads and
//! direct I/O.
//!
//! Direct I/O (`O_DIRECT`) needs its buffers on a block boundary. Plain copies want it too: the
//! kernel copies with `rep movsb`, and on this project's machines (AMD EPYC) that runs several
//! times slower when the destination sits at a different offset within its page than the
//! source. A heap `Vec` of 128 KiB or more starts 16 bytes into a page, while page-cache pages
//! (and the pages `sendfile` hands over loopback) start at offset 0: reading a cached 1 GiB file
//! into such a `Vec` took 0.7–0.9 s during an upload, into an [`IoBuf`] 0.2–0.35 s. So a loop
//! that reads a stream of file bytes fills its buffer from the start of a page, in order, and
//! keeps buffer offsets and file offsets equal modulo a page.

/// The alignment direct I/O needs of buffers, file offsets and lengths: 4096 covers the logical
/// block size of every common disk.
pub const ALIGN: usize = 4096;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

/// A zeroed byte buffer that starts on an [`ALIGN`] boundary, as direct I/O requires.
pub struct IoBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl IoBuf {
    pub fn new(len: usize) -> Self {
        Self {
            blocks: vec![Block([0; ALIGN]); len.div_ceil(ALIGN)],
            len,
        }
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.len)
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `blocks` holds at least `len` initialised bytes, contiguous (`Block` is a
        // plain byte array), and they live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A buffer of `chunk` bytes for moving `len` bytes, smaller when the whole transfer is, so a
/// 4 KiB file does not cost a large allocation.
pub fn transfer_buffer(len: u64, chunk: usize) -> IoBuf {
    IoBuf::new(usize::try_from(len).unwrap_or(chunk).clamp(1, chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_page_and_are_zeroed() {
        for len in [1, 100, ALIGN - 1, ALIGN, ALIGN + 1, 128 * 1024, 1 << 20] {
            let buf = IoBuf::new(len);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn transfer_buffers_are_no_larger_than_the_transfer() {
        assert_eq!(transfer_buffer(4096, 128 * 1024).len(), 4096);
        assert_eq!(transfer_buffer(0, 128 * 1024).len(), 1);
        assert_eq!(transfer_buffer(u64::MAX, 128 * 1024).len(), 128 * 1024);
        assert_eq!(
            transfer_buffer(5 << 20, 1 << 20).as_ptr() as usize % ALIGN,
            0
        );
    }
}
