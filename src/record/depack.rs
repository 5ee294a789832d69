//! Frame depacketizers: the in-order RTP payloads of one frame (same
//! timestamp, no sequence gap) in, the codec's frame bytes out.
//!
//! VP8 and H.264 use str0m's `unversioned` depacketizers; VP9 (RFC 9628) and
//! AV1 (AV1 RTP specification §4) are parsed here. Every function is total:
//! hostile input yields an error, never a panic.

use str0m::format::{
    detect_av1_keyframe, detect_h264_keyframe, detect_vp8_keyframe, detect_vp9_keyframe, CodecExtra,
};
use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

use crate::bitstream::leb128;

/// The video codecs the recorder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 → IVF.
    Vp8,
    /// VP9 → IVF.
    Vp9,
    /// AV1 → IVF.
    Av1,
    /// H.264 → Annex-B (frames come out AVC length-prefixed).
    H264,
}

/// Why a frame could not be depacketized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepackError {
    /// Truncated or inconsistent payload headers, or a frame not starting at its head.
    Malformed,
    /// Larger than the configured limit.
    TooLarge,
}

/// One depacketized frame.
#[derive(Debug)]
pub struct Frame {
    /// Codec frame (VP8/VP9 frame, AV1 temporal unit, H.264 AVC access unit).
    pub data: Vec<u8>,
    /// A keyframe: decoding can start here.
    pub keyframe: bool,
}

/// Whether the frame whose payloads are `pkts` starts a keyframe.
pub fn is_keyframe(codec: VideoCodec, pkts: &[&[u8]]) -> bool {
    let Some(first) = pkts.first() else {
        return false;
    };
    match codec {
        VideoCodec::Vp8 => detect_vp8_keyframe(first),
        // P = 0 and B = 1 (start of a frame).
        VideoCodec::Vp9 => detect_vp9_keyframe(first) && first[0] & 0x08 != 0,
        VideoCodec::Av1 => detect_av1_keyframe(first) && first[0] & 0x80 == 0,
        VideoCodec::H264 => pkts.iter().any(|p| detect_h264_keyframe(p)),
    }
}

/// Depacketize one whole frame; `max` bounds the payload bytes accepted.
pub fn depacketize(codec: VideoCodec, pkts: &[&[u8]], max: usize) -> Result<Frame, DepackError> {
    let total: usize = pkts.iter().map(|p| p.len()).sum();
    if total > max {
        return Err(DepackError::TooLarge);
    }
    if pkts.is_empty() {
        return Err(DepackError::Malformed);
    }
    let keyframe = is_keyframe(codec, pkts);
    let data = match codec {
        VideoCodec::Vp8 => vp8(pkts)?,
        VideoCodec::H264 => h264(pkts)?,
        VideoCodec::Vp9 => vp9(pkts)?,
        VideoCodec::Av1 => av1(pkts)?,
    };
    if data.is_empty() {
        return Err(DepackError::Malformed);
    }
    Ok(Frame { data, keyframe })
}

fn vp8(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut d = Vp8Depacketizer::default();
    // S = 1 and PID = 0 on the first packet.
    if !d.is_partition_head(pkts[0]) || pkts[0][0] & 0x07 != 0 {
        return Err(DepackError::Malformed);
    }
    let mut out = Vec::with_capacity(pkts.iter().map(|p| p.len()).sum());
    let mut extra = CodecExtra::None;
    for p in pkts {
        d.depacketize(p, &mut out, &mut extra)
            .map_err(|_| DepackError::Malformed)?;
    }
    Ok(out)
}

fn h264(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut d = H264Depacketizer::default();
    d.is_avc = true;
    if !d.is_partition_head(pkts[0]) {
        return Err(DepackError::Malformed);
    }
    let mut out = Vec::with_capacity(pkts.iter().map(|p| p.len() + 8).sum());
    let mut extra = CodecExtra::None;
    for p in pkts {
        d.depacketize(p, &mut out, &mut extra)
            .map_err(|_| DepackError::Malformed)?;
    }
    Ok(out)
}

