//! The sans-IO core: every room, session and `Rtc`, and no I/O at all.
//!
//! Push input in with [`Sfu::handle_command`], [`Sfu::handle_receive`] and
//! [`Sfu::handle_timeout`], each taking `now`; then pull output with
//! [`Sfu::poll_output`] until it returns [`Output::Timeout`]. The core never
//! reads the clock, opens a socket, touches a file or spawns a thread.
//!
//! The Go model's operations, by their Rust names:
//!
//! | Go model | here |
//! |---|---|
//! | Manager: publish, subscribe, close room, list rooms, count rooms | [`Sfu::publish`], [`Sfu::subscribe`], [`Sfu::close_room`], [`Sfu::list_rooms`], [`Sfu::room_count`] |
//! | Room: publish, subscribe | [`room::Room::publish`], [`room::Room::subscribe`] |
//! | Room: attach a new track to every subscriber | `Sfu::attach_track` (each viewer's [`fanout::OutStream`] starts a new segment) |
//! | Room: close the publisher, remove a subscriber, prune when empty | [`room::Room::close_publisher`], [`room::Room::remove_subscriber`], [`room::Room::is_empty`] (pruned in `Sfu::close_session`) |
//! | Track fan-out: each RTP packet to every subscriber | `Sfu::forward` with one [`fanout::OutStream`] per viewer and kind |
//! | Track fan-out: optional recorder | the [`record`] tap, written by `crate::record` off the loop |

pub mod command;
pub mod demux;
pub mod dtls;
pub mod fanout;
pub mod id;
pub mod record;
pub mod resolution;
pub mod rewrite;
pub mod room;
pub mod sdp;
pub mod session;
pub mod simulcast;
pub mod stats;
pub mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::format::PayloadParams;
use str0m::media::Rid;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::Vp8Descriptor;
use str0m::rtp::{ExtensionValues, RtpPacket, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc, RtcConfig};

pub use command::{ApiError, Command, Reply, Role, RoomInfo, TrackInfo};
pub use id::{IdGen, RoomName, SessionId, SessionToken};
pub use stats::{DropReason, Stats};

use demux::{classify, stun_local_ufrag, Class, Demux};
use fanout::{OutStream, Verdict};
use room::{Room, Track};
use session::{drain, kind_index, Drained, Session, Sinks};
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
    /// The DTLS certificate (and key) of every session, as Janus and
    /// mediasoup share one per process; each answer's `a=fingerprint` is its
    /// hash. `None`: [`Sfu::new`] makes one. Saves each session a key pair.
    pub dtls_cert: Option<DtlsCert>,
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
            dtls_cert: None,
        }
    }
}

/// A viewer's bandwidth estimate before any feedback (bit/s): low, so a
/// simulcast viewer starts on a small layer and climbs.
pub const INITIAL_ESTIMATE: u64 = 300_000;

/// Resend history per viewer video stream: packets, and age.
const RTX_PACKETS: usize = 512;
const RTX_AGE: Duration = Duration::from_secs(1);

/// PRIORITY given to a verified USE-CANDIDATE check from a new address of a
/// connected session (NAT rebinding), plus the session's rebinding count:
/// above any host candidate's priority, so the newest validated address wins.
const REBIND_PRIORITY_BASE: u32 = 0x7f00_0000;
/// Binding transaction ids remembered per session, to refuse promoting a
/// replayed check: a few seconds of a client's checks.
const RECENT_TXIDS: usize = 16;

/// How long a session that ended by itself still answers DELETE with 200.
pub const ENDED_GRACE: Duration = Duration::from_secs(60);
/// Most such sessions remembered.
const MAX_ENDED: usize = 4096;

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
    pub layers: Vec<(Rid, u64, bool, Option<resolution::PictureSize>)>,
}

/// What [`Sfu::poll_output`] returns.
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Hand this to the recorder (never blocks forwarding: drop it if the recorder is behind).
    Record(record::RecordEvent),
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
}

