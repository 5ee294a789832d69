//! The sans-IO core: every room, session and `Rtc`, and no I/O at all.
//!
//! Push input in with [`Sfu::handle_command`], [`Sfu::handle_receive`] and
//! [`Sfu::handle_timeout`], each taking `now`; then pull output with
//! [`Sfu::poll_output`] until it returns [`Output::Timeout`]. The core never
//! reads the clock, opens a socket, touches a file or spawns a thread.
//!
//! # One RTP packet through the files
//!
//! 1. `ingress.rs`: [`Sfu::handle_receive`] classifies the datagram and finds
//!    its session in `demux.rs` (by ICE ufrag for STUN, by address for DTLS and
//!    SRTP; STUN that str0m would refuse is shimmed there too), then hands it
//!    to the source's `Rtc` through the one guarded call ([`session::guarded`]).
//! 2. `session.rs`: `drain` polls that `Rtc`; the decrypted packet comes out
//!    as an `Event::RtpPacket`, which `Sfu::process` dispatches here.
//! 3. `source.rs`: the packet becomes a [`source::SourcePacket`] (clear
//!    header fields and the shared payload) and the source resolves its
//!    track, layer and codec. This is where a room's source, whatever its
//!    kind (`room.rs` states the contract), meets the fan-out.
//! 4. `forward.rs`: `forward_in` works out the packet's facts once (kind,
//!    layer, codec, keyframe, picture size, VP8/VP9 ids), counts it on the
//!    room's track (`room.rs`, `simulcast.rs`) and copies it to the recorder
//!    (`recorder_tap.rs`); `fan_out` then writes it to each viewer's `Rtc`,
//!    renumbered by the viewer's stream (`out_stream.rs`). With several
//!    workers, the room's home core then queues one clear copy per other
//!    worker with viewers of the room (`relay.rs`, [`Output::Relay`]); that
//!    worker's core takes it in through [`Sfu::handle_relay`], where the
//!    relay is the room's source, and runs steps 4 to 6 for its own viewers.
//! 5. `layers.rs`: a viewer waiting for a keyframe, or a layer whose rate
//!    moved, leads to a keyframe request (sent to the source by
//!    `Sfu::ask_source` in `source.rs`, the one dispatch on the source's
//!    kind) or a new layer choice.
//! 6. `forward.rs` again: [`Sfu::poll_output`] drains each written viewer once
//!    per batch (`drain_written`), a few at a time in fan-out order, edges
//!    first, and hands out their SRTP datagrams before it makes the next.
//!
//! Sessions begin and end in `lifecycle.rs` (publish, view, patch, close);
//! an edge's pull of a room from its origin, a session in the client role
//! that is the room's source, in `upstream.rs` (its end reaches the driver
//! as [`Output::Upstream`]); SDP text is read in `sdp.rs`; timers live in
//! `timers.rs`.

pub mod command;
pub mod demux;
pub mod dtls;
mod forward;
pub mod handshake;
pub mod id;
mod ingress;
mod layers;
mod lifecycle;
pub mod out_stream;
pub mod overload;
pub mod per_kind;
pub mod recorder_tap;
pub mod relay;
pub mod room;
pub mod sdp;
pub mod session;
pub mod shed;
pub mod simulcast;
pub mod source;
pub mod stats;
pub mod timers;
pub mod upstream;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::config::DtlsCert;
use str0m::media::Rid;
use str0m::net::Transmit;
use str0m::{Event, IceConnectionState, Input};

pub use command::{ApiError, Command, Reply, Role, RoomInfo, TrackInfo};
pub use id::{IdGen, RoomName, SessionId, SessionToken, TokenShard};
pub use stats::{DropReason, Stats};
pub use upstream::{UpstreamEnd, UpstreamEvent};

use demux::Demux;
use per_kind::kind_name;
use room::Room;
use session::{guarded, Session, Sinks};
use timers::Timers;

