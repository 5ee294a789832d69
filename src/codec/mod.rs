//! What a codec's RTP payload looks like, known in one place: per codec, the
//! payload descriptor (VP8, VP9), the NAL units (H.264) or OBU elements
//! (AV1), where a decoder may start (keyframe starts), the picture size a
//! keyframe declares, and the VP8/VP9 picture id / TL0PICIDX rewrite.
//!
//! - [`vp8`]: RFC 7741 descriptor, key frame header (RFC 6386 §9.1).
//! - [`vp9`]: RFC 9628 descriptor, scalability structure, uncompressed header.
//! - [`h264`]: RFC 6184 single NAL / STAP-A / FU-A, sequence parameter set.
//! - [`av1`]: aggregation header, OBU headers, sequence header.
//! - [`bits`]: the bit reader, Exp-Golomb and `leb128()` they share.
//!
//! Users: the forwarder in [`crate::sfu`] (one [`parse`] per video packet)
//! and the recorder ([`crate::record`]: keyframes of a frame, the VP9
//! descriptor and AV1 elements when depacketizing, picture sizes for IVF).
//! Everything here is pure and allocation-free; hostile input yields
//! `None`/`false`, never a panic.
//!
//! # The forwarder's call
//!
//! Once per video packet, before the fan-out:
//!
//! ```text
//! let info = codec::parse(codec, &pkt.payload, au_start);
//! ```
//!
//! `au_start`: no earlier packet with this timestamp was seen on the layer
//! (only H.264 uses it). The [`PayloadInfo`] it returns is `Copy` and is
//! reused for every viewer:
//!
//! - `info.keyframe`: a decoder may start here (gates viewers, layer switches);
//! - `info.size`: the picture size the keyframe declares (only on keyframes);
//! - `info.vp8`: VP8 picture id / TL0PICIDX; per viewer,
//!   [`PictureIds::rewrite`] gives the new values when they change, and
//!   `ids.vp8_patch(payload, pid, tl0)` str0m's `Vp8Patch` for
//!   `RtpWrite::vp8_patch`;
//! - `info.vp9`: VP9 picture id / TL0PICIDX; per viewer, map them likewise
//!   and `ids.write(copy, pid, tl0)` rewrites a copy of the payload.
//!
//! The payload's descriptor is walked once. Only for a viewer whose VP8 ids
//! change does str0m read the descriptor again: str0m builds its `Vp8Patch`
//! only from its own `Vp8Descriptor`, and keeping that (80 bytes) in every
//! packet's facts would cost more than the rare re-read.

use str0m::format::Codec;

pub mod av1;
pub mod bits;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// Width and height in pixels.
pub type PictureSize = (u16, u16);

/// One video packet's payload facts, worked out by [`parse`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PayloadInfo {
    /// Where a decoder may start: the first packet of a keyframe (see
    /// [`keyframe_start`]).
    pub keyframe: bool,
    /// The picture size the keyframe declares, if its header says (only when
    /// `keyframe`).
    pub size: Option<PictureSize>,
    /// VP8 picture id / TL0PICIDX, when the descriptor has either.
    pub vp8: Option<Ids>,
    /// VP9 picture id / TL0PICIDX, when the descriptor has either.
    pub vp9: Option<Ids>,
}

/// The facts of one video packet's `payload`, in one walk (see the module
/// docs). `au_start`: the packet is the first of its access unit on its
/// layer; only H.264 needs it.
pub fn parse(codec: Codec, payload: &[u8], au_start: bool) -> PayloadInfo {
    let mut info = PayloadInfo::default();
    let (keyframe, size) = match codec {
        Codec::Vp8 => {
            let Some(d) = vp8::Descriptor::parse(payload) else {
                return info;
            };
            info.vp8 = d.ids();
            sized(d.keyframe_start(payload), || d.keyframe_size(payload))
        }
        Codec::Vp9 => {
            let Some(d) = vp9::Descriptor::parse(payload) else {
                return info;
            };
            info.vp9 = d.ids();
            sized(d.keyframe_start(payload), || d.keyframe_size(payload))
        }
        Codec::H264 => sized(h264::keyframe_start(payload, au_start), || {
            h264::keyframe_size(payload)
        }),
        Codec::H265 => (str0m::format::detect_h265_keyframe(payload), None),
        Codec::Av1 => sized(av1::keyframe_start(payload), || av1::keyframe_size(payload)),
        // No detector: every packet is decodable (no gating).
        _ => (true, None),
    };
    info.keyframe = keyframe;
    info.size = size.and_then(picture_size);
    info
}

