//! Per-codec payload knowledge for forwarding: where a viewer may start or
//! switch (keyframe starts), and the VP8/VP9 picture id / TL0PICIDX rewrite
//! that keeps one continuous stream across changes of source.
//!
//! Pure functions over byte slices and `Copy` state; nothing allocates.

use str0m::format::Codec;

use crate::bitstream::leb128;

/// Whether `payload` is where a decoder may start `codec`: the first packet of
/// a keyframe. `au_start` says the packet is the first of its access unit on
/// its layer (no earlier packet with its timestamp was seen); only H.264 needs
/// it. Codecs without a detector are always decodable (no gating).
///
/// - VP8: S set, partition 0, key frame in the payload header.
/// - VP9 (RFC 9628): B set, P clear, spatial layer 0 without inter-layer
///   dependency, and the frame header, when present, says key frame.
/// - H.264: a packet carrying an SPS (single NAL or STAP-A), which leads a
///   keyframe's access unit; or an IDR (single, STAP-A, FU-A start) that
///   starts its access unit. An IDR after an SPS/PPS packet of the same
///   access unit is no start: the decoder would miss the new parameter sets.
/// - AV1: the aggregation header's N bit, or (senders that leave N clear) a
///   packet opening with a sequence header OBU whose frame, if in the packet,
///   is a shown key frame.
pub fn keyframe_start(codec: Codec, payload: &[u8], au_start: bool) -> bool {
    match codec {
        Codec::Vp8 => str0m::format::detect_vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe_start(payload),
        Codec::H264 => h264_keyframe_start(payload, au_start),
        Codec::H265 => str0m::format::detect_h265_keyframe(payload),
        Codec::Av1 => av1_keyframe_start(payload),
        _ => true,
    }
}

/// VP9 payload descriptor flags (byte 0: `I|P|L|F|B|E|V|Z`).
const VP9_I: u8 = 0x80;
const VP9_P: u8 = 0x40;
const VP9_L: u8 = 0x20;
const VP9_F: u8 = 0x10;
const VP9_B: u8 = 0x08;
const VP9_V: u8 = 0x02;

/// Where the parts of a VP9 payload descriptor (RFC 9628) lie.
pub(super) struct Vp9Layout {
    /// Byte 0: `I|P|L|F|B|E|V|Z`.
    pub b0: u8,
    /// The layer indices byte (`TID U SID D`), when L is set.
    pub layer: Option<u8>,
    /// Offset of the scalability structure's first byte, when V is set.
    pub ss: Option<usize>,
    /// Offset of the VP9 payload (the uncompressed header on a picture start).
    pub payload: usize,
}

/// Walk `p`'s VP9 payload descriptor; `None` if it is cut short.
pub(super) fn vp9_layout(p: &[u8]) -> Option<Vp9Layout> {
    let b0 = *p.first()?;
    let mut at = 1;
    if b0 & VP9_I != 0 {
        at += if p.get(1)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut layer = None;
    if b0 & VP9_L != 0 {
        layer = Some(*p.get(at)?);
        at += if b0 & VP9_F == 0 { 2 } else { 1 }; // TL0PICIDX in non-flexible mode
    }
    if b0 & VP9_F != 0 && b0 & VP9_P != 0 {
        // Flexible mode with P: P_DIFF bytes while N is set.
        loop {
            let d = *p.get(at)?;
            at += 1;
            if d & 0x01 == 0 {
                break;
            }
        }
    }
    let mut ss = None;
    if b0 & VP9_V != 0 {
        // Scalability structure: N_S(3) Y G RES(3), sizes if Y, the GOF if G.
        ss = Some(at);
        let head = *p.get(at)?;
        at += 1;
        if head & 0x10 != 0 {
            at += 4 * (usize::from(head >> 5) + 1);
        }
        if head & 0x08 != 0 {
            let n_g = *p.get(at)?;
            at += 1;
            for _ in 0..n_g {
                let g = *p.get(at)?;
                at += 1 + usize::from((g >> 2) & 0x03);
            }
        }
    }
    Some(Vp9Layout {
        b0,
        layer,
        ss,
        payload: at,
    })
}

/// See [`keyframe_start`].
pub fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(d) = vp9_layout(p) else {
        return false;
    };
    if d.b0 & VP9_P != 0 || d.b0 & VP9_B == 0 {
        return false;
    }
    // Spatial layer 0 without inter-layer dependency.
    if d.layer.is_some_and(|li| li & 0x0f != 0) {
        return false;
    }
    // The uncompressed header: frame_marker(2) profile_low profile_high
    // [reserved_zero if profile 3] show_existing_frame frame_type.
    match p.get(d.payload) {
        Some(&h) if h & 0xc0 == 0x80 => {
            let shift = if h & 0x30 == 0x30 { 1 } else { 2 };
            let show_existing = (h >> (shift + 1)) & 1;
            let frame_type = (h >> shift) & 1;
            show_existing == 0 && frame_type == 0
        }
        // Truncated, or no header where one should be: the descriptor decides.
        _ => true,
    }
}

