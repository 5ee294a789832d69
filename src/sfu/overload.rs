//! Overload control: admit only what the event loop can carry, and when load
//! rises after admission, degrade viewer by viewer, never everyone at once.
//!
//! ```text
//!  driver: busy, send-call time, messages, datagrams per window ──▶ Load::on_sample ◀── packets forwarded (core)
//!                                         │ load at BATCH_UNDER_LOAD, cost per packet and per message
//!        POST /whep ─▶ Load::admit(room pps) ─────┤ predicted > max_load → 503 (Overloaded)
//!        every sample ─▶ Governor::plan(viewers) ─┘ Down · Pause · Close · Resume · Lift (only if Load::behind)
//!  driver: age of each read's oldest datagram ──▶ Catchup::on_delay ──▶ share of each room's viewers the fan-out serves
//! ```
//!
//! Pure policy: no clock, no sessions, no `Rtc`. The core turns the actions
//! into layer caps, paused viewers and closed sessions.
//!
//! Overload is told from saturation by whether the loop falls behind its
//! ingress, not by its busy ratio: a loop that is 0.99 busy but reads every
//! datagram soon after it arrived loses nothing, and pausing viewers there
//! costs more than it saves. The driver reports the age of the oldest
//! datagram each read finds in the socket ([`Catchup::on_delay`]); while it
//! exceeds [`BEHIND_DELAY`] and does not fall fast, the fan-out serves only
//! the oldest share [`Catchup::keep`] of each room's viewers, so the loop
//! catches up, loss falls on the newest viewers' copies and never on the
//! publishers' packets at the socket. The governor sheds only after windows
//! in which the loop was behind ([`Load::behind`]).
//!
//! Shedding order, when the loop fell behind:
//! 1. simulcast viewers move down one layer, newest first;
//! 2. the newest viewers of the heaviest room are paused (session kept, no media);
//! 3. viewers paused for [`PAUSE_LIMIT`] while the node stays loaded, or when
//!    nothing else is left to shed, are closed, newest first.
//!
//! A downstream edge (another node's pull of a room, [`ViewerLoad::edge`])
//! carries every viewer of that edge, so it is never moved down (it takes
//! every layer), paused only once every ordinary viewer is, and closed only
//! once no ordinary viewer is left; it resumes first.
//!
//! Each step takes as many viewers as its predicted saving needs, then the
//! governor waits one sample for the effect ([`Governor::plan`]). When the
//! load falls below [`RESUME_MARGIN`] under the ceiling, paused viewers
//! resume oldest first (newest last), then layer caps are lifted, as far as
//! the predicted cost fits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::id::SessionId;

