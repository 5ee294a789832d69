//! AV1 (RTP payload format for AV1, AV1 bitstream spec): OBU types and
//! headers, the aggregation header's elements, keyframe starts, and the
//! picture size in a sequence header OBU.

use super::bits::{leb128, Bits};

/// OBU types.
pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_FRAME_HEADER: u8 = 3;
pub const OBU_METADATA: u8 = 5;
pub const OBU_FRAME: u8 = 6;
pub const OBU_TILE_LIST: u8 = 8;
pub const OBU_PADDING: u8 = 15;

/// Aggregation header bits `Z|Y|W(2)|N|-(3)`.
pub const AGG_Z: u8 = 0x80;
pub const AGG_Y: u8 = 0x40;
pub const AGG_N: u8 = 0x08;

/// The OBU elements of one RTP payload after its aggregation header: every
/// element but the W-th (the last) has a `leb128()` length. Yields `None`
/// once for a length that is unreadable or runs past the payload, then ends.
pub fn elements(p: &[u8]) -> Elements<'_> {
    let w = p.first().map_or(0, |agg| (agg >> 4) & 0x03);
    Elements {
        p,
        at: 1,
        k: 0,
        w,
        last: false,
    }
}

/// See [`elements`].
pub struct Elements<'a> {
    p: &'a [u8],
    at: usize,
    k: u8,
    w: u8,
    last: bool,
}

impl Elements<'_> {
    /// The element last yielded ends the payload (by W or by length).
    pub fn at_end(&self) -> bool {
        self.last
    }

    /// How many elements were yielded.
    pub fn count_so_far(&self) -> u8 {
        self.k
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Option<&'a [u8]>> {
        if self.last || self.at >= self.p.len() {
            return None;
        }
        self.k = self.k.saturating_add(1);
        let by_count = self.w != 0 && self.k == self.w;
        let len = if by_count {
            self.p.len() - self.at
        } else {
            let Some((len, n)) = leb128(&self.p[self.at..]) else {
                self.last = true;
                return Some(None);
            };
            self.at += n;
            usize::try_from(len).unwrap_or(usize::MAX)
        };
        let Some(e) = self.p.get(self.at..self.at.saturating_add(len)) else {
            self.last = true;
            return Some(None);
        };
        self.at += len;
        self.last = by_count || self.at >= self.p.len();
        Some(Some(e))
    }
}

/// An OBU header (AV1 §5.3.1): type, extension, and where the payload starts.
#[derive(Debug, Clone, Copy)]
pub struct ObuHeader {
    /// `forbidden(1) type(4) extension_flag has_size_field reserved`.
    pub byte: u8,
    /// `temporal_id(3) spatial_id(2) reserved(3)`, when the flag is set.
    pub ext: Option<u8>,
    /// `obu_size`, when the header has a size field.
    pub size: Option<usize>,
    /// Offset of the payload (after the size field).
    pub start: usize,
}

impl ObuHeader {
    /// The header at the start of `b`; `None` if it is cut short.
    pub fn parse(b: &[u8]) -> Option<ObuHeader> {
        let byte = *b.first()?;
        let mut start = 1;
        let mut ext = None;
        if byte & 0x04 != 0 {
            ext = Some(*b.get(1)?);
            start = 2;
        }
        let mut size = None;
        if byte & 0x02 != 0 {
            let (s, n) = leb128(&b[start..])?;
            size = Some(usize::try_from(s).ok()?);
            start += n;
        }
        Some(ObuHeader {
            byte,
            ext,
            size,
            start,
        })
    }

    pub fn obu_type(&self) -> u8 {
        (self.byte >> 3) & 0x0f
    }

    /// Spatial layer (0 without an extension).
    pub fn spatial_id(&self) -> u8 {
        self.ext.map_or(0, |x| (x >> 3) & 0x03)
    }

