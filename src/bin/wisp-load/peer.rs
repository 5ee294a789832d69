//! The str0m peers (RTP mode), one UDP socket each: the WHIP publisher and
//! the WHEP viewers, from the offer through the answer to every datagram
//! they read and write.

use std::io::{self, ErrorKind, IoSliceMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use quinn_udp::{RecvMeta, UdpSocketState};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::http::{post_offer, HttpResponse};
use crate::media::{now_us, sent_us, MAGIC_AUDIO, MAGIC_VIDEO};
use crate::nodes::LatencyHist;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Publisher,
    /// Decrypts everything through str0m; checks payloads; latency samples.
    Full,
    /// Counts media by the clear RTP header; only STUN/DTLS/RTCP reach str0m.
    Light,
}

/// Packets by payload type.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub video: u64,
    pub audio: u64,
    pub other: u64,
}

impl Counts {
    /// Video and audio: what loss is counted on.
    pub fn media(&self) -> u64 {
        self.video + self.audio
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.video += o.video;
        self.audio += o.audio;
        self.other += o.other;
    }
}

/// How the viewers read their sockets (`--no-gro`, `--rcvbuf`).
#[derive(Clone, Copy)]
pub struct IoOpts {
    pub gro: bool,
    pub rcvbuf: usize,
}

/// A connected (or connecting) peer.
pub struct Peer {
    pub kind: Kind,
    pub rtc: Rtc,
    pub sock: UdpSocket,
    /// Viewers: GRO + recvmmsg receive state (None: plain recv_from).
    udp: Option<UdpSocketState>,
    addr: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
    /// The server that answered, and the session URL it gave (for DELETE).
    pub server: SocketAddr,
    pub location: String,
    pub connected: bool,
    pub closed: bool,
    pub next_timeout: Instant,
    pub video_pt: u8,
    pub audio_pt: u8,
    /// Media datagrams by clear header.
    pub rx: Counts,
    /// Full viewers: media events from str0m whose payload checked out.
    pub dec: Counts,
    pub bad_payload: u64,
    /// Full viewers: time of the datagram now being handled.
    last_recv_us: u64,
    /// Full viewers: when the tool read that datagram (user space).
    last_user_us: u64,
    /// Full viewers: latency to the tool's read (includes the tool's own delay).
    pub lat_user: Vec<u32>,
    /// Full viewers: datagrams that carried a kernel receive timestamp.
    pub kernel_ts: u64,
    /// Publisher: a keyframe was requested (PLI/FIR).
    pub want_keyframe: bool,
    pub keyframe_requests: u64,
    pub send_errors: u64,
    /// Viewers: the index of their server in `Args::view_addrs`.
    pub group: usize,
    /// Full viewers: their latency samples (the same as pushed to the run's),
    /// for the per-URL figures; cleared when measuring starts.
    pub lat_hist: Option<LatencyHist>,
}

/// A peer before its offer is answered.
pub struct Pending {
    kind: Kind,
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
    pending: SdpPendingOffer,
    /// The SDP offer to POST.
    pub offer: String,
}

/// A new peer on its own loopback socket, with its offer (audio, then video;
/// send-only for the publisher, receive-only for viewers).
pub fn new_offer(kind: Kind) -> io::Result<Pending> {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std_sock.set_nonblocking(true)?;
    let addr = std_sock.local_addr()?;
    let sock = UdpSocket::from_std(std_sock);
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(io::Error::other)?);
    let dir = if kind == Kind::Publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    let mids = vec![
        (
            api.add_media(MediaKind::Audio, dir, None, None, None),
            MediaKind::Audio,
        ),
        (
            api.add_media(MediaKind::Video, dir, None, None, None),
            MediaKind::Video,
        ),
    ];
    let (offer, pending) = api.apply().ok_or_else(|| io::Error::other("no offer"))?;
    Ok(Pending {
        kind,
        rtc,
        sock,
        addr,
        mids,
        pending,
        offer: offer.to_sdp_string(),
    })
}

