//! A str0m peer's real UDP socket: the peer's setup up to its offer, one
//! datagram in (non-blocking), and the kind of a received packet.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Input, Rtc};

/// A str0m peer (RTP mode) that has offered one audio and one video m-line.
pub struct Offering {
    pub rtc: Rtc,
    /// Non-blocking, on the `ip` given to [`offering`] (any port).
    pub sock: UdpSocket,
    /// The socket's address, also the peer's host candidate.
    pub addr: SocketAddr,
    pub mids: Vec<(Mid, MediaKind)>,
    /// The offer's SDP text.
    pub offer: String,
    pub pending: SdpPendingOffer,
}

/// A peer on a new UDP socket on `ip`, with its offer in direction `dir`.
pub fn offering(ip: IpAddr, dir: Direction) -> Offering {
    let sock = UdpSocket::bind((ip, 0)).expect("udp socket");
    sock.set_nonblocking(true).expect("nonblocking");
    let addr = sock.local_addr().expect("local addr");
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    let mids = [MediaKind::Audio, MediaKind::Video]
        .map(|k| (api.add_media(k, dir, None, None, None), k))
        .to_vec();
    let (offer, pending) = api.apply().expect("an offer");
    Offering {
        rtc,
        sock,
        addr,
        mids,
        offer: offer.to_sdp_string(),
        pending,
    }
}

/// The kind of the m-line (among `mids`) whose stream received `ssrc`;
/// audio when it is none of them.
pub fn kind_of(rtc: &mut Rtc, mids: &[(Mid, MediaKind)], ssrc: Ssrc) -> MediaKind {
    let mid = rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
    mids.iter()
        .find(|(m, _)| Some(*m) == mid)
        .map_or(MediaKind::Audio, |(_, k)| *k)
}

/// Feed `rtc` the next datagram waiting on `sock` (bound at `addr`); false
/// when none is waiting. The caller drains `rtc` after each.
pub fn recv_one(rtc: &mut Rtc, sock: &UdpSocket, addr: SocketAddr) -> bool {
    let mut buf = [0u8; 2000];
    let Ok((n, src)) = sock.recv_from(&mut buf) else {
        return false;
    };
    if let Ok(r) = Receive::new(Protocol::Udp, src, addr, &buf[..n]) {
        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
    }
    true
}
