//! The TCP front of the HTTP server: connection timeouts and a connection cap
//! that tiny_http 0.12 cannot provide (it has no read timeout and never
//! exposes its sockets; `docs/reliability.md` §4).
//!
//! wisp binds the public TCP listener itself; tiny_http listens on a private
//! Unix socket in the Linux abstract namespace (nothing on the filesystem).
//! One thread (a non-blocking mio `Poll`) accepts TCP connections, opens a
//! Unix stream to tiny_http for each once the client has sent its first byte,
//! and copies bytes both ways through bounded buffers ([`FrontConfig::buffer`]
//! per direction; a side is not read while its buffer is full).
//!
//! **Request heads (plain HTTP only).** tiny_http 0.12 cannot drop a request
//! whose declared body it has not read without allocating the whole declared
//! length (`EqualReader::drop`), so a `Content-Length: 1000000000000000`
//! would abort the process. The front therefore reads the client's byte
//! stream just enough to find each request head (up to `\r\n\r\n`, at most
//! [`HEAD_LIMIT`] bytes, else 431) and its body length, and forwards only
//! complete, acceptable heads and exactly `Content-Length` body bytes after
//! each (the next head follows). It answers itself, then closes:
//! - 413 when `Content-Length` exceeds [`FrontConfig::max_body`]
//!   (`http::DEFAULT_BODY_LIMIT`, the limit of the HTTP workers);
//! - 400 for request smuggling shapes and heads tiny_http would misread
//!   (`docs/reliability.md` §6 case 5): `Content-Length` together with
//!   `Transfer-Encoding`, two differing `Content-Length`s, a length that is
//!   not all digits, obs-fold (a header line starting with a space or tab),
//!   a bare CR or LF, a header line without `:` or with whitespace in the
//!   name, an empty request line.
//!
//! The front's own answer comes after the answers to the requests already
//! forwarded on that connection (the server's side is shut first and the
//! answer sent once the server closed); the client's further bytes are read
//! and discarded for up to [`LINGER`] after it, so that closing does not reset
//! the connection before the client reads the answer. With
//! `Transfer-Encoding` (chunked; no `Content-Length`) or `Connection: upgrade`,
//! the front stops inspecting that connection and passes every byte on
//! unchanged: tiny_http decodes chunked bodies and the workers cap what they
//! read, and an upgraded tiny_http connection parses no further requests.
//! Requests pipelined behind a chunked one are therefore covered only by the
//! workers' own guard (`crate::http_thread`: an over-cap length is leaked,
//! not dropped).
//!
//! **TLS** is passed through untouched: tiny_http runs it on whatever stream
//! it accepts, the front only sees ciphertext, so it cannot inspect heads
//! there. Over TLS an over-cap `Content-Length` still reaches tiny_http and is
//! handled as before by `crate::http_thread` (leaked: never answered, one
//! tiny_http thread and fd kept per such request, within the connection cap).
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
//! - **Linger**: after the front's own answer, [`LINGER`] for the client to
//!   close → close.
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
/// Longest request head (request line, headers and the blank line) on plain
/// HTTP; longer → 431.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// How long the client's bytes are read and discarded after the front's own
/// answer before the connection is closed.
pub const LINGER: Duration = Duration::from_secs(2);

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
    /// Plain HTTP (not TLS): connections over the cap get a 503 before
    /// closing, and request heads are inspected (see the module docs).
    pub plain_http: bool,
    /// Largest `Content-Length` passed to the server (plain HTTP); above it
    /// the front answers 413. Match the workers' `HttpConfig::body_limit`.
    pub max_body: usize,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            request_timeout: REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            buffer: BUFFER,
            plain_http: true,
            max_body: crate::http::DEFAULT_BODY_LIMIT,
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

/// A bounded byte queue: filled at `end`, drained from `start` up to `ready`.
/// Bytes in `ready..end` are held back until [`Buf::release`]d (or, for a
/// queue made without `hold`, released as they arrive).
struct Buf {
    data: Box<[u8]>,
    start: usize,
    ready: usize,
    end: usize,
    hold: bool,
}

