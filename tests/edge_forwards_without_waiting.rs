//! An edge adds no waiting of its own (issue 15: added latency through an
//! edge, and the republish bound). Origin and edge cores in one TestNet with
//! str0m peers; the edge's timers are held (`TestNet::timers_held`), so
//! whatever it sends was caused by a datagram at that datagram's `now`.
//! Every edge viewer then gets each packet exactly one link latency after a
//! viewer on the origin does: the hop from origin to edge, and nothing else
//! (no receive-side hold or reorder buffer in the upstream's `Rtc`, no pacer
//! on the origin's session to the edge, no timer-driven flush).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestNet;
use str0m::media::MediaKind;
use wisp::sfu::{Command, Reply, RoomName, SfuConfig};

/// When viewer `i` got each payload counter of `kind`, from `from` on.
fn arrivals(net: &TestNet, i: usize, kind: MediaKind, from: Instant) -> Vec<(u64, Instant)> {
    net.clients[i]
        .got
        .iter()
        .filter(|g| g.kind == kind && g.at >= from)
        .map(|g| {
            (
                u64::from_be_bytes(g.payload[2..10].try_into().unwrap()),
                g.at,
            )
        })
        .collect()
}

/// Every packet edge viewer `v` got of `kind` from `from` on reached it
/// exactly one link latency after origin viewer `o` got the same payload;
/// returns how many.
fn one_hop_behind(net: &TestNet, o: usize, v: usize, kind: MediaKind, from: Instant) -> usize {
    let at_origin: HashMap<u64, Instant> = arrivals(net, o, kind, net.start).into_iter().collect();
    let at_edge = arrivals(net, v, kind, from);
    for (counter, at) in &at_edge {
        let there = at_origin
            .get(counter)
            .unwrap_or_else(|| panic!("{kind:?} {counter}: not at the origin viewer"));
        assert_eq!(
            *at - *there,
            net.latency,
            "{kind:?} {counter}: the edge held it"
        );
    }
    at_edge.len()
}

/// Viewer `v` got packets of `kind` numbered one after the other.
fn assert_continuous(net: &TestNet, v: usize, kind: MediaKind) {
    for w in net.seqs(v, kind).windows(2) {
        assert_eq!(w[1], w[0] + 1, "viewer {v} {kind:?} numbering");
    }
}

fn has_video(net: &TestNet, v: usize) -> bool {
    net.clients[v]
        .got
        .iter()
        .any(|g| g.kind == MediaKind::Video)
}

#[test]
fn edge_viewers_get_each_packet_in_the_turn_it_reaches_the_edge() {
    let mut net = TestNet::new(41);
    let edge = net.add_core(SfuConfig::default());
    net.publish_on(0, "now");
    let o = net.view_on(0, "now");
    let viewers = [net.view_on(edge, "now"), net.view_on(edge, "now")];
    net.pull(edge, 0, "now").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| viewers
        .iter()
        .all(|v| has_video(n, *v))));
    net.run_for(Duration::from_millis(500));

    // From here the edge runs on datagrams alone.
    net.timers_held.push(edge);
    let from = net.now;
    net.run_for(Duration::from_secs(1));
    net.media_on = false;
    net.run_for(Duration::from_millis(100));
    for v in viewers {
        // 30 frames of 3 packets, and 30 audio packets, a second.
        assert!(one_hop_behind(&net, o, v, MediaKind::Video, from) >= 85);
        assert!(one_hop_behind(&net, o, v, MediaKind::Audio, from) >= 28);
        assert_continuous(&net, v, MediaKind::Video);
    }
}

