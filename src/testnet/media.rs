//! What test publishers send and how viewers read it back: a plain stream
//! (one VP8-, VP9-, H.264- or AV1-shaped frame of 3 packets and one Opus
//! packet every 33 ms) and simulcast layers with real payload descriptors.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};

use super::{Client, Got, JoinOpts, TestNet};

/// One simulcast layer a test publisher sends, 30 frames a second, `packets`
/// packets of `size` bytes per frame, in the codec the answer kept (see
/// [`SimPacket`] for the layouts): VP8 with a full payload descriptor (15-bit
/// picture id, TL0PICIDX); VP9 non-flexible with picture id, layer indices,
/// TL0PICIDX and a scalability structure on keyframes; H.264 as browsers
/// packetise it (a keyframe is a STAP-A with SPS and PPS, then the IDR in
/// FU-A, or one STAP-A with all three for a 1-packet layer); AV1 with the N
/// bit, a sequence header and the frame OBU on a keyframe's first packet.
#[derive(Debug, Clone)]
pub struct SimLayer {
    pub rid: &'static str,
    pub packets: usize,
    pub size: usize,
    /// VP9: send 7-bit picture ids (M clear) instead of 15-bit ones.
    pub short_picture_id: bool,
    /// Stop sending this layer (as a browser does when it pauses an encoding).
    pub paused: bool,
    pub want_keyframe: bool,
    pub keyframe_requests: usize,
    pub seq: u64,
    pub picture_id: u16,
    pub tl0: u8,
    pub ts_offset: u32,
    pub frames_sent: u64,
}

/// Layout of the simulcast test payload after the 6-byte VP8 descriptor:
/// byte 6 VP8 header (bit 0 clear on a keyframe), byte 7 layer index,
/// bytes 8..16 frame number, 16..24 the client's packet counter.
pub const SIM_DESC_LEN: usize = 6;

/// Bytes at the end of every VP9, H.264 and AV1 simulcast test packet: layer
/// index, frame number (8 bytes), the client's packet counter (8 bytes).
pub const SIM_TRAILER_LEN: usize = 17;

/// One video packet of a simulcast publisher, as a viewer decodes it.
///
/// `start`: the first packet of a frame (an access unit); `keyframe`: a
/// decoder can start here (VP8 key frame start; VP9 B set, P clear, key frame
/// header; H.264 the packet with the SPS; AV1 the N bit). `picture_id` and
/// `tl0` are 0 where the codec has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimPacket {
    pub seq: u64,
    pub ts: u32,
    pub start: bool,
    pub keyframe: bool,
    pub picture_id: u16,
    /// The picture id is 7-bit (VP9 with M clear).
    pub short_picture_id: bool,
    pub tl0: u8,
    pub layer: u8,
    pub frame: u64,
}

impl SimPacket {
    /// A packet of `codec` ([`SimPacket::parse`] for VP8).
    pub fn parse_codec(g: &Got, codec: Codec) -> Option<SimPacket> {
        let p = &g.payload;
        if codec == Codec::Vp8 {
            return Self::parse(g);
        }
        let n = p.len().checked_sub(SIM_TRAILER_LEN)?;
        let t = &p[n..];
        let mut s = SimPacket {
            seq: g.seq,
            ts: g.ts,
            start: false,
            keyframe: false,
            picture_id: 0,
            short_picture_id: false,
            tl0: 0,
            layer: t[0],
            frame: u64::from_be_bytes(t[1..9].try_into().unwrap()),
        };
        match codec {
            Codec::Vp9 => {
                // I|P|L|F|B|E|V|Z, picture id, layer indices, TL0PICIDX, [SS].
                let b0 = p[0];
                s.start = b0 & 0x08 != 0;
                let mut at = 1;
                if p[1] & 0x80 != 0 {
                    s.picture_id = (u16::from(p[1] & 0x7f) << 8) | u16::from(p[2]);
                    at += 2;
                } else {
                    s.picture_id = u16::from(p[1]);
                    s.short_picture_id = true;
                    at += 1;
                }
                s.tl0 = p[at + 1];
                at += 2;
                if b0 & 0x02 != 0 {
                    at += VP9_SS.len();
                }
                // The frame header: frame_type (bit 2) 0 is a key frame.
                s.keyframe = s.start && b0 & 0x40 == 0 && p[at] & 0xc4 == 0x80;
            }
            Codec::H264 => {
                let nal = p[0] & 0x1f;
                s.keyframe = nal == 7 || (nal == 24 && p[3] & 0x1f == 7);
                s.start = nal != 28 || (p[1] & 0x80 != 0 && p[1] & 0x1f != 5);
            }
            Codec::Av1 => {
                s.start = p[0] & 0x80 == 0;
                s.keyframe = p[0] & 0x08 != 0;
            }
            _ => return None,
        }
        Some(s)
    }

