//! The fan-out: one publisher packet to every viewer of its room.
//!
//! [`Facts::of`] works out what the packet is, once: its kind and layer,
//! codec, whether it starts a keyframe (and the picture size that keyframe
//! declares), its VP8/VP9 picture ids and the media extensions that travel
//! on. It also counts the packet on the room's track and copies it to the
//! recorder. [`fan_out`] then writes it to each viewer, reading only the
//! facts and the viewer's own state. [`Sfu::drain_written`] sends what was
//! written, with one drain per viewer per ingress batch.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::MediaKind;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::Input;

use super::id::IdMap;
use super::out_stream::{Source, Verdict};
use super::relay::{MediaExt, RelayBody, RelayMsg, RelayPacket};
use super::room::Room;
use super::session::{self, guarded, Drained, Session};
use super::source::{self, Resolved, SourcePacket};
use super::{overload, recorder_tap, simulcast};
use super::{DropReason, Outbox, RoomName, SessionId, Sfu, Why};
use crate::codec::{self, Ids};

/// One packet's facts, worked out once before the fan-out and read by every viewer.
struct Facts {
    /// The publisher session and SSRC: what a viewer's stream is mapped from.
    source: Source,
    kind: MediaKind,
    /// `kind` is video.
    video: bool,
    /// Its layer in the room's video track (0 for audio and a plain track).
    layer: u8,
    /// Simulcast video: each viewer gets only its own layer.
    simulcast: bool,
    /// The publisher's negotiated parameters for its payload type.
    params: PayloadParams,
    codec: Codec,
    clock_rate: u32,
    /// Video that starts a keyframe.
    keyframe: bool,
    /// VP8 picture id and TL0PICIDX (str0m patches them per viewer).
    vp8: Option<Ids>,
    /// VP9 picture id and TL0PICIDX (rewritten in a copy of the payload).
    vp9: Option<Ids>,
    /// The media extensions that travel on, if the packet has any.
    ext: Option<ExtensionValues>,
    /// A layer's rate window closed or a paused layer resumed: choices are re-made.
    rates_changed: bool,
}

