//! A small in-memory network for the stateful fuzz bodies: the core plus
//! real str0m client peers, a fake clock, FIFO delivery without latency, and
//! a record of every datagram the core sent to an address that is no client.
//!
//! Like `tests/common` (TestNet), but inside the library so that the fuzz
//! targets (which cannot see `tests/`) use the same shapes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use crate::sfu::{ApiError, Command, Output, Reply, Role, RoomName, SessionToken, Sfu, SfuConfig};

/// The core's (never bound) address.
pub const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)),
    8189,
);

/// Bound on loop iterations anywhere in the net: a core that keeps producing
/// output forever is a bug.
const MAX_ITER: usize = 100_000;

/// A client peer.
pub struct Peer {
    /// The str0m client.
    pub rtc: Rtc,
    /// Its address.
    pub addr: SocketAddr,
    /// Publisher (WHIP) or viewer (WHEP).
    pub role: Role,
    /// Its room.
    pub room: RoomName,
    /// Its session token.
    pub token: SessionToken,
    /// The m-lines it offered.
    pub mids: Vec<(Mid, MediaKind)>,
    /// Still pumped (false after DELETE).
    pub alive: bool,
    /// Nothing to or from it is delivered (it vanished).
    pub blackholed: bool,
    /// Its next timeout.
    pub next: Instant,
    /// ICE + DTLS up.
    pub connected: bool,
    /// RTP packets it received.
    pub got: u64,
    /// Keyframe requests it received.
    pub keyframe_requests: u64,
    /// The session's current ETag.
    pub etag: String,
    /// The server's ufrag and password for this session (from the answer).
    pub server_ice: (String, String),
    /// The client's own ufrag.
    pub ufrag: String,
    frame: u64,
    seq: [u64; 2],
    want_keyframe: bool,
}

/// A datagram seen on the wire.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// The core and its clients.
pub struct Net {
    /// The core.
    pub sfu: Sfu,
    /// The fake clock.
    pub now: Instant,
    /// Clients, in join order (never removed: indices are stable).
    pub peers: Vec<Peer>,
    queue: VecDeque<Seen>,
    /// Every datagram delivered, when capturing.
    pub capture: Option<Vec<Seen>>,
    /// Datagrams the core sent to an address that is no client.
    pub stray: Vec<Seen>,
    /// Publishers send media when the clock advances.
    pub media: bool,
    next_media: Instant,
    next_addr: u16,
}

/// The core configuration the fuzz bodies use.
pub fn config(seed: u8) -> SfuConfig {
    SfuConfig {
        candidates: vec![SERVER],
        seed: [seed; 32],
        max_sessions: 64,
        max_rooms: 16,
        ..SfuConfig::default()
    }
}

fn ice_of(sdp: &str) -> (String, String) {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .unwrap_or("")
            .to_string()
    };
    (attr("a=ice-ufrag:"), attr("a=ice-pwd:"))
}

impl Net {
    /// A core with no sessions, its clock at `now`.
    pub fn new(seed: u8, now: Instant) -> Net {
        Net {
            sfu: Sfu::new(config(seed), now),
            now,
            peers: Vec::new(),
            queue: VecDeque::new(),
            capture: None,
            stray: Vec::new(),
            media: true,
            next_media: now,
            next_addr: 0,
        }
    }

    /// A str0m client offer: (rtc, its address, offer text, pending offer, mids).
    #[allow(clippy::type_complexity)]
    fn offer(
        &mut self,
        kinds: &[(MediaKind, Direction)],
    ) -> (
        Rtc,
        SocketAddr,
        String,
        str0m::change::SdpPendingOffer,
        Vec<(Mid, MediaKind)>,
    ) {
        self.next_addr += 1;
        let n = self.next_addr;
        let addr = SocketAddr::from(([192, 0, 2, (n % 250) as u8 + 1], 5000 + n));
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        let mids = kinds
            .iter()
            .map(|(k, d)| (api.add_media(*k, *d, Some("fuzz".into()), None, None), *k))
            .collect();
        let (offer, pending) = api.apply().expect("a client offer");
        (rtc, addr, offer.to_sdp_string(), pending, mids)
    }

