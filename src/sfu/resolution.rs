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
//! Called only on keyframe starts; pure, no allocation (the H.264 SPS is
//! unescaped into a stack buffer).

use str0m::format::Codec;

/// Width and height in pixels declared by the keyframe that starts with
/// `payload`, if this codec's header says so and is well formed.
pub fn keyframe_size(codec: Codec, payload: &[u8]) -> Option<(u16, u16)> {
    let size = match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => h264(payload),
        Codec::Av1 => av1(payload),
        _ => None,
    }?;
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// MSB-first bit reader over a byte slice.
struct Bits<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(b: &'a [u8]) -> Self {
        Bits { b, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.b.get(self.pos / 8)?;
        let v = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }

    /// `n` bits (at most 32), most significant first.
    fn u(&mut self, n: u32) -> Option<u32> {
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// Exp-Golomb ue(v) (H.264), at most 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Exp-Golomb se(v) (H.264).
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let m = i64::from(k.div_ceil(2));
        Some(if k % 2 == 1 { m } else { -m } as i32)
    }

    /// uvlc() (AV1 §4.10.3).
    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }
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
    // Frame tag (3 bytes, bit 0 clear on a key frame), start code, sizes.
    let h = p.get(at..at + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let hh = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w, hh))
}

fn vp9(p: &[u8]) -> Option<(u16, u16)> {
    // Payload descriptor (RFC 9628): I P L F B E V Z.
    let b0 = *p.first()?;
    let mut at = 1;
    if b0 & 0x80 != 0 {
        at += if p.get(1)? & 0x80 != 0 { 2 } else { 1 };
    }
    if b0 & 0x20 != 0 {
        at += if b0 & 0x10 == 0 { 2 } else { 1 };
    }
    if b0 & 0x10 != 0 && b0 & 0x40 != 0 {
        // Flexible mode with P: P_DIFF bytes while N is set.
        loop {
            let d = *p.get(at)?;
            at += 1;
            if d & 0x01 == 0 {
                break;
            }
        }
    }
    if b0 & 0x02 != 0 {
        // Scalability structure: N_S(3) Y G RES(3), then WIDTH/HEIGHT per layer.
        let ss = *p.get(at)?;
        at += 1;
        if ss & 0x10 != 0 {
            let layers = usize::from(ss >> 5) + 1;
            let last = at + 4 * (layers - 1);
            let s = p.get(last..last + 4)?;
            return Some((
                u16::from_be_bytes([s[0], s[1]]),
                u16::from_be_bytes([s[2], s[3]]),
            ));
        }
        if ss & 0x08 != 0 {
            let n_g = *p.get(at)?;
            at += 1;
            for _ in 0..n_g {
                let g = *p.get(at)?;
                at += 1 + usize::from((g >> 2) & 0x03);
            }
        }
    }
    if b0 & 0x08 == 0 || b0 & 0x40 != 0 {
        return None; // not the start of a picture without inter-picture dependency
    }
    vp9_uncompressed_header(p.get(at..)?)
}

