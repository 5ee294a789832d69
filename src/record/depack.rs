//! Frame depacketizers: the in-order RTP payloads of one frame (same
//! timestamp, no sequence gap) in, the codec's frame bytes out.
//!
//! VP8 and H.264 use str0m's `unversioned` depacketizers; VP9 (RFC 9628) and
//! AV1 (AV1 RTP specification §4) are reassembled here from the descriptor
//! and OBU elements [`crate::codec`] reads. Every function is total: hostile
//! input yields an error, never a panic.

use str0m::format::CodecExtra;
use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

use crate::codec::av1::{self, ObuHeader, AGG_Y, AGG_Z};
use crate::codec::{h264, vp8, vp9};

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

/// Whether the frame whose payloads are `pkts` is a keyframe: its first
/// packet is a keyframe start ([`crate::codec::keyframe_start`]), or, for
/// H.264, one of its packets carries an IDR.
pub fn is_keyframe(codec: VideoCodec, pkts: &[&[u8]]) -> bool {
    let Some(first) = pkts.first() else {
        return false;
    };
    match codec {
        VideoCodec::Vp8 => vp8::keyframe_start(first),
        VideoCodec::Vp9 => vp9::keyframe_start(first),
        VideoCodec::Av1 => av1::keyframe_start(first),
        VideoCodec::H264 => pkts.iter().any(|p| h264::has_idr(p)),
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
    run(&mut d, pkts, 0)
}

fn h264(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut d = H264Depacketizer::default();
    d.is_avc = true;
    if !d.is_partition_head(pkts[0]) {
        return Err(DepackError::Malformed);
    }
    run(&mut d, pkts, 8)
}

/// Feed `pkts` to one of str0m's depacketizers; `grow`: bytes the output
/// may add per packet (AVC length prefixes).
fn run(d: &mut impl Depacketizer, pkts: &[&[u8]], grow: usize) -> Result<Vec<u8>, DepackError> {
    let mut out = Vec::with_capacity(pkts.iter().map(|p| p.len() + grow).sum());
    let mut extra = CodecExtra::None;
    for p in pkts {
        d.depacketize(p, &mut out, &mut extra)
            .map_err(|_| DepackError::Malformed)?;
    }
    Ok(out)
}

fn vp9(pkts: &[&[u8]]) -> Result<Vec<u8>, DepackError> {
    let mut layers: Vec<Vec<u8>> = Vec::new();
    let mut open = false;
    for p in pkts {
        let d = vp9::Descriptor::parse(p).ok_or(DepackError::Malformed)?;
        let at = d.frame_offset().ok_or(DepackError::Malformed)?;
        if d.begin() {
            layers.push(Vec::new());
            open = true;
        } else if !open {
            return Err(DepackError::Malformed);
        }
        if let Some(cur) = layers.last_mut() {
            cur.extend_from_slice(&p[at..]);
        }
        if d.end() {
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

/// Write one complete OBU with `obu_has_size_field` set; drops temporal
/// delimiters, tile lists and padding.
fn put_obu(out: &mut Vec<u8>, obu: &[u8]) -> Result<(), DepackError> {
    let h = ObuHeader::parse(obu).ok_or(DepackError::Malformed)?;
    if h.byte & 0x80 != 0 {
        return Err(DepackError::Malformed); // forbidden bit
    }
    let payload = h.payload(obu).ok_or(DepackError::Malformed)?;
    if matches!(
        h.obu_type(),
        av1::OBU_TEMPORAL_DELIMITER | av1::OBU_TILE_LIST | av1::OBU_PADDING
    ) {
        return Ok(());
    }
    out.push(h.byte | 0x02);
    out.extend(h.ext);
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
        let (z, y) = (agg & AGG_Z != 0, agg & AGG_Y != 0);
        let mut elements = av1::elements(p);
        while let Some(elem) = elements.next() {
            let elem = elem.ok_or(DepackError::Malformed)?;
            let first = elements.count_so_far() == 1;
            let last = elements.at_end();
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
        }
        if z && elements.count_so_far() == 0 {
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
        // Four chained P_DIFFs: no frame bytes to find.
        let pdiff: &[u8] = &[0xd8, 0x01, 0x01, 0x01, 0x01, 0x00];
        assert!(depacketize(VideoCodec::Vp9, &[pdiff], MAX).is_err());
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
                    let _ = vp9::Descriptor::parse(t);
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
