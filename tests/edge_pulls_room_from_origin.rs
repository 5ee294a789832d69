//! An edge pulls a room from its origin over WHEP: two (or three) cores in
//! one TestNet, a real str0m publisher on the origin, real str0m viewers on
//! the edge, and the test playing the relay driver (`TestNet::pull`: the
//! edge's `Pull` offer becomes a `Subscribe` on the origin, whose answer
//! goes back as `PullAnswer`).

mod common;

use std::time::Duration;

use common::{upstream_addrs, TestNet};
use str0m::media::MediaKind;
use wisp::sfu::{ApiError, Command, Reply, Role, RoomName, SfuConfig, UpstreamEnd, UpstreamEvent};

/// Origin is core 0; the edge is core 1.
fn origin_and_edge(seed: u64) -> (TestNet, usize) {
    let mut net = TestNet::new(seed);
    let edge = net.add_core(SfuConfig::default());
    (net, edge)
}

/// Viewer `v` got packets of `kind` numbered one after the other.
fn assert_continuous(net: &TestNet, v: usize, kind: MediaKind) {
    let seqs = net.seqs(v, kind);
    assert!(
        seqs.len() > 20,
        "viewer {v} {kind:?}: {} packets",
        seqs.len()
    );
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "viewer {v} {kind:?} numbering");
    }
}

fn ended(net: &TestNet, core: usize) -> Vec<UpstreamEvent> {
    net.upstream_events
        .iter()
        .filter(|(k, _)| *k == core)
        .map(|(_, e)| e.clone())
        .collect()
}

#[test]
fn edge_viewers_get_every_payload_in_order() {
    let (mut net, edge) = origin_and_edge(21);
    let p = net.publish_on(0, "live");
    let here = net.view_on(0, "live");
    // An edge viewer before the room is pulled waits, as before a publisher.
    let v = net.view_on(edge, "live");
    net.run_for(Duration::from_millis(500));
    assert!(net.connected(v) && net.clients[v].got.is_empty());

    let (_up, _) = net.pull(edge, 0, "live").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| n.clients[v]
        .got
        .iter()
        .any(|g| g.kind == MediaKind::Video)));
    net.run_for(Duration::from_secs(4));
    // Stop the publisher's media and let everything in flight arrive.
    net.media_on = false;
    net.run_for(Duration::from_millis(500));
    assert!(net.connected(p));

    for kind in [MediaKind::Video, MediaKind::Audio] {
        let at_edge = net.counters(v, kind);
        let first = at_edge[0];
        let at_origin: Vec<u64> = net
            .counters(here, kind)
            .into_iter()
            .filter(|c| *c >= first)
            .collect();
        assert_eq!(at_edge, at_origin, "{kind:?}: every payload, in order");
        assert_continuous(&net, v, kind);
    }
    assert!(net.clients[v]
        .got
        .iter()
        .all(|g| g.payload.len() == 200 && g.payload[10..].iter().all(|b| *b == 0xab)));

    let stats = net.core(edge).stats();
    assert_eq!(
        (stats.relay_upstreams, stats.relay_upstreams_connected),
        (1, 1)
    );
    assert_eq!(stats.sessions_live, [0, 1], "the upstream is no publisher");
    let now = net.now;
    let rooms = net.core(edge).list_rooms(now);
    assert!(rooms[0].relayed && rooms[0].publisher_live, "{rooms:?}");
    assert!(!net.sfu.list_rooms(net.now)[0].relayed);
    assert_eq!(
        net.sfu.stats().relay_downstreams,
        1,
        "the origin counts the edge"
    );
    net.assert_accounting();
}

