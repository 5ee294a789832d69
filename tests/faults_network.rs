//! Faults in the deterministic network (TestNet): peers that vanish, a viewer
//! whose link drops everything, NAT rebinding, a lossy and reordering
//! publisher uplink, and a clock that jumps or stands still.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;
use wisp::sfu::DropReason;

fn got(net: &TestNet, i: usize) -> usize {
    net.clients[i].got.len()
}

#[test]
fn publisher_killed_without_delete_ends_in_20s_and_viewers_stay() {
    let mut net = TestNet::new(21);
    let p = net.publish("kill");
    let viewers: Vec<usize> = (0..3).map(|_| net.view("kill")).collect();
    net.run_for(Duration::from_secs(2));
    assert!(viewers.iter().all(|v| got(&net, *v) > 50));
    net.clients[p].blackholed = true;
    let t0 = net.now;
    assert!(net.run_until(Duration::from_secs(25), |n| n.counts().sessions == 3));
    let took = net.now - t0;
    eprintln!("killed publisher noticed after {took:?}");
    assert!(took <= Duration::from_secs(20), "{took:?}");
    let rooms = net.list_rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].viewers, 3);
    assert!(!rooms[0].publisher_live && rooms[0].tracks.is_empty());
    assert_eq!(
        net.stats().sessions_connected,
        [0, 3],
        "viewers still connected"
    );
    // The same room takes a new publisher at once and the viewers see it.
    let before: Vec<usize> = viewers.iter().map(|v| got(&net, *v)).collect();
    net.publish("kill");
    net.run_for(Duration::from_secs(2));
    for (v, b) in viewers.iter().zip(before) {
        assert!(got(&net, *v) > b + 50, "viewer {v} resumed");
    }
    for v in viewers.iter().copied().chain([net.clients.len() - 1]) {
        net.delete(v).unwrap();
    }
    net.assert_maps_empty();
    assert_eq!(net.stats().caught_panics, 0);
}

/// Viewer 0's packet count over 5 s, with or without a third viewer whose
/// link drops everything (in both directions) from t = 1 s.
fn viewer_count_with_a_dead_neighbour(dead: bool) -> (usize, usize) {
    let mut net = TestNet::new(22);
    net.publish("slow");
    let v0 = net.view("slow");
    let v1 = net.view("slow");
    let v2 = net.view("slow");
    net.run_for(Duration::from_secs(1));
    let start = (got(&net, v0), got(&net, v1));
    if dead {
        net.clients[v2].blackholed = true;
    }
    net.run_for(Duration::from_secs(5));
    net.assert_accounting();
    (got(&net, v0) - start.0, got(&net, v1) - start.1)
}

#[test]
fn a_viewer_whose_link_drops_everything_never_slows_the_others() {
    let base = viewer_count_with_a_dead_neighbour(false);
    let with = viewer_count_with_a_dead_neighbour(true);
    eprintln!("other viewers over 5 s: {base:?} alone, {with:?} with a dead neighbour");
    for (b, w) in [(base.0, with.0), (base.1, with.1)] {
        assert!(b > 500);
        let diff = (b as f64 - w as f64).abs() / b as f64;
        assert!(diff <= 0.01, "{b} vs {w}: {:.2} %", diff * 100.0);
    }
}

/// How long after client `i`'s NAT rebinding the viewer `v` gets media again
/// (`None`: not within 30 s), and how many datagrams went to the dead address.
fn rebind_and_wait(
    net: &mut TestNet,
    i: usize,
    v: usize,
    to: SocketAddr,
) -> (Option<Duration>, usize) {
    let stray = net.stray.len();
    net.rebind(i, to);
    let before = got(net, v);
    let t0 = net.now;
    let ok = net.run_until(Duration::from_secs(30), |n| got(n, v) > before + 30);
    (ok.then(|| net.now - t0), net.stray.len() - stray)
}

/// The publisher's address changes: its media from the new address is
/// refused until a STUN check from there passes integrity, then flows.
#[test]
fn nat_rebinding_of_a_publisher_resumes_media_after_its_next_check() {
    let mut net = TestNet::new(23);
    let p = net.publish("nat");
    let v = net.view("nat");
    net.run_for(Duration::from_secs(2));
    let u0 = net.stats().dropped(DropReason::UnknownSource);
    let (took, _) = rebind_and_wait(&mut net, p, v, SocketAddr::from(([192, 0, 2, 201], 40_001)));
    let refused = net.stats().dropped(DropReason::UnknownSource) - u0;
    eprintln!(
        "publisher media back {took:?} after rebinding; {refused} datagrams refused meanwhile"
    );
    assert!(
        refused > 0,
        "media from the new address was accepted before STUN"
    );
    let took = took.expect("publisher media never resumed");
    assert!(took <= Duration::from_secs(3), "{took:?}");
    net.run_for(Duration::from_secs(20));
    assert_eq!(net.counts().sessions, 2, "both sessions live on");
    assert!(net.counts().addrs <= 2 * wisp::sfu::demux::MAX_ADDRS_PER_SESSION);
}

