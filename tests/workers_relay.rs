//! Several workers' cores in one TestNet, linked by the relay between
//! workers (src/sfu/relay.rs), with real str0m peers: a room's publisher on
//! its home worker, viewers on every worker.

mod common;

use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;
use wisp::sfu::{Reply, SfuConfig};

/// Every viewer in `viewers` got more than `min` packets of each kind, in
/// order, gap-free from its first, with continuous sequence numbers and
/// intact payloads.
fn assert_every_payload_in_order(net: &TestNet, viewers: &[usize], min: usize) {
    for &v in viewers {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let got = net.counters(v, kind);
            assert!(got.len() > min, "viewer {v} {kind:?}: {}", got.len());
            for w in got.windows(2) {
                assert!(w[1] > w[0], "viewer {v} {kind:?} out of order: {w:?}");
            }
            for w in net.seqs(v, kind).windows(2) {
                assert_eq!(w[1], w[0] + 1, "viewer {v} {kind:?}: continuous sequence");
            }
        }
        assert!(net.clients[v]
            .got
            .iter()
            .all(|g| g.payload.len() == 200 && g.payload[10..].iter().all(|b| *b == 0xab)));
    }
}

#[test]
fn viewers_on_every_worker_get_every_payload_in_order() {
    let mut net = TestNet::workers(11, 3, SfuConfig::default());
    let p = net.publish_on(0, "r");
    // Viewers on the home worker and, through the relay, on the two others.
    let viewers = [
        net.view_on(0, "r"),
        net.view_relayed(1, 0, "r"),
        net.view_relayed(2, 0, "r"),
        net.view_relayed(2, 0, "r"),
    ];
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && viewers.iter().all(|v| n.connected(*v))));
    net.run_for(Duration::from_secs(5));
    assert_every_payload_in_order(&net, &viewers, 100);
    // Relayed viewers lose nothing the home's own viewer gets.
    let home = net.counters(viewers[0], MediaKind::Video);
    for &v in &viewers[1..] {
        let got = net.counters(v, MediaKind::Video);
        assert!(
            home.ends_with(&got[got.len() - 50..]),
            "viewer {v} keeps up with the home's viewer"
        );
    }
    // One hand-off per packet per other worker, not per viewer.
    let s0 = net.core_ref(0).stats();
    let (s1, s2) = (net.core_ref(1).stats(), net.core_ref(2).stats());
    assert_eq!(s0.relay_queue_full, 0);
    assert!(
        s1.rtp_forwarded > 200 && s2.rtp_forwarded > 2 * 200,
        "{s1:?} {s2:?}"
    );
    assert_eq!(s1.sessions_live, [0, 1], "no session crosses workers");
    assert_eq!(s2.sessions_live, [0, 2]);
    net.assert_accounting();

    // Viewers leave: the other workers drop the room, and so does the home
    // once its publisher goes.
    for v in viewers {
        assert!(matches!(net.delete(v), Ok(Reply::Deleted)));
    }
    net.run_for(Duration::from_millis(200));
    assert_eq!(net.core_ref(1).room_count(), 0);
    assert_eq!(net.core_ref(2).room_count(), 0);
    assert!(matches!(net.delete(p), Ok(Reply::Deleted)));
    net.run_for(Duration::from_millis(200));
    net.assert_maps_empty();
}

