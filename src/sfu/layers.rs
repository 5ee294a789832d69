//! Layer choice and keyframe requests.
//!
//! Each viewer of a simulcast room gets one layer of the publisher's video,
//! chosen from its bandwidth estimate and loss (`simulcast.rs` holds the
//! rules), or pinned by the WHEP layer extension. A switch waits for a
//! keyframe of the new layer; keyframes are asked of the room's source here, at
//! most once per `keyframe_interval` per layer.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::Rid;
use str0m::rtp::StreamPaused;
use str0m::stats::PeerStats;

use super::session::guarded;
use super::source::Feedback;
use super::{command, role_index, sdp, simulcast, stats, Why};
use super::{ApiError, Reply, Role, RoomName, SessionId, SessionToken, Sfu, ViewerLayers};

impl Sfu {
    // ------------------------------------------------------------- keyframes

    /// Ask the room's source for a keyframe of video layer `layer`, at
    /// most once per `keyframe_interval` per layer; a request inside the
    /// interval is deferred, not lost.
    pub(super) fn request_keyframe(&mut self, now: Instant, room: &RoomName, layer: u8) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let (Some(src), Some(track)) = (r.source, r.tracks.video.as_mut()) else {
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
        l.last_keyframe_request = Some(now);
        l.keyframe_pending = false;
        self.ask_source(room, src, Feedback::Keyframe { layer });
    }

    /// The layer a keyframe is wanted on for the room as a whole (the
    /// recorder's request): the recorded layer, else the first.
    pub(super) fn room_keyframe(&mut self, now: Instant, room: &RoomName) {
        let layer = self
            .rooms
            .get(room)
            .and_then(|r| r.tracks.video.as_ref())
            .map(|t| t.record_layer.unwrap_or(0))
            .unwrap_or(0);
        self.request_keyframe(now, room, layer);
    }

    /// Send the keyframe requests that the throttle held back and are now due.
    pub(super) fn fire_keyframe_timers(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.keyframe_timers.len() {
            if self.keyframe_timers[i].0 <= now {
                let (_, room, layer) = self.keyframe_timers.swap_remove(i);
                self.request_keyframe(now, &room, layer);
            } else {
                i += 1;
            }
        }
    }

    // ---------------------------------------------------------- layer choice

    /// Whether `room` has a video track (its shape is known). Test support:
    /// TestNet's relayed viewers learn the room's shape from it.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn has_video(&self, room: &RoomName) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.tracks.video.is_some())
    }

    /// Whether `room`'s video is simulcast.
    pub(crate) fn is_simulcast(&self, room: &RoomName) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.tracks.video.as_ref())
            .is_some_and(|t| t.simulcast)
    }

    /// Choose layers for one viewer (`Some`) or every viewer of `room`:
    /// move targets, ask for the keyframes a pending switch needs, and tell
    /// each viewer's BWE what to sustain and probe toward.
    pub(super) fn select_layers(&mut self, now: Instant, room: &RoomName, only: Option<SessionId>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some(track) = r.tracks.video.as_ref().filter(|t| t.simulcast) else {
            return;
        };
        let mut wants: Vec<u8> = Vec::new();
        let mut chose = false;
        let one = only.map(|id| [id]);
        let ids: &[SessionId] = match &one {
            Some(a) => a,
            None => &r.subscribers,
        };
        for id in ids {
            let Some(v) = self.sessions.get_mut(id) else {
                continue;
            };
            if v.role != Role::Subscriber || v.outs.video.is_none() || !v.relay_layers.is_empty() {
                continue;
            }
            if let Some(t) = v.sel.choose(&track.layers, now) {
                chose = true;
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
                let (current, desired) = (Bitrate::bps(wish.0), Bitrate::bps(desired));
                if guarded(&mut v.rtc, |rtc| rtc.bwe().set_bitrate(current, desired)).is_err() {
                    self.out.doom(v, Why::Panic("set_bitrate"));
                    continue;
                }
                // New BWE timers: drained with the written viewers.
                if !std::mem::replace(&mut v.queued, true) {
                    self.out.written.push(*id);
                }
            }
        }
        if chose {
            // A relayed copy's need set follows its viewers' targets.
            if let Some(r) = self.rooms.get_mut(room) {
                super::relay::mark_need(r, &mut self.out);
            }
        }
        for t in wants {
            self.request_keyframe(now, room, t);
        }
    }

    /// A session's periodic stats: RTT and loss into the histograms (once a
    /// second), and for a viewer its loss and estimate, which may move its layer.
    pub(super) fn on_peer_stats(&mut self, now: Instant, id: SessionId, p: PeerStats) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let r = role_index(s.role);
        // Viewers with an estimator report 4 times a second; the
        // histograms take one observation a second from everyone.
        if s.observed
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(990))
        {
            s.observed = Some(now);
            if let Some(rtt) = p.rtt {
                self.out.stats.rtt[r].observe(&stats::RTT_BUCKETS_S, rtt.as_secs_f64());
            }
            let loss = match s.role {
                Role::Publisher => p.ingress_loss_fraction,
                Role::Subscriber => p.egress_loss_fraction,
            };
            if let Some(l) = loss {
                self.out.stats.loss[r].observe(&stats::LOSS_BUCKETS, f64::from(l));
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

    /// A publisher stream paused or resumed: a video layer's usability changed.
    pub(super) fn on_stream_paused(&mut self, now: Instant, id: SessionId, p: StreamPaused) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.track_mid.video != Some(p.mid) {
            return;
        }
        let room = s.room.clone();
        let changed = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.tracks.video.as_mut())
            .and_then(|t| {
                t.layers
                    .iter_mut()
                    .find(|l| l.ssrc == Some(p.ssrc) || (l.rid.is_some() && l.rid == p.rid))
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
            self.relay_layer_states(&room);
            self.select_layers(now, &room, None);
        }
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
        let Some(out) = s.outs.video.as_ref() else {
            return Err(ApiError::Unsupported(
                "the session receives no video".into(),
            ));
        };
        if media.is_some_and(|m| Some(m) != sdp::mline_of(&s.offer.text(), &out.mid)) {
            return Err(ApiError::Unsupported(
                "mediaId is not the video m-line of this session".into(),
            ));
        }
        let pinned = match rid {
            None => None,
            Some(want) => {
                let track = self.rooms.get(room).and_then(|r| r.tracks.video.as_ref());
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

    /// A viewer's simulcast state, by its token: `None` for an unknown token.
    pub fn viewer_layers(&self, token: SessionToken) -> Option<ViewerLayers> {
        let id = self.tokens.get(&token)?;
        let s = self.sessions.get(id)?;
        let layers = self
            .rooms
            .get(&s.room)
            .and_then(|r| r.tracks.video.as_ref())
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
        // A relayed room's publisher is on its home worker: active while
        // its tracks are (they go with a `PublisherGone`).
        let relayed_live =
            r.is_some_and(|r| r.relay_home().is_some() && r.tracks.values().any(Option::is_some));
        let publisher_active = (relayed_live
            || r.and_then(|r| r.source_session())
                .and_then(|p| self.sessions.get(&p))
                .is_some_and(|p| p.connected && !p.dead))
            && s.shed.paused.is_none();
        let name = |r: Option<Rid>| r.map(|r| r.to_string());
        let mut state = command::ViewerState {
            publisher_active,
            viewers: r.map_or(0, |r| r.subscribers.len()),
            video_mline: s
                .outs
                .video
                .as_ref()
                .and_then(|o| sdp::mline_of(&s.offer.text(), &o.mid)),
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
}
