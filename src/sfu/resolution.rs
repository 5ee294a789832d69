//! The picture size a keyframe declares, per codec, read from the first
//! packet of the keyframe (RTP payload, descriptor included):
//!
//! - VP8: the key frame header after the start code (RFC 6386 §9.1).
//! - VP9: the scalability structure of the payload descriptor when it carries
//!   sizes (RFC 9628 §4.2.1, the largest spatial layer), else the frame size
//!   in the uncompressed header of a key frame.
//! - H.264: the sequence parameter set (single NAL unit or STAP-A), cropping
//!   applied (ITU-T H.264 §7.3.2.1.1).
//! - AV1: the sequence header OBU's maximum frame size (AV1 §5.5).
//!
//! This module finds the codec header inside the RTP payload (descriptors,
//! STAP-A, AV1 aggregation); [`crate::bitstream`] reads it. Called only on
//! keyframe starts; pure, no allocation.

use str0m::format::Codec;

use super::rewrite::{vp9_layout, NAL_SPS, NAL_STAP_A, OBU_SEQUENCE_HEADER};
use crate::bitstream;

/// Width and height in pixels.
pub type PictureSize = (u16, u16);

/// The picture size declared by the keyframe that starts with `payload`, if
/// this codec's header says so and is well formed.
pub fn keyframe_size(codec: Codec, payload: &[u8]) -> Option<PictureSize> {
    let size = match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
        _ => None,
    }?;
    (size.0 > 0 && size.1 > 0).then_some(size)
}