    /// A VP8 packet (the layout after [`SIM_DESC_LEN`]).
    pub fn parse(g: &Got) -> Option<SimPacket> {
        let p = &g.payload;
        if p.len() < 24 || p[0] & 0x80 == 0 || p[1] != 0xE0 || p[2] & 0x80 == 0 {
            return None;
        }
        let start = p[0] & 0x10 != 0;
        Some(SimPacket {
            seq: g.seq,
            ts: g.ts,
            start,
            keyframe: start && p[6] & 0x01 == 0,
            picture_id: (u16::from(p[2] & 0x7f) << 8) | u16::from(p[3]),
            short_picture_id: false,
            tl0: p[4],
            layer: p[7],
            frame: u64::from_be_bytes(p[8..16].try_into().unwrap()),
        })
    }
}

impl Got {
    /// The first packet of a keyframe in the plain stream's VP8 layout: the
    /// one-byte descriptor with S set, then the payload header with P (an
    /// inter frame) clear.
    pub fn starts_vp8_keyframe(&self) -> bool {
        self.payload[0] & 0x10 == 0x10 && self.payload[1] & 0x01 == 0
    }
}

impl TestNet {
    /// Run for `d`: how many video packets client `i` got in that time.
    pub fn video_during(&mut self, i: usize, d: Duration) -> usize {
        let video = |n: &TestNet| {
            n.clients[i]
                .got
                .iter()
                .filter(|g| g.kind == MediaKind::Video)
                .count()
        };
        let before = video(self);
        self.run_for(d);
        video(self) - before
    }

    /// Run until client `i` has got a video packet, for at most `within`;
    /// the first video packet it got, or `None`.
    pub fn first_video(&mut self, i: usize, within: Duration) -> Option<Got> {
        self.first_video_from(i, 0, within)
    }

    /// Run until client `i` is connected (at most 5 s), then
    /// [`TestNet::first_video`]: that packet, and how long after
    /// connecting it came (a late viewer's wait for its keyframe).
    pub fn first_video_after_connecting(&mut self, i: usize, within: Duration) -> (Got, Duration) {
        assert!(
            self.run_until(Duration::from_secs(5), |n| n.connected(i)),
            "client {i} not connected within 5 s"
        );
        let connected = self.clients[i].connected_at.unwrap();
        let first = self
            .first_video(i, within)
            .unwrap_or_else(|| panic!("client {i}: no video within {within:?}"));
        let wait = first.at - connected;
        (first, wait)
    }

    /// [`TestNet::first_video`] among the packets client `i` got from its
    /// `from`th on (those that came after some point of the test).
    pub fn first_video_from(&mut self, i: usize, from: usize, within: Duration) -> Option<Got> {
        let video = |n: &TestNet| {
            n.clients[i].got[from..]
                .iter()
                .position(|g| g.kind == MediaKind::Video)
        };
        self.run_until(within, |n| video(n).is_some());
        video(self).map(|k| self.clients[i].got[from + k].clone())
    }