/// Default ceiling on the loop's load (`WISP_MAX_LOAD`): 0.85 of a core
/// leaves room for bursts (keyframes, joins) before packets wait in the socket.
pub const DEFAULT_MAX_LOAD: f64 = 0.85;
/// Shedding needs the loop behind ([`Load::behind`]) in this many samples
/// in a row: one long stall (of the host, a burst of joins) must not pause
/// viewers.
pub const SHED_AFTER: u32 = 2;
/// The loop is behind when the oldest datagram a read finds has waited
/// longer than this in the socket. A loop that keeps up reads a datagram
/// within a turn (a few ms; a burst of 16 joins, ~35 ms); the unprivileged
/// receive buffer (208 KiB) holds about 0.3 s of one 550 packets/s publisher.
pub const BEHIND_DELAY: Duration = Duration::from_millis(100);
/// Below this delay the loop has caught up and the fan-out serves more
/// viewers again.
pub const CAUGHT_UP_DELAY: Duration = Duration::from_millis(20);
/// The fan-out's share of viewers changes at most once per step.
pub const CATCHUP_STEP: Duration = Duration::from_millis(20);
/// While behind and not draining fast, each step keeps this share of the
/// viewers served (multiplicative decrease), its square when the delay is
/// over twice [`BEHIND_DELAY`]. Small steps keep the share steady under a
/// steady overload, so that the same viewers keep getting every packet.
pub const CATCHUP_CUT: f64 = 0.9;
/// Once caught up, each [`CATCHUP_STEP`] of time adds this share of the
/// viewers back (half of them in 2 s; a loop that read nothing for 4 s
/// gets them all back at its next read).
pub const CATCHUP_RAISE: f64 = 0.005;
/// Draining is fast enough when the delay falls by this share of the time
/// that passed (the loop reads 1.25 s of ingress per second): then the
/// share of viewers is held, not cut further.
pub const FAST_DRAIN: f64 = 0.25;
/// Share of the copies the fan-out skipped that the governor sheds in one
/// plan ([`Governor::plan`]).
pub const SKIPPED_SHARE: f64 = 0.5;
/// [`Catchup::keep_fixed`] when every viewer is served.
pub const KEEP_ALL: u32 = 1 << 16;
/// Resume only below `max_load - RESUME_MARGIN`, so one resumed viewer does
/// not push the node straight back over (hysteresis).
pub const RESUME_MARGIN: f64 = 0.10;
/// Resume only after this many samples in a row in which the loop kept up:
/// a host that takes the loop's core away makes its load read low while it
/// falls behind, and resuming on one calm sample paused and resumed the same
/// viewers every few seconds (203 of each in 10 s, measured).
pub const RESUME_AFTER: u32 = 3;
/// Loop time per forwarded packet, send calls excluded, before any
/// measurement: 3.3 µs, measured at 200 viewers × 550 packets/s (3.2–3.4 µs;
/// BENCHMARKS.md, "Overload").
pub const PRIOR_COST_S: f64 = 3.3e-6;
/// Loop time per send message (a datagram, or a GSO run of a viewer's
/// datagrams) before any measurement: 3.8 µs, measured at the same point.
pub const PRIOR_MESSAGE_COST_S: f64 = 3.8e-6;
/// Datagrams per send message the loop reaches under load, which the model
/// counts on: a turn that reads several packets of a room sends each viewer
/// one GSO run of them. Measured: 1.1 at 200 viewers (the loop idles between
/// packets), 3.8–5.0 at 400 (the lossless maximum) and 4.1–5.0 at 600–800
/// (over capacity, where a publisher's audio packets between its video
/// packets end the runs). A light load's cost per packet, one message each,
/// would over-predict a heavy one by half.
pub const BATCH_UNDER_LOAD: f64 = 4.0;
/// Packets/s assumed for a room with no media yet: a 2.5 Mbit/s stream is
/// about 260 video + 50 audio packets/s, a high-rate one 500 + 50.
pub const QUIET_ROOM_PPS: f64 = 550.0;
/// Packets/s assumed for a publish (ingress) before its media is known.
pub const PUBLISH_PPS: f64 = 550.0;
/// Loop time one session's setup costs (offer, `Rtc`, answer, ICE, DTLS):
/// 0.84–1.02 ms of server CPU measured with `wisp-load --setup-rate`.
/// Subtracted from a window's busy time before the per-packet cost is
/// worked out, so that a burst of joins does not make packets look dear.
pub const SETUP_COST_S: f64 = 1e-3;
/// Fewer forwarded packets than this in a window leave the cost estimate as
/// it was: a quiet loop's busy time is mostly timers, not packets.
pub const MIN_PACKETS_FOR_COST: u64 = 200;
/// Admitted load counts as pending (not yet in the measurement) this long:
/// setup, ICE, DTLS and the first keyframe take up to a couple of seconds.
pub const PENDING_FOR: Duration = Duration::from_secs(3);
/// A viewer paused this long while the node stays loaded is closed.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(30);
/// Most admissions remembered as pending (bounded; older ones are dropped,
/// which only makes admission less conservative).
const MAX_PENDING: usize = 4096;