#[test]
fn late_edge_viewer_gets_a_keyframe_from_the_origin_publisher() {
    let (mut net, edge) = origin_and_edge(22);
    let p = net.publish_on(0, "late");
    let v1 = net.view_on(edge, "late");
    net.pull(edge, 0, "late").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| n.clients[v1]
        .got
        .iter()
        .any(|g| g.kind == MediaKind::Video)));
    // Past the first keyframe, well before the periodic one (every 3 s).
    net.run_for(Duration::from_millis(1500));
    let requests = net.clients[p].keyframe_requests;

    let v2 = net.view_on(edge, "late");
    let (first, wait) = net.first_video_after_connecting(v2, Duration::from_secs(2));
    eprintln!(
        "late edge viewer: first video {} ms after connecting",
        wait.as_millis()
    );
    assert!(
        wait <= Duration::from_millis(400),
        "first video after {wait:?}"
    );
    // The start of a keyframe (VP8 S bit set, P bit clear).
    assert!(first.starts_vp8_keyframe());
    assert!(
        net.clients[p].keyframe_requests > requests,
        "the PLI went up to the origin's publisher"
    );
    net.run_for(Duration::from_secs(1));
    assert_continuous(&net, v1, MediaKind::Video);
}

#[test]
fn upstream_ends_five_seconds_after_the_last_edge_viewer() {
    let (mut net, edge) = origin_and_edge(23);
    net.publish_on(0, "idle");
    let v = net.view_on(edge, "idle");
    let (up, _) = net.pull(edge, 0, "idle").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    net.run_for(Duration::from_secs(1));

    net.delete(v).expect("delete");
    let left = net.now;
    assert!(net.run_until(Duration::from_secs(10), |n| !ended(n, edge).is_empty()));
    let after = net.now - left;
    assert!(
        after >= Duration::from_secs(5) && after <= Duration::from_millis(5100),
        "ended {after:?} after the last viewer left"
    );
    assert_eq!(
        ended(&net, edge),
        vec![UpstreamEvent::Ended {
            room: RoomName::new("idle").unwrap(),
            token: up,
            why: UpstreamEnd::Idle,
            viewers: 0,
        }]
    );
    // Nothing is left on the edge, and the origin's session for it closed.
    net.run_for(Duration::from_secs(1));
    let c = net.core(edge).counts();
    assert_eq!(
        (c.sessions, c.rooms, c.tokens, c.addrs, c.ufrags),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(net.core(edge).stats().relay_upstreams_ended, 1);
    assert_eq!(net.sfu.stats().sessions_live, [1, 0]);
}

#[test]
fn a_viewer_back_within_five_seconds_keeps_the_upstream() {
    let (mut net, edge) = origin_and_edge(24);
    net.publish_on(0, "back");
    let v = net.view_on(edge, "back");
    net.pull(edge, 0, "back").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    net.delete(v).expect("delete");
    net.run_for(Duration::from_secs(3));
    let v2 = net.view_on(edge, "back");
    net.run_for(Duration::from_secs(4));
    assert!(ended(&net, edge).is_empty());
    assert!(net.clients[v2]
        .got
        .iter()
        .any(|g| g.kind == MediaKind::Video));
}

#[test]
fn origin_publisher_reconnect_keeps_edge_numbering() {
    let (mut net, edge) = origin_and_edge(25);
    let p1 = net.publish_on(0, "re");
    let v = net.view_on(edge, "re");
    net.pull(edge, 0, "re").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    net.run_for(Duration::from_secs(2));
    let before = net.clients[v].got.len();

    net.delete(p1).expect("delete");
    net.run_for(Duration::from_millis(500));
    let p2 = net.publish_on(0, "re");
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p2));
    assert!(
        net.clients[v].got.len() > before + 50,
        "the new publisher reaches the edge"
    );
    assert!(ended(&net, edge).is_empty(), "the upstream stayed up");
    assert_continuous(&net, v, MediaKind::Video);
    assert_continuous(&net, v, MediaKind::Audio);
}

