//! Bit-level readers the codec headers need: an MSB-first bit reader with
//! Exp-Golomb codes (H.264 `ue(v)`/`se(v)`, AV1 `uvlc()`) and AV1's
//! `leb128()`. Pure, no allocation; every reader returns `None` past the end.

/// MSB-first bit reader that returns `None` past the end.
pub struct Bits<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Bits { b, pos: 0 }
    }

    /// Read `n` ≤ 32 bits.
    pub fn read(&mut self, n: u32) -> Option<u32> {
        let mut v: u32 = 0;
        for _ in 0..n.min(32) {
            let byte = *self.b.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | bit as u32;
            self.pos += 1;
        }
        Some(v)
    }

    pub fn flag(&mut self) -> Option<bool> {
        Some(self.read(1)? == 1)
    }

    /// Exp-Golomb `ue(v)` (H.264), which AV1 calls `uvlc()`; at most 31
    /// leading zeros.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some(self.read(zeros)?.saturating_add((1u32 << zeros) - 1))
    }

    /// Exp-Golomb `se(v)` (H.264).
    pub fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let m = (k + 1) / 2;
        Some(if k % 2 == 1 { m } else { -m } as i32)
    }
}

/// Read an AV1 `leb128()`: `(value, bytes used)`; at most 8 bytes.
pub fn leb128(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let byte = *b.get(i)?;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_leb128() {
        // ue: 1 → 0, 010 → 1, 011 → 2, 00100 → 3; se of 2 is -1.
        let mut r = Bits::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        let mut r = Bits::new(&[0b0110_0000]);
        assert_eq!(r.se(), Some(-1));
        // 32 leading zeros, and a read past the end.
        assert_eq!(Bits::new(&[0, 0, 0, 0, 0xff]).ue(), None);
        assert_eq!(Bits::new(&[0xff]).read(9), None);
        assert_eq!(leb128(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(leb128(&[0x80]), None);
        assert_eq!(leb128(&[0xff; 9]), None);
    }
}
