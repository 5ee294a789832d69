//! A room: at most one source, any number of viewers, one track per kind.
//!
//! # The room's source
//!
//! "Where this room's packets come from" is one notion, [`Source`]: a
//! [`SourceKind`] and an id. Everything downstream of the source is the
//! same whatever its kind:
//!
//! - **Packets in.** The source hands each packet to the fan-out as a
//!   [`super::source::SourcePacket`] (clear RTP header fields and the shared
//!   payload, never SRTP) plus what it resolved about it
//!   ([`super::source::Resolved`]: kind, layer, negotiated codec). The
//!   fan-out (`forward.rs`) reads nothing else of the source: its per-viewer
//!   loop never looks at the source's kind.
//! - **Feedback out.** Keyframe requests (and, for kinds that can use them,
//!   layer needs) go to the source through one dispatch function,
//!   `Sfu::ask_source` in `source.rs`, the only `match` on the kind.
//! - **Identity.** `Source::id` plus the packet's SSRC is what a viewer's
//!   stream is mapped from (`out_stream.rs`): a new id or SSRC starts a new
//!   segment, numbered on from the last packet the viewer got, so viewers
//!   keep continuous numbering when one source ends and another takes over.
//!
//! The session-backed kinds (a WHIP publisher, an edge's upstream) have
//! their `Rtc` in the session map under `id`, resolve packets from that
//! `Rtc`, and take keyframe requests as RTCP PLI. The kind with no session
//! of its own, [`SourceKind::Relay`] (another worker's room, pushed in by
//! `Sfu::handle_relay` in `relay.rs`):
//!
//! 1. takes an id from the core's session id counter, so that it never
//!    equals a session's, and holds the room's source slot with it (one
//!    source per room, as for the others); a new id per publisher of the
//!    home, so viewers start a new segment even on the same SSRCs;
//! 2. attaches the room's tracks (and detaches viewers' streams) when its
//!    first packet of a kind comes, or for simulcast video the home's layer
//!    states (`relay.rs`), with the layers' rids, and drops them
//!    when the home's publisher ends; the slot goes with the last viewer;
//! 3. for each packet pushed in builds a `SourcePacket` from its header
//!    fields and payload and a `Resolved` from what the home resolved
//!    (track kind, layer index, the `PayloadParams` of its payload type),
//!    then calls `forward_in` and `Sfu::after_forward` (`forward.rs`). It
//!    does not count `Stats::rtp_in`: the home did, and `/metrics` sums
//!    the workers;
//! 4. has its arm in `Sfu::ask_source`, which turns the `Feedback` into an
//!    [`super::Output::Relay`] to the home.

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

/// What kind of source feeds a room (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A WHIP publisher session on this core.
    Whip,
    /// Another worker of this process (the room's home, which has its
    /// publisher) relays the room's packets in the clear (`relay.rs`): no
    /// session here; the id is a pseudo-session's, a new one per publisher
    /// of the home; feedback goes out as [`super::Output::Relay`].
    Relay {
        /// The home worker.
        home: usize,
    },
    /// An edge's pull of the room from its origin: a WHEP client session of
    /// this core (`upstream.rs`).
    Upstream,
}

impl SourceKind {
    /// A session of this core (its `Rtc` is in the session map).
    pub fn is_session(self) -> bool {
        matches!(self, SourceKind::Whip | SourceKind::Upstream)
    }
}

/// A room's source: its kind, and the id its packets are known by (a
/// session id for the kinds that are sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The session (or pseudo-session) the packets come from.
    pub id: SessionId,
    /// What it is.
    pub kind: SourceKind,
}

/// One room of the Manager.
#[derive(Debug)]
pub struct Room {
    /// Its name.
    pub name: RoomName,
    /// Where its packets come from, if anywhere yet.
    pub source: Option<Source>,
    /// The viewer sessions, in join order.
    pub subscribers: Vec<SessionId>,
    /// The source's tracks, per kind.
    pub tracks: PerKind<Option<Track>>,
    /// When the room was created.
    pub created: Instant,
    /// Record the current publisher's tracks.
    pub record: bool,
    /// The other workers of this process with viewers of this room (home
    /// side of the relay, `relay.rs`): each gets every packet it needs
    /// once. At most one entry per worker.
    pub relays: Vec<RelayTo>,
    /// A relayed copy (viewer side): the need set last sent to the home
    /// (`None`: none yet, or it was lost), and whether it may have changed
    /// since (the room is then in `Outbox::need_dirty`).
    pub need_sent: Option<u8>,
    /// See `need_sent`.
    pub need_dirty: bool,
}

/// One other worker a home relays a room to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTo {
    /// The worker.
    pub worker: usize,
    /// The simulcast video layers its viewers need (a bit per layer index,
    /// `relay::RelayBody::Need`); audio and a plain video track always go.
    pub need: u8,
}

impl Room {
    /// An empty room.
    pub fn new(name: RoomName, now: Instant) -> Room {
        Room {
            name,
            source: None,
            subscribers: Vec::new(),
            tracks: PerKind::default(),
            created: now,
            record: false,
            relays: Vec::new(),
            need_sent: None,
            need_dirty: false,
        }
    }

    /// Take `id` as the source (the caller has checked the slot is free).
    pub fn set_source(&mut self, id: SessionId, kind: SourceKind) {
        self.source = Some(Source { id, kind });
    }

    /// The source's id, if the room has a source.
    pub fn source_id(&self) -> Option<SessionId> {
        self.source.map(|s| s.id)
    }

    /// Add `id` as a viewer.
    pub fn subscribe(&mut self, id: SessionId) {
        self.subscribers.push(id);
    }

    /// The session that is the room's source, if its source is a session.
    pub fn source_session(&self) -> Option<SessionId> {
        self.source.filter(|s| s.kind.is_session()).map(|s| s.id)
    }

    /// The worker that relays this room's packets here, if any.
    pub fn relay_home(&self) -> Option<usize> {
        match self.source?.kind {
            SourceKind::Relay { home } => Some(home),
            SourceKind::Whip | SourceKind::Upstream => None,
        }
    }

    /// No source session, no viewer, and no other worker relaying from
    /// here: the room can be pruned (a relayed room goes with its last viewer).
    pub fn is_empty(&self) -> bool {
        self.source_session().is_none() && self.subscribers.is_empty() && self.relays.is_empty()
    }

    /// Whether worker `w` is relayed this room.
    pub fn relays_to(&self, w: usize) -> bool {
        self.relays.iter().any(|r| r.worker == w)
    }

    /// Remove a viewer. Returns whether it was there.
    pub fn remove_subscriber(&mut self, id: SessionId) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| *s != id);
        before != self.subscribers.len()
    }

    /// Close the source slot if `id` holds it; its tracks go with it.
    /// Returns the recordings those tracks fed (to be stopped), or `None` if
    /// `id` was not the source.
    pub fn close_source(&mut self, id: SessionId) -> Option<Vec<RecordingId>> {
        if self.source_id() != Some(id) {
            return None;
        }
        self.source = None;
        let recs = self
            .tracks
            .values_mut()
            .filter_map(|t| t.take()?.recording.map(|(r, _)| r))
            .collect();
        Some(recs)
    }
}
