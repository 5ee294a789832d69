//! Overload control: admit only what the event loop can carry, and when load
//! rises after admission, degrade viewer by viewer, never everyone at once.
//!
//! ```text
//!  driver: busy, send-call time, messages, datagrams per window ──▶ Load::on_sample ◀── packets forwarded (core)
//!                                         │ load at BATCH_UNDER_LOAD, cost per packet and per message
//!        POST /whep ─▶ Load::admit(room pps) ─────┤ predicted > max_load → 503 (Overloaded)
//!        every sample ─▶ Governor::plan(viewers) ─┘ Down · Pause · Close · Resume · Lift
//! ```
//!
//! Pure policy: no clock, no sessions, no `Rtc`. The core turns the actions
//! into layer caps, paused viewers and closed sessions.
//!
//! Shedding order, when the measured load is above the ceiling:
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
/// Shedding needs the ceiling (plus [`SHED_MARGIN`]) exceeded in this many
/// samples in a row: one long turn (a stall of the host, a burst of joins)
/// must not pause viewers.
pub const SHED_AFTER: u32 = 2;
/// Resume only below `max_load - RESUME_MARGIN`, so one resumed viewer does
/// not push the node straight back over (hysteresis).
pub const RESUME_MARGIN: f64 = 0.10;
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
/// Shedding starts only when the measured load is this far over the
/// ceiling: admission fills a node up to the ceiling, and keyframes and joins
/// make the measurement wobble around it. It then sheds down to the ceiling.
/// A ceiling within twice this of 1 uses half its distance to 1 instead (the
/// load never passes 1).
pub const SHED_MARGIN: f64 = 0.05;
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
        }
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
    /// Samples in a row over the ceiling plus the margin.
    over: u32,
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
        // The load cannot pass 1: a ceiling near it keeps half its room.
        let margin = SHED_MARGIN.min((1.0 - load.max_load) / 2.0).max(0.0);
        // Sessions admitted in the last PENDING_FOR are still starting: their
        // first seconds (keyframes, first reports, repairs) cost more than
        // their media will. Admission already counted them, and it refuses
        // everyone while the load is over, so this wait ends within
        // PENDING_FOR.
        let starting = load.starting(now);
        self.over = match (excess > margin, starting) {
            (false, _) => 0,
            (true, false) => self.over + 1,
            (true, true) => self.over,
        };
        if self.over >= SHED_AFTER && !starting {
            self.shed(now, load, excess, viewers, &mut out);
        } else {
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
        // Packets/s to remove; within half a packet/s counts as done.
        let mut need = excess / load.packet_cost().max(1e-9) - 0.5;
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

/// Whether an ordinary viewer (not an edge's pull) is not paused.
fn ordinary_active(viewers: &[ViewerLoad]) -> bool {
    viewers.iter().any(|v| !v.edge && v.paused_since.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u64) -> SessionId {
        SessionId(n)
    }

    fn sample(busy_ms: u64) -> LoadSample {
        LoadSample {
            busy: Duration::from_millis(busy_ms),
            elapsed: Duration::from_secs(1),
            ..LoadSample::default()
        }
    }

    fn viewer(n: u64, room: usize, pps: f64) -> ViewerLoad {
        ViewerLoad {
            id: sid(n),
            room,
            joined: n,
            pps,
            down_pps: None,
            uncapped_pps: None,
            resume_pps: None,
            paused_since: None,
            edge: false,
        }
    }

    #[test]
    fn cost_is_measured_and_admission_predicts_from_it() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.message_cost_s = 0.0; // no send calls in this loop
                                // 100k packets in a 1 s window at 50 % busy: 5 µs a packet.
        l.on_sample(t0, sample(500), 100_000, 0);
        assert!((l.busy_ratio - 0.5).abs() < 1e-9);
        assert!((l.cost_s - 5e-6).abs() < 1e-9);
        // One more 550 pps viewer costs 0.275 % of the core.
        assert!((l.share(550.0) - 0.00275).abs() < 1e-9);
        // Room for (0.85 - 0.5) / 0.00275 = 127 viewers, then refusals.
        let admitted = (0..200)
            .take_while(|_| l.admit(t0, 550.0, Refusal::ViewerLoad).is_ok())
            .count();
        assert_eq!(admitted, 127);
        assert_eq!(l.refusals, [1, 0]);
        assert!(l.headroom(t0) < 0.00275 && l.headroom(t0) >= 0.0);
        // Pending load is forgotten once samples include it.
        l.on_sample(t0 + PENDING_FOR, sample(500), 100_000, 0);
        assert!((l.headroom(t0 + PENDING_FOR) - 0.35).abs() < 1e-9);
    }

    #[test]
    fn send_calls_are_measured_apart_and_counted_at_the_batching_under_load() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        // 100k packets in 1 s, 900 ms busy of which 400 ms in send calls that
        // carried 50k messages (two datagrams each).
        let s = LoadSample {
            busy: Duration::from_millis(900),
            elapsed: Duration::from_secs(1),
            send: Duration::from_millis(400),
            messages: 50_000,
            datagrams: 100_000,
        };
        l.on_sample(t0, s, 100_000, 0);
        assert!((l.busy_ratio - 0.9).abs() < 1e-9);
        assert!((l.batch - 2.0).abs() < 1e-9);
        // At four datagrams a message the sends would take half as long.
        assert!((l.load - 0.7).abs() < 1e-9, "{}", l.load);
        assert!((l.cost_s - 5e-6).abs() < 1e-12, "{}", l.cost_s);
        assert!((l.message_cost_s - 8e-6).abs() < 1e-12);
        // One more packet: 5 µs + a quarter of an 8 µs message.
        assert!((l.packet_cost() - 7e-6).abs() < 1e-12);
        assert!((l.headroom(t0) - 0.15).abs() < 1e-9);
        assert!((l.headroom_pps(t0) - 0.15 / 7e-6).abs() < 1e-6);
        // 0.15 / (550 × 7 µs) = 38.96 viewers.
        let admitted = (0..200)
            .take_while(|_| l.admit(t0, 550.0, Refusal::ViewerLoad).is_ok())
            .count();
        assert_eq!(admitted, 38);
        assert!(l.headroom_pps(t0) < 550.0);
        // A loop that batches more than BATCH_UNDER_LOAD counts as it is.
        let s = LoadSample {
            messages: 10_000,
            ..s
        };
        l.on_sample(t0, s, 100_000, 0);
        assert!((l.load - 0.9).abs() < 1e-9);
    }

    #[test]
    fn a_light_load_predicts_a_heavier_one_whose_sends_batch() {
        // A loop whose work is 3 µs per packet plus 3 µs per send message.
        // At 50k packets/s it sends one message per packet (busy 0.30, 6 µs a
        // packet); at 150k it batches three a message (busy 0.60, 4 µs).
        let window = |pps: u64, batch: u64| {
            let messages = pps / batch;
            LoadSample {
                busy: Duration::from_nanos(3_000 * pps + 3_000 * messages),
                elapsed: Duration::from_secs(1),
                send: Duration::from_nanos(3_000 * messages),
                messages,
                datagrams: pps,
            }
        };
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.on_sample(t0, window(50_000, 1), 50_000, 0);
        assert!((l.busy_ratio - 0.30).abs() < 1e-9);
        // Counted at four datagrams a message: 0.15 + 0.15 / 4.
        assert!((l.load - 0.1875).abs() < 1e-9);
        assert!((l.packet_cost() - 3.75e-6).abs() < 1e-12);
        // 100k packets/s more are predicted at 0.1875 + 0.375 = 0.5625 (a
        // busy ratio per packet would say 0.90)...
        for _ in 0..100 {
            l.admit(t0, 1000.0, Refusal::ViewerLoad).unwrap();
        }
        assert!((l.predicted(t0) - 0.5625).abs() < 1e-9);
        // ...and that is what the heavier load measures: 0.45 + 0.15 × 3 / 4.
        let t1 = t0 + PENDING_FOR;
        l.on_sample(t1, window(150_000, 3), 150_000, 0);
        assert!((l.busy_ratio - 0.60).abs() < 1e-9);
        assert!((l.predicted(t1) - 0.5625).abs() < 1e-9, "{}", l.load);
        assert!((l.cost_s - 3e-6).abs() < 1e-12);
        assert!((l.message_cost_s - 3e-6).abs() < 1e-12);
        assert!((l.batch - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_quiet_window_moves_the_cost_back_toward_the_prior() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 40e-6; // left over from a setup burst
        l.message_cost_s = 40e-6;
        // Setup windows: sends, but no media.
        let setup = LoadSample {
            send: Duration::from_millis(100),
            messages: 5000,
            datagrams: 5000,
            ..sample(300)
        };
        for _ in 0..10 {
            l.on_sample(t0, setup, 10, 0);
        }
        assert!((l.cost_s - PRIOR_COST_S).abs() < 5e-6, "{}", l.cost_s);
        assert!((l.message_cost_s - PRIOR_MESSAGE_COST_S).abs() < 5e-6);
        let zero = LoadSample::default();
        l.on_sample(t0, zero, 1, 0);
        assert_eq!(l.samples, 10, "an empty window is no sample");
    }

    #[test]
    fn setups_are_not_charged_to_packets() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        // 100 joins (100 ms of setup) and 80k packets in 500 ms of work:
        // the packets cost 400 ms / 80k = 5 µs, not 6.25 µs.
        l.on_sample(t0, sample(500), 80_000, 100);
        assert!((l.cost_s - 5e-6).abs() < 1e-9, "{}", l.cost_s);
        // Nor to the load: a join burst passes, the media stays.
        assert!((l.load - 0.4).abs() < 1e-9 && (l.busy_ratio - 0.5).abs() < 1e-9);
        // More setups than busy time (a join storm): still a positive cost.
        l.on_sample(t0, sample(100), 10_000, 1000);
        assert!(l.cost_s > 0.0);
        assert!((l.load - 0.01).abs() < 1e-9);
    }

    #[test]
    fn sheds_down_then_pause_heaviest_room_newest_first_then_close() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 1e-4;
        // Room 0: simulcast viewers 1..=3 at 500 pps (200 pps one layer down).
        // Room 1: plain viewers 4..=5 at 300 pps.
        let mut vs: Vec<ViewerLoad> = (1..=3)
            .map(|n| ViewerLoad {
                down_pps: Some(200.0),
                ..viewer(n, 0, 500.0)
            })
            .collect();
        vs.push(viewer(4, 1, 300.0));
        vs.push(viewer(5, 1, 300.0));
        let mut g = Governor::default();

        // Over the ceiling by less than the margin: nothing yet.
        l.load = 0.895;
        assert!(g.plan(t0, &l, &vs).is_empty());
        // Over by 0.055 = 550 pps: two down-switches (newest first) cover it.
        l.load = 0.905;
        assert!(
            g.plan(t0, &l, &vs).is_empty(),
            "one sample over is not enough"
        );
        assert_eq!(
            g.plan(t0, &l, &vs),
            vec![Action::Down(sid(3)), Action::Down(sid(2))]
        );
        // The next sample is skipped while the switches take effect.
        assert!(g.plan(t0, &l, &vs).is_empty());

        // Over by 0.15 = 1,500 pps: all three down (900), then the heaviest
        // room's newest viewers are paused: 3 (its remaining 200), 2, 1.
        l.load = 1.0;
        let plan = g.plan(t0, &l, &vs);
        assert_eq!(
            plan,
            vec![
                Action::Down(sid(3)),
                Action::Down(sid(2)),
                Action::Down(sid(1)),
                Action::Pause(sid(3)),
                Action::Pause(sid(2)),
                Action::Pause(sid(1)),
            ]
        );
        assert!(g.plan(t0, &l, &vs).is_empty());

        // Everyone paused and still over: the newest paused are closed.
        for v in &mut vs {
            v.paused_since = Some(t0);
            v.resume_pps = Some(v.pps);
            v.pps = 0.0;
        }
        let plan = g.plan(t0, &l, &vs);
        assert_eq!(plan.first(), Some(&Action::Close(sid(5))));
        assert_eq!(plan.len(), 5);
        assert_eq!(g.counts, [5, 3, 5, 0, 0]);
    }

    #[test]
    fn an_edge_pull_is_never_moved_down_and_is_shed_after_every_ordinary_viewer() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 1e-4;
        // The newest viewer, of the heaviest room, is an edge's pull that
        // could go down a layer; two ordinary viewers in another room.
        let pull = ViewerLoad {
            down_pps: Some(100.0),
            edge: true,
            ..viewer(3, 0, 2000.0)
        };
        let mut vs = vec![viewer(1, 1, 300.0), viewer(2, 1, 300.0), pull];
        let mut g = Governor::default();
        // 500 pps over: the ordinary viewers are paused, not the pull.
        l.load = 0.90;
        assert!(g.plan(t0, &l, &vs).is_empty());
        assert_eq!(
            g.plan(t0, &l, &vs),
            vec![Action::Pause(sid(2)), Action::Pause(sid(1))]
        );
        assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
        // Still over with every ordinary viewer paused: now the pull.
        for v in &mut vs[..2] {
            v.paused_since = Some(t0);
            v.resume_pps = Some(v.pps);
            v.pps = 0.0;
        }
        assert_eq!(g.plan(t0, &l, &vs), vec![Action::Pause(sid(3))]);
        assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
        // A paused pull is closed only once no ordinary viewer is left.
        vs[2].paused_since = Some(t0);
        vs[2].resume_pps = Some(2000.0);
        vs[2].pps = 0.0;
        vs.push(viewer(4, 1, 0.0)); // joined, no media yet
        assert_eq!(
            g.plan(t0, &l, &vs),
            vec![Action::Close(sid(2)), Action::Close(sid(1))]
        );
        vs.pop();
        assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
        let plan = g.plan(t0, &l, &vs);
        assert_eq!(plan.last(), Some(&Action::Close(sid(3))), "{plan:?}");
        // When load falls, the pull resumes first.
        let mut g = Governor::default();
        l.load = 0.0;
        assert_eq!(g.plan(t0, &l, &vs)[0], Action::Resume(sid(3)));
    }

    #[test]
    fn no_shedding_while_admitted_sessions_start() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 1e-4;
        l.admit(t0, 100.0, Refusal::ViewerLoad).unwrap();
        l.load = 0.95; // their first seconds cost more: 1,000 pps over
        let vs = vec![viewer(1, 0, 1200.0), viewer(2, 0, 1200.0)];
        let mut g = Governor::default();
        let t1 = t0 + Duration::from_secs(1);
        let t2 = t0 + Duration::from_secs(2);
        assert!(g.plan(t1, &l, &vs).is_empty());
        assert!(g.plan(t2, &l, &vs).is_empty());
        // Started: two samples over, then the newest is paused.
        assert!(g.plan(t0 + PENDING_FOR, &l, &vs).is_empty());
        let t4 = t0 + PENDING_FOR + Duration::from_secs(1);
        assert_eq!(g.plan(t4, &l, &vs), vec![Action::Pause(sid(2))]);
    }

    #[test]
    fn a_ceiling_near_one_still_sheds() {
        let t0 = Instant::now();
        let mut l = Load::new(0.95);
        l.cost_s = 1e-4;
        l.load = 0.98; // 0.03 over: more than half of the 0.05 left to 1
        let vs = vec![viewer(1, 0, 300.0), viewer(2, 0, 300.0)];
        let mut g = Governor::default();
        assert!(g.plan(t0, &l, &vs).is_empty());
        assert_eq!(g.plan(t0, &l, &vs), vec![Action::Pause(sid(2))]);
        // At the default ceiling 0.04 over is within the margin.
        let mut l = Load::new(DEFAULT_MAX_LOAD);
        l.load = DEFAULT_MAX_LOAD + 0.04;
        let mut g = Governor::default();
        assert!(g.plan(t0, &l, &vs).is_empty());
        assert!(g.plan(t0, &l, &vs).is_empty());
    }

    #[test]
    fn pauses_the_heaviest_room_first() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 3.5e-4;
        l.load = 0.92; // 200 pps over
                       // Room 0: one 550 pps viewer (the newest); room 1: two 300 pps viewers.
        let vs = vec![
            viewer(1, 1, 300.0),
            viewer(2, 1, 300.0),
            viewer(3, 0, 550.0),
        ];
        let mut g = Governor::default();
        assert!(g.plan(t0, &l, &vs).is_empty());
        assert_eq!(g.plan(t0, &l, &vs), vec![Action::Pause(sid(2))]);
    }

    #[test]
    fn resumes_oldest_first_within_budget_then_lifts_caps() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.cost_s = 1e-5;
        let paused = |n: u64| ViewerLoad {
            paused_since: Some(t0),
            resume_pps: Some(500.0),
            ..viewer(n, 0, 0.0)
        };
        let vs = vec![
            paused(3),
            paused(1),
            paused(2),
            ViewerLoad {
                uncapped_pps: Some(800.0),
                ..viewer(4, 0, 300.0)
            },
        ];
        let mut g = Governor::default();
        // At 0.85 - 0.10 - 0.012 there is room for 1,200 pps: two resumes.
        l.load = 0.738;
        assert_eq!(
            g.plan(t0, &l, &vs),
            vec![Action::Resume(sid(1)), Action::Resume(sid(2))]
        );
        assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
        // Plenty of room: every paused viewer, then the cap.
        l.load = 0.2;
        assert_eq!(
            g.plan(t0, &l, &vs),
            vec![
                Action::Resume(sid(1)),
                Action::Resume(sid(2)),
                Action::Resume(sid(3)),
                Action::Lift(sid(4))
            ]
        );
        // Between the resume level and the ceiling nothing happens.
        let mut g = Governor::default();
        l.load = 0.8;
        assert!(g.plan(t0, &l, &vs).is_empty());
    }

    #[test]
    fn paused_too_long_under_load_is_closed() {
        let t0 = Instant::now();
        let mut l = Load::new(0.85);
        l.load = 0.8; // loaded but not over: no shedding, no resume
        let v = ViewerLoad {
            paused_since: Some(t0),
            resume_pps: Some(500.0),
            ..viewer(1, 0, 0.0)
        };
        let mut g = Governor::default();
        assert!(g
            .plan(t0 + Duration::from_secs(29), &l, std::slice::from_ref(&v))
            .is_empty());
        assert_eq!(
            g.plan(t0 + PAUSE_LIMIT, &l, &[v]),
            vec![Action::Close(sid(1))]
        );
    }
}
