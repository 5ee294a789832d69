//! 2 % random loss on one viewer's downlink is repaired by NACK/RTX from the
//! server's send history; the other viewer is unaffected.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;

#[test]
fn two_percent_viewer_loss_is_repaired() {
    let mut net = TestNet::new(6);
    let p = net.publish("loss");
    let clean = net.view("loss");
    let lossy = net.view("loss");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(clean)
        && n.connected(lossy)));
    net.clients[lossy].inbound_loss = 0.02;
    net.run_for(Duration::from_secs(8));
    net.clients[lossy].inbound_loss = 0.0;
    net.media_on = false;
    net.run_for(Duration::from_secs(1));

    let want: BTreeSet<u64> = net.counters(clean, MediaKind::Video).into_iter().collect();
    let got: BTreeSet<u64> = net.counters(lossy, MediaKind::Video).into_iter().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    eprintln!(
        "video packets: clean {} lossy {} missing {}",
        want.len(),
        got.len(),
        missing.len()
    );
    assert!(want.len() > 500);
    assert!(missing.is_empty(), "unrepaired: {missing:?}");
    let s = net.stats();
    eprintln!(
        "NACKs received from viewers: {}; loss samples: {}",
        s.nacks_received, s.loss[1].count
    );
    assert!(s.nacks_received > 0, "the repair went through NACKs");
    assert!(
        s.rtt[1].count > 0 && s.loss[1].count > 0,
        "per-role RTT and loss are sampled"
    );
    net.assert_accounting();
}
