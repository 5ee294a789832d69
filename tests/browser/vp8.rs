//! VP8 payloads (RFC 7741): the payload descriptor's picture ID and a
//! keyframe's size, read and rewritten in place.

/// Offset of the VP8 payload after the payload descriptor, and the picture ID's
/// position and width in bits (7 or 15), if present.
fn vp8_descriptor(p: &[u8]) -> Option<(usize, Option<(usize, u8)>)> {
    let b0 = *p.first()?;
    let mut i = 1;
    let mut pic = None;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            let wide = *p.get(i)? & 0x80 != 0;
            pic = Some((i, if wide { 15 } else { 7 }));
            i += if wide { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    (i < p.len()).then_some((i, pic))
}

/// If this packet starts a VP8 keyframe, its width and height.
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    let (i, _) = vp8_descriptor(p)?;
    let starts_partition = p[0] & 0x10 != 0 && p[0] & 0x07 == 0;
    let h = &p[i..];
    if !starts_partition || h.len() < 10 || h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let hh = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w, hh))
}

/// The VP8 picture ID, if the descriptor has one.
pub fn vp8_picture_id(p: &[u8]) -> Option<u16> {
    let (at, bits) = vp8_descriptor(p)?.1?;
    Some(if bits == 15 {
        u16::from_be_bytes([p[at] & 0x7f, p[at + 1]])
    } else {
        u16::from(p[at] & 0x7f)
    })
}

/// Add `delta` to the VP8 picture ID (modulo its width), in place.
pub fn vp8_shift_picture_id(p: &mut [u8], delta: u16) {
    let Some((_, Some((at, bits)))) = vp8_descriptor(p) else {
        return;
    };
    if bits == 15 {
        let id = u16::from_be_bytes([p[at] & 0x7f, p[at + 1]]).wrapping_add(delta) & 0x7fff;
        let [hi, lo] = id.to_be_bytes();
        p[at] = 0x80 | hi;
        p[at + 1] = lo;
    } else {
        p[at] = (p[at].wrapping_add(delta as u8)) & 0x7f;
    }
}
