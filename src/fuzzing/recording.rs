//! Fuzz body: the recorder's pure parts on hostile RTP payloads (and the
//! forwarding path's keyframe and picture-size readers on the same payloads).
//!
//! The tape picks a codec and a sequence of packets (seq step, marker, payload);
//! they go through the reorder window, every released run of packets through
//! the depacketizer, and every frame into the matching writer over an
//! in-memory file. Invariants: no panic; the window never holds more than its
//! bound; the writers' counters only grow; a finished IVF file has a 32-byte
//! header and its frame count equals the frames written.

use std::io::Cursor;
use std::sync::Arc;

use str0m::format::Codec;

use super::Tape;
use crate::codec;
use crate::record::annexb::AnnexBWriter;
use crate::record::depack::{depacketize, VideoCodec};
use crate::record::ivf::{Fourcc, IvfWriter};
use crate::record::ogg::OggOpusWriter;
use crate::record::reorder::{Out, Pkt, Reorder};

/// Largest frame the fuzz body lets the depacketizer build.
const MAX_FRAME: usize = 1 << 20;
/// Reorder window bounds used here (packets, RTP ticks).
const WINDOW: usize = 16;

/// Run one input.
pub fn recording(data: &[u8]) {
    let mut t = Tape(data);
    let which = t.byte() % 5;
    let mut reorder = Reorder::new(WINDOW, 90_000);
    let mut out = Vec::new();
    let mut frame: Vec<Arc<[u8]>> = Vec::new();
    let mut seq = 1000u64;
    let mut ts = 0u32;
    let codec = match which {
        0 => Some(VideoCodec::Vp8),
        1 => Some(VideoCodec::Vp9),
        2 => Some(VideoCodec::Av1),
        3 => Some(VideoCodec::H264),
        _ => None, // Opus
    };
    let fourcc = match codec {
        Some(VideoCodec::Vp9) => Fourcc::Vp9,
        Some(VideoCodec::Av1) => Fourcc::Av1,
        _ => Fourcc::Vp8,
    };
    let mut ivf = IvfWriter::new(Cursor::new(Vec::new()), fourcc, 90_000).expect("in memory");
    let mut annexb = AnnexBWriter::new(Vec::new());
    let mut ogg = OggOpusWriter::new(Vec::new(), 1, 1 + t.byte() % 2).expect("in memory");
    let mut written = 0u32;
    for _ in 0..256 {
        let op = t.byte();
        if op == 0 && t.0.is_empty() {
            break;
        }
        // Sequence: mostly in order, sometimes back, sometimes a jump.
        seq = match op % 8 {
            0 => seq.saturating_sub(u64::from(t.byte() % 8)),
            1 => seq + u64::from(t.byte()),
            _ => seq + 1,
        };
        ts = ts.wrapping_add(u32::from(t.byte()) * 300);
        let len = usize::from(t.byte()) * 4;
        let payload: Arc<[u8]> = t.take(len).into();
        // The forwarding path's per-codec readers see the same hostile
        // payloads: the one parse per packet (keyframe start, the picture
        // size it declares, picture ids), and the single-purpose readers,
        // which must agree with it.
        for c in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            let au_start = op & 0x40 != 0;
            let info = codec::parse(c, &payload, au_start);
            assert_eq!(info.keyframe, codec::keyframe_start(c, &payload, au_start));
            if let Some((w, h)) = codec::keyframe_size(c, &payload) {
                assert!(w > 0 && h > 0, "a size of zero reported");
            }
            if let Some((w, h)) = info.size {
                assert!(info.keyframe && w > 0 && h > 0, "a size off a keyframe");
            }
            if let Some(ids) = info.vp8 {
                let _ = ids.vp8_patch(&payload, ids.picture_id.map(|p| p ^ 1), ids.tl0);
            }
            if let Some(ids) = info.vp9 {
                let mut copy = payload.to_vec();
                ids.write(&mut copy, ids.picture_id.map(|p| p ^ 1), ids.tl0);
                assert_eq!(copy.len(), payload.len());
            }
        }
        let marker = op & 0x80 != 0;
        reorder.push(
            Pkt {
                seq,
                ts,
                marker,
                payload,
            },
            &mut out,
        );
        assert!(reorder.buffered() <= WINDOW + 1, "window over its bound");
        for o in out.drain(..) {
            match o {
                Out::Gap => frame.clear(),
                Out::Packet(p) => match codec {
                    None => {
                        let _ = ogg.write_packet(&p.payload, p.ts);
                    }
                    Some(c) => {
                        frame.push(p.payload.clone());
                        if p.marker || frame.len() > 64 {
                            let pkts: Vec<&[u8]> = frame.iter().map(|x| &x[..]).collect();
                            if let Ok(f) = depacketize(c, &pkts, MAX_FRAME) {
                                assert!(f.data.len() <= MAX_FRAME);
                                if c == VideoCodec::H264 {
                                    let _ = annexb.write_access_unit(&f.data);
                                } else if ivf.write_frame(&f.data, u64::from(p.ts)).is_ok() {
                                    written += 1;
                                }
                            }
                            frame.clear();
                        }
                    }
                },
            }
        }
    }
    assert_eq!(ivf.frames(), written);
    let file = ivf.finish().expect("in memory").into_inner();
    assert!(file.len() >= 32 && &file[..4] == b"DKIF");
    assert_eq!(
        u32::from_le_bytes(file[24..28].try_into().unwrap()),
        written
    );
    let _ = annexb.finish();
    let _ = ogg.finish();
}
