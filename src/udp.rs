//! DRIVER: the one UDP socket with batched I/O (quinn-udp): `recvmmsg` (and
//! GRO) on the way in, UDP GSO for runs of equal-size datagrams to one
//! destination on the way out, and the destination IP of every received
//! datagram (IP_PKTINFO), so a wildcard bind still tells which local address
//! was hit.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit as UdpTransmit, UdpSockRef, UdpSocketState};

/// Requested kernel socket buffer size, each way.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Size of one receive buffer: a GRO batch of full-size datagrams fits.
const RECV_BUF: usize = 64 * 1024;
/// A GSO send carries at most this many bytes (the kernel's limit is 64 KiB).
const GSO_MAX_BYTES: usize = 60 * 1024;

/// Counters of the socket layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpStats {
    /// Datagrams dropped because a send failed (WouldBlock, ENOBUFS, EMSGSIZE,
    /// ECONNREFUSED...). Never fatal.
    pub send_errors: u64,
    /// Receive errors other than WouldBlock (ICMP-induced and the like). Never fatal.
    pub recv_errors: u64,
    /// `sendmsg` calls made.
    pub send_calls: u64,
    /// Datagrams sent (a GSO call sends several).
    pub datagrams_sent: u64,
}

/// The socket, its quinn-udp state and reusable buffers.
pub struct BatchSocket {
    socket: mio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// Datagrams waiting for [`BatchSocket::send_queued`], in the core's order.
    queue: Vec<str0m::net::Transmit>,
    /// Scratch for one GSO send.
    gso: Vec<u8>,
    /// Scratch: the queue's send order, (destination, index).
    order: Vec<(SocketAddr, u32)>,
    /// Counters.
    pub stats: UdpStats,
}

