//! The relay between workers of one process (`WISP_WORKERS`): a room's
//! packets, handed in the clear from its home worker (the one with its
//! publisher) to the other workers that have viewers of it.
//!
//! ```text
//!  home core ──Output::Relay(Packet)──▶ driver queue ──▶ viewer core: handle_relay
//!            ◀─Output::Relay(Want, Keyframe)──────────── (its own viewers' needs)
//! ```
//!
//! Contract:
//! - The home core emits each publisher packet once per worker in
//!   `Room::relays`, after its own fan-out: RTP header fields and payload
//!   (shared, not copied), never SRTP. No per-viewer work crosses workers:
//!   the viewer core runs the ordinary fan-out (`forward.rs`) for its own
//!   viewers, with its own copy of the room's tracks (rates, layers,
//!   keyframe throttle), so layer choice is made per viewer where it lives.
//! - On a viewer core the relay is the room's source, of kind
//!   [`SourceKind::Relay`] (the contract of a room's source is in
//!   `room.rs`): packets come in through `forward_in` as a `SourcePacket`
//!   with the home's `Resolved` (kind, layer, codec); keyframe requests go
//!   out through `Sfu::ask_source` as `Keyframe`. It sends `Want(true)`
//!   with every relayed subscribe and `Want(false)` when its last viewer
//!   leaves.
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
use super::room::{Source, SourceKind, Track};
use super::simulcast::{Layer, MAX_LAYERS};
use super::source::{Resolved, SourcePacket};
use super::{RoomName, SessionId, Sfu};

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

/// What crosses between two workers' cores.
// Not boxed: a box would be one allocation per relayed packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RelayBody {
    /// Home → viewer worker: one packet.
    Packet(RelayPacket),
    /// Home → viewer worker: the publisher left; its tracks went with it.
    PublisherGone,
    /// Viewer worker → home: relay this room to me (`true`), or stop.
    Want(bool),
    /// Viewer worker → home: a keyframe of this video layer, please.
    Keyframe {
        /// The layer.
        layer: u8,
    },
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
                if !r.relays.contains(&from) {
                    r.relays.push(from);
                }
            }
            RelayBody::Want(false) => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.relays.retain(|w| *w != from);
                    if r.is_empty() {
                        self.rooms.remove(&room);
                        self.rooms_removed += 1;
                        self.keyframe_timers.retain(|(_, n, _)| *n != room);
                    }
                }
            }
            RelayBody::Keyframe { layer } => {
                let ours = self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.relays.contains(&from));
                if ours {
                    self.request_keyframe(now, &room, layer);
                }
            }
        }
        self.process(now);
    }

    /// The driver could not queue `msg` (the receiving worker's queue is
    /// full): it is counted; a packet is dropped, anything else (a join, a
    /// keyframe request, a publisher's end) is sent again at the next
    /// [`Sfu::handle_timeout`], up to [`MAX_RETRY`] of them waiting.
    pub fn relay_dropped(&mut self, msg: RelayMsg) {
        self.out.stats.relay_queue_full += 1;
        if !matches!(msg.body, RelayBody::Packet(_)) && self.out.relay_retry.len() < MAX_RETRY {
            self.out.relay_retry.push(msg);
        }
    }

    /// Queue again what [`Sfu::relay_dropped`] kept (called by `handle_timeout`).
    pub(super) fn relay_retry(&mut self) {
        for msg in std::mem::take(&mut self.out.relay_retry) {
            self.out.relays.push_back((msg.to, msg));
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
            let mut t = Track::new(&[]);
            if p.simulcast && p.kind == MediaKind::Video {
                t.simulcast = true;
                t.layers.clear();
                t.record_layer = None;
            }
            room.tracks[p.kind] = Some(t);
            // A new track: every viewer starts a new segment on it.
            for sub in &room.subscribers {
                if let Some(v) = self.sessions.get_mut(sub) {
                    if p.kind == MediaKind::Video {
                        v.sel.detach();
                    }
                    if let Some(o) = v.outs[p.kind].as_mut() {
                        o.detach();
                    }
                }
            }
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
        self.keyframe_timers.retain(|(_, n, _)| n != name);
    }
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
