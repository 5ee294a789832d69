//! TestNet: the wisp core and real str0m client peers on an in-memory network
//! with a fake clock. No sockets, no sleeps; every loop is bounded; loss is
//! drawn from a seeded generator.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use wisp::sfu::{Command, Reply, RoomName, SessionToken, Sfu, SfuConfig};

/// The server's address (RFC 5737 documentation range, never bound).
pub const SERVER: ([u8; 4], u16) = ([198, 51, 100, 1], 8189);

pub fn server_addr() -> SocketAddr {
    SocketAddr::from(SERVER)
}

/// A packet a viewer received.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub kind: MediaKind,
    pub seq: u64,
    pub ts: u32,
    pub pt: Pt,
    pub payload: Vec<u8>,
}

/// A str0m client peer (publisher or viewer).
pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub token: Option<SessionToken>,
    pub room: String,
    pub publisher: bool,
    pub mids: Vec<(Mid, MediaKind)>,
    pub got: Vec<Got>,
    pub keyframe_requests: usize,
    pub connected_at: Option<Instant>,
    pub alive: bool,
    /// Probability (0..1) that a datagram *to* this client is lost.
    pub inbound_loss: f64,
    /// Drop everything to and from this client (it vanished).
    pub blackholed: bool,
    next: Instant,
    // Publisher media state.
    video_seq: u64,
    audio_seq: u64,
    frame: u64,
    pub counter: u64,
    pub want_keyframe: bool,
    /// Publisher: simulcast layers sent on the video m-line (empty: plain video).
    pub sim: Vec<SimLayer>,
    /// Capped downlink toward this client (server → client), if any.
    pub downlink: Option<Link>,
    /// The address the server sees for this client (NAT rebinding; see
    /// [`TestNet::rebind`]); `None`: its own address.
    pub nat: Option<SocketAddr>,
    /// Probability (0..1) that a datagram *from* this client is lost.
    pub uplink_loss: f64,
    /// Extra random delay (0..this) per datagram from this client: reorders.
    pub uplink_jitter: Duration,
    /// Publisher: count keyframe requests but send keyframes only on its
    /// own schedule (OBS's WHIP output has no PLI handling).
    pub ignore_keyframe_requests: bool,
}

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

/// A FIFO bottleneck: `rate_bps` serialisation, tail drop once more than
/// `max_queue` of data waits. Deterministic.
#[derive(Debug, Clone)]
pub struct Link {
    pub rate_bps: u64,
    pub max_queue: Duration,
    pub busy_until: Instant,
    pub dropped: u64,
    pub delivered_bytes: u64,
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

struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// How a client shapes its offer.
pub struct JoinOpts {
    /// Put the host candidate in the offer (false: OBS, FFmpeg).
    pub candidate_in_offer: bool,
    /// Rewrite the offer text before it is sent.
    pub mangle: Option<fn(String) -> String>,
    /// Adjust the client's Rtc config (codecs).
    pub config: Option<fn(str0m::RtcConfig) -> str0m::RtcConfig>,
    /// Per-publish recording override.
    pub record: Option<bool>,
    /// Publisher: offer simulcast on the video m-line with these layers
    /// (rid, packets per frame, packet size), highest first like browsers.
    pub simulcast: Option<&'static [(&'static str, usize, usize)]>,
}

impl Default for JoinOpts {
    fn default() -> Self {
        JoinOpts {
            candidate_in_offer: true,
            mangle: None,
            config: None,
            record: None,
            simulcast: None,
        }
    }
}

pub struct TestNet {
    /// Everything the core handed to the recorder, in order.
    pub recorded: Vec<wisp::sfu::recorder_tap::RecordEvent>,
    pub last_offer: String,
    pub last_answer: String,
    pub last_etag: String,
    pub now: Instant,
    pub start: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    queue: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    rng: u64,
    pub latency: Duration,
    pub next_media: Instant,
    pub media_on: bool,
    /// When `Some`, every datagram delivered to the server is appended: (from, bytes).
    pub tap: Option<Vec<(SocketAddr, Vec<u8>)>>,
    /// Destinations of datagrams the server sent to an address that is no client.
    pub stray: Vec<SocketAddr>,
}

impl TestNet {
    pub fn new(seed: u64) -> TestNet {
        Self::with_config(seed, SfuConfig::default())
    }

