//! Edges pulling from an origin that serves HTTPS (issue 15): real `wisp`
//! binaries on one real `redis-server`, the origin with a self-signed
//! certificate generated here and `WISP_NODE_URL=https://...`. An edge that
//! trusts the certificate (`SSL_CERT_FILE`, the standard way) relays the
//! room to its viewer; one that does not fails each pull cleanly (logged,
//! counted in `wisp_relay_pull_failures_total`), its viewer keeps waiting
//! and nothing crashes. Without `redis-server` the tests print SKIPPED
//! (unless `CI` is set).

mod cluster;
mod realnet;
mod support;

use std::time::{Duration, Instant};

use str0m::media::Direction;

use cluster::{nodes, run, run_until_video, Node};
use support::redis::{have_redis, Redis};
use support::TlsFiles;

#[test]
fn an_edge_trusting_the_origins_certificate_relays_over_https() {
    if !have_redis("an_edge_trusting_the_origins_certificate_relays_over_https") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    let tls = TlsFiles::generate("cluster-tls-trusted");
    let origin = Node::start_tls(&redis.url(), &tls, &[]);
    let cert = tls.cert.to_str().unwrap();
    let edge = Node::start(&redis.url(), &[("SSL_CERT_FILE", cert)]);
    edge.until("two nodes", Duration::from_secs(6), |v| nodes(v).len() == 2);
    assert!(origin.url.starts_with("https://"), "{}", origin.url);

    let mut publisher = origin.peer("/whip/secure", Direction::SendOnly);
    let mut viewer = edge.peer("/whep/secure", Direction::RecvOnly);
    let mut frame = 0;
    let ok = run_until_video(&mut publisher, &mut viewer, &mut frame, 50);
    assert!(
        ok,
        "the edge viewer got {} video packets; edge log: {:?}",
        viewer.got_video.len(),
        edge.wisp.log_lines("relay")
    );
    let seq = &viewer.got_video_seq;
    assert!(seq.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert_eq!(viewer.got_video[0][1] & 0x01, 0, "starts on a keyframe");
    let rooms = edge.get("/api/rooms", &[]).json();
    assert_eq!(rooms[0]["origin"], origin.id().as_str(), "{rooms}");
    assert_eq!(rooms[0]["relayed"], true, "{rooms}");
    assert_eq!(edge.metric("wisp_relay_upstreams"), 1);
    assert_eq!(edge.metric("wisp_relay_pull_failures_total"), 0);
    assert_eq!(origin.metric("wisp_relay_downstreams"), 1);
}

#[test]
fn an_edge_not_trusting_the_origins_certificate_fails_the_pull_cleanly() {
    if !have_redis("an_edge_not_trusting_the_origins_certificate_fails_the_pull_cleanly") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    let tls = TlsFiles::generate("cluster-tls-origin");
    // The edge trusts another certificate only.
    let other = TlsFiles::generate("cluster-tls-other");
    let origin = Node::start_tls(&redis.url(), &tls, &[]);
    let cert = other.cert.to_str().unwrap();
    let mut edge = Node::start(&redis.url(), &[("SSL_CERT_FILE", cert)]);
    edge.until("two nodes", Duration::from_secs(6), |v| nodes(v).len() == 2);

    let mut publisher = origin.peer("/whip/secure", Direction::SendOnly);
    // The viewer is taken (201) and waits, as for a room live nowhere.
    let mut viewer = edge.peer("/whep/secure", Direction::RecvOnly);
    let mut frame = 0;
    // Pulls are retried every second; wait for at least two failures.
    let mut failures = 0;
    let t = Instant::now();
    while failures < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{failures} pull failures counted; edge log: {:?}",
            edge.wisp.log_lines("relay")
        );
        run(
            &mut publisher,
            &mut [&mut viewer],
            &mut frame,
            Duration::from_millis(500),
            |_| false,
        );
        failures = edge.metric("wisp_relay_pull_failures_total");
    }
    assert!(publisher.connected, "the origin's publisher is live");
    assert!(viewer.got_video.is_empty(), "no media without a pull");
    assert!(!viewer.closed, "the edge viewer keeps waiting");
    assert_eq!(edge.metric("wisp_relay_upstreams"), 0);
    // The origin never saw a session from the edge.
    assert_eq!(origin.metric("wisp_relay_downstreams"), 0);
    // Logged once (a warning), naming the certificate.
    let warned = edge.wisp.log_lines("relay: pull of room secure");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("WARN") && warned[0].to_lowercase().contains("certificate"),
        "{warned:?}"
    );
    // Nothing crashed: both serve, the edge's viewer session is still there.
    assert!(edge.wisp.child.try_wait().unwrap().is_none(), "edge exited");
    assert_eq!(edge.get("/healthz", &[]).status, 200);
    assert_eq!(origin.get("/healthz", &[]).status, 200);
    let rooms = edge.get("/api/rooms", &[]).json();
    assert_eq!(rooms[0]["viewers"], 1, "{rooms}");
}