#[test]
fn a_publisher_reconnect_keeps_every_worker_s_viewers() {
    let mut net = TestNet::workers(12, 2, SfuConfig::default());
    // Viewers first, one on each worker; the room's home is worker 0.
    let v0 = net.view_on(0, "re");
    let v1 = net.view_relayed(1, 0, "re");
    let p1 = net.publish_on(0, "re");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p1)
        && n.connected(v0)
        && n.connected(v1)));
    net.run_for(Duration::from_secs(2));
    let before = [v0, v1].map(|v| net.clients[v].got.len());
    assert!(before.iter().all(|n| *n > 50), "{before:?}");

    assert!(matches!(net.delete(p1), Ok(Reply::Deleted)));
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        net.core_ref(1).room_count(),
        1,
        "the relayed viewer keeps its room"
    );

    let p2 = net.publish_on(0, "re");
    net.run_for(Duration::from_secs(3));
    assert!(net.connected(p2));
    for (v, n) in [v0, v1].into_iter().zip(before) {
        let got = &net.clients[v].got;
        assert!(got.len() > n + 50, "viewer {v} receives the new publisher");
        for kind in [MediaKind::Video, MediaKind::Audio] {
            for w in net.seqs(v, kind).windows(2) {
                assert_eq!(
                    w[1],
                    w[0] + 1,
                    "viewer {v} {kind:?}: continuous across publishers"
                );
            }
        }
    }
    net.assert_accounting();
}

#[test]
fn a_full_relay_queue_is_counted_and_does_not_stall_the_home() {
    let mut net = TestNet::workers(13, 2, SfuConfig::default());
    net.relay_capacity = 8;
    let p = net.publish_on(0, "full");
    let v0 = net.view_on(0, "full");
    let v1 = net.view_relayed(1, 0, "full");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(v0)
        && n.connected(v1)));
    net.run_for(Duration::from_secs(1));
    let (home_before, relayed_before) = (net.clients[v0].got.len(), net.clients[v1].got.len());
    assert!(relayed_before > 20);

    // Worker 1's loop stalls: its queue fills, the rest is dropped and
    // counted, and the home's own viewer keeps getting everything.
    net.relay_stalled = vec![1];
    net.run_for(Duration::from_secs(2));
    let dropped = net.core_ref(0).stats().relay_queue_full;
    assert!(dropped > 100, "dropped {dropped}");
    assert!(net.clients[v0].got.len() > home_before + 200);
    // (Only what was already on its way when the stall began.)
    assert!(
        net.clients[v1].got.len() <= relayed_before + 10,
        "nothing new reached the stalled worker's viewer"
    );
    assert_every_payload_in_order(&net, &[v0], 50);

    // It recovers: the queued packets, then a keyframe and the rest.
    net.relay_stalled.clear();
    net.run_for(Duration::from_secs(3));
    assert!(net.clients[v1].got.len() > relayed_before + 100);
    let got = net.counters(v1, MediaKind::Video);
    assert!(
        got.windows(2).all(|w| w[1] > w[0]),
        "in order after the gap"
    );
    net.assert_accounting();
}

/// Publisher layers (rid, packets per frame, packet size), 30 fps each.
const LAYERS: &[(&str, usize, usize)] = &[("h", 6, 1100), ("m", 2, 1000), ("l", 1, 500)];

#[test]
fn relayed_viewers_choose_their_own_simulcast_layer() {
    let mut net = TestNet::workers(14, 2, SfuConfig::default());
    let p = net.publish_simulcast("sc", LAYERS);
    assert_eq!(net.clients[p].core, 0);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)));
    // A local viewer first, so that worker 1 joins a room that is sending.
    let local = net.view_on(0, "sc");
    net.run_for(Duration::from_secs(1));
    let slow = net.view_relayed(1, 0, "sc");
    let fast = net.view_relayed(1, 0, "sc");
    net.set_downlink(slow, Some(300_000));
    net.set_downlink(fast, Some(10_000_000));
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(slow)
        && n.connected(fast)
        && n.connected(local)));
    assert!(
        net.settle_on_layer(fast, "h", Duration::from_secs(20))
            .is_some(),
        "the fast relayed viewer climbs to h on its own worker"
    );
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.current_layer(slow).as_deref(), Some("l"));
    assert_eq!(net.current_layer(fast).as_deref(), Some("h"));
    for v in [slow, fast] {
        let mut pk = net.sim_packets(v);
        pk.sort_by_key(|p| p.seq);
        pk.dedup_by_key(|p| p.seq);
        assert!(
            pk.len() > 100 && pk[0].keyframe,
            "viewer {v} starts on a keyframe"
        );
        for w in pk.windows(2) {
            assert!(
                w[1].layer == w[0].layer || w[1].keyframe,
                "viewer {v}: a switch starts on a keyframe"
            );
        }
        let gaps = pk.windows(2).filter(|w| w[1].seq != w[0].seq + 1).count();
        assert_eq!(gaps, 0, "viewer {v}: continuous sequence numbers");
    }
    net.assert_accounting();
}