/// The Manager of rooms, and owner of every session.
pub struct Sfu {
    config: SfuConfig,
    ids: IdGen,
    next_id: u64,
    last_now: Instant,
    sessions: id::IdMap<Session>,
    tokens: HashMap<SessionToken, SessionId>,
    rooms: HashMap<RoomName, Room>,
    demux: Demux,
    timers: Timers,
    /// Video layers (room, layer index) that owe a keyframe request, with when it is allowed.
    keyframe_timers: Vec<(Instant, RoomName, u8)>,
    transmits: VecDeque<Transmit>,
    /// Viewers written to since the last drain, each once (`Session::queued`;
    /// so at most one entry per session): `poll_output` gives each one str0m
    /// timeout and one drain, so the packets of one ingress batch cost a
    /// viewer one drain, not one each.
    written: Vec<SessionId>,
    records: VecDeque<record::RecordEvent>,
    next_recording: u64,
    events: VecDeque<(SessionId, Event)>,
    /// Sessions marked dead, ended at the end of the current call.
    doomed: Vec<SessionId>,
    /// Sessions that ended without a DELETE, oldest first (see `remember_ended`).
    ended: VecDeque<(Instant, SessionToken, Role, RoomName)>,
    stats: Stats,
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
        Sfu {
            ids: IdGen::new(config.seed),
            config,
            next_id: 0,
            last_now: now,
            sessions: id::IdMap::default(),
            tokens: HashMap::new(),
            rooms: HashMap::new(),
            demux: Demux::default(),
            timers: Timers::default(),
            keyframe_timers: Vec::new(),
            transmits: VecDeque::new(),
            written: Vec::new(),
            records: VecDeque::new(),
            next_recording: 0,
            events: VecDeque::new(),
            doomed: Vec::new(),
            ended: VecDeque::new(),
            stats: Stats::default(),
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
            Command::Subscribe { room, offer } => self.subscribe(now, room, &offer),
            Command::DeleteSession { role, room, token } => {
                let Some(id) = self.tokens.get(&token).copied() else {
                    // A session that ended by itself (peer closed first, ICE
                    // died, room closed): its first DELETE still succeeds.
                    let i = self
                        .ended
                        .iter()
                        .position(|e| e.1 == token && e.2 == role && e.3 == room)
                        .ok_or(ApiError::NotFound)?;
                    self.ended.remove(i);
                    return Ok(Reply::Deleted);
                };
                let s = &self.sessions[&id];
                if s.role != role || s.room != room {
                    return Err(ApiError::NotFound);
                }
                self.close_session(now, id);
                Ok(Reply::Deleted)
            }
            Command::Patch {
                role,
                room,
                token,
                if_match,
                fragment,
            } => {
                let id = self.tokens.get(&token).copied().ok_or(ApiError::NotFound)?;
                let s = &self.sessions[&id];
                if s.role != role || s.room != room {
                    return Err(ApiError::NotFound);
                }
                let r = self.patch(now, id, if_match.as_deref(), &fragment);
                self.process(now);
                r
            }
            Command::CloseRoom { room } => self
                .close_room(now, &room)
                .map(|n| Reply::RoomClosed { sessions: n }),
            Command::ListRooms => Ok(Reply::Rooms(self.list_rooms(now))),
            Command::Stats => Ok(Reply::Stats(Box::new(self.stats()))),
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
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += buf.len() as u64;
        let class = classify(buf);
        let id = match class {
            Class::Stun => match stun_local_ufrag(buf).and_then(|u| self.demux.by_ufrag(u)) {
                Some(id) => id,
                None => {
                    // Not for us, or a binding response/indication from a known peer.
                    match self.demux.by_addr(&source) {
                        Some(id) if stun_local_ufrag(buf).is_none() => id,
                        _ => return self.stats.drop(DropReason::StunRejected),
                    }
                }
            },
            Class::Dtls | Class::Rtp => match self.demux.by_addr(&source) {
                Some(id) => id,
                None => return self.stats.drop(DropReason::UnknownSource),
            },
            Class::Other => return self.stats.drop(DropReason::UnknownSource),
        };
        let destination = self.local_address(destination);
        let shimmed;
        // A verified check from a new address of a connected session is a NAT
        // rebinding, unless its transaction id was seen before (a replay).
        let txid: Option<[u8; 12]> = (class == Class::Stun && buf.len() >= 20)
            .then(|| buf[8..20].try_into().expect("12 bytes"));
        let replayed = match (txid, self.sessions.get_mut(&id)) {
            (Some(t), Some(s)) => {
                let seen = s.recent_txids.contains(&t);
                if !seen {
                    if s.recent_txids.len() >= RECENT_TXIDS {
                        s.recent_txids.pop_front();
                    }
                    s.recent_txids.push_back(t);
                }
                seen
            }
            _ => false,
        };
        let rebinding = class == Class::Stun
            && !replayed
            && self.demux.by_addr(&source) != Some(id)
            && self.sessions.get(&id).is_some_and(|s| s.connected);
        let buf = match class {
            Class::Stun if rebinding => {
                match self.sessions.get_mut(&id).and_then(|s| {
                    s.rebinds = s.rebinds.saturating_add(1);
                    let prio = REBIND_PRIORITY_BASE
                        .saturating_add(s.rebinds)
                        .min(0x7fff_ffff);
                    let pwd = s.rtc.direct_api().local_ice_credentials().pass;
                    demux::with_priority(buf, &pwd, prio)
                }) {
                    Some(fixed) => {
                        shimmed = fixed;
                        &shimmed[..]
                    }
                    None => buf,
                }
            }
            Class::Stun if demux::lacks_priority(buf) => {
                match self.sessions.get_mut(&id).and_then(|s| {
                    let pwd = s.rtc.direct_api().local_ice_credentials().pass;
                    demux::add_missing_priority(buf, &pwd)
                }) {
                    Some(fixed) => {
                        shimmed = fixed;
                        &shimmed[..]
                    }
                    None => buf,
                }
            }
            _ => buf,
        };
        let Ok(recv) = Receive::new(Protocol::Udp, source, destination, buf) else {
            return self.stats.drop(DropReason::RtcError);
        };
        let input = Input::Receive(now, recv);
        let Some(s) = self.sessions.get_mut(&id) else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        if class == Class::Stun && self.demux.by_addr(&source) != Some(id) {
            // First check from this address: integrity must pass before the
            // address may route DTLS and SRTP to this session.
            if !s.rtc.accepts(&input) {
                return self.stats.drop(DropReason::StunRejected);
            }
            self.demux.add_addr(source, id);
        }
        match catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("session {id:?}: input rejected: {e}");
                self.stats.drop(DropReason::RtcError);
            }
            Err(_) => {
                self.stats.caught_panics += 1;
                log::error!("session {id:?}: panic in handle_input; closing it");
                self.doomed.push(s.id);
                s.dead = true;
            }
        }
        self.drain_session(id);
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
            if !s.connected && now >= s.created + self.config.connect_timeout {
                log::info!("session {id:?} ({:?}) did not connect in time", s.room);
                self.stats.connect_timeouts += 1;
                self.doomed.push(s.id);
                s.dead = true;
                continue;
            }
            if let Err(p) =
                catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(Input::Timeout(now))))
            {
                drop(p);
                self.stats.caught_panics += 1;
                self.doomed.push(s.id);
                s.dead = true;
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
        // Keyframe requests that the throttle held back.
        let mut i = 0;
        while i < self.keyframe_timers.len() {
            if self.keyframe_timers[i].0 <= now {
                let (_, room, layer) = self.keyframe_timers.swap_remove(i);
                self.request_keyframe(now, &room, layer);
            } else {
                i += 1;
            }
        }
        self.process(now);
    }

    /// Next output: a datagram to send, or the instant of the next timeout.
    pub fn poll_output(&mut self) -> Output {
        while !self.written.is_empty() {
            self.drain_written();
        }
        if let Some(t) = self.transmits.pop_front() {
            self.stats.datagrams_out += 1;
            self.stats.bytes_out += t.contents.len() as u64;
            return Output::Transmit(t);
        }
        if let Some(r) = self.records.pop_front() {
            return Output::Record(r);
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

    /// End the session behind `token` whatever its role or room: used when
    /// the HTTP side gave up waiting and its client never got the answer.
    pub fn abandon_session(&mut self, now: Instant, token: SessionToken) {
        self.tick(now);
        if let Some(id) = self.tokens.get(&token).copied() {
            log::warn!("session {id:?}: answer not delivered; closing it");
            self.close_session(now, id);
            self.process(now);
        }
    }

    // ------------------------------------------------------------ the Manager

    /// Rooms, sorted by name.
    pub fn list_rooms(&self, now: Instant) -> Vec<RoomInfo> {
        let mut v: Vec<RoomInfo> = self
            .rooms
            .values()
            .map(|r| RoomInfo {
                name: r.name.to_string(),
                publisher_live: r
                    .publisher
                    .and_then(|p| self.sessions.get(&p))
                    .is_some_and(|s| s.connected),
                tracks: r
                    .tracks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
                    .map(|(i, t)| TrackInfo {
                        kind: if i == 0 { "audio" } else { "video" },
                        codec: t.codec.map(|c| c.to_string()).unwrap_or_default(),
                        packets: t.packets,
                        bytes: t.bytes,
                    })
                    .collect(),
                viewers: r.subscribers.len(),
                recording: r.record && r.publisher.is_some(),
                uptime_s: now.saturating_duration_since(r.created).as_secs_f64(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Close a room: end its publisher and every viewer. Returns how many sessions ended.
    pub fn close_room(&mut self, now: Instant, room: &RoomName) -> Result<usize, ApiError> {
        let r = self.rooms.get(room).ok_or(ApiError::NotFound)?;
        let ids: Vec<SessionId> = r.publisher.iter().chain(&r.subscribers).copied().collect();
        for id in &ids {
            self.remember_ended(now, *id);
            self.close_session(now, *id);
        }
        self.rooms.remove(room);
        Ok(ids.len())
    }

    /// End every session (each peer gets a DTLS close) and every room; the
    /// recordings get their `Stop`. Drain `poll_output` afterwards to send the
    /// closes. Used for a graceful shutdown.
    pub fn shutdown(&mut self, now: Instant) {
        self.tick(now);
        let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
        for r in rooms {
            let _ = self.close_room(now, &r);
        }
        let rest: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in rest {
            self.close_session(now, id);
        }
        self.process(now);
    }

    /// Test hook for fault tests: the next time the session behind `token` is
    /// drained, its work panics (inside the same `catch_unwind` that guards
    /// its str0m calls). Returns whether the session exists.
    #[doc(hidden)]
    pub fn inject_panic(&mut self, token: SessionToken) -> bool {
        let Some(s) = self
            .tokens
            .get(&token)
            .and_then(|id| self.sessions.get_mut(id))
        else {
            return false;
        };
        s.inject_panic = true;
        true
    }

    /// A snapshot of the counters, with the live gauges filled in.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.sessions_live = [0, 0];
        s.sessions_connected = [0, 0];
        for x in self.sessions.values() {
            let i = role_index(x.role);
            s.sessions_live[i] += 1;
            if x.connected {
                s.sessions_connected[i] += 1;
            }
        }
        s.rooms = self.rooms.len() as u64;
        s
    }

    /// A viewer's simulcast state, by its token: `None` for an unknown token.
    pub fn viewer_layers(&self, token: SessionToken) -> Option<ViewerLayers> {
        let id = self.tokens.get(&token)?;
        let s = self.sessions.get(id)?;
        let layers = self
            .rooms
            .get(&s.room)
            .and_then(|r| r.tracks[1].as_ref())
            .filter(|t| t.simulcast)
            .map(|t| &t.layers[..])
            .unwrap_or(&[]);
        let rid = |i: Option<u8>| i.and_then(|i| layers.get(usize::from(i))?.rid);
        Some(ViewerLayers {
            current: rid(s.sel.current),
            target: rid(s.sel.target),
            pinned: s.sel.pinned,
            estimate: s.sel.estimate,
            switches: s.sel.switches,
            layers: layers
                .iter()
                .filter_map(|l| Some((l.rid?, l.rate, !l.paused, l.size)))
                .collect(),
        })
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
        }
    }

    // ------------------------------------------------------------- sessions

    fn tick(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    /// The configured candidate a datagram to `dst` arrived on.
    fn local_address(&self, dst: SocketAddr) -> SocketAddr {
        let c = &self.config.candidates;
        if c.contains(&dst) {
            return dst;
        }
        c.iter()
            .find(|a| a.is_ipv4() == dst.is_ipv4() && a.port() == dst.port())
            .or_else(|| c.iter().find(|a| a.is_ipv4() == dst.is_ipv4()))
            .copied()
            .unwrap_or(c[0])
    }

    fn rtc_config() -> RtcConfig {
        Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_crypto_provider(dtls::crypto_provider())
    }

    fn check_capacity(&self, room: &RoomName) -> Result<(), ApiError> {
        if self.sessions.len() >= self.config.max_sessions
            || (!self.rooms.contains_key(room) && self.rooms.len() >= self.config.max_rooms)
        {
            return Err(ApiError::AtCapacity);
        }
        Ok(())
    }

    /// Build an `Rtc` for `offer` and register it. The session is complete
    /// (maps, room, timer) before the answer leaves, so the first STUN finds it.
    fn create_session(
        &mut self,
        now: Instant,
        role: Role,
        room: &RoomName,
        offer: &str,
    ) -> Result<(SessionId, SessionToken, String, String), ApiError> {
        let (mlines, bundle) = sdp::media_shape(offer);
        if mlines > 1 && !bundle {
            return Err(ApiError::Unsupported(
                "offer without BUNDLE: all media must share one transport".into(),
            ));
        }
        if offer
            .lines()
            .any(|l| l.trim_end().eq_ignore_ascii_case("a=setup:holdconn"))
        {
            return Err(ApiError::Unsupported(
                "a=setup:holdconn: the offer asks for no DTLS connection".into(),
            ));
        }
        for c in offer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        {
            let f: Vec<&str> = c.split_whitespace().collect();
            let component_ok = matches!(f.get(1).copied(), Some("1" | "2"));
            let port_ok = f
                .get(5)
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| p != 0);
            if !component_ok || !port_ok {
                return Err(ApiError::BadOffer(
                    "bad a=candidate: component must be 1 or 2 and the port non-zero".into(),
                ));
            }
        }
        let offer_text = offer.to_string();
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|e| ApiError::BadOffer(one_line(&e.to_string())))?;
        let candidates = self.config.candidates.clone();
        let cert = self.config.dtls_cert.clone();
        // Bandwidth estimation only where there is a choice to make (a
        // simulcast room): the estimate picks the layer. Elsewhere its
        // padding and probes would only cost the viewer's link and our CPU.
        let bwe = role == Role::Subscriber && self.is_simulcast(room);
        let built = catch_unwind(AssertUnwindSafe(move || {
            let mut cfg = Self::rtc_config();
            if let Some(cert) = cert {
                cfg = cfg.set_dtls_cert(cert);
            }
            if bwe {
                cfg = cfg
                    .enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE)))
                    .set_stats_interval(Some(simulcast::ESTIMATE_EVERY));
            }
            let mut rtc = cfg.build(now);
            for a in candidates {
                if let Ok(c) = Candidate::host(a, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
            let answer = rtc.sdp_api().accept_offer(offer)?;
            Ok::<_, str0m::RtcError>((rtc, sdp::complete_answer(&answer.to_sdp_string())))
        }));
        let (rtc, answer) = match built {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(ApiError::BadOffer(one_line(&e.to_string()))),
            Err(_) => {
                self.stats.caught_panics += 1;
                return Err(ApiError::BadOffer("offer rejected".into()));
            }
        };
        // An answer without a candidate can never connect (found by the fuzzer:
        // a first m-line of an unknown media type makes str0m drop it and leave
        // the candidates out). Refuse rather than answer 201 for a dead session.
        if !answer.contains("\na=candidate:") {
            return Err(ApiError::BadOffer(
                "no usable media section (unknown media type?)".into(),
            ));
        }
        let mut rtc = rtc;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.next_id += 1;
        let id = SessionId(self.next_id);
        let token = self.ids.token();
        let etag = self.new_etag();
        let session = Session {
            id,
            token,
            etag: etag.clone(),
            remote_ufrag: sdp::attr(&offer_text, "ice-ufrag")
                .unwrap_or("")
                .to_string(),
            offer: session::StoredOffer::new(&offer_text),
            role,
            room: room.clone(),
            rtc: Box::new(rtc),
            ufrag: ufrag.clone(),
            created: now,
            connected: false,
            dead: false,
            timer: Default::default(),
            ssrc_kind: Vec::new(),
            track_mid: [None, None],
            outs: [None, None],
            sel: simulcast::Selection {
                bwe,
                ..Default::default()
            },
            nacks_seen: [0, 0],
            rebinds: 0,
            inject_panic: false,
            queued: false,
            observed: None,
            recent_txids: VecDeque::with_capacity(RECENT_TXIDS),
        };
        self.sessions.insert(id, session);
        self.tokens.insert(token, id);
        self.demux.add_ufrag(ufrag, id);
        self.stats.sessions_created[role_index(role)] += 1;
        let r = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(room.clone(), now));
        match role {
            Role::Publisher => r.publish(id),
            Role::Subscriber => r.subscribe(id),
        }
        if let Err(e) = self.setup_media(id, room, &answer) {
            self.close_session(now, id);
            self.process(now);
            return Err(e);
        }
        self.drain_session(id);
        self.process(now);
        Ok((id, token, answer, etag))
    }

    /// The Manager's publish: a WHIP offer into `room` (created if new).
    /// `record` overrides the server's recording default for this publisher.
    pub fn publish(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
        record: Option<bool>,
    ) -> Result<Reply, ApiError> {
        if let Some(p) = self.rooms.get(&room).and_then(|r| r.publisher) {
            if self.sessions.get(&p).is_some_and(|s| !s.dead) {
                return Err(ApiError::AlreadyPublished);
            }
        }
        self.check_capacity(&room)?;
        let (id, token, answer, etag) = self.create_session(now, Role::Publisher, &room, offer)?;
        let s = &self.sessions[&id];
        if s.track_mid.iter().all(Option::is_none) {
            self.close_session(now, id);
            return Err(ApiError::Unsupported(
                "the offer has no audio or video the server can receive".into(),
            ));
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.record =
                self.config.recording_available && record.unwrap_or(self.config.record_default);
        }
        log::info!("room {room}: publisher {id:?} created");
        Ok(Reply::Created {
            token,
            answer,
            etag,
        })
    }

    /// The Manager's subscribe: a WHEP offer into `room` (created if new; a
    /// publisher may come later).
    pub fn subscribe(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
    ) -> Result<Reply, ApiError> {
        self.check_capacity(&room)?;
        let (id, token, answer, etag) = self.create_session(now, Role::Subscriber, &room, offer)?;
        let s = &self.sessions[&id];
        if s.outs.iter().all(Option::is_none) {
            self.close_session(now, id);
            return Err(ApiError::Unsupported(
                "the offer has no audio or video the server can send".into(),
            ));
        }
        log::info!("room {room}: viewer {id:?} created");
        Ok(Reply::Created {
            token,
            answer,
            etag,
        })
    }

    /// Remember the token of a session that ends without a DELETE, so that
    /// the client's (late) DELETE gets 200 once. Bounded in count and age.
    fn remember_ended(&mut self, now: Instant, id: SessionId) {
        if let Some(s) = self.sessions.get(&id) {
            if self.ended.len() >= MAX_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back((now, s.token, s.role, s.room.clone()));
        }
    }

    /// End a session at once and remove every trace of it. Queues the DTLS
    /// close so the peer learns promptly. Safe to call for an unknown id.
    fn close_session(&mut self, now: Instant, id: SessionId) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if s.rtc.close().is_ok() {
                let mut sinks = Sinks {
                    transmits: &mut self.transmits,
                    events: &mut VecDeque::new(),
                };
                let _ = drain(id, &mut s.rtc, &mut sinks);
            }
        }));
        self.tokens.remove(&s.token);
        self.demux.remove_session(id, &s.ufrag);
        self.stats.sessions_closed[role_index(s.role)] += 1;
        if let Some(r) = self.rooms.get_mut(&s.room) {
            match s.role {
                Role::Publisher => {
                    if let Some(recs) = r.close_publisher(id) {
                        for id in recs {
                            self.records.push_back(record::RecordEvent::Stop { id });
                        }
                        // Viewers keep their sessions; their streams start a new segment later.
                        for sub in &r.subscribers {
                            if let Some(v) = self.sessions.get_mut(sub) {
                                v.outs.iter_mut().flatten().for_each(OutStream::detach);
                                v.sel.detach();
                            }
                        }
                        self.keyframe_timers.retain(|(_, n, _)| *n != s.room);
                    }
                }
                Role::Subscriber => {
                    r.remove_subscriber(id);
                }
            }
            if r.is_empty() {
                self.rooms.remove(&s.room);
                self.keyframe_timers.retain(|(_, n, _)| *n != s.room);
            }
        }
        log::info!(
            "room {}: {} {id:?} closed after {:.1}s",
            s.room,
            s.role.path_prefix(),
            now.saturating_duration_since(s.created).as_secs_f64()
        );
    }

    /// Drain one session's `Rtc` and reschedule its timer.
    fn drain_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut sinks = Sinks {
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let drained = if std::mem::take(&mut s.inject_panic) {
            // Test hook (see `inject_panic`): a panic inside this session's
            // work, caught exactly where a str0m panic would be.
            match catch_unwind(|| panic!("injected fault in session {id:?}")) {
                Ok(()) => drain(id, &mut s.rtc, &mut sinks),
                Err(_) => Drained::Dead { panicked: true },
            }
        } else {
            drain(id, &mut s.rtc, &mut sinks)
        };
        self.settle(id, drained);
    }

    /// After a drain: reschedule the session's timer (no later than its
    /// connect timeout while unconnected), or end it.
    fn settle(&mut self, id: SessionId, drained: Drained) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match drained {
            Drained::Until(t) => {
                let t = if s.connected {
                    t
                } else {
                    t.min(s.created + self.config.connect_timeout)
                };
                self.timers.schedule(id, &mut s.timer, t);
            }
            Drained::Dead { panicked } => {
                if panicked {
                    self.stats.caught_panics += 1;
                    log::error!("session {id:?}: panic in str0m; closing it");
                }
                self.doomed.push(s.id);
                s.dead = true;
            }
        }
    }

    /// Handle queued events, then end sessions marked dead. Events can queue
    /// more events (a viewer's keyframe request drains the publisher), so this
    /// loops until both are empty.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((id, ev)) = self.events.pop_front() {
                self.on_event(now, id, ev);
            }
            if self.doomed.is_empty() {
                break;
            }
            for id in std::mem::take(&mut self.doomed) {
                self.remember_ended(now, id);
                self.close_session(now, id);
            }
        }
    }

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
                    let simulcast = self.is_simulcast(&room);
                    if simulcast {
                        // Chooses a target and asks for its keyframe.
                        self.select_layers(now, &room, Some(id));
                    } else {
                        self.request_keyframe(now, &room, 0);
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                log::info!("room {}: {id:?} ICE disconnected", s.room);
                self.doomed.push(s.id);
                s.dead = true;
            }
            Event::PeerStats(p) => {
                let r = role_index(s.role);
                // Viewers with an estimator report 4 times a second; the
                // histograms take one observation a second from everyone.
                if s.observed
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(990))
                {
                    s.observed = Some(now);
                    if let Some(rtt) = p.rtt {
                        self.stats.rtt[r].observe(&stats::RTT_BUCKETS_S, rtt.as_secs_f64());
                    }
                    let loss = match s.role {
                        Role::Publisher => p.ingress_loss_fraction,
                        Role::Subscriber => p.egress_loss_fraction,
                    };
                    if let Some(l) = loss {
                        self.stats.loss[r].observe(&stats::LOSS_BUCKETS, f64::from(l));
                    }
                }
                if s.role == Role::Subscriber {
                    let mut choose = false;
                    if let Some(l) = p.egress_loss_fraction {
                        s.sel.loss = l;
                        choose |= l > simulcast::LOSSY;
                    }
                    // The estimator's own value, not the estimate events:
                    // str0m 0.25 averages those over 3 s, so a probe that
                    // finds room shows in them only seconds later.
                    if let Some(b) = p.bwe_tx.filter(|_| s.sel.bwe) {
                        s.sel.estimate = Some(b.as_u64());
                        s.sel.raw_estimate = true;
                        choose = true;
                    }
                    if choose {
                        let room = s.room.clone();
                        self.select_layers(now, &room, Some(id));
                    }
                }
            }
            Event::MediaIngressStats(m) if s.role == Role::Publisher => {
                let k = if s.track_mid[1] == Some(m.mid) { 1 } else { 0 };
                self.stats.nacks_sent += m.nacks.saturating_sub(s.nacks_seen[k]);
                s.nacks_seen[k] = s.nacks_seen[k].max(m.nacks);
            }
            Event::MediaEgressStats(m) if s.role == Role::Subscriber => {
                let k = if s.outs[1].as_ref().is_some_and(|o| o.mid == m.mid) {
                    1
                } else {
                    0
                };
                self.stats.nacks_received += m.nacks.saturating_sub(s.nacks_seen[k]);
                s.nacks_seen[k] = s.nacks_seen[k].max(m.nacks);
            }
            Event::Closed => {
                s.dead = true;
                self.doomed.push(id);
            }
            Event::KeyframeRequest(r) => {
                self.stats.keyframe_requests_received += 1;
                let is_video = s
                    .outs
                    .get(1)
                    .and_then(|o| o.as_ref())
                    .is_some_and(|o| o.mid == r.mid);
                if s.role == Role::Subscriber && is_video {
                    let room = s.room.clone();
                    let layer = s.sel.current.or(s.sel.target).unwrap_or(0);
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
                let room = s.room.clone();
                let is_video = s.track_mid[1] == Some(p.mid);
                let changed = is_video
                    && self
                        .rooms
                        .get_mut(&room)
                        .and_then(|r| r.tracks[1].as_mut())
                        .and_then(|t| {
                            t.layers.iter_mut().find(|l| {
                                l.ssrc == Some(p.ssrc) || (l.rid.is_some() && l.rid == p.rid)
                            })
                        })
                        .is_some_and(|l| {
                            let was = l.paused;
                            l.paused = p.paused;
                            was != p.paused
                        });
                if changed {
                    log::info!(
                        "room {room}: layer {:?} {}",
                        p.rid,
                        if p.paused { "paused" } else { "resumed" }
                    );
                    self.select_layers(now, &room, None);
                }
            }
            _ => {}
        }
    }

    /// Read the negotiated m-lines (in answer order): a publisher's first
    /// receiving line per kind becomes the room's track of that kind; a
    /// viewer's first sending line per kind gets an outgoing stream.
    fn setup_media(
        &mut self,
        id: SessionId,
        room: &RoomName,
        answer: &str,
    ) -> Result<(), ApiError> {
        let mids = answer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(Mid::from);
        let mut new_tracks = vec![];
        let Some(s) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        for mid in mids {
            let Some(m) = s.rtc.media(mid) else {
                continue;
            };
            let (kind, dir) = (m.kind(), m.direction());
            let k = kind_index(kind);
            match s.role {
                Role::Publisher if dir.is_receiving() && s.track_mid[k].is_none() => {
                    s.track_mid[k] = Some(mid);
                    let rids = match m.rids_rx() {
                        str0m::media::Rids::Specific(v) if kind == MediaKind::Video => v.clone(),
                        _ => Vec::new(),
                    };
                    new_tracks.push((k, rids));
                }
                Role::Subscriber if dir.is_sending() && s.outs[k].is_none() => {
                    let seq = self.ids.u32() as u16;
                    let ts = self.ids.u32();
                    s.outs[k] = Some(OutStream::new(mid, seq, ts));
                    if kind == MediaKind::Video {
                        // The resend history is a viewer's main memory cost
                        // (str0m's default: 1024 packets, 3 s). NACK repair
                        // needs a few round trips: keep 1 s, at most 512 packets.
                        //
                        // Forwarded video is not paced (str0m paces video once
                        // BWE is on, as it is for simulcast viewers). The pacer
                        // sends at 1.1x an estimate that lags a collapsing link
                        // and can undershoot a steady one; it then holds up to
                        // 2 s of video, and the lower layer a viewer switches to
                        // waits behind the stale one (over 2 s at 6 to 8 of 13
                        // phases in simulcast_switching's phase sweep; within
                        // 1.8 s at all 13 unpaced). An SFU controls its rate by
                        // the layer it picks; padding and probes stay paced.
                        if let Some(tx) = s.rtc.direct_api().stream_tx_by_mid(mid, None) {
                            tx.set_rtx_cache(RTX_PACKETS, RTX_AGE, Some(0.15));
                            tx.set_unpaced(true);
                        }
                    }
                }
                Role::Publisher if dir.is_receiving() => return Err(too_many(kind)),
                Role::Subscriber if dir.is_sending() => return Err(too_many(kind)),
                _ => {}
            }
        }
        for (k, rids) in new_tracks {
            self.attach_track(room, k, &rids);
        }
        Ok(())
    }

    /// A quoted strong ETag, unique per ICE session.
    fn new_etag(&mut self) -> String {
        format!("\"{:08x}{:08x}\"", self.ids.u32(), self.ids.u32())
    }

    /// PATCH: trickle (same ufrag) or ICE restart (new ufrag/pwd).
    fn patch(
        &mut self,
        now: Instant,
        id: SessionId,
        if_match: Option<&str>,
        body: &str,
    ) -> Result<Reply, ApiError> {
        let s = self.sessions.get_mut(&id).ok_or(ApiError::NotFound)?;
        match if_match.map(str::trim) {
            None => return Err(ApiError::PreconditionRequired),
            Some("*") | Some("\"*\"") => {}
            Some(t) if t == s.etag || t.strip_prefix("W/") == Some(s.etag.as_str()) => {}
            Some(_) => return Err(ApiError::PreconditionFailed),
        }
        let frag = sdp::parse_frag(body).map_err(ApiError::BadFragment)?;
        let restart = frag.ufrag.as_deref().is_some_and(|u| u != s.remote_ufrag);
        if !restart {
            // Parse everything first: a bad line changes nothing.
            let mut cands = Vec::with_capacity(frag.candidates.len());
            for c in &frag.candidates {
                match Candidate::from_sdp_string(c) {
                    Ok(c) => cands.push(c),
                    // mDNS names are never resolved: the address arrives as peer-reflexive.
                    Err(_) if c.contains(".local ") => {}
                    Err(e) => return Err(ApiError::BadFragment(one_line(&e.to_string()))),
                }
            }
            let ok = catch_unwind(AssertUnwindSafe(|| {
                for c in cands {
                    s.rtc.add_remote_candidate(c);
                }
            }));
            if ok.is_err() {
                self.stats.caught_panics += 1;
                self.doomed.push(id);
                return Err(ApiError::BadFragment("candidate rejected".into()));
            }
            self.drain_session(id);
            return Ok(Reply::Patched {
                fragment: None,
                etag: None,
            });
        }
        // ICE restart: re-accept the session's offer with the new credentials,
        // so str0m restarts ICE exactly as for a full re-offer.
        if frag.pwd.is_none() {
            return Err(ApiError::BadFragment(
                "ICE restart without a=ice-pwd".into(),
            ));
        }
        let new_offer = sdp::restart_offer(&s.offer.text(), &frag)
            .ok_or_else(|| ApiError::BadFragment("bad ICE restart".into()))?;
        let parsed = SdpOffer::from_sdp_string(&new_offer)
            .map_err(|e| ApiError::BadFragment(one_line(&e.to_string())))?;
        let answer = match catch_unwind(AssertUnwindSafe(|| s.rtc.sdp_api().accept_offer(parsed))) {
            Ok(Ok(a)) => a.to_sdp_string(),
            Ok(Err(e)) => return Err(ApiError::BadFragment(one_line(&e.to_string()))),
            Err(_) => {
                self.stats.caught_panics += 1;
                self.doomed.push(id);
                return Err(ApiError::BadFragment("ICE restart rejected".into()));
            }
        };
        let new_ufrag = s.rtc.direct_api().local_ice_credentials().ufrag;
        let old_ufrag = std::mem::replace(&mut s.ufrag, new_ufrag.clone());
        s.remote_ufrag = frag.ufrag.clone().unwrap_or_default();
        s.offer = session::StoredOffer::new(&new_offer);
        self.demux.remove_ufrag(&old_ufrag, id);
        self.demux.add_ufrag(new_ufrag, id);
        let etag = self.new_etag();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.etag = etag.clone();
        }
        log::info!("session {id:?}: ICE restart");
        self.drain_session(id);
        let _ = now;
        Ok(Reply::Patched {
            fragment: Some(sdp::restart_frag(&answer, frag.ice_options.as_deref())),
            etag: Some(etag),
        })
    }

    /// A new publisher track of kind `k`: every viewer starts a new segment on it.
    fn attach_track(&mut self, room: &RoomName, k: usize, rids: &[Rid]) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.tracks[k] = Some(Track::new(rids));
        for sub in &r.subscribers {
            if let Some(v) = self.sessions.get_mut(sub) {
                if k == 1 {
                    v.sel.detach();
                }
                if let Some(o) = v.outs[k].as_mut() {
                    o.detach();
                }
            }
        }
    }

    /// Ask the room's publisher for a keyframe of video layer `layer`, at
    /// most once per `keyframe_interval` per layer; a request inside the
    /// interval is deferred, not lost.
    fn request_keyframe(&mut self, now: Instant, room: &RoomName, layer: u8) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let (Some(pid), Some(track)) = (r.publisher, r.tracks[1].as_mut()) else {
            return;
        };
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if let Some(last) = l.last_keyframe_request {
            let allowed = last + self.config.keyframe_interval;
            if now < allowed {
                if !l.keyframe_pending {
                    l.keyframe_pending = true;
                    self.keyframe_timers.push((allowed, room.clone(), layer));
                }
                return;
            }
        }
        let Some(p) = self.sessions.get_mut(&pid) else {
            return;
        };
        let Some(mid) = p.track_mid[1] else {
            return;
        };
        l.last_keyframe_request = Some(now);
        l.keyframe_pending = false;
        let rid = l.rid;
        let mut sent = false;
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut api = p.rtc.direct_api();
            if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                sent = true;
            }
        }));
        if sent {
            self.stats.keyframe_requests_sent += 1;
            self.drain_session(pid);
        }
    }

    /// The layer a keyframe is wanted on for the room as a whole (the
    /// recorder's request): the recorded layer, else the first.
    fn room_keyframe(&mut self, now: Instant, room: &RoomName) {
        let layer = self
            .rooms
            .get(room)
            .and_then(|r| r.tracks[1].as_ref())
            .map(|t| t.record_layer.unwrap_or(0))
            .unwrap_or(0);
        self.request_keyframe(now, room, layer);
    }

    fn is_simulcast(&self, room: &RoomName) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.tracks[1].as_ref())
            .is_some_and(|t| t.simulcast)
    }

    /// Choose layers for one viewer (`Some`) or every viewer of `room`:
    /// move targets, ask for the keyframes a pending switch needs, and tell
    /// each viewer's BWE what to sustain and probe toward.
    fn select_layers(&mut self, now: Instant, room: &RoomName, only: Option<SessionId>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(track) = r.tracks[1].as_ref().filter(|t| t.simulcast) else {
            return;
        };
        let mut wants: Vec<u8> = Vec::new();
        let one = only.map(|id| [id]);
        let ids: &[SessionId] = match &one {
            Some(a) => a,
            None => &r.subscribers,
        };
        for id in ids {
            let Some(v) = self.sessions.get_mut(id) else {
                continue;
            };
            if v.role != Role::Subscriber || v.outs[1].is_none() {
                continue;
            }
            if let Some(t) = v.sel.choose(&track.layers, now) {
                log::debug!(
                    "room {room}: viewer {id:?} layer {:?} -> {:?} (estimate {:?})",
                    v.sel.current.and_then(|c| track.layers[usize::from(c)].rid),
                    track.layers[usize::from(t)].rid,
                    v.sel.estimate
                );
            }
            if let Some(t) = v.sel.target {
                if v.connected && v.sel.current != Some(t) && !wants.contains(&t) {
                    wants.push(t);
                }
            }
            let wish = v.sel.bwe_wish(&track.layers);
            let below =
                v.sel.estimate.is_some_and(|e| e < wish.1) && v.sel.may_climb(&track.layers);
            let wait = if v.sel.probe_lowered {
                Duration::from_millis(200)
            } else {
                simulcast::PROBE_EVERY
            };
            let reprobe = below
                && v.sel
                    .last_probe
                    .is_none_or(|t| now.saturating_duration_since(t) >= wait);
            if (wish != v.sel.bwe_set || reprobe) && wish.1 > 0 {
                v.sel.bwe_set = wish;
                if below {
                    v.sel.last_probe = Some(now);
                }
                // Only a raised desired rate starts an allocation probe, and
                // str0m compares it with the value its last timeout saw:
                // every other re-probe lowers it, the next one raises it.
                let desired = if reprobe && !v.sel.probe_lowered {
                    v.sel.probe_lowered = true;
                    wish.1 / 2
                } else {
                    v.sel.probe_lowered = false;
                    wish.1
                };
                v.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(wish.0), Bitrate::bps(desired));
                // New BWE timers: drained with the written viewers.
                if !std::mem::replace(&mut v.queued, true) {
                    self.written.push(*id);
                }
            }
        }
        for t in wants {
            self.request_keyframe(now, room, t);
        }
    }

    /// Fan one publisher packet out to every viewer of the room.
    fn forward(&mut self, now: Instant, pid: SessionId, pkt: RtpPacket) {
        self.stats.rtp_in += 1;
        let Sfu {
            sessions,
            rooms,
            stats,
            written,
            doomed,
            records,
            next_recording,
            ..
        } = self;
        let Some(p) = sessions.get_mut(&pid) else {
            return;
        };
        let Some(room) = rooms.get_mut(&p.room) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let kind = match p.ssrc_kind.iter().find(|(s, _)| *s == ssrc) {
            Some((_, k)) => *k,
            None => {
                let (k, definitive) = match classify_ssrc(p, room, ssrc) {
                    Ok(k) => (k, true),
                    Err(()) => (None, false),
                };
                if definitive && p.ssrc_kind.len() < 16 {
                    p.ssrc_kind.push((ssrc, k));
                }
                k
            }
        };
        let Some((kind, layer)) = kind else {
            return stats.drop(DropReason::ExtraTrack);
        };
        let k = kind_index(kind);
        let Some(params): Option<PayloadParams> = p
            .rtc
            .codec_config()
            .find(|c| c.pt() == pkt.header.payload_type)
            .copied()
        else {
            return stats.drop(DropReason::UnknownPayloadType);
        };
        let room_name = &room.name;
        let codec = params.spec().codec;
        let video = kind == MediaKind::Video;
        let mut simulcast = false;
        let mut rates_changed = false;
        let mut au_start = true;
        if let Some(t) = room.tracks[k].as_mut() {
            t.packets += 1;
            t.bytes += pkt.payload.len() as u64;
            t.codec = Some(codec);
            simulcast = t.simulcast;
            if video {
                if let Some(l) = t.layers.get_mut(usize::from(layer)) {
                    au_start = l.starts_access_unit(pkt.header.timestamp);
                }
            }
            if simulcast {
                if let Some(l) = t.layers.get_mut(usize::from(layer)) {
                    l.packets += 1;
                    l.window_bytes += pkt.payload.len() as u64 + simulcast::PACKET_OVERHEAD;
                    if l.paused {
                        l.paused = false;
                        rates_changed = true;
                    }
                }
                let start = *t.window_start.get_or_insert(now);
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= simulcast::RATE_WINDOW {
                    // Every window: choices are re-made (holds expire,
                    // probes are re-armed) even when no rate moved.
                    simulcast::close_window(&mut t.layers, elapsed);
                    rates_changed = true;
                    t.window_start = Some(now);
                    if t.record_layer.is_none() {
                        t.record_layer = simulcast::highest(&t.layers);
                    }
                }
            }
            let recorded = !video || t.record_layer == Some(layer);
            if room.record && recorded {
                // A copy for the recorder: the payload Arc is shared, nothing is copied.
                let id = match t.recording {
                    Some((id, c)) if c == codec => id,
                    prev => {
                        if let Some((old, _)) = prev {
                            records.push_back(record::RecordEvent::Stop { id: old });
                        }
                        *next_recording += 1;
                        let id = record::RecordingId(*next_recording);
                        t.recording = Some((id, codec));
                        records.push_back(record::RecordEvent::Start {
                            id,
                            room: room.name.clone(),
                            kind: if video { "video" } else { "audio" },
                            codec,
                            clock_rate: params.spec().clock_rate.get(),
                            channels: params.spec().channels.unwrap_or(1),
                        });
                        id
                    }
                };
                records.push_back(record::RecordEvent::Packet {
                    id,
                    seq: *pkt.seq_no,
                    ts: pkt.header.timestamp,
                    marker: pkt.header.marker,
                    payload: pkt.payload.clone(),
                });
            }
        }
        let keyframe = video && rewrite::keyframe_start(codec, &pkt.payload, au_start);
        if keyframe {
            // The picture size its keyframes declare, for the layers event.
            if let Some(l) = room.tracks[k]
                .as_mut()
                .and_then(|t| t.layers.get_mut(usize::from(layer)))
            {
                if let Some(size) = resolution::keyframe_size(codec, &pkt.payload) {
                    l.size = Some(size);
                }
            }
        }
        // VP8 picture id / TL0PICIDX, rewritten per viewer for continuity.
        let vp8 = if video && codec == Codec::Vp8 {
            Vp8Descriptor::parse(&pkt.payload)
                .ok()
                .filter(|d| d.picture_id().is_some() || d.tl0_pic_idx().is_some())
                .map(|d| (d, vp8_wide_picture_id(&pkt.payload)))
        } else {
            None
        };
        // VP9 picture id / TL0PICIDX, likewise (in a copy of the payload).
        let vp9 = if video && codec == Codec::Vp9 {
            rewrite::Vp9Ids::parse(&pkt.payload)
        } else {
            None
        };
        let clock = params.spec().clock_rate.get();
        // Only the extensions that describe the media travel on; transport ones
        // (TWCC, abs-send-time, mid/rid) are the viewer Rtc's own.
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        // Most video packets carry none of them: skip moving the (large)
        // default values into every viewer's write.
        let has_ext = ext.audio_level.is_some()
            || ext.voice_activity.is_some()
            || ext.video_orientation.is_some();
        let simulcast = simulcast && video;
        let mut want_keyframe = false;
        // VP9 payloads rewritten for this packet, shared by every viewer that
        // needs the same picture id and TL0PICIDX (str0m patches only VP8
        // descriptors, so a rewrite is a copy; most viewers share one).
        let mut vp9_copies: [SharedVp9; 4] = Default::default();
        for sub_id in &room.subscribers {
            let Some(sub) = sessions.get_mut(sub_id) else {
                stats.fanout_attempts += 1;
                stats.drop(DropReason::NoViewerTrack);
                continue;
            };
            if simulcast {
                // Only the viewer's layer, and its target's keyframes, are
                // considered; the other layers are not this viewer's packets.
                let sel = &sub.sel;
                let relevant = sel.current == Some(layer)
                    || (sel.target == Some(layer) && (keyframe || sel.current.is_none()));
                if !relevant {
                    continue;
                }
            }
            stats.fanout_attempts += 1;
            if !sub.connected {
                // Media written before DTLS is up would be lost, keyframe included;
                // the viewer asks for its keyframe when it connects.
                stats.drop(DropReason::ViewerNotConnected);
                continue;
            }
            let Some(out) = sub.outs[k].as_mut() else {
                stats.drop(DropReason::NoViewerTrack);
                continue;
            };
            let out_pt = match out.cached_pt(pkt.header.payload_type) {
                Some(x) => x,
                None => {
                    let local = sub.rtc.codec_config().match_params(params).map(|c| c.pt());
                    let negotiated = local.filter(|pt| {
                        sub.rtc
                            .media(out.mid)
                            .is_some_and(|m| m.remote_pts().contains(pt))
                    });
                    out.cache_pt(pkt.header.payload_type, negotiated);
                    if negotiated.is_none() {
                        log::warn!(
                            "room {room_name}: viewer {sub_id:?} did not negotiate {codec} \
                             {} (publisher PT {}): its packets are dropped",
                            params.spec().format,
                            pkt.header.payload_type
                        );
                    }
                    negotiated
                }
            };
            let Some(out_pt) = out_pt else {
                stats.drop(DropReason::CodecNotNegotiated);
                continue;
            };
            if simulcast && sub.sel.current != Some(layer) {
                if !keyframe {
                    want_keyframe = true;
                    stats.drop(DropReason::WaitingForKeyframe);
                    continue;
                }
                // A frame of the old layer still in progress is left
                // incomplete: the keyframe supersedes it (same capture
                // instant in a real simulcast encoder), the decoder skips it.
                // The target's keyframe: switch here (OutStream rebases on
                // the change of source).
                if sub.sel.current.is_some() {
                    sub.sel.switches += 1;
                    stats.layer_switches += 1;
                }
                sub.sel.current = Some(layer);
            }
            let (seq, ts) = match out.map(
                (pid, ssrc),
                *pkt.seq_no,
                pkt.header.timestamp,
                video,
                keyframe,
                clock,
                now,
            ) {
                Verdict::Send { seq, ts } => (seq, ts),
                Verdict::WaitForKeyframe => {
                    want_keyframe = true;
                    stats.drop(DropReason::WaitingForKeyframe);
                    continue;
                }
            };
            out.frame_done = pkt.header.marker;
            let mid = out.mid;
            let mut payload = pkt.payload.clone();
            if let Some(ids) = vp9 {
                let (pid_out, tl0_out) =
                    out.pic_ids
                        .map(ids.picture_id, ids.wide, ids.tl0, out.rebased);
                if pid_out != ids.picture_id || tl0_out != ids.tl0 {
                    let key = (pid_out, tl0_out);
                    match vp9_copies.iter().flatten().find(|(k, _)| *k == key) {
                        Some((_, shared)) => payload = shared.clone(),
                        None => {
                            // The shared payload is immutable: a copy with
                            // this viewer's ids, kept for the next viewers.
                            let mut own = std::sync::Arc::<[u8]>::from(&pkt.payload[..]);
                            if let Some(b) = std::sync::Arc::get_mut(&mut own) {
                                ids.write(b, pid_out, tl0_out);
                            }
                            stats.vp9_payload_copies += 1;
                            if let Some(slot) = vp9_copies.iter_mut().find(|s| s.is_none()) {
                                *slot = Some((key, own.clone()));
                            }
                            payload = own;
                        }
                    }
                }
            }
            let mut write = str0m::rtp::RtpWrite::new(out_pt, SeqNo::from(seq), ts, now, payload)
                .marker(pkt.header.marker)
                .nackable(video);
            if has_ext {
                write = write.ext_vals(ext.clone());
            }
            if let Some((d, wide)) = vp8 {
                let (pid_out, tl0_out) =
                    out.pic_ids
                        .map(d.picture_id(), wide, d.tl0_pic_idx(), out.rebased);
                if pid_out != d.picture_id() || tl0_out != d.tl0_pic_idx() {
                    let mut b = d.patch();
                    if let Some(x) = pid_out {
                        b = b.picture_id(x);
                    }
                    if let Some(x) = tl0_out {
                        b = b.tl0_pic_idx(x);
                    }
                    if let Ok(patch) = b.build() {
                        write = write.vp8_patch(patch);
                    }
                }
            }
            let wrote = catch_unwind(AssertUnwindSafe(|| {
                match sub.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    Some(tx) => {
                        tx.write_rtp(write);
                        true
                    }
                    None => false,
                }
            }));
            match wrote {
                Ok(true) => stats.rtp_forwarded += 1,
                Ok(false) => {
                    stats.drop(DropReason::NoViewerTrack);
                    continue;
                }
                Err(_) => {
                    stats.caught_panics += 1;
                    stats.drop(DropReason::RtcError);
                    sub.dead = true;
                    doomed.push(*sub_id);
                    continue;
                }
            }
            // Sent by `drain_written` at the next `poll_output`.
            if !std::mem::replace(&mut sub.queued, true) {
                written.push(*sub_id);
            }
        }
        if want_keyframe || rates_changed {
            let room_name = room_name.clone();
            if want_keyframe {
                self.request_keyframe(now, &room_name, if video { layer } else { 0 });
            }
            if rates_changed {
                self.select_layers(now, &room_name, None);
            }
        }
    }

    /// Send what `forward` wrote: each written viewer gets one str0m timeout
    /// (str0m releases a written packet only on a timeout) and one drain,
    /// however many packets it was given since the last call. Skipping the
    /// drain right after `write_rtp`, which could only return a timeout,
    /// saves a full `poll_output` walk per packet too.
    fn drain_written(&mut self) {
        let now = self.last_now;
        let mut ids = std::mem::take(&mut self.written);
        for &id in &ids {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            if s.dead {
                continue;
            }
            let drained =
                if catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(Input::Timeout(now))))
                    .is_err()
                {
                    Drained::Dead { panicked: true }
                } else {
                    let mut sinks = Sinks {
                        transmits: &mut self.transmits,
                        events: &mut self.events,
                    };
                    session::drain_due(id, &mut s.rtc, &mut sinks, now)
                };
            self.settle(id, drained);
        }
        if self.written.is_empty() {
            // Keep the capacity: no allocation per batch.
            ids.clear();
            self.written = ids;
        }
        self.process(now);
    }

    // ------------------------------------------------- WHEP extensions

    /// Layer extension: pin viewer `token` to the simulcast layer `rid`, or
    /// (`None`) return it to automatic selection. `media` is the client's
    /// `mediaId` (an m-line index); it must name the video m-line. The switch
    /// itself waits for a keyframe of the layer, as an automatic one does.
    pub fn pin_layer(
        &mut self,
        now: Instant,
        role: Role,
        room: &RoomName,
        token: SessionToken,
        rid: Option<&str>,
        media: Option<usize>,
    ) -> Result<Reply, ApiError> {
        let id = self.viewer_session(role, room, token)?;
        let s = &self.sessions[&id];
        let Some(out) = s.outs[1].as_ref() else {
            return Err(ApiError::Unsupported(
                "the session receives no video".into(),
            ));
        };
        if media.is_some_and(|m| Some(m) != Self::mline_of(&s.offer.text(), out.mid)) {
            return Err(ApiError::Unsupported(
                "mediaId is not the video m-line of this session".into(),
            ));
        }
        let pinned = match rid {
            None => None,
            Some(want) => {
                let track = self.rooms.get(room).and_then(|r| r.tracks[1].as_ref());
                let Some(track) = track.filter(|t| t.simulcast) else {
                    return Err(ApiError::Unsupported(
                        "the stream has no simulcast layers".into(),
                    ));
                };
                let found = track
                    .layers
                    .iter()
                    .filter_map(|l| l.rid)
                    .find(|r| r.to_string() == want);
                Some(found.ok_or_else(|| {
                    ApiError::Unsupported("no simulcast layer with this rid".into())
                })?)
            }
        };
        if let Some(v) = self.sessions.get_mut(&id) {
            v.sel.pinned = pinned;
            v.sel.up_since = None;
        }
        let room = room.clone();
        self.select_layers(now, &room, Some(id));
        Ok(Reply::Done)
    }

    /// Server-sent events extension: what viewer `token`'s event streams report.
    pub fn viewer_state(
        &self,
        role: Role,
        room: &RoomName,
        token: SessionToken,
    ) -> Result<command::ViewerState, ApiError> {
        let id = self.viewer_session(role, room, token)?;
        let s = &self.sessions[&id];
        let r = self.rooms.get(room);
        let publisher_active = r
            .and_then(|r| r.publisher)
            .and_then(|p| self.sessions.get(&p))
            .is_some_and(|p| p.connected && !p.dead);
        let name = |r: Option<Rid>| r.map(|r| r.to_string());
        let mut state = command::ViewerState {
            publisher_active,
            viewers: r.map_or(0, |r| r.subscribers.len()),
            video_mline: s.outs[1]
                .as_ref()
                .and_then(|o| Self::mline_of(&s.offer.text(), o.mid)),
            ..Default::default()
        };
        if let Some(v) = self.viewer_layers(token) {
            state.current = name(v.current);
            state.target = name(v.target);
            state.pinned = name(v.pinned);
            state.estimate = v.estimate;
            state.layers = v
                .layers
                .iter()
                .map(|(rid, rate, active, size)| command::LayerState {
                    rid: rid.to_string(),
                    bitrate: if *active { *rate } else { 0 },
                    active: *active,
                    width: size.map(|s| s.0),
                    height: size.map(|s| s.1),
                })
                .collect();
        }
        Ok(state)
    }

    /// The viewer session behind `token`, if its role and room match the URL.
    fn viewer_session(
        &self,
        role: Role,
        room: &RoomName,
        token: SessionToken,
    ) -> Result<SessionId, ApiError> {
        let id = self.tokens.get(&token).copied().ok_or(ApiError::NotFound)?;
        let s = self.sessions.get(&id).ok_or(ApiError::NotFound)?;
        if s.role != role || s.room != *room || s.dead {
            return Err(ApiError::NotFound);
        }
        if role != Role::Subscriber {
            return Err(ApiError::Unsupported("only viewers have layers".into()));
        }
        Ok(id)
    }

    /// The index of the m-line with `a=mid:<mid>` in `sdp`.
    fn mline_of(sdp: &str, mid: Mid) -> Option<usize> {
        let mut index = None::<usize>;
        for line in sdp.lines() {
            let line = line.trim_end();
            if line.starts_with("m=") {
                index = Some(index.map_or(0, |i| i + 1));
            } else if line.strip_prefix("a=mid:") == Some(&*mid) {
                return index;
            }
        }
        None
    }
}

