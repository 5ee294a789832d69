//! Simulcast switching in VP9, H.264 and AV1: a viewer moved between layers
//! (pinned through the layer extension's core call) gets one continuous
//! stream. Every switch starts on a keyframe of the new layer (VP9: B set, P
//! clear, key frame header; H.264: the packet with the SPS, before the IDR;
//! AV1: the N bit); sequence numbers are consecutive; timestamps never go
//! back; VP9 picture ids go up by one per picture across switches (7-bit
//! ones on the low layer, 15-bit on the others) and TL0PICIDX likewise;
//! nothing of the old layer follows a switch.
//!
//! Deterministic: real str0m peers on the in-memory TestNet with a fake clock.

mod common;

use std::time::Duration;

use common::{SimPacket, TestNet};
use str0m::format::Codec;
use wisp::sfu::{Role, RoomName};

/// Publisher layers (rid, packets per frame, packet size), 30 fps each.
const LAYERS: &[(&str, usize, usize)] = &[("h", 4, 1000), ("m", 2, 800), ("l", 1, 400)];
const RIDS: [&str; 3] = ["h", "m", "l"];
const L: usize = 2;

/// Pins per step, for viewers a and b (both start on l): up and down, one
/// and two layers at a time, both to the same layer at once (step 4), one
/// staying put (step 0).
const STEPS: &[(&str, &str)] = &[
    ("l", "h"),
    ("h", "m"),
    ("m", "l"),
    ("l", "h"),
    ("m", "m"),
    ("h", "l"),
];

/// Packets of a frame of layer `layer` (an H.264 keyframe of a multi-packet
/// layer has the STAP-A with SPS/PPS in front).
fn frame_len(codec: Codec, layer: u8, key: bool) -> usize {
    let n = LAYERS[usize::from(layer)].1;
    n + usize::from(codec == Codec::H264 && key && n > 1)
}

#[derive(Debug, Default)]
struct Report {
    packets: usize,
    frames: usize,
    keyframes: usize,
    /// Layer changes between consecutive frames.
    switches: usize,
    switches_off_keyframe: usize,
    seq_gaps: usize,
    ts_backwards: usize,
    pid_breaks: usize,
    tl0_breaks: usize,
    /// Incomplete frames of the old layer cut off by a switch's keyframe of
    /// the same or a later capture instant (the decoder skips them).
    superseded: usize,
    incomplete: usize,
}

