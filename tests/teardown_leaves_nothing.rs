//! Every map returns to empty: after DELETEs, after a connect timeout, after ICE dies.

mod common;

use std::time::Duration;

use common::TestNet;
use wisp::sfu::ApiError;

#[test]
fn deletes_clear_every_map() {
    let mut net = TestNet::new(7);
    let p = net.publish("t");
    let v1 = net.view("t");
    let v2 = net.view("t");
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.room_count(), 1);
    assert!(net.counts().addrs >= 3);
    for i in [v1, p, v2] {
        net.delete(i).unwrap();
    }
    net.assert_maps_empty();
    assert_eq!(net.delete(v1).err(), Some(ApiError::NotFound));
    net.run_for(Duration::from_secs(2));
    net.assert_maps_empty();
    let s = net.stats();
    assert_eq!(s.sessions_created, s.sessions_closed);
}

#[test]
fn a_session_that_never_connects_is_dropped() {
    let mut net = TestNet::new(8);
    let v = net.view("ghost");
    net.clients[v].blackholed = true;
    net.run_for(Duration::from_secs(14));
    assert_eq!(net.counts().sessions, 1);
    net.run_for(Duration::from_secs(2));
    net.assert_maps_empty();
    assert_eq!(net.stats().connect_timeouts, 1);
}

#[test]
fn a_vanished_publisher_is_closed_and_viewers_stay() {
    let mut net = TestNet::new(9);
    let p = net.publish("gone");
    let v = net.view("gone");
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p) && net.connected(v));
    net.clients[p].blackholed = true;
    let t0 = net.now;
    assert!(net.run_until(Duration::from_secs(25), |n| n.counts().sessions == 1));
    let took = net.now - t0;
    eprintln!("vanished publisher closed after {took:?}");
    assert!(took <= Duration::from_secs(20));
    assert_eq!(net.list_rooms()[0].viewers, 1);
    assert!(!net.list_rooms()[0].publisher_live);
    net.delete(v).unwrap();
    net.assert_maps_empty();
}

#[test]
fn close_room_ends_everyone() {
    let mut net = TestNet::new(10);
    net.publish("c");
    net.view("c");
    net.view("c");
    net.run_for(Duration::from_secs(1));
    let rooms = net.list_rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].viewers, 2);
    assert!(rooms[0].publisher_live);
    let r = net.close_room("c");
    assert!(matches!(
        r,
        Ok(wisp::sfu::Reply::RoomClosed { sessions: 3 })
    ));
    net.assert_maps_empty();
}

#[test]
fn delete_after_the_peer_closed_first_is_200_once() {
    let mut net = TestNet::new(11);
    let p = net.publish("late-delete");
    let v = net.view("late-delete");
    net.run_for(Duration::from_secs(1));
    // Medooze-style: close the PeerConnection (DTLS close_notify), then DELETE.
    net.clients[v].rtc.close().unwrap();
    net.run_for(Duration::from_millis(200));
    assert_eq!(
        net.counts().sessions,
        1,
        "the viewer's session ended on its close"
    );
    assert!(matches!(net.delete(v), Ok(wisp::sfu::Reply::Deleted)));
    assert_eq!(net.delete(v).err(), Some(ApiError::NotFound), "only once");
    // A session that ended by itself is remembered for a bounded time only.
    net.clients[p].blackholed = true;
    assert!(net.run_until(Duration::from_secs(20), |n| n.counts().sessions == 0));
    assert_eq!(net.counts().recently_ended, 1);
    net.run_for(wisp::sfu::ENDED_GRACE);
    assert_eq!(net.counts().recently_ended, 0);
    assert_eq!(net.delete(p).err(), Some(ApiError::NotFound));
    net.assert_maps_empty();
}

#[test]
fn capacity_limits_refuse_and_recover() {
    let mut net = TestNet::with_config(
        12,
        wisp::sfu::SfuConfig {
            max_sessions: 3,
            max_rooms: 2,
            ..wisp::sfu::SfuConfig::default()
        },
    );
    let a = net.view("a");
    net.view("b");
    // A third room is over max_rooms; a session in an existing room is fine.
    let r = net.join(
        "c",
        false,
        &[(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::RecvOnly,
        )],
    );
    assert_eq!(r.err(), Some(ApiError::AtCapacity));
    net.view("a");
    // Now at max_sessions.
    let r = net.join(
        "a",
        false,
        &[(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::RecvOnly,
        )],
    );
    assert_eq!(r.err(), Some(ApiError::AtCapacity));
    assert_eq!(net.counts().sessions, 3);
    // A session ends: room for one more.
    net.delete(a).unwrap();
    net.view("a");
    assert_eq!(net.counts().sessions, 3);
}
