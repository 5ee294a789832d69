//! Simulcast: each viewer gets the layer its link carries, chosen from its
//! TWCC bandwidth estimate, and moves between layers on keyframes of the new
//! layer with sequence numbers and VP8 picture ids continuous.
//!
//! Deterministic: real str0m peers on the in-memory TestNet with a fake
//! clock; viewers' downlinks are FIFO bottlenecks (250 ms of queue, tail drop).

mod common;

use std::time::Duration;

use common::{SimPacket, TestNet};

/// Publisher layers (rid, packets per frame, packet size), 30 fps each:
/// h ≈ 1.6 Mbit/s, m ≈ 480 kbit/s, l ≈ 120 kbit/s of payload.
const LAYERS: &[(&str, usize, usize)] = &[("h", 6, 1100), ("m", 2, 1000), ("l", 1, 500)];
const H: u8 = 0;
const M: u8 = 1;
const L: u8 = 2;

/// What a viewer's video looks like to a decoder.
#[derive(Debug, Default)]
struct Report {
    packets: usize,
    frames: usize,
    /// Capture instants (publisher frame numbers) with no complete frame
    /// between the first and the last one decoded: what a viewer would miss.
    frames_lost: usize,
    /// Incomplete frames of the old layer cut off by a switch's keyframe of
    /// the same capture instant (superseded, nothing missed).
    superseded: usize,
    /// Other incomplete frames.
    incomplete: usize,
    /// Sequence numbers never received between the first and the last.
    seq_gaps: u64,
    /// Consecutive frames whose picture id does not follow (+1).
    pid_breaks: usize,
    /// Consecutive frames whose TL0PICIDX does not follow (+1).
    tl0_breaks: usize,
    /// Layer changes, and those that did not start on a keyframe.
    switches: usize,
    switches_off_keyframe: usize,
    /// Frame joins not checked because packets before them were lost on the link.
    joins_after_loss: usize,
    /// Timestamps going backwards between frames.
    ts_backwards: usize,
    /// Layer of the last frame.
    last_layer: Option<u8>,
}

fn analyse(mut pk: Vec<SimPacket>) -> Report {
    let mut r = Report::default();
    pk.sort_by_key(|p| p.seq);
    pk.dedup_by_key(|p| p.seq);
    r.packets = pk.len();
    // The stream must start on a keyframe.
    let Some(first) = pk.first() else {
        return r;
    };
    assert!(first.keyframe, "first packet is not a keyframe start");
    r.seq_gaps = (pk.last().unwrap().seq - first.seq + 1) - pk.len() as u64;
    // Frames: runs of one picture id.
    let mut frames: Vec<Vec<SimPacket>> = vec![];
    for p in pk {
        match frames.last_mut() {
            Some(f) if f[0].picture_id == p.picture_id => f.push(p),
            _ => frames.push(vec![p]),
        }
    }
    r.frames = frames.len();
    for (i, f) in frames.iter().enumerate() {
        let want = LAYERS[usize::from(f[0].layer)].1;
        let complete = f.len() == want
            && f[0].start
            && f.windows(2).all(|w| w[1].seq == w[0].seq + 1)
            && f.iter().all(|p| p.layer == f[0].layer);
        if !complete && i + 1 < frames.len() {
            // (The last frame may still be on its way.)
            let next = &frames[i + 1][0];
            if next.keyframe && next.layer != f[0].layer && next.frame <= f[0].frame {
                r.superseded += 1;
            } else {
                r.incomplete += 1;
            }
        }
        if i == 0 {
            continue;
        }
        let prev = &frames[i - 1][0];
        let cur = &f[0];
        // Packets lost on the link before this frame: the receiver repairs
        // or re-requests; continuity is judged only across intact joins.
        if frames[i - 1].last().unwrap().seq + 1 != cur.seq {
            r.joins_after_loss += 1;
            continue;
        }
        let dpid = cur.picture_id.wrapping_sub(prev.picture_id) & 0x7fff;
        if dpid != 1 {
            r.pid_breaks += 1;
        }
        if cur.tl0.wrapping_sub(prev.tl0) != 1 {
            r.tl0_breaks += 1;
        }
        if cur.ts.wrapping_sub(prev.ts) as i32 <= 0 {
            r.ts_backwards += 1;
        }
        if cur.layer != prev.layer {
            r.switches += 1;
            if !cur.keyframe {
                r.switches_off_keyframe += 1;
            }
        }
    }
    r.last_layer = frames.last().map(|f| f[0].layer);
    // Capture instants decoded: complete frames, in order.
    let mut decoded: Vec<u64> = frames
        .iter()
        .filter(|f| f.len() == LAYERS[usize::from(f[0].layer)].1 && f[0].start)
        .map(|f| f[0].frame)
        .collect();
    decoded.dedup();
    r.frames_lost = decoded
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1) as usize)
        .sum();
    r
}

