//! Core-only fan-out benchmark: one publisher, K viewers, real str0m peers, no
//! sockets. The publisher's SRTP datagrams are made first; the measured phase
//! only feeds them to `Sfu::handle_receive` and drains `poll_output`, so what
//! it counts is the server's cost: SRTP decrypt, demux, fan-out, K encrypts.
//!
//! ```text
//! cargo bench --bench fanout -- [viewers] [packets] [idle_sessions] [batch] [warmup_ms] [workers]
//! valgrind --tool=callgrind --toggle-collect='*measured_phase*' \
//!     target/release/deps/fanout-* 20 5000 0 1 0
//! ```
//! `batch` ingress datagrams are handed in before each drain of the output, as
//! the event loop does with one `recvmmsg` batch (default 1). `warmup_ms` of
//! simulated media before the measured phase (default 0) let the viewers send
//! their first receiver reports: str0m then stops writing the MID extension,
//! as in a long-running session.
//! Instructions per forwarded packet = callgrind's total / the `forwarded`
//! figure printed. Compare ratios within one run, never absolute times.
//!
//! `workers` (default 1: the single core above, unchanged): with n > 1 the
//! net is n workers' cores of one process linked by the relay
//! (`TestNet::workers`, src/sfu/relay.rs). The publisher is on core 0, the
//! room's home; viewer i is on core i % n (round robin over all cores, the
//! home included, so 2 workers × K viewers is K/2 + K/2), relayed from
//! core 0 when not on it; idle sessions stay on core 0. The measured phase
//! (`workers_measured_phase`) then counts, per batch, what every core does:
//! the home's receive and fan-out, its `Output::Relay` hand-over, and on
//! each other core `handle_relay` for the same batch of messages, a
//! `handle_timeout` and the drain of its fan-out and encrypts, as one turn
//! of a worker's event loop does (`read_relays` in src/event_loop.rs). Not
//! counted: the channel between the loops and the kernel's sends.
//! `forwarded` is then the sum over the cores (written to str0m; compare it
//! with `datagrams_out`). By default every viewer joins before the room has
//! video, so a relayed viewer's core cannot know the room is not simulcast
//! and gives it str0m's bandwidth estimator and pacer (src/sfu/lifecycle.rs),
//! which at batch > 2 sends fewer datagrams than were written here. With
//! `FANOUT_LATE_JOIN=1`, one viewer per core joins first and the others only
//! once every core's copy has had 500 ms of video (joining a running room):
//! then only that first viewer on each other core has the estimator. See
//! BENCHMARKS.md "Workers".

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Output;
use wisp::sfu::relay::RelayMsg;
use wisp::sfu::{Output as SfuOutput, Sfu};
use wisp::testnet::{server_addr, TestNet};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with('-'))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// RTP, not RTCP (RFC 5761: RTCP packet types 192..=223 in the second byte).
fn is_rtp(d: &[u8]) -> bool {
    d.len() > 1 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

/// The publisher's encrypted datagrams for `n` VP8-shaped packets of 1200 bytes.
fn make_datagrams(net: &mut TestNet, p: usize, n: usize) -> Vec<(Instant, Vec<u8>)> {
    let server = server_addr();
    let c = &mut net.clients[p];
    let (mid, _) = *c.mids.iter().find(|(_, k)| *k == MediaKind::Video).unwrap();
    let pt = c.rtc.media(mid).unwrap().remote_pts()[0];
    let mut out = Vec::with_capacity(n);
    let mut now = net.now;
    for i in 0..n as u64 {
        now += Duration::from_micros(100);
        let mut payload = vec![0u8; 1200];
        payload[0] = 0x10;
        payload[1] = if i % 300 == 0 { 0x00 } else { 0x01 };
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(10_000 + i), (i * 300) as u32, now, payload)
                .marker(true)
                .nackable(true),
        );
        let _ = c.rtc.handle_input(str0m::Input::Timeout(now));
        loop {
            match c.rtc.poll_output().unwrap() {
                // RTP only (RTCP and STUN go their own way in the real run).
                Output::Transmit(t) if t.destination == server && is_rtp(&t.contents) => {
                    out.push((now, t.contents.to_vec()));
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    out
}

/// The measured phase: everything the server does for these datagrams.
#[inline(never)]
fn measured_phase(
    net: &mut TestNet,
    from: SocketAddr,
    datagrams: &[(Instant, Vec<u8>)],
    batch: usize,
) -> u64 {
    let server = server_addr();
    let mut sent = 0u64;
    for chunk in datagrams.chunks(batch.max(1)) {
        for (at, d) in chunk {
            net.sfu.handle_receive(*at, from, server, d);
        }
        net.sfu.handle_timeout(chunk[chunk.len() - 1].0);
        loop {
            match net.sfu.poll_output() {
                SfuOutput::Transmit(t) => {
                    black_box(&t);
                    sent += 1;
                }
                SfuOutput::Record(r) => {
                    black_box(&r);
                }
                SfuOutput::Relay { msg, .. } => {
                    black_box(&msg);
                }
                SfuOutput::Upstream(u) => {
                    black_box(&u);
                }
                SfuOutput::Timeout(_) => break,
            }
        }
    }
    sent
}

/// Drain a core's output: count its datagrams, queue its relay messages per
/// receiving core.
fn drain_core(core: &mut Sfu, pending: &mut [Vec<RelayMsg>]) -> u64 {
    let mut sent = 0u64;
    loop {
        match core.poll_output() {
            SfuOutput::Transmit(t) => {
                black_box(&t);
                sent += 1;
            }
            SfuOutput::Record(r) => {
                black_box(&r);
            }
            SfuOutput::Relay { to, msg } => pending[to].push(msg),
            SfuOutput::Upstream(u) => {
                black_box(&u);
            }
            SfuOutput::Timeout(_) => break,
        }
    }
    sent
}

/// The measured phase with several workers: everything every core does for
/// these datagrams (module docs).
#[inline(never)]
fn workers_measured_phase(
    net: &mut TestNet,
    from: SocketAddr,
    datagrams: &[(Instant, Vec<u8>)],
    batch: usize,
) -> u64 {
    let server = server_addr();
    let n = net.cores.len() + 1;
    let mut pending: Vec<Vec<RelayMsg>> = (0..n).map(|_| Vec::with_capacity(64)).collect();
    let mut spare: Vec<RelayMsg> = Vec::with_capacity(64);
    let mut sent = 0u64;
    for chunk in datagrams.chunks(batch.max(1)) {
        let at = chunk[chunk.len() - 1].0;
        for (at, d) in chunk {
            net.sfu.handle_receive(*at, from, server, d);
        }
        net.sfu.handle_timeout(at);
        sent += drain_core(&mut net.sfu, &mut pending);
        // Hand the relay messages over until no core has any left (a viewer
        // core's answers, such as a need set, go back to the home).
        loop {
            let mut any = false;
            for k in 0..n {
                if pending[k].is_empty() {
                    continue;
                }
                any = true;
                std::mem::swap(&mut pending[k], &mut spare);
                let core = net.core(k);
                for m in spare.drain(..) {
                    core.handle_relay(at, m);
                }
                core.handle_timeout(at);
                sent += drain_core(core, &mut pending);
            }
            if !any {
                break;
            }
        }
    }
    sent
}

fn main() {
    let viewers = arg(1, 20);
    let packets = arg(2, 5000);
    let idle = arg(3, 0);
    let batch = arg(4, 1);
    let warmup = arg(5, 0);
    let workers = arg(6, 1).max(1);
    let late_join = std::env::var_os("FANOUT_LATE_JOIN").is_some_and(|v| v == "1");
    str0m::crypto::from_feature_flags().install_process_default();
    // The packet path alone: no admission by load (the core sees no load
    // samples here, and thousands of joins in a second would be refused).
    let config = wisp::sfu::SfuConfig {
        max_load: f64::INFINITY,
        ..Default::default()
    };
    let mut net = if workers > 1 {
        TestNet::workers(99, workers, config)
    } else {
        TestNet::with_config(99, config)
    };
    // Idle sessions in other rooms (10 a room): in every map and the timer heap.
    for i in 0..idle {
        net.join(
            &format!("idle{}", i / 10),
            false,
            &[(MediaKind::Video, Direction::RecvOnly)],
        )
        .unwrap();
    }
    let p = net.publish("bench");
    let mut vs = Vec::with_capacity(viewers);
    for i in 0..viewers {
        if late_join && i == workers.min(viewers) {
            // One viewer per core is in: media flows until every core's
            // copy of the room has its video track.
            net.media_on = true;
            let first = vs.clone();
            assert!(net.run_until(Duration::from_secs(10), |n| {
                n.connected(p) && first.iter().all(|v| n.connected(*v))
            }));
            net.run_for(Duration::from_millis(500));
        }
        vs.push(match i % workers {
            0 => net.view("bench"),
            k => net.view_relayed(k, 0, "bench"),
        });
    }
    net.media_on = false;
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.connected(p) && vs.iter().all(|v| n.connected(*v))
    }));
    if warmup > 0 {
        net.media_on = true;
        net.run_for(Duration::from_millis(warmup as u64));
        net.media_on = false;
        net.run_for(Duration::from_millis(200));
    }
    let from = net.clients[p].addr;
    let datagrams = make_datagrams(&mut net, p, packets);
    let per_core = |net: &TestNet| -> Vec<u64> {
        (0..workers)
            .map(|k| net.core_ref(k).stats().rtp_forwarded)
            .collect()
    };
    let before = per_core(&net);
    let t0 = Instant::now();
    let out = if workers > 1 {
        workers_measured_phase(&mut net, from, &datagrams, batch)
    } else {
        measured_phase(&mut net, from, &datagrams, batch)
    };
    let wall = t0.elapsed();
    let by_core: Vec<u64> = per_core(&net)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let forwarded: u64 = by_core.iter().sum();
    println!(
        "viewers={viewers} idle_sessions={idle} batch={batch} warmup_ms={warmup} ingress={} \
         forwarded={forwarded} datagrams_out={out} \
         wall_ns_per_forwarded={:.0} forwarded_pps_per_core={:.0}",
        datagrams.len(),
        wall.as_nanos() as f64 / forwarded.max(1) as f64,
        forwarded as f64 / wall.as_secs_f64()
    );
    if workers > 1 {
        let relay_full: u64 = (0..workers)
            .map(|k| net.core_ref(k).stats().relay_queue_full)
            .sum();
        println!("workers={workers} forwarded_per_core={by_core:?} relay_queue_full={relay_full}");
    }
}