/// The viewer's address changes (NAT rebinding). Its next consent check
/// (valid integrity, USE-CANDIDATE) arrives from the new address within ~2 s;
/// str0m's ICE-lite agent alone would keep the old nominated pair until its
/// 15 s liveness ran out, so wisp re-signs such a check with a higher PRIORITY
/// and media moves at once (the bound this test holds: within 2 s).
#[test]
fn nat_rebinding_of_a_viewer_resumes_media_after_its_next_check() {
    let mut net = TestNet::new(23);
    net.publish("nat");
    let v = net.view("nat");
    net.run_for(Duration::from_secs(2));
    let (took, lost) =
        rebind_and_wait(&mut net, v, v, SocketAddr::from(([192, 0, 2, 200], 40_000)));
    eprintln!(
        "viewer media back {took:?} after its NAT rebinding; {lost} datagrams to the old address"
    );
    let took = took.expect("viewer media never resumed");
    assert_eq!(net.counts().sessions, 2);
    assert!(
        took <= Duration::from_secs(3),
        "viewer media back only after {took:?}"
    );
}

#[test]
fn lossy_reordering_publisher_still_reaches_viewers() {
    let mut net = TestNet::new(24);
    let p = net.publish("lossy");
    let v = net.view("lossy");
    net.run_for(Duration::from_secs(1));
    net.clients[p].uplink_loss = 0.05;
    net.clients[p].uplink_jitter = Duration::from_millis(30);
    let sent0 = net.clients[p].counter;
    let got0 = net.counters(v, MediaKind::Video).len();
    let k0 = net.clients[p].keyframe_requests;
    net.run_for(Duration::from_secs(10));
    let sent = net.clients[p].counter - sent0;
    let video = net.counters(v, MediaKind::Video);
    let s = net.stats();
    eprintln!(
        "publisher sent {sent} packets with 5 % loss and 30 ms jitter; viewer got {} video; \
         NACKs sent {}, keyframe requests reaching the publisher {}",
        video.len() - got0,
        s.nacks_sent,
        net.clients[p].keyframe_requests - k0
    );
    assert!(s.nacks_sent > 0, "losses were not NACKed");
    // A viewer that cannot decode asks for a keyframe: it reaches the publisher.
    let k1 = net.clients[p].keyframe_requests;
    viewer_pli(&mut net, v);
    net.run_for(Duration::from_millis(500));
    assert!(
        net.clients[p].keyframe_requests > k1,
        "the keyframe request did not reach the lossy publisher"
    );
    // Video keeps arriving: repaired or re-keyed, never stalled for good.
    assert!(
        (video.len() - got0) as f64 > 0.5 * sent as f64 * 0.75,
        "viewer starved"
    );
    let last_second = net.clients[v]
        .got
        .iter()
        .filter(|g| g.kind == MediaKind::Video && net.now - g.at < Duration::from_secs(1))
        .count();
    assert!(last_second > 30, "video stalled at the end: {last_second}");
    net.assert_accounting();
}

/// Viewer `v` asks for a keyframe, as a browser does when it cannot decode.
fn viewer_pli(net: &mut TestNet, v: usize) {
    let c = &mut net.clients[v];
    let mid = c
        .mids
        .iter()
        .find(|(_, k)| *k == MediaKind::Video)
        .map(|(m, _)| *m)
        .unwrap();
    if let Some(rx) = c.rtc.direct_api().stream_rx_by_mid(mid, None) {
        rx.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
    }
}

/// Heavy loss toward one viewer: its decoder asks for keyframes every
/// 250 ms; they reach the publisher at most once a second, the viewer
/// recovers, and the other viewer is untouched.
#[test]
fn keyframe_requests_of_a_lossy_viewer_reach_the_publisher_throttled() {
    let mut net = TestNet::new(25);
    let p = net.publish("kf");
    let v = net.view("kf");
    let other = net.view("kf");
    net.run_for(Duration::from_secs(2));
    net.clients[v].inbound_loss = 0.3;
    let k0 = net.clients[p].keyframe_requests;
    let o0 = got(&net, other);
    for _ in 0..32 {
        viewer_pli(&mut net, v);
        net.run_for(Duration::from_millis(250));
    }
    let k = net.clients[p].keyframe_requests - k0;
    eprintln!(
        "32 PLIs over 8 s from a viewer with 30 % loss: {k} keyframe requests at the publisher"
    );
    assert!((4..=10).contains(&k), "throttle: {k} requests in 8 s");
    assert!(
        got(&net, other) > o0 + 8 * 100,
        "the other viewer kept its media"
    );
    net.clients[v].inbound_loss = 0.0;
    let before = got(&net, v);
    net.run_for(Duration::from_secs(2));
    assert!(got(&net, v) > before + 100, "the viewer recovered");
    net.assert_accounting();
}