/// The first packet of `layer` viewer `i` got at or after `from` (elapsed).
fn first_of_layer_after(net: &TestNet, i: usize, layer: u8, from: Duration) -> Option<Duration> {
    net.clients[i]
        .got
        .iter()
        .filter(|g| g.at - net.start >= from)
        .filter_map(|g| SimPacket::parse(g).map(|p| (g.at, p)))
        .find(|(_, p)| p.layer == layer)
        .map(|(at, _)| at - net.start)
}

fn setup(seed: u64) -> (TestNet, usize, usize, usize) {
    let mut net = TestNet::new(seed);
    let p = net.publish_simulcast("sc", LAYERS);
    let slow = net.view("sc");
    let fast = net.view("sc");
    net.set_downlink(slow, Some(300_000));
    net.set_downlink(fast, Some(10_000_000));
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)
        && n.connected(slow)
        && n.connected(fast)));
    (net, p, slow, fast)
}

fn assert_clean(name: &str, r: &Report) {
    eprintln!("{name}: {r:?}");
    assert_eq!(r.switches_off_keyframe, 0, "{name}: switch off a keyframe");
    assert_eq!(r.pid_breaks, 0, "{name}: picture ids not continuous");
    assert_eq!(r.tl0_breaks, 0, "{name}: TL0PICIDX not continuous");
    assert_eq!(r.ts_backwards, 0, "{name}: timestamps went backwards");
}

#[test]
fn viewers_settle_on_the_layer_their_link_carries() {
    let (mut net, _p, slow, fast) = setup(11);
    let t0 = net.elapsed();
    let fast_settle = net
        .settle_on_layer(fast, "h", Duration::from_secs(20))
        .expect("fast settles on h");
    let slow_layer = net.current_layer(slow);
    eprintln!(
        "settle: 10 Mbit/s viewer on h after {:.2} s; 300 kbit/s viewer on {slow_layer:?}",
        (fast_settle).as_secs_f64()
    );
    net.run_for(Duration::from_secs(5));
    let _ = t0;
    assert_eq!(net.current_layer(slow).as_deref(), Some("l"));
    assert_eq!(net.current_layer(fast).as_deref(), Some("h"));
    let rs = analyse(net.sim_packets(slow));
    let rf = analyse(net.sim_packets(fast));
    assert_clean("300k viewer", &rs);
    assert_clean("10M viewer", &rf);
    assert_eq!(rs.switches, 0, "the slow viewer never left l");
    assert_eq!(rs.last_layer, Some(L));
    assert_eq!(rf.last_layer, Some(H));
    assert_eq!(rs.seq_gaps, 0);
    assert_eq!(rf.seq_gaps, 0);
    assert_eq!(rs.frames_lost + rf.frames_lost, 0, "frames lost");
    let s = net.stats();
    eprintln!(
        "switches: 10M viewer {} (up from l), 300k viewer {}; total {}; link drops slow {} fast {}",
        rf.switches,
        rs.switches,
        s.layer_switches,
        net.clients[slow].downlink.as_ref().unwrap().dropped,
        net.clients[fast].downlink.as_ref().unwrap().dropped
    );
    assert!(fast_settle <= Duration::from_secs(3), "{fast_settle:?}");
    net.assert_accounting();
}