    /// Publish audio + simulcast video with `layers` (rid, packets per frame, packet size).
    pub fn publish_simulcast(
        &mut self,
        room: &str,
        layers: &'static [(&'static str, usize, usize)],
    ) -> usize {
        let opts = JoinOpts {
            simulcast: Some(layers),
            ..JoinOpts::default()
        };
        self.publish_with(room, &opts)
    }

    /// The simulcast video packets viewer `i` got, in arrival order (each
    /// parsed as the codec of its payload type).
    pub fn sim_packets(&self, i: usize) -> Vec<SimPacket> {
        let c = &self.clients[i];
        c.got
            .iter()
            .filter(|g| g.kind == MediaKind::Video)
            .filter_map(|g| {
                let codec = c
                    .rtc
                    .codec_config()
                    .find(|p| p.pt() == g.pt)
                    .map_or(Codec::Vp8, |p| p.spec().codec);
                SimPacket::parse_codec(g, codec)
            })
            .collect()
    }

    /// Viewer `i`'s simulcast video packets with their arrival time since the
    /// start (every video packet must parse).
    pub fn sim_arrivals(&self, i: usize) -> Vec<(Duration, SimPacket)> {
        let parsed = self.sim_packets(i);
        let video: Vec<_> = self.clients[i]
            .got
            .iter()
            .filter(|g| g.kind == MediaKind::Video)
            .collect();
        assert_eq!(video.len(), parsed.len(), "every video packet parses");
        video
            .iter()
            .map(|g| g.at - self.start)
            .zip(parsed)
            .collect()
    }

    /// The simulcast layer (rid) the core forwards to viewer `i`.
    pub fn current_layer(&self, i: usize) -> Option<String> {
        self.current_layer_on(self.clients[i].core, i)
    }

    /// The simulcast layer (rid) core `core` forwards to viewer `i`.
    pub fn current_layer_on(&self, core: usize, i: usize) -> Option<String> {
        self.core_ref(core)
            .viewer_layers(self.clients[i].token.unwrap())
            .and_then(|v| v.current.map(|r| r.to_string()))
    }

    /// Run until viewer `i` is forwarded `rid` and stays on it for 3 s;
    /// returns when it got there (from the call), or `None` after `limit`.
    pub fn settle_on_layer(&mut self, i: usize, rid: &str, limit: Duration) -> Option<Duration> {
        let start = self.elapsed();
        let mut since: Option<Duration> = None;
        while self.elapsed() - start < limit {
            self.run_for(Duration::from_millis(50));
            if self.current_layer(i).as_deref() == Some(rid) {
                since.get_or_insert(self.elapsed());
            } else {
                since = None;
            }
            if since.is_some_and(|s| self.elapsed() - s >= Duration::from_secs(3)) {
                return since.map(|s| s - start);
            }
        }
        None
    }

    /// [`TestNet::publish_simulcast`] offering only `codec` for video (Opus
    /// for audio): VP8, VP9 (profile 0), H.264 or AV1.
    pub fn publish_simulcast_codec(
        &mut self,
        room: &str,
        layers: &'static [(&'static str, usize, usize)],
        codec: Codec,
    ) -> usize {
        let opts = JoinOpts {
            simulcast: Some(layers),
            config: Some(only_codec(codec)),
            ..JoinOpts::default()
        };
        self.publish_with(room, &opts)
    }

    /// Publisher clients write one step of synthetic media: a VP8-shaped video
    /// frame of 3 packets every 33 ms (keyframe when asked or every 3 s) and an
    /// Opus-shaped audio packet every 20 ms (approximated at the video tick).
    pub(super) fn send_media(&mut self) {
        let now = self.now;
        for c in self
            .clients
            .iter_mut()
            .filter(|c| c.publisher && c.alive && c.connected_at.is_some())
        {
            let key = c.want_keyframe || c.frame.is_multiple_of(90);
            c.want_keyframe = false;
            c.frame += 1;
            for (mid, kind) in c.mids.clone() {
                // The first codec the answer kept for this m-line.
                let Some(pt) = c
                    .rtc
                    .media(mid)
                    .and_then(|m| m.remote_pts().first().copied())
                else {
                    continue;
                };
                let codec = c
                    .rtc
                    .codec_config()
                    .find(|p| p.pt() == pt)
                    .map(|p| p.spec().codec)
                    .unwrap_or(Codec::Vp8);
                if kind == MediaKind::Video && !c.sim.is_empty() {
                    let profile_2 = c
                        .rtc
                        .codec_config()
                        .find(|p| p.pt() == pt)
                        .is_some_and(|p| p.spec().format.profile_id == Some(2));
                    send_sim_frame(c, mid, pt, codec, profile_2, now);
                    continue;
                }
                let npk = if kind == MediaKind::Video { 3 } else { 1 };
                let ts = (c.frame as u32).wrapping_mul(if kind == MediaKind::Video {
                    3000
                } else {
                    960
                });
                for j in 0..npk {
                    c.counter += 1;
                    let mut payload = Vec::with_capacity(200);
                    if codec == Codec::H264 {
                        // Single NAL units: IDR (5) for keyframes, else non-IDR slice (1).
                        payload.push(if key && j == 0 { 0x65 } else { 0x41 });
                        payload.push(0x88);
                    } else if codec == Codec::Vp9 {
                        // RFC 9628 descriptor I|P|L|F|B|E|V|Z: B on a frame's first
                        // packet, P on inter frames.
                        let b = if j == 0 { 0x08 } else { 0x00 };
                        payload.push(if key { b } else { 0x40 | b });
                        payload.push(0x00);
                    } else if codec == Codec::Av1 {
                        // Aggregation header Z|Y|W W|N: N on a keyframe's first packet.
                        payload.push(if key && j == 0 { 0x08 } else { 0x00 });
                        payload.push(0x00);
                    } else if kind == MediaKind::Video {
                        payload.push(if j == 0 { 0x10 } else { 0x00 });
                        payload.push(if key && j == 0 { 0x00 } else { 0x01 });
                    } else {
                        payload.push(0xfc);
                        payload.push(0xff);
                    }
                    payload.extend_from_slice(&c.counter.to_be_bytes());
                    payload.resize(200, 0xab);
                    let seq = if kind == MediaKind::Video {
                        &mut c.video_seq
                    } else {
                        &mut c.audio_seq
                    };
                    let s = *seq;
                    *seq += 1;
                    let mut api = c.rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                        continue;
                    };
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(s), ts, now, payload)
                            .marker(j == npk - 1)
                            .nackable(kind == MediaKind::Video),
                    );
                }
            }
        }
        let n = self.clients.len();
        for i in 0..n {
            if self.clients[i].publisher {
                self.drain_client(i);
            }
        }
    }
}