/// `keyframe`, and the picture size it declares: read only on a keyframe.
fn sized(keyframe: bool, size: impl FnOnce() -> Option<(u32, u32)>) -> (bool, Option<(u32, u32)>) {
    (keyframe, if keyframe { size() } else { None })
}

/// Whether `payload` is where a decoder may start `codec`: the first packet
/// of a keyframe. `au_start` says the packet is the first of its access unit
/// on its layer (no earlier packet with its timestamp was seen); only H.264
/// needs it. Codecs without a detector are always decodable (no gating).
///
/// - VP8: S set, partition 0, key frame in the payload header.
/// - VP9: B set, P clear, spatial layer 0 without inter-layer dependency,
///   and the frame header, when present, says key frame.
/// - H.264: a packet carrying an SPS, or an IDR that starts its access unit.
/// - AV1: the N bit, or a sequence header OBU leading a shown key frame.
pub fn keyframe_start(codec: Codec, payload: &[u8], au_start: bool) -> bool {
    match codec {
        Codec::Vp8 => vp8::keyframe_start(payload),
        Codec::Vp9 => vp9::keyframe_start(payload),
        Codec::H264 => h264::keyframe_start(payload, au_start),
        Codec::H265 => str0m::format::detect_h265_keyframe(payload),
        Codec::Av1 => av1::keyframe_start(payload),
        _ => true,
    }
}

/// The picture size declared by the keyframe that starts with `payload`, if
/// this codec's header says so and is well formed (and not zero):
///
/// - VP8: the key frame header after the start code.
/// - VP9: the scalability structure when it carries sizes (the largest
///   spatial layer), else the uncompressed header of a key frame.
/// - H.264: the sequence parameter set, cropping applied.
/// - AV1: the sequence header OBU's maximum frame size.
pub fn keyframe_size(codec: Codec, payload: &[u8]) -> Option<PictureSize> {
    let size = match codec {
        Codec::Vp8 => vp8::Descriptor::parse(payload)?.keyframe_size(payload),
        Codec::Vp9 => vp9::Descriptor::parse(payload)?.keyframe_size(payload),
        Codec::H264 => h264::keyframe_size(payload),
        Codec::Av1 => av1::keyframe_size(payload),
        _ => None,
    }?;
    picture_size(size)
}

/// A size that fits and is not zero.
fn picture_size((w, h): (u32, u32)) -> Option<PictureSize> {
    let size = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// A VP8 or VP9 packet's picture id and TL0PICIDX, and where they are in
/// its payload descriptor. Small and `Copy`: the forwarder reads it for
/// every viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Picture id, 15-bit when `wide` (M set), else 7-bit.
    pub picture_id: Option<u16>,
    /// The picture id has the 15-bit form.
    pub wide: bool,
    /// TL0PICIDX (VP9: non-flexible mode only).
    pub tl0: Option<u8>,
    /// Offsets of the picture id and of TL0PICIDX in the payload.
    pid_at: u8,
    tl0_at: u8,
}

impl Ids {
    /// Write `picture_id` and `tl0` into `payload`, the payload this was
    /// parsed from (or a copy of it); fields it lacks are left alone.
    pub fn write(&self, payload: &mut [u8], picture_id: Option<u16>, tl0: Option<u8>) {
        let at = usize::from(self.pid_at);
        if let Some(p) = self.picture_id.and(picture_id) {
            if self.wide {
                payload[at] = 0x80 | ((p >> 8) as u8 & 0x7f);
                payload[at + 1] = p as u8;
            } else {
                payload[at] = p as u8 & 0x7f;
            }
        }
        if let Some(t) = self.tl0.and(tl0) {
            payload[usize::from(self.tl0_at)] = t;
        }
    }
}

