//! Per-viewer rewriting of one publisher track: payload type mapping, its own
//! continuous sequence numbers and timestamps, and keyframe gating.
//!
//! Pure arithmetic over `Copy` values, so it is unit tested and fuzzed alone.

use std::time::Instant;

use str0m::media::{Mid, Pt};
use str0m::rtp::Ssrc;

use super::id::SessionId;
use super::rewrite::PictureIds;

/// Where a stream of packets comes from: a publisher session and its SSRC.
pub type Source = (SessionId, Ssrc);

/// One viewer's outgoing stream of one kind (audio or video).
#[derive(Debug, Clone)]
pub struct OutStream {
    /// The viewer's m-line this kind is sent on.
    pub mid: Mid,
    /// The publisher stream currently mapped onto this one.
    source: Option<Source>,
    /// `out_seq = in_seq + seq_offset` (mod 2^64).
    seq_offset: u64,
    /// `out_ts = in_ts + ts_offset` (mod 2^32).
    ts_offset: u32,
    /// Last sequence number and timestamp written, and when.
    last: Option<(u64, u32, Instant)>,
    /// First sequence number to use when there is no `last`.
    initial_seq: u64,
    /// Cached publisher PT → viewer PT (`None`: not negotiated).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// Video only: nothing is sent until a keyframe starts.
    pub started: bool,
    /// The last [`OutStream::map`] started a new segment (new source).
    pub rebased: bool,
    /// The last packet written ended a frame (RTP marker); true when none was.
    pub frame_done: bool,
    /// VP8/VP9 picture id / TL0PICIDX continuity across sources.
    pub pic_ids: PictureIds,
}

/// What to do with one packet for one viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it with this sequence number and timestamp.
    Send {
        /// Extended outgoing sequence number.
        seq: u64,
        /// Outgoing RTP timestamp.
        ts: u32,
    },
    /// Video that cannot be decoded yet: a keyframe is needed.
    WaitForKeyframe,
}

impl OutStream {
    /// A new stream on `mid`. `initial_seq` must be below 2^15 so the
    /// rollover counter starts at 0 (str0m needs no out-of-band ROC).
    pub fn new(mid: Mid, initial_seq: u16, initial_ts: u32) -> OutStream {
        OutStream {
            mid,
            source: None,
            seq_offset: 0,
            ts_offset: initial_ts,
            last: None,
            initial_seq: u64::from(initial_seq & 0x7fff),
            pt_map: Vec::new(),
            started: false,
            rebased: false,
            frame_done: true,
            pic_ids: PictureIds::default(),
        }
    }

    /// The cached viewer PT for publisher PT `pt`, if computed before.
    pub fn cached_pt(&self, pt: Pt) -> Option<Option<Pt>> {
        self.pt_map.iter().find(|(p, _)| *p == pt).map(|(_, o)| *o)
    }

    /// Remember the viewer PT for publisher PT `pt`. Bounded: PTs are 7-bit.
    pub fn cache_pt(&mut self, pt: Pt, out: Option<Pt>) {
        if self.pt_map.len() < 128 {
            self.pt_map.push((pt, out));
        }
    }

    /// Forget the source so the next packet starts a new segment (publisher
    /// left or a new track was attached); video waits for a keyframe again.
    pub fn detach(&mut self) {
        self.source = None;
        self.pt_map.clear();
        self.started = false;
    }

    /// Decide the outgoing numbers for one packet.
    ///
    /// `video` gates on keyframes; `keyframe` says whether this packet starts
    /// one; `clock_rate` is the codec clock used to advance timestamps across
    /// a change of source.
    #[allow(clippy::too_many_arguments)]
    pub fn map(
        &mut self,
        source: Source,
        seq: u64,
        ts: u32,
        video: bool,
        keyframe: bool,
        clock_rate: u32,
        now: Instant,
    ) -> Verdict {
        self.rebased = false;
        if self.source != Some(source) {
            if self.source.is_some() {
                self.pt_map.clear();
            }
            if video && !keyframe {
                self.started = false;
                return Verdict::WaitForKeyframe;
            }
            // A new segment: continue right after the last packet written.
            let (next_seq, next_ts) = match self.last {
                None => (self.initial_seq, self.ts_offset),
                Some((s, t, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() as u64 * u64::from(clock_rate) / 1_000_000)
                        .clamp(1, u64::from(u32::MAX / 2));
                    (s.wrapping_add(1), t.wrapping_add(ticks as u32))
                }
            };
            self.seq_offset = next_seq.wrapping_sub(seq);
            self.ts_offset = next_ts.wrapping_sub(ts);
            self.source = Some(source);
            self.started = true;
            self.rebased = true;
        } else if video && !self.started {
            if !keyframe {
                return Verdict::WaitForKeyframe;
            }
            self.started = true;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        match self.last {
            Some((s, _, _)) if out_seq <= s => {} // retransmission or reorder: keep `last`
            _ => self.last = Some((out_seq, out_ts, now)),
        }
        Verdict::Send {
            seq: out_seq,
            ts: out_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn src(n: u64) -> Source {
        (SessionId(n), Ssrc::from(n as u32))
    }

    #[test]
    fn continuous_across_sources() {
        let t0 = Instant::now();
        let mut o = OutStream::new(Mid::from("1"), 100, 5000);
        assert_eq!(
            o.map(src(1), 70_000, 1, true, false, 90_000, t0),
            Verdict::WaitForKeyframe
        );
        assert_eq!(
            o.map(src(1), 70_001, 1, true, true, 90_000, t0),
            Verdict::Send { seq: 100, ts: 5000 }
        );
        assert_eq!(
            o.map(src(1), 70_002, 3001, true, false, 90_000, t0),
            Verdict::Send { seq: 101, ts: 8000 }
        );
        // A new publisher 100 ms later with unrelated numbers.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            o.map(src(2), 9, 77, true, false, 90_000, t1),
            Verdict::WaitForKeyframe
        );
        assert_eq!(
            o.map(src(2), 10, 77, true, true, 90_000, t1),
            Verdict::Send {
                seq: 102,
                ts: 17_000
            }
        );
        // Reordered older packet keeps its place.
        assert_eq!(
            o.map(src(2), 9, 77, true, false, 90_000, t1),
            Verdict::Send {
                seq: 101,
                ts: 17_000
            }
        );
    }

    #[test]
    fn audio_never_waits_and_wraps() {
        let t0 = Instant::now();
        let mut o = OutStream::new(Mid::from("0"), 0xffff, u32::MAX);
        assert_eq!(
            o.map(src(1), 5, 10, false, false, 48_000, t0),
            Verdict::Send {
                seq: 0x7fff,
                ts: u32::MAX
            }
        );
        assert_eq!(
            o.map(src(1), 6, 970, false, false, 48_000, t0),
            Verdict::Send {
                seq: 0x8000,
                ts: 959
            }
        );
    }
}
