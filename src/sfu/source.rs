//! The room's source, as the fan-out and the viewers see it (the contract is
//! in `room.rs`'s module docs): the packet view every kind hands in, how a
//! session-backed source resolves its packets, and [`Sfu::ask_source`], the
//! one place feedback is dispatched by kind.

use std::sync::Arc;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, Ssrc};

use super::room::{Room, Source, SourceKind};
use super::session::{guarded, Session};
use super::{simulcast, DropReason, Outbox, RoomName, Sfu};

/// One packet of a room's source, in the clear: everything the fan-out
/// reads of it. Borrowed, so building it costs nothing. str0m's
/// `RtpPacket` cannot be built outside str0m (private fields), so a source
/// that is not an `Rtc` fills this view from its own header fields and
/// payload.
#[derive(Debug, Clone, Copy)]
pub struct SourcePacket<'a> {
    /// The source's SSRC for this stream (with the source's id, the
    /// identity a viewer's stream is mapped from).
    pub ssrc: Ssrc,
    /// The source's payload type (resolved to a codec by [`Resolved`]).
    pub pt: Pt,
    /// Extended sequence number (no wrap).
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload, shared by every viewer's write.
    pub payload: &'a Arc<[u8]>,
    /// Header extension values; only the media ones travel on.
    pub ext: &'a ExtensionValues,
}

impl<'a> SourcePacket<'a> {
    /// The view of a packet decrypted by a source session's `Rtc`.
    #[inline]
    pub fn of(p: &'a RtpPacket) -> SourcePacket<'a> {
        SourcePacket {
            ssrc: p.header.ssrc,
            pt: p.header.payload_type,
            seq: *p.seq_no,
            ts: p.header.timestamp,
            marker: p.header.marker,
            payload: &p.payload,
            ext: &p.header.ext_vals,
        }
    }
}

/// What the source knows about a packet that the fan-out needs: which of
/// the room's tracks and layers it feeds, and its negotiated codec.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The room track it feeds.
    pub kind: MediaKind,
    /// Its layer in the room's video track (0 for audio and a plain track).
    pub layer: u8,
    /// The source's negotiated parameters for its payload type.
    pub params: PayloadParams,
}

/// What viewers need of a room's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A keyframe of video layer `layer` of the room's track (throttling is
    /// done before this is sent: see `layers.rs`).
    Keyframe {
        /// Index in the room's video track layers.
        layer: u8,
    },
    /// The simulcast video layers this core's viewers of the room need, a
    /// bit per layer index (each viewer's current and target layer). Only
    /// a relay uses it: a session-backed source sends every layer anyway.
    Need {
        /// The need set.
        layers: u8,
    },
}

/// Resolve one packet of a session-backed source `p` feeding `room`: its
/// track and layer from the SSRC (cached per session), its codec from the
/// payload type. `None` (counted as a drop) for an extra track or an unknown
/// payload type.
pub(super) fn resolve_session(
    p: &mut Session,
    room: &mut Room,
    pkt: &SourcePacket<'_>,
    out: &mut Outbox,
) -> Option<Resolved> {
    let ssrc = pkt.ssrc;
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
        out.stats.drop(DropReason::ExtraTrack);
        return None;
    };
    let Some(params): Option<PayloadParams> =
        p.rtc.codec_config().find(|c| c.pt() == pkt.pt).copied()
    else {
        out.stats.drop(DropReason::UnknownPayloadType);
        return None;
    };
    Some(Resolved {
        kind,
        layer,
        params,
    })
}

/// Which kind and layer a source SSRC feeds: its m-line must be the
/// session's track of that kind; a video rid becomes (or finds) a layer of
/// the room's track. `Ok(None)`: an extra track or a layer beyond the bound;
/// `Err`: not known yet (a simulcast SSRC whose rid is not bound), ask again.
fn classify_ssrc(
    p: &mut Session,
    room: &mut Room,
    ssrc: Ssrc,
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
    if p.track_mid[kind] != Some(mid) {
        return Ok(None);
    }
    let Some(track) = room.tracks[kind].as_mut() else {
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

impl Sfu {
    /// Send `fb` to `room`'s source `src`, whatever its kind: the one
    /// place feedback is dispatched by kind. Returns whether it was sent.
    pub(super) fn ask_source(&mut self, room: &RoomName, src: Source, fb: Feedback) -> bool {
        use super::relay::RelayBody;
        match (src.kind, fb) {
            (SourceKind::Whip | SourceKind::Upstream, Feedback::Keyframe { layer }) => {
                self.keyframe_from_session(src, layer)
            }
            (SourceKind::Whip | SourceKind::Upstream, Feedback::Need { .. }) => false,
            (SourceKind::Relay { home }, Feedback::Keyframe { layer }) => {
                // To the home worker, which asks its publisher (with its
                // own throttle) for every worker at once. The need set goes
                // first (same queue, in order), so that the home relays the
                // layer by the time its keyframe comes.
                self.flush_need(room);
                self.relay_send(home, room, RelayBody::Keyframe { layer });
                true
            }
            (SourceKind::Relay { home }, Feedback::Need { layers }) => {
                self.relay_send(home, room, RelayBody::Need(layers));
                true
            }
        }
    }

    /// A session-backed source: an RTCP PLI on the stream of `layer`.
    fn keyframe_from_session(&mut self, src: Source, layer: u8) -> bool {
        let Some(p) = self.sessions.get_mut(&src.id) else {
            return false;
        };
        let Some(mid) = p.track_mid.video else {
            return false;
        };
        let rid = self
            .rooms
            .get(&p.room)
            .and_then(|r| r.tracks.video.as_ref())
            .and_then(|t| t.layers.get(usize::from(layer)))
            .and_then(|l| l.rid);
        let sent = guarded(&mut p.rtc, |rtc| {
            let mut api = rtc.direct_api();
            let rx = api.stream_rx_by_mid(mid, rid);
            let found = rx.is_some();
            if let Some(rx) = rx {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
            found
        });
        if sent == Ok(true) {
            self.out.stats.keyframe_requests_sent += 1;
            self.drain_session(src.id);
            return true;
        }
        false
    }
}
