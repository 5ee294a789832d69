//! The real `wisp` binary on 127.0.0.1 and str0m peers over real HTTP and UDP,
//! for end-to-end tests. Bounded: every wait has a deadline.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, Input, Output, Rtc};

/// The binary (see `support::Wisp`; its log is echoed with `WISP_TEST_LOG` set).
pub use crate::support::Wisp as Server;

pub fn start_server() -> Server {
    start_server_with(&[])
}

/// The binary with extra environment variables.
pub fn start_server_with(env: &[(&str, &str)]) -> Server {
    Server::start(env)
}

/// One request (10 s bound): (status, lower-cased headers, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let headers: Vec<_> = ctype.map(|c| ("Content-Type", c)).into_iter().collect();
    let r = crate::support::http(
        addr,
        method,
        path,
        &headers,
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = r.text();
    (r.status, r.headers, text)
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub struct Peer {
    pub rtc: Rtc,
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub mids: Vec<(Mid, MediaKind)>,
    pub location: String,
    /// The server's SDP answer.
    pub answer: String,
    pub connected: bool,
    pub got_video: Vec<Vec<u8>>,
    /// The RTP sequence number of each packet in `got_video`.
    pub got_video_seq: Vec<u16>,
    pub got_audio: usize,
    pub closed: bool,
    /// Publisher: answer a keyframe request (PLI) with a keyframe on the
    /// next frame, as browsers do; otherwise keyframes come every 30 frames.
    pub keyframe_on_request: bool,
    /// A keyframe request is pending (see `keyframe_on_request`).
    pub keyframe_asked: bool,
}

impl Peer {
    pub fn new(server: &Server, path: &str, dir: Direction) -> Peer {
        Peer::with_post(path, dir, |offer| {
            http(server.http, "POST", path, Some("application/sdp"), offer)
        })
    }

    /// A peer whose offer is POSTed by `post` (status, lower-cased
    /// headers, body): e.g. over TLS.
    pub fn with_post(
        path: &str,
        dir: Direction,
        post: impl FnOnce(&str) -> (u16, Vec<(String, String)>, String),
    ) -> Peer {
        let o = crate::support::udp::offering(std::net::Ipv4Addr::LOCALHOST.into(), dir);
        let mut rtc = o.rtc;
        let (status, headers, body) = post(&o.offer);
        assert_eq!(status, 201, "{body}");
        let location = header(&headers, "location").expect("Location").to_string();
        assert!(location.starts_with(path), "{location}");
        assert!(body.contains("a=candidate"), "answer has candidates");
        let answer_text = body.clone();
        let answer = SdpAnswer::from_sdp_string(&body).unwrap();
        rtc.sdp_api().accept_answer(o.pending, answer).unwrap();
        Peer {
            rtc,
            sock: o.sock,
            addr: o.addr,
            mids: o.mids,
            location,
            answer: answer_text,
            connected: false,
            got_video: vec![],
            got_video_seq: vec![],
            got_audio: 0,
            closed: false,
            keyframe_on_request: false,
            keyframe_asked: false,
        }
    }

    /// Feed the Rtc every datagram waiting on the socket, then a timeout,
    /// sending what it wants to send. Returns its next deadline.
    pub fn pump(&mut self) -> Instant {
        while crate::support::udp::recv_one(&mut self.rtc, &self.sock, self.addr) {
            self.drain();
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain()
    }

    pub fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::Closed) => self.closed = true,
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_asked = true,
                Output::Event(Event::RtpPacket(p)) => {
                    match crate::support::udp::kind_of(&mut self.rtc, &self.mids, p.header.ssrc) {
                        MediaKind::Video => {
                            self.got_video_seq.push(p.header.sequence_number);
                            self.got_video.push(p.payload.to_vec());
                        }
                        _ => self.got_audio += 1,
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    /// The UDP ports of the server's candidates in its answer.
    pub fn server_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .filter_map(|c| c.split_whitespace().nth(5)?.parse().ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Send frame `n` (video and audio): a keyframe every 30 frames, and
    /// on request with `keyframe_on_request`.
    pub fn send_frame(&mut self, n: u64) {
        let now = Instant::now();
        let asked = std::mem::take(&mut self.keyframe_asked) && self.keyframe_on_request;
        let key = n.is_multiple_of(30) || asked;
        for (mid, kind) in self.mids.clone() {
            let codec = if kind == MediaKind::Video {
                Codec::Vp8
            } else {
                Codec::Opus
            };
            let pt = self
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == codec)
                .unwrap()
                .pt();
            let mut payload = if kind == MediaKind::Video {
                // VP8 descriptor with S=1, PID=0; keyframe every 30 frames.
                vec![0x10, if key { 0x00 } else { 0x01 }]
            } else {
                vec![0xfc, 0xff]
            };
            payload.extend_from_slice(&n.to_be_bytes());
            payload.resize(1000, 0x5a);
            let mut api = self.rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, None).unwrap();
            tx.write_rtp(
                RtpWrite::new(pt, SeqNo::from(n + 1), (n * 3000) as u32, now, payload)
                    .marker(true)
                    .nackable(true),
            );
        }
        self.drain();
    }
}

impl Peer {
    /// Write one RTP packet on the m-line of `kind` with the first negotiated PT of `codec`.
    pub fn send_rtp(
        &mut self,
        kind: MediaKind,
        codec: Codec,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    ) {
        let now = Instant::now();
        let (mid, _) = *self.mids.iter().find(|(_, k)| *k == kind).unwrap();
        let pt = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .unwrap()
            .pt();
        let mut api = self.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload)
                .marker(marker)
                .nackable(kind == MediaKind::Video),
        );
        self.drain();
    }
}