#[test]
fn a_new_upstream_after_one_ended_keeps_edge_numbering() {
    let (mut net, edge) = origin_and_edge(26);
    net.publish_on(0, "again");
    let v = net.view_on(edge, "again");
    let (_, at_origin) = net.pull(edge, 0, "again").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    net.run_for(Duration::from_secs(1));
    let before = net.clients[v].got.len();

    // The origin drops the edge's session (its DELETE): the upstream ends
    // with its viewer waiting, and the driver pulls again.
    let del = Command::DeleteSession {
        role: Role::Subscriber,
        room: RoomName::new("again").unwrap(),
        token: at_origin,
    };
    assert!(matches!(net.command_on(0, del), Ok(Reply::Deleted)));
    assert!(net.run_until(Duration::from_secs(20), |n| !ended(n, edge).is_empty()));
    let UpstreamEvent::Ended { why, viewers, .. } = ended(&net, edge)[0].clone();
    assert_eq!((why, viewers), (UpstreamEnd::Failed, 1));

    net.pull(edge, 0, "again").expect("pull again");
    net.run_for(Duration::from_secs(2));
    assert!(net.clients[v].got.len() > before + 50);
    assert_continuous(&net, v, MediaKind::Video);
    assert_continuous(&net, v, MediaKind::Audio);
}

#[test]
fn edges_form_a_tree() {
    let mut net = TestNet::new(27);
    let mid = net.add_core(SfuConfig::default());
    let leaf = net.add_core(SfuConfig::default());
    net.publish_on(0, "tree");
    let v = net.view_on(leaf, "tree");
    // The leaf pulls from the middle edge (its upstream is a viewer there),
    // which pulls from the origin.
    net.pull(leaf, mid, "tree").expect("leaf pull");
    net.pull(mid, 0, "tree").expect("middle pull");
    assert!(net.run_until(Duration::from_secs(5), |n| n.clients[v]
        .got
        .iter()
        .any(|g| g.kind == MediaKind::Video)));
    net.run_for(Duration::from_secs(3));
    assert_continuous(&net, v, MediaKind::Video);
    assert_continuous(&net, v, MediaKind::Audio);
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let got = net.counters(v, kind);
        assert!(got.windows(2).all(|w| w[1] > w[0]), "{kind:?} in order");
    }
    assert_eq!(net.core(mid).stats().relay_upstreams, 1);
    assert_eq!(net.core(mid).stats().sessions_live, [0, 1]);
    assert!(net.upstream_events.is_empty());
}