/// H.264 NAL unit types.
const NAL_IDR: u8 = 5;
pub(super) const NAL_SPS: u8 = 7;
pub(super) const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// See [`keyframe_start`].
pub fn h264_keyframe_start(p: &[u8], au_start: bool) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    match b0 & 0x1f {
        NAL_SPS => true,
        NAL_IDR => au_start,
        NAL_STAP_A => {
            let (mut sps, mut idr) = (false, false);
            let mut at = 1;
            while at + 2 < p.len() {
                let len = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                at += 2;
                if len == 0 || at + len > p.len() {
                    break;
                }
                match p[at] & 0x1f {
                    NAL_SPS => sps = true,
                    NAL_IDR => idr = true,
                    _ => {}
                }
                at += len;
            }
            sps || (idr && au_start)
        }
        NAL_FU_A => p
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && h & 0x1f == NAL_IDR && au_start),
        _ => false,
    }
}

/// AV1 OBU types.
pub(super) const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_METADATA: u8 = 5;
const OBU_FRAME: u8 = 6;
const OBU_PADDING: u8 = 15;

/// See [`keyframe_start`].
pub fn av1_keyframe_start(p: &[u8]) -> bool {
    let Some(&agg) = p.first() else {
        return false;
    };
    // Aggregation header Z|Y|W(2)|N|-(3).
    if agg & 0x08 != 0 {
        return true;
    }
    if agg & 0x80 != 0 {
        return false; // continues an OBU of the previous packet
    }
    let w = usize::from((agg >> 4) & 0x03);
    let mut at = 1;
    let mut element = 0;
    let mut sequence_header = false;
    while at < p.len() {
        element += 1;
        // Every element but the W-th (the last) has a length prefix.
        let len = if w == 0 || element < w {
            let Some((len, n)) = leb128(&p[at..]) else {
                return false;
            };
            at += n;
            usize::try_from(len).unwrap_or(usize::MAX)
        } else {
            p.len() - at
        };
        let Some(obu) = p.get(at..at.saturating_add(len)) else {
            return false;
        };
        at += len;
        let Some(&h) = obu.first() else {
            continue;
        };
        let mut o = 1;
        if h & 0x04 != 0 {
            // Extension: temporal_id(3) spatial_id(2); only spatial layer 0 starts.
            if obu.get(1).is_none_or(|x| (x >> 3) & 0x03 != 0) {
                return false;
            }
            o = 2;
        }
        if h & 0x02 != 0 {
            let Some((_, n)) = leb128(&obu[o..]) else {
                return false;
            };
            o += n;
        }
        match (h >> 3) & 0x0f {
            OBU_TEMPORAL_DELIMITER | OBU_METADATA | OBU_PADDING => {}
            OBU_SEQUENCE_HEADER => sequence_header = true,
            OBU_FRAME | OBU_FRAME_HEADER if sequence_header => {
                // show_existing_frame(1) frame_type(2); KEY_FRAME is 0.
                return obu.get(o).is_some_and(|b| b & 0xe0 == 0);
            }
            _ => return false,
        }
        if w != 0 && element == w {
            break;
        }
    }
    sequence_header
}

