//! A viewer that joins mid-stream gets a keyframe quickly: the server asks the
//! publisher for one when the viewer connects, and holds video back until it starts.

mod common;

use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;

#[test]
fn late_viewer_gets_a_keyframe_within_a_few_hundred_ms() {
    let mut net = TestNet::new(2);
    let p = net.publish("late");
    let v1 = net.view("late");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(v1)));
    // Past the first keyframe and well before the periodic one at 3 s.
    net.run_for(Duration::from_millis(1500));
    let requests_before = net.clients[p].keyframe_requests;

    let v2 = net.view("late");
    let (first, wait) = net.first_video_after_connecting(v2, Duration::from_secs(2));
    eprintln!(
        "late viewer: first video packet {} ms after connecting",
        wait.as_millis()
    );
    assert!(
        wait <= Duration::from_millis(300),
        "first video after {wait:?}"
    );
    // The first packet it sees is the start of a keyframe (VP8 P bit clear).
    assert!(first.starts_vp8_keyframe());
    assert!(net.clients[p].keyframe_requests > requests_before);

    // The early viewer was not disturbed: its video stays continuous.
    net.run_for(Duration::from_secs(1));
    let v1_video = net.seqs(v1, MediaKind::Video);
    assert!(v1_video.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn keyframe_requests_are_throttled() {
    let mut net = TestNet::new(3);
    let p = net.publish("pli");
    let v = net.view("pli");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_millis(500));
    let before = net.clients[p].keyframe_requests;
    // Ten viewers join within 100 ms: at most one request now and one deferred.
    for _ in 0..10 {
        net.view("pli");
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(1500));
    let sent = net.clients[p].keyframe_requests - before;
    eprintln!("keyframe requests reaching the publisher for 10 joins: {sent}");
    assert!((1..=3).contains(&sent), "{sent} requests");
}