impl Facts {
    /// The facts of `pkt` from `source` in `room`, as the source resolved
    /// it, with the track's bookkeeping done (counters, rate window, picture
    /// size, recorder tap). Reads nothing of the source itself.
    fn of(
        source: Source,
        what: Resolved,
        room: &mut Room,
        pkt: &SourcePacket<'_>,
        out: &mut Outbox,
        now: Instant,
    ) -> Facts {
        let Resolved {
            kind,
            layer,
            params,
        } = what;
        let codec = params.spec().codec;
        let video = kind == MediaKind::Video;
        let mut simulcast = false;
        let mut rates_changed = false;
        let mut au_start = true;
        // A relayed copy takes its layers' rates from the home (its own
        // packets are only the layers its viewers need): no windows here.
        let measure = room.relay_home().is_none();
        if let Some(t) = room.tracks[kind].as_mut() {
            t.packets += 1;
            t.bytes += pkt.payload.len() as u64;
            t.codec = Some(codec);
            simulcast = t.simulcast;
            if video {
                if let Some(l) = t.layers.get_mut(usize::from(layer)) {
                    au_start = l.starts_access_unit(pkt.ts);
                }
            }
            if simulcast {
                if let Some(l) = t.layers.get_mut(usize::from(layer)) {
                    l.packets += 1;
                    l.window_bytes += pkt.payload.len() as u64 + simulcast::PACKET_OVERHEAD;
                    if l.paused {
                        l.paused = false;
                        rates_changed = true;
                    }
                }
                let start = *t.window_start.get_or_insert(now);
                let elapsed = now.saturating_duration_since(start);
                if measure && elapsed >= simulcast::RATE_WINDOW {
                    // Every window: choices are re-made (holds expire,
                    // probes are re-armed) even when no rate moved.
                    simulcast::close_window(&mut t.layers, elapsed);
                    rates_changed = true;
                    t.window_start = Some(now);
                    if t.record_layer.is_none() {
                        t.record_layer = simulcast::highest(&t.layers);
                    }
                }
            }
            let recorded = !video || t.record_layer == Some(layer);
            if room.record && recorded {
                recorder_tap::tap(
                    t,
                    &room.name,
                    kind,
                    &params,
                    pkt,
                    &mut out.records,
                    &mut out.next_recording,
                );
            }
        }
        // The payload, walked once: keyframe start, the picture size it
        // declares, VP8/VP9 picture id and TL0PICIDX (rewritten per viewer
        // for continuity).
        let info = if video {
            codec::parse(codec, pkt.payload, au_start)
        } else {
            codec::PayloadInfo::default()
        };
        if let Some(size) = info.size {
            // The picture size its keyframes declare, for the layers event.
            if let Some(l) = room.tracks[kind]
                .as_mut()
                .and_then(|t| t.layers.get_mut(usize::from(layer)))
            {
                l.size = Some(size);
            }
        }
        let (keyframe, vp8, vp9) = (info.keyframe, info.vp8, info.vp9);
        // Only the extensions that describe the media travel on; transport ones
        // (TWCC, abs-send-time, mid/rid) are the viewer Rtc's own. Most video
        // packets carry none: then nothing is moved into every viewer's write.
        let e = pkt.ext;
        let ext = (e.audio_level.is_some()
            || e.voice_activity.is_some()
            || e.video_orientation.is_some())
        .then(|| ExtensionValues {
            audio_level: e.audio_level,
            voice_activity: e.voice_activity,
            video_orientation: e.video_orientation,
            ..Default::default()
        });
        Facts {
            source,
            kind,
            video,
            layer,
            simulcast: simulcast && video,
            clock_rate: params.spec().clock_rate.get(),
            params,
            codec,
            keyframe,
            vp8,
            vp9,
            ext,
            rates_changed,
        }
    }
}

impl Sfu {
    /// Fan one packet of a session-backed source (`pid`'s `Rtc` decrypted
    /// it) out to every viewer of the room, then ask for the keyframe a
    /// waiting viewer needs and re-choose layers if rates moved.
    pub(super) fn forward(&mut self, now: Instant, pid: SessionId, pkt: RtpPacket) {
        self.out.stats.rtp_in += 1;
        let Some(p) = self.sessions.get_mut(&pid) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        let view = SourcePacket::of(&pkt);
        let Some(what) = source::resolve_session(p, room, &view, &mut self.out) else {
            return;
        };
        let after = forward_in(
            room,
            (pid, view.ssrc),
            what,
            &view,
            &mut self.sessions,
            &mut self.out,
            now,
        );
        if !room.relays.is_empty() {
            relay_out(room, what, &view, &mut self.out, self.config.shard.index);
        }
        self.after_forward(now, after);
    }

    /// What one packet's fan-out asks for: a keyframe of the layer a viewer
    /// waits on, new layer choices.
    pub(super) fn after_forward(&mut self, now: Instant, after: After) {
        if let Some((room, layer)) = after.want_keyframe.as_ref() {
            self.request_keyframe(now, room, *layer);
        }
        if let Some(room) = after.rates_changed.as_ref() {
            // Other workers choose their viewers' layers from these.
            self.relay_layer_states(room);
            self.select_layers(now, room, None);
        }
    }

    /// Viewers written to whose datagrams `poll_output` has not made yet
    /// (it makes them a few viewers at a time, in fan-out order).
    pub fn undrained(&self) -> usize {
        self.out.written.len() - self.out.written_at
    }