/// A new peer, its offer POSTed to `path`. A server still busy with the
/// previous run answers 503: this retries for up to 10 s.
pub fn post_peer(addr: SocketAddr, kind: Kind, path: &str, io: IoOpts) -> Result<Peer, String> {
    let p = new_offer(kind).map_err(|e| e.to_string())?;
    let mut tries = 0;
    let r = loop {
        let r = post_offer(addr, path, &p.offer)?;
        tries += 1;
        if r.status != 503 || tries >= 40 {
            break r;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    p.finish(&r, addr, path, io)
}

fn pt_of(rtc: &Rtc, codec: Codec) -> u8 {
    rtc.codec_config()
        .find(|p| p.spec().codec == codec)
        .map(|p| *p.pt())
        .unwrap_or(255)
}

impl Pending {
    /// Takes the answer of `server` to the POST to `path`: anything but a 201
    /// with a `Location` and a valid SDP answer is an error.
    pub fn finish(
        mut self,
        r: &HttpResponse,
        server: SocketAddr,
        path: &str,
        io: IoOpts,
    ) -> Result<Peer, String> {
        if r.status != 201 {
            return Err(format!(
                "POST {path}: status {} {}",
                r.status,
                r.body.trim()
            ));
        }
        let location = r
            .header("location")
            .ok_or(format!("POST {path}: no Location"))?
            .to_string();
        let answer = SdpAnswer::from_sdp_string(&r.body).map_err(|e| format!("answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| format!("accept_answer: {e}"))?;
        let mut udp = None;
        if self.kind != Kind::Publisher && io.gro {
            let st = UdpSocketState::new((&self.sock).into()).map_err(|e| e.to_string())?;
            let _ = st.set_recv_buffer_size((&self.sock).into(), io.rcvbuf);
            udp = Some(st);
        }
        let video_pt = pt_of(&self.rtc, Codec::Vp8);
        let audio_pt = pt_of(&self.rtc, Codec::Opus);
        Ok(Peer {
            kind: self.kind,
            rtc: self.rtc,
            sock: self.sock,
            udp,
            addr: self.addr,
            mids: self.mids,
            server,
            location,
            connected: false,
            closed: false,
            next_timeout: Instant::now(),
            video_pt,
            audio_pt,
            rx: Counts::default(),
            dec: Counts::default(),
            bad_payload: 0,
            last_recv_us: 0,
            last_user_us: 0,
            lat_user: vec![],
            kernel_ts: 0,
            want_keyframe: true,
            keyframe_requests: 0,
            send_errors: 0,
            group: 0,
            lat_hist: (self.kind == Kind::Full).then(LatencyHist::default),
        })
    }
}

/// Receive buffers for GRO batches: BATCH × 64 KiB, shared by all peers.
pub const BATCH: usize = 8;

/// Whether a datagram is RTP (not RTCP, STUN or DTLS), per RFC 7983 / 5761.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..192).contains(&d[0]) && !(64..96).contains(&(d[1] & 0x7f))
}

/// Whether to read on after a receive error: not when the socket would block,
/// nor after more than 16 other errors (ICMP-induced ones, e.g. ECONNREFUSED
/// after the server left, would repeat).
fn read_on(e: &io::Error, errs: &mut u32) -> bool {
    match e.kind() {
        ErrorKind::WouldBlock => false,
        ErrorKind::Interrupted => true,
        _ => {
            *errs += 1;
            *errs <= 16
        }
    }
}

impl Peer {
    /// One datagram from the server.
    fn on_datagram(
        &mut self,
        d: &[u8],
        src: SocketAddr,
        (recv_us, user_us): (u64, u64),
        lat: &mut Vec<u32>,
    ) {
        if self.kind != Kind::Publisher && is_rtp(d) {
            let pt = d[1] & 0x7f;
            if pt == self.video_pt {
                self.rx.video += 1;
            } else if pt == self.audio_pt {
                self.rx.audio += 1;
            } else {
                self.rx.other += 1;
            }
            if self.kind == Kind::Light {
                return;
            }
            self.last_recv_us = recv_us;
            self.last_user_us = user_us;
        }
        if let Ok(r) = Receive::new(Protocol::Udp, src, self.addr, d) {
            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            self.drain(lat);
        }
    }

    /// Read the socket until it would block. `bufs` holds [`BATCH`] buffers
    /// of 64 KiB; `lat` takes the full viewers' latency samples.
    pub fn read_all(&mut self, bufs: &mut [Vec<u8>], lat: &mut Vec<u32>) {
        let mut errs = 0;
        if self.udp.is_none() {
            loop {
                match self.sock.recv_from(&mut bufs[0]) {
                    Ok((n, src)) => {
                        let d = std::mem::take(&mut bufs[0]);
                        let t = now_us();
                        self.on_datagram(&d[..n], src, (t, t), lat);
                        bufs[0] = d;
                    }
                    Err(e) if !read_on(&e, &mut errs) => return,
                    Err(_) => {}
                }
            }
        }
        let mut meta = [RecvMeta::default(); BATCH];
        loop {
            let r = {
                let mut slices: [IoSliceMut; BATCH] = {
                    let mut it = bufs.iter_mut();
                    std::array::from_fn(|_| IoSliceMut::new(it.next().unwrap()))
                };
                let st = self.udp.as_ref().unwrap();
                st.recv((&self.sock).into(), &mut slices, &mut meta)
            };
            match r {
                Ok(n) => {
                    let user_us = now_us();
                    for (m, b) in meta.iter().zip(bufs.iter()).take(n) {
                        let stride = m.stride.max(1);
                        let recv_us = match m.timestamp {
                            Some(t) => {
                                self.kernel_ts += 1;
                                t.as_micros() as u64
                            }
                            None => user_us,
                        };
                        for seg in b[..m.len].chunks(stride) {
                            self.on_datagram(seg, m.addr, (recv_us, user_us), lat);
                        }
                    }
                }
                Err(e) if !read_on(&e, &mut errs) => return,
                Err(_) => {}
            }
        }
    }

    /// Runs the `Rtc`'s timers at `now`.
    pub fn timeout(&mut self, now: Instant, lat: &mut Vec<u32>) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain(lat);
    }

    /// Poll the Rtc until it wants a timeout; send its datagrams.
    pub fn drain(&mut self, lat: &mut Vec<u32>) {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    self.closed = true;
                    self.next_timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    if self.sock.send_to(&t.contents, t.destination).is_err() {
                        self.send_errors += 1;
                    }
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::Closed) => self.closed = true,
                Output::Event(Event::KeyframeRequest(_)) => {
                    self.want_keyframe = true;
                    self.keyframe_requests += 1;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let pt = *p.header.payload_type;
                    let (magic, bucket) = if pt == self.video_pt {
                        (MAGIC_VIDEO, &mut self.dec.video)
                    } else if pt == self.audio_pt {
                        (MAGIC_AUDIO, &mut self.dec.audio)
                    } else {
                        self.dec.other += 1;
                        continue;
                    };
                    if let Some(sent) = sent_us(&p.payload, magic) {
                        *bucket += 1;
                        let d = self.last_recv_us.saturating_sub(sent);
                        let d = d.min(u32::MAX as u64) as u32;
                        lat.push(d);
                        if let Some(h) = &mut self.lat_hist {
                            h.record(d);
                        }
                        let u = self.last_user_us.saturating_sub(sent);
                        self.lat_user.push(u.min(u32::MAX as u64) as u32);
                    } else {
                        self.bad_payload += 1;
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    /// The mid of this peer's `kind` media.
    pub fn mid(&self, kind: MediaKind) -> Mid {
        self.mids.iter().find(|(_, k)| *k == kind).unwrap().0
    }
}