    /// The payload of `obu`, the OBU this was parsed from: `obu_size` bytes,
    /// or the rest without a size field; `None` past the end.
    pub fn payload<'a>(&self, obu: &'a [u8]) -> Option<&'a [u8]> {
        match self.size {
            Some(n) => obu.get(self.start..self.start.checked_add(n)?),
            None => obu.get(self.start..),
        }
    }
}

/// Whether `p` is where a decoder may start: the aggregation header's N bit,
/// or (senders that leave N clear) a packet opening with a sequence header
/// OBU whose frame, if in the packet, is a shown key frame.
pub fn keyframe_start(p: &[u8]) -> bool {
    let Some(&agg) = p.first() else {
        return false;
    };
    if agg & AGG_N != 0 {
        return true;
    }
    if agg & AGG_Z != 0 {
        return false; // continues an OBU of the previous packet
    }
    let mut sequence_header = false;
    for obu in elements(p) {
        let Some(obu) = obu else {
            return false;
        };
        if obu.is_empty() {
            continue;
        }
        // Only spatial layer 0 starts.
        let Some(h) = ObuHeader::parse(obu).filter(|h| h.spatial_id() == 0) else {
            return false;
        };
        match h.obu_type() {
            OBU_TEMPORAL_DELIMITER | OBU_METADATA | OBU_PADDING => {}
            OBU_SEQUENCE_HEADER => sequence_header = true,
            OBU_FRAME | OBU_FRAME_HEADER if sequence_header => {
                // show_existing_frame(1) frame_type(2); KEY_FRAME is 0. The
                // frame usually goes on in the next packets: no size check.
                return obu.get(h.start).is_some_and(|b| b & 0xe0 == 0);
            }
            _ => return false,
        }
    }
    sequence_header
}

/// The picture size in the first sequence header OBU `p` carries.
pub fn keyframe_size(p: &[u8]) -> Option<(u32, u32)> {
    if *p.first()? & AGG_Z != 0 {
        return None; // continues an OBU of the previous packet
    }
    for obu in elements(p) {
        let obu = obu?;
        let h = ObuHeader::parse(obu)?;
        if h.obu_type() == OBU_SEQUENCE_HEADER {
            return sequence_header_size(obu.get(h.start..)?);
        }
    }
    None
}

/// The picture size in a temporal unit whose OBUs all carry size fields
/// (as the depacketizer writes them): from its first sequence header.
pub fn temporal_unit_size(mut f: &[u8]) -> Option<(u32, u32)> {
    while !f.is_empty() {
        let h = ObuHeader::parse(f)?;
        h.size?;
        let body = h.payload(f)?;
        if h.obu_type() == OBU_SEQUENCE_HEADER {
            return sequence_header_size(body);
        }
        f = &f[h.start + body.len()..];
    }
    None
}

