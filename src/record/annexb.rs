//! H.264 Annex-B elementary stream writer: a start code before each NAL unit.
//!
//! Input access units are AVC-style (each NAL prefixed with a 4-byte big-endian
//! length, as str0m's `H264Depacketizer { is_avc: true }` produces). The last
//! SPS and PPS seen are kept and written before an IDR that arrives without
//! them, so the file always starts decodable and survives encoders that send
//! parameter sets only once.

use std::io::{self, Write};

use crate::codec::h264::{nal_type, NAL_IDR, NAL_PPS, NAL_SPS};

const START: [u8; 4] = [0, 0, 0, 1];

/// Split an AVC length-prefixed buffer into NAL units (`None` if malformed or empty).
pub fn split_avc(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let nal = b.get(4..4usize.checked_add(len)?)?;
        if !nal.is_empty() {
            out.push(nal);
        }
        b = &b[4 + len..];
    }
    (!out.is_empty()).then_some(out)
}

/// Streams access units into an Annex-B file.
#[derive(Debug)]
pub struct AnnexBWriter<W: Write> {
    w: W,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    started: bool,
    frames: u64,
}

impl<W: Write> AnnexBWriter<W> {
    /// A writer that has written nothing yet.
    pub fn new(w: W) -> Self {
        AnnexBWriter {
            w,
            sps: None,
            pps: None,
            started: false,
            frames: 0,
        }
    }

    /// Write one access unit (AVC length-prefixed NALs). Returns `Ok(false)`
    /// when it is not written: malformed, or before the first IDR that has
    /// an SPS and PPS (in the unit or seen earlier).
    pub fn write_access_unit(&mut self, au: &[u8]) -> io::Result<bool> {
        let Some(nals) = split_avc(au) else {
            return Ok(false);
        };
        let ty = |n: &[u8]| nal_type(n[0]);
        for n in &nals {
            match ty(n) {
                NAL_SPS => self.sps = Some(n.to_vec()),
                NAL_PPS => self.pps = Some(n.to_vec()),
                _ => {}
            }
        }
        let idr = nals.iter().any(|n| ty(n) == NAL_IDR);
        let has_sps = nals.iter().any(|n| ty(n) == NAL_SPS);
        let has_pps = nals.iter().any(|n| ty(n) == NAL_PPS);
        let decodable = idr && self.sps.is_some() && self.pps.is_some();
        if !self.started && !decodable {
            return Ok(false);
        }
        self.started = true;
        // One write per access unit, so buffered output holds whole units.
        let mut buf = Vec::with_capacity(au.len() + 64);
        if idr {
            if let (false, Some(sps)) = (has_sps, &self.sps) {
                buf.extend_from_slice(&START);
                buf.extend_from_slice(sps);
            }
            if let (false, Some(pps)) = (has_pps, &self.pps) {
                buf.extend_from_slice(&START);
                buf.extend_from_slice(pps);
            }
        }
        for n in nals {
            buf.extend_from_slice(&START);
            buf.extend_from_slice(n);
        }
        self.w.write_all(&buf)?;
        self.frames += 1;
        Ok(true)
    }

    /// Flush the inner writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Flush and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }

    /// Access units written.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::length_prefixed;

    fn avc(nals: &[&[u8]]) -> Vec<u8> {
        length_prefixed(&[], 4, nals)
    }

    #[test]
    fn starts_on_idr_and_inserts_parameter_sets() {
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let p: &[u8] = &[0x41, 0x9a, 0x02];
        let mut w = AnnexBWriter::new(Vec::new());
        assert!(!w.write_access_unit(&avc(&[p])).unwrap(), "no IDR yet");
        assert!(!w.write_access_unit(&avc(&[idr])).unwrap(), "no SPS yet");
        assert!(w.write_access_unit(&avc(&[sps, pps, idr])).unwrap());
        assert!(w.write_access_unit(&avc(&[p])).unwrap());
        assert!(w.write_access_unit(&avc(&[idr])).unwrap());
        assert!(!w.write_access_unit(&[0, 0, 0, 9, 1]).unwrap(), "malformed");
        assert_eq!(w.frames(), 3);
        let out = w.finish().unwrap();
        let mut want = vec![];
        for n in [sps, pps, idr, p, sps, pps, idr] {
            want.extend_from_slice(&START);
            want.extend_from_slice(n);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn split_truncations_never_panic() {
        let b = avc(&[&[0x67, 1, 2], &[0x65, 3]]);
        for n in 0..b.len() {
            let _ = split_avc(&b[..n]);
        }
        assert_eq!(split_avc(&b).unwrap().len(), 2);
        assert_eq!(split_avc(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