#[test]
fn a_clock_that_jumps_an_hour_wedges_no_timer() {
    let mut net = TestNet::new(26);
    net.publish("jump");
    net.view("jump");
    net.run_for(Duration::from_secs(2));
    // Everything (core and peers) sleeps an hour, like a suspended host.
    net.now += Duration::from_secs(3600);
    // Consent is long gone: every session ends, promptly and completely.
    assert!(
        net.run_until(Duration::from_secs(20), |n| n.counts().sessions == 0),
        "sessions wedged after the jump: {:?}",
        net.counts()
    );
    net.assert_maps_empty();
    // The core works afterwards.
    let p = net.publish("jump");
    let v = net.view("jump");
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p) && got(&net, v) > 50);
}

#[test]
fn a_short_jump_and_a_stopped_clock_resume_media() {
    let mut net = TestNet::new(27);
    net.publish("still");
    let v = net.view("still");
    net.run_for(Duration::from_secs(2));
    // The clock stands still: many timeouts and inputs at the same instant.
    let now = net.now;
    for _ in 0..1000 {
        for k in 0..=net.cores.len() {
            net.core(k).handle_timeout(now);
        }
        net.lose_datagrams_now();
    }
    let before = got(&net, v);
    net.run_for(Duration::from_secs(1));
    assert!(
        got(&net, v) > before + 50,
        "media resumed after a still clock"
    );
    // A 5 s jump (under the consent timeout): sessions survive, media resumes.
    net.now += Duration::from_secs(5);
    let before = got(&net, v);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.counts().sessions, 2);
    assert!(
        got(&net, v) > before + 50,
        "media resumed after a short jump"
    );
    // A session that never connects still times out after a jump.
    let ghost = net.view("still");
    net.clients[ghost].alive = false;
    net.now += Duration::from_secs(10);
    assert!(
        net.run_until(Duration::from_secs(6), |n| n.counts().sessions == 2),
        "the connect timeout did not fire after a jump"
    );
}

/// The NAT-rebinding promotion cannot be used to steal a viewer's media: a
/// valid check captured on the path and replayed from another address keeps
/// its transaction id, and a replay is never promoted.
#[test]
fn a_replayed_check_from_another_address_does_not_steal_media() {
    let mut net = TestNet::new(25);
    net.publish("steal");
    let v = net.view("steal");
    net.run_for(Duration::from_secs(2));
    net.tap = Some(Vec::new());
    net.run_for(Duration::from_secs(5));
    let viewer = net.clients[v].addr;
    let checks: Vec<Vec<u8>> = net
        .tap
        .take()
        .unwrap()
        .into_iter()
        .filter(|d| d.from == viewer && d.bytes.len() > 20 && d.bytes[0..2] == [0, 1])
        .map(|d| d.bytes)
        .collect();
    assert!(!checks.is_empty(), "the viewer sent consent checks");
    let attacker = SocketAddr::from(([203, 0, 113, 66], 6666));
    let stray0 = net.stray.len();
    for c in &checks {
        net.send_raw(attacker, c.clone());
    }
    let before = got(&net, v);
    net.run_for(Duration::from_secs(2));
    let to_attacker = net.stray[stray0..]
        .iter()
        .filter(|a| **a == attacker)
        .count();
    eprintln!(
        "{} replayed checks: {to_attacker} datagrams to the attacker; viewer got {} more",
        checks.len(),
        got(&net, v) - before
    );
    assert!(got(&net, v) > before + 30, "the viewer keeps its media");
    // At most the STUN responses to the replays themselves, never media.
    assert!(
        to_attacker <= checks.len(),
        "{to_attacker} datagrams to the attacker"
    );
}

/// A panic in one session's work (injected where a str0m panic would be
/// caught) ends that session only: it is counted, the loop goes on, and the
/// other sessions keep their media.
#[test]
fn a_panic_in_one_session_ends_only_that_session() {
    let mut net = TestNet::new(26);
    let p = net.publish("panic");
    let a = net.view("panic");
    let b = net.view("panic");
    net.run_for(Duration::from_secs(2));
    let token = net.clients[a].token.unwrap();
    assert!(net.core_of(a).inject_panic(token));
    let before_b = got(&net, b);
    net.run_for(Duration::from_secs(2));
    let s = net.stats();
    eprintln!(
        "caught panics {}, sessions {}, viewer b got {} more",
        s.caught_panics,
        net.counts().sessions,
        got(&net, b) - before_b
    );
    assert_eq!(s.caught_panics, 1);
    assert_eq!(net.counts().sessions, 2, "only the panicking viewer ended");
    assert!(net.connected(p));
    assert!(
        got(&net, b) > before_b + 30,
        "the other viewer keeps its media"
    );
}