/// Sequence header OBU payload: max_frame_{width,height}.
pub fn sequence_header_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(b);
    r.read(3)?; // seq_profile
    r.read(1)?; // still_picture
    let reduced = r.flag()?;
    if reduced {
        r.read(5)?; // seq_level_idx[0]
    } else {
        let timing_info = r.flag()?;
        let mut decoder_model_info = false;
        let mut buffer_delay_len = 0;
        if timing_info {
            r.read(32)?;
            r.read(32)?;
            if r.flag()? {
                r.ue()?; // uvlc()
            }
            decoder_model_info = r.flag()?;
            if decoder_model_info {
                buffer_delay_len = r.read(5)? + 1;
                r.read(32)?;
                r.read(5)?;
                r.read(5)?;
            }
        }
        let initial_display_delay = r.flag()?;
        let ops = r.read(5)? + 1;
        for _ in 0..ops {
            r.read(12)?; // operating_point_idc
            let level = r.read(5)?;
            if level > 7 {
                r.read(1)?; // seq_tier
            }
            if decoder_model_info && r.flag()? {
                r.read(buffer_delay_len)?;
                r.read(buffer_delay_len)?;
                r.read(1)?;
            }
            if initial_display_delay && r.flag()? {
                r.read(4)?;
            }
        }
    }
    let wb = r.read(4)? + 1;
    let hb = r.read(4)? + 1;
    let w = r.read(wb)? + 1;
    let h = r.read(hb)? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::keyframe_size as size_of;
    use crate::codec::tests::hex;
    use str0m::format::Codec;

    #[test]
    fn keyframe_by_n_bit_or_sequence_header() {
        // N set.
        assert!(keyframe_start(&[0x18, 0x30, 0x10]));
        // N clear, W=2: sequence header then a key frame.
        assert!(keyframe_start(&[0x20, 0x02, 0x08, 0x00, 0x30, 0x10]));
        // ... then an inter frame (frame_type 1).
        assert!(!keyframe_start(&[0x20, 0x02, 0x08, 0x00, 0x30, 0x30]));
        // W=0: length-prefixed temporal delimiter, sequence header, key frame.
        assert!(keyframe_start(&[
            0x00, 0x01, 0x10, 0x02, 0x08, 0x00, 0x02, 0x30, 0x10
        ]));
        // Sequence header alone (the frame follows in the next packet).
        assert!(keyframe_start(&[0x10, 0x08, 0x00]));
        // A frame without a sequence header; a continuation (Z set).
        assert!(!keyframe_start(&[0x10, 0x30, 0x10]));
        assert!(!keyframe_start(&[0x90, 0x08, 0x00]));
        // Spatial layer 1 (extension), and a length beyond the packet.
        assert!(!keyframe_start(&[0x10, 0x0c, 0x08, 0x00]));
        assert!(!keyframe_start(&[0x20, 0x09, 0x08, 0x00]));
        assert!(!keyframe_start(&[]));
    }

    #[test]
    fn elements_by_length_and_by_count() {
        // W=0: two length-prefixed elements.
        let p = [0x00, 1, 0xaa, 2, 0xbb, 0xcc];
        let mut e = elements(&p);
        assert_eq!(e.next(), Some(Some(&[0xaa][..])));
        assert!(!e.at_end());
        assert_eq!(e.next(), Some(Some(&[0xbb, 0xcc][..])));
        assert!(e.at_end() && e.next().is_none());
        assert_eq!(e.count_so_far(), 2);
        // W=2: the second element has no length and takes the rest.
        let p = [0x20, 1, 0xaa, 0xbb, 0xcc];
        let got: Vec<_> = elements(&p).collect();
        assert_eq!(got, [Some(&[0xaa][..]), Some(&[0xbb, 0xcc][..])]);
        // A length past the end: one `None`, then the end.
        let got: Vec<_> = elements(&[0x00, 5, 0xaa]).collect();
        assert_eq!(got, [None]);
    }

    #[test]
    fn sequence_header_obu() {
        // Aggregation header W=1 (one OBU, no length), then the OBU with its size field.
        for (obu, size) in [
            ("0a0b0000002d4cffb3ccaf9004", (1280, 720)), // libaom 4:2:0
            ("0a0b0000000cc4ff673efe4010", (640, 360)),  // SVT-AV1
            ("0a0d20000004 3cfeccdaf92021a004", (320, 180)), // libaom 4:4:4
            ("0a0e000000faa67fd9e210ac8101010a", (1280, 720)), // rav1e
        ] {
            let mut p = vec![0x18];
            p.extend_from_slice(&hex(&obu.replace(' ', "")));
            assert_eq!(size_of(Codec::Av1, &p), Some(size), "{obu}");
            // The same OBU as a temporal unit.
            assert_eq!(
                temporal_unit_size(&p[1..]),
                Some((size.0.into(), size.1.into()))
            );
        }
        // A temporal delimiter then the sequence header, W=2.
        let mut p = vec![0x28, 0x02, 0x12, 0x00];
        p.extend_from_slice(&hex("0a0b0000002d4cffb3ccaf9004"));
        assert_eq!(size_of(Codec::Av1, &p), Some((1280, 720)));
    }
}