/// Why an admission was refused (the `reason` label of
/// `wisp_admission_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A viewer would push the predicted load over the ceiling.
    ViewerLoad,
    /// A publisher would push the predicted load over the ceiling.
    PublishLoad,
}

impl Refusal {
    /// Every reason, for the metrics (each label shows, zero or not).
    pub const ALL: [Refusal; 2] = [Refusal::ViewerLoad, Refusal::PublishLoad];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ViewerLoad => "viewer_load",
            Refusal::PublishLoad => "publish_load",
        }
    }
}

/// One window measured by the driver: how long the loop worked (everything
/// but waiting in `poll`) out of how long the window was, and how much of
/// that went to send calls.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSample {
    /// Time spent working.
    pub busy: Duration,
    /// Length of the window.
    pub elapsed: Duration,
    /// Part of `busy` spent in the socket's send calls.
    pub send: Duration,
    /// Messages those calls sent: a datagram, or a GSO run of datagrams to
    /// one destination (zero: not measured, all work counts per packet).
    pub messages: u64,
    /// Datagrams those messages carried.
    pub datagrams: u64,
}

/// What the core knows of its load: the last measured busy ratio, the load
/// (the busy ratio as it is at the batching reached under load), the costs of
/// one forwarded packet and one send message, and what it admitted since.
///
/// Why not the busy ratio: the loop's cost per forwarded packet falls as load
/// rises (BENCHMARKS.md, "Overload"), because under load one turn reads
/// several of a publisher's packets and sends each viewer its copies as one
/// GSO message, so the cost of a send call (route, skb, loopback or NIC, the
/// receiver's wake-up: 3.8 µs of the 6.9 µs a packet costs at light load) is
/// shared by more packets. So the model splits the measured work into time
/// in send calls, per message, and the rest, per packet; it predicts a
/// packet at `cost_s + message_cost_s / BATCH_UNDER_LOAD`, and counts the
/// present load as if the loop already sent [`BATCH_UNDER_LOAD`] datagrams
/// per message (a light load, one per message, is counted below its busy
/// ratio; a loop that batches more than that is counted as it is).
#[derive(Debug, Clone)]
pub struct Load {
    /// Ceiling on the predicted load.
    pub max_load: f64,
    /// Busy ratio of the last sample (0..=1), send calls included.
    pub busy_ratio: f64,
    /// Load of the last sample: the busy ratio less what batching to
    /// [`BATCH_UNDER_LOAD`] would save and less session setups.
    pub load: f64,
    /// Seconds of loop time per forwarded packet, send calls excluded
    /// (moving average).
    pub cost_s: f64,
    /// Seconds per send message, a datagram or a GSO run (moving average).
    pub message_cost_s: f64,
    /// Datagrams per send message in the last sample (1: no batching).
    pub batch: f64,
    /// Packets forwarded per second in the last sample.
    pub forwarded_pps: f64,
    /// Admissions not yet visible in a sample: (when, load share).
    pending: std::collections::VecDeque<(Instant, f64)>,
    /// Refusals so far, by [`Refusal::ALL`] index.
    pub refusals: [u64; 2],
    /// Samples taken.
    pub samples: u64,
    /// `cost_s` comes from a measurement, not the prior.
    measured: bool,
    /// `message_cost_s` comes from a measurement, not the prior.
    messages_measured: bool,
    /// The loop fell behind its ingress in the last sample: the fan-out
    /// skipped copies, or every read found a datagram older than
    /// [`BEHIND_DELAY`] ([`Load::on_lag`]). Only then does the governor shed.
    pub behind: bool,
    /// Copies per second the fan-out skipped to catch up in the last sample
    /// (`wisp_packets_dropped_total{reason="overload"}`).
    pub skipped_pps: f64,
    /// The ingress delays of the last sample.
    pub lag: LagWindow,
}