fn analyse(codec: Codec, arrived: &[SimPacket]) -> Report {
    let mut r = Report {
        packets: arrived.len(),
        ..Report::default()
    };
    // No loss on these links: arrival order is sequence order.
    let Some(first) = arrived.first() else {
        return r;
    };
    assert!(first.keyframe, "{codec}: the stream starts on a keyframe");
    for w in arrived.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            r.seq_gaps += 1;
        }
    }
    let mut frames: Vec<Vec<SimPacket>> = vec![];
    for p in arrived {
        match frames.last_mut() {
            Some(f) if f[0].layer == p.layer && f[0].frame == p.frame => f.push(*p),
            _ => frames.push(vec![*p]),
        }
    }
    r.frames = frames.len();
    for (i, f) in frames.iter().enumerate() {
        let key = f[0].keyframe;
        r.keyframes += usize::from(key);
        let complete = f[0].start
            && f.len() == frame_len(codec, f[0].layer, key)
            && f.iter().all(|p| p.ts == f[0].ts);
        if !complete && i + 1 < frames.len() {
            let next = &frames[i + 1][0];
            if next.keyframe && next.layer != f[0].layer && next.frame >= f[0].frame {
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
        if cur.ts.wrapping_sub(prev.ts) as i32 <= 0 {
            r.ts_backwards += 1;
        }
        if codec == Codec::Vp9 {
            let mask = if prev.short_picture_id || cur.short_picture_id {
                0x7f
            } else {
                0x7fff
            };
            if cur.picture_id.wrapping_sub(prev.picture_id) & mask != 1 {
                r.pid_breaks += 1;
            }
            if cur.tl0.wrapping_sub(prev.tl0) != 1 {
                r.tl0_breaks += 1;
            }
        }
        if cur.layer != prev.layer {
            r.switches += 1;
            if !(cur.keyframe && cur.start) {
                r.switches_off_keyframe += 1;
            }
        }
    }
    r
}

fn pin(net: &mut TestNet, i: usize, rid: &str) {
    let room = RoomName::new("sc").unwrap();
    let token = net.clients[i].token.unwrap();
    let now = net.now;
    net.core_of(i)
        .pin_layer(now, Role::Subscriber, &room, token, Some(rid), None)
        .expect("pin");
}

/// Viewer `i`'s video packets that arrived at or after `from` (since the
/// start), with their arrival times.
fn arrived_since(net: &TestNet, i: usize, from: Duration) -> Vec<(Duration, SimPacket)> {
    net.sim_arrivals(i)
        .into_iter()
        .filter(|(at, _)| *at >= from)
        .collect()
}

fn switch_through_layers(codec: Codec, seed: u64) {
    let mut net = TestNet::new(seed);
    let p = net.publish_simulcast_codec("sc", LAYERS, codec);
    if codec == Codec::Vp9 {
        net.clients[p].sim[L].short_picture_id = true;
    }
    let a = net.view("sc");
    let b = net.view("sc");
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.connected(p) && n.connected(a) && n.connected(b)
    }));
    // Both start on l, pinned (their estimates would soon take them up on
    // their own); then the layers are measured (a pinned layer must be sending).
    pin(&mut net, a, "l");
    pin(&mut net, b, "l");
    net.run_for(Duration::from_secs(1));
    let mut times = vec![];
    for (step, (ra, rb)) in STEPS.iter().enumerate() {
        let at = net.elapsed();
        let was = [net.current_layer(a), net.current_layer(b)];
        pin(&mut net, a, ra);
        pin(&mut net, b, rb);
        net.run_for(Duration::from_millis(1500));
        for (v, rid, was) in [(a, ra, &was[0]), (b, rb, &was[1])] {
            assert_eq!(
                net.current_layer(v).as_deref(),
                Some(*rid),
                "{codec} step {step}: viewer {v} on {rid}"
            );
            // The layers that arrived since the pin, in runs: the old one
            // (until the switch), then the new one, never back.
            let mut runs: Vec<u8> = arrived_since(&net, v, at)
                .iter()
                .map(|(_, p)| p.layer)
                .collect();
            runs.dedup();
            let layer_of = |r: &str| RIDS.iter().position(|x| *x == r).unwrap() as u8;
            let new = layer_of(rid);
            if runs.len() > 1 && was.as_deref().map(layer_of) == Some(runs[0]) {
                runs.remove(0);
            }
            assert_eq!(
                runs,
                [new],
                "{codec} step {step}: viewer {v} got other layers after the pin"
            );
            if was.as_deref() != Some(*rid) {
                let layer = new;
                let first = arrived_since(&net, v, at)
                    .iter()
                    .find(|(_, p)| p.layer == layer)
                    .map(|(t, _)| *t)
                    .expect("new layer arrived");
                times.push(format!(
                    "{}@{:.2}s {}→{rid} {:.0} ms",
                    if v == a { "a" } else { "b" },
                    at.as_secs_f64(),
                    was.as_deref().unwrap_or("-"),
                    (first - at).as_secs_f64() * 1000.0
                ));
                assert!(
                    first - at <= Duration::from_millis(1200),
                    "{codec}: switch took {:?}",
                    first - at
                );
            }
        }
    }
    // Each layer's picture size, read from its keyframes: H.264 and AV1 from
    // the SPS / sequence header of that layer, VP9 from the scalability
    // structure (the test publisher declares 640x360 on every layer).
    let state = net
        .core_ref_of(a)
        .viewer_state(
            Role::Subscriber,
            &RoomName::new("sc").unwrap(),
            net.clients[a].token.unwrap(),
        )
        .unwrap();
    for l in &state.layers {
        let want = if codec == Codec::Vp9 {
            (640, 360)
        } else {
            common::sim_size(&l.rid).0
        };
        assert_eq!(
            (l.width, l.height),
            (Some(want.0), Some(want.1)),
            "{codec}: size of layer {}",
            l.rid
        );
    }
    let s = net.stats();
    for (name, v) in [("a", a), ("b", b)] {
        let r = analyse(codec, &net.sim_packets(v));
        let sfu_switches = net
            .core_ref_of(v)
            .viewer_layers(net.clients[v].token.unwrap())
            .unwrap()
            .switches;
        eprintln!("{codec} viewer {name}: {r:?}; the core counted {sfu_switches} switches");
        assert!(r.frames > 200, "{codec} {name}: {} frames", r.frames);
        assert!(
            r.packets > r.frames,
            "{codec} {name}: {} packets",
            r.packets
        );
        assert_eq!(r.switches as u64, sfu_switches, "{codec} {name}: switches");
        assert!(r.switches >= 5, "{codec} {name}: {} switches", r.switches);
        assert_eq!(
            r.switches_off_keyframe, 0,
            "{codec} {name}: switch off a keyframe"
        );
        assert_eq!(r.seq_gaps, 0, "{codec} {name}: sequence numbers");
        assert_eq!(r.ts_backwards, 0, "{codec} {name}: timestamps went back");
        assert_eq!(r.pid_breaks, 0, "{codec} {name}: picture ids");
        assert_eq!(r.tl0_breaks, 0, "{codec} {name}: TL0PICIDX");
        assert_eq!(r.incomplete, 0, "{codec} {name}: incomplete frames");
    }
    eprintln!(
        "{codec} switches (viewer@pin time from→to, first packet of the new layer after): {}",
        times.join(", ")
    );
    eprintln!(
        "{codec}: {} layer switches, {} keyframe requests to the publisher, {} dropped waiting for a keyframe",
        s.layer_switches,
        s.keyframe_requests_sent,
        s.dropped(wisp::sfu::DropReason::WaitingForKeyframe)
    );
    net.assert_accounting();
}

