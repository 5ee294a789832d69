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
            let seqs: Vec<u64> = net.clients[v]
                .got
                .iter()
                .filter(|g| g.kind == kind)
                .map(|g| g.seq)
                .collect();
            for w in seqs.windows(2) {
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
            let seqs: Vec<u64> = got
                .iter()
                .filter(|g| g.kind == kind)
                .map(|g| g.seq)
                .collect();
            for w in seqs.windows(2) {
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

/// The ICE lines of an SDP, as a trickle-ice-sdpfrag body.
fn frag_of(sdp: &str) -> String {
    sdp.lines()
        .filter(|l| {
            l.starts_with("a=ice-ufrag:")
                || l.starts_with("a=ice-pwd:")
                || l.starts_with("a=candidate:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect()
}

#[test]
fn a_relayed_viewer_restarts_ice_on_its_worker() {
    let mut net = TestNet::workers(16, 2, SfuConfig::default());
    let p = net.publish_on(0, "ir");
    let v = net.view_relayed(1, 0, "ir");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.run_for(Duration::from_secs(1));
    let old_answer = net.last_answer.clone();
    let attr = |sdp: &str, a: &str| wisp::sfu::sdp::attr(sdp, a).unwrap().to_string();

    let mut api = net.clients[v].rtc.sdp_api();
    api.ice_restart(true);
    let (offer, pending) = api.apply().expect("restart offer");
    let server_frag = match net.patch(v, Some("*"), &frag_of(&offer.to_sdp_string())) {
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
    let answer = old_answer
        .replace(
            &attr(&old_answer, "ice-ufrag"),
            &attr(&server_frag, "ice-ufrag"),
        )
        .replace(
            &attr(&old_answer, "ice-pwd"),
            &attr(&server_frag, "ice-pwd"),
        );
    let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap();
    net.clients[v]
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .unwrap();
    let before = net.counters(v, MediaKind::Video).len();
    net.run_for(Duration::from_secs(3));
    let after = net.counters(v, MediaKind::Video).len();
    assert!(
        after > before + 50,
        "media after restart: {before} -> {after}"
    );
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