    /// A net whose core has `config` (candidates and seed are set here).
    pub fn with_config(seed: u64, config: SfuConfig) -> TestNet {
        let now = Instant::now();
        let config = SfuConfig {
            candidates: vec![server_addr()],
            seed: [seed as u8; 32],
            ..config
        };
        TestNet {
            recorded: Vec::new(),
            last_offer: String::new(),
            last_answer: String::new(),
            last_etag: String::new(),
            now,
            start: now,
            sfu: Sfu::new(config, now),
            clients: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            latency: Duration::from_millis(5),
            next_media: now,
            media_on: true,
            tap: None,
            stray: Vec::new(),
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Create a client Rtc and an offer with the given media.
    fn offer(
        &mut self,
        kinds: &[(MediaKind, Direction)],
        opts: &JoinOpts,
    ) -> (
        Rtc,
        SocketAddr,
        String,
        SdpPendingOffer,
        Vec<(Mid, MediaKind)>,
    ) {
        // Unique for any number of clients: the port carries the index.
        let n = self.clients.len() + 1;
        let addr = SocketAddr::from(([192, 0, 2, (n % 250) as u8 + 1], 5000 + n as u16));
        let mut b = Rtc::builder().set_rtp_mode(true);
        if let Some(f) = opts.config {
            b = f(b);
        }
        let mut rtc = b.build(self.now);
        if opts.candidate_in_offer {
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        let mut api = rtc.sdp_api();
        let mut mids = vec![];
        for (k, d) in kinds {
            let sim = match (opts.simulcast, *k) {
                (Some(layers), MediaKind::Video) => {
                    let mut s = str0m::media::Simulcast::new();
                    for (rid, _, _) in layers {
                        s.add_send_layer(str0m::media::SimulcastLayer::new(rid));
                    }
                    Some(s)
                }
                _ => None,
            };
            mids.push((
                api.add_media(*k, *d, Some("wisp-test".into()), None, sim),
                *k,
            ));
        }
        let (offer, pending) = api.apply().expect("offer");
        (rtc, addr, offer.to_sdp_string(), pending, mids)
    }

    /// POST an offer through the core; returns the client's index or the error.
    pub fn join(
        &mut self,
        room: &str,
        publisher: bool,
        kinds: &[(MediaKind, Direction)],
    ) -> Result<usize, wisp::sfu::ApiError> {
        self.join_opts(room, publisher, kinds, &JoinOpts::default())
    }

    /// [`TestNet::join`] with the offer shaped like a particular client.
    pub fn join_opts(
        &mut self,
        room: &str,
        publisher: bool,
        kinds: &[(MediaKind, Direction)],
        opts: &JoinOpts,
    ) -> Result<usize, wisp::sfu::ApiError> {
        let (mut rtc, addr, offer, pending, mids) = self.offer(kinds, opts);
        let offer = match opts.mangle {
            Some(f) => f(offer),
            None => offer,
        };
        self.last_offer = offer.clone();
        let room_name = RoomName::new(room).unwrap();
        let cmd = if publisher {
            Command::Publish {
                room: room_name,
                offer,
                record: opts.record,
            }
        } else {
            Command::Subscribe {
                room: room_name,
                offer,
            }
        };
        let (token, answer, etag) = match self.sfu.handle_command(self.now, cmd)? {
            Reply::Created {
                token,
                answer,
                etag,
            } => (token, answer, etag),
            other => panic!("unexpected reply {other:?}"),
        };
        self.last_answer = answer.clone();
        self.last_etag = etag;
        let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        if !opts.candidate_in_offer {
            // The client still has an address; it just did not announce it (OBS).
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        self.clients.push(Client {
            rtc,
            addr,
            token: Some(token),
            room: room.into(),
            publisher,
            mids,
            got: vec![],
            keyframe_requests: 0,
            connected_at: None,
            alive: true,
            inbound_loss: 0.0,
            blackholed: false,
            next: self.now,
            video_seq: 1,
            audio_seq: 1,
            frame: 0,
            counter: 0,
            want_keyframe: true,
            sim: opts
                .simulcast
                .unwrap_or(&[])
                .iter()
                .enumerate()
                .map(|(n, (rid, packets, size))| SimLayer {
                    rid,
                    packets: *packets,
                    size: *size,
                    short_picture_id: false,
                    paused: false,
                    want_keyframe: true,
                    keyframe_requests: 0,
                    seq: 1 + 10_000 * n as u64,
                    picture_id: 1000 + 7919 * n as u16,
                    tl0: 50 * n as u8,
                    ts_offset: 0x1234_5678u32.wrapping_mul(n as u32 + 1),
                    frames_sent: 0,
                })
                .collect(),
            downlink: None,
            nat: None,
            uplink_loss: 0.0,
            uplink_jitter: Duration::ZERO,
            ignore_keyframe_requests: false,
        });
        let i = self.clients.len() - 1;
        self.drain_client(i);
        Ok(i)
    }

    pub fn publish(&mut self, room: &str) -> usize {
        self.publish_with(room, &JoinOpts::default())
    }

    /// Publish audio + video with the offer shaped by `opts`.
    pub fn publish_with(&mut self, room: &str, opts: &JoinOpts) -> usize {
        self.join_opts(
            room,
            true,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            opts,
        )
        .expect("publish")
    }

    pub fn publish_opts_record(&mut self, room: &str, record: Option<bool>) -> usize {
        let opts = JoinOpts {
            record,
            ..JoinOpts::default()
        };
        self.publish_with(room, &opts)
    }

    pub fn view(&mut self, room: &str) -> usize {
        self.join(
            room,
            false,
            &[
                (MediaKind::Audio, Direction::RecvOnly),
                (MediaKind::Video, Direction::RecvOnly),
            ],
        )
        .expect("subscribe")
    }

    /// DELETE the client's session through the core and drop the client peer.
    pub fn delete(&mut self, i: usize) -> Result<Reply, wisp::sfu::ApiError> {
        let c = &mut self.clients[i];
        c.alive = false;
        let role = if c.publisher {
            wisp::sfu::Role::Publisher
        } else {
            wisp::sfu::Role::Subscriber
        };
        let cmd = Command::DeleteSession {
            role,
            room: RoomName::new(&c.room).unwrap(),
            token: c.token.unwrap(),
        };
        c.rtc.disconnect();
        self.sfu.handle_command(self.now, cmd)
    }

    /// PATCH the client's session with an sdpfrag.
    pub fn patch(
        &mut self,
        i: usize,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<Reply, wisp::sfu::ApiError> {
        let c = &self.clients[i];
        let role = if c.publisher {
            wisp::sfu::Role::Publisher
        } else {
            wisp::sfu::Role::Subscriber
        };
        let cmd = Command::Patch {
            role,
            room: RoomName::new(&c.room).unwrap(),
            token: c.token.unwrap(),
            if_match: if_match.map(str::to_string),
            fragment: fragment.to_string(),
        };
        self.sfu.handle_command(self.now, cmd)
    }

    /// Deliver a raw datagram to the server now; returns the datagrams the
    /// server sends back to `from` in response (other output stays queued).
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.sfu
            .handle_receive(self.now, from, server_addr(), bytes);
        let mut back = vec![];
        loop {
            match self.sfu.poll_output() {
                wisp::sfu::Output::Transmit(t) if t.destination == from => {
                    back.push(t.contents.to_vec())
                }
                wisp::sfu::Output::Transmit(t) => {
                    self.push(server_addr(), t.destination, t.contents.to_vec())
                }
                wisp::sfu::Output::Record(r) => self.recorded.push(r),
                wisp::sfu::Output::Timeout(_) => return back,
            }
        }
    }

    fn push(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.push_at(self.now + self.latency, from, to, bytes);
    }

    fn push_at(&mut self, at: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue
            .insert((at, self.seq), InFlight { from, to, bytes });
    }

    /// Cap (or, with `None`, uncap) the downlink toward client `i`. A change
    /// keeps what is already queued.
    pub fn set_downlink(&mut self, i: usize, rate_bps: Option<u64>) {
        let now = self.now;
        let c = &mut self.clients[i];
        match (rate_bps, c.downlink.as_mut()) {
            (None, _) => c.downlink = None,
            (Some(r), Some(l)) => l.rate_bps = r,
            (Some(r), None) => {
                c.downlink = Some(Link {
                    rate_bps: r,
                    max_queue: Duration::from_millis(250),
                    busy_until: now,
                    dropped: 0,
                    delivered_bytes: 0,
                })
            }
        }
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
        self.sfu
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

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        let mut out = vec![];
        {
            let c = &mut self.clients[i];
            if !c.alive {
                return;
            }
            loop {
                match c.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        c.next = t;
                        break;
                    }
                    Ok(Output::Transmit(t)) => {
                        out.push((t.source, t.destination, t.contents.to_vec()))
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::Connected => c.connected_at = Some(now),
                        Event::KeyframeRequest(r) => {
                            c.keyframe_requests += 1;
                            let honour = !c.ignore_keyframe_requests;
                            c.want_keyframe |= honour;
                            for l in c.sim.iter_mut() {
                                if r.rid.is_none() || r.rid.as_deref() == Some(l.rid) {
                                    l.want_keyframe |= honour;
                                    l.keyframe_requests += 1;
                                }
                            }
                        }
                        Event::RtpPacket(p) => {
                            let mid = c
                                .rtc
                                .direct_api()
                                .stream_rx(&p.header.ssrc)
                                .map(|s| s.mid());
                            let kind = c
                                .mids
                                .iter()
                                .find(|(m, _)| Some(*m) == mid)
                                .map(|(_, k)| *k)
                                .unwrap_or(MediaKind::Audio);
                            c.got.push(Got {
                                at: now,
                                kind,
                                seq: *p.seq_no,
                                ts: p.header.timestamp,
                                pt: p.header.payload_type,
                                payload: p.payload.to_vec(),
                            });
                        }
                        _ => {}
                    },
                    Err(e) => panic!("client {i} error: {e}"),
                }
            }
        }
        let blackholed = self.clients[i].blackholed;
        for (src, dst, b) in out {
            if !blackholed {
                self.push_from_client(i, src, dst, b);
            }
        }
    }

    fn drain_sfu(&mut self) -> Instant {
        loop {
            match self.sfu.poll_output() {
                wisp::sfu::Output::Transmit(t) => {
                    let to = t.destination;
                    let target = self
                        .clients
                        .iter()
                        .position(|c| c.wire_addr() == to)
                        .map(|i| (i, self.clients[i].blackholed, self.clients[i].inbound_loss));
                    let lost = match target {
                        Some((_, blackholed, loss)) => {
                            blackholed || (loss > 0.0 && self.random() < loss)
                        }
                        None => {
                            self.stray.push(to);
                            true
                        }
                    };
                    if lost {
                        continue;
                    }
                    let i = target.map(|t| t.0).unwrap();
                    let now = self.now;
                    let len = t.contents.len();
                    match self.clients[i].downlink.as_mut() {
                        None => self.push(server_addr(), to, t.contents.to_vec()),
                        Some(link) => {
                            let start = link.busy_until.max(now);
                            if start - now > link.max_queue {
                                link.dropped += 1;
                                continue;
                            }
                            // IP + UDP headers count on the wire.
                            let bits = (len as u64 + 28) * 8;
                            link.busy_until =
                                start + Duration::from_nanos(bits * 1_000_000_000 / link.rate_bps);
                            link.delivered_bytes += len as u64;
                            let at = link.busy_until + self.latency;
                            self.push_at(at, server_addr(), to, t.contents.to_vec());
                        }
                    }
                }
                wisp::sfu::Output::Record(r) => self.recorded.push(r),
                wisp::sfu::Output::Timeout(t) => return t,
            }
        }
    }

    /// Publisher clients write one step of synthetic media: a VP8-shaped video
    /// frame of 3 packets every 33 ms (keyframe when asked or every 3 s) and an
    /// Opus-shaped audio packet every 20 ms (approximated at the video tick).
    fn send_media(&mut self) {
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

    /// Advance to the next event (delivery, timer or media tick) and handle it.
    pub fn step(&mut self) {
        let sfu_next = self.drain_sfu();
        let mut next = sfu_next;
        for c in self.clients.iter().filter(|c| c.alive) {
            next = next.min(c.next);
        }
        if let Some(((t, _), _)) = self.queue.first_key_value() {
            next = next.min(*t);
        }
        if self.media_on {
            next = next.min(self.next_media);
        }
        // Never go backwards; at least 100 µs forward when nothing is due, so no loop spins.
        self.now = if next > self.now {
            next
        } else {
            self.now + Duration::from_micros(100)
        };
        let now = self.now;

        // Deliveries due.
        while let Some(((t, _), _)) = self.queue.first_key_value() {
            if *t > now {
                break;
            }
            let (_, p) = self.queue.pop_first().unwrap();
            if p.to == server_addr() {
                if self
                    .clients
                    .iter()
                    .any(|c| c.wire_addr() == p.from && c.blackholed)
                {
                    continue;
                }
                if let Some(tap) = self.tap.as_mut() {
                    tap.push((p.from, p.bytes.clone()));
                }
                self.sfu.handle_receive(now, p.from, p.to, &p.bytes);
            } else if let Some(i) = self
                .clients
                .iter()
                .position(|c| c.wire_addr() == p.to && c.alive)
            {
                if self.clients[i].blackholed {
                    continue;
                }
                // Behind a NAT the client sees its own address as the destination.
                let local = self.clients[i].addr;
                let recv = Receive::new(Protocol::Udp, p.from, local, &p.bytes).unwrap();
                let _ = self.clients[i].rtc.handle_input(Input::Receive(now, recv));
                self.drain_client(i);
            }
        }
        // Timers.
        self.sfu.handle_timeout(now);
        for i in 0..self.clients.len() {
            if self.clients[i].alive && self.clients[i].next <= now {
                let _ = self.clients[i].rtc.handle_input(Input::Timeout(now));
                self.drain_client(i);
            }
        }
        if self.media_on && self.next_media <= now {
            self.next_media = now + Duration::from_millis(33);
            self.send_media();
        }
    }

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while self.now < end {
            self.step();
            steps += 1;
            assert!(steps < 10_000_000, "run_for did not finish");
        }
    }

    /// Run until `pred` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&TestNet) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if pred(self) {
                return true;
            }
            self.step();
        }
        pred(self)
    }

    /// Every map of the core is empty (the short grace list of ended
    /// sessions aside).
    pub fn assert_maps_empty(&self) {
        let c = self.sfu.counts();
        assert_eq!(
            (
                c.sessions,
                c.rooms,
                c.tokens,
                c.addrs,
                c.ufrags,
                c.addr_lists,
                c.keyframe_timers
            ),
            (0, 0, 0, 0, 0, 0, 0),
            "{c:?}"
        );
    }

    /// Exact packet accounting: every (packet, viewer) pair the fan-out saw was
    /// forwarded or dropped with a counted per-viewer reason.
    pub fn assert_accounting(&self) {
        let s = self.sfu.stats();
        let per_viewer: u64 = wisp::sfu::DropReason::ALL
            .iter()
            .filter(|r| r.is_per_viewer())
            .map(|r| s.dropped(*r))
            .sum();
        assert_eq!(
            s.fanout_attempts,
            s.rtp_forwarded + per_viewer,
            "fan-out accounting: {s:?}"
        );
    }

    pub fn connected(&self, i: usize) -> bool {
        self.clients[i].connected_at.is_some()
    }

    /// Payload counters (bytes 2..10) of what viewer `i` got of `kind`, in arrival order.
    pub fn counters(&self, i: usize, kind: MediaKind) -> Vec<u64> {
        self.clients[i]
            .got
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| u64::from_be_bytes(g.payload[2..10].try_into().unwrap()))
            .collect()
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
        Codec::Vp9 => |b| {
            let mut b = b.clear_codecs().enable_opus(true, false);
            b.codec_config().add_config(
                98.into(),
                Some(99.into()),
                Codec::Vp9,
                str0m::media::Frequency::NINETY_KHZ,
                None,
                str0m::format::FormatParams {
                    profile_id: Some(0),
                    ..Default::default()
                },
            );
            b
        },
        Codec::H264 => |b| b.clear_codecs().enable_h264(true).enable_opus(true, false),
        Codec::Av1 => |b| b.clear_codecs().enable_av1(true).enable_opus(true, false),
        _ => |b| b.clear_codecs().enable_vp8(true).enable_opus(true, false),
    }
}

