//! The upstream: an edge's pull of a room from its origin, over WHEP.
//!
//! An upstream is a session of this core whose `Rtc` is in the client role:
//! it makes the offer ([`Sfu::pull`]: recvonly audio, and video with
//! `a=simulcast:recv` for [`UPSTREAM_RIDS`]), the relay driver POSTs it to the
//! origin's WHEP endpoint and hands the answer back ([`Sfu::pull_answer`]).
//! From then on it connects like any session (the origin is ICE-lite, so
//! this side is the controlling agent and sends the checks, from the core's
//! own candidates and socket) and it is the room's source, of kind
//! [`SourceKind::Upstream`]: viewers, keyframes and numbering work as for a
//! WHIP publisher (see `room.rs`). Edges do not record.
//!
//! Every upstream that [`Sfu::pull`] created ends with exactly one
//! [`UpstreamEvent::Ended`] from `poll_output`, whatever ended it, so the
//! driver can DELETE the origin's resource and pull again while viewers
//! wait. At most one upstream per room (it holds the room's source slot).
//!
//! A peer connection is one 5-tuple, and the origin tells its sessions
//! apart by the edge's address. So each upstream takes a local address of
//! its own from `SfuConfig::upstream_addrs` when there are any (all that
//! arrives there is its, from the origin's addresses), else it shares the
//! core's socket and its origin's addresses route to it like a validated
//! peer's; a second upstream to the same origin address is then refused.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Rids, Simulcast, SimulcastLayer};
use str0m::Candidate;

use super::id::{RoomName, SessionId, SessionToken};
use super::room::{Room, SourceKind};
use super::sdp::{self, one_line};
use super::session::{guard, guarded, Session};
use super::timers::UPSTREAM_IDLE;
use super::{ApiError, Reply, Role, Sfu};

/// The rids an upstream asks the origin for (`a=simulcast:recv`), one per
/// layer of the origin's video in the origin's order; a plain track comes
/// on the first. Its edge's viewers see these names.
pub const UPSTREAM_RIDS: [&str; 3] = ["h", "m", "l"];

/// An upstream's longest wait between STUN checks (and retransmits).
pub const UPSTREAM_STUN_RTO: std::time::Duration = std::time::Duration::from_secs(1);
/// An upstream's STUN retransmits before its origin counts as gone.
pub const UPSTREAM_STUN_RETRANSMITS: usize = 5;

/// Why an upstream ended (in [`UpstreamEvent::Ended`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEnd {
    /// The room had no viewers for [`UPSTREAM_IDLE`].
    Idle,
    /// The driver's HTTP exchange with the origin failed (`PullFailed`).
    PullFailed,
    /// The origin's answer was refused.
    BadAnswer,
    /// Not connected within the connect timeout.
    ConnectTimeout,
    /// ICE or DTLS failed, the origin closed the session, or its `Rtc` failed.
    Failed,
    /// The room was closed (DELETE of the room) or the server shut down.
    RoomClosed,
}

impl UpstreamEnd {
    /// A short name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamEnd::Idle => "idle",
            UpstreamEnd::PullFailed => "pull_failed",
            UpstreamEnd::BadAnswer => "bad_answer",
            UpstreamEnd::ConnectTimeout => "connect_timeout",
            UpstreamEnd::Failed => "failed",
            UpstreamEnd::RoomClosed => "room_closed",
        }
    }
}

/// What the core tells the relay driver about its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// The upstream `token` of `room` ended. The driver DELETEs its resource
    /// on the origin (if it has one), and pulls again (after a back-off)
    /// if `viewers` is not zero.
    Ended {
        /// The room it fed.
        room: RoomName,
        /// The token `Reply::PullOffer` gave.
        token: SessionToken,
        /// Why.
        why: UpstreamEnd,
        /// Viewers of the room on this core when it ended (they wait).
        viewers: usize,
    },
}