impl Buf {
    fn new(cap: usize, hold: bool) -> Buf {
        Buf {
            data: vec![0; cap.max(1)].into_boxed_slice(),
            start: 0,
            ready: 0,
            end: 0,
            hold,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.data.len()
    }

    /// Bytes that may be drained now.
    fn has_ready(&self) -> bool {
        self.start < self.ready
    }

    /// The bytes held back.
    fn held(&self) -> &[u8] {
        &self.data[self.ready..self.end]
    }

    /// Let the first `n` held bytes be drained.
    fn release(&mut self, n: usize) {
        self.ready = (self.ready + n).min(self.end);
    }

    /// Forget the bytes held back.
    fn discard_held(&mut self) {
        self.end = self.ready;
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
        }
    }

    /// Read once from `r` into the free space. `Ok(None)`: nothing to read now.
    fn fill(&mut self, r: &mut impl Read) -> io::Result<Option<usize>> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.ready -= self.start;
            self.start = 0;
        }
        match r.read(&mut self.data[self.end..]) {
            Ok(n) => {
                self.end += n;
                if !self.hold {
                    self.ready = self.end;
                }
                Ok(Some(n))
            }
            Err(e) if retry(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write once from the ready bytes to `w`. `Ok(None)`: `w` is full now.
    fn drain(&mut self, w: &mut impl Write) -> io::Result<Option<usize>> {
        match w.write(&self.data[self.start..self.ready]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.start += n;
                if self.start == self.end {
                    self.start = 0;
                    self.ready = 0;
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

/// The front's own answers (plain HTTP), each closing the connection.
const ANSWER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\
Connection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
const ANSWER_413: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\
Connection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
const ANSWER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Length: 0\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";

/// Why the front answers a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// Malformed or ambiguous head (smuggling shapes).
    BadRequest(&'static str),
    /// Declared body over the limit.
    TooLarge,
    /// Head over [`HEAD_LIMIT`].
    HeadTooLarge,
}

impl Reject {
    fn status(self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::TooLarge => 413,
            Reject::HeadTooLarge => 431,
        }
    }

    fn answer(self) -> &'static [u8] {
        match self {
            Reject::BadRequest(_) => ANSWER_400,
            Reject::TooLarge => ANSWER_413,
            Reject::HeadTooLarge => ANSWER_431,
        }
    }

    fn why(self) -> &'static str {
        match self {
            Reject::BadRequest(why) => why,
            Reject::TooLarge => "Content-Length over the body limit",
            Reject::HeadTooLarge => "request head too long",
        }
    }
}

/// Where the client's byte stream is, as far as the front follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request head; the first `scanned` held bytes hold no `\r\n\r\n`
    /// ending before them.
    Head { scanned: usize },
    /// In a body: this many bytes before the next head.
    Body(usize),
    /// Not followed (TLS, chunked, upgrade): every byte passes.
    Pass,
}

/// Follows the client → server stream of one plain-HTTP connection from head
/// to head (see the module docs).
#[derive(Debug, Clone)]
struct Inspector {
    phase: Phase,
    head_limit: usize,
    max_body: usize,
}

/// What the front does after a complete head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Forward this many body bytes, then expect the next head.
    Body(usize),
    /// Forward everything from here on without looking.
    Pass,
}

impl Inspector {
    fn new(head_limit: usize, max_body: usize) -> Inspector {
        Inspector {
            phase: Phase::Head { scanned: 0 },
            head_limit,
            max_body,
        }
    }

    fn pass() -> Inspector {
        Inspector {
            phase: Phase::Pass,
            head_limit: 0,
            max_body: 0,
        }
    }

    /// `held`: the client's bytes not yet forwarded (starting right after the
    /// last forwarded byte, including those shown before). Returns how many of
    /// them may be forwarded now, and a rejection if the request after those
    /// must not be forwarded at all.
    fn inspect(&mut self, held: &[u8]) -> (usize, Option<Reject>) {
        let mut pos = 0;
        loop {
            let rest = &held[pos..];
            match self.phase {
                Phase::Pass => return (held.len(), None),
                Phase::Body(n) => {
                    let k = n.min(rest.len());
                    pos += k;
                    if k == n {
                        self.phase = Phase::Head { scanned: 0 };
                    } else {
                        self.phase = Phase::Body(n - k);
                        return (pos, None);
                    }
                }
                Phase::Head { scanned } => {
                    let from = scanned.saturating_sub(3);
                    let Some(at) = find_crlfcrlf(&rest[from..]).map(|i| from + i) else {
                        if rest.len() >= self.head_limit {
                            return (pos, Some(Reject::HeadTooLarge));
                        }
                        self.phase = Phase::Head {
                            scanned: rest.len(),
                        };
                        return (pos, None);
                    };
                    let len = at + 4;
                    if len > self.head_limit {
                        return (pos, Some(Reject::HeadTooLarge));
                    }
                    match parse_head(&rest[..at], self.max_body) {
                        Ok(Next::Body(n)) => self.phase = Phase::Body(n),
                        Ok(Next::Pass) => self.phase = Phase::Pass,
                        Err(r) => return (pos, Some(r)),
                    }
                    pos += len;
                }
            }
        }
    }
}

