//! The recording tap: what the core hands to the recorder. The core only
//! decides which tracks are recorded and copies packets out (sharing the
//! payload `Arc`); reordering, depacketizing and file writing happen on the
//! recorder thread, so recording never delays forwarding.

use std::collections::VecDeque;
use std::sync::Arc;

use str0m::format::{Codec, PayloadParams};
use str0m::media::MediaKind;

use super::id::RoomName;
use super::per_kind::kind_name;
use super::room::Track;
use super::source::SourcePacket;

/// One recorded track of one publisher: one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordingId(pub u64);

/// A recording event, in order per [`RecordingId`]: one `Start`, any number of
/// `Packet`s, one `Stop`. Events can be lost when the recorder's queue is full;
/// the recorder must cope (unknown id: ignore; sequence gap: wait for a keyframe;
/// no `Stop`: close after an idle timeout).
#[derive(Debug, Clone)]
pub enum RecordEvent {
    /// A publisher track starts (its first packet arrived, or its codec changed).
    Start {
        /// The file this track goes to.
        id: RecordingId,
        /// The room (validated: safe as a path component).
        room: RoomName,
        /// `"audio"` or `"video"`.
        kind: &'static str,
        /// The codec of the packets that follow.
        codec: Codec,
        /// RTP clock rate of the codec.
        clock_rate: u32,
        /// Channel count (audio), from the negotiated codec.
        channels: u8,
    },
    /// One RTP packet as received from the publisher (after SRTP and RTX repair).
    Packet {
        /// The file this packet goes to.
        id: RecordingId,
        /// Extended sequence number (no wrap).
        seq: u64,
        /// RTP timestamp.
        ts: u32,
        /// RTP marker bit (end of a video frame).
        marker: bool,
        /// The payload, shared with the forwarding path.
        payload: Arc<[u8]>,
    },
    /// The track ended (publisher left or the room closed): finalise the file.
    Stop {
        /// The file to finalise.
        id: RecordingId,
    },
}

/// Copy one source packet of `track` out to the recorder (the payload
/// `Arc` is shared, nothing is copied). A `Start` goes first when the track
/// has no recording yet, or after a `Stop` when its codec changed.
/// `next_recording` numbers the recordings.
pub(super) fn tap(
    track: &mut Track,
    room: &RoomName,
    kind: MediaKind,
    params: &PayloadParams,
    pkt: &SourcePacket<'_>,
    records: &mut VecDeque<RecordEvent>,
    next_recording: &mut u64,
) {
    let codec = params.spec().codec;
    let id = match track.recording {
        Some((id, c)) if c == codec => id,
        prev => {
            if let Some((old, _)) = prev {
                records.push_back(RecordEvent::Stop { id: old });
            }
            *next_recording += 1;
            let id = RecordingId(*next_recording);
            track.recording = Some((id, codec));
            records.push_back(RecordEvent::Start {
                id,
                room: room.clone(),
                kind: kind_name(kind),
                codec,
                clock_rate: params.spec().clock_rate.get(),
                channels: params.spec().channels.unwrap_or(1),
            });
            id
        }
    };
    records.push_back(RecordEvent::Packet {
        id,
        seq: pkt.seq,
        ts: pkt.ts,
        marker: pkt.marker,
        payload: pkt.payload.clone(),
    });
}
