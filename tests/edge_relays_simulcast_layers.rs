//! Simulcast across an edge: the origin sends its WHEP viewer every layer
//! of the publisher's video, each on its rid, when the viewer's offer asks
//! for them (`a=simulcast:recv`, as an edge's upstream does), so each edge
//! viewer keeps its own layer choice.

mod common;

use std::time::Duration;

use common::{SimPacket, TestNet};
use str0m::media::MediaKind;
use wisp::sfu::{Command, Reply, Role, RoomName, SfuConfig};

/// Publisher layers (rid, packets per frame, packet size), 30 fps each.
const LAYERS: &[(&str, usize, usize)] = &[("h", 4, 1000), ("m", 2, 800), ("l", 1, 400)];

fn pin(net: &mut TestNet, core: usize, v: usize, rid: &str) {
    let cmd = Command::PinLayer {
        role: Role::Subscriber,
        room: RoomName::new("sim").unwrap(),
        token: net.clients[v].token.unwrap(),
        rid: Some(rid.into()),
        media: None,
    };
    let now = net.now;
    assert!(matches!(
        net.core(core).handle_command(now, cmd),
        Ok(Reply::Done)
    ));
}

/// Viewer `v`'s video from its first packet on: continuous numbers, and
/// the layers (publisher's layer index) it came from, in order of change.
fn layers_seen(net: &TestNet, v: usize) -> Vec<u8> {
    let pk: Vec<SimPacket> = net.sim_packets(v);
    assert!(pk.len() > 30, "viewer {v}: {} video packets", pk.len());
    assert!(pk[0].keyframe, "viewer {v} starts on a keyframe");
    for w in pk.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "viewer {v} numbering");
    }
    let mut seen: Vec<u8> = Vec::new();
    for p in &pk {
        if seen.last() != Some(&p.layer) {
            seen.push(p.layer);
        }
    }
    seen
}

#[test]
fn edge_viewers_choose_their_own_layer_of_the_origin_publisher() {
    let mut net = TestNet::new(41);
    let edge = net.add_core(SfuConfig::default());
    let p = net.publish_simulcast("sim", LAYERS);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)));
    // The origin's layers are measured before the edge pulls.
    net.run_for(Duration::from_secs(1));
    let low = net.view_on(edge, "sim");
    let high = net.view_on(edge, "sim");
    net.pull(edge, 0, "sim").expect("pull");
    assert!(
        net.last_answer.contains("a=simulcast:send"),
        "the origin answers with every layer"
    );
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(low)
        && n.connected(high)));
    pin(&mut net, edge, low, "l");
    pin(&mut net, edge, high, "h");
    net.run_for(Duration::from_secs(4));

    // The edge's track has the origin's three layers, measured.
    let token = net.clients[low].token.unwrap();
    let layers = net.core(edge).viewer_layers(token).expect("viewer").layers;
    assert_eq!(layers.len(), 3, "{layers:?}");
    assert!(
        layers
            .iter()
            .all(|(_, rate, active, _)| *active && *rate > 0),
        "{layers:?}"
    );

    // Each viewer ends on its own layer, numbered without a gap.
    assert_eq!(layers_seen(&net, low).last(), Some(&2), "low viewer on l");
    assert_eq!(layers_seen(&net, high).last(), Some(&0), "high viewer on h");
    assert_eq!(net.current_layer_on(edge, low).as_deref(), Some("l"));
    assert_eq!(net.current_layer_on(edge, high).as_deref(), Some("h"));

    // The origin sends one copy of every layer (and the audio) to the
    // edge, whatever the edge's viewer count: over two more seconds, each
    // packet in goes out once.
    let s0 = net.sfu.stats();
    let auto = net.view_on(edge, "sim");
    net.run_for(Duration::from_secs(2));
    let s1 = net.sfu.stats();
    // A third edge viewer, on automatic choice, gets video at once.
    assert!(!layers_seen(&net, auto).is_empty());
    assert_eq!(s1.sessions_live, [1, 1]);
    let (rtp_in, out) = (s1.rtp_in - s0.rtp_in, s1.rtp_forwarded - s0.rtp_forwarded);
    assert!(rtp_in > 300, "{rtp_in}");
    assert!(out.abs_diff(rtp_in) <= 2, "forwarded {out} of {rtp_in}");
    assert!(net
        .counters(low, MediaKind::Audio)
        .windows(2)
        .all(|w| w[1] > w[0]));
}

#[test]
fn edge_viewers_follow_a_new_upstream_across_layers() {
    let mut net = TestNet::new(42);
    let edge = net.add_core(SfuConfig::default());
    let p = net.publish_simulcast("sim", LAYERS);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)));
    net.run_for(Duration::from_secs(1));
    let v = net.view_on(edge, "sim");
    let (_, at_origin) = net.pull(edge, 0, "sim").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(v)));
    pin(&mut net, edge, v, "m");
    net.run_for(Duration::from_secs(3));
    let before = net.sim_packets(v).len();

    // The origin drops the upstream; the driver pulls again.
    let del = Command::DeleteSession {
        role: Role::Subscriber,
        room: RoomName::new("sim").unwrap(),
        token: at_origin,
    };
    let now = net.now;
    assert!(matches!(
        net.sfu.handle_command(now, del),
        Ok(Reply::Deleted)
    ));
    assert!(net.run_until(Duration::from_secs(20), |n| !n.upstream_events.is_empty()));
    net.pull(edge, 0, "sim").expect("pull again");
    net.run_for(Duration::from_secs(3));
    assert!(
        net.sim_packets(v).len() > before + 50,
        "video after the new upstream"
    );
    assert_eq!(layers_seen(&net, v).last(), Some(&1), "still on m");
}

#[test]
fn a_plain_publisher_after_a_simulcast_one_still_reaches_the_edge() {
    let mut net = TestNet::new(43);
    let edge = net.add_core(SfuConfig::default());
    let p = net.publish_simulcast("sim", LAYERS);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)));
    net.run_for(Duration::from_secs(1));
    let v = net.view_on(edge, "sim");
    net.pull(edge, 0, "sim").expect("pull");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(v)));
    pin(&mut net, edge, v, "l");
    net.run_for(Duration::from_secs(3));
    assert_eq!(layers_seen(&net, v).last(), Some(&2));

    // The publisher comes back without simulcast: its video goes to the
    // edge on the first rid, and the edge's viewer falls back to it.
    net.delete(p).expect("delete");
    net.run_for(Duration::from_millis(300));
    let before = net.clients[v].got.len();
    net.publish_on(0, "sim");
    net.run_for(Duration::from_secs(4));
    let video_after = net.clients[v].got[before..]
        .iter()
        .filter(|g| g.kind == MediaKind::Video)
        .count();
    assert!(
        video_after > 100,
        "{video_after} video packets after the change"
    );
    assert_eq!(net.current_layer_on(edge, v).as_deref(), Some("h"));
    let seqs: Vec<u64> = net.clients[v]
        .got
        .iter()
        .filter(|g| g.kind == MediaKind::Video)
        .map(|g| g.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "numbering");
}