/// Picture id and TL0PICIDX continuity across changes of source (VP8, VP9):
/// the first picture of a new source continues from the last one written.
#[derive(Debug, Clone, Copy, Default)]
pub struct PictureIds {
    /// Added to incoming picture ids (mod 2^15, or 2^7 for short ones).
    pid_offset: u16,
    /// Added to incoming TL0PICIDX (mod 2^8).
    tl0_offset: u8,
    /// Last picture id and TL0PICIDX written.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl PictureIds {
    /// The outgoing values for a packet with `pid` (15-bit when `wide`) and
    /// `tl0`; `rebase` on the first packet of a new source (it must start a
    /// new picture). Outgoing values keep the incoming widths.
    pub fn map(
        &mut self,
        pid: Option<u16>,
        wide: bool,
        tl0: Option<u8>,
        rebase: bool,
    ) -> (Option<u16>, Option<u8>) {
        let mask = if wide { 0x7fff } else { 0x7f };
        if rebase {
            if let (Some(p), Some(last)) = (pid, self.last_pid) {
                self.pid_offset = last.wrapping_add(1).wrapping_sub(p) & 0x7fff;
            }
            if let (Some(t), Some(last)) = (tl0, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
            }
        }
        let out_pid = pid.map(|p| p.wrapping_add(self.pid_offset) & mask);
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if out_pid.is_some() {
            self.last_pid = out_pid;
        }
        if out_tl0.is_some() {
            self.last_tl0 = out_tl0;
        }
        (out_pid, out_tl0)
    }

    /// Whether anything is rewritten at all (no offset yet: the identity).
    pub fn is_identity(&self) -> bool {
        self.pid_offset == 0 && self.tl0_offset == 0
    }
}

/// The picture id and TL0PICIDX of a VP9 payload descriptor (RFC 9628), and
/// where they are, so they can be rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Ids {
    /// Picture id (I set), 15-bit when `wide` (M set), else 7-bit.
    pub picture_id: Option<u16>,
    /// The picture id has the 15-bit form.
    pub wide: bool,
    /// TL0PICIDX (L set, non-flexible mode).
    pub tl0: Option<u8>,
    /// Offset of TL0PICIDX in the payload.
    tl0_at: u8,
}

impl Vp9Ids {
    /// The fields of `payload`'s descriptor; `None` when it has neither or is
    /// truncated.
    pub fn parse(payload: &[u8]) -> Option<Vp9Ids> {
        let b0 = *payload.first()?;
        let mut at = 1;
        let (picture_id, wide) = if b0 & VP9_I != 0 {
            let x = *payload.get(1)?;
            if x & 0x80 != 0 {
                at = 3;
                let lo = *payload.get(2)?;
                (Some((u16::from(x & 0x7f) << 8) | u16::from(lo)), true)
            } else {
                at = 2;
                (Some(u16::from(x)), false)
            }
        } else {
            (None, false)
        };
        let tl0 = if b0 & VP9_L != 0 && b0 & VP9_F == 0 {
            Some(*payload.get(at + 1)?)
        } else {
            None
        };
        if picture_id.is_none() && tl0.is_none() {
            return None;
        }
        Some(Vp9Ids {
            picture_id,
            wide,
            tl0,
            tl0_at: (at + 1) as u8,
        })
    }

