//! One peer: a str0m `Rtc` plus what wisp knows about it. [`guarded`] is the
//! one way into an `Rtc`, and [`drain`] the only place one is polled.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::media::{MediaKind, Mid};
use str0m::net::Transmit;
use str0m::rtp::Ssrc;
use str0m::{Event, Output, Rtc};

use super::command::Role;
use super::demux::RecentTxids;
use super::id::{RoomName, SessionId, SessionToken};
use super::out_stream::OutStream;
use super::per_kind::PerKind;
use super::simulcast::Selection;
use super::timers::TimerSlot;

/// A panic caught in one session's work: that session is ended, the loop
/// and every other session live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

/// Run `f`, catching a panic: the guard around work that a bug (in str0m
/// or in wisp) could make panic, so that it ends one session and not the
/// process. Used by [`guarded`], and where an `Rtc` is built.
#[inline]
pub fn guard<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Panicked)
}

/// The one guarded call into an `Rtc`: `f(rtc)`, with a panic inside it
/// caught and returned as [`Panicked`]. Every call that can reach str0m's
/// state machine goes through here.
#[inline]
pub fn guarded<R>(rtc: &mut Rtc, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, Panicked> {
    guard(|| f(rtc))
}

/// A publisher's or viewer's peer connection.
#[derive(Debug)]
pub struct Session {
    /// Internal id.
    pub id: SessionId,
    /// Public token in the session URL.
    pub token: SessionToken,
    /// Current strong ETag (quoted); changes on ICE restart.
    pub etag: String,
    /// The client's ICE ufrag; a PATCH with another one is an ICE restart.
    pub remote_ufrag: String,
    /// The last offer accepted (the base for a remote ICE restart). ≤ the body limit.
    pub offer: StoredOffer,
    /// Publisher or viewer.
    pub role: Role,
    /// The room it belongs to.
    pub room: RoomName,
    /// The str0m peer, boxed: an `Rtc` is ~10 KB inline, and the session map
    /// keeps up to twice its length in slots (hash table growth).
    pub rtc: Box<Rtc>,
    /// Local ICE ufrag (key in the ufrag map).
    pub ufrag: String,
    /// When the session was created.
    pub created: Instant,
    /// ICE and DTLS are up (`Event::Connected` seen).
    pub connected: bool,
    /// Set when the session must end; removed at the end of the current call.
    pub dead: bool,
    /// This session's entry in the timer heap.
    pub timer: TimerSlot,
    /// Publisher: SSRC → kind it feeds and its layer index in the room's track
    /// (`None`: ignored extra track or layer). Small.
    pub ssrc_kind: Vec<(Ssrc, Option<(MediaKind, u8)>)>,
    /// Publisher: the mid carrying each kind.
    pub track_mid: PerKind<Option<Mid>>,
    /// Viewer: the outgoing stream per kind.
    pub outs: PerKind<Option<OutStream>>,
    /// Viewer: which simulcast layer of the room's video it gets.
    pub sel: Selection,
    /// Last cumulative NACK count seen in a stats event, per kind (for deltas).
    pub nacks_seen: PerKind<u64>,
    /// Verified checks from new addresses after connecting (NAT rebinding).
    pub rebinds: u32,
    /// Test hook: panic on the next drain (see `Sfu::inject_panic`).
    pub inject_panic: bool,
    /// Written to since the last drain, and listed in `Sfu::written` once.
    pub queued: bool,
    /// When this session's RTT and loss last went into the histograms (at
    /// most once a second, whatever its stats interval).
    pub observed: Option<Instant>,
    /// Transaction ids of the latest Binding requests (any address): a check
    /// replayed from another address is never promoted (see `demux::with_priority`).
    pub recent_txids: RecentTxids,
    /// Until connected: what is known of the ICE/DTLS handshake.
    pub handshake: super::handshake::Handshake,
    /// Viewer: paused by overload control (see `super::shed`).
    pub shed: super::shed::ShedState,
    /// An upstream (an edge's pull of its room from the origin; see
    /// `super::upstream`): what it has beyond any session. Its role is
    /// `Publisher`, as the room's source.
    pub pull: Option<Box<super::upstream::Pull>>,
    /// Viewer whose offer asked for simulcast (`a=simulcast:recv`, an
    /// edge's upstream): its rids in offer order, each with the stream the
    /// room's video layer of the same position goes out on (a plain track
    /// goes out on the first). It gets every layer and makes no layer
    /// choice; the edge's viewers make theirs. Empty for other viewers.
    pub relay_layers: Vec<(str0m::media::Rid, OutStream)>,
    /// Viewer whose offer asked for every simulcast layer, whatever the
    /// room has: another node's upstream.
    pub downstream_edge: bool,
}

impl Session {
    /// A new session in `room` with its `rtc` and its local ICE `ufrag`, not
    /// yet connected; every per-role field starts empty (the caller sets
    /// what its role needs). The one place a `Session` is built.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        token: SessionToken,
        etag: String,
        role: Role,
        room: RoomName,
        rtc: Rtc,
        ufrag: String,
        offer: &str,
        now: Instant,
    ) -> Session {
        Session {
            id,
            token,
            etag,
            remote_ufrag: String::new(),
            offer: StoredOffer::new(offer),
            role,
            room,
            rtc: Box::new(rtc),
            ufrag,
            created: now,
            connected: false,
            dead: false,
            timer: Default::default(),
            ssrc_kind: Vec::new(),
            track_mid: PerKind::default(),
            outs: PerKind::default(),
            sel: Selection::default(),
            nacks_seen: PerKind::default(),
            rebinds: 0,
            inject_panic: false,
            queued: false,
            observed: None,
            recent_txids: RecentTxids::default(),
            handshake: Default::default(),
            shed: Default::default(),
            pull: None,
            relay_layers: Vec::new(),
            downstream_edge: false,
        }
    }

    /// Publisher: the kind of its track on `mid` (audio unless it is the video track's).
    pub fn kind_of_track(&self, mid: Mid) -> MediaKind {
        if self.track_mid.video == Some(mid) {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }

    /// Viewer: the kind of its outgoing stream on `mid` (audio unless it is the video stream's).
    pub fn kind_of_out(&self, mid: Mid) -> MediaKind {
        if self.outs.video.as_ref().is_some_and(|o| o.mid == mid) {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }
}

/// An offer kept for the whole session, LZ4-compressed: read back only on an
/// ICE restart or an m-line lookup, while its ~5 KB of text would be ~7 % of
/// an idle viewer's memory (issue 7: ≤ 64 KiB per idle session).
#[derive(Clone)]
pub struct StoredOffer(Box<[u8]>);

impl StoredOffer {
    /// Compress `text` (~5 µs for a 5 KB offer, to ~40 %).
    pub fn new(text: &str) -> StoredOffer {
        StoredOffer(lz4_flex::block::compress_prepend_size(text.as_bytes()).into_boxed_slice())
    }

    /// The offer's text.
    pub fn text(&self) -> String {
        lz4_flex::block::decompress_size_prepended(&self.0)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for StoredOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredOffer({} bytes compressed)", self.0.len())
    }
}

/// Where a drain puts what it pulls out of an `Rtc`.
pub struct Sinks<'a> {
    /// Datagrams to send.
    pub transmits: &'a mut VecDeque<Transmit>,
    /// Events to process after the drain, tagged with their session.
    pub events: &'a mut VecDeque<(SessionId, Event)>,
    /// The error that ended the `Rtc`, in words, if one did.
    pub error: &'a mut Option<String>,
}

/// Outcome of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The `Rtc` wants a timeout at this instant.
    Until(Instant),
    /// The `Rtc` errored, panicked or is no longer alive: end the session.
    Dead {
        /// True if the `Rtc` panicked.
        panicked: bool,
    },
}

