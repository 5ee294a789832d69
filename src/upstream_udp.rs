//! DRIVER: the UDP sockets of an edge's upstreams (cluster mode). A peer
//! connection is one 5-tuple, so two upstreams from this node to the same
//! origin need two local addresses (`SfuConfig::upstream_addrs`): each
//! upstream gets a socket of its own, on an ephemeral port of the media
//! socket's IP, advertised with the node's media IP.
//!
//! Upstream traffic is one copy of a room per edge (hundreds of packets a
//! second), so these sockets use plain `recv_from`/`send_to`; the fan-out
//! stays on the batched socket of `crate::udp`.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use mio::net::UdpSocket as MioSocket;
use mio::{Interest, Registry, Token};
use str0m::net::Transmit;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// Most datagrams read from one socket per call, so one busy upstream
/// cannot hold the loop.
const READ_BUDGET: usize = 64;

/// The upstream sockets and the addresses the core knows them by.
#[derive(Debug)]
pub struct UpstreamSockets {
    /// (advertised address, socket), indexed like the core's `upstream_addrs`.
    socks: Vec<(SocketAddr, MioSocket)>,
    first_token: usize,
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
}

impl UpstreamSockets {
    /// Bind `n` sockets on `bind_ip` (ephemeral ports), advertised as
    /// `advertised_ip` with the same ports.
    pub fn bind(bind_ip: IpAddr, advertised_ip: IpAddr, n: usize) -> io::Result<UpstreamSockets> {
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let s = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
            s.set_nonblocking(true)?;
            let port = s.local_addr()?.port();
            socks.push((SocketAddr::new(advertised_ip, port), MioSocket::from_std(s)));
        }
        Ok(UpstreamSockets {
            socks,
            first_token: 0,
            buf: Box::new([0; MAX_DATAGRAM]),
            send_errors: 0,
        })
    }

    /// The addresses for `SfuConfig::upstream_addrs`.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.socks.iter().map(|(a, _)| *a).collect()
    }

    /// Register every socket for reading, with tokens from `first_token` on.
    pub fn register(&mut self, registry: &Registry, first_token: usize) -> io::Result<()> {
        self.first_token = first_token;
        for (i, (_, s)) in self.socks.iter_mut().enumerate() {
            registry.register(s, Token(first_token + i), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Whether `token` is one of these sockets'.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token && token.0 < self.first_token + self.socks.len()
    }

    /// Read what waits on the socket of `token` (at most [`READ_BUDGET`]
    /// datagrams; edge-triggered: returns true if more may wait), handing
    /// each to `f(source, destination, bytes)` with its advertised address
    /// as the destination.
    pub fn read(&mut self, token: Token, mut f: impl FnMut(SocketAddr, SocketAddr, &[u8])) -> bool {
        let Some((addr, s)) = self.socks.get(token.0 - self.first_token) else {
            return false;
        };
        for _ in 0..READ_BUDGET {
            match s.recv_from(&mut self.buf[..]) {
                Ok((n, src)) => f(src, *addr, &self.buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP errors surface here; the upstream's own timeouts deal with them.
                Err(_) => {}
            }
        }
        true
    }

    /// Send `t` if its source is one of these sockets; otherwise give it back.
    pub fn send(&mut self, t: Transmit) -> Option<Transmit> {
        let Some((_, s)) = self.socks.iter().find(|(a, _)| *a == t.source) else {
            return Some(t);
        };
        if s.send_to(&t.contents, t.destination).is_err() {
            self.send_errors += 1;
        }
        None
    }

    /// The number of sockets.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }
}
