//! Codec headers read bit by bit, shared by the core (the picture size a
//! simulcast layer's keyframes declare, AV1 OBU lengths) and the recorder
//! (the picture size in IVF headers): VP8 key frame header, VP9 uncompressed
//! header, H.264 sequence parameter set, AV1 sequence header and `leb128()`.
//!
//! Pure functions over byte slices; nothing allocates. Each returns `None` on
//! input it cannot read.

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

/// VP8 keyframe: 3-byte frame tag (bit 0 clear), start code `9d 01 2a`, 14-bit width and height.
pub fn vp8_key_size(f: &[u8]) -> Option<(u32, u32)> {
    if f.len() < 10 || f[0] & 1 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([f[6], f[7]]) & 0x3fff;
    let h = u16::from_le_bytes([f[8], f[9]]) & 0x3fff;
    Some((w as u32, h as u32))
}

/// VP9 uncompressed header of a keyframe (first frame of a superframe):
/// its frame size.
pub fn vp9_key_size(f: &[u8]) -> Option<(u32, u32)> {
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

/// Profiles whose SPS carries chroma format, bit depths and scaling lists.
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// H.264 sequence parameter set (`nal`: the NAL unit, header byte included):
/// the picture size, cropping applied.
pub fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
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
    let profile_idc = r.read(8)?;
    r.read(16)?; // constraint flags, level_idc
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
        r.read(1)?; // qpprime_y_zero_transform_bypass_flag
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
            r.read(1)?; // delta_pic_order_always_zero_flag
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
    r.read(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.read(1)?; // mb_adaptive_frame_field_flag
    }
    r.read(1)?; // direct_8x8_inference_flag
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
    Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?))
}

/// Read an AV1 `leb128()`: `(value, bytes used)`.
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

/// AV1 sequence header OBU payload: max_frame_{width,height}.
pub fn av1_sequence_header_size(b: &[u8]) -> Option<(u32, u32)> {
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