impl Load {
    /// No measurement yet: idle, prior cost.
    pub fn new(max_load: f64) -> Load {
        Load {
            max_load,
            busy_ratio: 0.0,
            load: 0.0,
            cost_s: PRIOR_COST_S,
            message_cost_s: PRIOR_MESSAGE_COST_S,
            batch: 1.0,
            forwarded_pps: 0.0,
            pending: Default::default(),
            refusals: [0; 2],
            samples: 0,
            measured: false,
            messages_measured: false,
            behind: false,
            skipped_pps: 0.0,
            lag: LagWindow::default(),
        }
    }

    /// Record whether the loop fell behind in the sample just taken, from
    /// the catch-up's window ([`Catchup::take_window`]) and the copies the
    /// fan-out skipped per second.
    pub fn on_lag(&mut self, window: LagWindow, skipped_pps: f64) {
        self.skipped_pps = skipped_pps;
        self.lag = window;
        self.behind = skipped_pps > 0.0 || window.min_delay.is_some_and(|d| d > BEHIND_DELAY);
    }

    /// Take a sample covering `forwarded` packets sent to viewers. All the
    /// loop's work but its send calls (ingress, RTCP, STUN, timers) is
    /// charged to them, so the cost of a viewer predicted from its packets
    /// includes its share of the rest.
    /// `setups` sessions were created in the window; their setup cost is not
    /// charged to packets. A window with too few packets to measure moves the
    /// cost back toward the prior: an idle node learns nothing new, and a
    /// value left over from a setup burst must not stay.
    pub fn on_sample(&mut self, now: Instant, s: LoadSample, forwarded: u64, setups: u64) {
        let elapsed = s.elapsed.as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        self.samples += 1;
        let busy = s.busy.as_secs_f64().min(elapsed);
        let send = s.send.as_secs_f64().min(busy);
        if s.messages > 0 {
            self.batch = (s.datagrams as f64 / s.messages as f64).max(1.0);
        }
        // Measured in media windows only, as the cost per packet: a setup's
        // sends (DTLS flights to many peers) cost more than media's.
        if forwarded < MIN_PACKETS_FOR_COST {
            self.message_cost_s = 0.8 * self.message_cost_s + 0.2 * PRIOR_MESSAGE_COST_S;
        } else if s.messages >= MIN_PACKETS_FOR_COST {
            let m = send / s.messages as f64;
            self.message_cost_s = if self.messages_measured {
                0.6 * self.message_cost_s + 0.4 * m
            } else {
                m
            };
            self.messages_measured = true;
        }
        // The send time batching to BATCH_UNDER_LOAD would save.
        let saved = send * (1.0 - self.batch / BATCH_UNDER_LOAD).max(0.0);
        // Setups are paid once per session: a join burst is not the steady
        // load that admission predicts (a tenth stays, as in the cost).
        let work = busy - saved;
        let work = (work - setups as f64 * SETUP_COST_S).max(work * 0.1);
        self.busy_ratio = busy / elapsed;
        self.load = work / elapsed;
        self.forwarded_pps = forwarded as f64 / elapsed;
        if forwarded < MIN_PACKETS_FOR_COST {
            self.cost_s = 0.8 * self.cost_s + 0.2 * PRIOR_COST_S;
        } else {
            let rest = busy - send;
            let rest = (rest - setups as f64 * SETUP_COST_S).max(rest * 0.1);
            let cost = rest / forwarded as f64;
            // The first measurement replaces the prior; later ones are
            // smoothed over about three samples, so one busy window (setup
            // bursts) does not make every packet look expensive.
            self.cost_s = if self.measured {
                0.6 * self.cost_s + 0.4 * cost
            } else {
                cost
            };
            self.measured = true;
        }
        self.pending
            .retain(|(t, _)| now.saturating_duration_since(*t) < PENDING_FOR);
    }

