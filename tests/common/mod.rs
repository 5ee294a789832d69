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
}

impl Default for JoinOpts {
    fn default() -> Self {
        JoinOpts {
            candidate_in_offer: true,
            mangle: None,
            config: None,
            record: None,
        }
    }
}

pub struct TestNet {
    /// Everything the core handed to the recorder, in order.
    pub recorded: Vec<wisp::sfu::record::RecordEvent>,
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
        let n = self.clients.len() as u8 + 1;
        let addr = SocketAddr::from(([192, 0, 2, n], 5000 + n as u16));
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
            mids.push((
                api.add_media(*k, *d, Some("wisp-test".into()), None, None),
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
        });
        let i = self.clients.len() - 1;
        self.drain_client(i);
        Ok(i)
    }

    pub fn publish(&mut self, room: &str) -> usize {
        self.join(
            room,
            true,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
        )
        .expect("publish")
    }

    pub fn publish_opts_record(&mut self, room: &str, record: Option<bool>) -> usize {
        let opts = JoinOpts {
            record,
            ..JoinOpts::default()
        };
        self.join_opts(
            room,
            true,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            &opts,
        )
        .expect("publish")
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
        self.seq += 1;
        self.queue.insert(
            (self.now + self.latency, self.seq),
            InFlight { from, to, bytes },
        );
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
                        Event::KeyframeRequest(_) => {
                            c.keyframe_requests += 1;
                            c.want_keyframe = true;
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
                self.push(src, dst, b);
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
                        .find(|c| c.addr == to)
                        .map(|c| (c.blackholed, c.inbound_loss));
                    let lost = match target {
                        Some((blackholed, loss)) => {
                            blackholed || (loss > 0.0 && self.random() < loss)
                        }
                        None => true,
                    };
                    if !lost {
                        self.push(server_addr(), to, t.contents.to_vec());
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
                    .any(|c| c.addr == p.from && c.blackholed)
                {
                    continue;
                }
                self.sfu.handle_receive(now, p.from, p.to, &p.bytes);
            } else if let Some(i) = self.clients.iter().position(|c| c.addr == p.to && c.alive) {
                if self.clients[i].blackholed {
                    continue;
                }
                let recv = Receive::new(Protocol::Udp, p.from, p.to, &p.bytes).unwrap();
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