    /// Send what `forward` wrote: each written viewer gets one str0m timeout
    /// (str0m releases a written packet only on a timeout) and one drain,
    /// however many packets it was given since the last call. Skipping the
    /// drain right after `write_rtp`, which could only return a timeout,
    /// saves a full `poll_output` walk per packet too.
    ///
    /// One call drains at most [`DRAIN_STEP`] viewers, in fan-out order
    /// (downstream edges first): `poll_output` hands their datagrams out
    /// before the next ones are encrypted, so the driver can send the first
    /// copies of a fan-out while the rest are made. Draining every viewer
    /// first delayed the first copy (and an edge's whole audience) by the
    /// whole fan-out: about 0.45 ms at 100 viewers.
    pub(super) fn drain_written(&mut self) {
        let now = self.last_now;
        let start = self.out.written_at;
        let end = self.out.written.len().min(start + DRAIN_STEP);
        for k in start..end {
            let id = self.out.written[k];
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            if s.dead {
                continue;
            }
            let drained =
                if guarded(&mut s.rtc, |rtc| rtc.handle_input(Input::Timeout(now))).is_err() {
                    Drained::Dead { panicked: true }
                } else {
                    session::drain_due(id, &mut s.rtc, &mut self.out.sinks(), now)
                };
            self.settle(id, drained);
        }
        self.out.written_at = end;
        if end == self.out.written.len() {
            // Keep the capacity: no allocation per batch.
            self.out.written.clear();
            self.out.written_at = 0;
            self.process(now);
        }
    }
}

/// Viewers one [`Sfu::drain_written`] call drains: small, so that the first
/// copies leave early, and each step costs one loop check.
const DRAIN_STEP: usize = 8;

/// What [`forward_in`] leaves to do once the fan-out's borrows end.
#[derive(Debug, Default)]
pub(super) struct After {
    /// A viewer waits for a keyframe of this room's video layer.
    pub want_keyframe: Option<(RoomName, u8)>,
    /// A layer's rate moved in this room: layer choices are re-made.
    pub rates_changed: Option<RoomName>,
}

/// The source-agnostic forwarding of one packet of `room`'s source: its
/// facts, then every viewer's write. `source` is the identity viewers'
/// streams are mapped from; `what` is what the source resolved. Any kind of
/// source calls this (see `room.rs`); it reads nothing of the source.
pub(super) fn forward_in(
    room: &mut Room,
    source: Source,
    what: Resolved,
    pkt: &SourcePacket<'_>,
    sessions: &mut IdMap<Session>,
    out: &mut Outbox,
    now: Instant,
) -> After {
    let facts = Facts::of(source, what, room, pkt, out, now);
    let served = overload::served(room.subscribers.len(), out.fanout_keep);
    let (want_keyframe, switched) = fan_out(
        &facts,
        pkt,
        &room.name,
        (&room.subscribers, served),
        sessions,
        out,
        now,
    );
    if switched {
        // A viewer left a layer: a relayed copy may need less of its home.
        super::relay::mark_need(room, out);
    }
    let mut after = After::default();
    if want_keyframe {
        let layer = if facts.video { facts.layer } else { 0 };
        after.want_keyframe = Some((room.name.clone(), layer));
    }
    if facts.rates_changed {
        after.rates_changed = Some(room.name.clone());
    }
    after
}

/// The home side of the relay between workers (`relay.rs`): `pkt` once to
/// each other worker with viewers of `room`, in the clear (the payload is
/// shared, not copied).
fn relay_out(room: &Room, what: Resolved, pkt: &SourcePacket<'_>, out: &mut Outbox, me: usize) {
    let track = room.tracks[what.kind].as_ref();
    let rid = track
        .and_then(|t| t.layers.get(usize::from(what.layer)))
        .and_then(|l| l.rid);
    let simulcast = what.kind == MediaKind::Video && track.is_some_and(|t| t.simulcast);
    // A simulcast layer goes only where it is needed (`RelayBody::Need`).
    let bit = if simulcast {
        1u8.checked_shl(u32::from(what.layer)).unwrap_or(0)
    } else {
        0
    };
    for to in room.relays.iter().filter(|t| bit == 0 || t.need & bit != 0) {
        let to = to.worker;
        out.relays.push_back((
            to,
            RelayMsg {
                from: me,
                to,
                room: room.name.clone(),
                body: RelayBody::Packet(RelayPacket {
                    ssrc: pkt.ssrc,
                    kind: what.kind,
                    layer: what.layer,
                    rid,
                    simulcast,
                    params: what.params,
                    pt: pkt.pt,
                    seq: pkt.seq,
                    ts: pkt.ts,
                    marker: pkt.marker,
                    payload: pkt.payload.clone(),
                    ext: MediaExt::of(pkt.ext),
                }),
            },
        ));
    }
}