    /// Loop time one more forwarded packet costs under load: its own work
    /// plus its part of a send message at [`BATCH_UNDER_LOAD`].
    pub fn packet_cost(&self) -> f64 {
        self.cost_s + self.message_cost_s / BATCH_UNDER_LOAD
    }

    /// The load share of `pps` more forwarded packets per second.
    pub fn share(&self, pps: f64) -> f64 {
        pps * self.packet_cost()
    }

    /// Load expected now: the last sample plus what was admitted since.
    pub fn predicted(&self, now: Instant) -> f64 {
        self.load
            + self
                .pending
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) < PENDING_FOR)
                .map(|(_, l)| l)
                .sum::<f64>()
    }

    /// Whether sessions admitted in the last [`PENDING_FOR`] are still
    /// starting (their load is pending).
    pub fn starting(&self, now: Instant) -> bool {
        self.pending
            .iter()
            .any(|(t, _)| now.saturating_duration_since(*t) < PENDING_FOR)
    }

    /// How much load can still be admitted (negative when over).
    pub fn headroom(&self, now: Instant) -> f64 {
        self.max_load - self.predicted(now)
    }

    /// [`Load::headroom`] in forwarded packets/s at the measured cost (0
    /// when over): what a cluster's placement can compare between nodes.
    pub fn headroom_pps(&self, now: Instant) -> f64 {
        (self.headroom(now) / self.packet_cost().max(1e-12)).max(0.0)
    }

    /// Admit a session that will cost `pps` packets/s of loop work, or refuse
    /// it with `why`. An admitted session counts as pending until samples
    /// include it.
    pub fn admit(&mut self, now: Instant, pps: f64, why: Refusal) -> Result<(), Refusal> {
        let extra = self.share(pps);
        if self.predicted(now) + extra > self.max_load {
            self.refusals[why as usize] += 1;
            return Err(why);
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((now, extra));
        Ok(())
    }
}

/// One viewer as the governor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerLoad {
    /// The session.
    pub id: SessionId,
    /// Index of its room in the caller's list (rooms are compared by load).
    pub room: usize,
    /// Join order within the node: larger is newer.
    pub joined: u64,
    /// Packets/s it is sent now (0 while paused).
    pub pps: f64,
    /// Packets/s it would be sent one layer down, if it is a simulcast viewer
    /// above the lowest layer.
    pub down_pps: Option<f64>,
    /// Packets/s it would be sent without its layer cap, if it has one.
    pub uncapped_pps: Option<f64>,
    /// Packets/s it would be sent when resumed, if it is paused.
    pub resume_pps: Option<f64>,
    /// Since when it has been paused.
    pub paused_since: Option<Instant>,
    /// Another node's pull of the room (a downstream edge): shed last.
    pub edge: bool,
}

/// What the core should do to one viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Cap its layer one below the current one.
    Down(SessionId),
    /// Stop sending it media; keep the session.
    Pause(SessionId),
    /// End the session.
    Close(SessionId),
    /// Send it media again (and a keyframe).
    Resume(SessionId),
    /// Remove its layer cap.
    Lift(SessionId),
}

/// The shedding state between samples.
#[derive(Debug, Default, Clone)]
pub struct Governor {
    /// The last plan acted; the next sample only shows part of its effect, so
    /// it is skipped.
    settling: bool,
    /// Samples in a row in which the loop was behind ([`Load::behind`]).
    over: u32,
    /// Samples in a row in which it was not.
    calm: u32,
    /// Actions taken, by kind: down, pause, close, resume, lift.
    pub counts: [u64; 5],
}

