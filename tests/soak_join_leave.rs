//! Soak: viewers joining and leaving, publishers reconnecting. Every map
//! returns to zero and nothing grows.
//!
//! - `join_leave_short` (CI): 500 WHEP join/leave cycles and 50 publisher
//!   reconnects through the core in TestNet; one cycle in ten connects
//!   (ICE + DTLS + media) and leaves by DTLS close or DELETE.
//! - `join_leave_long_against_the_binary` (`--ignored`): 10,000 WHEP
//!   join/leave cycles and 1,000 publisher reconnects against the real binary
//!   over loopback, printing RSS, open fds and threads before and after
//!   (after a 3,000-cycle warm-up to the steady state).

mod common;
mod realnet;
mod support;

use std::time::{Duration, Instant};

use common::TestNet;
use wisp::sfu::Reply;

#[test]
fn join_leave_short() {
    let mut net = TestNet::new(31);
    let mut p = net.publish("soak");
    net.run_for(Duration::from_millis(500));
    assert!(net.connected(p));
    let t0 = Instant::now();
    let mut connected_cycles = 0;
    for cycle in 0..500 {
        let v = net.view("soak");
        if cycle % 10 == 0 {
            let before = net.clients[v].got.len();
            assert!(
                net.run_until(Duration::from_secs(2), |n| n.clients[v].got.len()
                    > before + 5),
                "cycle {cycle}: the viewer got no media"
            );
            connected_cycles += 1;
            if cycle % 20 == 0 {
                // Leaves by closing the PeerConnection, then DELETE (200 once).
                net.clients[v].rtc.close().unwrap();
                net.run_for(Duration::from_millis(50));
            }
        } else {
            net.run_for(Duration::from_millis(5));
        }
        assert!(matches!(net.delete(v), Ok(Reply::Deleted)), "cycle {cycle}");
        if cycle % 10 == 9 {
            // The publisher reconnects (OBS restart): DELETE, publish again.
            net.delete(p).unwrap();
            p = net.publish("soak");
            net.run_for(Duration::from_millis(300));
            assert!(net.connected(p), "cycle {cycle}: publisher reconnect");
        }
        let c = net.counts();
        assert_eq!(
            (c.sessions, c.rooms, c.tokens, c.ufrags, c.addr_lists),
            (1, 1, 1, 1, 1),
            "cycle {cycle}: {c:?}"
        );
        assert!(c.addrs <= 1, "cycle {cycle}: {c:?}");
        assert!(c.keyframe_timers <= 1);
        assert!(c.recently_ended <= 1000, "cycle {cycle}: {c:?}");
    }
    net.delete(p).unwrap();
    net.run_for(Duration::from_secs(1));
    net.assert_maps_empty();
    net.run_for(wisp::sfu::ENDED_GRACE);
    assert_eq!(net.counts().recently_ended, 0);
    let s = net.stats();
    assert_eq!(s.sessions_created, [51, 500]);
    assert_eq!(s.sessions_created, s.sessions_closed);
    assert_eq!(s.caught_panics, 0);
    net.assert_accounting();
    eprintln!(
        "500 join/leave cycles ({connected_cycles} connected) and 50 publisher reconnects in {:?} \
         ({:?} simulated)",
        t0.elapsed(),
        net.elapsed()
    );
}

// ------------------------------------------------------------ real binary

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kb: proc_status(pid, "VmRSS:"),
        fds: fds(pid),
        threads: proc_status(pid, "Threads:"),
    }
}