/// What a session that is an upstream has beyond any session.
pub struct Pull {
    /// The offer, until the origin's answer is applied.
    pub pending: Option<SdpPendingOffer>,
    /// The mids of its audio and video m-lines (in offer order).
    pub mids: [(MediaKind, Mid); 2],
    /// Since when its room has had no viewers (`None`: it has some).
    pub idle_since: Option<Instant>,
    /// Why it ends, once decided (the first reason wins).
    pub end: Option<UpstreamEnd>,
    /// Its index in `SfuConfig::upstream_addrs`, if it has an address of its own.
    pub local: Option<usize>,
    /// With an address of its own: the origin's addresses (from the answer's
    /// candidates, at most `sdp::MAX_FRAG_CANDIDATES`), the only sources
    /// accepted there.
    pub remotes: Vec<SocketAddr>,
}

impl Pull {
    /// When the idle upstream is closed, if its room has no viewers.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.idle_since.map(|t| t + UPSTREAM_IDLE)
    }
}

impl std::fmt::Debug for Pull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("answered", &self.pending.is_none())
            .field("idle_since", &self.idle_since)
            .field("end", &self.end)
            .finish()
    }
}

impl Sfu {
    /// `Command::Pull`: make `room`'s upstream, the room's source, and
    /// return its offer (recvonly audio and video) for the driver to POST
    /// to the origin. Refused like a second publish when the room has a
    /// live source, and under the same limits as any session.
    pub fn pull(&mut self, now: Instant, room: RoomName) -> Result<Reply, ApiError> {
        if let Some(p) = self.rooms.get(&room).and_then(|r| r.source_id()) {
            if self.sessions.get(&p).is_some_and(|s| !s.dead) {
                return Err(ApiError::AlreadyPublished);
            }
        }
        self.check_capacity(&room)?;
        let slot = if self.upstream_slots.is_empty() {
            None
        } else {
            let free = self.upstream_slots.iter().position(Option::is_none);
            Some(free.ok_or(ApiError::AtCapacity)?)
        };
        self.admit_publisher(now)?;
        let candidates = match slot {
            Some(i) => vec![self.config.upstream_addrs[i]],
            None => self.config.candidates.clone(),
        };
        let cert = self.config.dtls_cert.clone();
        let built = guard(move || {
            // The client role: full ICE (the origin is ICE-lite), the
            // controlling agent; otherwise the server's media settings.
            let mut cfg = Self::rtc_config().set_ice_lite(false);
            if let Some(cert) = cert {
                cfg = cfg.set_dtls_cert(cert);
            }
            // Its checks are the origin's liveness: a server-to-server path
            // can afford checking every second and giving up sooner than
            // str0m's defaults (3 s, 9 retransmits).
            cfg.set_max_stun_rto(UPSTREAM_STUN_RTO);
            cfg.set_max_stun_retransmits(UPSTREAM_STUN_RETRANSMITS);
            let mut rtc = cfg.build(now);
            for a in candidates {
                if let Ok(c) = Candidate::host(a, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
            let mut api = rtc.sdp_api();
            let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            // Every layer the origin has, so that edge viewers keep their
            // own layer choice (a plain track arrives on the first rid).
            let mut sim = Simulcast::new();
            for rid in UPSTREAM_RIDS {
                sim.add_recv_layer(SimulcastLayer::new(rid));
            }
            let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, Some(sim));
            let (offer, pending) = api.apply().expect("two new m-lines are a change");
            let offer = offer.to_sdp_string();
            (
                rtc,
                offer,
                pending,
                [(MediaKind::Audio, audio), (MediaKind::Video, video)],
            )
        });
        let Ok((mut rtc, offer, pending, mids)) = built else {
            self.out.stats.caught_panics += 1;
            return Err(ApiError::Unsupported("upstream offer failed".into()));
        };
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.next_id += 1;
        let id = SessionId(self.next_id);
        let token = self.ids.token();
        let etag = self.new_etag();
        let idle = self
            .rooms
            .get(&room)
            .is_none_or(|r| r.subscribers.is_empty());
        let mut session = Session::new(
            id,
            token,
            etag,
            Role::Publisher,
            room.clone(),
            rtc,
            ufrag.clone(),
            &offer,
            now,
        );
        session.pull = Some(Box::new(Pull {
            pending: Some(pending),
            mids,
            idle_since: idle.then_some(now),
            end: None,
            local: slot,
            remotes: Vec::new(),
        }));
        if let Some(i) = slot {
            self.upstream_slots[i] = Some(id);
        }
        self.sessions.insert(id, session);
        self.tokens.insert(token, id);
        self.demux.add_ufrag(ufrag, id);
        let r = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(room.clone(), now));
        r.set_source(id, SourceKind::Upstream);
        r.record = false;
        self.drain_session(id);
        log::info!("room {room}: upstream {id:?} created");
        Ok(Reply::PullOffer { token, offer })
    }