impl Governor {
    /// Decide what to shed or restore after a sample. `load` is the fresh
    /// sample; `viewers` every viewer of the node (any order).
    pub fn plan(&mut self, now: Instant, load: &Load, viewers: &[ViewerLoad]) -> Vec<Action> {
        if std::mem::take(&mut self.settling) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let excess = load.load - load.max_load;
        // Shed only when the loop fell behind: a loop over the ceiling that
        // keeps up loses nothing (`WISP_MAX_LOAD=off`: never).
        let behind = load.behind && load.max_load.is_finite();
        // Sessions admitted in the last PENDING_FOR are still starting: their
        // first seconds (keyframes, first reports, repairs) cost more than
        // their media will. Admission already counted them, and it refuses
        // everyone while the load is over, so this wait ends within
        // PENDING_FOR (the fan-out's catch-up keeps ingress safe meanwhile).
        let starting = load.starting(now);
        self.over = match (behind, starting) {
            (false, _) => 0,
            (true, false) => self.over + 1,
            (true, true) => self.over,
        };
        self.calm = if load.behind { 0 } else { self.calm + 1 };
        if self.over >= SHED_AFTER && !starting {
            self.shed(now, load, excess, viewers, &mut out);
        } else if self.calm >= RESUME_AFTER {
            self.restore(load, viewers, &mut out);
        }
        // Paused too long while the node is still loaded: end them.
        if load.load > load.max_load - RESUME_MARGIN {
            let mut stale: Vec<&ViewerLoad> = viewers
                .iter()
                .filter(|v| {
                    v.paused_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= PAUSE_LIMIT)
                })
                .collect();
            let closing: HashSet<SessionId> = out
                .iter()
                .filter_map(|a| match a {
                    Action::Close(id) => Some(*id),
                    _ => None,
                })
                .collect();
            stale.retain(|v| !closing.contains(&v.id));
            // An edge's pull only once no ordinary viewer stays unpaused.
            if ordinary_active(viewers) {
                stale.retain(|v| !v.edge);
            }
            stale.sort_by_key(|v| (v.edge, std::cmp::Reverse(v.joined)));
            out.extend(stale.iter().map(|v| Action::Close(v.id)));
        }
        for a in &out {
            let k = match a {
                Action::Down(_) => 0,
                Action::Pause(_) => 1,
                Action::Close(_) => 2,
                Action::Resume(_) => 3,
                Action::Lift(_) => 4,
            };
            self.counts[k] += 1;
        }
        self.settling = out
            .iter()
            .any(|a| !matches!(a, Action::Close(_)) || excess > 0.0);
        out
    }

    fn shed(
        &mut self,
        _now: Instant,
        load: &Load,
        excess: f64,
        viewers: &[ViewerLoad],
        out: &mut Vec<Action>,
    ) {
        // Packets/s to remove: a share of what the fan-out skipped to catch
        // up (its cost is not in the measured load), plus what takes the
        // measured load down to the ceiling. A load under the ceiling while
        // the loop is behind (a busy host takes time from it) still sheds.
        // Only a share: the catch-up cuts past what the loop lacks and
        // comes back slowly, and a pause costs a viewer everything, so the
        // governor sheds from below, again two samples later if still
        // behind. Within half a packet/s counts as done.
        let skipped = load.skipped_pps * SKIPPED_SHARE;
        let mut need = (skipped + (excess / load.packet_cost().max(1e-9)).max(0.0)).max(1.0) - 0.5;
        let mut newest: Vec<&ViewerLoad> = viewers.iter().collect();
        newest.sort_by_key(|v| std::cmp::Reverse(v.joined));

        // 1. Simulcast viewers one layer down, newest first (an edge's pull
        // takes every layer).
        let mut downed = HashSet::new();
        for v in &newest {
            if need <= 0.0 {
                return;
            }
            if let Some(down) = v.down_pps.filter(|_| v.paused_since.is_none() && !v.edge) {
                let saving = v.pps - down;
                if saving > 0.0 {
                    out.push(Action::Down(v.id));
                    downed.insert(v.id);
                    need -= saving;
                }
            }
        }
        // 2. Pause the newest viewers of the heaviest room, then the next
        // room: rooms ranked by what their viewers are sent, then a stable
        // sort keeps newest first within each room (no scan per room).
        // Edges' pulls come after every ordinary viewer.
        let rooms = viewers.iter().map(|v| v.room + 1).max().unwrap_or(0);
        let mut room_pps = vec![0.0; rooms];
        for v in viewers
            .iter()
            .filter(|v| v.paused_since.is_none() && !v.edge)
        {
            room_pps[v.room] += v.pps;
        }
        let mut order: Vec<usize> = (0..rooms).collect();
        order.sort_by(|a, b| room_pps[*b].total_cmp(&room_pps[*a]).then(a.cmp(b)));
        let mut rank = vec![0; rooms];
        for (i, r) in order.into_iter().enumerate() {
            rank[r] = i;
        }
        let mut candidates: Vec<&ViewerLoad> = newest
            .iter()
            .filter(|v| v.paused_since.is_none() && v.pps > 0.0)
            .copied()
            .collect();
        candidates.sort_by_key(|v| (v.edge, rank[v.room]));
        for v in candidates {
            if need <= 0.0 {
                return;
            }
            // A viewer already moved down in this plan saves the rest.
            let saving = if downed.contains(&v.id) {
                v.down_pps.unwrap_or(v.pps)
            } else {
                v.pps
            };
            out.push(Action::Pause(v.id));
            need -= saving;
        }
        // 3. Nothing left to pause and still over: close the newest paused,
        // an edge's pull only once no ordinary viewer stays unpaused (they
        // close now or already have).
        if need > 0.0 {
            let edges_too = !ordinary_active(viewers);
            let mut paused: Vec<&ViewerLoad> = newest
                .iter()
                .filter(|v| v.paused_since.is_some() && (edges_too || !v.edge))
                .copied()
                .collect();
            paused.sort_by_key(|v| v.edge);
            out.extend(paused.iter().map(|v| Action::Close(v.id)));
        }
    }

    fn restore(&mut self, load: &Load, viewers: &[ViewerLoad], out: &mut Vec<Action>) {
        let room = load.max_load - RESUME_MARGIN - load.load;
        if room <= 0.0 {
            return;
        }
        let mut budget = room / load.packet_cost().max(1e-9); // packets/s we may add
                                                              // Edges' pulls first: each serves a whole edge node.
        let mut oldest: Vec<&ViewerLoad> = viewers.iter().collect();
        oldest.sort_by_key(|v| (!v.edge, v.joined));
        for v in &oldest {
            if let Some(pps) = v.resume_pps {
                if pps > budget {
                    return;
                }
                budget -= pps;
                out.push(Action::Resume(v.id));
            }
        }
        for v in &oldest {
            if let Some(up) = v.uncapped_pps {
                let extra = (up - v.pps).max(0.0);
                if extra > budget {
                    return;
                }
                budget -= extra;
                out.push(Action::Lift(v.id));
            }
        }
    }
}

