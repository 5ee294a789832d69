//! The relay between workers of one process (`WISP_WORKERS`): a room's
//! packets, handed in the clear from its home worker (the one with its
//! publisher) to the other workers that have viewers of it.
//!
//! ```text
//!  home core ──Output::Relay(Packet, Layers)──▶ driver queue ──▶ viewer core: handle_relay
//!            ◀─Output::Relay(Want, Need, Keyframe)──────────── (its own viewers' needs)
//! ```
//!
//! Contract:
//! - The home core emits each publisher packet once per worker in
//!   `Room::relays` that needs it, after its own fan-out: RTP header fields
//!   and payload (shared, not copied), never SRTP. Audio and a plain video
//!   track go to every such worker; a simulcast layer only to those whose
//!   need set has it. No per-viewer work crosses workers: the viewer core
//!   runs the ordinary fan-out (`forward.rs`) for its own viewers, with its
//!   own copy of the room's tracks (layers, keyframe throttle), so layer
//!   choice is made per viewer where it lives.
//! - Layer needs. A viewer core does not measure the layers' rates (it is
//!   relayed only what it needs): the home sends its layers' states
//!   (`Layers`: rid, rate, paused, picture size) at each of its rate
//!   windows, when a layer pauses or resumes, and to a worker that joins.
//!   The viewer core chooses from them, and sends `Need` (a bit per layer:
//!   its viewers' current and target layers) when that set changes: it is
//!   worked out again, from this core's viewers of the room, only when a
//!   viewer's target changes, a viewer switches or leaves, or the tracks go,
//!   and sent at most once per `poll_output`. A `Keyframe` request sends
//!   the need set first, on the same queue, so a layer a viewer moves up
//!   to is relayed before the keyframe it waits for is asked of the
//!   publisher. Until a worker's first `Need`, it is relayed no simulcast
//!   layer.
//! - On a viewer core the relay is the room's source, of kind
//!   [`SourceKind::Relay`] (the contract of a room's source is in
//!   `room.rs`): packets come in through `forward_in` as a `SourcePacket`
//!   with the home's `Resolved` (kind, layer, codec); keyframe requests go
//!   out through `Sfu::ask_source` as `Keyframe`, need sets as `Need`. It
//!   sends `Want(true)` with every relayed subscribe and `Want(false)` when
//!   its last viewer leaves.
//! - Room limits: the process's (`max_rooms`) counts each room once, in the
//!   dispatcher's map of homes (`src/workers.rs`); a relay join only copies
//!   a room that has an entry there, so it adds no room to the process. A
//!   copy is not counted again there (it would make the limit shrink as
//!   viewers spread over workers), but each core's own `max_rooms` counts
//!   its homes and copies together, so copies are bounded per worker: a
//!   relayed subscribe that would make one past it is `AtCapacity`, and a
//!   `Want(true)` that would restore a lost room past it is dropped.
//! - A home core keeps a room while any worker wants it, and tells them
//!   `PublisherGone` when its publisher leaves (viewers start a new segment).
//! - The driver moves messages between cores through a bounded queue per
//!   worker pair and never blocks; a message it cannot queue is handed back
//!   to [`Sfu::relay_dropped`], which counts it (`relay_queue_full`).

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Pt, Rid};
use str0m::rtp::{ExtensionValues, Ssrc, VideoOrientation};

use super::forward::forward_in;
use super::id::IdMap;
use super::room::{RelayTo, Room, Source, SourceKind, Track};
use super::session::Session;
use super::simulcast::{Layer, MAX_LAYERS};
use super::source::{Feedback, Resolved, SourcePacket};
use super::{Outbox, RoomName, SessionId, Sfu};

