//! The TCP front of the HTTP server: connection timeouts and a connection cap
//! that tiny_http 0.12 cannot provide (it has no read timeout and never
//! exposes its sockets; `docs/reliability.md` §4).
//!
//! wisp binds the public TCP listener itself; tiny_http listens on a private
//! Unix socket in the Linux abstract namespace (nothing on the filesystem).
//! One thread (a non-blocking mio `Poll`) accepts TCP connections, opens a
//! Unix stream to tiny_http for each once the client has sent its first byte,
//! and copies bytes both ways through bounded buffers ([`FrontConfig::buffer`]
//! per direction; a side is not read while its buffer is full). TLS is
//! unaffected: tiny_http runs it on whatever stream it accepts, and the front
//! only sees ciphertext.
//!
//! Rules, checked every [`TICK`]:
//! - **Unanswered**: bytes from the client (or the connection itself, before
//!   any answer) not followed by any byte from the server for
//!   [`FrontConfig::request_timeout`] → close. tiny_http and wisp answer only
//!   once a request is complete and the core answers within seconds, so this
//!   cuts slow headers, slow bodies, slow TLS handshakes and silent
//!   connections alike, while a server→client stream (the WHEP event stream)
//!   is never cut: its client sends nothing after the request.
//! - **Write stall**: response bytes waiting for the client and the client
//!   accepting none of them for `request_timeout` → close (slow reader).
//! - **Idle**: nothing in either direction for [`FrontConfig::idle_timeout`]
//!   (keep-alive) → close; `request_timeout` once the server has finished
//!   its side.
//! - **Cap**: at most [`FrontConfig::max_connections`] open; above it a new
//!   connection is closed at once (plain HTTP: after a minimal 503).
//!
//! Half-close is forwarded once the buffer toward that side has drained. An
//! I/O error closes its own connection only; accept errors are retried.
//!
//! tiny_http sees a Unix peer: `Request::remote_addr()` is `None`, so the
//! client address is logged here (debug level, at accept).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::metrics::{CloseReason, HttpCounters};

/// How long client bytes may go unanswered (and a pending response unread).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may be silent in both directions.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most TCP connections open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Bytes buffered per connection and direction.
pub const BUFFER: usize = 64 * 1024;
/// How often the timers are checked.
pub const TICK: Duration = Duration::from_millis(250);

/// Sent to a plain-HTTP client refused over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Copy rounds for one connection before the others get a turn.
const ROUNDS: usize = 16;

const LISTENER: Token = Token(usize::MAX);

/// Limits of the front.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`BUFFER`].
    pub buffer: usize,
    /// Plain HTTP (not TLS): connections over the cap get a 503 before closing.
    pub plain_http: bool,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            request_timeout: REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            buffer: BUFFER,
            plain_http: true,
        }
    }
}

