//! Hostile HTTP: bad room names and header injection through the pure
//! handler, a malformed-SDP corpus through the handler *and the real core*,
//! and lying Content-Length and a POST flood against the real binary.

mod realnet;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use support::{req, threads};
use wisp::http::{self, CoreError, HttpConfig, HttpRequest, HttpResponse};
use wisp::sfu::{ApiError, Command, Sfu, SfuConfig};

/// Shape checks every response must pass.
fn check(resp: &HttpResponse) {
    assert!((100..600).contains(&resp.status));
    for (k, v) in &resp.headers {
        assert!(
            !k.contains(['\r', '\n']) && !v.contains(['\r', '\n', '\0']),
            "CR/LF in {k}: {v:?}"
        );
    }
    if resp.status >= 400 {
        let body = std::str::from_utf8(&resp.body).unwrap();
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1,
            "{body:?}"
        );
        assert!(!body.contains('\r'));
    }
}

fn no_core(r: &HttpRequest) -> HttpResponse {
    let resp = http::handle(r, &HttpConfig::default(), &mut |c| {
        panic!("core called with {c:?}")
    });
    check(&resp);
    resp
}

#[test]
fn hostile_room_names_are_400_before_the_core() {
    let long = format!("/whip/{}", "a".repeat(10 * 1024));
    let names = [
        "/whip/../x",
        "/whip/..",
        "/whip/.",
        "/whip/..%2f",
        "/whip/..%2F..%2Fetc%2Fpasswd",
        "/whip/%2e%2e",
        "/whip/a%00b",
        "/whip/a\0b",
        "/whip/a\r\nSet-Cookie: x=1",
        "/whip/a%0d%0aSet-Cookie:%20x=1",
        "/whip/a\u{1b}[31mred",
        "/whip/a\u{202e}b",
        "/whip/\u{ff0e}\u{ff0e}",
        "/whip/\\\\?\\C:",
        "/whip/a b",
        "/whip/a/",
        "/whep/%",
        "/whep/r%20",
        "/api/rooms/..%2f",
        long.as_str(),
    ];
    for url in names {
        for method in ["POST", "OPTIONS", "GET"] {
            let resp = no_core(&req(
                method,
                url,
                &[("Content-Type", "application/sdp")],
                b"v=0\r\n",
            ));
            // 400 (bad name), 404 or 405 (`/whip/../x` parses as a session
            // URL): in every case before the core, which `no_core` checks.
            assert!(
                matches!(resp.status, 400 | 404 | 405),
                "{method} {url:?} -> {}",
                resp.status
            );
            let body = String::from_utf8(resp.body).unwrap();
            assert!(body.len() <= 201, "{url:?}: echoed body");
            assert!(!body.contains("passwd") && !body.contains("Set-Cookie"));
        }
    }
    // Session URLs with hostile tokens: 404 or 400, never the core.
    for url in [
        "/whip/r/..%2f..%2f",
        "/whip/r/0123456789abcdef0123456789abcdeg",
        "/whip/r/0123456789abcdef0123456789abcdef0",
        "/whip/r/\r\n",
    ] {
        let resp = no_core(&req("DELETE", url, &[], b""));
        assert!(matches!(resp.status, 400 | 404), "{url:?} {}", resp.status);
    }
}