/// Settings of the core. Durations are in simulated or real time alike.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates put in every answer; received datagrams are attributed to one of them.
    pub candidates: Vec<SocketAddr>,
    /// Most rooms at once (`AtCapacity` above).
    pub max_rooms: usize,
    /// Most sessions at once (`AtCapacity` above).
    pub max_sessions: usize,
    /// A session that is not connected (ICE + DTLS) this long after creation is closed.
    pub connect_timeout: Duration,
    /// At most one keyframe request per publisher track in this interval.
    pub keyframe_interval: Duration,
    /// Seed for session tokens and initial RTP numbers.
    pub seed: [u8; 32],
    /// Record publishers' tracks unless a publish says otherwise.
    pub record_default: bool,
    /// A recorder exists; without one, a publish's `record` override is ignored.
    pub recording_available: bool,
    /// Ceiling on the event loop's predicted busy ratio: sessions that would
    /// exceed it are refused (`Overloaded`), and viewers are shed above it
    /// (see [`overload`]). `f64::INFINITY` turns overload control off.
    pub max_load: f64,
    /// The DTLS certificate (and key) of every session, as Janus and
    /// mediasoup share one per process; each answer's `a=fingerprint` is its
    /// hash. `None`: [`Sfu::new`] makes one. Saves each session a key pair.
    pub dtls_cert: Option<DtlsCert>,
    /// This core's place among the process's workers: it makes only session
    /// tokens its worker owns, and numbers its recordings apart from the
    /// other workers'. Default: the only worker.
    pub shard: id::TokenShard,
    /// Local addresses for upstreams (see [`upstream`]), one upstream on
    /// each at a time: the driver binds a UDP socket on each, hands what
    /// arrives there to [`Sfu::handle_receive`] with that address as the
    /// destination, and sends each `Transmit` from the socket of its
    /// `source`. A peer connection is one 5-tuple, so two upstreams to the
    /// same origin need two local addresses. Empty: upstreams use the
    /// shared socket of `candidates`, and a second upstream to an origin
    /// address already in use is refused (`AtCapacity`).
    pub upstream_addrs: Vec<SocketAddr>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            candidates: vec![SocketAddr::from(([127, 0, 0, 1], 8189))],
            max_rooms: 1000,
            max_sessions: 10_000,
            connect_timeout: Duration::from_secs(15),
            keyframe_interval: Duration::from_secs(1),
            seed: [0; 32],
            record_default: false,
            recording_available: false,
            max_load: overload::DEFAULT_MAX_LOAD,
            dtls_cert: None,
            shard: id::TokenShard::default(),
            upstream_addrs: Vec::new(),
        }
    }
}

/// A viewer's bandwidth estimate before any feedback (bit/s): low, so a
/// simulcast viewer starts on a small layer and climbs.
pub const INITIAL_ESTIMATE: u64 = 300_000;

/// How long a session that ended by itself still answers DELETE with 200.
pub const ENDED_GRACE: Duration = Duration::from_secs(60);

/// One viewer's simulcast state (see [`Sfu::viewer_layers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerLayers {
    /// The layer being forwarded.
    pub current: Option<Rid>,
    /// The layer wanted (a switch waits for its keyframe).
    pub target: Option<Rid>,
    /// The layer pinned by the viewer, if any.
    pub pinned: Option<Rid>,
    /// The viewer's bandwidth estimate, bit/s.
    pub estimate: Option<u64>,
    /// Layer switches so far.
    pub switches: u64,
    /// The publisher's layers: rid, measured bit/s, active, picture size.
    pub layers: Vec<(Rid, u64, bool, Option<crate::codec::PictureSize>)>,
}

/// What [`Sfu::poll_output`] returns.
// Not boxed: a box would be one allocation per relayed packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Hand this to the recorder (never blocks forwarding: drop it if the recorder is behind).
    Record(recorder_tap::RecordEvent),
    /// Hand this to worker `to`'s core ([`Sfu::handle_relay`]) without
    /// blocking; if its queue is full, give it back to [`Sfu::relay_dropped`].
    Relay {
        /// The worker.
        to: usize,
        /// The message.
        msg: relay::RelayMsg,
    },
    /// For the relay driver: an upstream ended (see [`upstream`]).
    Upstream(UpstreamEvent),
    /// Nothing to send; call [`Sfu::handle_timeout`] at this instant (or on new input).
    Timeout(Instant),
}

