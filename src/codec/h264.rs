//! H.264 (RFC 6184): NAL unit types, the NAL units a packet carries,
//! keyframe starts, and the picture size in a sequence parameter set
//! (ITU-T H.264 §7.3.2.1.1).

use super::bits::Bits;

/// NAL unit types.
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_STAP_A: u8 = 24;
pub const NAL_FU_A: u8 = 28;

/// The type of a NAL unit (or RTP payload) whose header byte is `b0`.
pub fn nal_type(b0: u8) -> u8 {
    b0 & 0x1f
}

/// The whole NAL units of one RTP payload: the payload itself (single NAL
/// unit packet, types 1–23) or the units of a STAP-A, up to the first that
/// is empty or does not fit. Other packets (FU-A, ...) carry none whole.
pub fn whole_nal_units(p: &[u8]) -> NalUnits<'_> {
    let (at, single) = match p.first().map(|&b| nal_type(b)) {
        Some(1..=23) => (0, true),
        Some(NAL_STAP_A) => (1, false),
        _ => (p.len(), false),
    };
    NalUnits { p, at, single }
}

/// See [`whole_nal_units`].
pub struct NalUnits<'a> {
    p: &'a [u8],
    at: usize,
    single: bool,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if std::mem::take(&mut self.single) {
            self.at = self.p.len();
            return Some(self.p);
        }
        let p = self.p;
        if self.at + 2 >= p.len() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([p[self.at], p[self.at + 1]]));
        let start = self.at + 2;
        let nal = p.get(start..start + len).filter(|n| !n.is_empty());
        self.at = if nal.is_some() { start + len } else { p.len() };
        nal
    }
}

/// The type of the NAL unit whose first fragment `p` is (FU-A, S set).
pub fn fu_a_start(p: &[u8]) -> Option<u8> {
    match p {
        [b0, fu, ..] if nal_type(*b0) == NAL_FU_A && fu & 0x80 != 0 => Some(nal_type(*fu)),
        _ => None,
    }
}

/// Whether `p` is where a decoder may start: a packet carrying an SPS
/// (single NAL or STAP-A), which leads a keyframe's access unit; or an IDR
/// (single, STAP-A, FU-A start) that starts its access unit (`au_start`: no
/// earlier packet with its timestamp was seen). An IDR after an SPS/PPS
/// packet of the same access unit is no start: the decoder would miss the
/// new parameter sets.
pub fn keyframe_start(p: &[u8], au_start: bool) -> bool {
    let (mut sps, mut idr) = (false, fu_a_start(p) == Some(NAL_IDR));
    for nal in whole_nal_units(p) {
        match nal_type(nal[0]) {
            NAL_SPS => sps = true,
            NAL_IDR => idr = true,
            _ => {}
        }
    }
    sps || (idr && au_start)
}

/// Whether `p` carries an IDR slice, or starts one (FU-A).
pub fn has_idr(p: &[u8]) -> bool {
    fu_a_start(p) == Some(NAL_IDR) || whole_nal_units(p).any(|n| nal_type(n[0]) == NAL_IDR)
}

