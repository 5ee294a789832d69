//! The pure part of the front: following a plain-HTTP client's byte stream
//! from request head to request head, the front's own answers, and when a
//! connection must close. No sockets and no clock reads (`now` is passed
//! in); the rules themselves are listed in [`super`].

use std::time::{Duration, Instant};

use crate::metrics::CloseReason;

use super::{IDLE_TIMEOUT, REQUEST_TIMEOUT};

/// When a connection's bytes last moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Clock {
    /// Since when client bytes (or the connection) wait for a server byte.
    pub(super) unanswered_since: Option<Instant>,
    /// Last byte moved in either direction.
    pub(super) last_activity: Instant,
    /// Last time response bytes were pending and the client took some (or
    /// none were pending).
    pub(super) last_down_progress: Instant,
    /// The front's answer is written: close when the client closes or at
    /// this time.
    pub(super) linger_until: Option<Instant>,
}

impl Clock {
    /// A connection accepted at `now`: unanswered from the start.
    pub(super) fn new(now: Instant) -> Clock {
        Clock {
            unanswered_since: Some(now),
            last_activity: now,
            last_down_progress: now,
            linger_until: None,
        }
    }

    /// Why the connection must close at `now`, if it must. `pending_down`:
    /// response bytes wait for the client; `down_shut`: the response side is
    /// finished.
    pub(super) fn expired(
        &self,
        now: Instant,
        pending_down: bool,
        down_shut: bool,
    ) -> Option<CloseReason> {
        let idle_limit = if down_shut {
            REQUEST_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        let over = |since: Instant, limit: Duration| now.duration_since(since) > limit;
        if self.linger_until.is_some_and(|t| now >= t) {
            Some(CloseReason::Done)
        } else if self
            .unanswered_since
            .is_some_and(|t| over(t, REQUEST_TIMEOUT))
        {
            Some(CloseReason::RequestTimeout)
        } else if pending_down && over(self.last_down_progress, REQUEST_TIMEOUT) {
            Some(CloseReason::WriteStall)
        } else if over(self.last_activity, idle_limit) {
            Some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }
}

/// The front's own answers (plain HTTP), each closing the connection.
pub(super) const ANSWER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\
Connection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
pub(super) const ANSWER_413: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\
Connection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
pub(super) const ANSWER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Length: 0\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n";

/// Why the front answers a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reject {
    /// Malformed or ambiguous head (smuggling shapes).
    BadRequest(&'static str),
    /// Declared body over the limit.
    TooLarge,
    /// Head over [`super::HEAD_LIMIT`].
    HeadTooLarge,
}

impl Reject {
    pub(super) fn status(self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::TooLarge => 413,
            Reject::HeadTooLarge => 431,
        }
    }

    pub(super) fn answer(self) -> &'static [u8] {
        match self {
            Reject::BadRequest(_) => ANSWER_400,
            Reject::TooLarge => ANSWER_413,
            Reject::HeadTooLarge => ANSWER_431,
        }
    }

    pub(super) fn why(self) -> &'static str {
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
pub(super) struct Inspector {
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
    pub(super) fn new(head_limit: usize, max_body: usize) -> Inspector {
        Inspector {
            phase: Phase::Head { scanned: 0 },
            head_limit,
            max_body,
        }
    }

    pub(super) fn pass() -> Inspector {
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
    pub(super) fn inspect(&mut self, held: &[u8]) -> (usize, Option<Reject>) {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::http::front::HEAD_LIMIT;

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

    /// A POST declaring `len` body bytes, then `body`.
    pub(in crate::http::front) fn post(len: &str, body: &[u8]) -> Vec<u8> {
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
    fn clock_rules() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!((REQUEST_TIMEOUT, IDLE_TIMEOUT), (s(10), s(120)));
        let mut c = Clock::new(t0);
        // Unanswered from accept: cut just after the request timeout.
        assert_eq!(c.expired(t0 + s(10), false, false), None);
        assert_eq!(
            c.expired(t0 + s(11), false, false),
            Some(CloseReason::RequestTimeout)
        );
        // Answered: an open keep-alive connection lives for the idle timeout…
        c.unanswered_since = None;
        assert_eq!(c.expired(t0 + s(100), false, false), None);
        assert_eq!(
            c.expired(t0 + s(121), false, false),
            Some(CloseReason::IdleTimeout)
        );
        // …but only the request timeout once the response side is finished.
        assert_eq!(
            c.expired(t0 + s(11), false, true),
            Some(CloseReason::IdleTimeout)
        );
        // A response the client does not read.
        c.last_activity = t0 + s(5);
        assert_eq!(
            c.expired(t0 + s(11), true, false),
            Some(CloseReason::WriteStall)
        );
        // After the front's own answer: close at the linger deadline.
        c.linger_until = Some(t0 + s(2));
        assert_eq!(c.expired(t0 + s(2), false, false), Some(CloseReason::Done));
    }
}