/// The bound public listener and the private address tiny_http listens on.
pub struct Front {
    listener: TcpListener,
    inner: UnixAddr,
    cfg: FrontConfig,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("listener", &self.listener.local_addr().ok())
            .field("inner", &self.inner)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Front {
    /// Bind the public TCP listener on `addr` and a private Unix listener for
    /// tiny_http (abstract namespace, named after the pid and a random suffix).
    /// Hand the returned `UnixListener` to `tiny_http::Server::from_listener`.
    pub fn bind(addr: SocketAddr, cfg: FrontConfig) -> io::Result<(Front, UnixListener)> {
        let listener = TcpListener::bind(addr)?;
        let mut last = None;
        for _ in 0..8 {
            let name = format!("wisp-http-{}-{:016x}", std::process::id(), random_u64());
            let inner = UnixAddr::from_abstract_name(name.as_bytes())?;
            match UnixListener::bind_addr(&inner) {
                Ok(unix) => {
                    let front = Front {
                        listener,
                        inner,
                        cfg,
                    };
                    return Ok((front, unix));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free abstract socket name")))
    }

    /// The public address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Run the front on a thread of its own; `counters` gets the connection
    /// counts (`/metrics`). The thread runs for the life of the process.
    pub fn spawn(self, counters: Arc<HttpCounters>) -> io::Result<JoinHandle<()>> {
        let poll = Poll::new()?;
        thread::Builder::new()
            .name("wisp-http-front".into())
            .spawn(move || {
                let mut state = State::new(self, poll, counters);
                if let Err(e) = state.run() {
                    // Only `Poll` itself failing ends up here.
                    log::error!("HTTP front failed, exiting so a supervisor can restart wisp: {e}");
                    std::process::exit(1);
                }
            })
    }
}

/// Random bits for the socket name (uniqueness only, not secrecy).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64
}

/// A bounded byte queue: filled at `end`, drained from `start`.
struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new(cap: usize) -> Buf {
        Buf {
            data: vec![0; cap.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.data.len()
    }

    /// Read once from `r` into the free space. `Ok(None)`: nothing to read now.
    fn fill(&mut self, r: &mut impl Read) -> io::Result<Option<usize>> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match r.read(&mut self.data[self.end..]) {
            Ok(n) => {
                self.end += n;
                Ok(Some(n))
            }
            Err(e) if retry(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write once from the queued bytes to `w`. `Ok(None)`: `w` is full now.
    fn drain(&mut self, w: &mut impl Write) -> io::Result<Option<usize>> {
        match w.write(&self.data[self.start..self.end]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.start += n;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Some(n))
            }
            Err(e) if retry(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// One proxied connection.
struct Conn {
    client: TcpStream,
    peer: SocketAddr,
    /// Connected when the client sends its first byte.
    inner: Option<UnixStream>,
    /// Client → server.
    up: Buf,
    /// Server → client.
    down: Buf,
    /// The client will send nothing more.
    client_eof: bool,
    /// The server will send nothing more.
    inner_eof: bool,
    /// The server's write side has been shut down (after `up` drained).
    up_shut: bool,
    /// The client's write side has been shut down (after `down` drained).
    down_shut: bool,
    /// Since when client bytes (or the connection) wait for a server byte.
    unanswered_since: Option<Instant>,
    /// Last byte moved in either direction.
    last_activity: Instant,
    /// Last time `down` became non-empty or the client took bytes from it.
    last_down_progress: Instant,
}

/// Outcome of one round of copying.
enum Pump {
    /// Nothing more can move until the next readiness event.
    Idle,
    /// Round budget used up; bytes may still move.
    More,
    /// Close the connection.
    Close(CloseReason),
}

struct State {
    front: Front,
    poll: Poll,
    counters: Arc<HttpCounters>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections that used up their round budget.
    busy: Vec<usize>,
    /// Retry `accept` at this time after an error (e.g. out of fds).
    accept_retry: Option<Instant>,
    accept_errors: u64,
}

impl State {
    fn new(front: Front, poll: Poll, counters: Arc<HttpCounters>) -> State {
        State {
            front,
            poll,
            counters,
            conns: Vec::new(),
            free: Vec::new(),
            busy: Vec::new(),
            accept_retry: None,
            accept_errors: 0,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.front.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let timeout = if self.busy.is_empty() {
                let mut t = next_tick.saturating_duration_since(now);
                if let Some(at) = self.accept_retry {
                    t = t.min(at.saturating_duration_since(now));
                }
                t
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut accept = self.accept_retry.is_some_and(|at| Instant::now() >= at);
            let mut ready = std::mem::take(&mut self.busy);
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    accept = true;
                } else {
                    ready.push(ev.token().0 / 2);
                }
            }
            if accept {
                self.accept();
            }
            ready.sort_unstable();
            ready.dedup();
            for idx in ready {
                self.pump(idx);
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.check_timers(now);
            }
        }
    }

    /// Accept until the backlog is empty.
    fn accept(&mut self) {
        self.accept_retry = None;
        loop {
            let (mut client, peer) = match self.front.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays
                    // queued; try again shortly instead of spinning.
                    self.accept_errors += 1;
                    if self.accept_errors.is_power_of_two() {
                        warn!(
                            "HTTP accept failed ({} times so far): {e}",
                            self.accept_errors
                        );
                    }
                    self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            let open = self.conns.len() - self.free.len();
            if open >= self.front.cfg.max_connections {
                self.counters.connections.record_rejected();
                debug!("HTTP connection from {peer} refused: {open} open");
                if self.front.cfg.plain_http {
                    // Take what already arrived, so that closing does not
                    // reset the connection before the client reads the 503.
                    let _ = client.read(&mut [0u8; 1024]);
                    let _ = client.write(BUSY);
                }
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let _ = client.set_nodelay(true);
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut client,
                Token(2 * idx),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register an HTTP connection: {e}");
                self.free.push(idx);
                continue;
            }
            debug!("HTTP connection {idx} from {peer}");
            let now = Instant::now();
            let buffer = self.front.cfg.buffer;
            self.conns[idx] = Some(Conn {
                client,
                peer,
                inner: None,
                up: Buf::new(buffer),
                down: Buf::new(buffer),
                client_eof: false,
                inner_eof: false,
                up_shut: false,
                down_shut: false,
                unanswered_since: Some(now),
                last_activity: now,
                last_down_progress: now,
            });
            self.counters.connections.record_accept();
            // Bytes may already be waiting (edge-triggered: no event for them).
            self.pump(idx);
        }
    }

    fn pump(&mut self, idx: usize) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        match pump(conn, idx, &self.front.inner, &self.poll) {
            Pump::Idle => {}
            Pump::More => self.busy.push(idx),
            Pump::Close(reason) => self.close(idx, reason),
        }
    }

    fn check_timers(&mut self, now: Instant) {
        let cfg = &self.front.cfg;
        let mut expired = Vec::new();
        for (idx, conn) in self.conns.iter().enumerate() {
            let Some(c) = conn else { continue };
            let idle_limit = if c.down_shut {
                cfg.request_timeout
            } else {
                cfg.idle_timeout
            };
            let reason = if c
                .unanswered_since
                .is_some_and(|t| now.duration_since(t) > cfg.request_timeout)
            {
                Some(CloseReason::RequestTimeout)
            } else if !c.down.is_empty()
                && now.duration_since(c.last_down_progress) > cfg.request_timeout
            {
                Some(CloseReason::WriteStall)
            } else if now.duration_since(c.last_activity) > idle_limit {
                Some(CloseReason::IdleTimeout)
            } else {
                None
            };
            if let Some(r) = reason {
                expired.push((idx, r));
            }
        }
        for (idx, reason) in expired {
            self.close(idx, reason);
        }
    }

    fn close(&mut self, idx: usize, reason: CloseReason) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut c.client);
        let _ = c.client.shutdown(Shutdown::Both);
        if let Some(inner) = c.inner.as_mut() {
            let _ = registry.deregister(inner);
            let _ = inner.shutdown(Shutdown::Both);
        }
        if reason == CloseReason::Done {
            debug!("HTTP connection {idx} from {} closed", c.peer);
        } else {
            debug!(
                "HTTP connection {idx} from {} closed: {}",
                c.peer,
                reason.label()
            );
        }
        self.counters.connections.record_close(reason);
        self.free.push(idx);
    }
}

/// Move bytes both ways until nothing moves (or the round budget is used up).
fn pump(c: &mut Conn, idx: usize, inner_addr: &UnixAddr, poll: &Poll) -> Pump {
    for _ in 0..ROUNDS {
        let mut moved = false;
        let now = Instant::now();

        // Client → buffer.
        if !c.client_eof && !c.up.is_full() {
            match c.up.fill(&mut c.client) {
                Ok(Some(0)) => c.client_eof = true,
                Ok(Some(_)) => {
                    moved = true;
                    c.last_activity = now;
                    c.unanswered_since.get_or_insert(now);
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("HTTP connection {idx} from {}: read: {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        }
        // The server is reached once there is something to tell it.
        if c.inner.is_none() && !c.up.is_empty() {
            match UnixStream::connect_addr(inner_addr) {
                Ok(mut s) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = poll
                        .registry()
                        .register(&mut s, Token(2 * idx + 1), interest)
                    {
                        warn!("cannot register the inner HTTP stream: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                    c.inner = Some(s);
                }
                Err(e) => {
                    warn!("cannot reach the HTTP server (for {}): {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        }
        if let Some(inner) = c.inner.as_mut() {
            // Buffer → server.
            if !c.up.is_empty() {
                match c.up.drain(inner) {
                    Ok(Some(_)) => moved = true,
                    Ok(None) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx}: write to the server: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
            if c.client_eof && c.up.is_empty() && !c.up_shut {
                let _ = inner.shutdown(Shutdown::Write);
                c.up_shut = true;
            }
            // Server → buffer.
            if !c.inner_eof && !c.down.is_full() {
                match c.down.fill(inner) {
                    Ok(Some(0)) => c.inner_eof = true,
                    Ok(Some(_)) => {
                        moved = true;
                        c.last_activity = now;
                        c.unanswered_since = None;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx}: read from the server: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        }
        // Buffer → client.
        if !c.down.is_empty() {
            match c.down.drain(&mut c.client) {
                Ok(Some(_)) => {
                    moved = true;
                    c.last_down_progress = now;
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("HTTP connection {idx} from {}: write: {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        } else {
            // Nothing pending: a stall can only start with the next bytes.
            c.last_down_progress = now;
        }
        if c.inner_eof && c.down.is_empty() && !c.down_shut {
            let _ = c.client.shutdown(Shutdown::Write);
            c.down_shut = true;
        }
        // Done: both directions finished, or the client left before the
        // server was ever reached.
        if (c.up_shut && c.down_shut) || (c.client_eof && c.inner.is_none()) {
            return Pump::Close(CloseReason::Done);
        }
        if !moved {
            return Pump::Idle;
        }
    }
    Pump::More
}
