//! A room: at most one publisher, any number of viewers, one track per kind.

use std::time::Instant;

use str0m::format::Codec;

use super::id::{RoomName, SessionId};
use super::per_kind::PerKind;
use super::recorder_tap::RecordingId;
use super::simulcast::Layer;

/// A publisher track as the room sees it (fan-out source for one kind).
#[derive(Debug, Clone, Default)]
pub struct Track {
    /// Codec of the last packet.
    pub codec: Option<Codec>,
    /// Packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// The recording this track feeds, and the codec it was started with.
    pub recording: Option<(RecordingId, Codec)>,
    /// Its encodings: one with no rid for a plain track, one per rid for
    /// simulcast (at most [`super::simulcast::MAX_LAYERS`]). Indices are stable
    /// for the life of the track.
    pub layers: Vec<Layer>,
    /// The publisher offered simulcast on this track.
    pub simulcast: bool,
    /// Start of the current bitrate window.
    pub window_start: Option<Instant>,
    /// The layer the recorder gets (simulcast: the highest, fixed once chosen).
    pub record_layer: Option<u8>,
    /// Packets/s in the last load sample, and `packets` at that sample.
    pub pps: f64,
    /// `packets` at the last load sample.
    pub packets_mark: u64,
}

impl Track {
    /// A plain track (one encoding), or a simulcast one with `rids` in offer order.
    pub fn new(rids: &[str0m::media::Rid]) -> Track {
        let simulcast = !rids.is_empty();
        let layers = if simulcast {
            rids.iter()
                .take(super::simulcast::MAX_LAYERS)
                .map(|r| Layer::new(Some(*r)))
                .collect()
        } else {
            vec![Layer::new(None)]
        };
        Track {
            layers,
            simulcast,
            record_layer: if simulcast { None } else { Some(0) },
            ..Track::default()
        }
    }
}

/// One room of the Manager.
#[derive(Debug)]
pub struct Room {
    /// Its name.
    pub name: RoomName,
    /// The publisher session, if any.
    pub publisher: Option<SessionId>,
    /// The viewer sessions, in join order.
    pub subscribers: Vec<SessionId>,
    /// The publisher's tracks, per kind.
    pub tracks: PerKind<Option<Track>>,
    /// When the room was created.
    pub created: Instant,
    /// Record the current publisher's tracks.
    pub record: bool,
    /// Home side of the relay between workers: the other workers that have
    /// viewers of this room; each gets every packet once (`relay.rs`).
    /// At most one entry per worker.
    pub relays: Vec<usize>,
    /// Viewer side of the relay: the room's packets come from this worker
    /// (the home worker, which has the publisher), not from a publisher here.
    pub relay_home: Option<usize>,
}

impl Room {
    /// An empty room.
    pub fn new(name: RoomName, now: Instant) -> Room {
        Room {
            name,
            publisher: None,
            subscribers: Vec::new(),
            tracks: PerKind::default(),
            created: now,
            record: false,
            relays: Vec::new(),
            relay_home: None,
        }
    }

    /// Take `id` as the publisher (the caller has checked the slot is free).
    pub fn publish(&mut self, id: SessionId) {
        self.publisher = Some(id);
    }

    /// Add `id` as a viewer.
    pub fn subscribe(&mut self, id: SessionId) {
        self.subscribers.push(id);
    }

    /// Neither a publisher nor a viewer, here or on another worker: the
    /// room can be pruned.
    pub fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.subscribers.is_empty() && self.relays.is_empty()
    }

    /// Remove a viewer. Returns whether it was there.
    pub fn remove_subscriber(&mut self, id: SessionId) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| *s != id);
        before != self.subscribers.len()
    }

    /// Close the publisher slot if `id` holds it; its tracks go with it.
    /// Returns the recordings those tracks fed (to be stopped), or `None` if
    /// `id` was not the publisher.
    pub fn close_publisher(&mut self, id: SessionId) -> Option<Vec<RecordingId>> {
        if self.publisher != Some(id) {
            return None;
        }
        self.publisher = None;
        let recs = self
            .tracks
            .values_mut()
            .filter_map(|t| t.take()?.recording.map(|(r, _)| r))
            .collect();
        Some(recs)
    }
}
