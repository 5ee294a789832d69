//! The real binary on 127.0.0.1: a str0m publisher and a str0m viewer over real
//! HTTP (WHIP/WHEP) and real UDP. Bounded: every wait has a deadline.

mod realnet;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use realnet::*;
use str0m::media::Direction;

#[test]
fn publish_and_play_over_real_sockets() {
    str0m::crypto::from_feature_flags().install_process_default();
    let server = start_server();
    assert_eq!(http(server.http, "GET", "/healthz", None, "").0, 200);

    let mut viewer = Peer::new(&server, "/whep/e2e", Direction::RecvOnly);
    let mut publisher = Peer::new(&server, "/whip/e2e", Direction::SendOnly);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frame = 0u64;
    let mut next_frame = Instant::now();
    while Instant::now() < deadline && viewer.got_video.len() < 100 {
        publisher.pump();
        viewer.pump();
        if publisher.connected && Instant::now() >= next_frame {
            publisher.send_frame(frame);
            frame += 1;
            next_frame += Duration::from_millis(20);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "loopback: publisher sent {frame} frames, viewer got {} video and {} audio packets",
        viewer.got_video.len(),
        viewer.got_audio
    );
    assert!(viewer.connected && publisher.connected);
    assert!(
        viewer.got_video.len() >= 100,
        "viewer got {} video packets",
        viewer.got_video.len()
    );
    assert!(viewer
        .got_video
        .iter()
        .all(|p| p.len() == 1000 && p[10..].iter().all(|b| *b == 0x5a)));
    // Video starts on a keyframe and counts up without gaps.
    let counters: Vec<u64> = viewer
        .got_video
        .iter()
        .map(|p| u64::from_be_bytes(p[2..10].try_into().unwrap()))
        .collect();
    assert!(
        counters[0].is_multiple_of(30),
        "first video packet is a keyframe"
    );
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "no loss on loopback"
    );

    let (rooms_status, _, rooms) = http(server.http, "GET", "/api/rooms", None, "");
    assert_eq!(rooms_status, 200);
    assert!(rooms.contains("\"e2e\""), "{rooms}");

    for p in [&viewer, &publisher] {
        assert_eq!(http(server.http, "DELETE", &p.location, None, "").0, 200);
        assert_eq!(http(server.http, "DELETE", &p.location, None, "").0, 404);
    }
    let (_, _, rooms) = http(server.http, "GET", "/api/rooms", None, "");
    assert!(!rooms.contains("\"e2e\""), "room pruned: {rooms}");
}

#[test]
fn sigterm_closes_every_session_and_exits_within_two_seconds() {
    str0m::crypto::from_feature_flags().install_process_default();
    let mut server = start_server();
    let mut viewer = Peer::new(&server, "/whep/bye", Direction::RecvOnly);
    let mut publisher = Peer::new(&server, "/whip/bye", Direction::SendOnly);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !(viewer.connected && publisher.connected) {
        publisher.pump();
        viewer.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(viewer.connected && publisher.connected);

    let pid = server.child.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        publisher.pump();
        viewer.pump();
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    // Let the last datagrams (DTLS close_notify) arrive.
    for _ in 0..20 {
        publisher.pump();
        viewer.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "SIGTERM: exited {status} after {} ms; peers told: viewer {} publisher {}",
        took.as_millis(),
        viewer.closed,
        publisher.closed
    );
    assert!(status.success(), "{status}");
    assert!(
        viewer.closed && publisher.closed,
        "every peer got a DTLS close"
    );
}