    /// Write `picture_id` and `tl0` into `payload`, the descriptor this was
    /// parsed from (or a copy of it); fields it lacks are left alone.
    pub fn write(&self, payload: &mut [u8], picture_id: Option<u16>, tl0: Option<u8>) {
        if let (Some(_), Some(p)) = (self.picture_id, picture_id) {
            if self.wide {
                payload[1] = 0x80 | ((p >> 8) as u8 & 0x7f);
                payload[2] = p as u8;
            } else {
                payload[1] = p as u8 & 0x7f;
            }
        }
        if let (Some(_), Some(t)) = (self.tl0, tl0) {
            payload[usize::from(self.tl0_at)] = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_continuous() {
        let mut r = PictureIds::default();
        assert_eq!(r.map(Some(100), true, Some(7), true), (Some(100), Some(7)));
        assert_eq!(r.map(Some(101), true, Some(8), false), (Some(101), Some(8)));
        // New source with unrelated numbers.
        assert_eq!(
            r.map(Some(30_000), true, Some(200), true),
            (Some(102), Some(9))
        );
        assert_eq!(
            r.map(Some(30_001), true, Some(201), false),
            (Some(103), Some(10))
        );
        // Wrap of the 15-bit field.
        assert_eq!(
            r.map(Some(0x7fff), true, Some(0), true),
            (Some(104), Some(11))
        );
        assert_eq!(r.map(Some(0), true, Some(1), false), (Some(105), Some(12)));
    }

    #[test]
    fn short_picture_ids_wrap_at_7_bits() {
        let mut r = PictureIds::default();
        assert_eq!(r.map(Some(126), false, None, true), (Some(126), None));
        assert_eq!(r.map(Some(127), false, None, false), (Some(127), None));
        assert_eq!(r.map(Some(5), false, None, true), (Some(0), None));
        assert_eq!(r.map(Some(6), false, None, false), (Some(1), None));
        assert!(!r.is_identity());
    }

    #[test]
    fn vp9_ids_parse_and_write_in_place() {
        // I L, 15-bit picture id 0x1234, layer indices, TL0PICIDX 9.
        let mut p = [0xa8, 0x80 | 0x12, 0x34, 0x00, 9, 0x80, 0xee];
        let ids = Vp9Ids::parse(&p).unwrap();
        assert_eq!(
            (ids.picture_id, ids.wide, ids.tl0),
            (Some(0x1234), true, Some(9))
        );
        ids.write(&mut p, Some(0x7fff), Some(200));
        assert_eq!(p, [0xa8, 0xff, 0xff, 0x00, 200, 0x80, 0xee]);
        // 7-bit picture id, flexible mode: no TL0PICIDX.
        let mut p = [0xb8, 0x05, 0x00, 0x77];
        let ids = Vp9Ids::parse(&p).unwrap();
        assert_eq!((ids.picture_id, ids.wide, ids.tl0), (Some(5), false, None));
        ids.write(&mut p, Some(0x80 | 3), Some(1));
        assert_eq!(p, [0xb8, 0x03, 0x00, 0x77]);
        // Nothing to rewrite, or truncated.
        assert_eq!(Vp9Ids::parse(&[0x08, 0x80]), None);
        assert_eq!(Vp9Ids::parse(&[0xa8, 0x81]), None);
    }

    #[test]
    fn vp9_keyframe_is_the_first_packet_of_a_spatial_layer_0_intra_frame() {
        // I L B, pid, layer 0, TL0, then a profile 0 key frame header.
        assert!(vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x80]));
        // Profile 2 key frame header; profile 2 inter frame header.
        assert!(vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x90]));
        assert!(!vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x94]));
        // Profile 3 (reserved bit before show_existing_frame/frame_type).
        assert!(vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0xb0]));
        assert!(!vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0xb2]));
        // Not the first packet of the frame (B clear), or predicted (P set).
        assert!(!vp9_keyframe_start(&[0xa0, 0x81, 0x00, 0x00, 1, 0x80]));
        assert!(!vp9_keyframe_start(&[0xe8, 0x81, 0x00, 0x00, 1, 0x84]));
        // Spatial layer 1, or inter-layer dependent.
        assert!(!vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x02, 1, 0x80]));
        assert!(!vp9_keyframe_start(&[0xa8, 0x81, 0x00, 0x01, 1, 0x80]));
        // With a scalability structure (1 layer with size, GOF of 1 with one
        // reference) before the frame.
        let ss = [
            0xaa, 0x81, 0x00, 0x00, 1, 0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x04, 0x01, 0x80,
        ];
        assert!(vp9_keyframe_start(&ss));
        let mut inter = ss;
        inter[13] = 0x84;
        assert!(!vp9_keyframe_start(&inter));
        // Descriptor only: decided by the descriptor.
        assert!(vp9_keyframe_start(&[0x08]));
        assert!(!vp9_keyframe_start(&[]));
    }

    #[test]
    fn h264_keyframe_starts_with_the_parameter_sets() {
        let stap = |nals: &[&[u8]]| {
            let mut p = vec![0x78];
            for n in nals {
                p.extend_from_slice(&(n.len() as u16).to_be_bytes());
                p.extend_from_slice(n);
            }
            p
        };
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f];
        let pps: &[u8] = &[0x68, 0xce];
        let idr: &[u8] = &[0x65, 0x88];
        // STAP-A with SPS/PPS (IDR following), or with the IDR too.
        assert!(h264_keyframe_start(&stap(&[sps, pps]), true));
        assert!(h264_keyframe_start(&stap(&[sps, pps, idr]), false));
        // A single SPS.
        assert!(h264_keyframe_start(sps, false));
        // An IDR starts only its own access unit.
        assert!(h264_keyframe_start(idr, true));
        assert!(!h264_keyframe_start(idr, false));
        assert!(h264_keyframe_start(&[0x7c, 0x85, 0x88], true));
        assert!(!h264_keyframe_start(&[0x7c, 0x85, 0x88], false));
        // FU-A middle of an IDR, PPS alone, non-IDR slices.
        assert!(!h264_keyframe_start(&[0x7c, 0x05, 0x88], true));
        assert!(!h264_keyframe_start(pps, true));
        assert!(!h264_keyframe_start(&[0x41, 0x9a], true));
        assert!(!h264_keyframe_start(&[0x5c, 0x81, 0x9a], true));
        // Truncated STAP-A.
        assert!(!h264_keyframe_start(&[0x78, 0x00, 0x09, 0x67], true));
    }

    #[test]
    fn av1_keyframe_by_n_bit_or_sequence_header() {
        // N set.
        assert!(av1_keyframe_start(&[0x18, 0x30, 0x10]));
        // N clear, W=2: sequence header then a key frame.
        assert!(av1_keyframe_start(&[0x20, 0x02, 0x08, 0x00, 0x30, 0x10]));
        // ... then an inter frame (frame_type 1).
        assert!(!av1_keyframe_start(&[0x20, 0x02, 0x08, 0x00, 0x30, 0x30]));
        // W=0: length-prefixed temporal delimiter, sequence header, key frame.
        assert!(av1_keyframe_start(&[
            0x00, 0x01, 0x10, 0x02, 0x08, 0x00, 0x02, 0x30, 0x10
        ]));
        // Sequence header alone (the frame follows in the next packet).
        assert!(av1_keyframe_start(&[0x10, 0x08, 0x00]));
        // A frame without a sequence header; a continuation (Z set).
        assert!(!av1_keyframe_start(&[0x10, 0x30, 0x10]));
        assert!(!av1_keyframe_start(&[0x90, 0x08, 0x00]));
        // Spatial layer 1 (extension), and a length beyond the packet.
        assert!(!av1_keyframe_start(&[0x10, 0x0c, 0x08, 0x00]));
        assert!(!av1_keyframe_start(&[0x20, 0x09, 0x08, 0x00]));
        assert!(!av1_keyframe_start(&[]));
    }
}