/// One publisher packet, relayed in the clear.
#[derive(Debug, Clone)]
pub struct RelayPacket {
    /// The publisher's SSRC for this stream.
    pub ssrc: Ssrc,
    /// Its kind.
    pub kind: MediaKind,
    /// Its layer in the room's video track (0 for audio and plain video).
    pub layer: u8,
    /// The layer's rid (simulcast video).
    pub rid: Option<Rid>,
    /// The video track is simulcast.
    pub simulcast: bool,
    /// The publisher's negotiated parameters for its payload type.
    pub params: PayloadParams,
    /// The publisher's payload type.
    pub pt: Pt,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload, shared with the home's own fan-out.
    pub payload: Arc<[u8]>,
    /// The media extensions that travel on (the transport ones are each
    /// viewer `Rtc`'s own).
    pub ext: MediaExt,
}

/// The header extensions that describe the media.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaExt {
    /// Audio level (RFC 6464).
    pub audio_level: Option<i8>,
    /// Voice activity (RFC 6464).
    pub voice_activity: Option<bool>,
    /// Video orientation (CVO).
    pub video_orientation: Option<VideoOrientation>,
}

impl MediaExt {
    /// The media extensions of `e`.
    pub fn of(e: &ExtensionValues) -> MediaExt {
        MediaExt {
            audio_level: e.audio_level,
            voice_activity: e.voice_activity,
            video_orientation: e.video_orientation,
        }
    }

    fn values(self) -> ExtensionValues {
        ExtensionValues {
            audio_level: self.audio_level,
            voice_activity: self.voice_activity,
            video_orientation: self.video_orientation,
            ..Default::default()
        }
    }
}

/// The home's view of one layer of its simulcast video track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerInfo {
    /// Its rid.
    pub rid: Option<Rid>,
    /// Its measured rate, bit/s (see `simulcast::Layer::rate`).
    pub rate: u64,
    /// Paused at the home (str0m said so, or a window saw nothing).
    pub paused: bool,
    /// The picture size its keyframes declare.
    pub size: Option<crate::codec::PictureSize>,
}

/// The home's simulcast video layers, by index in its track (`None`: no
/// such layer).
pub type LayerStates = [Option<LayerInfo>; MAX_LAYERS];

/// Every layer of a track in a need set ([`RelayBody::Need`]).
pub const ALL_LAYERS: u8 = (1 << MAX_LAYERS) - 1;

/// What crosses between two workers' cores.
// Not boxed: a box would be one allocation per relayed packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RelayBody {
    /// Home → viewer worker: one packet.
    Packet(RelayPacket),
    /// Home → viewer worker: its simulcast video layers' rates and state,
    /// at each of its rate windows and when a worker joins. A viewer
    /// worker chooses layers from these, not from what it is relayed
    /// (which is only the layers it needs).
    Layers(LayerStates),
    /// Home → viewer worker: the publisher left; its tracks went with it.
    PublisherGone,
    /// Viewer worker → home: relay this room to me (`true`), or stop.
    Want(bool),
    /// Viewer worker → home: a keyframe of this video layer, please.
    Keyframe {
        /// The layer.
        layer: u8,
    },
    /// Viewer worker → home: the simulcast video layers its viewers need
    /// (a bit per layer index: each viewer's current and target layer; every
    /// layer for a viewer that takes them all). Sent when it changes; until
    /// the first, the home relays no simulcast video layer to it.
    Need(u8),
}

/// Control messages kept for another try when a queue was full.
pub const MAX_RETRY: usize = 64;

/// A message of the relay: from which worker, to which, about which room.
#[derive(Debug)]
pub struct RelayMsg {
    /// The sending worker.
    pub from: usize,
    /// The receiving worker.
    pub to: usize,
    /// The room.
    pub room: RoomName,
    /// What.
    pub body: RelayBody,
}