#[test]
fn link_changes_switch_within_2s_on_keyframes() {
    let (mut net, _p, slow, fast) = setup(12);
    net.settle_on_layer(fast, "h", Duration::from_secs(20))
        .expect("fast settles on h");
    net.settle_on_layer(slow, "l", Duration::from_secs(20))
        .expect("slow settles on l");
    // The fast viewer's link collapses to 300 kbit/s.
    let at = net.elapsed();
    net.set_downlink(fast, Some(300_000));
    let down = net
        .settle_on_layer(fast, "l", Duration::from_secs(10))
        .expect("fast falls to l");
    let first_l = first_of_layer_after(&net, fast, L, at).expect("l reached the viewer");
    eprintln!(
        "10M→300k: forwarding l after {:.2} s, first l packet at the viewer after {:.2} s",
        down.as_secs_f64(),
        (first_l - at).as_secs_f64()
    );
    assert!(down <= Duration::from_secs(2), "down switch took {down:?}");
    assert!(first_l - at <= Duration::from_secs(2));
    // The slow viewer's link opens up to 10 Mbit/s.
    let at = net.elapsed();
    net.set_downlink(slow, Some(10_000_000));
    let up = net
        .settle_on_layer(slow, "h", Duration::from_secs(25))
        .expect("slow climbs to h");
    let first_m = first_of_layer_after(&net, slow, M, at);
    let first_h = first_of_layer_after(&net, slow, H, at).unwrap();
    eprintln!(
        "300k→10M: first m after {:?} s, first h after {:.2} s",
        first_m.map(|t| (t - at).as_secs_f64()),
        (first_h - at).as_secs_f64()
    );
    assert!(
        first_h - at <= Duration::from_secs(2),
        "h reached the viewer {:?} after its link opened",
        first_h - at
    );
    assert!(up <= Duration::from_secs(2), "up switch took {up:?}");
    net.run_for(Duration::from_secs(2));
    let rf = analyse(net.sim_packets(fast));
    let rs = analyse(net.sim_packets(slow));
    assert_clean("viewer whose link dropped", &rf);
    assert!(rf.frames_lost <= 60, "{} frames lost", rf.frames_lost);
    assert_clean("viewer whose link opened", &rs);
    eprintln!(
        "frames lost: dropped-link viewer {} (of {}), opened-link viewer {} (of {}); link drops {} / {}",
        rf.frames_lost,
        rf.frames,
        rs.frames_lost,
        rs.frames,
        net.clients[fast].downlink.as_ref().unwrap().dropped,
        net.clients[slow].downlink.as_ref().unwrap().dropped
    );
    assert_eq!(rs.frames_lost, 0);
    net.assert_accounting();
}

#[test]
fn paused_layer_makes_viewers_fall_back() {
    let (mut net, p, _slow, fast) = setup(13);
    net.settle_on_layer(fast, "h", Duration::from_secs(20))
        .expect("fast settles on h");
    let at = net.elapsed();
    net.clients[p].sim[usize::from(H)].paused = true;
    let fell = net
        .settle_on_layer(fast, "m", Duration::from_secs(10))
        .expect("falls back to m");
    let first_m = first_of_layer_after(&net, fast, M, at).unwrap();
    eprintln!(
        "h paused: viewer on m after {:.2} s (first m packet after {:.2} s)",
        fell.as_secs_f64(),
        (first_m - at).as_secs_f64()
    );
    assert!(first_m - at <= Duration::from_secs(2));
    // h resumes: the viewer climbs back.
    net.clients[p].sim[usize::from(H)].paused = false;
    let back = net
        .settle_on_layer(fast, "h", Duration::from_secs(15))
        .expect("back on h");
    eprintln!(
        "h resumed: viewer back on h after {:.2} s",
        back.as_secs_f64()
    );
    let r = analyse(net.sim_packets(fast));
    assert_clean("viewer", &r);
    eprintln!(
        "frames lost while h stopped and the viewer moved to m: {}",
        r.frames_lost
    );
    assert!(r.frames_lost <= 45, "{} frames lost", r.frames_lost);
    net.assert_accounting();
}

/// Measurement, not a gate (`cargo test --test simulcast_switching --
/// --ignored --nocapture`): the fast viewer's link collapses at 13 phases of
/// its traffic, 250 ms apart. Prints when l is forwarded and when its first
/// packet reaches the viewer, then when h first reaches the slow viewer after
/// its link opens. The gated test above uses one phase; this one shows the
/// spread.
#[test]
#[ignore]
fn down_switch_phase_sweep() {
    for delay_ms in (0..=3000).step_by(250) {
        let (mut net, _p, slow, fast) = setup(12);
        net.settle_on_layer(fast, "h", Duration::from_secs(20))
            .expect("fast settles on h");
        net.run_for(Duration::from_millis(delay_ms));
        let at = net.elapsed();
        net.set_downlink(fast, Some(300_000));
        let down = net.settle_on_layer(fast, "l", Duration::from_secs(10));
        let first_l = first_of_layer_after(&net, fast, L, at).map(|t| t - at);
        // Then the slow viewer's link opens up, as in the gated test.
        let at = net.elapsed();
        net.set_downlink(slow, Some(10_000_000));
        net.settle_on_layer(slow, "h", Duration::from_secs(25));
        let first_h = first_of_layer_after(&net, slow, H, at).map(|t| t - at);
        net.run_for(Duration::from_secs(2));
        let rf = analyse(net.sim_packets(fast));
        assert_clean("viewer whose link dropped", &rf);
        assert_clean("viewer whose link opened", &analyse(net.sim_packets(slow)));
        eprintln!(
            "phase +{delay_ms} ms: l forwarded after {:?} s, first l at the viewer after {:?} s, \
             {} frames lost; link opened: first h after {:?} s",
            down.map(|d| d.as_secs_f64()),
            first_l.map(|d| d.as_secs_f64()),
            rf.frames_lost,
            first_h.map(|d| d.as_secs_f64()),
        );
    }
}