/// VP9 bitstream §6.2: frame size of a key frame.
fn vp9_uncompressed_header(h: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits::new(h);
    if r.u(2)? != 2 {
        return None; // frame_marker
    }
    let profile = r.u(1)? | (r.u(1)? << 1);
    if profile == 3 {
        r.u(1)?;
    }
    if r.flag()? {
        return None; // show_existing_frame
    }
    if r.u(1)? != 0 {
        return None; // frame_type: not a key frame
    }
    r.u(2)?; // show_frame, error_resilient_mode
    if r.u(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config
    if profile >= 2 {
        r.u(1)?; // ten_or_twelve_bit
    }
    let color_space = r.u(3)?;
    if color_space != 7 {
        r.u(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.u(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.u(1)?; // reserved_zero
    }
    let w = r.u(16)? + 1;
    let hh = r.u(16)? + 1;
    dims(w, hh)
}

const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;

fn h264(p: &[u8]) -> Option<(u16, u16)> {
    let b0 = *p.first()?;
    match b0 & 0x1f {
        NAL_SPS => h264_sps(p),
        NAL_STAP_A => {
            let mut at = 1;
            while at + 2 < p.len() {
                let len = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                at += 2;
                let nal = p.get(at..at + len)?;
                if nal.first().is_some_and(|h| h & 0x1f == NAL_SPS) {
                    return h264_sps(nal);
                }
                at += len;
            }
            None
        }
        _ => None,
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists.
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// `nal`: an SPS NAL unit, header byte included.
fn h264_sps(nal: &[u8]) -> Option<(u16, u16)> {
    // RBSP: drop emulation prevention bytes (00 00 03 -> 00 00).
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut zeros = 0;
    for &b in nal.get(1..)?.iter() {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if n == buf.len() {
            break;
        }
        buf[n] = b;
        n += 1;
    }
    let mut r = Bits::new(&buf[..n]);
    let profile_idc = r.u(8)?;
    r.u(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.u(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: skip the lists.
            let lists = if chroma_format_idc != 3 { 8 } else { 12 };
            for i in 0..lists {
                if r.flag()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256).rem_euclid(256);
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.u(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.u(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.u(1)?; // mb_adaptive_frame_field_flag
    }
    r.u(1)?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let field = if frame_mbs_only { 1 } else { 2 };
    let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
        (0, _) | (3, true) => (1, 1),
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let w = (width_mbs * 16).checked_sub((cl + cr) * sub_w)?;
    let h = (height_units * 16 * field).checked_sub((ct + cb) * sub_h * field)?;
    dims(u32::try_from(w).ok()?, u32::try_from(h).ok()?)
}

const OBU_SEQUENCE_HEADER: u8 = 1;

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
            let (len, n) = leb128(&p[at..])?;
            at += n;
            len
        } else {
            p.len() - at
        };
        let obu = p.get(at..at.checked_add(len)?)?;
        at += len;
        let h = *obu.first()?;
        let mut o = if h & 0x04 != 0 { 2 } else { 1 };
        if h & 0x02 != 0 {
            let (_, n) = leb128(obu.get(o..)?)?;
            o += n;
        }
        if (h >> 3) & 0x0f == OBU_SEQUENCE_HEADER {
            return av1_sequence_header(obu.get(o..)?);
        }
        if w != 0 && element == w {
            break;
        }
    }
    None
}

/// AV1 §5.5.1: max_frame_width_minus_1 / max_frame_height_minus_1.
fn av1_sequence_header(b: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits::new(b);
    r.u(3)?; // seq_profile
    r.u(1)?; // still_picture
    if r.flag()? {
        r.u(5)?; // reduced_still_picture_header: seq_level_idx[0]
    } else {
        let mut buffer_delay_bits = 0;
        let timing_info = r.flag()?;
        let mut decoder_model_info = false;
        if timing_info {
            r.u(32)?; // num_units_in_display_tick
            r.u(32)?; // time_scale
            if r.flag()? {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info = r.flag()?;
            if decoder_model_info {
                buffer_delay_bits = r.u(5)? + 1;
                r.u(32)?; // num_units_in_decoding_tick
                r.u(5)?; // buffer_removal_time_length_minus_1
                r.u(5)?; // frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay = r.flag()?;
        let points = r.u(5)? + 1;
        for _ in 0..points {
            r.u(12)?; // operating_point_idc
            if r.u(5)? > 7 {
                r.u(1)?; // seq_tier
            }
            if decoder_model_info && r.flag()? {
                r.u(buffer_delay_bits)?; // decoder_buffer_delay
                r.u(buffer_delay_bits)?; // encoder_buffer_delay
                r.u(1)?; // low_delay_mode_flag
            }
            if initial_display_delay && r.flag()? {
                r.u(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let wb = r.u(4)? + 1;
    let hb = r.u(4)? + 1;
    let w = r.u(wb)? + 1;
    let h = r.u(hb)? + 1;
    dims(w, h)
}

/// An unsigned LEB128 value at the start of `b` (at most 8 bytes) and its length.
fn leb128(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, x) in b.iter().take(8).enumerate() {
        v |= usize::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
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
    fn truncated_or_hostile_input_is_none() {
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
