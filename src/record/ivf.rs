//! IVF writer (VP8, VP9, AV1): a 32-byte file header, then per frame a 12-byte
//! header (little-endian size, 64-bit pts) and the frame.
//!
//! The frame count and picture size in the header are patched on every
//! [`IvfWriter::flush`], so a file cut off after a flush is complete up to it.

use std::io::{self, Seek, SeekFrom, Write};

use crate::codec;

/// The codec of an IVF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fourcc {
    /// `VP80`.
    Vp8,
    /// `VP90`.
    Vp9,
    /// `AV01`.
    Av1,
}

impl Fourcc {
    fn bytes(self) -> &'static [u8; 4] {
        match self {
            Fourcc::Vp8 => b"VP80",
            Fourcc::Vp9 => b"VP90",
            Fourcc::Av1 => b"AV01",
        }
    }
}

/// Largest picture side written to the header; larger claims are written as 0.
pub const MAX_DIMENSION: u16 = 8192;

/// Streams frames into an IVF file.
#[derive(Debug)]
pub struct IvfWriter<W: Write + Seek> {
    w: W,
    fourcc: Fourcc,
    clock_rate: u32,
    width: u16,
    height: u16,
    frames: u32,
    last_pts: Option<u64>,
    header_dirty: bool,
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Write the file header; `clock_rate` is the timebase denominator (RTP clock).
    pub fn new(mut w: W, fourcc: Fourcc, clock_rate: u32) -> io::Result<Self> {
        let clock_rate = clock_rate.max(1);
        w.write_all(&header(fourcc, 0, 0, clock_rate, 0))?;
        Ok(IvfWriter {
            w,
            fourcc,
            clock_rate,
            width: 0,
            height: 0,
            frames: 0,
            last_pts: None,
            header_dirty: false,
        })
    }

    /// Append one frame. The pts is made strictly increasing (a pts at or
    /// before the previous one is written as previous + 1). The first frame
    /// that yields a picture size sets the header's width and height.
    pub fn write_frame(&mut self, frame: &[u8], pts: u64) -> io::Result<()> {
        let size = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let pts = match self.last_pts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        if self.width == 0 && self.height == 0 {
            if let Some((wd, ht)) = frame_dimensions(self.fourcc, frame) {
                self.width = wd;
                self.height = ht;
                self.header_dirty = true;
            }
        }
        // One write per frame: a buffered writer then only ever hands whole
        // frames to the file.
        let mut buf = Vec::with_capacity(12 + frame.len());
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(&pts.to_le_bytes());
        buf.extend_from_slice(frame);
        self.w.write_all(&buf)?;
        self.last_pts = Some(pts);
        self.frames = self.frames.saturating_add(1);
        self.header_dirty = true;
        Ok(())
    }

    /// Patch the header (count, size) and flush the inner writer.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.header_dirty {
            let h = header(
                self.fourcc,
                self.width,
                self.height,
                self.clock_rate,
                self.frames,
            );
            let end = self.w.stream_position()?;
            self.w.seek(SeekFrom::Start(0))?;
            self.w.write_all(&h)?;
            self.w.seek(SeekFrom::Start(end))?;
            self.header_dirty = false;
        }
        self.w.flush()
    }

    /// Finalise the header and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.w)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Picture size taken from the first keyframe (0×0 if unknown).
    pub fn dimensions(&self) -> (u16, u16) {
        (self.width, self.height)
    }
}

fn header(fourcc: Fourcc, width: u16, height: u16, clock_rate: u32, frames: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(b"DKIF");
    h[4..6].copy_from_slice(&0u16.to_le_bytes()); // version
    h[6..8].copy_from_slice(&32u16.to_le_bytes()); // header size
    h[8..12].copy_from_slice(fourcc.bytes());
    h[12..14].copy_from_slice(&width.to_le_bytes());
    h[14..16].copy_from_slice(&height.to_le_bytes());
    h[16..20].copy_from_slice(&clock_rate.to_le_bytes()); // timebase denominator
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // timebase numerator
    h[24..28].copy_from_slice(&frames.to_le_bytes());
    h
}