/// Sizes of every map, for tests that assert nothing leaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sessions.
    pub sessions: usize,
    /// Rooms.
    pub rooms: usize,
    /// Session tokens.
    pub tokens: usize,
    /// Address map entries.
    pub addrs: usize,
    /// Ufrag map entries.
    pub ufrags: usize,
    /// Sessions with address lists.
    pub addr_lists: usize,
    /// Pending keyframe timers.
    pub keyframe_timers: usize,
    /// Tokens of sessions that ended by themselves, kept for a late DELETE
    /// (bounded; emptied after [`ENDED_GRACE`]).
    pub recently_ended: usize,
    /// Upstream addresses (`SfuConfig::upstream_addrs`) in use.
    pub upstream_addrs_used: usize,
}

/// The Manager of rooms, and owner of every session.
///
/// The state is split so that the fan-out borrows what it needs side by
/// side: the sessions, the rooms, and the [`Outbox`] it writes into.
pub struct Sfu {
    config: SfuConfig,
    ids: IdGen,
    next_id: u64,
    last_now: Instant,
    sessions: id::IdMap<Session>,
    tokens: HashMap<SessionToken, SessionId>,
    rooms: HashMap<RoomName, Room>,
    /// Rooms removed so far (for the dispatcher's map of homes, `src/workers.rs`).
    rooms_removed: u64,
    demux: Demux,
    timers: Timers,
    /// Video layers (room, layer index) that owe a keyframe request, with when it is allowed.
    keyframe_timers: Vec<(Instant, RoomName, u8)>,
    out: Outbox,
    /// Sessions that ended without a DELETE, oldest first (see `remember_ended`).
    ended: VecDeque<(Instant, SessionToken, Role, RoomName)>,
    /// Measured load and admitted-but-unmeasured load (overload control).
    load: overload::Load,
    /// Shedding state between load samples.
    governor: overload::Governor,
    /// `rtp_forwarded` and sessions created at the last load sample.
    load_mark: (u64, u64),
    /// The fan-out's catch-up with ingress (overload control); its share is
    /// copied to `Outbox::fanout_keep` when it changes.
    catchup: overload::Catchup,
    /// Copies dropped for `DropReason::Overload` at the last load sample.
    skipped_mark: u64,
    /// The upstream on each of `config.upstream_addrs`, if any.
    upstream_slots: Vec<Option<SessionId>>,
}

/// What one call leaves behind: output for the driver, work to finish
/// before the call returns, and the counters.
struct Outbox {
    transmits: VecDeque<Transmit>,
    /// Viewers written to since the last drain, each once (`Session::queued`;
    /// so at most one entry per session): `poll_output` gives each one str0m
    /// timeout and one drain, so the packets of one ingress batch cost a
    /// viewer one drain, not one each.
    written: Vec<SessionId>,
    /// How far [`Sfu::drain_written`] has drained `written`.
    written_at: usize,
    records: VecDeque<recorder_tap::RecordEvent>,
    /// Messages for other workers' cores: (worker, message).
    relays: VecDeque<(usize, relay::RelayMsg)>,
    /// Control messages a full queue refused, sent again at the next
    /// timeout (at most `relay::MAX_RETRY`).
    relay_retry: Vec<relay::RelayMsg>,
    /// Upstream events for the driver: at most one per upstream, and at
    /// most one upstream per room.
    upstream: VecDeque<UpstreamEvent>,
    next_recording: u64,
    events: VecDeque<(SessionId, Event)>,
    /// Sessions marked dead, ended at the end of the current call.
    doomed: Vec<SessionId>,
    /// Relayed copies whose need set may have changed (`Room::need_dirty`:
    /// each at most once), sent by the next `poll_output`.
    need_dirty: Vec<RoomName>,
    stats: Stats,
    /// The error of the last drain that ended a session (its handshake
    /// failure's reason); taken by `settle`.
    rtc_error: Option<String>,
    /// Of each room's viewers (in join order) the fan-out serves the first
    /// `overload::served(n, fanout_keep)` ([`overload::KEEP_ALL`]: all).
    fanout_keep: u32,
}