#[test]
fn a_room_is_recorded_once_on_its_home_worker() {
    let config = SfuConfig {
        record_default: true,
        recording_available: true,
        ..SfuConfig::default()
    };
    let mut net = TestNet::workers(15, 2, config);
    let p = net.publish_on(0, "rec");
    let v = net.view_relayed(1, 0, "rec");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_secs(2));
    assert!(net.counters(v, MediaKind::Video).len() > 50);
    let starts = net
        .recorded
        .iter()
        .filter(|e| matches!(e, wisp::sfu::recorder_tap::RecordEvent::Start { .. }))
        .count();
    assert_eq!(
        starts, 2,
        "one recording per track, on the home worker only"
    );
    let rooms = net.core_ref(1).list_rooms(net.now);
    assert!(!rooms[0].recording, "the relayed copy does not record");
    assert!(net.core_ref(0).list_rooms(net.now)[0].recording);
}

#[test]
fn a_relayed_viewer_restarts_ice_on_its_worker() {
    let mut net = TestNet::workers(16, 2, SfuConfig::default());
    let p = net.publish_on(0, "ir");
    let v = net.view_relayed(1, 0, "ir");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_secs(1));
    let old_answer = net.last_answer.clone();

    let (frag, pending) = net.ice_restart_frag(v);
    let server_frag = match net.patch(v, Some("*"), &frag) {
        Ok(Reply::Patched {
            fragment: Some(f), ..
        }) => f,
        other => panic!("{other:?}"),
    };
    let worker_1 = common::core_addr(1);
    assert!(
        server_frag.contains(&format!("{} {} typ host", worker_1.ip(), worker_1.port())),
        "the restart answers with the viewer's worker's candidate: {server_frag}"
    );
    net.accept_ice_restart(v, pending, &old_answer, &server_frag);
    let got = net.video_during(v, Duration::from_secs(3));
    assert!(got > 50, "media after restart: {got} video packets in 3 s");
}

#[test]
fn a_join_refused_by_a_full_queue_is_sent_again() {
    let mut net = TestNet::workers(17, 2, SfuConfig::default());
    let p = net.publish_on(0, "retry");
    // Every queue refuses: the relayed viewer's join is counted, kept, and
    // sent again at each timeout.
    net.relay_capacity = 0;
    let v = net.view_relayed(1, 0, "retry");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[v].got.is_empty());
    assert!(net.core_ref(1).stats().relay_queue_full > 0);
    // The queues take messages again: the join gets through, media flows.
    net.relay_capacity = 1024;
    net.run_for(Duration::from_secs(2));
    assert!(
        net.counters(v, MediaKind::Video).len() > 30,
        "media after the retried join: {}",
        net.clients[v].got.len()
    );
}

/// Relayed copies are bounded per worker: each core's `max_rooms` counts
/// its own rooms and its copies together (the process's limit counts each
/// room once, in the dispatcher: src/workers.rs), and a home restores a
/// room a copy asks for only within it.
#[test]
fn relayed_copies_count_against_their_worker_s_room_limit() {
    let config = SfuConfig {
        max_rooms: 1,
        ..SfuConfig::default()
    };
    let mut net = TestNet::workers(17, 2, config);
    let p = net.publish_on(0, "r");
    let x = net.publish_on(1, "x");
    // Worker 1 has its own room: a copy of "r" would be its second.
    assert_eq!(
        net.try_view_relayed(1, 0, "r"),
        Err(wisp::sfu::ApiError::AtCapacity)
    );
    assert_eq!(net.core_ref(1).room_count(), 1);
    // Once its room has gone, the copy fits, and its viewer gets "r".
    net.delete(x).unwrap();
    assert_eq!(net.core_ref(1).room_count(), 0);
    let v = net.view_relayed(1, 0, "r");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_secs(2));
    assert!(!net.counters(v, MediaKind::Video).is_empty());
    assert_eq!(net.core_ref(1).room_count(), 1);
    // A copy of a room its home does not have ("s": a stale placement)
    // makes the home no second room past its limit.
    net.delete(v).unwrap();
    net.run_for(Duration::from_millis(100));
    let s = net.view_relayed(1, 0, "s");
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.core_ref(0).room_count(), 1);
    assert_eq!(net.core_ref(0).rooms_removed(), 0);
    net.delete(s).unwrap();
}

