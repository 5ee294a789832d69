//! Simulcast: the layers of a publisher's video track, and each viewer's
//! choice among them from its bandwidth estimate.
//!
//! Pure bookkeeping over small vectors (a track has at most [`MAX_LAYERS`]),
//! unit tested alone. The packet path only compares a layer index per viewer;
//! choices are made on estimate events and once a second per track.

use std::time::{Duration, Instant};

use str0m::media::Rid;
use str0m::rtp::Ssrc;

/// Most layers per track (RFC 8853 allows more; browsers send three).
pub const MAX_LAYERS: usize = 4;
/// A layer's bitrate is measured over windows this long.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Bytes counted per packet on top of the payload (RTP, SRTP, IP, UDP headers).
pub const PACKET_OVERHEAD: u64 = 12 + 10 + 28;
/// A layer is chosen when its rate fits this share of the estimate.
pub const FIT: f64 = 0.85;
/// The layer being forwarded stays while its rate is within this share of
/// the estimate (going up needs `UP_MARGIN`: a 20 % band against flapping).
pub const STAY: f64 = 1.0;
/// Going up needs the estimate to exceed the next layer's rate times this...
pub const UP_MARGIN: f64 = 1.2;
/// ...for this long: long enough to see that a probe's result holds (a
/// shaped link can let a probe through faster than it carries media: with
/// 0.25 s, Chromium viewers behind 320 kbit/s sometimes tried m and froze),
/// short enough that the climb is bounded by the estimate, not by waiting.
pub const UP_HOLD: Duration = Duration::from_millis(500);
/// After going down for lack of bandwidth, a viewer stays down at least
/// this long (a falling estimate passes through values that would let it
/// climb straight back). A layer that pauses does not start this hold.
pub const DOWN_HOLD: Duration = Duration::from_secs(2);
/// A viewer reporting more loss than this is held to what gets through.
pub const LOSSY: f32 = 0.1;
/// While a viewer is below the top layer and reports little loss, probe
/// toward the top this often (a link can open up while the viewer sends too
/// little to notice; str0m probes only when the wanted rate rises).
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Viewers with an estimator report stats (and with them the estimator's
/// current value) this often.
pub const ESTIMATE_EVERY: Duration = Duration::from_millis(250);

/// One simulcast layer (or the only encoding of a plain track, `rid: None`).
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its rid; `None` for a track without simulcast.
    pub rid: Option<Rid>,
    /// The SSRC it arrives on, once seen.
    pub ssrc: Option<Ssrc>,
    /// Measured rate in bit/s (packets with overhead), smoothed; 0 until measured.
    /// Kept while the layer is paused, so its rank stays.
    pub rate: u64,
    /// Bytes in the current window.
    pub window_bytes: u64,
    /// Packets received.
    pub packets: u64,
    /// str0m reported the stream paused (`Event::StreamPaused`), or the last
    /// window saw nothing.
    pub paused: bool,
    /// When the last keyframe request for this layer went to the publisher.
    pub last_keyframe_request: Option<Instant>,
    /// A keyframe request is owed once the throttle allows.
    pub keyframe_pending: bool,
    /// The newest RTP timestamp received: a packet with a newer one starts an
    /// access unit (for codecs without a start-of-frame flag, H.264).
    pub newest_ts: Option<u32>,
    /// Width and height its latest keyframe declared, where the codec's
    /// header says (see [`crate::codec::keyframe_size`]).
    pub size: Option<crate::codec::PictureSize>,
    /// Packets/s in the last load sample (overload control).
    pub pps: f64,
    /// `packets` at the last load sample.
    pub packets_mark: u64,
}

impl Layer {
    /// A layer not yet seen.
    pub fn new(rid: Option<Rid>) -> Layer {
        Layer {
            rid,
            ssrc: None,
            rate: 0,
            window_bytes: 0,
            packets: 0,
            paused: false,
            last_keyframe_request: None,
            size: None,
            keyframe_pending: false,
            newest_ts: None,
            pps: 0.0,
            packets_mark: 0,
        }
    }

    /// Can be chosen: measured and sending.
    pub fn usable(&self) -> bool {
        self.rate > 0 && !self.paused
    }

    /// Note a packet's RTP timestamp. Returns whether the packet starts an
    /// access unit: its timestamp is newer than any before (a late or
    /// retransmitted packet of an earlier one is not).
    pub fn starts_access_unit(&mut self, ts: u32) -> bool {
        let newer = self
            .newest_ts
            .is_none_or(|n| (ts.wrapping_sub(n) as i32) > 0);
        if newer {
            self.newest_ts = Some(ts);
        }
        newer
    }
}