/// Why a session is ended (see [`Outbox::doom`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A panic in its work, caught by [`session::guarded`]; names the call.
    Panic(&'static str),
    /// Not connected within `connect_timeout` (its length).
    ConnectTimeout(std::time::Duration),
    /// An upstream whose room had no viewers for `timers::UPSTREAM_IDLE`.
    Idle,
    /// The peer is gone: DTLS closed, ICE disconnected, or its `Rtc` errored.
    Gone,
}

impl Outbox {
    /// Where a drain of session `Rtc`s puts its output.
    fn sinks(&mut self) -> Sinks<'_> {
        Sinks {
            transmits: &mut self.transmits,
            events: &mut self.events,
            error: &mut self.rtc_error,
        }
    }

    /// End session `s` at the end of the current call: count why, mark it
    /// dead (nothing is written to it any more) and queue its close.
    fn doom(&mut self, s: &mut Session, why: Why) {
        match why {
            Why::Panic(call) => {
                self.stats.caught_panics += 1;
                log::error!("session {:?}: panic in {call}; closing it", s.id);
            }
            Why::ConnectTimeout(t) => {
                self.stats.connect_timeouts += 1;
                handshake::report(&mut self.stats, s, handshake::Ending::Timeout(t));
            }
            Why::Gone => handshake::report(&mut self.stats, s, handshake::Ending::Failed),
            Why::Idle => {}
        }
        if let Some(p) = s.pull.as_mut() {
            p.end.get_or_insert(match why {
                Why::ConnectTimeout(_) => UpstreamEnd::ConnectTimeout,
                Why::Idle => UpstreamEnd::Idle,
                Why::Panic(_) | Why::Gone => UpstreamEnd::Failed,
            });
        }
        if !std::mem::replace(&mut s.dead, true) {
            self.doomed.push(s.id);
        }
    }
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("sessions", &self.sessions.len())
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

