//! Viewers before publishers, and publishers that come back: the viewer's
//! session lives on and its stream stays continuous across publishers.

mod common;

use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;
use wisp::sfu::{ApiError, Reply};

#[test]
fn viewer_first_then_publisher_leaves_and_another_arrives() {
    let mut net = TestNet::new(4);
    let v = net.view("re");
    net.run_for(Duration::from_secs(1));
    assert!(net.connected(v), "a viewer connects with no publisher");
    assert!(net.clients[v].got.is_empty());

    let p1 = net.publish("re");
    net.run_for(Duration::from_secs(2));
    let from_p1 = net.clients[v].got.len();
    assert!(from_p1 > 50, "got {from_p1}");

    assert!(matches!(net.delete(p1), Ok(Reply::Deleted)));
    assert_eq!(
        net.delete(p1).err(),
        Some(ApiError::NotFound),
        "second DELETE is 404"
    );
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.room_count(), 1, "the viewer keeps the room");

    let p2 = net.publish("re");
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p2));
    let got = &net.clients[v].got;
    assert!(
        got.len() > from_p1 + 50,
        "viewer receives the new publisher"
    );
    for kind in [MediaKind::Video, MediaKind::Audio] {
        for w in net.seqs(v, kind).windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "{kind:?} sequence continuous across publishers"
            );
        }
        let ts: Vec<u32> = got
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.ts)
            .collect();
        for w in ts.windows(2) {
            let d = w[1].wrapping_sub(w[0]);
            assert!(
                d < 90_000 * 2,
                "{kind:?} timestamp moves forward by less than 2 s: {d}"
            );
        }
    }
}

#[test]
fn second_publisher_is_refused_while_the_first_is_live() {
    let mut net = TestNet::new(5);
    let p = net.publish("busy");
    net.run_for(Duration::from_secs(1));
    assert!(net.connected(p));
    let r = net.join(
        "busy",
        true,
        &[(MediaKind::Video, str0m::media::Direction::SendOnly)],
    );
    assert_eq!(r.err(), Some(ApiError::AlreadyPublished));
}
