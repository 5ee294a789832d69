//! The core's side of overload control: admission checks, the once-a-second
//! load sample, and the governor's actions on viewers (policy in
//! [`super::overload`]).
//!
//! A paused viewer keeps its session and ICE/DTLS; its streams are detached
//! (as when a publisher leaves), so on resume numbering continues and video
//! waits for the keyframe wisp asks for. A capped viewer's layer choice is
//! limited to rates below its cap.

use std::time::{Duration, Instant};

use super::command::{ApiError, Role};
use super::id::RoomName;
use super::overload::{Action, LoadSample, Refusal, ViewerLoad, PUBLISH_PPS, QUIET_ROOM_PPS};
use super::room::Room;
use super::simulcast::ranked;
use super::{DropReason, Sfu};

/// Packets/s of one room's media as a viewer would get it: audio, plus video
/// at `layer` (simulcast) or the whole video track.
fn media_pps(room: &Room, layer: Option<u8>, audio: bool) -> f64 {
    let a = if audio {
        room.tracks.audio.as_ref().map_or(0.0, |t| t.pps)
    } else {
        0.0
    };
    let v = room.tracks.video.as_ref().map_or(0.0, |t| {
        if t.simulcast {
            layer
                .and_then(|l| t.layers.get(usize::from(l)))
                .map_or(0.0, |l| l.pps)
        } else {
            t.pps
        }
    });
    a + v
}

/// Packets/s of one room's media as a downstream edge gets it: audio and
/// every simulcast layer (or the whole video track).
fn edge_pps(room: &Room) -> f64 {
    let a = room.tracks.audio.as_ref().map_or(0.0, |t| t.pps);
    let v = room.tracks.video.as_ref().map_or(0.0, |t| {
        if t.simulcast {
            t.layers.iter().map(|l| l.pps).sum()
        } else {
            t.pps
        }
    });
    a + v
}

/// The top usable layer of a simulcast video track whose rate is at most
/// `cap` (bit/s), or the top one without a cap.
fn top_layer(room: &Room, cap: Option<u64>) -> Option<u8> {
    let t = room.tracks.video.as_ref().filter(|t| t.simulcast)?;
    let (rank, n) = ranked(&t.layers);
    rank[..n]
        .iter()
        .rev()
        .find(|i| cap.is_none_or(|c| t.layers[usize::from(**i)].rate <= c))
        .or(rank[..n].first())
        .copied()
}

impl Sfu {
    /// Refuse a new viewer of `room` when one more would push the predicted
    /// load over `max_load` (its cost: the room's packet rate, at the top
    /// layer for simulcast, every layer for a downstream `edge`;
    /// [`QUIET_ROOM_PPS`] before the room has media).
    pub(super) fn admit_viewer(
        &mut self,
        now: Instant,
        room: &RoomName,
        edge: bool,
    ) -> Result<(), ApiError> {
        let pps = self
            .rooms
            .get(room)
            .map(|r| {
                if edge {
                    edge_pps(r)
                } else {
                    media_pps(r, top_layer(r, None), true)
                }
            })
            .filter(|p| *p > 0.0)
            .unwrap_or(QUIET_ROOM_PPS);
        self.admit(now, pps, Refusal::ViewerLoad)
    }

    /// Refuse a publisher when its expected ingress ([`PUBLISH_PPS`]) would
    /// push the predicted load over `max_load`.
    pub(super) fn admit_publisher(&mut self, now: Instant) -> Result<(), ApiError> {
        self.admit(now, PUBLISH_PPS, Refusal::PublishLoad)
    }

    fn admit(&mut self, now: Instant, pps: f64, why: Refusal) -> Result<(), ApiError> {
        self.load.admit(now, pps, why).map_err(|_| {
            log::info!(
                "admission refused ({}): predicted load {:.2} + {:.3} over {:.2}",
                why.label(),
                self.load.predicted(now),
                self.load.share(pps),
                self.load.max_load
            );
            ApiError::Overloaded
        })
    }