/// Close a rate window of `elapsed` over `layers`. Returns whether any
/// layer's usability changed or its rate moved by more than 10 %.
pub fn close_window(layers: &mut [Layer], elapsed: Duration) -> bool {
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut changed = false;
    for l in layers.iter_mut() {
        let was = (l.usable(), l.rate);
        let measured = (l.window_bytes as f64 * 8.0 / secs) as u64;
        l.window_bytes = 0;
        if measured == 0 {
            // Silent for a whole window: treat as paused until packets return.
            l.paused = true;
        } else {
            l.rate = if l.rate == 0 {
                measured
            } else {
                (l.rate + measured) / 2
            };
        }
        let moved = was.1.abs_diff(l.rate) * 10 > was.1.max(1);
        changed |= was.0 != l.usable() || moved;
    }
    changed
}

/// Usable layer indices sorted by rate, lowest first. No allocation beyond a
/// fixed array.
pub fn ranked(layers: &[Layer]) -> ([u8; MAX_LAYERS], usize) {
    let mut idx = [0u8; MAX_LAYERS];
    let mut n = 0;
    for (i, l) in layers.iter().enumerate().take(MAX_LAYERS) {
        if l.usable() {
            idx[n] = i as u8;
            n += 1;
        }
    }
    idx[..n].sort_by_key(|i| layers[*i as usize].rate);
    (idx, n)
}

/// The index of the layer with the highest rate that is usable (for the recorder).
pub fn highest(layers: &[Layer]) -> Option<u8> {
    let (r, n) = ranked(layers);
    (n > 0).then(|| r[n - 1])
}

/// One viewer's layer selection for its video stream.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The layer being forwarded (its packets reach the viewer).
    pub current: Option<u8>,
    /// The layer wanted; a switch happens on its next keyframe.
    pub target: Option<u8>,
    /// Pinned by the viewer (layer extension); `None`: automatic.
    pub pinned: Option<Rid>,
    /// Latest TWCC estimate in bit/s.
    pub estimate: Option<u64>,
    /// Since when the estimate has allowed going up.
    pub up_since: Option<Instant>,
    /// Switches done (a switch is a change of `current` to another layer).
    pub switches: u64,
    /// Last (minimum, desired) handed to the viewer's BWE.
    pub bwe_set: (u64, u64),
    /// When the viewer's BWE was last asked to probe toward `bwe_set.1`.
    pub last_probe: Option<Instant>,
    /// The desired rate was lowered to re-arm a probe; raise it next time.
    pub probe_lowered: bool,
    /// Latest loss fraction the viewer reported (RTCP receiver reports).
    pub loss: f32,
    /// The viewer's Rtc runs TWCC bandwidth estimation (it joined a simulcast
    /// room). Without it the choice is loss-driven: the highest layer, the
    /// lowest while the viewer reports heavy loss.
    pub bwe: bool,
    /// `estimate` comes from the stats (the estimator's current value); the
    /// smoothed estimate events are then ignored.
    pub raw_estimate: bool,
    /// When the viewer last went down for lack of bandwidth (see [`DOWN_HOLD`]).
    pub down_at: Option<Instant>,
    /// Overload control's cap (bit/s): only layers at or below this rate.
    pub cap: Option<u64>,
}

impl Selection {
    /// Forget everything about the publisher's layers (publisher left or a
    /// new track was attached); the estimate stays.
    pub fn detach(&mut self) {
        self.current = None;
        self.target = None;
        self.up_since = None;
    }

    /// Choose the target layer. Returns the new target when it changed.
    pub fn choose(&mut self, layers: &[Layer], now: Instant) -> Option<u8> {
        let mut t = self.pick(layers, now);
        if let (Some(cap), Some(x)) = (self.cap, t) {
            if layers.get(usize::from(x)).is_some_and(|l| l.rate > cap) {
                let (rank, n) = ranked(layers);
                t = rank[..n]
                    .iter()
                    .rev()
                    .find(|i| layers[usize::from(**i)].rate <= cap)
                    .or(rank[..n].first())
                    .copied();
            }
        }
        if t != self.target {
            self.target = t;
            t
        } else {
            None
        }
    }