/// Picture size of a keyframe, best effort: `None` if not a keyframe, not
/// parseable, zero, or larger than [`MAX_DIMENSION`].
pub fn frame_dimensions(fourcc: Fourcc, frame: &[u8]) -> Option<(u16, u16)> {
    let (w, h) = match fourcc {
        Fourcc::Vp8 => codec::vp8::key_frame_size(frame)?,
        Fourcc::Vp9 => codec::vp9::key_frame_size(frame)?,
        Fourcc::Av1 => codec::av1::temporal_unit_size(frame)?,
    };
    let ok = |v: u32| v > 0 && v <= MAX_DIMENSION as u32;
    (ok(w) && ok(h)).then_some((w as u16, h as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn vp8_key(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(&[0; 20]);
        f
    }

    type Parsed = (Vec<u8>, u16, u16, u32, u32, Vec<(u64, Vec<u8>)>);

    /// Parse an IVF file: (fourcc, w, h, den, count, frames with pts).
    fn parse(b: &[u8]) -> Parsed {
        assert_eq!(&b[..4], b"DKIF");
        let u16at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let mut frames = vec![];
        let mut i = 32;
        while i + 12 <= b.len() {
            let n = u32at(i) as usize;
            let pts = u64::from_le_bytes(b[i + 4..i + 12].try_into().unwrap());
            frames.push((pts, b[i + 12..i + 12 + n].to_vec()));
            i += 12 + n;
        }
        assert_eq!(i, b.len());
        (
            b[8..12].to_vec(),
            u16at(12),
            u16at(14),
            u32at(16),
            u32at(24),
            frames,
        )
    }

    #[test]
    fn round_trip_vp8() {
        let mut w = IvfWriter::new(Cursor::new(Vec::new()), Fourcc::Vp8, 90_000).unwrap();
        w.write_frame(&[0x11, 0, 0, 1, 2], 0).unwrap(); // inter frame: no size
        w.write_frame(&vp8_key(320, 240), 3000).unwrap();
        w.flush().unwrap();
        let mid = w.w.get_ref().clone();
        assert_eq!(parse(&mid).4, 2, "count patched on flush");
        w.write_frame(&[0x11, 0, 0], 3000).unwrap(); // pts going back
        let out = w.finish().unwrap().into_inner();
        let (cc, wd, ht, den, count, frames) = parse(&out);
        assert_eq!(cc, b"VP80");
        assert_eq!((wd, ht, den, count), (320, 240, 90_000, 3));
        let pts: Vec<u64> = frames.iter().map(|f| f.0).collect();
        assert_eq!(pts, vec![0, 3000, 3001]);
        assert_eq!(frames[1].1, vp8_key(320, 240));
    }

    #[test]
    fn huge_vp8_claim_is_not_written() {
        assert_eq!(frame_dimensions(Fourcc::Vp8, &vp8_key(16383, 16383)), None);
        assert_eq!(frame_dimensions(Fourcc::Vp8, &vp8_key(0, 240)), None);
    }

    /// Bytes from a string of '0' and '1', zero-padded to whole bytes.
    fn from_bits(mut bits: String) -> Vec<u8> {
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect()
    }

    #[test]
    fn vp9_keyframe_size() {
        // Profile 0 keyframe: marker 10, profile 00, show_existing 0, type 0,
        // show 1, err 0, sync code, color_space 1 (3 bits), range 0, 16-bit w-1, h-1.
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010";
        bits += "0010";
        bits += &format!("{:016b}{:016b}", 639, 479);
        let bytes = from_bits(bits);
        assert_eq!(frame_dimensions(Fourcc::Vp9, &bytes), Some((640, 480)));
    }

    #[test]
    fn av1_sequence_header_size() {
        // Reduced still picture header: profile 0, still 1, reduced 1, level 5 bits,
        // width bits-1 = 15, height bits-1 = 15, then 16-bit w-1, h-1.
        let mut bits = String::from("000") + "1" + "1" + "00000" + "1111" + "1111";
        bits += &format!("{:016b}{:016b}", 1279, 719);
        let body = from_bits(bits);
        let mut tu = vec![0x12, 0x00]; // temporal delimiter
        tu.push(0x0a); // sequence header, has_size
        tu.push(body.len() as u8);
        tu.extend_from_slice(&body);
        assert_eq!(frame_dimensions(Fourcc::Av1, &tu), Some((1280, 720)));
    }

    #[test]
    fn truncations_never_panic() {
        let key = vp8_key(320, 240);
        for fcc in [Fourcc::Vp8, Fourcc::Vp9, Fourcc::Av1] {
            for n in 0..key.len() {
                let _ = frame_dimensions(fcc, &key[..n]);
                let junk: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) | 0x02).collect();
                let _ = frame_dimensions(fcc, &junk);
            }
        }
    }
}