fn offer(dir: str0m::media::Direction) -> String {
    use str0m::media::MediaKind;
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        str0m::Candidate::host(std::net::SocketAddr::from(([127, 0, 0, 1], 9)), "udp").unwrap(),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// POST an offer; returns the session URL.
fn post(addr: std::net::SocketAddr, path: &str, offer: &str) -> String {
    let (status, headers, body) = realnet::http(addr, "POST", path, Some("application/sdp"), offer);
    assert_eq!(status, 201, "{path}: {body}");
    realnet::header(&headers, "location").unwrap().to_string()
}

#[test]
#[ignore = "long soak against the real binary (minutes)"]
fn join_leave_long_against_the_binary() {
    str0m::crypto::from_feature_flags().install_process_default();
    let server = realnet::start_server_with(&[("RUST_LOG", "warn")]);
    let a = server.http;
    let pid = server.child.id();
    let view = offer(str0m::media::Direction::RecvOnly);
    let publish = offer(str0m::media::Direction::SendOnly);
    let cycles = |n: usize, from: usize| {
        let mut publisher = post(a, "/whip/soak", &publish);
        for i in from..from + n {
            let loc = post(a, "/whep/soak", &view);
            // Half leave with DELETE; half just vanish (the connect timeout reaps them).
            if i % 2 == 0 {
                assert_eq!(realnet::http(a, "DELETE", &loc, None, "").0, 200);
            }
            if i % 10 == 9 {
                assert_eq!(realnet::http(a, "DELETE", &publisher, None, "").0, 200);
                publisher = post(a, "/whip/soak", &publish);
            }
            if i % 1000 == 999 {
                eprintln!("{} cycles: {:?}", i + 1, sample(pid));
            }
        }
        assert_eq!(realnet::http(a, "DELETE", &publisher, None, "").0, 200);
    };
    // Warm up to the steady state: ~3,000 cycles, until the allocator has
    // seen the peak of half-open sessions (vanished viewers live 15 s, ~700
    // at this rate; RSS climbs from ~32 MB to ~66 MB meanwhile, then stays).
    // Then let the vanished ones expire.
    cycles(3000, 0);
    std::thread::sleep(Duration::from_secs(17));
    let before = sample(pid);
    let t0 = Instant::now();
    cycles(10_000, 3000);
    // A few real peers over UDP in between: connect, get media, leave.
    for _ in 0..5 {
        let mut viewer =
            realnet::Peer::new(&server, "/whep/soak", str0m::media::Direction::RecvOnly);
        let mut publisher =
            realnet::Peer::new(&server, "/whip/soak", str0m::media::Direction::SendOnly);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut frame = 0;
        while Instant::now() < deadline && viewer.got_video.len() < 20 {
            publisher.pump();
            viewer.pump();
            if publisher.connected {
                publisher.send_frame(frame);
                frame += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(viewer.got_video.len() >= 20, "real peers got no media");
        for p in [&viewer, &publisher] {
            assert_eq!(realnet::http(a, "DELETE", &p.location, None, "").0, 200);
        }
    }
    let took = t0.elapsed();
    let during = sample(pid);
    // The vanished viewers are reaped by the 15 s connect timeout.
    std::thread::sleep(Duration::from_secs(17));
    let after = sample(pid);
    let (status, _, metrics) = realnet::http(a, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    let live = metric(&metrics, "wisp_sessions{");
    let rooms = metric(&metrics, "wisp_rooms");
    let created = metric(&metrics, "wisp_sessions_created_total");
    let closed = metric(&metrics, "wisp_sessions_closed_total");
    eprintln!(
        "10,000 WHEP join/leave cycles + 1,000 publisher reconnects + 5 real pairs in {took:?}\n\
         before: {before:?}\njust after: {during:?}\nafter reaping: {after:?}\n\
         RSS delta {} kB, fds delta {}, threads delta {}; sessions live {live}, rooms {rooms}, \
         created {created}, closed {closed}",
        after.rss_kb as i64 - before.rss_kb as i64,
        after.fds as i64 - before.fds as i64,
        after.threads as i64 - before.threads as i64,
    );
    assert_eq!((live, rooms), (0, 0));
    assert_eq!(created, closed);
    assert!(after.rss_kb <= before.rss_kb + 10 * 1024, "RSS grew");
    assert!(after.fds <= before.fds + 2, "fds grew");
    assert!(after.threads <= before.threads + 2, "threads grew");
}