    fn pick(&mut self, layers: &[Layer], now: Instant) -> Option<u8> {
        // A plain track has one layer: always it, measured or not.
        if layers.len() == 1 {
            return Some(0);
        }
        let (rank, n) = ranked(layers);
        let rank = &rank[..n];
        if n == 0 {
            // Nothing measured yet, or everything paused: keep what we have.
            return self.target;
        }
        if let Some(rid) = self.pinned {
            if let Some(i) = layers.iter().position(|l| l.rid == Some(rid)) {
                if layers[i].usable() {
                    return Some(i as u8);
                }
            }
            // A pinned layer that pauses falls back like an automatic one.
        }
        let Some(est) = self.estimate else {
            self.up_since = None;
            if !self.bwe {
                // No estimator: what the reports say, not what a probe found.
                return Some(if self.loss > LOSSY {
                    rank[0]
                } else {
                    rank[n - 1]
                });
            }
            // Estimator running but no estimate yet: start low.
            return Some(rank[0]);
        };
        // Heavy loss toward the viewer: what arrives, not the (slower)
        // estimate, bounds the layer.
        let est = match self.current.and_then(|c| layers.get(usize::from(c))) {
            Some(l) if self.loss > LOSSY => {
                est.min((l.rate as f64 * f64::from(1.0 - self.loss)) as u64)
            }
            _ => est,
        };
        let budget = (est as f64 * FIT) as u64;
        // The highest that fits, else the lowest.
        let best = rank
            .iter()
            .rposition(|i| layers[*i as usize].rate <= budget)
            .unwrap_or(0);
        let base = self.target.or(self.current);
        let Some(pos) = base.and_then(|c| rank.iter().position(|i| Some(*i) == Some(c))) else {
            // First choice, or the layer went away (paused): at once.
            self.up_since = None;
            return Some(rank[best]);
        };
        if best < pos {
            self.up_since = None;
            // Hysteresis: a layer reached with UP_MARGIN stays while it fits
            // the whole estimate (its measured rate jumps with the keyframe
            // that started it), unless the viewer reports heavy loss.
            let cur_rate = layers[rank[pos] as usize].rate;
            if self.loss <= LOSSY && cur_rate as f64 <= est as f64 * STAY {
                return Some(rank[pos]);
            }
            self.down_at = Some(now);
            return Some(rank[best]);
        }
        if self
            .down_at
            .is_some_and(|t| now.saturating_duration_since(t) < DOWN_HOLD)
        {
            // Just went down for lack of bandwidth: the estimate is still
            // settling, and going straight back up would flap.
            self.up_since = None;
            return Some(rank[pos]);
        }
        if pos + 1 >= n {
            self.up_since = None;
            return Some(rank[pos]);
        }
        let next_rate = layers[rank[pos + 1] as usize].rate;
        if (est as f64) < next_rate as f64 * UP_MARGIN {
            self.up_since = None;
            return Some(rank[pos]);
        }
        let since = *self.up_since.get_or_insert(now);
        if now.saturating_duration_since(since) < UP_HOLD {
            return Some(rank[pos]);
        }
        self.up_since = None;
        // Up as far as the margin allows.
        let up = rank
            .iter()
            .rposition(|i| layers[*i as usize].rate as f64 * UP_MARGIN <= est as f64)
            .unwrap_or(pos + 1)
            .max(pos + 1);
        Some(rank[up])
    }

    /// The viewer has a higher layer to go to, and reports little loss:
    /// worth probing for.
    pub fn may_climb(&self, layers: &[Layer]) -> bool {
        let (rank, n) = ranked(layers);
        self.loss <= LOSSY / 2.0 && n > 1 && self.target.is_some_and(|t| t != rank[n - 1])
    }

    /// (minimum, desired) for the viewer's BWE: keep traffic (media plus
    /// padding, which str0m caps at the estimate) at the next layer's rate so
    /// the estimate can grow into it, and probe toward the top layer with a
    /// margin.
    pub fn bwe_wish(&self, layers: &[Layer]) -> (u64, u64) {
        let (rank, n) = ranked(layers);
        let rank = &rank[..n];
        let Some(t) = self.target else {
            return (0, 0);
        };
        let Some(pos) = rank.iter().position(|i| *i == t) else {
            return (0, 0);
        };
        let cur = layers[t as usize].rate;
        let next = rank
            .get(pos + 1)
            .map(|i| layers[*i as usize].rate)
            .unwrap_or(cur);
        // Probes aim at the top layer: str0m continues a probe that finds
        // room with another at twice the rate, up to twice this, so one
        // chain can reveal room for the top layer rather than the next.
        let top = rank.last().map(|i| layers[*i as usize].rate).unwrap_or(cur);
        let desired = (top as f64 * UP_MARGIN * 1.1) as u64;
        // No padding while the current layer does not fit or the viewer
        // reports loss: it would only deepen the congestion.
        let fits = self.loss <= LOSSY / 2.0
            && self
                .estimate
                .is_some_and(|e| (e as f64 * FIT) as u64 >= cur);
        if fits {
            (next.max(cur), desired)
        } else {
            (0, desired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rates: &[u64]) -> Vec<Layer> {
        rates
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut l = Layer::new(Some(Rid::from(["h", "m", "l"][i])));
                l.rate = *r;
                l
            })
            .collect()
    }