/// [`drain`], then serve a deadline that is already due at once (str0m queues
/// a written packet and releases it on the next timeout): the packet leaves
/// in this call instead of a trip through the timer heap. Bounded: at most a
/// few rounds, then the heap takes over.
pub fn drain_due(id: SessionId, rtc: &mut Rtc, sinks: &mut Sinks<'_>, now: Instant) -> Drained {
    let mut d = drain(id, rtc, sinks);
    for _ in 0..4 {
        match d {
            Drained::Until(t) if t <= now => {
                if guarded(rtc, |rtc| rtc.handle_input(str0m::Input::Timeout(now))).is_err() {
                    return Drained::Dead { panicked: true };
                }
                d = drain(id, rtc, sinks);
            }
            _ => break,
        }
    }
    d
}

/// Poll `rtc` until it returns a timeout, moving transmits and events into
/// `sinks`. A panic inside str0m is caught and reported as `Dead`.
pub fn drain(id: SessionId, rtc: &mut Rtc, sinks: &mut Sinks<'_>) -> Drained {
    // Bounded: str0m returns Timeout once it has nothing more; the bound only
    // guards against a bug turning this into a spin.
    for _ in 0..100_000 {
        match guarded(rtc, |rtc| rtc.poll_output()) {
            Ok(Ok(Output::Timeout(t))) => {
                if !rtc.is_alive() {
                    return Drained::Dead { panicked: false };
                }
                return Drained::Until(t);
            }
            Ok(Ok(Output::Transmit(t))) => sinks.transmits.push_back(t),
            Ok(Ok(Output::Event(e))) => sinks.events.push_back((id, e)),
            Ok(Err(e)) => {
                log::debug!("session {id:?}: rtc error: {e}");
                *sinks.error = Some(e.to_string());
                return Drained::Dead { panicked: false };
            }
            Err(_) => return Drained::Dead { panicked: true },
        }
    }
    log::error!("session {id:?}: drain did not reach a timeout");
    Drained::Dead { panicked: false }
}

#[cfg(test)]
mod tests {
    use super::StoredOffer;

    #[test]
    fn stored_offer_round_trips_and_is_smaller() {
        let mut offer = String::from("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
        for pt in 96..120 {
            offer.push_str(&format!(
                "a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n"
            ));
        }
        let s = StoredOffer::new(&offer);
        assert_eq!(s.text(), offer);
        assert!(
            s.0.len() < offer.len() / 2,
            "{} of {}",
            s.0.len(),
            offer.len()
        );
        assert_eq!(StoredOffer::new("").text(), "");
    }
}