impl Sfu {
    /// A core with no rooms. `now` is the start of its clock.
    pub fn new(mut config: SfuConfig, now: Instant) -> Sfu {
        assert!(
            !config.candidates.is_empty(),
            "at least one candidate address"
        );
        config.dtls_cert.get_or_insert_with(dtls::new_dtls_cert);
        // Recording ids are unique in the process: workers share one recorder.
        let recording_base = (config.shard.index as u64) << 40;
        let config_upstreams = config.upstream_addrs.len();
        Sfu {
            ids: IdGen::new(config.seed),
            load: overload::Load::new(config.max_load),
            config,
            next_id: 0,
            last_now: now,
            sessions: id::IdMap::default(),
            tokens: HashMap::new(),
            rooms: HashMap::new(),
            rooms_removed: 0,
            demux: Demux::default(),
            timers: Timers::default(),
            keyframe_timers: Vec::new(),
            out: Outbox {
                transmits: VecDeque::new(),
                written: Vec::new(),
                written_at: 0,
                records: VecDeque::new(),
                relays: VecDeque::new(),
                relay_retry: Vec::new(),
                next_recording: recording_base,
                upstream: VecDeque::new(),
                events: VecDeque::new(),
                doomed: Vec::new(),
                need_dirty: Vec::new(),
                stats: Stats::default(),
                rtc_error: None,
                fanout_keep: overload::KEEP_ALL,
            },
            ended: VecDeque::new(),
            governor: overload::Governor::default(),
            load_mark: (0, 0),
            catchup: overload::Catchup::default(),
            skipped_mark: 0,
            upstream_slots: vec![None; config_upstreams],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    // ------------------------------------------------------------------ input

    /// Execute one command from the HTTP side.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<Reply, ApiError> {
        self.tick(now);
        let r = match cmd {
            Command::Publish {
                room,
                offer,
                record,
            } => self.publish(now, room, &offer, record),
            Command::RequestKeyframe { room } => {
                self.room_keyframe(now, &room);
                Ok(Reply::Done)
            }
            Command::Subscribe { room, offer, edge } => self.subscribe(now, room, &offer, edge),
            Command::SubscribeRelayed {
                room,
                offer,
                home,
                edge,
                simulcast,
            } => self.subscribe_relayed(now, room, &offer, home, edge, simulcast),
            Command::DeleteSession { role, room, token } => self.delete(now, role, &room, token),
            Command::Patch {
                role,
                room,
                token,
                if_match,
                fragment,
            } => {
                let id = self.session_of(role, &room, token)?;
                let r = self.patch(now, id, if_match.as_deref(), &fragment);
                self.process(now);
                r
            }
            Command::CloseRoom { room } => self
                .close_room(now, &room)
                .map(|n| Reply::RoomClosed { sessions: n }),
            Command::ListRooms => Ok(Reply::Rooms(self.list_rooms(now))),
            Command::Stats => Ok(Reply::Stats(Box::new(self.stats()))),
            Command::Pull { room } => self.pull(now, room),
            Command::PullAnswer {
                room,
                token,
                answer,
            } => self.pull_answer(now, &room, token, &answer),
            Command::PullFailed { room, token } => self.pull_failed(now, &room, token),
            Command::PinLayer {
                role,
                room,
                token,
                rid,
                media,
            } => self.pin_layer(now, role, &room, token, rid.as_deref(), media),
            Command::ViewerState { role, room, token } => self
                .viewer_state(role, &room, token)
                .map(|v| Reply::ViewerState(Box::new(v))),
        };
        self.process(now);
        r
    }

    /// A datagram arrived from `source` on the local socket `destination`.
    ///
    /// `destination` may be the wildcard address the socket is bound to; it is
    /// then attributed to a configured candidate of the same family.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.tick(now);
        self.receive(now, source, destination, buf);
        self.process(now);
    }