impl Sfu {
    /// A message from another worker's core (see the module docs).
    pub fn handle_relay(&mut self, now: Instant, msg: RelayMsg) {
        self.tick(now);
        let RelayMsg {
            from, room, body, ..
        } = msg;
        match body {
            RelayBody::Packet(p) => self.relayed_packet(now, from, &room, &p),
            RelayBody::PublisherGone => self.relayed_publisher_gone(from, &room),
            RelayBody::Layers(states) => self.relayed_layers(now, from, &room, &states),
            RelayBody::Need(need) => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    if let Some(t) = r.relays.iter_mut().find(|t| t.worker == from) {
                        t.need = need;
                    }
                }
            }
            RelayBody::Want(true) => {
                if from == self.config.shard.index || from >= self.config.shard.count {
                    return;
                }
                // A home that lost the room restores it only within its
                // room limit (its copies' viewers get nothing until a
                // publisher comes: the dispatcher counted the room once).
                if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
                    log::warn!(
                        "room {room}: worker {from} wants it, but this worker is at its room limit"
                    );
                    return;
                }
                let r = self
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| super::room::Room::new(room, now));
                if !r.relays_to(from) {
                    // Its need set follows (none yet: no simulcast layer).
                    r.relays.push(RelayTo {
                        worker: from,
                        need: 0,
                    });
                }
                // What it chooses its viewers' layers from.
                if let Some(states) = layer_states(r) {
                    let name = r.name.clone();
                    self.relay_send(from, &name, RelayBody::Layers(states));
                }
            }
            RelayBody::Want(false) => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.relays.retain(|t| t.worker != from);
                    if r.is_empty() {
                        self.rooms.remove(&room);
                        self.rooms_removed += 1;
                        self.keyframe_timers.retain(|(_, n, _)| *n != room);
                    }
                }
            }
            RelayBody::Keyframe { layer } => {
                let ours = self.rooms.get(&room).is_some_and(|r| r.relays_to(from));
                if ours {
                    self.request_keyframe(now, &room, layer);
                }
            }
        }
        self.process(now);
    }

    /// The driver could not queue `msg` (the receiving worker's queue is
    /// full): it is counted; a packet or a home's layer states (sent again
    /// at its next rate window) is dropped, anything else (a join, a
    /// keyframe request, a need set, a publisher's end) is sent again at the
    /// next [`Sfu::handle_timeout`], up to [`MAX_RETRY`] of them waiting.
    pub fn relay_dropped(&mut self, msg: RelayMsg) {
        self.out.stats.relay_queue_full += 1;
        let again = !matches!(msg.body, RelayBody::Packet(_) | RelayBody::Layers(_));
        if again && self.out.relay_retry.len() < MAX_RETRY {
            self.out.relay_retry.push(msg);
        }
    }

    /// Queue again what [`Sfu::relay_dropped`] kept (called by
    /// `handle_timeout`). A need set is not sent as it was, which may be
    /// stale by now: its room's is worked out again and sent, after the
    /// join it may follow (a home takes a need only from a worker it
    /// relays to).
    pub(super) fn relay_retry(&mut self) {
        for msg in std::mem::take(&mut self.out.relay_retry) {
            if matches!(msg.body, RelayBody::Need(_) | RelayBody::Want(true)) {
                if let Some(r) = self.rooms.get_mut(&msg.room) {
                    r.need_sent = None;
                    mark_need(r, &mut self.out);
                }
            }
            if !matches!(msg.body, RelayBody::Need(_)) {
                self.out.relays.push_back((msg.to, msg));
            }
        }
    }

    /// Send the need sets of the relayed copies marked by [`mark_need`].
    pub(super) fn flush_needs(&mut self) {
        let mut dirty = std::mem::take(&mut self.out.need_dirty);
        for name in &dirty {
            if self.rooms.get(name).is_some_and(|r| r.need_dirty) {
                self.flush_need(name);
            }
        }
        dirty.clear();
        if self.out.need_dirty.is_empty() {
            // Keep the capacity.
            self.out.need_dirty = dirty;
        }
    }

    /// Work out relayed copy `name`'s need set from its viewers (one pass
    /// over this core's viewers of the room, only when a choice or a viewer
    /// changed), and send it to the home if it changed.
    pub(super) fn flush_need(&mut self, name: &RoomName) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        r.need_dirty = false;
        let Some(src) = r
            .source
            .filter(|s| matches!(s.kind, SourceKind::Relay { .. }))
        else {
            return;
        };
        let mut need = 0u8;
        for id in &r.subscribers {
            let Some(v) = self.sessions.get(id) else {
                continue;
            };
            if !v.relay_layers.is_empty() {
                // An edge's pull takes every layer.
                need = ALL_LAYERS;
                break;
            }
            for l in [v.sel.current, v.sel.target].into_iter().flatten() {
                need |= 1u8.checked_shl(u32::from(l)).unwrap_or(0) & ALL_LAYERS;
            }
        }
        if r.need_sent == Some(need) {
            return;
        }
        r.need_sent = Some(need);
        self.ask_source(name, src, Feedback::Need { layers: need });
    }

    /// The home sends its simulcast layers' states to every worker it
    /// relays `name` to (each of its rate windows, a layer paused or resumed).
    pub(super) fn relay_layer_states(&mut self, name: &RoomName) {
        let Some(r) = self.rooms.get(name).filter(|r| !r.relays.is_empty()) else {
            return;
        };
        let Some(states) = layer_states(r) else {
            return;
        };
        let me = self.config.shard.index;
        for to in r.relays.iter().map(|t| t.worker) {
            self.out.relays.push_back((
                to,
                RelayMsg {
                    from: me,
                    to,
                    room: name.clone(),
                    body: RelayBody::Layers(states),
                },
            ));
        }
    }

    /// Queue `body` about `room` for worker `to`.
    pub(super) fn relay_send(&mut self, to: usize, room: &RoomName, body: RelayBody) {
        self.out.relays.push_back((
            to,
            RelayMsg {
                from: self.config.shard.index,
                to,
                room: room.clone(),
                body,
            },
        ));
    }

    /// A viewer core's relayed packet: count it on its copy of the room's
    /// track, then fan it out to its own viewers like a publisher's (the
    /// source-agnostic `forward_in`).
    fn relayed_packet(&mut self, now: Instant, from: usize, name: &RoomName, p: &RelayPacket) {
        let Some(room) = self.rooms.get_mut(name) else {
            return; // no viewer here any more: our `Want(false)` is on its way
        };
        let Some(src) = room
            .source
            .filter(|s| s.kind == SourceKind::Relay { home: from })
        else {
            return;
        };
        if room.tracks[p.kind].is_none() {
            attach_copy(room, &mut self.sessions, &mut self.out, p.kind, p.simulcast);
        }
        let Some(t) = room.tracks[p.kind].as_mut() else {
            return;
        };
        let layer = usize::from(p.layer);
        if layer >= MAX_LAYERS {
            return;
        }
        while t.layers.len() <= layer {
            t.layers.push(Layer::new(None));
        }
        let l = &mut t.layers[layer];
        if l.rid.is_none() {
            l.rid = p.rid;
        }
        l.ssrc = Some(p.ssrc);
        let ext = p.ext.values();
        let view = SourcePacket {
            ssrc: p.ssrc,
            pt: p.pt,
            seq: p.seq,
            ts: p.ts,
            marker: p.marker,
            payload: &p.payload,
            ext: &ext,
        };
        let what = Resolved {
            kind: p.kind,
            layer: p.layer,
            params: p.params,
        };
        let after = forward_in(
            room,
            (src.id, p.ssrc),
            what,
            &view,
            &mut self.sessions,
            &mut self.out,
            now,
        );
        self.after_forward(now, after);
    }

    /// A viewer core's copy takes the home's simulcast layer states (see
    /// [`RelayBody::Layers`]) and re-chooses its viewers' layers from them.
    fn relayed_layers(&mut self, now: Instant, from: usize, name: &RoomName, s: &LayerStates) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.relay_home() != Some(from) {
            return;
        }
        if room.tracks.video.is_none() {
            attach_copy(
                room,
                &mut self.sessions,
                &mut self.out,
                MediaKind::Video,
                true,
            );
        }
        let Some(t) = room.tracks.video.as_mut().filter(|t| t.simulcast) else {
            return;
        };
        for (i, info) in s.iter().enumerate() {
            let Some(info) = info else {
                continue;
            };
            while t.layers.len() <= i {
                t.layers.push(Layer::new(None));
            }
            let l = &mut t.layers[i];
            if l.rid.is_none() {
                l.rid = info.rid;
            }
            l.rate = info.rate;
            l.paused = info.paused;
            if info.size.is_some() {
                l.size = info.size;
            }
        }
        self.select_layers(now, name, None);
    }

    /// The home's publisher left: drop the copy of its tracks, and take a
    /// new source id, so that viewers start a new segment when the next
    /// publisher's packets come (even on the same SSRCs).
    fn relayed_publisher_gone(&mut self, from: usize, name: &RoomName) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.relay_home() != Some(from) {
            return;
        }
        self.next_id += 1;
        r.source = Some(Source {
            id: SessionId(self.next_id),
            kind: SourceKind::Relay { home: from },
        });
        for t in r.tracks.values_mut() {
            *t = None;
        }
        for sub in &r.subscribers {
            if let Some(v) = self.sessions.get_mut(sub) {
                v.outs
                    .values_mut()
                    .flatten()
                    .for_each(super::out_stream::OutStream::detach);
                v.sel.detach();
            }
        }
        mark_need(r, &mut self.out);
        self.keyframe_timers.retain(|(_, n, _)| n != name);
    }
}

