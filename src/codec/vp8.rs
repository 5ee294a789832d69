//! VP8 (RFC 7741): the payload descriptor, keyframe starts, the key frame's
//! picture size (RFC 6386 §9.1), and the picture id / TL0PICIDX rewrite.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use super::Ids;

/// A VP8 payload descriptor, walked once: `X R N S R PID(3)`, then
/// `I L T K`, the picture id (7 or 15 bits), TL0PICIDX and `TID Y KEYIDX`.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    /// Byte 0: `X R N S R PID(3)`.
    b0: u8,
    /// Byte 1 (`I L T K`), or 0 without X.
    x: u8,
    /// Picture id (I set), 15 bits when `wide`.
    picture_id: Option<u16>,
    wide: bool,
    /// TL0PICIDX (L set), and its offset.
    tl0: Option<u8>,
    tl0_at: u8,
    /// Offset of the VP8 payload header (the frame tag on a partition start).
    header: usize,
}

impl Descriptor {
    /// Walk `p`'s descriptor; `None` if it is cut short or nothing follows it.
    pub fn parse(p: &[u8]) -> Option<Descriptor> {
        let b0 = *p.first()?;
        let mut d = Descriptor {
            b0,
            x: 0,
            picture_id: None,
            wide: false,
            tl0: None,
            tl0_at: 0,
            header: 1,
        };
        if b0 & 0x80 != 0 {
            d.x = *p.get(1)?;
            let mut at = 2;
            if d.x & 0x80 != 0 {
                let m = *p.get(at)?;
                d.wide = m & 0x80 != 0;
                d.picture_id = Some(if d.wide {
                    at += 2;
                    (u16::from(m & 0x7f) << 8) | u16::from(*p.get(at - 1)?)
                } else {
                    at += 1;
                    u16::from(m)
                });
            }
            if d.x & 0x40 != 0 {
                d.tl0 = Some(*p.get(at)?);
                d.tl0_at = at as u8;
                at += 1;
            }
            if d.x & 0x30 != 0 {
                at += 1; // TID Y KEYIDX
            }
            d.header = at;
        }
        (d.header < p.len()).then_some(d)
    }

    /// The first packet of a key frame: S set, partition 0, and the frame
    /// tag's P bit clear. `p` is the payload this was parsed from.
    pub fn keyframe_start(&self, p: &[u8]) -> bool {
        self.b0 & 0x10 != 0 && self.b0 & 0x07 == 0 && p[self.header] & 0x01 == 0
    }

    /// The picture size of the key frame this packet starts, if it says.
    pub fn keyframe_size(&self, p: &[u8]) -> Option<(u32, u32)> {
        if self.b0 & 0x10 == 0 || self.b0 & 0x07 != 0 {
            return None; // not the start of partition 0
        }
        key_frame_size(&p[self.header..])
    }

    /// The picture id / TL0PICIDX facts, when there is something to rewrite.
    /// A descriptor with L but not T (RFC 7741 forbids it) has none: str0m
    /// would refuse to patch it.
    pub fn ids(&self) -> Option<Ids> {
        let l_without_t = self.x & 0x60 == 0x40;
        if self.picture_id.is_none() && self.tl0.is_none() || l_without_t {
            return None;
        }
        Some(Ids {
            picture_id: self.picture_id,
            wide: self.wide,
            tl0: self.tl0,
            pid_at: 2,
            tl0_at: self.tl0_at,
        })
    }
}

/// Whether `p` is the first packet of a VP8 key frame.
pub fn keyframe_start(p: &[u8]) -> bool {
    Descriptor::parse(p).is_some_and(|d| d.keyframe_start(p))
}

/// The picture size of a VP8 key frame (the frame, no descriptor): frame tag
/// with bit 0 clear, start code `9d 01 2a`, 14-bit width and height.
pub fn key_frame_size(f: &[u8]) -> Option<(u32, u32)> {
    if f.len() < 10 || f[0] & 1 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([f[6], f[7]]) & 0x3fff;
    let h = u16::from_le_bytes([f[8], f[9]]) & 0x3fff;
    Some((w as u32, h as u32))
}

impl Ids {
    /// VP8: str0m's patch writing `picture_id` and `tl0` into the fields the
    /// descriptor of `payload` (the payload these ids are from) has; str0m
    /// applies it while it copies the payload out. `None` when a value does
    /// not fit its field. Reads the descriptor again: str0m builds a patch
    /// only from its own `Vp8Descriptor`.
    pub fn vp8_patch(
        &self,
        payload: &[u8],
        picture_id: Option<u16>,
        tl0: Option<u8>,
    ) -> Option<Vp8Patch> {
        let mut b = Vp8Descriptor::parse(payload).ok()?.patch();
        if let Some(x) = self.picture_id.and(picture_id) {
            b = b.picture_id(x);
        }
        if let Some(x) = self.tl0.and(tl0) {
            b = b.tl0_pic_idx(x);
        }
        b.build().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::hex;

    #[test]
    fn key_frame_header() {
        let frame = hex("909c009d012a800268010047");
        assert_eq!(key_frame_size(&frame), Some((640, 360)));
        let mut delta = frame.clone();
        delta[0] |= 1;
        assert_eq!(key_frame_size(&delta), None);
        assert_eq!(key_frame_size(&frame[..9]), None);
    }

    #[test]
    fn descriptor_fields_and_keyframe_start() {
        // X, S; I L T; 15-bit picture id 0x1234; TL0PICIDX 9; TID; key frame tag.
        let p = [0x90, 0xe0, 0x92, 0x34, 9, 0x40, 0x50];
        let d = Descriptor::parse(&p).unwrap();
        assert!(d.keyframe_start(&p));
        let ids = d.ids().unwrap();
        assert_eq!(
            (ids.picture_id, ids.wide, ids.tl0),
            (Some(0x1234), true, Some(9))
        );
        assert!(ids.vp8_patch(&p, Some(0x7fff), Some(1)).is_some());
        assert!(ids.vp8_patch(&p, None, None).is_some());
        // The offsets are the descriptor's.
        let mut q = p;
        ids.write(&mut q, Some(0x0102), Some(10));
        assert_eq!(q, [0x90, 0xe0, 0x81, 0x02, 10, 0x40, 0x50]);
        // 7-bit picture id, no TL0PICIDX; a 15-bit value does not fit.
        let p = [0x90, 0x80, 0x05, 0x51];
        let ids = Descriptor::parse(&p).unwrap().ids().unwrap();
        assert_eq!((ids.picture_id, ids.wide, ids.tl0), (Some(5), false, None));
        assert!(ids.vp8_patch(&p, Some(0x100), None).is_none());
        // Inter frame; not partition 0; not S.
        assert!(!keyframe_start(&[0x10, 0x01]));
        assert!(!keyframe_start(&[0x11, 0x00]));
        assert!(!keyframe_start(&[0x00, 0x00]));
        assert!(keyframe_start(&[0x10, 0x00]));
        // No ids to rewrite; L without T is not rewritten but still starts.
        let p = [0x10, 0x00];
        assert!(Descriptor::parse(&p).unwrap().ids().is_none());
        let p = [0x90, 0x40, 7, 0x00];
        let d = Descriptor::parse(&p).unwrap();
        assert!(d.keyframe_start(&p) && d.ids().is_none());
        // Cut short, or nothing after the descriptor.
        for p in [
            &[][..],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81, 0x00],
            &[0x10],
        ] {
            assert!(Descriptor::parse(p).is_none(), "{p:?}");
        }
    }
}