    /// POST a client's offer through the core. `Ok(index)` or the core's error.
    pub fn join(
        &mut self,
        role: Role,
        room: &RoomName,
        kinds: &[(MediaKind, Direction)],
    ) -> Result<usize, ApiError> {
        let (mut rtc, addr, offer, pending, mids) = self.offer(kinds);
        let ufrag = ice_of(&offer).0;
        let cmd = match role {
            Role::Publisher => Command::Publish {
                room: room.clone(),
                offer,
                record: None,
            },
            Role::Subscriber => Command::Subscribe {
                room: room.clone(),
                offer,
            },
        };
        let (token, answer, etag) = match self.sfu.handle_command(self.now, cmd)? {
            Reply::Created {
                token,
                answer,
                etag,
            } => (token, answer, etag),
            other => panic!("unexpected reply to a POST: {other:?}"),
        };
        let server_ice = ice_of(&answer);
        let parsed = SdpAnswer::from_sdp_string(&answer).expect("the answer parses");
        rtc.sdp_api()
            .accept_answer(pending, parsed)
            .expect("the client accepts the answer");
        self.peers.push(Peer {
            rtc,
            addr,
            role,
            room: room.clone(),
            token,
            mids,
            alive: true,
            blackholed: false,
            next: self.now,
            connected: false,
            got: 0,
            keyframe_requests: 0,
            etag,
            server_ice,
            ufrag,
            frame: 0,
            seq: [1, 1],
            want_keyframe: true,
        });
        let i = self.peers.len() - 1;
        self.drain_peer(i);
        self.pump();
        Ok(i)
    }

    /// A publisher with audio and video.
    pub fn publish(&mut self, room: &RoomName) -> Result<usize, ApiError> {
        use Direction::SendOnly;
        self.join(
            Role::Publisher,
            room,
            &[(MediaKind::Audio, SendOnly), (MediaKind::Video, SendOnly)],
        )
    }

    /// A viewer of audio and video.
    pub fn view(&mut self, room: &RoomName) -> Result<usize, ApiError> {
        use Direction::RecvOnly;
        self.join(
            Role::Subscriber,
            room,
            &[(MediaKind::Audio, RecvOnly), (MediaKind::Video, RecvOnly)],
        )
    }

    /// DELETE peer `i`'s session and stop pumping it.
    pub fn delete(&mut self, i: usize) -> Result<Reply, ApiError> {
        let p = &mut self.peers[i];
        p.alive = false;
        p.rtc.disconnect();
        let cmd = Command::DeleteSession {
            role: p.role,
            room: p.room.clone(),
            token: p.token,
        };
        let r = self.sfu.handle_command(self.now, cmd);
        self.pump();
        r
    }