fn find_crlfcrlf(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Check one request head (`head`: request line and header lines, without
/// the final `\r\n\r\n`) the way tiny_http 0.12 will read it: lines end with
/// CRLF, the first `Transfer-Encoding` (any value) means chunked and wins
/// over `Content-Length`, the first `Connection` containing `upgrade` makes
/// the rest of the stream raw.
fn parse_head(head: &[u8], max_body: usize) -> Result<Next, Reject> {
    let bad = |why| Err(Reject::BadRequest(why));
    // CRLF is the only line end tiny_http knows.
    let mut lines = CrlfLines { rest: Some(head) };
    let request_line = lines.next().unwrap_or_default();
    if request_line.is_empty() {
        return bad("empty request line");
    }
    if has_bare_cr_or_lf(request_line) {
        return bad("bare CR or LF in the request line");
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade: Option<bool> = None;
    for line in lines {
        if has_bare_cr_or_lf(line) {
            return bad("bare CR or LF in a header");
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return bad("obs-fold header line");
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return bad("header line without a colon");
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return bad("malformed header name");
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return bad("Content-Length is not a number");
            }
            // Saturates: any absurd length is simply over the limit.
            let n = value.iter().fold(0u64, |n, &d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            if length.is_some_and(|l| l != n) {
                return bad("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") && upgrade.is_none() {
            upgrade = Some(
                value
                    .to_ascii_lowercase()
                    .windows(7)
                    .any(|w| w == b"upgrade"),
            );
        }
    }
    if chunked && length.is_some() {
        return bad("both Content-Length and Transfer-Encoding");
    }
    if let Some(n) = length {
        if n > max_body as u64 {
            return Err(Reject::TooLarge);
        }
    }
    if chunked || upgrade == Some(true) {
        return Ok(Next::Pass);
    }
    // At most `max_body` (a `usize`) here.
    Ok(Next::Body(length.unwrap_or(0) as usize))
}

fn has_bare_cr_or_lf(line: &[u8]) -> bool {
    line.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// Lines of a head, without their CRLF.
struct CrlfLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                self.rest = Some(&rest[i + 2..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
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
    /// Follows request heads in `up` (passes everything over TLS).
    inspector: Inspector,
    /// The front answers this request itself (then closes): the client's
    /// further bytes are discarded. Holds the answer and how much of it was
    /// written.
    answer: Option<(&'static [u8], usize)>,
    /// The front's answer is written: close when the client closes or at
    /// this time.
    linger_until: Option<Instant>,
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
            let cfg = &self.front.cfg;
            let buffer = cfg.buffer;
            let inspector = if cfg.plain_http {
                // A head must fit in the buffer to be seen whole.
                Inspector::new(HEAD_LIMIT.min(buffer.max(1)), cfg.max_body)
            } else {
                Inspector::pass()
            };
            self.conns[idx] = Some(Conn {
                client,
                peer,
                inner: None,
                up: Buf::new(buffer, true),
                down: Buf::new(buffer, false),
                client_eof: false,
                inner_eof: false,
                up_shut: false,
                down_shut: false,
                unanswered_since: Some(now),
                last_activity: now,
                last_down_progress: now,
                inspector,
                answer: None,
                linger_until: None,
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
        match pump(conn, idx, &self.front.inner, &self.poll, &self.counters) {
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
            let reason = if c.linger_until.is_some_and(|t| now >= t) {
                Some(CloseReason::Done)
            } else if c
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
fn pump(
    c: &mut Conn,
    idx: usize,
    inner_addr: &UnixAddr,
    poll: &Poll,
    counters: &HttpCounters,
) -> Pump {
    for _ in 0..ROUNDS {
        let mut moved = false;
        let now = Instant::now();

        if c.answer.is_some() {
            // Answered by the front: read and discard what the client sends.
            if !c.client_eof {
                match c.client.read(&mut [0u8; 4096]) {
                    Ok(0) => c.client_eof = true,
                    Ok(_) => moved = true,
                    Err(e) if retry(&e) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx} from {}: read: {e}", c.peer);
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        } else if !c.client_eof && !c.up.is_full() {
            // Client → buffer.
            match c.up.fill(&mut c.client) {
                Ok(Some(0)) => {
                    c.client_eof = true;
                    // An unfinished head is never forwarded.
                    c.up.discard_held();
                }
                Ok(Some(_)) => {
                    moved = true;
                    c.last_activity = now;
                    c.unanswered_since.get_or_insert(now);
                    let (forward, reject) = c.inspector.inspect(c.up.held());
                    c.up.release(forward);
                    if let Some(r) = reject {
                        debug!(
                            "HTTP connection {idx} from {}: {} -> {} (answered by the front)",
                            c.peer,
                            r.why(),
                            r.status()
                        );
                        counters.record(r.status());
                        c.up.discard_held();
                        c.answer = Some((r.answer(), 0));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    debug!("HTTP connection {idx} from {}: read: {e}", c.peer);
                    return Pump::Close(CloseReason::Error);
                }
            }
        }
        // The server is reached once there is something to tell it.
        if c.inner.is_none() && c.up.has_ready() {
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
            if c.up.has_ready() {
                match c.up.drain(inner) {
                    Ok(Some(_)) => moved = true,
                    Ok(None) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx}: write to the server: {e}");
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
            // Nothing more for the server: the client is done, or the front
            // answers the next request itself (after the server's answers).
            if (c.client_eof || c.answer.is_some()) && c.up.is_empty() && !c.up_shut {
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
        let server_done = c.inner.is_none() || c.inner_eof;
        // The front's own answer, once the server has answered everything
        // forwarded before it.
        if let Some((answer, written)) = c.answer.as_mut() {
            if server_done && c.down.is_empty() && *written < answer.len() {
                match c.client.write(&answer[*written..]) {
                    Ok(0) => return Pump::Close(CloseReason::Error),
                    Ok(n) => {
                        *written += n;
                        moved = true;
                        c.last_activity = now;
                        c.unanswered_since = None;
                        if *written == answer.len() {
                            c.linger_until = Some(now + LINGER);
                        }
                    }
                    Err(e) if retry(&e) => {}
                    Err(e) => {
                        debug!("HTTP connection {idx} from {}: write: {e}", c.peer);
                        return Pump::Close(CloseReason::Error);
                    }
                }
            }
        }
        // Nothing more for the client: the server is done, or the front's
        // answer (written only once the server is done) went out.
        let down_finished = match c.answer {
            None => c.inner_eof,
            Some((answer, written)) => written == answer.len(),
        };
        if down_finished && c.down.is_empty() && !c.down_shut {
            let _ = c.client.shutdown(Shutdown::Write);
            c.down_shut = true;
        }
        // Done: both directions finished, or the client left before the
        // server was ever reached; after the front's answer, once the client
        // has closed.
        let done = if c.answer.is_some() {
            c.down_shut && c.client_eof
        } else {
            (c.up_shut && c.down_shut) || (c.client_eof && c.inner.is_none())
        };
        if done {
            return Pump::Close(CloseReason::Done);
        }
        if !moved {
            return Pump::Idle;
        }
    }
    Pump::More
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const LIMIT: usize = 64 * 1024;

    fn insp() -> Inspector {
        Inspector::new(HEAD_LIMIT, LIMIT)
    }

    /// Feed `stream` in pieces of `step` bytes the way the front does (held
    /// bytes stay held until released); returns the forwarded bytes and the
    /// rejection, if any.
    fn feed(stream: &[u8], step: usize) -> (Vec<u8>, Option<Reject>) {
        let mut i = insp();
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            held.extend_from_slice(piece);
            let (n, reject) = i.inspect(&held);
            out.extend_from_slice(&held[..n]);
            held.drain(..n);
            if reject.is_some() {
                return (out, reject);
            }
        }
        (out, None)
    }

    fn post(len: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!("POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn whole_request_passes_at_any_split() {
        let req = post("5", b"v=0\r\n");
        for step in 1..=req.len() {
            assert_eq!(feed(&req, step), (req.clone(), None), "step {step}");
        }
    }

    #[test]
    fn head_is_held_until_complete() {
        let mut i = insp();
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 1..head.len() {
            assert_eq!(i.inspect(&head[..end]), (0, None), "{end}");
        }
        assert_eq!(i.inspect(head), (head.len(), None));
    }

    #[test]
    fn pipelined_requests_are_each_checked() {
        let mut s = post("3", b"abc");
        s.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        s.extend_from_slice(&post("0", b""));
        for step in [1, 2, 7, s.len()] {
            assert_eq!(feed(&s, step), (s.clone(), None), "step {step}");
        }
        // The body is skipped by length, not scanned: a head-like body passes.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        let mut s = post(&body.len().to_string(), body);
        s.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(feed(&s, 5), (s.clone(), None));
        // An over-cap request behind good ones: those pass, it does not.
        let good = post("2", b"ok");
        let mut s = good.clone();
        s.extend_from_slice(&post("1000000000000000", b"v=0\r\n"));
        for step in [1, 3, s.len()] {
            assert_eq!(
                feed(&s, step),
                (good.clone(), Some(Reject::TooLarge)),
                "step {step}"
            );
        }
    }

    #[test]
    fn over_cap_lengths_get_413() {
        for len in [
            "65537",
            "16777216",
            "1000000000000000",
            "99999999999999999999999999",
        ] {
            let (out, r) = feed(&post(len, b""), 4);
            assert!(out.is_empty(), "{len}");
            assert_eq!(r, Some(Reject::TooLarge), "{len}");
            assert_eq!(r.unwrap().status(), 413);
        }
        let at_limit = post(&LIMIT.to_string(), &[b'a'; LIMIT]);
        assert_eq!(feed(&at_limit, 1000), (at_limit.clone(), None));
        // Header name case does not matter.
        let head = b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 70000\r\n\r\n";
        assert_eq!(feed(head, 3).1, Some(Reject::TooLarge));
    }

    #[test]
    fn duplicate_and_conflicting_lengths() {
        let head = |h: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{h}\r\n").into_bytes();
        // Identical duplicates are one length.
        let mut s = head("Content-Length: 3\r\ncontent-length: 3\r\n");
        s.extend_from_slice(b"abcGET / HTTP/1.1\r\n\r\n");
        assert_eq!(feed(&s, 2), (s.clone(), None));
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\nContent-Length: 05000\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length:\r\n",
            "Content-Length : 5\r\n",
            "X: a\r\n Content-Length: 5\r\n",
            "X: a\r\n\tb\r\n",
            "X: a\nContent-Length: 5\r\n",
            "X: a\rb\r\n",
            "no colon here\r\n",
            ": empty name\r\n",
        ] {
            let (out, r) = feed(&head(bad), 3);
            assert!(out.is_empty(), "{bad:?}");
            assert!(matches!(r, Some(Reject::BadRequest(_))), "{bad:?}: {r:?}");
            assert_eq!(r.unwrap().status(), 400);
        }
        // An empty request line.
        assert!(matches!(
            feed(b"\r\n\r\n", 1).1,
            Some(Reject::BadRequest(_))
        ));
        assert!(matches!(
            feed(b"\r\nGET / HTTP/1.1\r\n\r\n", 1).1,
            Some(Reject::BadRequest(_))
        ));
        // Over-cap and conflicting: conflicting wins (400, not 413).
        let (_, r) = feed(
            &head("Content-Length: 1000000000000000\r\nTransfer-Encoding: chunked\r\n"),
            9,
        );
        assert!(matches!(r, Some(Reject::BadRequest(_))), "{r:?}");
    }

    #[test]
    fn chunked_and_upgrade_pass_everything_after() {
        let mut s = b"POST /whep/r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nv=0\r\n\r\n0\r\n\r\n"
            .to_vec();
        // What follows is not inspected any more (tiny_http decodes it).
        s.extend_from_slice(&post("1000000000000000", b""));
        s.extend_from_slice(b"garbage\r\n\r\n");
        for step in [1, 4, s.len()] {
            assert_eq!(feed(&s, step), (s.clone(), None), "step {step}");
        }
        let mut i = insp();
        let head = b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x\r\n\r\n";
        assert_eq!(i.inspect(head), (head.len(), None));
        assert_eq!(i.phase, Phase::Pass);
        assert_eq!(i.inspect(b"\r\n\r\n\0\xff"), (6, None));
        // tiny_http looks at the first Connection header only.
        let mut i = insp();
        let head = b"GET / HTTP/1.1\r\nConnection: close\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(i.inspect(head), (head.len(), None));
        assert_eq!(i.phase, Phase::Head { scanned: 0 });
    }

    #[test]
    fn pass_inspector_passes_everything() {
        let mut i = Inspector::pass();
        assert_eq!(i.inspect(b"\x16\x03\x01\x02\x00"), (5, None));
        let req = post("1000000000000000", b"");
        assert_eq!(i.inspect(&req), (req.len(), None));
    }

    #[test]
    fn head_size_is_capped() {
        // Never ending head: rejected once the limit is reached.
        let mut s = b"GET / HTTP/1.1\r\n".to_vec();
        while s.len() < HEAD_LIMIT + 100 {
            s.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(feed(&s, 1000), (Vec::new(), Some(Reject::HeadTooLarge)));
        // Complete but too long.
        s.extend_from_slice(b"\r\n");
        assert_eq!(feed(&s, s.len()).1, Some(Reject::HeadTooLarge));
        assert_eq!(Reject::HeadTooLarge.status(), 431);
        // A head of exactly the limit passes.
        let mut s = b"GET / HTTP/1.1\r\nX: ".to_vec();
        s.resize(HEAD_LIMIT - 4, b'a');
        s.extend_from_slice(b"\r\n\r\n");
        assert_eq!(feed(&s, 100), (s.clone(), None));
    }

    #[test]
    fn answers_are_well_formed() {
        for r in [
            Reject::BadRequest("x"),
            Reject::TooLarge,
            Reject::HeadTooLarge,
        ] {
            let text = std::str::from_utf8(r.answer()).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {} ", r.status())),
                "{text}"
            );
            assert!(text.contains("\r\nContent-Length: 0\r\n"), "{text}");
            assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
            assert!(
                text.contains("\r\nAccess-Control-Allow-Origin: *\r\n"),
                "{text}"
            );
            assert!(text.ends_with("\r\n\r\n") && !text.ends_with("\r\n\r\n\r\n"));
        }
    }

    #[test]
    fn held_bytes_are_not_drained() {
        let mut b = Buf::new(16, true);
        b.fill(&mut &b"abcdefgh"[..]).unwrap();
        assert!(!b.has_ready());
        b.release(3);
        let mut out = Vec::new();
        b.drain(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(b.held(), b"defgh");
        b.fill(&mut &b"12345678"[..]).unwrap();
        // Full at the end: the next fill compacts, keeping the held bytes.
        b.fill(&mut &b"XYZ"[..]).unwrap();
        assert_eq!(b.held(), b"defgh12345678XYZ");
        b.release(5);
        b.discard_held();
        out.clear();
        b.drain(&mut out).unwrap();
        assert_eq!(out, b"defgh");
        assert!(b.is_empty());
    }

    /// A front on a free port with a fake server that reads one connection
    /// to its end, then answers `reply` and closes. Returns the public
    /// address and what the server received (once it has).
    fn front_with_server(reply: &'static [u8]) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
        let cfg = FrontConfig::default();
        let (front, unix) = Front::bind("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        let addr = front.local_addr().unwrap();
        front.spawn(Arc::new(HttpCounters::default())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let (mut s, _) = unix.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(reply).unwrap();
            let _ = tx.send(got);
        });
        (addr, rx)
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn front_answers_after_earlier_responses_and_forwards_only_good_requests() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, rx) = front_with_server(ok);
        let good = post("2", b"ok");
        let mut s = good.clone();
        s.extend_from_slice(&post("1000000000000000", b"v=0\r\n"));
        let text = exchange(addr, &s);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with(std::str::from_utf8(ANSWER_413).unwrap()),
            "{text}"
        );
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, good);
    }

    #[test]
    fn front_answers_a_first_bad_request_without_the_server() {
        let (addr, rx) = front_with_server(b"");
        let text = exchange(addr, &post("1000000000000000", b"v=0\r\n"));
        assert_eq!(text.as_bytes(), ANSWER_413);
        let text = exchange(
            addr,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        );
        assert_eq!(text.as_bytes(), ANSWER_400);
        // The server was never reached.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