/// A relayed copy's new track of `kind` (a simulcast one without layers
/// yet: they come with their rids): every viewer starts a new segment on it.
fn attach_copy(
    room: &mut Room,
    sessions: &mut IdMap<Session>,
    out: &mut Outbox,
    kind: MediaKind,
    simulcast: bool,
) {
    let mut t = Track::new(&[]);
    if simulcast && kind == MediaKind::Video {
        t.simulcast = true;
        t.layers.clear();
        t.record_layer = None;
    }
    room.tracks[kind] = Some(t);
    for sub in &room.subscribers {
        if let Some(v) = sessions.get_mut(sub) {
            if kind == MediaKind::Video {
                v.sel.detach();
            }
            if let Some(o) = v.outs[kind].as_mut() {
                o.detach();
            }
        }
    }
    if kind == MediaKind::Video {
        mark_need(room, out);
    }
}

/// A relayed copy's need set may have changed (a viewer's layer choice or
/// switch, a viewer left, the tracks went): it is worked out again and sent
/// at the next `poll_output` ([`Sfu::flush_needs`]). Nothing for a home.
pub(super) fn mark_need(room: &mut Room, out: &mut Outbox) {
    if room.relay_home().is_some() && !room.need_dirty {
        room.need_dirty = true;
        out.need_dirty.push(room.name.clone());
    }
}

/// The home's simulcast video layers, as its relays are told them; `None`
/// without a simulcast video track.
pub(super) fn layer_states(room: &Room) -> Option<LayerStates> {
    let t = room.tracks.video.as_ref().filter(|t| t.simulcast)?;
    let mut s = [None; MAX_LAYERS];
    for (slot, l) in s.iter_mut().zip(&t.layers) {
        *slot = Some(LayerInfo {
            rid: l.rid,
            rate: l.rate,
            paused: l.paused,
            size: l.size,
        });
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_relay_message_stays_small() {
        // Each queue between two workers holds `RELAY_QUEUE` of these.
        let n = std::mem::size_of::<super::RelayMsg>();
        assert!(n <= 256, "{n} bytes");
    }
}
