//! A str0m WHIP publisher or WHEP viewer (RTP mode) on its own UDP socket,
//! for the browser and GStreamer tests: it publishes what a test writes and
//! keeps every RTP packet it receives.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, Input, Output, Rtc};

use super::{http, Wisp};
use crate::support;

/// One received RTP packet.
#[derive(Clone)]
pub struct Packet {
    pub at: Instant,
    pub kind: MediaKind,
    pub ts: u32,
    /// Extended sequence number.
    pub seq: u64,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// A str0m WHIP publisher or WHEP viewer (RTP mode) on its own UDP socket.
pub struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
    pub location: String,
    pub connected: bool,
    pub got: Vec<Packet>,
    seq: [u64; 2],
}

impl Peer {
    pub fn new(wisp: &Wisp, path: &str, dir: Direction) -> Peer {
        Peer::new_on(wisp, path, dir, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// A peer whose socket and host candidate are on `ip`.
    pub fn new_on(wisp: &Wisp, path: &str, dir: Direction, ip: std::net::IpAddr) -> Peer {
        let o = support::udp::offering(ip, dir);
        let mut rtc = o.rtc;
        let r = http(
            wisp.http,
            "POST",
            path,
            &[("Content-Type", "application/sdp")],
            o.offer.as_bytes(),
            Duration::from_secs(10),
        )
        .expect("POST offer");
        assert_eq!(r.status, 201, "{}", r.text());
        let location = r.header("location").expect("Location").to_string();
        let answer = SdpAnswer::from_sdp_string(&r.text()).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(o.pending, answer)
            .expect("answer accepted");
        Peer {
            rtc,
            sock: o.sock,
            addr: o.addr,
            mids: o.mids,
            location,
            connected: false,
            got: Vec::new(),
            seq: [0; 2],
        }
    }

    /// Read the socket, feed str0m, send what it wants to send.
    pub fn pump(&mut self) {
        while support::udp::recv_one(&mut self.rtc, &self.sock, self.addr) {
            self.drain();
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => return,
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let kind = support::udp::kind_of(&mut self.rtc, &self.mids, p.header.ssrc);
                    self.got.push(Packet {
                        at: Instant::now(),
                        kind,
                        ts: p.header.timestamp,
                        seq: *p.seq_no,
                        marker: p.header.marker,
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(Output::Event(_)) => {}
            }
        }
    }

    /// Pump for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.pump();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Send one RTP packet on the track of `kind` (publisher only): VP8 or Opus.
    pub fn send(&mut self, kind: MediaKind, ts: u32, marker: bool, payload: Vec<u8>) {
        let codec = if kind == MediaKind::Video {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        self.send_codec(kind, codec, ts, marker, payload);
    }

    /// Send one RTP packet on the track of `kind`, with a negotiated payload
    /// type of `codec` (nothing if none was negotiated): the first, except
    /// that H.264 prefers constrained baseline in packetization mode 1
    /// (`42e01f`), the entry browsers and GStreamer viewers offer.
    pub fn send_codec(
        &mut self,
        kind: MediaKind,
        codec: Codec,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    ) {
        let of_codec = || {
            self.rtc
                .codec_config()
                .params()
                .iter()
                .filter(move |p| p.spec().codec == codec)
        };
        let Some(pt) = of_codec()
            .find(|p| {
                let f = p.spec().format;
                f.profile_level_id == Some(0x42e01f) && f.packetization_mode == Some(1)
            })
            .or_else(|| of_codec().next())
            .map(|p| p.pt())
        else {
            return;
        };
        let Some(&(mid, _)) = self.mids.iter().find(|(_, k)| *k == kind) else {
            return;
        };
        let i = usize::from(kind == MediaKind::Video);
        self.seq[i] += 1;
        let seq = SeqNo::from(self.seq[i]);
        let mut api = self.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.write_rtp(
                RtpWrite::new(pt, seq, ts, Instant::now(), payload)
                    .marker(marker)
                    .nackable(true),
            );
        }
        self.drain();
    }
}
