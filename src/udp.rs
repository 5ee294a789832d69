//! DRIVER: the one UDP socket with batched I/O: `recvmmsg` (and GRO) on the
//! way in through quinn-udp, with the destination IP of every received
//! datagram (IP_PKTINFO), so a wildcard bind still tells which local address
//! was hit; on the way out, one `sendmmsg` per flush of the core's output
//! (per 64 messages) whose messages are single datagrams or UDP GSO runs
//! (equal-size datagrams to one destination). Sends leave the source address
//! to the kernel's route choice: an advertised `--public-ips` address need not
//! be local.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

/// Requested kernel socket buffer size, each way.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Size of one receive buffer: a GRO batch of full-size datagrams fits.
const RECV_BUF: usize = 64 * 1024;
/// A GSO send carries at most this many bytes (the kernel's limit is 64 KiB).
const GSO_MAX_BYTES: usize = 60 * 1024;
/// Messages (datagrams or GSO runs) per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams per `sendmmsg` call, over all its messages (one iovec each).
const SEND_IOV: usize = 512;
/// Datagrams kept waiting while the socket's send buffer is full; beyond
/// this, new ones are dropped and counted.
const MAX_BACKLOG: usize = 16 * 1024;

/// Counters of the socket layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpStats {
    /// Datagrams dropped because their send failed (ENOBUFS, EMSGSIZE...),
    /// or because the backlog behind a full send buffer was full. Never fatal.
    pub send_errors: u64,
    /// Receive errors other than WouldBlock (ICMP-induced and the like). Never fatal.
    pub recv_errors: u64,
    /// `sendmmsg` calls made.
    pub send_calls: u64,
    /// Datagrams sent (a GSO call sends several).
    pub datagrams_sent: u64,
    /// Messages sent: single datagrams or GSO runs (one per destination and
    /// flush). Their cost is per message, so it shrinks per datagram as
    /// batches grow (the overload cost model, `src/sfu/overload.rs`).
    pub messages_sent: u64,
    /// Time spent in `sendmmsg` calls.
    pub send_time: std::time::Duration,
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
    /// Scratch: the queue's send order, (destination, index).
    order: Vec<(SocketAddr, u32)>,
    /// Scratch: which queued datagrams wait for writability.
    keep: Vec<bool>,
    /// Most datagrams per GSO message (1: no GSO); lowered if the kernel
    /// refuses GSO.
    gso_segments: usize,
    /// The last send hit a full send buffer: the rest waits for writability.
    blocked: bool,
    /// When the kernel received the first (oldest) datagram of the last
    /// batch, as a Unix time (`SO_TIMESTAMPNS`, which quinn-udp turns on);
    /// `None` where the platform gives none.
    oldest_received: Option<std::time::Duration>,
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
        // The kernel caps SO_RCVBUF at net.core.rmem_max (208 KiB by default:
        // 170 full-size datagrams, 0.3 s of one 550 packets/s publisher).
        // Root may go past it (SO_RCVBUFFORCE); anyone else keeps the cap.
        let granted = state
            .recv_buffer_size(UdpSockRef::from(&socket))
            .unwrap_or(0);
        if granted < 2 * SOCKET_BUFFER && sys::force_recv_buffer(socket.as_fd(), SOCKET_BUFFER) {
            log::debug!("UDP receive buffer forced past net.core.rmem_max");
        }
        let local = socket.local_addr()?;
        let gso_segments = state.max_gso_segments().clamp(1, u16::MAX as usize);
        Ok(BatchSocket {
            socket,
            state,
            local,
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            metas: vec![RecvMeta::default(); RECV_BATCH],
            queue: Vec::with_capacity(1024),
            order: Vec::with_capacity(1024),
            keep: Vec::with_capacity(1024),
            gso_segments,
            blocked: false,
            oldest_received: None,
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

    /// The kernel's receive buffer size (`SO_RCVBUF`, as the kernel reports
    /// it: twice what was granted), if it can be read.
    pub fn recv_buffer_size(&self) -> Option<usize> {
        self.state
            .recv_buffer_size(UdpSockRef::from(&self.socket))
            .ok()
    }

    /// Datagrams the kernel dropped at this socket since it was opened
    /// (receive buffer full), from `SO_MEMINFO`; `None` where unsupported.
    pub fn recv_drops(&self) -> Option<u64> {
        sys::socket_drops(self.socket.as_fd())
    }

    /// One `recvmmsg` batch: calls `f(source, destination, datagram)` for each
    /// datagram (GRO batches are split). Returns how many arrived; 0 means
    /// WouldBlock (nothing more to read now).
    pub fn recv_batch(&mut self, mut f: impl FnMut(SocketAddr, SocketAddr, &[u8])) -> usize {
        self.oldest_received = None;
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
        self.oldest_received = self.metas[..n].first().and_then(|m| m.timestamp);
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

    /// How long the oldest datagram of the last [`BatchSocket::recv_batch`]
    /// waited in the socket before it was read (the kernel's receive time
    /// against the system clock now); `None` without timestamps. The
    /// socket's queue is in arrival order, so this is how far the reader is
    /// behind its ingress.
    pub fn ingress_delay(&self) -> Option<std::time::Duration> {
        let received = self.oldest_received?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        // A clock stepped back reads as no delay.
        Some(now.saturating_sub(received))
    }

    /// Queue a datagram for the next [`BatchSocket::send_queued`]. Dropped
    /// (and counted) if the backlog behind a full send buffer is full.
    pub fn queue(&mut self, t: str0m::net::Transmit) {
        if self.queue.len() >= MAX_BACKLOG {
            self.stats.send_errors += 1;
            return;
        }
        self.queue.push(t);
    }

    /// Datagrams queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True while datagrams wait for the socket to become writable: the
    /// loop registers WRITABLE interest and calls [`BatchSocket::writable`].
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// The socket reported writability: the next [`BatchSocket::send_queued`] sends again.
    pub fn writable(&mut self) {
        self.blocked = false;
    }

    /// Send everything queued with `sendmmsg`: each message is a run of
    /// equal-size datagrams to one destination (one GSO message) or a single
    /// datagram. Order per destination is kept. A message the kernel refuses
    /// is dropped and its datagrams counted; on a full send buffer (EAGAIN)
    /// the unsent rest stays queued until [`BatchSocket::writable`].
    pub fn send_queued(&mut self) {
        if self.queue.is_empty() || self.blocked {
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
        let fd = self.socket.as_fd();
        let (queue, order) = (&self.queue, &self.order);
        let len = |i: usize| queue[order[i].1 as usize].contents.len();
        let mut pos = 0;
        while pos < order.len() {
            // Plan one call: up to SEND_BATCH messages and SEND_IOV datagrams.
            let mut iov = [IoSlice::new(&[]); SEND_IOV];
            let mut runs = [(0usize, 0usize, 0u16); SEND_BATCH]; // (start, end, segment)
            let (mut nruns, mut niov, mut i) = (0, 0, pos);
            while i < order.len() && nruns < SEND_BATCH && niov < SEND_IOV {
                // A GSO run: same destination, every segment `size` bytes
                // except possibly the last, which may be shorter.
                let (dest, size) = (order[i].0, len(i));
                let mut j = i + 1;
                let mut bytes = size;
                while j < order.len()
                    && j - i < self.gso_segments
                    && niov + (j - i) < SEND_IOV
                    && order[j].0 == dest
                    && bytes + len(j) <= GSO_MAX_BYTES
                    && len(j - 1) == size
                    && len(j) <= size
                {
                    bytes += len(j);
                    j += 1;
                }
                for (slot, o) in iov[niov..].iter_mut().zip(&order[i..j]) {
                    *slot = IoSlice::new(&queue[o.1 as usize].contents);
                }
                let segment = if j - i > 1 { size as u16 } else { 0 };
                runs[nruns] = (niov, niov + j - i, segment);
                nruns += 1;
                niov += j - i;
                i = j;
            }
            let mut msgs = [Msg::default(); SEND_BATCH];
            for (m, &(a, b, segment)) in msgs.iter_mut().zip(&runs[..nruns]) {
                *m = Msg {
                    dest: order[pos + a].0,
                    segment,
                    iov: &iov[a..b],
                };
            }
            self.stats.send_calls += 1;
            let t = std::time::Instant::now();
            let r = sys::sendmmsg(fd, &msgs[..nruns]);
            self.stats.send_time += t.elapsed();
            match r {
                Ok(k) => {
                    let sent = runs[k.min(nruns) - 1].1;
                    self.stats.messages_sent += k.min(nruns) as u64;
                    self.stats.datagrams_sent += sent as u64;
                    pos += sent;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(e) => {
                    // The first message failed.
                    let (a, b, segment) = runs[0];
                    if segment != 0 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                        // Some drivers refuse GSO only when it is used.
                        log::info!("GSO send failed ({e}); sending datagrams one by one");
                        self.gso_segments = 1;
                        continue;
                    }
                    log::debug!("send to {} failed: {e}", order[pos].0);
                    self.stats.send_errors += (b - a) as u64;
                    pos += b - a;
                }
            }
        }
        self.keep_unsent(pos);
    }

    /// Drop the datagrams of `order[..pos]` (sent or failed) from the queue;
    /// the rest stays, in the core's order.
    fn keep_unsent(&mut self, pos: usize) {
        if pos >= self.order.len() {
            self.queue.clear();
            return;
        }
        self.keep.clear();
        self.keep.resize(self.queue.len(), false);
        for o in &self.order[pos..] {
            self.keep[o.1 as usize] = true;
        }
        let mut k = 0;
        let keep = &self.keep;
        self.queue.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
}

/// One `sendmmsg` message: a datagram, or (`segment` > 0) a GSO run of
/// datagrams of `segment` bytes, the last possibly shorter.
#[derive(Clone, Copy)]
struct Msg<'a> {
    dest: SocketAddr,
    segment: u16,
    iov: &'a [IoSlice<'a>],
}

impl Default for Msg<'_> {
    fn default() -> Self {
        Msg {
            dest: SocketAddr::from(([0, 0, 0, 0], 0)),
            segment: 0,
            iov: &[],
        }
    }
}

/// The only `unsafe` code of the crate: `sendmmsg`, `SO_RCVBUFFORCE` and
/// `getsockopt(SO_MEMINFO)`, behind safe functions.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use super::{Msg, SEND_BATCH};

    /// A socket address as the kernel takes it.
    #[repr(C)]
    union RawAddr {
        v4: libc::sockaddr_in,
        v6: libc::sockaddr_in6,
    }

    /// `sendmmsg` of up to [`SEND_BATCH`] messages (more are ignored): how many
    /// the kernel took (at least one), or the error of the first (the kernel
    /// reports an error only when no message was sent).
    pub(super) fn sendmmsg(fd: BorrowedFd<'_>, msgs: &[Msg<'_>]) -> io::Result<usize> {
        let n = msgs.len().min(SEND_BATCH);
        if n == 0 {
            return Ok(0);
        }
        // Room for one UDP_SEGMENT control message, aligned like a cmsghdr.
        const CTRL: usize = 32;
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut names: [RawAddr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut ctrl = [[0u64; CTRL / 8]; SEND_BATCH];
        for (((m, h), name), c) in msgs[..n]
            .iter()
            .zip(&mut hdrs)
            .zip(&mut names)
            .zip(&mut ctrl)
        {
            let namelen = match m.dest {
                SocketAddr::V4(a) => {
                    name.v4 = libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: a.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from_ne_bytes(a.ip().octets()),
                        },
                        sin_zero: [0; 8],
                    };
                    std::mem::size_of::<libc::sockaddr_in>()
                }
                SocketAddr::V6(a) => {
                    name.v6 = libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: a.port().to_be(),
                        sin6_flowinfo: a.flowinfo(),
                        sin6_addr: libc::in6_addr {
                            s6_addr: a.ip().octets(),
                        },
                        sin6_scope_id: a.scope_id(),
                    };
                    std::mem::size_of::<libc::sockaddr_in6>()
                }
            };
            let hdr = &mut h.msg_hdr;
            hdr.msg_name = (name as *mut RawAddr).cast();
            hdr.msg_namelen = namelen as libc::socklen_t;
            // IoSlice is ABI-compatible with iovec on Unix.
            hdr.msg_iov = m.iov.as_ptr() as *mut libc::iovec;
            hdr.msg_iovlen = m.iov.len() as _;
            if m.segment > 0 {
                hdr.msg_control = c.as_mut_ptr().cast();
                // SAFETY: CMSG_* only compute sizes and pointers inside the
                // control buffer, which holds CMSG_SPACE(2) <= CTRL bytes.
                unsafe {
                    hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                    let cm = libc::CMSG_FIRSTHDR(hdr);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), m.segment);
                }
            }
        }
        // SAFETY: every header points into `names`, `ctrl` and the borrowed
        // iovecs, all alive and unmoved for the duration of the call.
        let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        match r {
            r if r < 0 => Err(io::Error::last_os_error()),
            // Not expected for n > 0; waiting for writability is the safe reading.
            0 => Err(io::ErrorKind::WouldBlock.into()),
            r => Ok(r as usize),
        }
    }

    /// `SO_RCVBUFFORCE`: a receive buffer of `bytes` regardless of
    /// net.core.rmem_max; needs CAP_NET_ADMIN. True if the kernel took it.
    pub(super) fn force_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) -> bool {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: the option value is one c_int, passed with its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }

    /// The socket's drop counter (`SK_MEMINFO_DROPS` of `SO_MEMINFO`).
    pub(super) fn socket_drops(fd: BorrowedFd<'_>) -> Option<u64> {
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: `info` is a writable buffer of `len` bytes that the kernel
        // fills (and `len` is updated to what it wrote).
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let need = (libc::SK_MEMINFO_DROPS as usize + 1) * std::mem::size_of::<u32>();
        (r == 0 && len as usize >= need).then(|| u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
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
        assert_eq!(s.stats.send_calls, 1, "one sendmmsg");
        // Three GSO runs (a's ten, b's ten, a's last), or one message each.
        let runs = if s.gso_segments > 1 { 3 } else { 21 };
        assert_eq!(s.stats.messages_sent, runs);
        assert!(s.stats.send_time > Duration::ZERO);
        assert!(s.queue.is_empty());
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
    fn receive_drops_and_buffer_are_reported() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        assert!(s.recv_buffer_size().unwrap() > 0);
        assert_eq!(s.recv_drops(), Some(0));
        // Shrink the buffer to the kernel's minimum and overflow it unread.
        s.state
            .set_recv_buffer_size(UdpSockRef::from(&s.socket), 1)
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..64 {
            tx.send_to(&[7u8; 1200], s.local_addr()).unwrap();
        }
        assert!(s.recv_drops().unwrap() > 0, "{:?}", s.recv_drops());
    }

    fn recv_all(sock: &std::net::UdpSocket, n: usize) -> Vec<u8> {
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 2000];
        while got.len() < n {
            let (len, _) = sock.recv_from(&mut buf).unwrap();
            got.push(buf[..len][0]);
        }
        got
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_rest_sent() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let mut s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = s.local_addr();
        // An IPv6 destination on an IPv4 socket: EAFNOSUPPORT for that message
        // only (sorted last: the kernel takes the first two, then refuses it).
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        s.queue(transmit(a.local_addr().unwrap(), me, 1, 100));
        s.queue(transmit(v6, me, 2, 100));
        s.queue(transmit(v6, me, 3, 100));
        s.queue(transmit(b.local_addr().unwrap(), me, 4, 100));
        s.send_queued();
        assert_eq!(s.stats.datagrams_sent, 2);
        assert_eq!(s.stats.send_errors, 2, "one GSO message of two datagrams");
        assert!(!s.blocked());
        assert!(s.queue.is_empty());
        assert_eq!(recv_all(&a, 1), vec![1]);
        assert_eq!(recv_all(&b, 1), vec![4]);
    }

    #[test]
    fn unsent_datagrams_stay_queued_in_order() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let me = s.local_addr();
        for n in 0..4u8 {
            s.queue(transmit(b, me, n, 10));
            s.queue(transmit(a, me, 10 + n, 10));
        }
        s.order = s
            .queue
            .iter()
            .enumerate()
            .map(|(k, t)| (t.destination, k as u32))
            .collect();
        s.order.sort_unstable();
        // As after EAGAIN with a's four and b's first datagram sent.
        s.keep_unsent(5);
        let left: Vec<u8> = s.queue.iter().map(|t| t.contents[0]).collect();
        assert_eq!(left, vec![1, 2, 3]);
        s.keep_unsent(s.order.len());
        assert!(s.queue.is_empty());
    }

    #[test]
    fn the_backlog_is_bounded() {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut s = BatchSocket::new(mio::net::UdpSocket::from_std(std_sock)).unwrap();
        let me = s.local_addr();
        for _ in 0..MAX_BACKLOG + 3 {
            s.queue(transmit(me, me, 0, 1));
        }
        assert_eq!(s.queued(), MAX_BACKLOG);
        assert_eq!(s.stats.send_errors, 3);
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