/// The origin-killed fault in the core: the upstream ends (here the driver
/// ends it, as the relay manager does when the room moves), the room goes
/// live on another core, and the edge pulls from there. The waiting edge
/// viewer gets the new upstream's first keyframe in the turn it reaches
/// the edge, and that keyframe is the one the new origin asked its
/// publisher for when the edge's session connected, not a periodic one.
#[test]
fn waiting_edge_viewers_get_the_new_upstreams_keyframe_at_once() {
    let mut net = TestNet::new(42);
    let edge = net.add_core(SfuConfig::default());
    let other = net.add_core(SfuConfig::default());
    net.publish_on(0, "moved");
    let v = net.view_on(edge, "moved");
    let (up, _) = net.pull(edge, 0, "moved").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| has_video(n, v)));
    net.run_for(Duration::from_millis(500));
    let cmd = Command::PullFailed {
        room: RoomName::new("moved").unwrap(),
        token: up,
    };
    assert!(matches!(net.command_on(edge, cmd), Ok(Reply::Done)));
    net.run_for(Duration::from_millis(200));
    assert!(net.connected(v), "the edge viewer waits");
    let before = net.clients[v].got.len();

    // The room goes live on another core, with a viewer there; 1.5 s
    // later (its keyframe request is no longer throttled, the periodic
    // keyframe is 1.5 s away) the edge pulls from it.
    let p2 = net.publish_on(other, "moved");
    let o = net.view_on(other, "moved");
    assert!(net.run_until(Duration::from_secs(5), |n| has_video(n, o)));
    net.run_for(Duration::from_millis(1500));
    let requests = net.clients[p2].keyframe_requests;
    net.pull(edge, other, "moved")
        .expect("pull from the new origin");
    let pulled = net.now;
    assert!(net.run_until(Duration::from_secs(1), |n| n
        .core_ref(edge)
        .stats()
        .relay_upstreams_connected
        == 1));
    assert_eq!(
        net.clients[v].got.len(),
        before,
        "nothing before the keyframe"
    );

    net.timers_held.push(edge);
    let connected = net.now;
    let first = net
        .first_video_from(v, before, Duration::from_secs(1))
        .expect("video within 1 s");
    // The start of a keyframe (VP8 S bit set, P bit clear).
    assert!(first.starts_vp8_keyframe());
    assert!(
        net.clients[p2].keyframe_requests > requests,
        "the new origin asked its publisher"
    );
    eprintln!(
        "first video {} ms after the pull ({} ms after the upstream connected)",
        (first.at - pulled).as_millis(),
        (first.at - connected).as_millis()
    );
    // The handshake (a few round trips of 2 x 5 ms), the origin's request,
    // the publisher's next frame (33 ms), two hops: no timer of the edge's.
    assert!(first.at - pulled <= Duration::from_millis(120));
    net.run_for(Duration::from_millis(500));
    let after = net.clients[v].got[before].at;
    assert!(one_hop_behind(&net, o, v, MediaKind::Video, after) > 20);
    assert!(one_hop_behind(&net, o, v, MediaKind::Audio, after) > 5);

    net.timers_held.clear();
    net.run_for(Duration::from_secs(1));
    assert_continuous(&net, v, MediaKind::Video);
    assert_continuous(&net, v, MediaKind::Audio);
}

/// The origin hands out its copy for an edge before it has made its own
/// viewers' copies: a downstream edge is first in the fan-out order, and
/// `poll_output` makes a fan-out's datagrams a few viewers at a time, so the
/// driver can send the first ones while the rest are encrypted. (Making every
/// copy first delayed the edge, and with it the edge's whole audience, by the
/// origin's whole fan-out: about 0.45 ms at 100 viewers.)
#[test]
fn an_edges_copy_leaves_before_the_origins_viewers_copies_are_made() {
    const VIEWERS: usize = 40;
    let mut net = TestNet::new(43);
    let edge = net.add_core(SfuConfig::default());
    net.publish_on(0, "first");
    // The origin's viewers join before the edge's pull.
    let viewers: Vec<usize> = (0..VIEWERS).map(|_| net.view_on(0, "first")).collect();
    let v = net.view_on(edge, "first");
    net.pull(edge, 0, "first").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| has_video(n, v)
        && viewers.iter().all(|o| has_video(n, *o))));
    // The edge pulls from its own address (or an upstream socket's).
    let mut edge_addrs = common::upstream_addrs(edge, 64);
    edge_addrs.push(common::core_addr(edge));

    // A step in which a publisher packet reaches the origin leaves its
    // fan-out written and not yet made.
    let mut checked = 0;
    for _ in 0..10_000 {
        net.step();
        if net.core_ref(0).undrained() < VIEWERS {
            continue;
        }
        let mut before_edge = 0;
        let left = loop {
            match net.core(0).poll_output() {
                wisp::sfu::Output::Transmit(t) => {
                    let to_edge = edge_addrs.contains(&t.destination);
                    net.send_from_core(0, t);
                    if to_edge {
                        break net.core_ref(0).undrained();
                    }
                    before_edge += 1;
                }
                wisp::sfu::Output::Timeout(_) => panic!("no copy for the edge"),
                _ => {}
            }
        };
        assert!(
            left >= VIEWERS - 8,
            "the edge's copy came after {} viewers' copies were made",
            VIEWERS + 1 - left
        );
        assert!(
            before_edge <= 8,
            "{before_edge} datagrams before the edge's"
        );
        checked += 1;
        if checked == 5 {
            break;
        }
    }
    assert_eq!(checked, 5, "no fan-out seen");
    // Nothing is lost by making them in steps.
    net.run_for(Duration::from_millis(500));
    for o in viewers {
        assert_continuous(&net, o, MediaKind::Video);
    }
    assert_continuous(&net, v, MediaKind::Video);
}