/// The picture size in the first SPS `p` carries whole.
pub fn keyframe_size(p: &[u8]) -> Option<(u32, u32)> {
    let sps = whole_nal_units(p).find(|n| nal_type(n[0]) == NAL_SPS)?;
    sps_size(sps)
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists.
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// H.264 sequence parameter set (`nal`: the NAL unit, header byte included):
/// the picture size, cropping applied. Reads at most 256 RBSP bytes.
pub fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
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
                            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1);
                            // anything else is a corrupt SPS (and would
                            // overflow the sum: found by the fuzzer).
                            let delta = r.se()?;
                            if !(-128..=127).contains(&delta) {
                                return None;
                            }
                            next = (last + delta + 256).rem_euclid(256);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::keyframe_size;
    use crate::codec::tests::{hex, length_prefixed};
    use str0m::format::Codec;

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        length_prefixed(&[0x78], 2, nals)
    }

    #[test]
    fn keyframe_starts_with_the_parameter_sets() {
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f];
        let pps: &[u8] = &[0x68, 0xce];
        let idr: &[u8] = &[0x65, 0x88];
        // STAP-A with SPS/PPS (IDR following), or with the IDR too.
        assert!(keyframe_start(&stap(&[sps, pps]), true));
        assert!(keyframe_start(&stap(&[sps, pps, idr]), false));
        // A single SPS.
        assert!(keyframe_start(sps, false));
        // An IDR starts only its own access unit.
        assert!(keyframe_start(idr, true));
        assert!(!keyframe_start(idr, false));
        assert!(keyframe_start(&[0x7c, 0x85, 0x88], true));
        assert!(!keyframe_start(&[0x7c, 0x85, 0x88], false));
        // FU-A middle of an IDR, PPS alone, non-IDR slices.
        assert!(!keyframe_start(&[0x7c, 0x05, 0x88], true));
        assert!(!keyframe_start(pps, true));
        assert!(!keyframe_start(&[0x41, 0x9a], true));
        assert!(!keyframe_start(&[0x5c, 0x81, 0x9a], true));
        // Truncated STAP-A.
        assert!(!keyframe_start(&[0x78, 0x00, 0x09, 0x67], true));
        assert!(!keyframe_start(&[], true));
    }

    #[test]
    fn nal_units_and_idr() {
        let sps: &[u8] = &[0x67, 0x42];
        let idr: &[u8] = &[0x65, 0x88];
        let p = stap(&[sps, idr]);
        assert_eq!(whole_nal_units(&p).collect::<Vec<_>>(), [sps, idr]);
        assert_eq!(whole_nal_units(idr).collect::<Vec<_>>(), [idr]);
        assert_eq!(whole_nal_units(&[0x7c, 0x85, 0x88]).count(), 0);
        // An empty unit, or one past the end, ends the walk.
        assert_eq!(whole_nal_units(&[0x78, 0, 0, 0, 1, 0x65]).count(), 0);
        assert_eq!(
            whole_nal_units(&[0x78, 0, 2, 0x67, 0x42, 0, 9, 0x65]).count(),
            1
        );
        assert!(has_idr(&p) && has_idr(idr) && has_idr(&[0x7c, 0x85, 0x88]));
        assert!(!has_idr(sps) && !has_idr(&[0x7c, 0x05, 0x88]) && !has_idr(&[]));
    }

    #[test]
    fn sps_with_an_out_of_range_scaling_delta_is_refused() {
        // High profile, scaling list 0 present, first delta_scale = 2^31 - 1:
        // the sum overflowed before (found by the `recording` fuzz target).
        assert_eq!(sps_size(&hex("67640028ad80000000fffffffe80")), None);
    }

    #[test]
    fn sps_sizes_with_cropping() {
        // High profile 1920x1080 (1088 coded, 8 lines cropped).
        let sps = hex("67640028acd940780227e5c044000003000400000300f03c60c658");
        assert_eq!(keyframe_size(Codec::H264, &sps), Some((1920, 1080)));
        // Constrained baseline 320x180 (192 coded).
        let sps = hex("6742c00dd901419f9f0110000003001000000303c0f142a480");
        assert_eq!(keyframe_size(Codec::H264, &sps), Some((320, 180)));
        // The same SPS in a STAP-A with a PPS.
        let mut p = stap(&[&sps]);
        p.extend_from_slice(&[0x00, 0x04, 0x68, 0xce, 0x3c, 0x80]);
        assert_eq!(keyframe_size(Codec::H264, &p), Some((320, 180)));
        // An IDR slice carries no size.
        assert_eq!(keyframe_size(Codec::H264, &[0x65, 0x88, 0x84]), None);
        // An SPS whose ue(v) runs past 32 leading zeros.
        assert_eq!(
            keyframe_size(Codec::H264, &[0x67, 0x42, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
