//! The synthetic media: the payload tag every packet carries (magic, counter,
//! send time) and the publisher that writes VP8-like video frames and
//! Opus-like audio at the configured rates.

use std::time::{Duration, Instant};

use str0m::media::Mid;
use str0m::rtp::{RtpWrite, SeqNo};

use crate::peer::Peer;

/// Marks the tool's payloads: b"WL", kind, version.
pub const MAGIC_VIDEO: [u8; 4] = *b"WLv1";
pub const MAGIC_AUDIO: [u8; 4] = *b"WLa1";
/// Offset of the magic in the payload (after the VP8 descriptor and header byte).
pub const TAG_AT: usize = 2;
/// Bytes of the tag: magic, packet counter, send time.
const TAG_LEN: usize = 20;
const AUDIO_SIZE: usize = 160;

/// Wall clock in µs since the Unix epoch: the send timestamps in the payloads
/// and the kernel's receive timestamps (SO_TIMESTAMPNS) use this clock.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes the tag at [`TAG_AT`]: `magic`, the packet counter `i` and the send
/// time (now, [`now_us`]).
fn stamp(payload: &mut [u8], magic: [u8; 4], i: u64) {
    payload[TAG_AT..TAG_AT + 4].copy_from_slice(&magic);
    payload[TAG_AT + 4..TAG_AT + 12].copy_from_slice(&i.to_be_bytes());
    payload[TAG_AT + 12..TAG_AT + TAG_LEN].copy_from_slice(&now_us().to_be_bytes());
}

/// The send time of a payload that carries the tag `magic`; `None` if it does not.
pub fn sent_us(payload: &[u8], magic: [u8; 4]) -> Option<u64> {
    if payload.len() < TAG_AT + TAG_LEN || payload[TAG_AT..TAG_AT + 4] != magic {
        return None;
    }
    Some(u64::from_be_bytes(
        payload[TAG_AT + 12..TAG_AT + TAG_LEN].try_into().unwrap(),
    ))
}

/// The publisher's sending state; its [`Peer`] lives in the driver.
pub struct Publisher {
    pub video_pt: u8,
    pub audio_pt: u8,
    pub video_mid: Mid,
    pub audio_mid: Mid,
    pub video_sent: u64,
    pub audio_sent: u64,
    /// Video packets per frame.
    pub ppf: u64,
    /// When the next periodic keyframe is due (one a second, or on request).
    pub next_key: Instant,
    pub keyframes: u64,
}

impl Publisher {
    /// The next video packet: `size` payload bytes, a keyframe at a frame's
    /// start when one is requested or due.
    pub fn send_video(&mut self, p: &mut Peer, fps: u64, size: usize, lat: &mut Vec<u32>) {
        let i = self.video_sent;
        let frame = i / self.ppf;
        let first = i.is_multiple_of(self.ppf);
        let last = i % self.ppf == self.ppf - 1;
        let now = Instant::now();
        let mut payload = vec![0u8; size];
        if first {
            let key = p.want_keyframe || now >= self.next_key;
            if key {
                p.want_keyframe = false;
                self.next_key = now + Duration::from_secs(1);
                self.keyframes += 1;
            }
            // VP8 descriptor S=1, PID=0; payload header P bit (0 = keyframe).
            payload[0] = 0x10;
            payload[1] = if key { 0x00 } else { 0x01 };
        }
        stamp(&mut payload, MAGIC_VIDEO, i);
        let ts = (frame * 90_000 / fps) as u32;
        let w = RtpWrite::new(self.video_pt.into(), SeqNo::from(i + 1), ts, now, payload)
            .marker(last)
            .nackable(true);
        write(p, self.video_mid, w, lat);
        self.video_sent += 1;
    }

    /// The next audio packet (one 20 ms Opus-like frame).
    pub fn send_audio(&mut self, p: &mut Peer, lat: &mut Vec<u32>) {
        let i = self.audio_sent;
        let now = Instant::now();
        let mut payload = vec![0u8; AUDIO_SIZE];
        payload[0] = 0xfc;
        payload[1] = 0xff;
        stamp(&mut payload, MAGIC_AUDIO, i);
        let w = RtpWrite::new(
            self.audio_pt.into(),
            SeqNo::from(i + 1),
            (i * 960) as u32,
            now,
            payload,
        )
        .marker(true)
        .nackable(false);
        write(p, self.audio_mid, w, lat);
        self.audio_sent += 1;
    }
}

/// Hands one packet to the publisher's `Rtc` on `mid` and sends what it makes.
fn write(p: &mut Peer, mid: Mid, w: RtpWrite, lat: &mut Vec<u32>) {
    let mut api = p.rtc.direct_api();
    if let Some(tx) = api.stream_tx_by_mid(mid, None) {
        tx.write_rtp(w);
    }
    p.drain(lat);
}