/// A VP9 payload rewritten with (picture id, TL0PICIDX), shared by viewers.
type SharedVp9 = Option<((Option<u16>, Option<u8>), Arc<[u8]>)>;

/// Write one packet, described by `f`, to the first `served` viewers of
/// `subscribers` (in join order); the copies of the rest that would have
/// been written are dropped as [`DropReason::Overload`] (the loop is behind:
/// `overload::Catchup`). Returns whether a viewer waits for a keyframe of
/// the packet's layer, and whether a viewer switched layers.
fn fan_out(
    f: &Facts,
    pkt: &SourcePacket<'_>,
    room_name: &RoomName,
    (subscribers, served): (&[SessionId], usize),
    sessions: &mut IdMap<Session>,
    out: &mut Outbox,
    now: Instant,
) -> (bool, bool) {
    let mut want_keyframe = false;
    let mut switched = false;
    // VP9 payloads rewritten for this packet, shared by every viewer that
    // needs the same picture id and TL0PICIDX (str0m patches only VP8
    // descriptors, so a rewrite is a copy; most viewers share one).
    let mut vp9_copies: [SharedVp9; 4] = Default::default();
    for (i, sub_id) in subscribers.iter().enumerate() {
        let Some(sub) = sessions.get_mut(sub_id) else {
            out.stats.fanout_attempts += 1;
            out.stats.drop(DropReason::NoViewerTrack);
            continue;
        };
        // A viewer that takes every layer on its own streams (an edge's
        // upstream; see `Session::relay_layers`).
        let relay = f.video && !sub.relay_layers.is_empty();
        if f.simulcast && !relay {
            // Only the viewer's layer, and its target's keyframes, are
            // considered; the other layers are not this viewer's packets.
            let sel = &sub.sel;
            let relevant = sel.current == Some(f.layer)
                || (sel.target == Some(f.layer) && (f.keyframe || sel.current.is_none()));
            if !relevant {
                continue;
            }
        }
        out.stats.fanout_attempts += 1;
        if !sub.connected {
            // Media written before DTLS is up would be lost, keyframe included;
            // the viewer asks for its keyframe when it connects.
            out.stats.drop(DropReason::ViewerNotConnected);
            continue;
        }
        if sub.shed.paused.is_some() {
            out.stats.drop(DropReason::ViewerPaused);
            continue;
        }
        if i >= served {
            out.stats.drop(DropReason::Overload);
            continue;
        }
        let (stream, rid) = if relay {
            match sub.relay_layers.get_mut(usize::from(f.layer)) {
                Some((rid, o)) => (o, Some(*rid)),
                None => {
                    out.stats.drop(DropReason::NoViewerTrack);
                    continue;
                }
            }
        } else {
            match sub.outs[f.kind].as_mut() {
                Some(o) => (o, None),
                None => {
                    out.stats.drop(DropReason::NoViewerTrack);
                    continue;
                }
            }
        };
        let out_pt = match stream.cached_pt(pkt.pt) {
            Some(x) => x,
            None => {
                let local = sub
                    .rtc
                    .codec_config()
                    .match_params(f.params)
                    .map(|c| c.pt());
                let negotiated = local.filter(|pt| {
                    sub.rtc
                        .media(stream.mid)
                        .is_some_and(|m| m.remote_pts().contains(pt))
                });
                stream.cache_pt(pkt.pt, negotiated);
                if negotiated.is_none() {
                    log::warn!(
                        "room {room_name}: viewer {sub_id:?} did not negotiate {} \
                         {} (publisher PT {}): its packets are dropped",
                        f.codec,
                        f.params.spec().format,
                        pkt.pt
                    );
                }
                negotiated
            }
        };
        let Some(out_pt) = out_pt else {
            out.stats.drop(DropReason::CodecNotNegotiated);
            continue;
        };
        if f.simulcast && !relay && sub.sel.current != Some(f.layer) {
            if !f.keyframe {
                want_keyframe = true;
                out.stats.drop(DropReason::WaitingForKeyframe);
                continue;
            }
            // A frame of the old layer still in progress is left
            // incomplete: the keyframe supersedes it (same capture
            // instant in a real simulcast encoder), the decoder skips it.
            // The target's keyframe: switch here (OutStream rebases on
            // the change of source).
            if sub.sel.current.is_some() {
                sub.sel.switches += 1;
                out.stats.layer_switches += 1;
            }
            sub.sel.current = Some(f.layer);
            switched = true;
        }
        let (seq, ts) = match stream.map(
            f.source,
            pkt.seq,
            pkt.ts,
            f.video,
            f.keyframe,
            f.clock_rate,
            now,
        ) {
            Verdict::Send { seq, ts } => (seq, ts),
            Verdict::WaitForKeyframe => {
                want_keyframe = true;
                out.stats.drop(DropReason::WaitingForKeyframe);
                continue;
            }
        };
        stream.frame_done = pkt.marker;
        let mid = stream.mid;
        let mut payload = pkt.payload.clone();
        if let Some(ids) = f.vp9 {
            if let Some(key @ (pid_out, tl0_out)) = stream.pic_ids.rewrite(&ids, stream.rebased) {
                match vp9_copies.iter().flatten().find(|(k, _)| *k == key) {
                    Some((_, shared)) => payload = shared.clone(),
                    None => {
                        // The shared payload is immutable: a copy with
                        // this viewer's ids, kept for the next viewers.
                        let mut own = Arc::<[u8]>::from(&pkt.payload[..]);
                        if let Some(b) = Arc::get_mut(&mut own) {
                            ids.write(b, pid_out, tl0_out);
                        }
                        out.stats.vp9_payload_copies += 1;
                        if let Some(slot) = vp9_copies.iter_mut().find(|s| s.is_none()) {
                            *slot = Some((key, own.clone()));
                        }
                        payload = own;
                    }
                }
            }
        }
        let mut write = RtpWrite::new(out_pt, SeqNo::from(seq), ts, now, payload)
            .marker(pkt.marker)
            .nackable(f.video);
        if let Some(ext) = &f.ext {
            write = write.ext_vals(ext.clone());
        }
        if let Some(ids) = f.vp8 {
            if let Some((pid_out, tl0_out)) = stream.pic_ids.rewrite(&ids, stream.rebased) {
                if let Some(patch) = ids.vp8_patch(pkt.payload, pid_out, tl0_out) {
                    write = write.vp8_patch(patch);
                }
            }
        }
        let wrote = guarded(&mut sub.rtc, |rtc| {
            match rtc.direct_api().stream_tx_by_mid(mid, rid) {
                Some(tx) => {
                    tx.write_rtp(write);
                    true
                }
                None => false,
            }
        });
        match wrote {
            Ok(true) => out.stats.rtp_forwarded += 1,
            Ok(false) => {
                out.stats.drop(DropReason::NoViewerTrack);
                continue;
            }
            Err(_) => {
                out.stats.drop(DropReason::RtcError);
                out.doom(sub, Why::Panic("write_rtp"));
                continue;
            }
        }
        // Sent by `drain_written` at the next `poll_output`.
        if !std::mem::replace(&mut sub.queued, true) {
            out.written.push(*sub_id);
        }
    }
    (want_keyframe, switched)
}