/// Relayed packets of each layer (h, m, l) to worker `to` so far.
fn relayed_per_layer(net: &TestNet, to: usize) -> [u64; 3] {
    ["h", "m", "l"].map(|rid| net.relayed(to, rid))
}

/// A simulcast room sending, with its home's own viewer on the top layer,
/// so that the home has every layer to relay.
fn simulcast_room(seed: u64, room: &str) -> (TestNet, usize) {
    let mut net = TestNet::workers(seed, 2, SfuConfig::default());
    let p = net.publish_simulcast(room, LAYERS);
    let local = net.view_on(0, room);
    net.set_downlink(local, Some(10_000_000));
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(local)));
    net.run_for(Duration::from_secs(1));
    (net, p)
}

#[test]
fn a_worker_whose_viewers_want_the_low_layer_is_relayed_only_that_layer() {
    let (mut net, _) = simulcast_room(18, "low");
    let slow = [net.view_relayed(1, 0, "low"), net.view_relayed(1, 0, "low")];
    for v in slow {
        net.set_downlink(v, Some(300_000));
    }
    assert!(net.run_until(Duration::from_secs(5), |n| slow
        .iter()
        .all(|v| n.connected(*v))));
    for v in slow {
        assert!(
            net.settle_on_layer(v, "l", Duration::from_secs(10))
                .is_some(),
            "viewer {v} on l"
        );
    }
    let before = relayed_per_layer(&net, 1);
    net.run_for(Duration::from_secs(3));
    let after = relayed_per_layer(&net, 1);
    let got = [0, 1, 2].map(|i| after[i] - before[i]);
    assert_eq!(
        (got[0], got[1]),
        (0, 0),
        "neither h nor m crosses to worker 1: {got:?}"
    );
    // 30 frames/s of one packet each, once per worker (not per viewer).
    assert!((80..=100).contains(&got[2]), "l once per packet: {got:?}");
    for v in slow {
        assert!(net.counters(v, MediaKind::Video).len() > 100);
    }
    net.assert_accounting();
}