#[test]
fn header_injection_never_reaches_a_response_header() {
    let evil = "x\r\nSet-Cookie: a=b\r\n\r\n<html>";
    // Hostile text in every error the core can return.
    let errors = [
        ApiError::BadOffer(evil.into()),
        ApiError::Unsupported(evil.into()),
        ApiError::BadFragment(evil.into()),
        ApiError::AtCapacity,
    ];
    for e in errors {
        for (method, url, ct) in [
            ("POST", "/whip/r", "application/sdp"),
            ("POST", "/whep/r?x=\r\nA: b", "application/sdp"),
            (
                "PATCH",
                "/whip/r/00112233445566778899aabbccddeeff",
                "application/trickle-ice-sdpfrag",
            ),
        ] {
            let r = req(
                method,
                url,
                &[
                    ("Content-Type", ct),
                    ("If-Match", "\"a\"\r\nX: y"),
                    ("Origin", evil),
                    ("Authorization", evil),
                ],
                b"v=0\r\n",
            );
            let mut e = Some(e.clone());
            let resp = http::handle(&r, &HttpConfig::default(), &mut |_| {
                Ok(Err(e.take().expect("core called once")))
            });
            check(&resp);
            assert!(resp.status >= 400);
        }
    }
    // A busy core: 503 with Retry-After.
    let r = req(
        "POST",
        "/whip/r",
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
    );
    let resp = http::handle(&r, &HttpConfig::default(), &mut |_| Err(CoreError::Busy));
    check(&resp);
    assert_eq!(resp.status, 503);
    assert!(resp.header("Retry-After").is_some());
}

#[test]
fn oversized_bodies_are_413_in_the_handler() {
    let big = vec![b'a'; http::DEFAULT_BODY_LIMIT + 1];
    for (m, url, ct) in [
        ("POST", "/whip/r", "application/sdp"),
        ("POST", "/whep/r", "application/sdp"),
        (
            "PATCH",
            "/whep/r/00112233445566778899aabbccddeeff",
            "application/trickle-ice-sdpfrag",
        ),
    ] {
        let resp = no_core(&req(m, url, &[("Content-Type", ct)], &big));
        assert_eq!(resp.status, 413, "{m} {url}");
    }
}

/// A real str0m offer (audio + video, one candidate): a publisher's
/// (`SendOnly`) or a viewer's (`RecvOnly`).
fn real_offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host(SocketAddr::from(([192, 0, 2, 9], 5009)), "udp").unwrap(),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn core() -> Sfu {
    Sfu::new(
        SfuConfig {
            candidates: vec![SocketAddr::from(([198, 51, 100, 1], 8189))],
            ..SfuConfig::default()
        },
        Instant::now(),
    )
}