    /// Driver input, about once a second: how busy the loop was. Updates the
    /// cost model and the rooms' packet rates, then sheds or restores
    /// viewers as the governor decides.
    pub fn handle_load(&mut self, now: Instant, sample: LoadSample) {
        let created = self.out.stats.sessions_created.iter().sum::<u64>();
        let forwarded = self.out.stats.rtp_forwarded - self.load_mark.0;
        let setups = created - self.load_mark.1;
        self.load_mark = (self.out.stats.rtp_forwarded, created);
        self.load.on_sample(now, sample, forwarded, setups);
        let skipped = self.out.stats.dropped(DropReason::Overload);
        let skipped_pps = match sample.elapsed.as_secs_f64() {
            secs if secs > 0.0 => (skipped - self.skipped_mark) as f64 / secs,
            _ => 0.0,
        };
        self.skipped_mark = skipped;
        self.load.on_lag(self.catchup.take_window(), skipped_pps);
        log::debug!(
            "load: busy {:.3}, load {:.3}, {} setups, {:.0} forwarded/s, cost {:.2} us + {:.2} us a message, batch {:.2}, headroom {:.3}, ingress delay {:.1}-{:.1} ms, skipped {:.0}/s (serving {:.3}), behind {}",
            self.load.busy_ratio,
            self.load.load,
            setups,
            self.load.forwarded_pps,
            self.load.cost_s * 1e6,
            self.load.message_cost_s * 1e6,
            self.load.batch,
            self.load.headroom(now),
            self.load.lag.min_delay.unwrap_or_default().as_secs_f64() * 1e3,
            self.load.lag.max_delay.as_secs_f64() * 1e3,
            skipped_pps,
            self.catchup.keep(),
            self.load.behind,
        );
        let secs = sample.elapsed.as_secs_f64();
        if secs > 0.0 {
            for r in self.rooms.values_mut() {
                for t in r.tracks.values_mut().flatten() {
                    t.pps = (t.packets - t.packets_mark) as f64 / secs;
                    t.packets_mark = t.packets;
                    for l in &mut t.layers {
                        l.pps = (l.packets - l.packets_mark) as f64 / secs;
                        l.packets_mark = l.packets;
                    }
                }
            }
        }
        let viewers = self.viewer_loads();
        for a in self.governor.plan(now, &self.load, &viewers) {
            self.shed_apply(now, a);
        }
        self.process(now);
    }

    /// Driver input, once per socket read under load: the oldest datagram
    /// the read found had waited `delay` in the socket. Moves the share of
    /// viewers the fan-out serves ([`super::overload::Catchup`]). Cheap: a
    /// few comparisons, at most one change per
    /// [`super::overload::CATCHUP_STEP`].
    pub fn handle_ingress_delay(&mut self, now: Instant, delay: Duration) {
        if self.catchup.on_delay(now, delay) {
            self.out.fanout_keep = self.catchup.keep_fixed();
            log::debug!(
                "ingress delay {:.1} ms: the fan-out serves {:.3} of each room's viewers",
                delay.as_secs_f64() * 1e3,
                self.catchup.keep()
            );
        }
    }