// ---- Fault injection (hostile / faults / soak tests) ------------------------

impl Client {
    /// The address on the wire: after NAT rebinding, the new one.
    pub fn wire_addr(&self) -> SocketAddr {
        self.nat.unwrap_or(self.addr)
    }
}

impl TestNet {
    /// A datagram from client `i`: NAT rewriting, uplink loss and jitter.
    fn push_from_client(&mut self, i: usize, src: SocketAddr, dst: SocketAddr, b: Vec<u8>) {
        let (nat, loss, jitter) = {
            let c = &self.clients[i];
            (c.nat, c.uplink_loss, c.uplink_jitter)
        };
        if loss > 0.0 && self.random() < loss {
            return;
        }
        let src = if src == self.clients[i].addr {
            nat.unwrap_or(src)
        } else {
            src
        };
        let mut at = self.now + self.latency;
        if !jitter.is_zero() {
            at += jitter.mul_f64(self.random());
        }
        self.push_at(at, src, dst, b);
    }

    /// NAT rebinding: from now on client `i`'s datagrams reach the server from
    /// `new_addr`, and only datagrams to `new_addr` reach the client. The
    /// client itself notices nothing.
    pub fn rebind(&mut self, i: usize, new_addr: SocketAddr) {
        self.clients[i].nat = Some(new_addr);
    }

    /// Deliver `bytes` to the server from `from` after the usual latency, as
    /// if it had been on the wire (it is tapped like any other datagram).
    pub fn send_raw(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.push(from, server_addr(), bytes);
    }
}