/// One frame on every unpaused simulcast layer of publisher `c`, in `codec`
/// (VP9: profile 2 frame headers if `profile_2`).
fn send_sim_frame(c: &mut Client, mid: Mid, pt: Pt, codec: Codec, profile_2: bool, now: Instant) {
    let frame = c.frame;
    for (n, l) in c.sim.iter_mut().enumerate() {
        if l.paused {
            continue;
        }
        let key = l.want_keyframe || l.frames_sent.is_multiple_of(90);
        l.want_keyframe = false;
        l.frames_sent += 1;
        l.picture_id = (l.picture_id + 1) & 0x7fff;
        l.tl0 = l.tl0.wrapping_add(1);
        let ts = (frame as u32).wrapping_mul(3000).wrapping_add(l.ts_offset);
        let payloads: Vec<Vec<u8>> = match codec {
            Codec::Vp9 | Codec::H264 | Codec::Av1 => {
                let heads = sim_heads(codec, l, key, profile_2);
                heads
                    .into_iter()
                    .map(|(mut payload, stap_last)| {
                        c.counter += 1;
                        let len = l.size.max(payload.len() + SIM_TRAILER_LEN);
                        payload.resize(len - SIM_TRAILER_LEN, 0xab);
                        payload.push(n as u8);
                        payload.extend_from_slice(&frame.to_be_bytes());
                        payload.extend_from_slice(&c.counter.to_be_bytes());
                        if let Some(last) = stap_last {
                            // The last NAL unit of the STAP-A runs to the end.
                            let nal_len = (payload.len() - last - 2) as u16;
                            payload[last..last + 2].copy_from_slice(&nal_len.to_be_bytes());
                        }
                        payload
                    })
                    .collect()
            }
            _ => (0..l.packets)
                .map(|j| {
                    c.counter += 1;
                    let mut payload = Vec::with_capacity(l.size);
                    payload.push(if j == 0 { 0x90 } else { 0x80 });
                    payload.push(0xE0);
                    payload.push(0x80 | (l.picture_id >> 8) as u8);
                    payload.push(l.picture_id as u8);
                    payload.push(l.tl0);
                    payload.push(0x00);
                    payload.push(if key && j == 0 { 0x00 } else { 0x01 });
                    payload.push(n as u8);
                    payload.extend_from_slice(&frame.to_be_bytes());
                    payload.extend_from_slice(&c.counter.to_be_bytes());
                    payload.resize(l.size.max(24), 0xab);
                    payload
                })
                .collect(),
        };
        let count = payloads.len();
        for (j, payload) in payloads.into_iter().enumerate() {
            let s = l.seq;
            l.seq += 1;
            let mut api = c.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, Some(l.rid.into())) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(pt, SeqNo::from(s), ts, now, payload)
                    .marker(j == count - 1)
                    .nackable(true),
            );
        }
    }
}