/// A parsed VP9 payload descriptor (RFC 9628 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// P: inter-picture predicted.
    pub inter: bool,
    /// B: start of a layer frame.
    pub begin: bool,
    /// E: end of a layer frame.
    pub end: bool,
    /// Picture id, if present (7 or 15 bits).
    pub picture_id: Option<u16>,
    /// Spatial layer id (0 without layer indices).
    pub sid: u8,
    /// Length of the descriptor: the frame bytes start here.
    pub len: usize,
}

/// Parse the VP9 payload descriptor; `None` if truncated or inconsistent.
pub fn vp9_descriptor(p: &[u8]) -> Option<Vp9Descriptor> {
    let b0 = *p.first()?;
    let (i, pp, l, f) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
    );
    let (begin, end, v) = (b0 & 0x08 != 0, b0 & 0x04 != 0, b0 & 0x02 != 0);
    let mut idx = 1;
    let mut next = || {
        let b = p.get(idx).copied();
        idx += 1;
        b
    };
    let picture_id = if i {
        let a = next()?;
        if a & 0x80 != 0 {
            Some((((a & 0x7f) as u16) << 8) | next()? as u16)
        } else {
            Some(a as u16)
        }
    } else {
        None
    };
    let mut sid = 0;
    if l {
        sid = (next()? >> 1) & 0x07;
        if !f {
            next()?; // TL0PICIDX
        }
    }
    if f && pp {
        // Up to three P_DIFF bytes, N bit chains them.
        let mut n = 0;
        while next()? & 0x01 != 0 {
            n += 1;
            if n == 3 {
                return None;
            }
        }
    }
    if v {
        let ss = next()?;
        let n_s = (ss >> 5) as usize + 1;
        if ss & 0x10 != 0 {
            for _ in 0..4 * n_s {
                next()?; // WIDTH, HEIGHT per spatial layer
            }
        }
        if ss & 0x08 != 0 {
            let n_g = next()?;
            for _ in 0..n_g {
                let r = (next()? >> 2) & 0x03;
                for _ in 0..r {
                    next()?; // P_DIFF
                }
            }
        }
    }
    (idx <= p.len()).then_some(Vp9Descriptor {
        inter: pp,
        begin,
        end,
        picture_id,
        sid,
        len: idx,
    })
}

fn vp9(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut layers: Vec<Vec<u8>> = Vec::new();
    let mut open = false;
    for p in pkts {
        let d = vp9_descriptor(p).ok_or(DepackError::Malformed)?;
        if d.begin {
            layers.push(Vec::new());
            open = true;
        } else if !open {
            return Err(DepackError::Malformed);
        }
        if let Some(cur) = layers.last_mut() {
            cur.extend_from_slice(&p[d.len..]);
        }
        if d.end {
            open = false;
        }
    }
    layers.retain(|l| !l.is_empty());
    match layers.len() {
        0 => Err(DepackError::Malformed),
        1 => Ok(layers.pop().unwrap_or_default()),
        n if n <= 8 => Ok(superframe(&layers)),
        _ => Err(DepackError::Malformed),
    }
}

/// Pack 2–8 spatial layer frames into one VP9 superframe (VP9 spec Annex B).
fn superframe(frames: &[Vec<u8>]) -> Vec<u8> {
    let max = frames.iter().map(|f| f.len()).max().unwrap_or(0);
    let mag = match max {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 4,
    };
    let marker = 0xc0 | ((mag as u8 - 1) << 3) | (frames.len() as u8 - 1);
    let mut out: Vec<u8> = frames.concat();
    out.push(marker);
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes()[..mag]);
    }
    out.push(marker);
    out
}

/// Append `v` as AV1 `leb128()`.
fn put_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;
const OBU_PADDING: u8 = 15;