/// Which kind and layer a publisher SSRC feeds: its m-line must be the
/// session's track of that kind; a video rid becomes (or finds) a layer of
/// the room's track. `Ok(None)`: an extra track or a layer beyond the bound;
/// `Err`: not known yet (a simulcast SSRC whose rid is not bound), ask again.
fn classify_ssrc(
    p: &mut Session,
    room: &mut Room,
    ssrc: str0m::rtp::Ssrc,
) -> Result<Option<(MediaKind, u8)>, ()> {
    let Some((mid, rid)) = p
        .rtc
        .direct_api()
        .stream_rx(&ssrc)
        .map(|rx| (rx.mid(), rx.rid()))
    else {
        return Ok(None);
    };
    let Some(kind) = p.rtc.media(mid).map(|m| m.kind()) else {
        return Ok(None);
    };
    let k = kind_index(kind);
    if p.track_mid[k] != Some(mid) {
        return Ok(None);
    }
    let Some(track) = room.tracks[k].as_mut() else {
        return Ok(Some((kind, 0)));
    };
    if !track.simulcast || kind != MediaKind::Video {
        return Ok(Some((kind, 0)));
    }
    let Some(rid) = rid else {
        return Err(());
    };
    let i = match track.layers.iter().position(|l| l.rid == Some(rid)) {
        Some(i) => i,
        None if track.layers.len() < simulcast::MAX_LAYERS => {
            track.layers.push(simulcast::Layer::new(Some(rid)));
            track.layers.len() - 1
        }
        None => return Ok(None),
    };
    track.layers[i].ssrc = Some(ssrc);
    Ok(Some((kind, i as u8)))
}

/// A VP9 payload rewritten with (picture id, TL0PICIDX), shared by viewers.
type SharedVp9 = Option<((Option<u16>, Option<u8>), std::sync::Arc<[u8]>)>;

/// Whether a VP8 payload descriptor carries a 15-bit picture id.
fn vp8_wide_picture_id(payload: &[u8]) -> bool {
    payload.len() > 2 && payload[0] & 0x80 != 0 && payload[1] & 0x80 != 0 && payload[2] & 0x80 != 0
}

fn too_many(kind: MediaKind) -> ApiError {
    ApiError::Unsupported(format!(
        "more than one {} track: wisp takes one audio and one video track per session",
        if kind == MediaKind::Audio {
            "audio"
        } else {
            "video"
        }
    ))
}

fn role_index(r: Role) -> usize {
    match r {
        Role::Publisher => 0,
        Role::Subscriber => 1,
    }
}

/// The first line of `s`, trimmed to 200 characters, for error bodies.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}
