//! VP9 (RFC 9628): the payload descriptor, keyframe starts, the picture size
//! (scalability structure or uncompressed header), and the picture id /
//! TL0PICIDX rewrite.

use super::bits::Bits;
use super::Ids;

/// Byte 0 flags: `I|P|L|F|B|E|V|Z`.
const I: u8 = 0x80;
const P: u8 = 0x40;
const L: u8 = 0x20;
const F: u8 = 0x10;
const B: u8 = 0x08;
const E: u8 = 0x04;
const V: u8 = 0x02;

/// Most P_DIFF bytes one flexible-mode descriptor may chain.
const MAX_P_DIFF: usize = 3;

/// A VP9 payload descriptor, walked once.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    /// Byte 0: `I|P|L|F|B|E|V|Z`.
    b0: u8,
    /// Picture id (I set), 15-bit when `wide`.
    picture_id: Option<u16>,
    wide: bool,
    /// The layer indices byte `TID(3) U SID(3) D` (L set).
    layer: Option<u8>,
    /// TL0PICIDX (L set, non-flexible mode), and its offset.
    tl0: Option<u8>,
    tl0_at: u8,
    /// Offset of the scalability structure (V set).
    ss: Option<usize>,
    /// Offset of the frame bytes: `None` when the P_DIFFs or the
    /// scalability structure run past the payload (the ids above are read).
    frame: Option<usize>,
}

impl Descriptor {
    /// Walk `p`'s descriptor; `None` if its head (byte 0, picture id, layer
    /// indices, TL0PICIDX) is cut short.
    pub fn parse(p: &[u8]) -> Option<Descriptor> {
        let b0 = *p.first()?;
        let mut at = 1;
        let (mut picture_id, mut wide) = (None, false);
        if b0 & I != 0 {
            let m = *p.get(1)?;
            wide = m & 0x80 != 0;
            picture_id = Some(if wide {
                at = 3;
                (u16::from(m & 0x7f) << 8) | u16::from(*p.get(2)?)
            } else {
                at = 2;
                u16::from(m)
            });
        }
        let (mut layer, mut tl0, tl0_at) = (None, None, at + 1);
        if b0 & L != 0 {
            layer = Some(*p.get(at)?);
            at += 1;
            if b0 & F == 0 {
                tl0 = Some(*p.get(at)?);
                at += 1;
            }
        }
        let mut d = Descriptor {
            b0,
            picture_id,
            wide,
            layer,
            tl0,
            tl0_at: tl0_at as u8,
            ss: None,
            frame: None,
        };
        d.frame = d.tail(p, at);
        Some(d)
    }