    /// Time has advanced to `now`: fire due session timers and keyframe requests.
    /// Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some((id, gen)) = self.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.timer.gen != gen {
                continue;
            }
            s.timer.at = None;
            if s.pull
                .as_ref()
                .and_then(|p| p.idle_deadline())
                .is_some_and(|t| now >= t)
            {
                self.out.doom(s, Why::Idle);
                continue;
            }
            if !s.connected && now >= s.created + self.config.connect_timeout {
                self.out
                    .doom(s, Why::ConnectTimeout(self.config.connect_timeout));
                continue;
            }
            if guarded(&mut s.rtc, |rtc| rtc.handle_input(Input::Timeout(now))).is_err() {
                self.out.doom(s, Why::Panic("handle_input(Timeout)"));
                continue;
            }
            self.drain_session(id);
        }
        while self
            .ended
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.0) >= ENDED_GRACE)
        {
            self.ended.pop_front();
        }
        let sessions = &self.sessions;
        self.timers.compact(sessions.len(), |id, gen| {
            sessions.get(&id).is_some_and(|s| s.timer.gen == gen)
        });
        self.fire_keyframe_timers(now);
        if !self.out.relay_retry.is_empty() {
            self.relay_retry();
        }
        self.process(now);
    }

    /// Next output: a datagram to send, or the instant of the next timeout.
    pub fn poll_output(&mut self) -> Output {
        loop {
            if let Some(t) = self.out.transmits.pop_front() {
                self.out.stats.datagrams_out += 1;
                self.out.stats.bytes_out += t.contents.len() as u64;
                return Output::Transmit(t);
            }
            if self.out.written.is_empty() {
                break;
            }
            // A few viewers at a time: their datagrams go out before the
            // rest are made (`drain_written`).
            self.drain_written();
        }
        if let Some(r) = self.out.records.pop_front() {
            return Output::Record(r);
        }
        if !self.out.need_dirty.is_empty() {
            self.flush_needs();
        }
        if let Some((to, msg)) = self.out.relays.pop_front() {
            return Output::Relay { to, msg };
        }
        if let Some(u) = self.out.upstream.pop_front() {
            return Output::Upstream(u);
        }
        let far = self.last_now + Duration::from_secs(1);
        let next = [
            self.timers.next(),
            self.keyframe_timers.iter().map(|(t, _, _)| *t).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far);
        Output::Timeout(next.min(far))
    }

    // ---------------------------------------------------------------- queries

    /// Rooms, sorted by name.
    pub fn list_rooms(&self, now: Instant) -> Vec<RoomInfo> {
        let mut v: Vec<RoomInfo> = self
            .rooms
            .values()
            .map(|r| RoomInfo {
                name: r.name.to_string(),
                publisher_live: r
                    .source_id()
                    .and_then(|p| self.sessions.get(&p))
                    .is_some_and(|s| s.connected),
                tracks: r
                    .tracks
                    .iter()
                    .filter_map(|(kind, t)| t.as_ref().map(|t| (kind, t)))
                    .map(|(kind, t)| TrackInfo {
                        kind: kind_name(kind),
                        codec: t.codec.map(|c| c.to_string()).unwrap_or_default(),
                        packets: t.packets,
                        bytes: t.bytes,
                    })
                    .collect(),
                viewers: r.subscribers.len(),
                recording: r.record && r.source.is_some(),
                relayed: r
                    .source
                    .is_some_and(|s| s.kind == room::SourceKind::Upstream),
                uptime_s: now.saturating_duration_since(r.created).as_secs_f64(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// RTP packets written to viewers so far (cheap: no snapshot).
    pub fn forwarded(&self) -> u64 {
        self.out.stats.rtp_forwarded
    }

    /// Live sessions (cheap: no snapshot).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Rooms whose packets do not come from another worker: summed over
    /// the workers, each room of the process once.
    pub fn home_room_count(&self) -> usize {
        self.rooms
            .values()
            .filter(|r| r.relay_home().is_none())
            .count()
    }

    /// Number of rooms (a relayed room's copy on this worker included).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Rooms (and relayed copies) removed since the core started: when it
    /// moves, some room ended here (cheap: no snapshot).
    pub fn rooms_removed(&self) -> u64 {
        self.rooms_removed
    }

    /// A snapshot of the counters, with the live gauges filled in.
    pub fn stats(&self) -> Stats {
        let mut s = self.out.stats.clone();
        s.sessions_live = [0, 0];
        s.sessions_connected = [0, 0];
        for x in self.sessions.values() {
            if x.pull.is_some() {
                s.relay_upstreams += 1;
                s.relay_upstreams_connected += u64::from(x.connected);
                continue;
            }
            let i = role_index(x.role);
            s.sessions_live[i] += 1;
            s.relay_downstreams += u64::from(x.downstream_edge);
            if x.connected {
                s.sessions_connected[i] += 1;
            }
            if x.shed.paused.is_some() {
                s.viewers_paused += 1;
            }
        }
        s.rooms = self.home_room_count() as u64;
        s.admission_refusals = self.load.refusals;
        s.loop_busy_ratio = self.load.busy_ratio;
        s.loop_load_ratio = self.load.load;
        s.load_headroom = self.load.headroom(self.last_now);
        s.load_headroom_pps = self.load.headroom_pps(self.last_now);
        s.cost_per_packet_s = self.load.cost_s;
        s.cost_per_message_s = self.load.message_cost_s;
        s.send_batch = self.load.batch;
        s.fanout_skip_ratio = 1.0 - self.catchup.keep();
        s.ingress_delay_s = self.load.lag.max_delay.as_secs_f64();
        s
    }

    /// Sizes of every internal map.
    pub fn counts(&self) -> Counts {
        let (addrs, ufrags, addr_lists) = self.demux.sizes();
        Counts {
            sessions: self.sessions.len(),
            rooms: self.rooms.len(),
            tokens: self.tokens.len(),
            addrs,
            ufrags,
            addr_lists,
            keyframe_timers: self.keyframe_timers.len(),
            recently_ended: self.ended.len(),
            upstream_addrs_used: self.upstream_slots.iter().flatten().count(),
        }
    }

    // --------------------------------------------------------------- dispatch

    fn tick(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    /// Handle queued events, then end sessions marked dead. Events can queue
    /// more events (a viewer's keyframe request drains the publisher), so this
    /// loops until both are empty.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((id, ev)) = self.out.events.pop_front() {
                self.on_event(now, id, ev);
            }
            if self.out.doomed.is_empty() {
                break;
            }
            for id in std::mem::take(&mut self.out.doomed) {
                self.remember_ended(now, id);
                self.close_session(now, id);
            }
        }
    }

    /// One event from session `id`'s `Rtc`.
    fn on_event(&mut self, now: Instant, id: SessionId, ev: Event) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match ev {
            Event::RtpPacket(p) if s.role == Role::Publisher => self.forward(now, id, p),
            Event::Connected => {
                s.connected = true;
                log::info!("room {}: {} {id:?} connected", s.room, s.role.path_prefix());
                if s.role == Role::Subscriber {
                    let room = s.room.clone();
                    if !s.relay_layers.is_empty() {
                        // Every layer it takes starts on a keyframe.
                        let n = s.relay_layers.len() as u8;
                        for layer in 0..n {
                            self.request_keyframe(now, &room, layer);
                        }
                    } else if self.is_simulcast(&room) {
                        // Chooses a target and asks for its keyframe.
                        self.select_layers(now, &room, Some(id));
                    } else {
                        self.request_keyframe(now, &room, 0);
                    }
                }
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => s.handshake.ice_up = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                log::info!("room {}: {id:?} ICE disconnected", s.room);
                self.out.doom(s, Why::Gone);
            }
            Event::PeerStats(p) => self.on_peer_stats(now, id, p),
            Event::MediaIngressStats(m) if s.role == Role::Publisher => {
                let kind = s.kind_of_track(m.mid);
                self.out.stats.nacks_sent += m.nacks.saturating_sub(s.nacks_seen[kind]);
                s.nacks_seen[kind] = s.nacks_seen[kind].max(m.nacks);
            }
            Event::MediaEgressStats(m) if s.role == Role::Subscriber => {
                let kind = s.kind_of_out(m.mid);
                self.out.stats.nacks_received += m.nacks.saturating_sub(s.nacks_seen[kind]);
                s.nacks_seen[kind] = s.nacks_seen[kind].max(m.nacks);
            }
            Event::Closed => self.out.doom(s, Why::Gone),
            Event::KeyframeRequest(r) => {
                self.out.stats.keyframe_requests_received += 1;
                let is_video = s.outs.video.as_ref().is_some_and(|o| o.mid == r.mid);
                if s.role == Role::Subscriber && is_video {
                    let room = s.room.clone();
                    let layer = if s.relay_layers.is_empty() {
                        s.sel.current.or(s.sel.target).unwrap_or(0)
                    } else {
                        // The layer of the rid asked for, by position.
                        let at = s
                            .relay_layers
                            .iter()
                            .position(|(rid, _)| r.rid == Some(*rid));
                        at.unwrap_or(0) as u8
                    };
                    self.request_keyframe(now, &room, layer);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                if s.role == Role::Subscriber && !s.sel.raw_estimate =>
            {
                s.sel.estimate = Some(estimate.as_u64());
                let room = s.room.clone();
                self.select_layers(now, &room, Some(id));
            }
            Event::StreamPaused(p) if s.role == Role::Publisher => {
                self.on_stream_paused(now, id, p)
            }
            _ => {}
        }
    }
}

/// Index of a role in the counters kept per role: publishers 0, viewers 1.
fn role_index(r: Role) -> usize {
    match r {
        Role::Publisher => 0,
        Role::Subscriber => 1,
    }
}