/// POST `offer` to `url` through the handler and the real core: (status, time).
fn post_real(sfu: &mut Sfu, url: &str, offer: &str) -> (u16, Duration) {
    let now = Instant::now();
    let t0 = Instant::now();
    let r = req(
        "POST",
        url,
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    let resp = http::handle(&r, &HttpConfig::default(), &mut |cmd| {
        Ok(sfu.handle_command(now, cmd))
    });
    check(&resp);
    (resp.status, t0.elapsed())
}

fn lines_without(offer: &str, pred: impl Fn(&str) -> bool) -> String {
    offer
        .split("\r\n")
        .filter(|l| !pred(l))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The malformed-SDP corpus: (name, offer). Every one must be refused.
fn malformed(offer: &str) -> Vec<(&'static str, String)> {
    let audio_start = offer.find("m=audio").unwrap();
    let video_start = offer.find("m=video").unwrap();
    let session = &offer[..audio_start];
    let audio = &offer[audio_start..video_start];
    let many = {
        let mut s = session.to_string();
        for _ in 0..10_000 {
            s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        }
        s
    };
    let pt = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    vec![
        ("truncated", offer[..offer.len() / 3].to_string()),
        ("truncated mid-line", offer[..audio_start + 17].to_string()),
        ("no m-lines", session.to_string()),
        ("10,000 m-lines", many),
        ("NUL bytes", offer.replace("a=mid:", "a=mid:\0\0")),
        ("NUL everywhere", offer.replace('\n', "\0\n")),
        (
            "PT > 127",
            offer.replace(&format!(":{pt} "), ":200 ").replace(&format!(" {pt}"), " 200"),
        ),
        (
            "duplicate PT with another codec",
            offer.replacen(
                &format!("a=rtpmap:{pt} "),
                &format!("a=rtpmap:{pt} PCMU/8000\r\na=rtpmap:{pt} "),
                1,
            ),
        ),
        (
            "clock rate 0",
            offer.replace("opus/48000/2", "opus/0/2").replace("VP8/90000", "VP8/0"),
        ),
        (
            "clock rate 2^32",
            offer.replace("opus/48000/2", "opus/4294967296/2"),
        ),
        ("empty ufrag", lines_without(offer, |l| l.starts_with("a=ice-ufrag")).replace("a=ice-pwd", "a=ice-ufrag:\r\na=ice-pwd")),
        ("no ufrag", lines_without(offer, |l| l.starts_with("a=ice-ufrag"))),
        ("empty pwd", lines_without(offer, |l| l.starts_with("a=ice-pwd")).replace("a=ice-ufrag", "a=ice-pwd:\r\na=ice-ufrag")),
        ("missing fingerprint", lines_without(offer, |l| l.starts_with("a=fingerprint"))),
        (
            "garbled fingerprint",
            offer
                .lines()
                .map(|l| {
                    if l.starts_with("a=fingerprint") {
                        "a=fingerprint:sha-256 ZZ:ZZ"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n",
        ),
        (
            "setup:holdconn",
            offer
                .replace("a=setup:actpass", "a=setup:holdconn")
                .replace("a=setup:active", "a=setup:holdconn"),
        ),
        ("two audio tracks", offer.replacen("m=video", &format!("{}m=video", audio.replace("a=mid:0", "a=mid:9").replace("BUNDLE 0", "BUNDLE 0 9")), 1)),
        (
            "m=application only",
            format!(
                "{session}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sctp-port:5000\r\n"
            )
            .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"),
        ),
        ("not SDP", "hello\r\n".to_string()),
        ("binary", String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2, 3]).into_owned()),
        ("v=0 only", "v=0\r\n".to_string()),
        (
            "candidate component 3, port 0",
            offer.replace(" 1 udp ", " 3 udp ").replace(" 5009 typ", " 0 typ"),
        ),
    ]
}

/// Every malformed offer, as a WHIP POST (from a publisher's offer) and a
/// WHEP POST (from a viewer's) through the handler and the real core: 4xx in
/// < 100 ms, no session left. Then straight to the core (bypassing the body
/// limit): an error, < 1 s in the unoptimised test build.
#[test]
fn malformed_sdp_is_refused_by_the_real_core() {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut sfu = core();
    let room = wisp::sfu::RoomName::new("m").unwrap();
    for (url, dir) in [
        ("/whip/m", Direction::SendOnly),
        ("/whep/m", Direction::RecvOnly),
    ] {
        let offer = real_offer(dir);
        // The unmodified offer is accepted: each case differs only by its defect.
        assert_eq!(post_real(&mut sfu, url, &offer).0, 201, "{url}");
        sfu.close_room(Instant::now(), &room).unwrap();
        for (name, bad) in malformed(&offer) {
            if KNOWN_ACCEPTED.contains(&name) {
                continue;
            }
            let (status, took) = post_real(&mut sfu, url, &bad);
            eprintln!("{name:40} {url}: {status} in {took:?}");
            assert!((400..500).contains(&status), "{name} {url}: {status}");
            assert!(took < Duration::from_millis(100), "{name} {url}: {took:?}");
            let c = sfu.counts();
            assert_eq!(
                (c.sessions, c.rooms, c.tokens, c.ufrags),
                (0, 0, 0, 0),
                "{name}"
            );
            let t0 = Instant::now();
            let cmd = match dir {
                Direction::SendOnly => Command::Publish {
                    room: room.clone(),
                    offer: bad.clone(),
                    record: None,
                },
                _ => Command::Subscribe {
                    room: room.clone(),
                    offer: bad.clone(),
                    edge: false,
                },
            };
            let r = sfu.handle_command(Instant::now(), cmd);
            let took = t0.elapsed();
            assert!(r.is_err(), "{name}: the core accepted it");
            assert!(took < Duration::from_secs(1), "{name}: core took {took:?}");
            assert_eq!(sfu.counts().sessions, 0);
        }
        // A 1 MiB line is stopped by the body limit before the core.
        let huge = format!("{offer}a=x-{}\r\n", "y".repeat(1 << 20));
        let resp = http::handle(
            &req(
                "POST",
                url,
                &[("Content-Type", "application/sdp")],
                huge.as_bytes(),
            ),
            &HttpConfig::default(),
            &mut |c| panic!("core called with a 1 MiB body: {c:?}"),
        );
        assert_eq!(resp.status, 413);
    }
    assert_eq!(sfu.stats().caught_panics, 0);
}

/// Offers str0m would accept but that can never become a working session
/// (so they are refused with a reason, not left to time out); the core
/// refuses them itself.
const KNOWN_ACCEPTED: [&str; 2] = ["setup:holdconn", "candidate component 3, port 0"];

/// An offer with `a=setup:holdconn` (it asks for no DTLS connection, so the
/// session could only time out) and one whose candidate has component 3 and
/// port 0 are refused.
#[test]
fn malformed_offers_the_core_still_accepts() {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut sfu = core();
    let mut accepted = vec![];
    for (url, dir) in [
        ("/whip/m", Direction::SendOnly),
        ("/whep/m", Direction::RecvOnly),
    ] {
        let offer = real_offer(dir);
        for (name, bad) in malformed(&offer) {
            if !KNOWN_ACCEPTED.contains(&name) {
                continue;
            }
            let (status, _) = post_real(&mut sfu, url, &bad);
            if status == 201 {
                accepted.push(format!("{name} ({url})"));
                let _ = sfu.close_room(Instant::now(), &wisp::sfu::RoomName::new("m").unwrap());
            }
        }
    }
    assert!(accepted.is_empty(), "accepted with 201: {accepted:?}");
}

// ------------------------------------------------------------ real binary

/// Thread names and how many of each, for failure messages.
fn thread_names(pid: u32) -> Vec<(String, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        *m.entry(name.trim().to_string()).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

/// Send `head` (and `body`), read whatever status line comes back within `wait`.
fn raw_status(addr: SocketAddr, head: &str, body: &[u8], wait: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(head.as_bytes()).ok()?;
    let _ = s.write_all(body);
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

#[test]
fn lying_content_length_is_answered_at_once_by_the_binary() {
    let server = realnet::start_server();
    let a = server.http;
    for cl in ["70000", "16777216"] {
        let t0 = Instant::now();
        let head = format!(
            "POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: {cl}\r\n\r\n"
        );
        let r = raw_status(a, &head, b"v=0\r\n", Duration::from_secs(3));
        let took = t0.elapsed();
        eprintln!("Content-Length {cl}: {r:?} after {took:?}");
        let (status, _) = r.expect("an answer");
        assert!(matches!(status, 400 | 413), "{cl}: {status}");
        assert!(took < Duration::from_secs(1), "{cl}: {took:?}");
    }
    // Unparseable and duplicate lengths.
    for extra in [
        "Content-Length: -1\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let head = format!(
            "POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n{extra}\r\n"
        );
        let r = raw_status(a, &head, b"v=0\r\n", Duration::from_secs(3));
        eprintln!("{extra:?}: {r:?}");
        if let Some((status, _)) = r {
            assert!(
                (400..600).contains(&status) && status != 201,
                "{extra:?}: {status}"
            );
        }
    }
    // The server still works.
    assert_eq!(realnet::http(a, "GET", "/healthz", None, "").0, 200);
}

/// A Content-Length above `http::MAX_DRAIN` (16 MiB) must be answered
/// (the front answers 413 itself on plain HTTP) instead of being leaked with
/// its tiny_http connection thread and socket.
#[test]
fn huge_content_length_is_answered_and_leaks_no_thread() {
    let server = realnet::start_server();
    let a = server.http;
    let pid = server.child.id();
    let base = support::settled_threads(a, pid);
    let mut answered = 0;
    for _ in 0..20 {
        let head = "POST /whip/r HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000000000000000\r\n\r\n";
        if let Some((status, _)) = raw_status(a, head, b"v=0\r\n", Duration::from_millis(500)) {
            assert!(matches!(status, 400 | 413));
            answered += 1;
        }
    }
    assert_eq!(answered, 20, "requests left unanswered");
    // Threads that served anything leave after tiny_http's 5 s idle wait;
    // a leaked one (a thread per request) never does. Read from /proc only.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = threads(pid);
    while after > base + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        after = threads(pid);
    }
    eprintln!("20 requests claiming 10^15 bytes: {answered} answered, threads {base} -> {after}");
    assert!(
        after <= base + 4,
        "threads {base} -> {after}: {:?}",
        thread_names(pid)
    );
}

/// Fill every worker with a request whose body never finishes, then flood:
/// 503 + Retry-After at once, threads bounded, and full service once the
/// slow clients go away.
#[test]
fn post_flood_gets_503_with_retry_after_and_bounded_threads() {
    let server = realnet::start_server();
    let a = server.http;
    let pid = server.child.id();
    let base = support::settled_threads(a, pid);
    // 16 workers + 64 queued: 100 stuck requests (body 2,000 bytes declared, 10 sent).
    let mut stuck = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(
            b"POST /whip/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 2000\r\n\r\nv=0\r\no=- 1",
        )
        .unwrap();
        stuck.push(s);
        // Paced: tiny_http's task pool queues connections that arrive while
        // its idle threads are still waking up behind threads that block on
        // a slow body, and those then wait for a free thread indefinitely.
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "threads with 100 stuck requests: {} (baseline {base})",
        threads(pid)
    );
    // Wait until the pool is saturated (tiny_http parses the stuck requests
    // on its own threads, at its own pace).
    let flood_head = "POST /whep/flood HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
    let deadline = Instant::now() + Duration::from_secs(15);
    while raw_status(a, flood_head, b"v=0\r\n", Duration::from_secs(1)).map(|r| r.0) != Some(503) {
        assert!(Instant::now() < deadline, "the pool never filled up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let mut busy = 0;
    let mut other = vec![];
    for _ in 0..40 {
        match raw_status(a, flood_head, b"v=0\r\n", Duration::from_secs(2)) {
            Some((503, text)) => {
                busy += 1;
                assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
            }
            r => other.push(r.map(|r| r.0)),
        }
    }
    let took = t0.elapsed();
    let peak = threads(pid);
    eprintln!("flood: {busy}/40 got 503 in {took:?}; others {other:?}; threads {base} -> {peak}");
    assert!(busy >= 30, "only {busy} of 40 got 503");
    assert!(took < Duration::from_secs(10));
    // tiny_http runs one thread per open connection: bounded by connections.
    assert!(peak <= base + 100 + 40 + 8, "threads {base} -> {peak}");
    drop(stuck);
    // Service comes back, and the extra connection threads go away: tiny_http
    // retires a pool thread idle for 5 s (a few, at most its minimum of 4,
    // may wait without a timeout). Service first; then the thread count,
    // read from /proc only: every request wakes one idle pool thread and
    // restarts its 5 s, so polling over HTTP would keep idle threads alive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while realnet::http(a, "GET", "/healthz", None, "").0 != 200 {
        assert!(Instant::now() < deadline, "no service after the flood");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut ok = false;
    while Instant::now() < deadline {
        if threads(pid) <= base + 8 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = threads(pid);
    eprintln!(
        "threads after the flood: {after} (baseline {base}): {:?}",
        thread_names(pid)
    );
    assert!(ok, "threads did not return to baseline: {after} vs {base}");
}