/// The ingress delays one load window saw ([`Catchup::take_window`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LagWindow {
    /// The largest delay reported in the window.
    pub max_delay: Duration,
    /// The smallest (`None`: no datagram was read): above [`BEHIND_DELAY`],
    /// the loop never caught up in the whole window.
    pub min_delay: Option<Duration>,
}

/// The fan-out's catch-up: how much of each room's viewer list the fan-out
/// serves, from the age of the datagrams the loop reads.
///
/// A read that finds a datagram which waited more than [`BEHIND_DELAY`] in
/// the socket, with the delay not falling by [`FAST_DRAIN`] of the time that
/// passed, cuts the share by [`CATCHUP_CUT`] (at most once per
/// [`CATCHUP_STEP`], and not in the step after a cut, which still sees the
/// work done before it); a
/// delay under [`CAUGHT_UP_DELAY`] adds
/// [`CATCHUP_RAISE`] back per step of time; in between the share holds. The fan-out serves a
/// room's viewers in join order and stops at the share, so the copies
/// skipped are the newest viewers' (the governor then pauses those), and the
/// loop reads its ingress before the socket overflows. Under a steady
/// overload the share settles where the loop keeps up: the most the core
/// can carry, delivered whole to the oldest viewers.
#[derive(Debug, Clone)]
pub struct Catchup {
    /// Share of each room's viewers served (1: all).
    keep: f64,
    /// When the share last moved (or was held), and the delay then.
    step: Option<(Instant, Duration)>,
    /// This window's delays.
    window: LagWindow,
    /// The last step cut the share: the next one does not cut. A read's
    /// delay shows the work of the batches before it, done at the old
    /// share (one batch of 32 publisher packets to 400 viewers is ~50 ms).
    settling: bool,
    /// Steps that cut the share, so far.
    pub cuts: u64,
}

