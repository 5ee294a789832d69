//! Faults on the test network: loss, jitter, capped links, NAT rebinding and
//! raw datagrams (the hostile, faults and soak tests).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{server_addr, Client, TestNet};

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

impl TestNet {
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
}

impl Client {
    /// The address on the wire: after NAT rebinding, the new one.
    pub fn wire_addr(&self) -> SocketAddr {
        self.nat.unwrap_or(self.addr)
    }
}

impl TestNet {
    /// A datagram from client `i`: NAT rewriting, uplink loss and jitter.
    pub(super) fn push_from_client(
        &mut self,
        i: usize,
        src: SocketAddr,
        dst: SocketAddr,
        b: Vec<u8>,
    ) {
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