/// VP9 scalability structure of the test publisher: one spatial layer
/// (Y: 640x360), a GOF of one picture referencing the previous one (G).
pub const VP9_SS: [u8; 8] = [0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x04, 0x01];

/// The codec headers of one frame of layer `l` (VP9, H.264 or AV1), one per
/// packet; media bytes and the trailer follow each. With each, for a STAP-A,
/// the offset of its last NAL unit's length (set once the packet is complete).
fn sim_heads(
    codec: Codec,
    l: &SimLayer,
    key: bool,
    profile_2: bool,
) -> Vec<(Vec<u8>, Option<usize>)> {
    let np = l.packets;
    let mut out = vec![];
    match codec {
        Codec::Vp9 => {
            for j in 0..np {
                // I|P|L|F|B|E|V|Z: non-flexible, layer indices, SS on a keyframe.
                let mut b0 = 0x80 | 0x20;
                if !key {
                    b0 |= 0x40;
                }
                if j == 0 {
                    b0 |= 0x08;
                }
                if j == np - 1 {
                    b0 |= 0x04;
                }
                if key && j == 0 {
                    b0 |= 0x02;
                }
                let mut h = vec![b0];
                if l.short_picture_id {
                    h.push(l.picture_id as u8 & 0x7f);
                } else {
                    h.push(0x80 | (l.picture_id >> 8) as u8);
                    h.push(l.picture_id as u8);
                }
                h.push(0x00); // TID 0, SID 0
                h.push(l.tl0);
                if key && j == 0 {
                    h.extend_from_slice(&VP9_SS);
                }
                if j == 0 {
                    // Uncompressed header: frame marker, profile, frame_type.
                    let profile = if profile_2 { 0x10 } else { 0x00 };
                    h.push(0x80 | profile | if key { 0x00 } else { 0x04 });
                }
                out.push((h, None));
            }
        }
        Codec::H264 => {
            const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
            let sps = sim_size(l.rid).1;
            let stap = |with_idr: bool| {
                let mut h = vec![0x78];
                h.extend_from_slice(&(sps.len() as u16).to_be_bytes());
                h.extend_from_slice(sps);
                let mut last = h.len();
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&PPS);
                if with_idr {
                    h[last..last + 2].copy_from_slice(&(PPS.len() as u16).to_be_bytes());
                    last = h.len();
                    h.extend_from_slice(&[0, 0, 0x65, 0x88]);
                }
                (h, Some(last))
            };
            if key && np == 1 {
                out.push(stap(true));
            } else {
                if key {
                    out.push(stap(false));
                }
                let (nri, ty) = if key { (0x60, 5) } else { (0x40, 1) };
                for j in 0..np {
                    if np == 1 {
                        out.push((vec![nri | ty, 0x9a], None));
                        continue;
                    }
                    let mut fu = ty;
                    if j == 0 {
                        fu |= 0x80;
                    }
                    if j == np - 1 {
                        fu |= 0x40;
                    }
                    out.push((vec![nri | 28, fu], None));
                }
            }
        }
        _ => {
            // AV1 aggregation header Z|Y|W(2)|N: the frame OBU spans the packets.
            for j in 0..np {
                let y = if j < np - 1 { 0x40 } else { 0x00 };
                let h = if j > 0 {
                    vec![0x80 | y | 0x10]
                } else if key {
                    // N, two elements: a sequence header (length-prefixed, no
                    // size field), then the frame (shown key frame).
                    let seq = sim_size(l.rid).2;
                    let mut h = vec![y | 0x20 | 0x08, 1 + seq.len() as u8, 0x08];
                    h.extend_from_slice(seq);
                    h.extend_from_slice(&[0x30, 0x10]);
                    h
                } else {
                    // One element: the frame (inter, shown).
                    vec![y | 0x10, 0x30, 0x30]
                };
                out.push((h, None));
            }
        }
    }
    out
}

