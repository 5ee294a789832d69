//! A str0m peer's real UDP socket: one datagram in, non-blocking.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::{Input, Rtc};

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