    /// The upstream behind `token`, if it pulls `room`.
    fn upstream_of(&self, room: &RoomName, token: SessionToken) -> Result<SessionId, ApiError> {
        let id = self.tokens.get(&token).copied().ok_or(ApiError::NotFound)?;
        let s = self.sessions.get(&id).ok_or(ApiError::NotFound)?;
        if s.pull.is_none() || s.room != *room || s.dead {
            return Err(ApiError::NotFound);
        }
        Ok(id)
    }

    /// `Command::PullAnswer`: apply the origin's answer; the upstream then
    /// connects. A refused answer ends the upstream (`BadAnswer`) and is a
    /// `BadOffer` error with the reason.
    pub fn pull_answer(
        &mut self,
        now: Instant,
        room: &RoomName,
        token: SessionToken,
        answer: &str,
    ) -> Result<Reply, ApiError> {
        let id = self.upstream_of(room, token)?;
        match self.apply_answer(id, answer) {
            Ok(()) => {
                self.drain_session(id);
                log::info!("room {room}: upstream {id:?} answered");
                Ok(Reply::Done)
            }
            Err(e) => {
                log::info!("room {room}: upstream {id:?}: answer refused: {e}");
                self.end_upstream(now, id, UpstreamEnd::BadAnswer);
                Err(ApiError::BadOffer(e))
            }
        }
    }

