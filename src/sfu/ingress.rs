//! Ingress: one datagram into the `Rtc` of the session it belongs to.
//!
//! Routing is `demux.rs`'s (ufrag for STUN, validated address otherwise);
//! here the first check from a new address must pass integrity before the
//! address routes DTLS and SRTP, and a verified check from a new address of a
//! connected session is taken as a NAT rebinding, unless it is a replay.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::demux::{self, classify, Class};
use super::session::guarded;
use super::{DropReason, Sfu, Why};

impl Sfu {
    /// The body of [`Sfu::handle_receive`], up to the drain of the session's `Rtc`.
    pub(super) fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        self.out.stats.datagrams_in += 1;
        self.out.stats.bytes_in += buf.len() as u64;
        let class = classify(buf);
        // An upstream on a local address of its own takes all that its
        // origin sends there (see `upstream.rs`).
        let (id, known_addr) = match self.upstream_route(source, destination) {
            Some(Ok(id)) => (id, true),
            Some(Err(())) => return self.out.stats.drop(DropReason::UnknownSource),
            None => match self.demux.route(class, buf, &source) {
                Ok(id) => (id, self.demux.by_addr(&source) == Some(id)),
                Err(why) => return self.out.stats.drop(why),
            },
        };
        let destination = self.local_address(destination);
        let shimmed = match (class, self.sessions.get_mut(&id)) {
            (Class::Stun, Some(s)) => {
                // A verified check from a new address of a connected session
                // is a NAT rebinding, unless its transaction id was seen
                // before (a replay).
                let replayed = demux::stun_txid(buf).is_some_and(|t| s.recent_txids.seen(t));
                let rebind = (!replayed && !known_addr && s.connected).then(|| {
                    s.rebinds = s.rebinds.saturating_add(1);
                    demux::rebind_priority(s.rebinds)
                });
                demux::shim(buf, rebind, || {
                    s.rtc.direct_api().local_ice_credentials().pass
                })
            }
            _ => None,
        };
        let buf = shimmed.as_deref().unwrap_or(buf);
        let Ok(recv) = Receive::new(Protocol::Udp, source, destination, buf) else {
            return self.out.stats.drop(DropReason::RtcError);
        };
        let input = Input::Receive(now, recv);
        let Some(s) = self.sessions.get_mut(&id) else {
            return self.out.stats.drop(DropReason::UnknownSource);
        };
        if class == Class::Stun && !known_addr {
            // First check from this address: integrity must pass before the
            // address may route DTLS and SRTP to this session.
            match guarded(&mut s.rtc, |rtc| rtc.accepts(&input)) {
                Ok(true) => {}
                Ok(false) => return self.out.stats.drop(DropReason::StunRejected),
                Err(_) => {
                    self.out.stats.drop(DropReason::StunRejected);
                    return self.out.doom(s, Why::Panic("accepts"));
                }
            }
            self.demux.add_addr(source, id);
        }
        if !s.connected {
            s.handshake.remote = Some(source);
        }
        match guarded(&mut s.rtc, |rtc| rtc.handle_input(input)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("session {id:?}: input rejected: {e}");
                self.out.stats.drop(DropReason::RtcError);
                if !s.connected && matches!(e, str0m::RtcError::Dtls(_)) {
                    // A refused handshake does not recover (dimpl reports it
                    // once, then only resends its flight): end it now, with
                    // the reason, rather than at the connect timeout.
                    s.handshake.error.get_or_insert_with(|| e.to_string());
                    self.out.doom(s, Why::Gone);
                }
            }
            Err(_) => self.out.doom(s, Why::Panic("handle_input")),
        }
        self.drain_session(id);
    }

    /// The configured candidate a datagram to `dst` arrived on.
    fn local_address(&self, dst: SocketAddr) -> SocketAddr {
        let c = &self.config.candidates;
        if c.contains(&dst) {
            return dst;
        }
        if let Some(i) = self.upstream_addr_index(dst) {
            return self.config.upstream_addrs[i];
        }
        c.iter()
            .find(|a| a.is_ipv4() == dst.is_ipv4() && a.port() == dst.port())
            .or_else(|| c.iter().find(|a| a.is_ipv4() == dst.is_ipv4()))
            .copied()
            .unwrap_or(c[0])
    }
}