#[test]
fn one_source_per_room_and_failed_pulls_end_cleanly() {
    let (mut net, edge) = origin_and_edge(28);
    net.publish_on(0, "one");
    let v = net.view_on(edge, "one");
    let (up, _) = net.pull(edge, 0, "one").expect("pull");
    let now = net.now;
    let room = RoomName::new("one").unwrap();
    // A second pull, or a WHIP publish, into a room with a source: 409.
    let again = Command::Pull { room: room.clone() };
    assert_eq!(
        net.core(edge).handle_command(now, again).err(),
        Some(ApiError::AlreadyPublished)
    );
    assert_eq!(
        net.join_on(
            edge,
            "one",
            true,
            &[(MediaKind::Video, str0m::media::Direction::SendOnly)],
            &Default::default()
        )
        .err(),
        Some(ApiError::AlreadyPublished)
    );
    // The upstream's token is not a WHIP session's.
    let del = Command::DeleteSession {
        role: Role::Publisher,
        room: room.clone(),
        token: up,
    };
    assert_eq!(
        net.core(edge).handle_command(now, del).err(),
        Some(ApiError::NotFound)
    );

    // Closing the room on the edge ends the upstream (and its viewer).
    let close = Command::CloseRoom { room: room.clone() };
    assert!(net.core(edge).handle_command(now, close).is_ok());
    net.run_for(Duration::from_millis(100));
    let UpstreamEvent::Ended { why, .. } = ended(&net, edge)[0].clone();
    assert_eq!(why, UpstreamEnd::RoomClosed);
    assert!(!net.connected(v) || net.core(edge).counts().sessions == 0);

    // A pull whose HTTP exchange failed: the waiting viewer stays.
    let w = net.view_on(edge, "two");
    let now = net.now;
    let two = RoomName::new("two").unwrap();
    let Ok(Reply::PullOffer { token, .. }) = net
        .core(edge)
        .handle_command(now, Command::Pull { room: two.clone() })
    else {
        panic!("pull")
    };
    let failed = Command::PullFailed {
        room: two.clone(),
        token,
    };
    assert!(matches!(
        net.core(edge).handle_command(now, failed),
        Ok(Reply::Done)
    ));
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.core(edge).counts().sessions, 1, "the viewer waits");
    assert!(net.connected(w));
    let UpstreamEvent::Ended { why, viewers, .. } = ended(&net, edge)[1].clone();
    assert_eq!((why, viewers), (UpstreamEnd::PullFailed, 1));

    // A bad answer ends the upstream with the reason.
    let now = net.now;
    let Ok(Reply::PullOffer { token, .. }) = net
        .core(edge)
        .handle_command(now, Command::Pull { room: two.clone() })
    else {
        panic!("pull")
    };
    let bad = Command::PullAnswer {
        room: two.clone(),
        token,
        answer: "v=0\r\nnot an answer\r\n".into(),
    };
    assert!(matches!(
        net.core(edge).handle_command(now, bad),
        Err(ApiError::BadOffer(_))
    ));
    net.run_for(Duration::from_millis(100));
    let UpstreamEvent::Ended { why, .. } = ended(&net, edge)[2].clone();
    assert_eq!(why, UpstreamEnd::BadAnswer);
    assert_eq!(net.core(edge).stats().relay_upstreams, 0);
}

#[test]
fn one_edge_pulls_two_rooms_from_one_origin_on_two_addresses() {
    let mut net = TestNet::new(29);
    // The edge (core 1) has two local addresses for upstreams: a peer
    // connection is one 5-tuple, so two pulls from one origin need two.
    let edge = net.add_core(SfuConfig {
        upstream_addrs: upstream_addrs(1, 2),
        ..SfuConfig::default()
    });
    net.publish_on(0, "first");
    let p2 = net.publish_on(0, "second");
    // The second publisher's payloads are numbered from a million on.
    net.clients[p2].counter = 1_000_000;
    let a = net.view_on(edge, "first");
    let b = net.view_on(edge, "second");
    net.pull(edge, 0, "first").expect("pull first");
    net.pull(edge, 0, "second").expect("pull second");
    assert_eq!(net.core(edge).counts().upstream_addrs_used, 2);
    // Both are in use: a third pull is refused before it starts.
    let now = net.now;
    let third = Command::Pull {
        room: RoomName::new("third").unwrap(),
    };
    assert_eq!(
        net.core(edge).handle_command(now, third).err(),
        Some(ApiError::AtCapacity)
    );
    net.run_for(Duration::from_secs(4));
    assert_continuous(&net, a, MediaKind::Video);
    assert_continuous(&net, b, MediaKind::Video);
    assert_continuous(&net, a, MediaKind::Audio);
    assert!(ended(&net, edge).is_empty(), "{:?}", net.upstream_events);
    // Each room's payloads are its own publisher's.
    for kind in [MediaKind::Video, MediaKind::Audio] {
        assert!(net.counters(a, kind).iter().all(|c| *c < 1_000_000));
        assert!(net.counters(b, kind).iter().all(|c| *c > 1_000_000));
    }

    // Its address is free again once the upstream ends.
    net.delete(a).expect("delete");
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.core(edge).counts().upstream_addrs_used, 1);
}