    /// Skip the P_DIFFs and the scalability structure from `at`; the offset
    /// of the frame bytes, or `None` past the end.
    fn tail(&mut self, p: &[u8], mut at: usize) -> Option<usize> {
        if self.b0 & F != 0 && self.b0 & P != 0 {
            // P_DIFF bytes while N is set.
            for n in 1.. {
                let d = *p.get(at)?;
                at += 1;
                if d & 0x01 == 0 {
                    break;
                }
                if n == MAX_P_DIFF {
                    return None;
                }
            }
        }
        if self.b0 & V != 0 {
            // N_S(3) Y G RES(3), WIDTH/HEIGHT per layer if Y, the GOF if G.
            self.ss = Some(at);
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
        (at <= p.len()).then_some(at)
    }

    /// P: the picture depends on earlier pictures.
    pub fn inter(&self) -> bool {
        self.b0 & P != 0
    }

    /// B: the first packet of a layer frame.
    pub fn begin(&self) -> bool {
        self.b0 & B != 0
    }

    /// E: the last packet of a layer frame.
    pub fn end(&self) -> bool {
        self.b0 & E != 0
    }

    /// The picture id (7 or 15 bits).
    pub fn picture_id(&self) -> Option<u16> {
        self.picture_id
    }

    /// Spatial layer id (0 without layer indices).
    pub fn sid(&self) -> u8 {
        self.layer.map_or(0, |l| (l >> 1) & 0x07)
    }

    /// Offset of the frame bytes; `None` when the descriptor is cut short.
    pub fn frame_offset(&self) -> Option<usize> {
        self.frame
    }

    /// Where a decoder may start: B set, P clear, spatial layer 0 without
    /// inter-layer dependency, and the uncompressed header, when present,
    /// says key frame. `p` is the payload this was parsed from.
    pub fn keyframe_start(&self, p: &[u8]) -> bool {
        let Some(frame) = self.frame else {
            return false;
        };
        if self.inter() || !self.begin() || self.layer.is_some_and(|l| l & 0x0f != 0) {
            return false;
        }
        // frame_marker(2) profile_low profile_high [reserved_zero if
        // profile 3] show_existing_frame frame_type.
        match p.get(frame) {
            Some(&h) if h & 0xc0 == 0x80 => {
                let shift = if h & 0x30 == 0x30 { 1 } else { 2 };
                let show_existing = (h >> (shift + 1)) & 1;
                let frame_type = (h >> shift) & 1;
                show_existing == 0 && frame_type == 0
            }
            // No header where one should be: the descriptor decides.
            _ => true,
        }
    }

    /// The picture size: the scalability structure's largest spatial layer
    /// when it carries sizes, else the uncompressed header of a picture
    /// without inter-picture dependency.
    pub fn keyframe_size(&self, p: &[u8]) -> Option<(u32, u32)> {
        let frame = self.frame?;
        if let Some(at) = self.ss {
            let head = p[at];
            if head & 0x10 != 0 {
                let last = at + 1 + 4 * usize::from(head >> 5);
                let s = p.get(last..last + 4)?;
                let w = u16::from_be_bytes([s[0], s[1]]);
                let h = u16::from_be_bytes([s[2], s[3]]);
                return Some((u32::from(w), u32::from(h)));
            }
        }
        if !self.begin() || self.inter() {
            return None;
        }
        key_frame_size(&p[frame..])
    }

    /// The picture id / TL0PICIDX facts, when there is something to rewrite.
    pub fn ids(&self) -> Option<Ids> {
        if self.picture_id.is_none() && self.tl0.is_none() {
            return None;
        }
        Some(Ids {
            picture_id: self.picture_id,
            wide: self.wide,
            tl0: self.tl0,
            pid_at: 1,
            tl0_at: self.tl0_at,
        })
    }
}

/// Whether `p` is where a decoder may start (see [`Descriptor::keyframe_start`]).
pub fn keyframe_start(p: &[u8]) -> bool {
    Descriptor::parse(p).is_some_and(|d| d.keyframe_start(p))
}

/// The frame size in a VP9 key frame's uncompressed header (the frame, or
/// the first frame of a superframe).
pub fn key_frame_size(f: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(f);
    if r.read(2)? != 2 {
        return None; // frame_marker
    }
    let lo = r.read(1)?;
    let hi = r.read(1)?;
    let profile = (hi << 1) | lo;
    if profile == 3 {
        r.read(1)?; // reserved_zero
    }
    if r.flag()? {
        return None; // show_existing_frame
    }
    if r.read(1)? != 0 {
        return None; // frame_type: not a keyframe
    }
    r.read(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    if profile >= 2 {
        r.read(1)?; // ten_or_twelve_bit
    }
    let color_space = r.read(3)?;
    if color_space != 7 {
        r.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.read(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.read(1)?; // reserved_zero
    }
    let w = r.read(16)? + 1;
    let h = r.read(16)? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::keyframe_size;
    use crate::codec::tests::hex;
    use str0m::format::Codec;

    impl Ids {
        fn parse(p: &[u8]) -> Option<Ids> {
            Descriptor::parse(p)?.ids()
        }
    }

    #[test]
    fn descriptor_fields() {
        // I P L F B E V Z = 1 1 1 1 1 0 0 0; 15-bit picture id; layer byte; 2 P_DIFF.
        let p = [0xf8, 0x81, 0x23, 0x02, 0x03, 0x04, 0xaa];
        let d = Descriptor::parse(&p).unwrap();
        assert_eq!(d.picture_id(), Some(0x0123));
        assert_eq!(d.sid(), 1);
        assert!(d.inter() && d.begin() && !d.end());
        assert_eq!(d.frame_offset(), Some(6));
        // Non-flexible keyframe with scalability structure (1 layer, Y, G with 1 entry R=1).
        let ss = [
            0x8e, 0x05, 0x18, 0x01, 0x40, 0x00, 0xf0, 0x01, 0x04, 0x01, 0x82, 0x49,
        ];
        let d = Descriptor::parse(&ss).unwrap();
        assert!(!d.inter() && d.begin() && d.end());
        assert_eq!(d.frame_offset(), Some(10));
        // Four chained P_DIFFs, or a scalability structure past the end: the
        // frame cannot be found (the head still reads).
        let d = Descriptor::parse(&[0xd0, 0x01, 0x01, 0x01, 0x01]).unwrap();
        assert_eq!((d.picture_id(), d.frame_offset()), (Some(1), None));
        assert_eq!(Descriptor::parse(&ss[..6]).unwrap().frame_offset(), None);
        assert!(!keyframe_start(&ss[..6]));
        // Head cut short.
        assert!(Descriptor::parse(&[0xa8, 0x81]).is_none());
        assert!(Descriptor::parse(&[]).is_none());
    }

    #[test]
    fn ids_parse_and_write_in_place() {
        // I L, 15-bit picture id 0x1234, layer indices, TL0PICIDX 9.
        let mut p = [0xa8, 0x80 | 0x12, 0x34, 0x00, 9, 0x80, 0xee];
        let ids = Ids::parse(&p).unwrap();
        assert_eq!(
            (ids.picture_id, ids.wide, ids.tl0),
            (Some(0x1234), true, Some(9))
        );
        ids.write(&mut p, Some(0x7fff), Some(200));
        assert_eq!(p, [0xa8, 0xff, 0xff, 0x00, 200, 0x80, 0xee]);
        // 7-bit picture id, flexible mode: no TL0PICIDX.
        let mut p = [0xb8, 0x05, 0x00, 0x77];
        let ids = Ids::parse(&p).unwrap();
        assert_eq!((ids.picture_id, ids.wide, ids.tl0), (Some(5), false, None));
        ids.write(&mut p, Some(0x80 | 3), Some(1));
        assert_eq!(p, [0xb8, 0x03, 0x00, 0x77]);
        // No picture id: TL0PICIDX right after the layer indices.
        let mut p = [0x28, 0x00, 7, 0x80];
        let ids = Ids::parse(&p).unwrap();
        assert_eq!((ids.picture_id, ids.tl0), (None, Some(7)));
        ids.write(&mut p, None, Some(8));
        assert_eq!(p, [0x28, 0x00, 8, 0x80]);
        // Nothing to rewrite, or truncated.
        assert_eq!(Ids::parse(&[0x08, 0x80]), None);
        assert_eq!(Ids::parse(&[0xa8, 0x81]), None);
    }

    #[test]
    fn keyframe_is_the_first_packet_of_a_spatial_layer_0_intra_frame() {
        // I L B, pid, layer 0, TL0, then a profile 0 key frame header.
        assert!(keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x80]));
        // Profile 2 key frame header; profile 2 inter frame header.
        assert!(keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x90]));
        assert!(!keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0x94]));
        // Profile 3 (reserved bit before show_existing_frame/frame_type).
        assert!(keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0xb0]));
        assert!(!keyframe_start(&[0xa8, 0x81, 0x00, 0x00, 1, 0xb2]));
        // Not the first packet of the frame (B clear), or predicted (P set).
        assert!(!keyframe_start(&[0xa0, 0x81, 0x00, 0x00, 1, 0x80]));
        assert!(!keyframe_start(&[0xe8, 0x81, 0x00, 0x00, 1, 0x84]));
        // Spatial layer 1, or inter-layer dependent.
        assert!(!keyframe_start(&[0xa8, 0x81, 0x00, 0x02, 1, 0x80]));
        assert!(!keyframe_start(&[0xa8, 0x81, 0x00, 0x01, 1, 0x80]));
        // With a scalability structure (1 layer with size, GOF of 1 with one
        // reference) before the frame.
        let ss = [
            0xaa, 0x81, 0x00, 0x00, 1, 0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x04, 0x01, 0x80,
        ];
        assert!(keyframe_start(&ss));
        let mut inter = ss;
        inter[13] = 0x84;
        assert!(!keyframe_start(&inter));
        // Descriptor only: decided by the descriptor.
        assert!(keyframe_start(&[0x08]));
        assert!(!keyframe_start(&[]));
    }

    #[test]
    fn uncompressed_header_and_scalability_structure() {
        // Profile 0, 1280x720, descriptor I(7-bit pid) B E.
        let mut p = vec![0x8c, 0x05];
        p.extend_from_slice(&hex("a2498342e04ff02cf60438241c18"));
        assert_eq!(keyframe_size(Codec::Vp9, &p), Some((1280, 720)));
        // Profile 2 (10 bit), 640x360.
        let mut p = vec![0x0c];
        p.extend_from_slice(&hex("924983420013f80b3b061c120e0c"));
        assert_eq!(keyframe_size(Codec::Vp9, &p), Some((640, 360)));
        // Scalability structure with sizes (Y): two spatial layers, the larger wins.
        let p = [
            0x0e, 0x30, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x00,
        ];
        assert_eq!(keyframe_size(Codec::Vp9, &p), Some((640, 360)));
    }
}