#[test]
fn a_relayed_viewer_that_moves_up_gets_the_higher_layer_from_the_home() {
    let (mut net, p) = simulcast_room(19, "up");
    let a = net.view_relayed(1, 0, "up");
    let b = net.view_relayed(1, 0, "up");
    for v in [a, b] {
        net.set_downlink(v, Some(300_000));
    }
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(a) && n.connected(b)));
    assert!(net
        .settle_on_layer(a, "l", Duration::from_secs(10))
        .is_some());
    assert_eq!(relayed_per_layer(&net, 1)[0], 0, "no h before it is needed");

    // The link opens up: a climbs as far as h, each layer it goes to is
    // asked of the home and starts on a keyframe.
    net.set_downlink(a, Some(10_000_000));
    let took = net
        .settle_on_layer(a, "h", Duration::from_secs(20))
        .expect("a reaches h");
    assert!(took < Duration::from_secs(8), "h within {took:?}");
    assert!(relayed_per_layer(&net, 1)[0] > 100);
    let mut pk = net.sim_packets(a);
    pk.sort_by_key(|p| p.seq);
    assert!(pk[0].keyframe, "starts on a keyframe");
    for w in pk.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "continuous sequence numbers");
        assert!(
            w[1].layer == w[0].layer || w[1].keyframe,
            "a switch starts on a keyframe: {w:?}"
        );
    }
    assert!(pk.last().is_some_and(|p| p.layer == 0), "ends on h");

    // a moves back to l (pinned): h is no longer relayed to worker 1.
    let now = net.now;
    let token = net.clients[a].token.unwrap();
    let room = wisp::sfu::RoomName::new("up").unwrap();
    net.core(1)
        .pin_layer(
            now,
            wisp::sfu::Role::Subscriber,
            &room,
            token,
            Some("l"),
            None,
        )
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(3), |n| n.current_layer(a).as_deref()
            == Some("l"))
    );
    net.run_for(Duration::from_millis(100));
    let before = relayed_per_layer(&net, 1);
    net.run_for(Duration::from_secs(2));
    let after = relayed_per_layer(&net, 1);
    assert_eq!(after[0], before[0], "h stops once nobody there needs it");
    assert_eq!(after[1], before[1], "and m");
    assert!(after[2] > before[2] + 50, "l goes on");
    assert_eq!(net.current_layer(b).as_deref(), Some("l"));

    // Pinned up again to h, which no longer crosses: the need goes back,
    // the publisher is asked for a keyframe of h, and a is on h as soon as
    // on one worker (the single-worker pin test allows 2 s).
    let asked = net.clients[p].sim[0].keyframe_requests;
    let from = net.sim_packets(a).len();
    let now = net.now;
    net.core(1)
        .pin_layer(
            now,
            wisp::sfu::Role::Subscriber,
            &room,
            token,
            Some("h"),
            None,
        )
        .unwrap();
    let t0 = net.elapsed();
    assert!(
        net.run_until(Duration::from_secs(2), |n| n.current_layer(a).as_deref()
            == Some("h"))
    );
    eprintln!(
        "relayed viewer pinned back to h: on it in {:?}",
        net.elapsed() - t0
    );
    assert!(
        net.clients[p].sim[0].keyframe_requests > asked,
        "a keyframe of h was asked for"
    );
    net.run_for(Duration::from_millis(500));
    let got: Vec<_> = net.sim_packets(a).into_iter().skip(from).collect();
    let first_h = got.iter().position(|p| p.layer == 0).expect("h arrives");
    assert!(got[first_h].keyframe, "h starts on a keyframe");
    assert!(relayed_per_layer(&net, 1)[0] > after[0], "h crosses again");
    net.assert_accounting();
}

#[test]
fn a_layer_stops_crossing_when_its_last_viewer_on_a_worker_leaves() {
    let (mut net, _) = simulcast_room(20, "leave");
    let slow = net.view_relayed(1, 0, "leave");
    let fast = net.view_relayed(1, 0, "leave");
    net.set_downlink(slow, Some(300_000));
    net.set_downlink(fast, Some(10_000_000));
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(slow)
        && n.connected(fast)));
    assert!(net
        .settle_on_layer(fast, "h", Duration::from_secs(20))
        .is_some());
    assert_eq!(net.current_layer(slow).as_deref(), Some("l"));
    let before = relayed_per_layer(&net, 1);
    net.run_for(Duration::from_secs(1));
    let mid = relayed_per_layer(&net, 1);
    assert!(mid[0] > before[0] + 100 && mid[2] > before[2] + 20);
    assert_eq!(mid[1], before[1], "m is nobody's: not relayed");

    net.delete(fast).unwrap();
    net.run_for(Duration::from_millis(100));
    let gone = relayed_per_layer(&net, 1);
    net.run_for(Duration::from_secs(2));
    let after = relayed_per_layer(&net, 1);
    assert_eq!(after[0], gone[0], "h stops with its last viewer there");
    assert!(after[2] > gone[2] + 50, "the other viewer's l goes on");
    let seqs: Vec<u64> = net.sim_packets(slow).iter().map(|p| p.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    net.assert_accounting();
}
