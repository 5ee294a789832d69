//! A bounded byte queue for one direction of a proxied connection, with
//! bytes held back until the head inspection releases them.

use std::io::{self, Read, Write};

/// A bounded byte queue: filled at `end`, drained from `start` up to `ready`.
/// Bytes in `ready..end` are held back until [`Buf::release`]d (or, for a
/// queue made without `hold`, released as they arrive).
pub(super) struct Buf {
    data: Box<[u8]>,
    start: usize,
    ready: usize,
    end: usize,
    hold: bool,
}

impl Buf {
    pub(super) fn new(cap: usize, hold: bool) -> Buf {
        Buf {
            data: vec![0; cap.max(1)].into_boxed_slice(),
            start: 0,
            ready: 0,
            end: 0,
            hold,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(super) fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.data.len()
    }

    /// Bytes that may be drained now.
    pub(super) fn has_ready(&self) -> bool {
        self.start < self.ready
    }

    /// The bytes held back.
    pub(super) fn held(&self) -> &[u8] {
        &self.data[self.ready..self.end]
    }

    /// Let the first `n` held bytes be drained.
    pub(super) fn release(&mut self, n: usize) {
        self.ready = (self.ready + n).min(self.end);
    }

    /// Forget the bytes held back.
    pub(super) fn discard_held(&mut self) {
        self.end = self.ready;
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
        }
    }

    /// Read once from `r` into the free space. `Ok(None)`: nothing to read now.
    pub(super) fn fill(&mut self, r: &mut impl Read) -> io::Result<Option<usize>> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.ready -= self.start;
            self.start = 0;
        }
        match r.read(&mut self.data[self.end..]) {
            Ok(n) => {
                self.end += n;
                if !self.hold {
                    self.ready = self.end;
                }
                Ok(Some(n))
            }
            Err(e) if retry(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write once from the ready bytes to `w`. `Ok(None)`: `w` is full now.
    pub(super) fn drain(&mut self, w: &mut impl Write) -> io::Result<Option<usize>> {
        match w.write(&self.data[self.start..self.ready]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.start += n;
                if self.start == self.end {
                    self.start = 0;
                    self.ready = 0;
                    self.end = 0;
                }
                Ok(Some(n))
            }
            Err(e) if retry(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub(super) fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_are_not_drained() {
        let mut b = Buf::new(16, true);
        b.fill(&mut &b"abcdefgh"[..]).unwrap();
        assert!(!b.has_ready());
        b.release(3);
        let mut out = Vec::new();
        b.drain(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(b.held(), b"defgh");
        b.fill(&mut &b"12345678"[..]).unwrap();
        // Full at the end: the next fill compacts, keeping the held bytes.
        b.fill(&mut &b"XYZ"[..]).unwrap();
        assert_eq!(b.held(), b"defgh12345678XYZ");
        b.release(5);
        b.discard_held();
        out.clear();
        b.drain(&mut out).unwrap();
        assert_eq!(out, b"defgh");
        assert!(b.is_empty());
    }
}