/// Picture id and TL0PICIDX continuity across changes of source (VP8, VP9):
/// the first picture of a new source continues from the last one written.
#[derive(Debug, Clone, Copy, Default)]
pub struct PictureIds {
    /// Added to incoming picture ids (mod 2^15, or 2^7 for short ones).
    pid_offset: u16,
    /// Added to incoming TL0PICIDX (mod 2^8).
    tl0_offset: u8,
    /// Last picture id and TL0PICIDX written.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl PictureIds {
    /// The outgoing values for a packet with `pid` (15-bit when `wide`) and
    /// `tl0`; `rebase` on the first packet of a new source (it must start a
    /// new picture). Outgoing values keep the incoming widths.
    pub fn map(
        &mut self,
        pid: Option<u16>,
        wide: bool,
        tl0: Option<u8>,
        rebase: bool,
    ) -> (Option<u16>, Option<u8>) {
        let mask = if wide { 0x7fff } else { 0x7f };
        if rebase {
            if let (Some(p), Some(last)) = (pid, self.last_pid) {
                self.pid_offset = last.wrapping_add(1).wrapping_sub(p) & 0x7fff;
            }
            if let (Some(t), Some(last)) = (tl0, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
            }
        }
        let out_pid = pid.map(|p| p.wrapping_add(self.pid_offset) & mask);
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if out_pid.is_some() {
            self.last_pid = out_pid;
        }
        if out_tl0.is_some() {
            self.last_tl0 = out_tl0;
        }
        (out_pid, out_tl0)
    }

    /// [`Self::map`] for a packet's `ids`: the outgoing picture id and
    /// TL0PICIDX when they differ from the packet's, else `None`.
    pub fn rewrite(&mut self, ids: &Ids, rebase: bool) -> Option<(Option<u16>, Option<u8>)> {
        let out = self.map(ids.picture_id, ids.wide, ids.tl0, rebase);
        (out != (ids.picture_id, ids.tl0)).then_some(out)
    }