/// The picture size of a test layer by its rid (`h`/`0` 1280x720, `m`/`1`
/// 640x360, others 320x180), with the H.264 SPS and the AV1 sequence header
/// payload its keyframes carry (both from libx264 / libaom at that size).
pub fn sim_size(rid: &str) -> ((u16, u16), &'static [u8], &'static [u8]) {
    match rid {
        "h" | "0" => (
            (1280, 720),
            &[
                0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
                0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
            ],
            &[
                0x00, 0x00, 0x00, 0x2d, 0x4c, 0xff, 0xb3, 0xcc, 0xaf, 0x90, 0x04,
            ],
        ),
        "m" | "1" => (
            (640, 360),
            &[
                0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
                0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
            ],
            &[
                0x00, 0x00, 0x00, 0x0c, 0xc4, 0xff, 0x67, 0x36, 0xbe, 0x40, 0x10,
            ],
        ),
        _ => (
            (320, 180),
            &[
                0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03,
                0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
            ],
            &[
                0x00, 0x00, 0x00, 0x04, 0x3c, 0xfe, 0xcc, 0xda, 0xf9, 0x00, 0x40,
            ],
        ),
    }
}

/// An Rtc config offering only `codec` for video (VP9: profile 0), and Opus.
pub fn only_codec(codec: Codec) -> fn(str0m::RtcConfig) -> str0m::RtcConfig {
    match codec {
        Codec::Vp9 => |b| vp9_profile(b, 0),
        Codec::H264 => |b| b.clear_codecs().enable_h264(true).enable_opus(true, false),
        Codec::Av1 => |b| b.clear_codecs().enable_av1(true).enable_opus(true, false),
        _ => |b| b.clear_codecs().enable_vp8(true).enable_opus(true, false),
    }
}

/// `config` offering only VP9 with `profile-id` `profile_id` for video (RFC
/// 9628 §6; payload type 98, RTX 99), and Opus.
pub fn vp9_profile(config: str0m::RtcConfig, profile_id: u32) -> str0m::RtcConfig {
    let mut b = config.clear_codecs().enable_opus(true, false);
    b.codec_config().add_config(
        98.into(),
        Some(99.into()),
        Codec::Vp9,
        str0m::media::Frequency::NINETY_KHZ,
        None,
        str0m::format::FormatParams {
            profile_id: Some(profile_id),
            ..Default::default()
        },
    );
    b
}