/// Write one complete OBU with `obu_has_size_field` set; drops temporal
/// delimiters, tile lists and padding.
fn put_obu(out: &mut Vec<u8>, obu: &[u8]) -> Result<(), DepackError> {
    let h = *obu.first().ok_or(DepackError::Malformed)?;
    if h & 0x80 != 0 {
        return Err(DepackError::Malformed); // forbidden bit
    }
    let ty = (h >> 3) & 0x0f;
    let hl = 1 + ((h >> 2) & 1) as usize;
    let header = obu.get(..hl).ok_or(DepackError::Malformed)?;
    let payload = if h & 0x02 != 0 {
        let (size, n) = leb128(&obu[hl..]).ok_or(DepackError::Malformed)?;
        let size = usize::try_from(size).map_err(|_| DepackError::Malformed)?;
        let start = hl + n;
        obu.get(start..start.checked_add(size).ok_or(DepackError::Malformed)?)
            .ok_or(DepackError::Malformed)?
    } else {
        &obu[hl..]
    };
    if matches!(ty, OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING) {
        return Ok(());
    }
    out.push(header[0] | 0x02);
    out.extend_from_slice(&header[1..]);
    put_leb128(out, payload.len());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reassemble one temporal unit: a temporal delimiter, then every OBU with a size field.
fn av1(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut out = vec![0x12, 0x00];
    let mut partial: Option<Vec<u8>> = None;
    for p in pkts {
        let agg = *p.first().ok_or(DepackError::Malformed)?;
        let (z, y, w) = (agg & 0x80 != 0, agg & 0x40 != 0, (agg >> 4) & 0x03);
        let mut idx = 1;
        let mut k = 0u8;
        while idx < p.len() {
            k = k.saturating_add(1);
            let last_by_count = w != 0 && k == w;
            let size = if last_by_count {
                p.len() - idx
            } else {
                let (s, n) = leb128(&p[idx..]).ok_or(DepackError::Malformed)?;
                idx += n;
                usize::try_from(s).map_err(|_| DepackError::Malformed)?
            };
            let end = idx.checked_add(size).ok_or(DepackError::Malformed)?;
            let elem = p.get(idx..end).ok_or(DepackError::Malformed)?;
            idx = end;
            let first = k == 1;
            let last = last_by_count || idx >= p.len();
            let mut obu = if first && z {
                partial.take().ok_or(DepackError::Malformed)?
            } else {
                if partial.is_some() {
                    return Err(DepackError::Malformed); // continuation missing
                }
                Vec::new()
            };
            obu.extend_from_slice(elem);
            if last && y {
                partial = Some(obu);
            } else if !obu.is_empty() {
                put_obu(&mut out, &obu)?;
            }
            if last_by_count {
                break;
            }
        }
        if z && k == 0 {
            return Err(DepackError::Malformed);
        }
    }
    if partial.is_some() || out.len() == 2 {
        return Err(DepackError::Malformed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn vp8_frame() {
        // X=0, S=1, PID=0 then a keyframe tag; second packet S=0.
        let a: &[u8] = &[0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let b: &[u8] = &[0x00, 0x40, 0x01, 0xf0];
        let f = depacketize(VideoCodec::Vp8, &[a, b], MAX).unwrap();
        assert!(f.keyframe);
        assert_eq!(
            f.data,
            vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0]
        );
        // Not starting at the head.
        assert_eq!(
            depacketize(VideoCodec::Vp8, &[b], MAX).unwrap_err(),
            DepackError::Malformed
        );
        assert_eq!(
            depacketize(VideoCodec::Vp8, &[a, b], 4).unwrap_err(),
            DepackError::TooLarge
        );
    }

    #[test]
    fn h264_stap_and_fua() {
        // STAP-A with SPS and PPS, then FU-A start/end of an IDR.
        let stap: &[u8] = &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        let fu1: &[u8] = &[0x7c, 0x85, 0xaa, 0xbb];
        let fu2: &[u8] = &[0x7c, 0x45, 0xcc];
        let f = depacketize(VideoCodec::H264, &[stap, fu1, fu2], MAX).unwrap();
        assert!(f.keyframe);
        let nals = super::super::annexb::split_avc(&f.data).unwrap();
        assert_eq!(
            nals,
            vec![&[0x67, 0x42][..], &[0x68, 0xce], &[0x65, 0xaa, 0xbb, 0xcc]]
        );
    }

    #[test]
    fn vp9_descriptor_fields() {
        // I P L F B E V Z = 1 1 1 1 1 0 0 0; 15-bit picture id; layer byte; 2 P_DIFF.
        let p = [0xf8, 0x81, 0x23, 0x02, 0x03, 0x04, 0xaa];
        let d = vp9_descriptor(&p).unwrap();
        assert_eq!(d.picture_id, Some(0x0123));
        assert_eq!(d.sid, 1);
        assert!(d.inter && d.begin && !d.end);
        assert_eq!(d.len, 6);
        // Non-flexible keyframe with scalability structure (1 layer, Y, G with 1 entry R=1).
        let ss = [
            0x8e, 0x05, 0x18, 0x01, 0x40, 0x00, 0xf0, 0x01, 0x04, 0x01, 0x82, 0x49,
        ];
        let d = vp9_descriptor(&ss).unwrap();
        assert!(!d.inter && d.begin && d.end);
        assert_eq!(d.len, 10);
        // Four chained P_DIFFs is an error.
        assert!(vp9_descriptor(&[0xd0, 0x01, 0x01, 0x01, 0x01]).is_none());
    }

    #[test]
    fn vp9_frames_and_superframe() {
        let a: &[u8] = &[0x08, 0x82, 0x49]; // B, keyframe
        let b: &[u8] = &[0x04, 0x83]; // E
        let f = depacketize(VideoCodec::Vp9, &[a, b], MAX).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0x82, 0x49, 0x83]);
        // Two spatial layers in one picture → superframe with index.
        let l0: &[u8] = &[0x2c, 0x00, 0x00, 0x11];
        let l1: &[u8] = &[0x2c, 0x02, 0x00, 0x22, 0x33];
        let f = depacketize(VideoCodec::Vp9, &[l0, l1], MAX).unwrap();
        assert_eq!(f.data, vec![0x11, 0x22, 0x33, 0xc1, 1, 2, 0xc1]);
        // Middle packet first.
        assert!(depacketize(VideoCodec::Vp9, &[b], MAX).is_err());
    }

    #[test]
    fn av1_aggregation_and_fragments() {
        // Packet 1: N=1, W=2: seq header (with length), then the start of a frame OBU (Y=1).
        let p1: &[u8] = &[0x68, 3, 0x08, 0xaa, 0xbb, 0x30, 0x01, 0x02];
        // Packet 2: Z=1, W=1: rest of the frame OBU.
        let p2: &[u8] = &[0x90, 0x03, 0x04];
        let f = depacketize(VideoCodec::Av1, &[p1, p2], MAX).unwrap();
        assert!(f.keyframe);
        assert_eq!(
            f.data,
            vec![0x12, 0x00, 0x0a, 2, 0xaa, 0xbb, 0x32, 4, 0x01, 0x02, 0x03, 0x04]
        );
        // A temporal delimiter in the payload is dropped; W=0 with lengths.
        let p: &[u8] = &[0x00, 1, 0x10, 2, 0x30, 0x09];
        let f = depacketize(VideoCodec::Av1, &[p], MAX).unwrap();
        assert_eq!(f.data, vec![0x12, 0x00, 0x32, 1, 0x09]);
        // A continuation with nothing to continue.
        assert!(depacketize(VideoCodec::Av1, &[p2], MAX).is_err());
        // An OBU left open at the end of the frame.
        assert!(depacketize(VideoCodec::Av1, &[p1], MAX).is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples: [&[u8]; 6] = [
            &[0x68, 3, 0x08, 0xaa, 0xbb, 0x30, 0x01, 0x02],
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce],
            &[0x7c, 0x85, 0xaa, 0xbb],
            &[0x90, 0x10, 0x00, 0x9d, 0x01, 0x2a, 0, 1],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ];
        for codec in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::Av1,
            VideoCodec::H264,
        ] {
            for s in samples {
                for n in 0..=s.len() {
                    let t = &s[..n];
                    let _ = depacketize(codec, &[t], MAX);
                    let _ = depacketize(codec, &[s, t], MAX);
                    let _ = depacketize(codec, &[t, s, t], MAX);
                    let _ = is_keyframe(codec, &[t]);
                    let _ = vp9_descriptor(t);
                }
            }
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let pkt: Vec<u8> = (0..(x % 40))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for codec in [
                VideoCodec::Vp8,
                VideoCodec::Vp9,
                VideoCodec::Av1,
                VideoCodec::H264,
            ] {
                let _ = depacketize(codec, &[&pkt], MAX);
            }
        }
    }
}