    /// Hand one datagram to the core now, and move its output along.
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.sfu.handle_receive(self.now, from, SERVER, bytes);
        self.pump();
    }

    fn drain_peer(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if !p.alive {
            return;
        }
        for _ in 0..MAX_ITER {
            match p.rtc.poll_output() {
                Ok(RtcOutput::Timeout(t)) => {
                    p.next = t;
                    return;
                }
                Ok(RtcOutput::Transmit(t)) => {
                    if !p.blackholed {
                        self.queue.push_back(Seen {
                            from: t.source,
                            to: t.destination,
                            bytes: t.contents.to_vec(),
                        });
                    }
                }
                Ok(RtcOutput::Event(e)) => match e {
                    Event::Connected => p.connected = true,
                    Event::KeyframeRequest(_) => {
                        p.keyframe_requests += 1;
                        p.want_keyframe = true;
                    }
                    Event::RtpPacket(_) => p.got += 1,
                    _ => {}
                },
                Err(_) => {
                    // A client error ends that client, like a browser tab closing.
                    p.alive = false;
                    return;
                }
            }
        }
        panic!("client {i} never reached a timeout");
    }

    /// Move datagrams between the core and the clients until nothing is in
    /// flight. Returns the core's next timeout.
    pub fn pump(&mut self) -> Instant {
        for _ in 0..MAX_ITER {
            let next = loop {
                match self.sfu.poll_output() {
                    Output::Transmit(t) => {
                        let seen = Seen {
                            from: t.source,
                            to: t.destination,
                            bytes: t.contents.to_vec(),
                        };
                        if self.peers.iter().any(|p| p.addr == seen.to) {
                            self.queue.push_back(seen);
                        } else {
                            self.stray.push(seen);
                        }
                    }
                    Output::Record(_) => {}
                    Output::Timeout(t) => break t,
                }
            };
            let Some(d) = self.queue.pop_front() else {
                return next;
            };
            if let Some(c) = self.capture.as_mut() {
                c.push(d.clone());
            }
            if d.to == SERVER {
                if !self.peers.iter().any(|p| p.addr == d.from && p.blackholed) {
                    self.sfu.handle_receive(self.now, d.from, d.to, &d.bytes);
                }
            } else if let Some(i) = self
                .peers
                .iter()
                .position(|p| p.addr == d.to && p.alive && !p.blackholed)
            {
                if let Ok(r) = Receive::new(Protocol::Udp, d.from, d.to, &d.bytes) {
                    let _ = self.peers[i].rtc.handle_input(Input::Receive(self.now, r));
                }
                self.drain_peer(i);
            }
        }
        panic!("the network never went quiet");
    }

    /// Run the network for `d` of simulated time: timers, deliveries and
    /// (when `media`) one video and one audio packet per publisher every 33 ms.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..MAX_ITER {
            let mut next = self.pump().min(end);
            for p in self.peers.iter().filter(|p| p.alive) {
                next = next.min(p.next);
            }
            if self.media {
                next = next.min(self.next_media);
            }
            self.now = next.max(self.now + Duration::from_micros(100)).min(end);
            self.sfu.handle_timeout(self.now);
            for i in 0..self.peers.len() {
                if self.peers[i].alive && self.peers[i].next <= self.now {
                    let _ = self.peers[i].rtc.handle_input(Input::Timeout(self.now));
                    self.drain_peer(i);
                }
            }
            if self.media && self.next_media <= self.now {
                self.next_media = self.now + Duration::from_millis(33);
                self.send_media();
            }
            self.pump();
            if self.now >= end {
                return;
            }
        }
        panic!("advance did not reach its end");
    }

    /// Jump the clock without running anything in between (a suspended host).
    pub fn jump(&mut self, d: Duration) {
        self.now += d;
        self.next_media = self.now;
        self.sfu.handle_timeout(self.now);
        self.pump();
    }

    fn send_media(&mut self) {
        let now = self.now;
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.role != Role::Publisher || !p.alive || !p.connected {
                continue;
            }
            let key = p.want_keyframe || p.frame.is_multiple_of(60);
            p.want_keyframe = false;
            p.frame += 1;
            for (mid, kind) in p.mids.clone() {
                let Some(pt) = p
                    .rtc
                    .media(mid)
                    .and_then(|m| m.remote_pts().first().copied())
                else {
                    continue;
                };
                let codec = p
                    .rtc
                    .codec_config()
                    .find(|c| c.pt() == pt)
                    .map(|c| c.spec().codec);
                let video = kind == MediaKind::Video;
                let mut payload = match (video, codec) {
                    (true, Some(Codec::H264)) => vec![if key { 0x65 } else { 0x41 }, 0x88],
                    (true, _) => vec![0x10, if key { 0x00 } else { 0x01 }],
                    (false, _) => vec![0xfc, 0xff],
                };
                payload.extend_from_slice(&p.frame.to_be_bytes());
                payload.resize(120, 0xab);
                let k = usize::from(video);
                let seq = p.seq[k];
                p.seq[k] += 1;
                let ts = (p.frame as u32).wrapping_mul(if video { 3000 } else { 960 });
                let mut api = p.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                            .marker(true)
                            .nackable(video),
                    );
                }
            }
            self.drain_peer(i);
        }
    }
}
