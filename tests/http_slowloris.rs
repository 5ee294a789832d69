//! The HTTP front (`wisp::http::front`) against the real binary: slow clients
//! (headers, bodies, TLS handshakes, silent connections) are cut off about
//! 10 s after their last unanswered byte while normal requests keep being
//! served; keep-alive and event streams keep working; a connection cap
//! refuses the excess at once. The slow scenarios run concurrently, so the
//! whole file takes about 15 s.

mod support;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::Rtc;
use support::{threads, TlsFiles, Wisp};
use wisp::http::front::{MAX_CONNECTIONS, REQUEST_TIMEOUT};

/// Latest acceptable cut-off, measured from connect (timer tick and
/// scheduling included).
const CUT_BY: Duration = Duration::from_secs(12);

/// The binary on 127.0.0.1 without STUN servers, with extra environment.
fn start(env: &[(&str, &str)]) -> Wisp {
    let mut env = env.to_vec();
    env.push(("WISP_STUN_URLS", ""));
    Wisp::start(&env)
}

/// Read one response from a kept-alive stream (no read-ahead: the next
/// response stays in the socket).
fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let r = support::read_response(&mut BufReader::with_capacity(1, s), "GET").ok()?;
    Some((r.status, r.text()))
}

/// One request on its own connection: (status, body).
fn call(addr: SocketAddr, method: &str, path: &str, ctype: &str, body: &str) -> (u16, String) {
    let headers = [("Content-Type", ctype)];
    support::http(
        addr,
        method,
        path,
        &headers,
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .map_or((0, String::new()), |r| (r.status, r.text()))
}

/// Send `drip` one byte per second after `prefix`; the time from connect
/// until the server closes the connection (panics if it answers instead).
fn drip_until_cut(addr: SocketAddr, prefix: &[u8], drip: &[u8]) -> Duration {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if s.write_all(prefix).is_err() {
        return t0.elapsed();
    }
    let mut buf = [0u8; 512];
    for b in drip {
        if s.write_all(&[*b]).is_err() {
            return t0.elapsed();
        }
        match s.read(&mut buf) {
            Ok(0) => return t0.elapsed(),
            Ok(n) => panic!(
                "answered instead of cut: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return t0.elapsed(),
        }
    }
    panic!("still open after {:?}", t0.elapsed());
}

/// The time until the server closes `s` (reading and discarding).
fn closed_after(s: &mut TcpStream, t0: Instant, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    while t0.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// A metric sample's value from `/metrics`.
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

/// A WHEP viewer session (never connects: the server ends it after its
/// connect timeout) and an event stream for it; returns the stream's URL.
fn event_stream_url(addr: SocketAddr) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    let post = |path: &str, ctype: &str, body: &str| {
        let headers = [("Content-Type", ctype)];
        let r = support::http(
            addr,
            "POST",
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        r.header("location").expect("Location").to_string()
    };
    let session = post("/whep/sse-room", "application/sdp", &offer.to_sdp_string());
    post(&format!("{session}/sse"), "application/json", "")
}

#[test]
fn slow_clients_are_cut_off_while_others_are_served() {
    let server = start(&[]);
    let a = server.http;
    let pid = server.child.id();
    let base = support::settled_threads(a, pid);
    let t_attack = Instant::now();

    // One header byte per second.
    let slow_headers = thread::spawn(move || {
        drip_until_cut(
            a,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            &[b'a'; 30],
        )
    });
    // A complete head, then a 1000-byte body at one byte per second.
    let slow_body = thread::spawn(move || {
        drip_until_cut(
            a,
            b"POST /whip/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
              Content-Length: 1000\r\n\r\nv=0\r\n",
            &[b'a'; 30],
        )
    });
    // 100 connections that never send anything.
    let silent = thread::spawn(move || {
        let t0 = Instant::now();
        let mut conns: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(a).unwrap()).collect();
        thread::sleep(Duration::from_secs(2));
        let during = threads(pid);
        let mut latest = Duration::ZERO;
        let mut open = 0;
        for s in &mut conns {
            match closed_after(s, t0, CUT_BY + Duration::from_secs(2)) {
                Some(t) => latest = latest.max(t),
                None => open += 1,
            }
        }
        (latest, open, during)
    });
    // Keep-alive: two requests 3 s apart on one connection.
    let keep_alive = thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        s.write_all(get).unwrap();
        let first = read_response(&mut s);
        thread::sleep(Duration::from_secs(3));
        s.write_all(get).unwrap();
        let second = read_response(&mut s);
        (first, second)
    });
    // An event stream: the client sends nothing after its GET and the server
    // writes for longer than the request timeout.
    let stream = event_stream_url(a);
    let sse = thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(a).unwrap();
        write!(
            s,
            "GET {stream} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut all = Vec::new();
        let mut last_bytes = Duration::ZERO;
        let mut buf = [0u8; 4096];
        let end = loop {
            if t0.elapsed() > Duration::from_secs(16) {
                break "still open";
            }
            match s.read(&mut buf) {
                Ok(0) => break "closed",
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    last_bytes = t0.elapsed();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break "reset",
            }
        };
        (last_bytes, end, String::from_utf8_lossy(&all).to_string())
    });

    // Normal requests during the attack: answered at once.
    let mut worst = Duration::ZERO;
    while t_attack.elapsed() < Duration::from_secs(11) {
        let t = Instant::now();
        let (status, body) = call(a, "GET", "/healthz", "text/plain", "");
        assert_eq!((status, body.as_str()), (200, "ok"));
        worst = worst.max(t.elapsed());
        thread::sleep(Duration::from_millis(500));
    }

    let headers_cut = slow_headers.join().unwrap();
    let body_cut = slow_body.join().unwrap();
    let (silent_cut, silent_open, threads_during) = silent.join().unwrap();
    let (first, second) = keep_alive.join().unwrap();
    let (sse_last, sse_end, sse_text) = sse.join().unwrap();
    let threads_after = threads(pid);
    eprintln!(
        "RESULT cut-off after connect: slow headers {headers_cut:?}, slow body {body_cut:?}, \
         100 silent: last closed at {silent_cut:?} ({silent_open} still open); \
         /healthz during the attack: worst {worst:?}; threads {base} -> {threads_during} (silent flood) \
         -> {threads_after}; event stream: last bytes at {sse_last:?}, then {sse_end}"
    );
    for (what, t) in [
        ("slow headers", headers_cut),
        ("slow body", body_cut),
        ("silent connections", silent_cut),
    ] {
        assert!(
            t >= REQUEST_TIMEOUT && t <= CUT_BY,
            "{what} cut after {t:?}"
        );
    }
    assert_eq!(silent_open, 0, "silent connections left open");
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    assert!(
        threads_during <= base + 12,
        "threads {base} -> {threads_during}"
    );
    assert!(
        threads_after <= base + 12,
        "threads {base} -> {threads_after}"
    );
    assert_eq!(first.map(|r| r.0), Some(200), "keep-alive, first request");
    assert_eq!(second.map(|r| r.0), Some(200), "keep-alive, second request");
    assert!(sse_text.starts_with("HTTP/1.1 200"), "{sse_text}");
    assert!(sse_text.contains(": keep-alive"), "{sse_text}");
    assert!(
        sse_last > CUT_BY,
        "event stream went quiet at {sse_last:?} ({sse_end})"
    );

    let (_, text) = call(a, "GET", "/metrics", "text/plain", "");
    let timeouts = metric(
        &text,
        "wisp_http_connections_closed_total{reason=\"request_timeout\"}",
    );
    assert!(timeouts >= 102, "{timeouts} request timeouts");

    // The cap: connections beyond it are refused at once with a 503.
    let extra = 8;
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS + extra)
        .map(|_| TcpStream::connect(a).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    n == 0 || text.starts_with("HTTP/1.1 503") && text.contains("Retry-After: 1"),
                    "{text}"
                );
                refused += 1;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => refused += 1,
        }
    }
    // A further connection gets the 503 without having to send anything.
    let busy = {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().unwrap_or("").to_string()
    };
    drop(held);
    let t = Instant::now();
    let mut back = false;
    while t.elapsed() < Duration::from_secs(3) {
        if call(a, "GET", "/healthz", "text/plain", "").0 == 200 {
            back = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (_, text) = call(a, "GET", "/metrics", "text/plain", "");
    let over_cap = metric(
        &text,
        "wisp_http_connections_closed_total{reason=\"over_cap\"}",
    );
    eprintln!(
        "RESULT cap {MAX_CONNECTIONS}: {refused} of {} refused, probe got {busy}, \
         service back after {:?}, over_cap {over_cap}",
        MAX_CONNECTIONS + extra,
        t.elapsed()
    );
    assert!((extra..=extra + 4).contains(&refused), "{refused} refused");
    assert_eq!(busy, "HTTP/1.1 503 Service Unavailable");
    assert!(back, "no service after the connections closed");
    assert!(over_cap > extra as u64);
    let open = metric(&text, "wisp_http_connections{state=\"open\"}");
    assert!(open <= 2, "{open} connections still open");
}

#[test]
fn tls_is_served_through_the_front_and_slow_handshakes_are_cut() {
    let tls = TlsFiles::generate("slowloris");
    let server = start(&[
        ("WISP_TLS_CERT", tls.cert.to_str().unwrap()),
        ("WISP_TLS_KEY", tls.key.to_str().unwrap()),
    ]);
    let a = server.http;
    // A TLS record header, then one byte per second: the handshake never completes.
    let slow = thread::spawn(move || drip_until_cut(a, &[0x16, 0x03, 0x01, 0x02, 0x00], &[0; 30]));
    let resp = support::https(a, &tls.der, "GET", "/healthz", Duration::from_secs(10))
        .expect("HTTPS request through the front");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok");
    let cut = slow.join().unwrap();
    eprintln!("RESULT slow TLS handshake cut after {cut:?}");
    assert!(cut >= REQUEST_TIMEOUT && cut <= CUT_BY, "cut after {cut:?}");
}
