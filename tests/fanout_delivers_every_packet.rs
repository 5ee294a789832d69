//! A publisher sends VP8 + Opus; two viewers receive every payload intact and in order.

mod common;

use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;

#[test]
fn two_viewers_receive_every_payload_in_order() {
    let mut net = TestNet::new(1);
    let v1 = net.view("room1");
    let v2 = net.view("room1");
    let p = net.publish("room1");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(v1)
        && n.connected(v2)));
    net.run_for(Duration::from_secs(5));

    for v in [v1, v2] {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let got = net.counters(v, kind);
            assert!(
                got.len() > 100,
                "viewer {v} {kind:?} got only {}",
                got.len()
            );
            // In order, no gaps, no duplicates from the first packet on.
            for w in got.windows(2) {
                assert!(w[1] > w[0], "viewer {v} {kind:?} out of order: {w:?}");
            }
        }
        let video: Vec<_> = net.clients[v]
            .got
            .iter()
            .filter(|g| g.kind == MediaKind::Video)
            .collect();
        for w in video.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "continuous sequence numbers");
        }
        // Payloads intact: 200 bytes, tail untouched.
        assert!(net.clients[v]
            .got
            .iter()
            .all(|g| g.payload.len() == 200 && g.payload[10..].iter().all(|b| *b == 0xab)));
    }
    // Every video packet the publisher sent after the first keyframe reached both viewers.
    let v1_video = net.counters(v1, MediaKind::Video);
    let v2_video = net.counters(v2, MediaKind::Video);
    assert_eq!(v1_video.len(), v2_video.len());
    net.assert_accounting();
    let stats = net.stats();
    eprintln!(
        "delivered: v1 video {} audio {}, v2 video {} audio {}; rtp_in {} forwarded {}",
        v1_video.len(),
        net.counters(v1, MediaKind::Audio).len(),
        v2_video.len(),
        net.counters(v2, MediaKind::Audio).len(),
        stats.rtp_in,
        stats.rtp_forwarded
    );
}