#[test]
fn a_second_pull_from_one_origin_on_a_shared_socket_is_refused() {
    let (mut net, edge) = origin_and_edge(30);
    net.publish_on(0, "first");
    net.publish_on(0, "second");
    let a = net.view_on(edge, "first");
    net.view_on(edge, "second");
    net.pull(edge, 0, "first").expect("pull first");
    let refused = net.pull(edge, 0, "second");
    assert!(
        matches!(refused, Err(ApiError::BadOffer(ref r)) if r.contains("upstream_addrs")),
        "{refused:?}"
    );
    net.run_for(Duration::from_secs(3));
    // The first upstream is untouched.
    assert_continuous(&net, a, MediaKind::Video);
    let events = ended(&net, edge);
    assert_eq!(events.len(), 1, "{events:?}");
    let UpstreamEvent::Ended { why, room, .. } = events[0].clone();
    assert_eq!(
        (why, room.to_string()),
        (UpstreamEnd::BadAnswer, "second".into())
    );
}

#[test]
fn origin_killed_then_the_room_goes_live_on_another_node() {
    let mut net = TestNet::new(31);
    let edge = net.add_core(SfuConfig::default());
    let other = net.add_core(SfuConfig::default());
    let p = net.publish_on(0, "moved");
    let v = net.view_on(edge, "moved");
    net.pull(edge, 0, "moved").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    net.run_for(Duration::from_secs(1));
    let before = net.clients[v].got.len();

    // The origin dies with its publisher.
    net.kill_core(0);
    net.clients[p].alive = false;
    let killed = net.now;
    // Left alone, the edge finds out by ICE consent (the upstream is the
    // controlling agent), and its viewer waits.
    assert!(net.run_until(Duration::from_secs(60), |n| !ended(n, edge).is_empty()));
    let noticed = net.now - killed;
    eprintln!(
        "upstream ended {} ms after the origin died",
        noticed.as_millis()
    );
    assert!(noticed <= Duration::from_secs(8), "{noticed:?}");
    let UpstreamEvent::Ended { why, viewers, .. } = ended(&net, edge)[0].clone();
    assert_eq!((why, viewers), (UpstreamEnd::Failed, 1));
    assert_eq!(net.core(edge).counts().sessions, 1, "the viewer waits");

    // The publisher comes back on another node; the driver pulls from it.
    let p2 = net.publish_on(other, "moved");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p2)));
    net.pull(edge, other, "moved")
        .expect("pull from the new origin");
    let pulled = net.now;
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.clients[v].got.len() > before
            && n.clients[v].got[before..]
                .iter()
                .any(|g| g.kind == MediaKind::Video))
    );
    let first = net.clients[v].got[before..]
        .iter()
        .find(|g| g.kind == MediaKind::Video)
        .unwrap()
        .at;
    eprintln!("video {} ms after the pull", (first - pulled).as_millis());
    assert!(first - pulled <= Duration::from_secs(2));
    net.run_for(Duration::from_secs(2));
    assert_continuous(&net, v, MediaKind::Video);
    assert_continuous(&net, v, MediaKind::Audio);
}

#[test]
fn the_driver_ends_an_upstream_at_any_time() {
    let (mut net, edge) = origin_and_edge(32);
    net.publish_on(0, "cut");
    let v = net.view_on(edge, "cut");
    let (up, _) = net.pull(edge, 0, "cut").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| !n.clients[v].got.is_empty()));
    // The driver learns the origin is gone (its claim expired): it need
    // not wait for ICE to notice.
    let cmd = Command::PullFailed {
        room: RoomName::new("cut").unwrap(),
        token: up,
    };
    assert!(matches!(net.command_on(edge, cmd), Ok(Reply::Done)));
    net.run_for(Duration::from_millis(100));
    let UpstreamEvent::Ended { why, viewers, .. } = ended(&net, edge)[0].clone();
    assert_eq!((why, viewers), (UpstreamEnd::PullFailed, 1));
    // The room is free for the next pull.
    net.pull(edge, 0, "cut").expect("pull again");
}