    /// The body of [`Sfu::pull_answer`]: accept the answer, route the
    /// origin's addresses to the upstream, attach its tracks to the room.
    fn apply_answer(&mut self, id: SessionId, answer: &str) -> Result<(), String> {
        let s = self.sessions.get_mut(&id).ok_or("gone")?;
        let pull = s.pull.as_mut().ok_or("not an upstream")?;
        let pending = pull.pending.take().ok_or("answer already applied")?;
        let mids = pull.mids;
        let parsed = SdpAnswer::from_sdp_string(answer).map_err(|e| one_line(&e.to_string()))?;
        let frag = sdp::parse_frag(answer).map_err(|e| format!("answer: {e}"))?;
        let addrs: Vec<SocketAddr> = frag
            .candidates
            .iter()
            .filter_map(|c| Candidate::from_sdp_string(c).ok())
            .map(|c| c.addr())
            .collect();
        if addrs.is_empty() {
            return Err("the answer has no usable candidate".into());
        }
        let own_address = pull.local.is_some();
        if !own_address {
            if let Some(a) = addrs
                .iter()
                .find(|a| self.demux.by_addr(a).is_some_and(|o| o != id))
            {
                return Err(format!(
                    "{a} is already a peer of this node (another upstream to the \
                     same origin needs an address of its own: upstream_addrs)"
                ));
            }
        }
        match guarded(&mut s.rtc, |rtc| {
            rtc.sdp_api().accept_answer(pending, parsed)
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(one_line(&e.to_string())),
            Err(_) => {
                self.out.stats.caught_panics += 1;
                return Err("answer rejected".into());
            }
        }
        s.remote_ufrag = frag.ufrag.unwrap_or_default();
        let mut tracks = Vec::new();
        for (kind, mid) in mids {
            let Some(m) = s.rtc.media(mid) else {
                continue;
            };
            if m.kind() != kind || !m.direction().is_receiving() {
                continue;
            }
            s.track_mid[kind] = Some(mid);
            let rids = match m.rids_rx() {
                Rids::Specific(v) if kind == MediaKind::Video => v.clone(),
                _ => Vec::new(),
            };
            tracks.push((kind, rids));
        }
        if tracks.is_empty() {
            return Err("the answer sends neither audio nor video".into());
        }
        let room = s.room.clone();
        // The origin answers checks and sends media from its candidates.
        // On an address of its own, only they are accepted there; on the
        // shared socket they route to this session (its STUN responses
        // carry no ufrag).
        if own_address {
            if let Some(p) = s.pull.as_mut() {
                p.remotes = addrs;
            }
        } else {
            for a in addrs {
                self.demux.add_addr(a, id);
            }
        }
        for (kind, rids) in tracks {
            self.attach_track(&room, kind, &rids);
        }
        Ok(())
    }

    /// `Command::PullFailed`: the driver's exchange with the origin failed;
    /// the upstream ends (viewers keep waiting).
    pub fn pull_failed(
        &mut self,
        now: Instant,
        room: &RoomName,
        token: SessionToken,
    ) -> Result<Reply, ApiError> {
        let id = self.upstream_of(room, token)?;
        self.end_upstream(now, id, UpstreamEnd::PullFailed);
        Ok(Reply::Done)
    }

    /// End upstream `id` now, for `why` (unless a reason was set first).
    pub(super) fn end_upstream(&mut self, now: Instant, id: SessionId, why: UpstreamEnd) {
        if let Some(p) = self.sessions.get_mut(&id).and_then(|s| s.pull.as_mut()) {
            p.end.get_or_insert(why);
        }
        self.close_session(now, id);
    }

    /// The upstream a datagram from `source` to local address `dst` is for,
    /// if `dst` is one of `SfuConfig::upstream_addrs` (a wildcard `dst`
    /// matches by port): `Ok(id)`, or `Err` when nothing there takes it
    /// (no upstream on it, or a source that is not its origin). `None`:
    /// not an upstream address, route as usual.
    pub(super) fn upstream_route(
        &self,
        source: SocketAddr,
        dst: SocketAddr,
    ) -> Option<Result<SessionId, ()>> {
        if self.upstream_slots.is_empty() || self.config.candidates.contains(&dst) {
            return None;
        }
        let i = self.upstream_addr_index(dst)?;
        let known = |id: &SessionId| {
            self.sessions
                .get(id)
                .and_then(|s| s.pull.as_ref())
                .is_some_and(|p| p.remotes.contains(&source))
        };
        Some(self.upstream_slots[i].filter(known).ok_or(()))
    }

    /// The index of `dst` in `SfuConfig::upstream_addrs` (a wildcard
    /// address matches by port and family).
    pub(super) fn upstream_addr_index(&self, dst: SocketAddr) -> Option<usize> {
        let pool = &self.config.upstream_addrs;
        pool.iter().position(|a| *a == dst).or_else(|| {
            pool.iter().position(|a| {
                dst.ip().is_unspecified() && a.port() == dst.port() && a.is_ipv4() == dst.is_ipv4()
            })
        })
    }

    /// Free the local address of upstream `p` (it is closing).
    pub(super) fn release_upstream_addr(&mut self, id: SessionId, p: &Pull) {
        if let Some(slot) = p.local.and_then(|i| self.upstream_slots.get_mut(i)) {
            if *slot == Some(id) {
                *slot = None;
            }
        }
    }

    /// A viewer joined or left `room`: an upstream feeding it stops or
    /// starts counting idle time.
    pub(super) fn upstream_viewers_changed(&mut self, now: Instant, room: &RoomName) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(src) = r.source.filter(|s| s.kind == SourceKind::Upstream) else {
            return;
        };
        let empty = r.subscribers.is_empty();
        let Some(s) = self.sessions.get_mut(&src.id) else {
            return;
        };
        let Some(p) = s.pull.as_mut() else {
            return;
        };
        match (empty, p.idle_since) {
            (false, _) => p.idle_since = None,
            (true, None) => {
                p.idle_since = Some(now);
                self.timers
                    .schedule(src.id, &mut s.timer, now + UPSTREAM_IDLE);
            }
            (true, Some(_)) => {}
        }
    }
}