fn dims(w: u32, h: u32) -> Option<(u16, u16)> {
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

fn vp8(p: &[u8]) -> Option<(u16, u16)> {
    // Payload descriptor (RFC 7741): X R N S R PID(3), then I L T K.
    let b0 = *p.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None; // not the start of partition 0
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            at += if p.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    let (w, h) = bitstream::vp8_key_size(p.get(at..)?)?;
    dims(w, h)
}

fn vp9(p: &[u8]) -> Option<(u16, u16)> {
    let d = vp9_layout(p)?;
    if let Some(at) = d.ss {
        // Scalability structure N_S(3) Y ...: with Y, WIDTH/HEIGHT per
        // spatial layer follow; the largest (last) is the picture.
        let head = p[at];
        if head & 0x10 != 0 {
            let last = at + 1 + 4 * usize::from(head >> 5);
            let s = p.get(last..last + 4)?;
            return Some((
                u16::from_be_bytes([s[0], s[1]]),
                u16::from_be_bytes([s[2], s[3]]),
            ));
        }
    }
    if d.b0 & 0x08 == 0 || d.b0 & 0x40 != 0 {
        return None; // not the start of a picture without inter-picture dependency
    }
    let (w, h) = bitstream::vp9_key_size(p.get(d.payload..)?)?;
    dims(w, h)
}

fn h264(p: &[u8]) -> Option<(u16, u16)> {
    let b0 = *p.first()?;
    match b0 & 0x1f {
        NAL_SPS => {
            let (w, h) = bitstream::h264_sps_size(p)?;
            dims(w, h)
        }
        NAL_STAP_A => {
            let mut at = 1;
            while at + 2 < p.len() {
                let len = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                at += 2;
                let nal = p.get(at..at + len)?;
                if nal.first().is_some_and(|h| h & 0x1f == NAL_SPS) {
                    let (w, h) = bitstream::h264_sps_size(nal)?;
                    return dims(w, h);
                }
                at += len;
            }
            None
        }
        _ => None,
    }
}

fn av1(p: &[u8]) -> Option<(u16, u16)> {
    // Aggregation header Z|Y|W(2)|N|-(3) (RTP payload format for AV1 §4.4).
    let agg = *p.first()?;
    if agg & 0x80 != 0 {
        return None; // continues an OBU of the previous packet
    }
    let w = usize::from((agg >> 4) & 0x03);
    let mut at = 1;
    let mut element = 0;
    while at < p.len() {
        element += 1;
        let len = if w == 0 || element < w {
            let (len, n) = bitstream::leb128(&p[at..])?;
            at += n;
            usize::try_from(len).ok()?
        } else {
            p.len() - at
        };
        let obu = p.get(at..at.checked_add(len)?)?;
        at += len;
        let h = *obu.first()?;
        let mut o = if h & 0x04 != 0 { 2 } else { 1 };
        if h & 0x02 != 0 {
            let (_, n) = bitstream::leb128(obu.get(o..)?)?;
            o += n;
        }
        if (h >> 3) & 0x0f == OBU_SEQUENCE_HEADER {
            let (w, h) = bitstream::av1_sequence_header_size(obu.get(o..)?)?;
            return dims(w, h);
        }
        if w != 0 && element == w {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    //! Vectors from FFmpeg 5.1 encoding `testsrc` (libx264, libvpx,
    //! libvpx-vp9, libaom-av1, libsvtav1, librav1e): the SPS, the start of
    //! the first frame, or the sequence header OBU.
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn h264_sps_sizes_with_cropping() {
        // High profile 1920x1080 (1088 coded, 8 lines cropped).
        let sps = hex("67640028acd940780227e5c044000003000400000300f03c60c658");
        assert_eq!(keyframe_size(Codec::H264, &sps), Some((1920, 1080)));
        // Constrained baseline 320x180 (192 coded).
        let sps = hex("6742c00dd901419f9f0110000003001000000303c0f142a480");
        assert_eq!(keyframe_size(Codec::H264, &sps), Some((320, 180)));
        // The same SPS in a STAP-A with a PPS.
        let mut stap = vec![0x78];
        stap.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0x00, 0x04, 0x68, 0xce, 0x3c, 0x80]);
        assert_eq!(keyframe_size(Codec::H264, &stap), Some((320, 180)));
        // An IDR slice carries no size.
        assert_eq!(keyframe_size(Codec::H264, &[0x65, 0x88, 0x84]), None);
    }

    #[test]
    fn vp8_key_frame_header() {
        let frame = hex("909c009d012a800268010047");
        // Descriptor: X, S, PID 0; I with a 15-bit picture id.
        let mut p = vec![0x90, 0x80, 0x81, 0x23];
        p.extend_from_slice(&frame);
        assert_eq!(keyframe_size(Codec::Vp8, &p), Some((640, 360)));
        // A short descriptor works too; a delta frame has no size.
        let mut p = vec![0x10];
        p.extend_from_slice(&frame);
        assert_eq!(keyframe_size(Codec::Vp8, &p), Some((640, 360)));
        p[1] |= 1;
        assert_eq!(keyframe_size(Codec::Vp8, &p), None);
    }

    #[test]
    fn vp9_uncompressed_header_and_scalability_structure() {
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

    #[test]
    fn av1_sequence_header_obu() {
        // Aggregation header W=1 (one OBU, no length), then the OBU with its size field.
        for (obu, size) in [
            ("0a0b0000002d4cffb3ccaf9004", (1280, 720)), // libaom 4:2:0
            ("0a0b0000000cc4ff673efe4010", (640, 360)),  // SVT-AV1
            ("0a0d20000004 3cfeccdaf92021a004", (320, 180)), // libaom 4:4:4
            ("0a0e000000faa67fd9e210ac8101010a", (1280, 720)), // rav1e
        ] {
            let mut p = vec![0x18];
            p.extend_from_slice(&hex(&obu.replace(' ', "")));
            assert_eq!(keyframe_size(Codec::Av1, &p), Some(size), "{obu}");
        }
        // A temporal delimiter then the sequence header, W=2.
        let mut p = vec![0x28, 0x02, 0x12, 0x00];
        p.extend_from_slice(&hex("0a0b0000002d4cffb3ccaf9004"));
        assert_eq!(keyframe_size(Codec::Av1, &p), Some((1280, 720)));
    }

    #[test]
    fn truncated_or_hostile_input_never_panics() {
        for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            assert_eq!(keyframe_size(codec, &[]), None);
            for b in 0..=255u8 {
                let _ = keyframe_size(codec, &[b]);
                let _ = keyframe_size(codec, &[b, 0xff, 0xff, 0xff]);
                let _ = keyframe_size(codec, &[b, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
        // An SPS whose ue(v) runs past 32 leading zeros.
        assert_eq!(
            keyframe_size(Codec::H264, &[0x67, 0x42, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
