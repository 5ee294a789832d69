//! A session's life: created by a publish (WHIP) or a view (WHEP), patched
//! (trickle, ICE restart), drained after every change, and closed by a
//! DELETE, by the peer, by a fault, or with its room.
//!
//! A session is complete (maps, room, timer) before its answer leaves, and
//! [`Sfu::close_session`] removes every trace of it.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::{Candidate, Rtc, RtcConfig};

use super::out_stream::OutStream;
use super::per_kind::kind_name;
use super::recorder_tap::RecordEvent;
use super::room::{Room, SourceKind, Track};
use super::sdp::{self, one_line};
use super::session::{self, drain, guard, guarded, Drained, Session};
use super::upstream::{UpstreamEnd, UpstreamEvent};
use super::{role_index, simulcast, Why};
use super::{ApiError, Reply, Role, RoomName, SessionId, SessionToken, Sfu, INITIAL_ESTIMATE};

/// Resend history per viewer video stream: packets, and age.
const RTX_PACKETS: usize = 512;
const RTX_AGE: Duration = Duration::from_secs(1);

/// Most sessions that ended by themselves remembered for a late DELETE.
const MAX_ENDED: usize = 4096;

impl Sfu {
    // ------------------------------------------------------------- creation

    /// The Manager's publish: a WHIP offer into `room` (created if new).
    /// `record` overrides the server's recording default for this publisher.
    pub fn publish(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
        record: Option<bool>,
    ) -> Result<Reply, ApiError> {
        if let Some(p) = self.rooms.get(&room).and_then(|r| r.source_id()) {
            if self.sessions.get(&p).is_some_and(|s| !s.dead) {
                return Err(ApiError::AlreadyPublished);
            }
        }
        self.check_capacity(&room)?;
        self.admit_publisher(now)?;
        let (id, token, answer, etag) =
            self.create_session(now, Role::Publisher, &room, offer, false, false)?;
        let s = &self.sessions[&id];
        if s.track_mid.values().all(Option::is_none) {
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
    /// publisher may come later). `edge`: the offer comes from another node
    /// pulling the room (the cluster token), a downstream edge.
    pub fn subscribe(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
        edge: bool,
    ) -> Result<Reply, ApiError> {
        self.subscribe_via(now, room, offer, None, edge, None)
    }

    /// [`Sfu::subscribe`] where the room's packets come from worker `home`
    /// (`relay.rs`), unless the room's publisher is here. A new copy of the
    /// room counts against this core's `max_rooms` (`AtCapacity` past it),
    /// not the process's (see the room limits in `relay.rs`). `simulcast`
    /// as in [`Command::SubscribeRelayed`].
    pub fn subscribe_relayed(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
        home: usize,
        edge: bool,
        simulcast: Option<bool>,
    ) -> Result<Reply, ApiError> {
        let home =
            (home != self.config.shard.index && home < self.config.shard.count).then_some(home);
        self.subscribe_via(now, room, offer, home, edge, simulcast)
    }

    fn subscribe_via(
        &mut self,
        now: Instant,
        room: RoomName,
        offer: &str,
        home: Option<usize>,
        edge: bool,
        simulcast: Option<bool>,
    ) -> Result<Reply, ApiError> {
        self.check_capacity(&room)?;
        // An edge's pull: told by the HTTP side (cluster token), or an
        // offer asking for every simulcast layer.
        let edge = edge || sdp::asks_every_layer(offer);
        self.admit_viewer(now, &room, edge)?;
        // A relayed room's shape is unknown here before its first packets
        // come: its viewers get an estimator in case it is simulcast, unless
        // the publisher's offer said it is not. (An estimator's pacer costs
        // ~7,000 instructions a packet and holds packets that a batch of
        // relayed ones brings faster than its rate: benches/fanout.rs.)
        let unknown = home.is_some()
            && simulcast != Some(false)
            && self
                .rooms
                .get(&room)
                .is_none_or(|r| r.tracks.video.is_none());
        let (id, token, answer, etag) =
            self.create_session(now, Role::Subscriber, &room, offer, unknown, edge)?;
        let s = &self.sessions[&id];
        if s.outs.values().all(Option::is_none) {
            self.close_session(now, id);
            return Err(ApiError::Unsupported(
                "the offer has no audio or video the server can send".into(),
            ));
        }
        if let Some(h) = home {
            let fresh = self.next_id + 1;
            if let Some(r) = self
                .rooms
                .get_mut(&room)
                .filter(|r| r.source_session().is_none())
            {
                if r.relay_home() != Some(h) {
                    // The relay is the room's source here, with an id from
                    // the sessions' counter. A new home (the room moved):
                    // its copy of the tracks is stale.
                    self.next_id = fresh;
                    r.set_source(SessionId(fresh), SourceKind::Relay { home: h });
                    for t in r.tracks.values_mut() {
                        *t = None;
                    }
                }
                // Every relayed join says so: idempotent at the home, and
                // it restores a home that lost the room. The need set is
                // sent again after it (a restored home starts from none).
                r.need_sent = None;
                super::relay::mark_need(r, &mut self.out);
                self.relay_send(h, &room, super::relay::RelayBody::Want(true));
            }
        }
        log::info!("room {room}: viewer {id:?} created");
        Ok(Reply::Created {
            token,
            answer,
            etag,
        })
    }

    pub(super) fn rtc_config() -> RtcConfig {
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
            .set_crypto_provider(super::dtls::crypto_provider())
    }

    pub(super) fn check_capacity(&self, room: &RoomName) -> Result<(), ApiError> {
        if self.sessions.len() >= self.config.max_sessions
            || (!self.rooms.contains_key(room) && self.rooms.len() >= self.config.max_rooms)
        {
            return Err(ApiError::AtCapacity);
        }
        Ok(())
    }

    /// Build an `Rtc` for `offer` and register it. The session is complete
    /// (maps, room, timer) before the answer leaves, so the first STUN finds it.
    /// `edge`: a viewer that is another node's pull (a downstream edge).
    fn create_session(
        &mut self,
        now: Instant,
        role: Role,
        room: &RoomName,
        offer: &str,
        maybe_simulcast: bool,
        edge: bool,
    ) -> Result<(SessionId, SessionToken, String, String), ApiError> {
        sdp::check_offer(offer)?;
        // RFC 9725: a WHIP answer is recvonly, a WHEP answer sendonly, even
        // when the client offered sendrecv (aiortc's and browsers' addTrack).
        let mut offer_text = sdp::one_way_offer(offer, role == Role::Publisher);
        let every_layer = role == Role::Subscriber && sdp::asks_every_layer(&offer_text);
        let downstream_edge = role == Role::Subscriber && (edge || every_layer);
        // A viewer asking for every simulcast layer (an edge's upstream)
        // of a room whose video has none gets the plain stream, so that
        // the edge's track has the origin's shape.
        if every_layer && !self.is_simulcast(room) {
            offer_text = sdp::without_simulcast(&offer_text);
        }
        let offer = offer_text.as_str();
        let offer =
            sdp::parse_offer(offer).map_err(|e| ApiError::BadOffer(one_line(&e.to_string())))?;
        let candidates = self.config.candidates.clone();
        let cert = self.config.dtls_cert.clone();
        // Bandwidth estimation only where there is a choice to make (a
        // simulcast room): the estimate picks the layer. Elsewhere its
        // padding and probes would only cost the viewer's link and our CPU.
        // A viewer that asks for every layer (`a=simulcast:recv`, an edge's
        // upstream) makes no choice.
        let bwe = role == Role::Subscriber
            && (maybe_simulcast || self.is_simulcast(room))
            && !downstream_edge;
        let built = guard(move || {
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
        });
        let (mut rtc, answer) = match built {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(ApiError::BadOffer(one_line(&e.to_string()))),
            Err(_) => {
                self.out.stats.caught_panics += 1;
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
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.next_id += 1;
        let id = SessionId(self.next_id);
        let token = self.ids.token_for(&self.config.shard);
        let etag = self.new_etag();
        let mut session = Session::new(
            id,
            token,
            etag.clone(),
            role,
            room.clone(),
            rtc,
            ufrag.clone(),
            &offer_text,
            now,
        );
        session.remote_ufrag = sdp::attr(&offer_text, "ice-ufrag")
            .unwrap_or("")
            .to_string();
        session.sel.bwe = bwe;
        session.downstream_edge = downstream_edge;
        self.sessions.insert(id, session);
        self.tokens.insert(token, id);
        self.demux.add_ufrag(ufrag, id);
        self.out.stats.sessions_created[role_index(role)] += 1;
        let r = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(room.clone(), now));
        match role {
            Role::Publisher => r.set_source(id, SourceKind::Whip),
            Role::Subscriber => r.subscribe(id, downstream_edge),
        }
        if role == Role::Subscriber {
            self.upstream_viewers_changed(now, room);
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

    /// Read the negotiated m-lines (in answer order): a publisher's first
    /// receiving line per kind becomes the room's track of that kind; a
    /// viewer's first sending line per kind gets an outgoing stream.
    fn setup_media(
        &mut self,
        id: SessionId,
        room: &RoomName,
        answer: &str,
    ) -> Result<(), ApiError> {
        let mut new_tracks = vec![];
        let Some(s) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        for mid in sdp::mids(answer).map(Mid::from) {
            let Some(m) = s.rtc.media(mid) else {
                continue;
            };
            let (kind, dir) = (m.kind(), m.direction());
            match s.role {
                Role::Publisher if dir.is_receiving() && s.track_mid[kind].is_none() => {
                    s.track_mid[kind] = Some(mid);
                    let rids = match m.rids_rx() {
                        str0m::media::Rids::Specific(v) if kind == MediaKind::Video => v.clone(),
                        _ => Vec::new(),
                    };
                    new_tracks.push((kind, rids));
                }
                Role::Subscriber if dir.is_sending() && s.outs[kind].is_none() => {
                    let seq = self.ids.u32() as u16;
                    let ts = self.ids.u32();
                    s.outs[kind] = Some(OutStream::new(mid, seq, ts));
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
                        //
                        // A viewer whose offer asked for simulcast (an edge's
                        // upstream) gets every layer, each on its rid's stream
                        // with its own numbering, in the order of the room's
                        // layers (see `Session::relay_layers`).
                        let rids = match m.rids_tx() {
                            str0m::media::Rids::Specific(v) => v.clone(),
                            _ => Vec::new(),
                        };
                        for rid in rids.iter().take(simulcast::MAX_LAYERS) {
                            let seq = self.ids.u32() as u16;
                            let ts = self.ids.u32();
                            s.relay_layers.push((*rid, OutStream::new(mid, seq, ts)));
                        }
                        let mut api = s.rtc.direct_api();
                        for rid in std::iter::once(None).chain(rids.into_iter().map(Some)) {
                            if let Some(tx) = api.stream_tx_by_mid(mid, rid) {
                                tx.set_rtx_cache(RTX_PACKETS, RTX_AGE, Some(0.15));
                                tx.set_unpaced(true);
                            }
                        }
                    }
                }
                Role::Publisher if dir.is_receiving() => return Err(too_many(kind)),
                Role::Subscriber if dir.is_sending() => return Err(too_many(kind)),
                _ => {}
            }
        }
        for (kind, rids) in new_tracks {
            self.attach_track(room, kind, &rids);
        }
        Ok(())
    }

    /// A new publisher track of `kind`: every viewer starts a new segment on it.
    pub(super) fn attach_track(&mut self, room: &RoomName, kind: MediaKind, rids: &[Rid]) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.tracks[kind] = Some(Track::new(rids));
        for sub in &r.subscribers {
            if let Some(v) = self.sessions.get_mut(sub) {
                if kind == MediaKind::Video {
                    v.sel.detach();
                    v.relay_layers.iter_mut().for_each(|(_, o)| o.detach());
                }
                if let Some(o) = v.outs[kind].as_mut() {
                    o.detach();
                }
            }
        }
    }

    /// A quoted strong ETag, unique per ICE session.
    pub(super) fn new_etag(&mut self) -> String {
        format!("\"{:08x}{:08x}\"", self.ids.u32(), self.ids.u32())
    }

    // ---------------------------------------------------------------- patch

    /// The session behind `token`, if its role and room match the URL.
    pub(super) fn session_of(
        &self,
        role: Role,
        room: &RoomName,
        token: SessionToken,
    ) -> Result<SessionId, ApiError> {
        let id = self.tokens.get(&token).copied().ok_or(ApiError::NotFound)?;
        let s = &self.sessions[&id];
        // An upstream is no WHIP session: its token is the relay driver's.
        if s.role != role || s.room != *room || s.pull.is_some() {
            return Err(ApiError::NotFound);
        }
        Ok(id)
    }

    /// PATCH: trickle (same ufrag) or ICE restart (new ufrag/pwd).
    pub(super) fn patch(
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
            let added = guarded(&mut s.rtc, |rtc| {
                for c in cands {
                    rtc.add_remote_candidate(c);
                }
            });
            if added.is_err() {
                self.out.doom(s, Why::Panic("add_remote_candidate"));
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
        let parsed = sdp::parse_offer(&new_offer)
            .map_err(|e| ApiError::BadFragment(one_line(&e.to_string())))?;
        let answer = match guarded(&mut s.rtc, |rtc| rtc.sdp_api().accept_offer(parsed)) {
            Ok(Ok(a)) => a.to_sdp_string(),
            Ok(Err(e)) => return Err(ApiError::BadFragment(one_line(&e.to_string()))),
            Err(_) => {
                self.out.doom(s, Why::Panic("accept_offer"));
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

    // --------------------------------------------------------------- drains

    /// Drain one session's `Rtc` and reschedule its timer.
    pub(super) fn drain_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut sinks = self.out.sinks();
        let drained = if std::mem::take(&mut s.inject_panic) {
            // Test hook (see `inject_panic`): a panic inside this session's
            // work, caught exactly where a str0m panic would be.
            match guard(|| panic!("injected fault in session {id:?}")) {
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
    pub(super) fn settle(&mut self, id: SessionId, drained: Drained) {
        // Taken whatever happened, so it can only describe this drain.
        let error = self.out.rtc_error.take();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match drained {
            Drained::Until(t) => {
                let mut t = if s.connected {
                    t
                } else {
                    t.min(s.created + self.config.connect_timeout)
                };
                if let Some(idle) = s.pull.as_ref().and_then(|p| p.idle_deadline()) {
                    t = t.min(idle);
                }
                self.timers.schedule(id, &mut s.timer, t);
            }
            Drained::Dead { panicked: true } => self.out.doom(s, Why::Panic("str0m")),
            Drained::Dead { panicked: false } => {
                if let Some(e) = error {
                    s.handshake.error.get_or_insert(e);
                }
                self.out.doom(s, Why::Gone)
            }
        }
    }

    /// Test hook for fault tests: the next time the session behind `token` is
    /// drained, its work panics (inside the same guard that catches a panic
    /// in its str0m calls). Returns whether the session exists.
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

    // -------------------------------------------------------------- closing

    /// DELETE on a session URL.
    pub(super) fn delete(
        &mut self,
        now: Instant,
        role: Role,
        room: &RoomName,
        token: SessionToken,
    ) -> Result<Reply, ApiError> {
        if !self.tokens.contains_key(&token) {
            // A session that ended by itself (peer closed first, ICE
            // died, room closed): its first DELETE still succeeds.
            let i = self
                .ended
                .iter()
                .position(|e| e.1 == token && e.2 == role && e.3 == *room)
                .ok_or(ApiError::NotFound)?;
            self.ended.remove(i);
            return Ok(Reply::Deleted);
        }
        let id = self.session_of(role, room, token)?;
        self.close_session(now, id);
        Ok(Reply::Deleted)
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

    /// Close a room: end its publisher and every viewer. Returns how many sessions ended.
    pub fn close_room(&mut self, now: Instant, room: &RoomName) -> Result<usize, ApiError> {
        let r = self.rooms.get(room).ok_or(ApiError::NotFound)?;
        let ids: Vec<SessionId> = r
            .source_session()
            .iter()
            .chain(&r.subscribers)
            .copied()
            .collect();
        for id in &ids {
            if let Some(p) = self.sessions.get_mut(id).and_then(|s| s.pull.as_mut()) {
                p.end.get_or_insert(UpstreamEnd::RoomClosed);
            }
            self.remember_ended(now, *id);
            self.close_session(now, *id);
        }
        if self.rooms.remove(room).is_some() {
            self.rooms_removed += 1;
        }
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

    /// Remember the token of a session that ends without a DELETE, so that
    /// the client's (late) DELETE gets 200 once. Bounded in count and age.
    pub(super) fn remember_ended(&mut self, now: Instant, id: SessionId) {
        if let Some(s) = self.sessions.get(&id) {
            if self.ended.len() >= MAX_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back((now, s.token, s.role, s.room.clone()));
        }
    }

    /// End a session at once and remove every trace of it. Queues the DTLS
    /// close so the peer learns promptly. Safe to call for an unknown id.
    pub(super) fn close_session(&mut self, now: Instant, id: SessionId) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let transmits = &mut self.out.transmits;
        let _ = guarded(&mut s.rtc, |rtc| {
            if rtc.close().is_ok() {
                let mut sinks = session::Sinks {
                    transmits,
                    events: &mut Default::default(),
                    error: &mut None,
                };
                let _ = drain(id, rtc, &mut sinks);
            }
        });
        self.tokens.remove(&s.token);
        self.demux.remove_session(id, &s.ufrag);
        if let Some(p) = s.pull.take() {
            self.release_upstream_addr(id, &p);
            // Every upstream ends with one event, whatever ended it.
            let why = p.end.unwrap_or(UpstreamEnd::Failed);
            let viewers = self.rooms.get(&s.room).map_or(0, |r| r.subscribers.len());
            log::info!("room {}: upstream {id:?} ended ({})", s.room, why.label());
            self.out.stats.relay_upstreams_ended += 1;
            self.out.upstream.push_back(UpstreamEvent::Ended {
                room: s.room.clone(),
                token: s.token,
                why,
                viewers,
            });
        } else {
            self.out.stats.sessions_closed[role_index(s.role)] += 1;
        }
        if let Some(r) = self.rooms.get_mut(&s.room) {
            match s.role {
                Role::Publisher => {
                    if let Some(recs) = r.close_source(id) {
                        // Other workers relaying the room start a new segment too.
                        for w in r.relays.iter().map(|r| r.worker) {
                            self.out.relays.push_back((
                                w,
                                super::relay::RelayMsg {
                                    from: self.config.shard.index,
                                    to: w,
                                    room: s.room.clone(),
                                    body: super::relay::RelayBody::PublisherGone,
                                },
                            ));
                        }
                        for id in recs {
                            self.out.records.push_back(RecordEvent::Stop { id });
                        }
                        // Viewers keep their sessions; their streams start a new segment later.
                        for sub in &r.subscribers {
                            if let Some(v) = self.sessions.get_mut(sub) {
                                v.outs.values_mut().flatten().for_each(OutStream::detach);
                                v.relay_layers.iter_mut().for_each(|(_, o)| o.detach());
                                v.sel.detach();
                            }
                        }
                        self.keyframe_timers.retain(|(_, n, _)| *n != s.room);
                    }
                }
                Role::Subscriber => {
                    r.remove_subscriber(id);
                    super::relay::mark_need(r, &mut self.out);
                }
            }
            if r.is_empty() {
                if let Some(h) = r.relay_home() {
                    // The last viewer here: the home may stop relaying.
                    self.out.relays.push_back((
                        h,
                        super::relay::RelayMsg {
                            from: self.config.shard.index,
                            to: h,
                            room: s.room.clone(),
                            body: super::relay::RelayBody::Want(false),
                        },
                    ));
                }
                self.rooms.remove(&s.room);
                self.rooms_removed += 1;
                self.keyframe_timers.retain(|(_, n, _)| *n != s.room);
            }
        }
        if s.role == Role::Subscriber {
            // The last viewer gone starts an upstream's idle time.
            self.upstream_viewers_changed(now, &s.room);
        }
        log::info!(
            "room {}: {} {id:?} closed after {:.1}s",
            s.room,
            s.role.path_prefix(),
            now.saturating_duration_since(s.created).as_secs_f64()
        );
    }
}

fn too_many(kind: MediaKind) -> ApiError {
    ApiError::Unsupported(format!(
        "more than one {} track: wisp takes one audio and one video track per session",
        kind_name(kind)
    ))
}