impl BatchSocket {
    /// Wrap a bound, non-blocking socket.
    pub fn new(socket: mio::net::UdpSocket) -> io::Result<BatchSocket> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // Large kernel buffers absorb bursts (a keyframe fanned out to many
        // viewers); the kernel caps them at net.core.{r,w}mem_max.
        for (what, r) in [
            (
                "receive",
                state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER),
            ),
            (
                "send",
                state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER),
            ),
        ] {
            if let Err(e) = r {
                log::warn!("cannot set the UDP {what} buffer: {e}");
            }
        }
        let local = socket.local_addr()?;
        Ok(BatchSocket {
            socket,
            state,
            local,
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            metas: vec![RecvMeta::default(); RECV_BATCH],
            queue: Vec::with_capacity(1024),
            gso: Vec::with_capacity(GSO_MAX_BYTES),
            order: Vec::with_capacity(1024),
            stats: UdpStats::default(),
        })
    }

    /// The socket, for registration with mio.
    pub fn socket_mut(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// One `recvmmsg` batch: calls `f(source, destination, datagram)` for each
    /// datagram (GRO batches are split). Returns how many arrived; 0 means
    /// WouldBlock (nothing more to read now).
    pub fn recv_batch(&mut self, mut f: impl FnMut(SocketAddr, SocketAddr, &[u8])) -> usize {
        let n = {
            let mut it = self.bufs.iter_mut();
            // An array, not a Vec: no allocation per receive.
            let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(it.next().expect("RECV_BATCH buffers")));
            match self
                .state
                .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.metas)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
                Err(e) => {
                    self.stats.recv_errors += 1;
                    log::debug!("recv error: {e}");
                    // Interrupted, ICMP-induced errors: try again on the next call.
                    return usize::from(e.kind() != io::ErrorKind::Interrupted);
                }
            }
        };
        let mut count = 0;
        for (meta, buf) in self.metas[..n].iter().zip(&self.bufs) {
            let dst = match meta.dst_ip {
                Some(ip) => SocketAddr::new(ip, self.local.port()),
                None => self.local,
            };
            let stride = meta.stride.max(1);
            for seg in buf[..meta.len].chunks(stride) {
                f(meta.addr, dst, seg);
                count += 1;
            }
        }
        count.max(1)
    }

    /// Queue a datagram for the next [`BatchSocket::send_queued`].
    pub fn queue(&mut self, t: str0m::net::Transmit) {
        self.queue.push(t);
    }

    /// Datagrams queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Send everything queued: runs of equal-size datagrams to one destination
    /// go out as one GSO `sendmsg`, the rest one by one. Order per destination
    /// is kept. A failed send drops its datagrams and counts them.
    pub fn send_queued(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        // Sort (destination, index) pairs: the index keeps each destination's
        // datagrams in the core's order, and an unstable sort of a reused
        // vector allocates nothing (a stable sort of the queue would, per turn).
        self.order.clear();
        self.order.extend(
            self.queue
                .iter()
                .enumerate()
                .map(|(k, t)| (t.destination, k as u32)),
        );
        self.order.sort_unstable();
        let max_segments = self.state.max_gso_segments().max(1);
        let len =
            |q: &[str0m::net::Transmit], o: &(SocketAddr, u32)| q[o.1 as usize].contents.len();
        let mut i = 0;
        while i < self.order.len() {
            let dest = self.order[i].0;
            let size = len(&self.queue, &self.order[i]);
            // A GSO run: same destination, every segment `size` bytes except
            // possibly the last, which may be shorter.
            let mut j = i + 1;
            let mut bytes = size;
            while j < self.order.len()
                && j - i < max_segments
                && self.order[j].0 == dest
                && bytes + len(&self.queue, &self.order[j]) <= GSO_MAX_BYTES
                && len(&self.queue, &self.order[j - 1]) == size
                && len(&self.queue, &self.order[j]) <= size
            {
                bytes += len(&self.queue, &self.order[j]);
                j += 1;
            }
            let result = if j - i == 1 {
                self.send_one(dest, self.order[i].1 as usize, None)
            } else {
                self.gso.clear();
                for o in &self.order[i..j] {
                    self.gso
                        .extend_from_slice(&self.queue[o.1 as usize].contents);
                }
                let t = UdpTransmit {
                    destination: dest,
                    ecn: None,
                    contents: &self.gso,
                    segment_size: Some(size),
                    src_ip: None,
                };
                self.state.try_send(UdpSockRef::from(&self.socket), &t)
            };
            self.stats.send_calls += 1;
            match result {
                Ok(()) => self.stats.datagrams_sent += (j - i) as u64,
                Err(e) => {
                    self.stats.send_errors += (j - i) as u64;
                    log::debug!("send to {dest} failed: {e}");
                }
            }
            i = j;
        }
        self.queue.clear();
    }

    fn send_one(&self, dest: SocketAddr, i: usize, segment_size: Option<usize>) -> io::Result<()> {
        let t = UdpTransmit {
            destination: dest,
            ecn: None,
            contents: &self.queue[i].contents,
            segment_size,
            src_ip: None,
        };
        self.state.try_send(UdpSockRef::from(&self.socket), &t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn transmit(to: SocketAddr, from: SocketAddr, n: u8, len: usize) -> str0m::net::Transmit {
        str0m::net::Transmit {
            proto: str0m::net::Protocol::Udp,
            source: from,
            destination: to,
            contents: vec![n; len].into(),
        }
    }

    #[test]
    fn gso_runs_keep_order_and_batch_sends() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let mut s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let me = s.local_addr();
        // Interleaved as a fan-out produces them: 10 packets to each of a and b,
        // the last to a shorter.
        for n in 0..10u8 {
            s.queue(transmit(aa, me, n, if n == 9 { 300 } else { 1200 }));
            s.queue(transmit(ba, me, n, 1200));
        }
        s.queue(transmit(aa, me, 99, 1200)); // after a short one: a new run
        s.send_queued();
        assert_eq!(s.stats.datagrams_sent, 21);
        if s.state.max_gso_segments() > 1 {
            assert_eq!(s.stats.send_calls, 3, "two GSO runs to a, one to b");
        }
        for (sock, expect) in [
            (&a, (0..10).chain([99]).collect::<Vec<u8>>()),
            (&b, (0..10).collect()),
        ] {
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = vec![];
            let mut buf = [0u8; 2000];
            let t0 = Instant::now();
            while got.len() < expect.len() && t0.elapsed() < Duration::from_secs(2) {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(from, me);
                assert!(buf[..n].iter().all(|x| *x == buf[0]));
                got.push(buf[0]);
            }
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn receive_reports_the_destination_address() {
        let std_sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let port = std_sock.local_addr().unwrap().port();
        let mut s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        let mut seen = vec![];
        let t0 = Instant::now();
        while seen.is_empty() && t0.elapsed() < Duration::from_secs(2) {
            s.recv_batch(|src, dst, d| seen.push((src, dst, d.to_vec())));
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, c.local_addr().unwrap());
        assert_eq!(
            seen[0].1,
            SocketAddr::from(([127, 0, 0, 1], port)),
            "not the wildcard"
        );
        assert_eq!(seen[0].2, b"hello");
    }
}