    /// Whether anything is rewritten at all (no offset yet: the identity).
    pub fn is_identity(&self) -> bool {
        self.pid_offset == 0 && self.tl0_offset == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Picture-size vectors in the codec files are from FFmpeg 5.1 encoding
    //! `testsrc` (libx264, libvpx, libvpx-vp9, libaom-av1, libsvtav1,
    //! librav1e): the SPS, the start of the first frame, or the sequence
    //! header OBU.
    use super::*;

    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `head`, then each unit after its big-endian length in `width` bytes
    /// (2: a STAP-A after its 0x78; 4: an AVC access unit).
    pub fn length_prefixed(head: &[u8], width: usize, units: &[&[u8]]) -> Vec<u8> {
        let mut p = head.to_vec();
        for u in units {
            p.extend_from_slice(&(u.len() as u32).to_be_bytes()[4 - width..]);
            p.extend_from_slice(u);
        }
        p
    }

    #[test]
    fn vp8_continuous() {
        let mut r = PictureIds::default();
        assert_eq!(r.map(Some(100), true, Some(7), true), (Some(100), Some(7)));
        assert_eq!(r.map(Some(101), true, Some(8), false), (Some(101), Some(8)));
        // New source with unrelated numbers.
        assert_eq!(
            r.map(Some(30_000), true, Some(200), true),
            (Some(102), Some(9))
        );
        assert_eq!(
            r.map(Some(30_001), true, Some(201), false),
            (Some(103), Some(10))
        );
        // Wrap of the 15-bit field.
        assert_eq!(
            r.map(Some(0x7fff), true, Some(0), true),
            (Some(104), Some(11))
        );
        assert_eq!(r.map(Some(0), true, Some(1), false), (Some(105), Some(12)));
    }

    #[test]
    fn rewrite_only_when_the_ids_change() {
        let ids = vp9::Descriptor::parse(&[0xa8, 0x05, 0x00, 7])
            .unwrap()
            .ids()
            .unwrap();
        let mut r = PictureIds::default();
        assert_eq!(r.rewrite(&ids, true), None);
        // A new source whose ids went back: continued from the last written.
        let back = vp9::Descriptor::parse(&[0xa8, 0x01, 0x00, 2])
            .unwrap()
            .ids()
            .unwrap();
        assert_eq!(r.rewrite(&back, true), Some((Some(6), Some(8))));
    }

    #[test]
    fn short_picture_ids_wrap_at_7_bits() {
        let mut r = PictureIds::default();
        assert_eq!(r.map(Some(126), false, None, true), (Some(126), None));
        assert_eq!(r.map(Some(127), false, None, false), (Some(127), None));
        assert_eq!(r.map(Some(5), false, None, true), (Some(0), None));
        assert_eq!(r.map(Some(6), false, None, false), (Some(1), None));
        assert!(!r.is_identity());
    }

    #[test]
    fn vp8_key_frame_size_after_the_descriptor() {
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

    /// `parse` agrees with the single-purpose readers, for every codec.
    #[test]
    fn parse_once_matches_the_readers() {
        let mut vp8 = vec![0x90, 0xe0, 0x81, 0x23, 4, 0x40];
        vp8.extend_from_slice(&hex("909c009d012a800268010047"));
        let mut vp9 = vec![0xac, 0x05, 0x00, 3];
        vp9.extend_from_slice(&hex("a2498342e04ff02cf60438241c18"));
        let sps = hex("6742c00dd901419f9f0110000003001000000303c0f142a480");
        let mut av1 = vec![0x18];
        av1.extend_from_slice(&hex("0a0b0000002d4cffb3ccaf9004"));
        let cases: [(Codec, &[u8], Option<PictureSize>); 6] = [
            (Codec::Vp8, &vp8, Some((640, 360))),
            (Codec::Vp9, &vp9, Some((1280, 720))),
            (Codec::H264, &sps, Some((320, 180))),
            (Codec::Av1, &av1, Some((1280, 720))),
            (Codec::H264, &[0x41, 0x9a], None),
            (Codec::Opus, &[0xfc], None),
        ];
        for (codec, p, size) in cases {
            let info = parse(codec, p, true);
            assert_eq!(info.keyframe, keyframe_start(codec, p, true), "{codec}");
            assert_eq!(info.size, size, "{codec}");
            assert_eq!(info.size, keyframe_size(codec, p).filter(|_| info.keyframe));
        }
        let v = parse(Codec::Vp8, &vp8, true).vp8.unwrap();
        assert_eq!((v.picture_id, v.wide, v.tl0), (Some(0x123), true, Some(4)));
        let v = parse(Codec::Vp9, &vp9, true).vp9.unwrap();
        assert_eq!((v.picture_id, v.wide, v.tl0), (Some(5), false, Some(3)));
        // Inter frames: ids, no keyframe, no size.
        vp8[6] |= 1;
        let info = parse(Codec::Vp8, &vp8, true);
        assert!(!info.keyframe && info.size.is_none() && info.vp8.is_some());
    }

    #[test]
    fn truncated_or_hostile_input_never_panics() {
        for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            assert_eq!(keyframe_size(codec, &[]), None);
            assert!(!parse(codec, &[], true).keyframe);
            for b in 0..=255u8 {
                for p in [&[b][..], &[b, 0xff, 0xff, 0xff], &[b, 0, 0, 0, 0, 0, 0, 0]] {
                    let _ = keyframe_size(codec, p);
                    let _ = keyframe_start(codec, p, true);
                    let info = parse(codec, p, true);
                    assert_eq!(info.keyframe, keyframe_start(codec, p, true));
                }
            }
        }
    }
}