impl Default for Catchup {
    fn default() -> Self {
        Catchup {
            keep: 1.0,
            step: None,
            window: LagWindow::default(),
            settling: false,
            cuts: 0,
        }
    }
}

impl Catchup {
    /// A read at `now` found a datagram that had waited `delay` in the
    /// socket (the oldest of its batch). Returns whether the share changed.
    pub fn on_delay(&mut self, now: Instant, delay: Duration) -> bool {
        let w = &mut self.window;
        w.max_delay = w.max_delay.max(delay);
        w.min_delay = Some(w.min_delay.map_or(delay, |m| m.min(delay)));
        let Some((at, before)) = self.step else {
            self.step = Some((now, delay));
            return false;
        };
        let passed = now.saturating_duration_since(at);
        if passed < CATCHUP_STEP {
            return false;
        }
        self.step = Some((now, delay));
        let was = self.keep;
        let settling = std::mem::take(&mut self.settling);
        if delay > BEHIND_DELAY && !settling {
            let fell = before.saturating_sub(delay).as_secs_f64();
            if fell < FAST_DRAIN * passed.as_secs_f64() {
                self.keep *= if delay > 2 * BEHIND_DELAY {
                    CATCHUP_CUT * CATCHUP_CUT
                } else {
                    CATCHUP_CUT
                };
                // Below one viewer in 65,536: none.
                if self.keep < 1.0 / f64::from(KEEP_ALL) {
                    self.keep = 0.0;
                }
                self.cuts += 1;
                self.settling = true;
            }
        } else if delay < CAUGHT_UP_DELAY {
            let steps = passed.as_secs_f64() / CATCHUP_STEP.as_secs_f64();
            self.keep = (self.keep + CATCHUP_RAISE * steps).min(1.0);
        }
        self.keep != was
    }

    /// Share of each room's viewers the fan-out serves (1: all).
    pub fn keep(&self) -> f64 {
        self.keep
    }

    /// [`Catchup::keep`] in 1/65,536ths ([`KEEP_ALL`]: all), for the fan-out:
    /// of `n` viewers it serves the first `n * keep_fixed >> 16`.
    pub fn keep_fixed(&self) -> u32 {
        if self.keep >= 1.0 {
            KEEP_ALL
        } else {
            (self.keep * f64::from(KEEP_ALL)) as u32
        }
    }

    /// The delays seen since the last call (one load window); a new window
    /// starts.
    pub fn take_window(&mut self) -> LagWindow {
        std::mem::take(&mut self.window)
    }
}

/// Of `n` viewers in join order, how many the fan-out serves at `keep`
/// ([`Catchup::keep_fixed`]).
pub fn served(n: usize, keep: u32) -> usize {
    if keep >= KEEP_ALL {
        n
    } else {
        ((n as u64 * u64::from(keep)) >> 16) as usize
    }
}

/// Whether an ordinary viewer (not an edge's pull) is not paused.
fn ordinary_active(viewers: &[ViewerLoad]) -> bool {
    viewers.iter().any(|v| !v.edge && v.paused_since.is_none())
}

#[cfg(test)]
mod tests;