#[test]
fn vp9_switches_keep_picture_ids_continuous() {
    switch_through_layers(Codec::Vp9, 31);
}

#[test]
fn h264_switches_start_on_the_parameter_sets() {
    switch_through_layers(Codec::H264, 32);
}

#[test]
fn av1_switches_start_on_a_new_coded_video_sequence() {
    switch_through_layers(Codec::Av1, 33);
}

/// VP9 viewers that switch together need the same rewritten picture ids:
/// wisp copies each rewritten payload once for all of them, not per viewer.
#[test]
fn vp9_viewers_that_switch_together_share_rewritten_payloads() {
    const VIEWERS: usize = 8;
    let mut net = TestNet::new(41);
    let p = net.publish_simulcast_codec("sc", LAYERS, Codec::Vp9);
    let vs: Vec<usize> = (0..VIEWERS).map(|_| net.view("sc")).collect();
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.connected(p) && vs.iter().all(|v| n.connected(*v))
    }));
    for &v in &vs {
        pin(&mut net, v, "l");
    }
    net.run_for(Duration::from_secs(2));
    // All move to m on the same keyframe: from then on each m packet needs
    // the same rewrite for every viewer.
    for &v in &vs {
        pin(&mut net, v, "m");
    }
    net.run_for(Duration::from_secs(1));
    for &v in &vs {
        assert_eq!(net.current_layer(v).as_deref(), Some("m"));
    }
    let before = net.stats();
    net.run_for(Duration::from_secs(2));
    let after = net.stats();
    let copies = after.vp9_payload_copies - before.vp9_payload_copies;
    let forwarded = after.rtp_forwarded - before.rtp_forwarded;
    eprintln!(
        "{VIEWERS} VP9 viewers on m after switching together: {copies} payload copies for \
         {forwarded} packets forwarded (video and audio)"
    );
    // m: 2 packets a frame at 30 fps for 2 s, about 120 packets: one copy
    // each, on each worker with viewers (WISP_TEST_WORKERS spreads them).
    assert!(copies > 0, "the ids are rewritten");
    let workers = net.spread.clamp(1, VIEWERS) as u64;
    assert!(
        copies <= 130 * workers,
        "{copies} copies: one per viewer and packet instead of one per packet"
    );
}