    #[test]
    fn picks_fitting_layer_and_holds_before_going_up() {
        let t0 = Instant::now();
        let ls = layers(&[1_600_000, 500_000, 130_000]);
        let mut s = Selection {
            estimate: Some(300_000),
            ..Selection::default()
        };
        assert_eq!(s.choose(&ls, t0), Some(2));
        // Plenty of bandwidth: not before UP_HOLD.
        s.estimate = Some(10_000_000);
        assert_eq!(s.choose(&ls, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            s.choose(&ls, t0 + UP_HOLD / 2 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            s.choose(&ls, t0 + UP_HOLD + Duration::from_secs(1)),
            Some(0)
        );
        // Down at once.
        s.estimate = Some(400_000);
        assert_eq!(s.choose(&ls, t0 + Duration::from_millis(3200)), Some(2));
    }

    #[test]
    fn a_viewer_that_went_down_for_bandwidth_holds_before_climbing() {
        let t0 = Instant::now();
        let ls = layers(&[1_600_000, 500_000, 130_000]);
        let mut s = Selection {
            estimate: Some(10_000_000),
            ..Selection::default()
        };
        assert_eq!(s.choose(&ls, t0), Some(0));
        s.current = Some(0);
        // The link collapses: down at once.
        s.estimate = Some(300_000);
        assert_eq!(s.choose(&ls, t0 + Duration::from_secs(1)), Some(2));
        s.current = Some(2);
        // The falling estimate passes a high value: no climb during the hold.
        s.estimate = Some(10_000_000);
        for ms in [1_100, 2_000, 2_900] {
            assert_eq!(s.choose(&ls, t0 + Duration::from_millis(ms)), None);
        }
        // After it, the usual up-hold, then up.
        let after = t0 + Duration::from_secs(1) + DOWN_HOLD;
        assert_eq!(s.choose(&ls, after), None);
        assert_eq!(s.choose(&ls, after + UP_HOLD), Some(0));
    }

    #[test]
    fn probes_aim_at_the_top_layer_while_there_is_one_to_climb_to() {
        let ls = layers(&[1_600_000, 500_000, 130_000]);
        let mut s = Selection {
            estimate: Some(300_000),
            target: Some(2),
            current: Some(2),
            ..Selection::default()
        };
        assert!(s.may_climb(&ls));
        // Pads to the next layer, probes toward the top.
        let (min, desired) = s.bwe_wish(&ls);
        assert_eq!(min, 500_000);
        assert_eq!(desired, (1_600_000.0 * UP_MARGIN * 1.1) as u64);
        // Loss: no probing, no padding.
        s.loss = 0.2;
        assert!(!s.may_climb(&ls));
        assert_eq!(s.bwe_wish(&ls).0, 0);
        // On the top layer: nothing to climb to.
        s.loss = 0.0;
        s.target = Some(0);
        s.current = Some(0);
        assert!(!s.may_climb(&ls));
    }

    #[test]
    fn a_layer_reached_stays_while_it_fits_the_estimate() {
        let t0 = Instant::now();
        let mut ls = layers(&[1_600_000, 500_000, 130_000]);
        let mut s = Selection {
            estimate: Some(620_000),
            ..Selection::default()
        };
        assert_eq!(s.choose(&ls, t0), Some(1));
        s.current = Some(1);
        // The keyframe that started m lifts its measured rate past
        // FIT * estimate, still within the estimate: no flap back to l.
        ls[1].rate = 600_000;
        assert_eq!(s.choose(&ls, t0 + Duration::from_millis(500)), None);
        // Past the estimate: down.
        ls[1].rate = 700_000;
        assert_eq!(s.choose(&ls, t0 + Duration::from_secs(1)), Some(2));
        // Heavy loss: down even within the estimate.
        let mut s = Selection {
            estimate: Some(620_000),
            current: Some(1),
            target: Some(1),
            loss: 0.2,
            ..Selection::default()
        };
        ls[1].rate = 600_000;
        assert_eq!(s.choose(&ls, t0), Some(2));
    }

    #[test]
    fn paused_layer_falls_back() {
        let t0 = Instant::now();
        let mut ls = layers(&[1_600_000, 500_000, 130_000]);
        let mut s = Selection {
            estimate: Some(10_000_000),
            ..Selection::default()
        };
        assert_eq!(s.choose(&ls, t0), Some(0));
        ls[0].paused = true;
        assert_eq!(s.choose(&ls, t0), Some(1));
    }
}