    /// Every viewer with its cost now and after each possible action.
    fn viewer_loads(&self) -> Vec<ViewerLoad> {
        let mut out = Vec::new();
        let mut room_ix: Vec<&RoomName> = Vec::new();
        for (name, r) in &self.rooms {
            let ix = room_ix.len();
            room_ix.push(name);
            for id in &r.subscribers {
                let Some(s) = self.sessions.get(id).filter(|s| !s.dead && s.connected) else {
                    continue;
                };
                let paused = s.shed.paused;
                let edge = s.downstream_edge;
                if edge {
                    // Every layer, never moved down: it serves all of an
                    // edge node's viewers.
                    let pps = edge_pps(r);
                    out.push(ViewerLoad {
                        id: *id,
                        room: ix,
                        joined: id.0,
                        pps: if paused.is_some() { 0.0 } else { pps },
                        down_pps: None,
                        uncapped_pps: None,
                        resume_pps: paused.map(|_| pps),
                        paused_since: paused,
                        edge,
                    });
                    continue;
                }
                let audio = s.outs.audio.is_some();
                let layer = s.sel.current.or(s.sel.target);
                let pps = media_pps(r, layer, audio);
                let mut down_pps = None;
                if let Some((t, c)) = r
                    .tracks
                    .video
                    .as_ref()
                    .filter(|t| t.simulcast && s.outs.video.is_some())
                    .zip(s.sel.current)
                {
                    let (rank, n) = ranked(&t.layers);
                    if let Some(pos) = rank[..n].iter().position(|i| *i == c) {
                        if pos > 0 {
                            down_pps = Some(media_pps(r, Some(rank[pos - 1]), audio));
                        }
                    }
                }
                out.push(ViewerLoad {
                    id: *id,
                    room: ix,
                    joined: id.0,
                    pps: if paused.is_some() { 0.0 } else { pps },
                    down_pps,
                    uncapped_pps: s.sel.cap.map(|_| media_pps(r, top_layer(r, None), audio)),
                    resume_pps: paused.map(|_| media_pps(r, top_layer(r, s.sel.cap), audio)),
                    paused_since: paused,
                    edge,
                });
            }
        }
        out
    }

    fn shed_apply(&mut self, now: Instant, a: Action) {
        let id = match a {
            Action::Down(id)
            | Action::Pause(id)
            | Action::Close(id)
            | Action::Resume(id)
            | Action::Lift(id) => id,
        };
        let busy = self.load.busy_ratio;
        let Some(s) = self
            .sessions
            .get_mut(&id)
            .filter(|s| s.role == Role::Subscriber)
        else {
            return;
        };
        let room = s.room.clone();
        match a {
            Action::Down(_) => {
                if s.downstream_edge {
                    return; // it takes every layer
                }
                let Some(t) = self.rooms.get(&room).and_then(|r| r.tracks.video.as_ref()) else {
                    return;
                };
                let (rank, n) = ranked(&t.layers);
                let Some(pos) = rank[..n].iter().position(|i| Some(*i) == s.sel.current) else {
                    return;
                };
                if pos == 0 {
                    return;
                }
                // Between the two layers' rates: the lower fits, the current does not.
                let lo = t.layers[usize::from(rank[pos - 1])].rate;
                let hi = t.layers[usize::from(rank[pos])].rate;
                s.sel.cap = Some(lo + (hi - lo) / 2);
                log::info!("room {room}: viewer {id:?} down a layer (load {busy:.2})");
                self.out.stats.shed[0] += 1;
                self.select_layers(now, &room, Some(id));
            }
            Action::Pause(_) => {
                if s.shed.paused.is_some() {
                    return;
                }
                s.shed.paused = Some(now);
                s.outs.values_mut().flatten().for_each(|o| o.detach());
                s.sel.detach();
                log::info!("room {room}: viewer {id:?} paused (load {busy:.2})");
                self.out.stats.shed[1] += 1;
            }
            Action::Close(_) => {
                log::info!("room {room}: viewer {id:?} closed to shed load (load {busy:.2})");
                self.out.stats.shed[2] += 1;
                // Not remembered as ended: its DELETE gets 404, and the
                // client learns it was let go (ICE/DTLS close follows).
                self.close_session(now, id);
            }
            Action::Resume(_) => {
                if s.shed.paused.take().is_none() {
                    return;
                }
                log::info!("room {room}: viewer {id:?} resumed (load {busy:.2})");
                self.out.stats.shed[3] += 1;
                if self.is_simulcast(&room) {
                    self.select_layers(now, &room, Some(id));
                } else {
                    self.request_keyframe(now, &room, 0);
                }
            }
            Action::Lift(_) => {
                s.sel.cap = None;
                log::info!("room {room}: viewer {id:?} layer cap lifted (load {busy:.2})");
                self.out.stats.shed[4] += 1;
                self.select_layers(now, &room, Some(id));
            }
        }
    }
}

/// A viewer's overload state.
#[derive(Debug, Clone, Default)]
pub struct ShedState {
    /// Paused by overload control since then: no media, session kept.
    pub paused: Option<Instant>,
}
