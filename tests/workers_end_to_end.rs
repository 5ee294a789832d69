//! The real binary with `--workers 2` on 127.0.0.1: two rooms, each with a
//! str0m publisher and a viewer, land on different workers (different UDP
//! ports); every viewer gets every frame in order, the session URLs reach
//! their worker (DELETE), `/metrics` and `/api/rooms` cover both workers,
//! and SIGTERM stops both loops. Bounded: every wait has a deadline.

mod realnet;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use realnet::*;
use str0m::media::Direction;

/// Pump every peer, each publisher sending a frame every 20 ms, until
/// every viewer has `frames` video packets or 20 s passed.
fn run(publishers: &mut [Peer], viewers: &mut [Peer], frames: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frame = 0u64;
    let mut next = Instant::now();
    while Instant::now() < deadline && viewers.iter().any(|v| v.got_video.len() < frames) {
        for p in publishers.iter_mut().chain(viewers.iter_mut()) {
            p.pump();
        }
        if publishers.iter().all(|p| p.connected) && Instant::now() >= next {
            for p in publishers.iter_mut() {
                p.send_frame(frame);
            }
            frame += 1;
            next += Duration::from_millis(20);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The frame counters a viewer got: from a keyframe, without gaps.
fn assert_in_order(v: &Peer, frames: usize) {
    assert!(
        v.got_video.len() >= frames,
        "{}: {} video packets",
        v.location,
        v.got_video.len()
    );
    let counters: Vec<u64> = v
        .got_video
        .iter()
        .map(|p| u64::from_be_bytes(p[2..10].try_into().unwrap()))
        .collect();
    assert!(counters[0].is_multiple_of(30), "starts on a keyframe");
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap: {counters:?}"
    );
}

/// The value of the metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

#[test]
fn two_workers_serve_rooms_on_two_ports() {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut server = start_server_with(&[("WISP_WORKERS", "2")]);
    // (The launcher hands out the address before it keeps the line.)
    let deadline = Instant::now() + Duration::from_secs(2);
    let line = loop {
        let line = server.log_lines("wisp listening:").join("");
        if !line.is_empty() || Instant::now() > deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(line.contains("workers=2"), "{line}");

    // Room a goes to worker 0, room b to the less loaded worker 1.
    let pa = Peer::new(&server, "/whip/a", Direction::SendOnly);
    let pb = Peer::new(&server, "/whip/b", Direction::SendOnly);
    let va = Peer::new(&server, "/whep/a", Direction::RecvOnly);
    let vb = Peer::new(&server, "/whep/b", Direction::RecvOnly);
    assert_eq!(pa.server_ports().len(), 1);
    assert_eq!(
        pa.server_ports(),
        va.server_ports(),
        "a viewer joins its room's worker"
    );
    assert_eq!(pb.server_ports(), vb.server_ports());
    assert_ne!(
        pa.server_ports(),
        pb.server_ports(),
        "rooms spread over both ports"
    );

    let mut publishers = [pa, pb];
    let mut viewers = [va, vb];
    run(&mut publishers, &mut viewers, 100);
    for v in &viewers {
        assert_in_order(v, 100);
    }

    let (status, _, rooms) = http(server.http, "GET", "/api/rooms", None, "");
    assert_eq!(status, 200);
    assert!(
        rooms.contains("\"a\"") && rooms.contains("\"b\""),
        "{rooms}"
    );
    let (status, _, text) = http(server.http, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    for w in ["0", "1"] {
        let s = metric(&text, &format!("wisp_worker_sessions{{worker=\"{w}\"}}"));
        assert_eq!(s, 2.0, "worker {w}: {text}");
        let f = metric(
            &text,
            &format!("wisp_worker_forwarded_packets_total{{worker=\"{w}\"}}"),
        );
        assert!(f >= 100.0, "worker {w} forwarded {f}");
    }
    assert_eq!(metric(&text, "wisp_rooms "), 2.0);
    assert_eq!(
        metric(&text, "wisp_sessions{role=\"viewer\",state=\"connected\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "wisp_packets_dropped_total{reason=\"relay_queue_full\"}"
        ),
        0.0
    );

    // Session URLs reach the worker that owns them.
    let [_, vb] = &viewers;
    assert_eq!(http(server.http, "DELETE", &vb.location, None, "").0, 200);
    assert_eq!(http(server.http, "DELETE", &vb.location, None, "").0, 404);
    // A room close reaches every worker.
    let (status, _, body) = http(server.http, "DELETE", "/api/rooms/a", None, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"closed\":2"), "{body}");

    // SIGTERM stops both loops.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let sent = Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "still running 3 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn one_room_s_viewers_spread_over_both_workers_through_the_relay() {
    str0m::crypto::from_feature_flags().install_process_default();
    let server = start_server_with(&[("WISP_WORKERS", "2")]);
    let p = Peer::new(&server, "/whip/big", Direction::SendOnly);
    // The home (worker 0) takes viewers while it is at most one session
    // busier than the other worker; past that they go to worker 1.
    let viewers: Vec<Peer> = (0..4)
        .map(|_| Peer::new(&server, "/whep/big", Direction::RecvOnly))
        .collect();
    let home = p.server_ports();
    let relayed = viewers.iter().filter(|v| v.server_ports() != home).count();
    assert_eq!(relayed, 2, "two of four viewers on the other worker");

    let mut publishers = [p];
    let mut viewers = viewers;
    run(&mut publishers, &mut viewers, 100);
    for v in &viewers {
        assert_in_order(v, 100);
    }
    let (_, _, text) = http(server.http, "GET", "/metrics", None, "");
    for w in ["0", "1"] {
        let f = metric(
            &text,
            &format!("wisp_worker_forwarded_packets_total{{worker=\"{w}\"}}"),
        );
        assert!(f >= 200.0, "worker {w} forwarded {f}");
    }
    let (_, _, rooms) = http(server.http, "GET", "/api/rooms", None, "");
    assert!(
        rooms.contains("\"viewers\":4"),
        "one room, four viewers: {rooms}"
    );
    // Viewers leave from both workers; the room goes once the publisher does.
    for v in &viewers {
        assert_eq!(http(server.http, "DELETE", &v.location, None, "").0, 200);
    }
    let [p] = &publishers;
    assert_eq!(http(server.http, "DELETE", &p.location, None, "").0, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, rooms) = http(server.http, "GET", "/api/rooms", None, "");
        if rooms == "[]" {
            break;
        }
        assert!(Instant::now() < deadline, "room not pruned: {rooms}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
