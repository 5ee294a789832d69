//! One fan-out run: a publisher and N viewers connect, the publisher sends for
//! `--duration` seconds, and the run is measured second by second and as a
//! whole (sent, received, loss, latency, server CPU and memory).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::media::MediaKind;

use crate::args::Args;
use crate::driver::Load;
use crate::http::post_offer;
use crate::media::Publisher;
use crate::nodes::{node_records, snap_nodes, tally};
use crate::peer::{new_offer, post_peer, Counts, Kind, Peer};
use crate::report::percentile;
use crate::server::{metric_sum, snap, ServerSnap};

/// The viewers' media by clear header and, for full viewers, by decrypted payload.
fn totals(peers: &[Peer]) -> (Counts, Counts) {
    let mut rx = Counts::default();
    let mut dec = Counts::default();
    for p in peers.iter().filter(|p| p.kind != Kind::Publisher) {
        rx += p.rx;
        dec += p.dec;
    }
    (rx, dec)
}

/// 1 - received / expected; 0 when nothing was expected.
fn loss_ratio(received: u64, expected: u64) -> f64 {
    if expected > 0 {
        1.0 - received as f64 / expected as f64
    } else {
        0.0
    }
}

/// One load run: publisher + `n` viewers for `args.duration` seconds.
pub fn run_load(args: &Args, n: usize, room: &str) -> Result<Value, String> {
    let mut load = Load::new().map_err(|e| e.to_string())?;
    // With `/metrics`: admission refusals and shedding happen during setup too.
    let s0 = snap(args, true);

    // Publisher first, so viewers get its tracks in their answers.
    let pub_path = format!("/whip/{room}");
    let publisher = post_peer(args.publish_addr(), Kind::Publisher, &pub_path, args.io())?;
    let pi = load.add(publisher).map_err(|e| e.to_string())?;
    load.wait_connected(pi, Duration::from_secs(10))?;

    // Viewers, one after the other; handshakes progress in between. A `503`
    // (overload control) is a refusal: counted, not retried; the run goes on
    // with the admitted viewers, and loss and delivery are theirs.
    let view_path = format!("/whep/{room}");
    let t_setup = Instant::now();
    let mut post_time = 0.0;
    let mut refused = 0usize;
    let view_addrs = args.view_addrs();
    let mut refused_at = vec![0usize; view_addrs.len()];
    for i in 0..n {
        let g = args.view_index(i);
        let addr = view_addrs[g];
        let kind = if i < args.full_viewers {
            Kind::Full
        } else {
            Kind::Light
        };
        let p = new_offer(kind).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let r = post_offer(addr, &view_path, &p.offer)?;
        post_time += t.elapsed().as_secs_f64();
        if r.status == 503 {
            refused += 1;
            refused_at[g] += 1;
            load.turn(Duration::ZERO);
            continue;
        }
        let mut peer = p.finish(&r, addr, &view_path, args.io())?;
        peer.group = g;
        load.add(peer).map_err(|e| e.to_string())?;
        load.turn(Duration::ZERO);
    }
    load.wait_connected(
        0,
        Duration::from_secs(30) + Duration::from_millis(20 * n as u64),
    )?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    load.pump_for(Duration::from_millis(300));
    let after_setup = snap(args, false);
    let admitted = n - refused;

    let (video_pt, audio_pt) = (load.peers[pi].video_pt, load.peers[pi].audio_pt);
    let fps = args.fps;
    let mut pubr = Publisher {
        video_pt,
        audio_pt,
        video_mid: load.peers[pi].mid(MediaKind::Video),
        audio_mid: load.peers[pi].mid(MediaKind::Audio),
        video_sent: 0,
        audio_sent: 0,
        ppf: ((args.video_pps / fps as f64).round() as u64).max(1),
        next_key: Instant::now(),
        keyframes: 0,
    };

    if !args.quiet {
        eprintln!(
            "wisp-load: {admitted} viewers connected ({refused} refused) in {setup_s:.2}s; sending {} video pps x {} B + {} audio pps for {}s",
            args.video_pps, args.packet_size, args.audio_pps, args.duration
        );
    }
    let nodes: Vec<_> = args
        .nodes()
        .into_iter()
        .map(|a| (a, args.pid_of(a)))
        .collect();
    let n1 = snap_nodes(&nodes);
    let s1 = snap(args, true);
    load.measuring = true;
    for p in load.peers.iter_mut() {
        if let Some(h) = &mut p.lat_hist {
            h.clear();
        }
    }
    let t0 = Instant::now();
    let send_for = Duration::from_secs_f64(args.duration);
    let mut next_tick = t0 + Duration::from_secs(1);
    let mut last_tick = Tick {
        at: t0,
        sent: 0,
        received: 0,
        server: s1.clone(),
    };
    let mut max_behind = Duration::ZERO;
    let mut per_sec = vec![];
    // `/metrics` read once when sending stops: the server's busy ratio then
    // covers the last second of media, not the drain.
    let mut at_end: Option<ServerSnap> = None;
    let video_iv = 1.0 / args.video_pps;
    let audio_iv = if args.audio_pps > 0.0 {
        1.0 / args.audio_pps
    } else {
        f64::INFINITY
    };
    loop {
        let now = Instant::now();
        let el = now.duration_since(t0);
        let sending = el < send_for;
        if sending {
            let elf = el.as_secs_f64();
            // Video packets due by now, then audio.
            let due_v = (elf / video_iv) as u64 + 1;
            if due_v > pubr.video_sent + 1 {
                let behind =
                    Duration::from_secs_f64((due_v - pubr.video_sent - 1) as f64 * video_iv);
                max_behind = max_behind.max(behind);
            }
            while pubr.video_sent < due_v {
                let (lat, p) = (&mut load.lat_sec, &mut load.peers[pi]);
                pubr.send_video(p, fps, args.packet_size, lat);
            }
            let due_a = if audio_iv.is_finite() {
                (elf / audio_iv) as u64 + 1
            } else {
                0
            };
            while pubr.audio_sent < due_a {
                let (lat, p) = (&mut load.lat_sec, &mut load.peers[pi]);
                pubr.send_audio(p, lat);
            }
            load.rearm(pi);
        } else if el >= send_for + args.drain {
            break;
        } else if at_end.is_none() {
            at_end = Some(snap(args, true));
        }
        // Spin while packets are due within 2 ms; otherwise sleep in poll.
        let wait = if sending {
            let next_v = Duration::from_secs_f64(pubr.video_sent as f64 * video_iv);
            let gap = next_v.saturating_sub(el);
            if gap > Duration::from_millis(2) {
                gap - Duration::from_millis(1)
            } else {
                Duration::ZERO
            }
        } else {
            Duration::from_millis(5)
        };
        load.turn(wait);

        let now = Instant::now();
        if now >= next_tick {
            next_tick += Duration::from_secs(1);
            let (rx, _) = totals(&load.peers);
            let tick = Tick {
                at: now,
                sent: pubr.video_sent + pubr.audio_sent,
                received: rx.media(),
                server: snap(args, false),
            };
            per_sec.push(second(args, &mut load, admitted, t0, &last_tick, &tick));
            last_tick = tick;
        }
    }
    load.lat_all.extend_from_slice(&load.lat_sec);
    load.lat_sec.clear();
    load.measuring = false;
    let s2 = snap(args, true);
    let n2 = snap_nodes(&nodes);

    let (rx, dec) = totals(&load.peers);
    let sent = pubr.video_sent + pubr.audio_sent;
    let urls: Vec<Value> = tally(&load.peers, view_addrs.len(), &refused_at, sent)
        .iter()
        .zip(&view_addrs)
        .map(|(t, a)| t.to_json(*a, sent))
        .collect();
    let expected = sent * admitted as u64;
    let received = rx.media();
    let loss = loss_ratio(received, expected);
    // Each admitted viewer's loss, sorted: under overload, wisp's fan-out
    // concentrates loss on its newest viewers, which the mean hides.
    let mut viewer_loss: Vec<f64> = load
        .peers
        .iter()
        .filter(|p| p.kind != Kind::Publisher)
        .map(|p| 1.0 - p.rx.media() as f64 / sent.max(1) as f64)
        .collect();
    viewer_loss.sort_unstable_by(f64::total_cmp);
    let worst_viewer_loss = viewer_loss.last().copied().unwrap_or(0.0).max(0.0);
    let viewers_under_half_percent = viewer_loss.iter().filter(|l| **l < 0.005).count();
    let viewer_loss_p50 = viewer_loss.get(viewer_loss.len() / 2).copied();
    // The full viewers' decrypt check: every media datagram they counted by
    // header must have come out of str0m with a valid payload.
    let full: Vec<&Peer> = load.peers.iter().filter(|p| p.kind == Kind::Full).collect();
    let full_hdr: u64 = full.iter().map(|p| p.rx.media()).sum();
    let full_dec: u64 = full.iter().map(|p| p.dec.media()).sum();
    let bad: u64 = full.iter().map(|p| p.bad_payload).sum();
    let mut lat_user: Vec<u32> = full
        .iter()
        .flat_map(|p| p.lat_user.iter().copied())
        .collect();
    lat_user.sort_unstable();
    let kernel_ts: u64 = full.iter().map(|p| p.kernel_ts).sum();
    let dur = args.duration;
    let mut lat = std::mem::take(&mut load.lat_all);
    lat.sort_unstable();
    let cpu_s = s2.cpu_since(&s1);
    let sched_s = match (s2.proc_, s1.proc_) {
        (Some(a), Some(b)) if a.sched_s > 0.0 => Some(a.sched_s - b.sched_s),
        _ => None,
    };
    let core_s = match (s2.core, s1.core) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let per_pkt = |c: Option<f64>| {
        c.filter(|_| received > 0)
            .map(|c| c * 1e6 / received as f64)
    };
    let mdelta = |name: &str| {
        if s1.metrics.is_empty() || s2.metrics.is_empty() {
            None
        } else {
            Some(metric_sum(&s2.metrics, name) - metric_sum(&s1.metrics, name))
        }
    };
    let end_metrics = at_end.map(|s| s.metrics).unwrap_or_default();
    let gauge = |name: &str| (!end_metrics.is_empty()).then(|| metric_sum(&end_metrics, name));
    let shed: serde_json::Map<String, Value> = SHED_ACTIONS
        .iter()
        .filter_map(|a| {
            let k = format!("wisp_shed_actions_total{{action=\"{a}\"}}");
            let d = s2.metrics.get(&k)? - s0.metrics.get(&k)?;
            Some((a.to_string(), json!(d)))
        })
        .collect();
    let pub_send_errors = load.peers[pi].send_errors;
    let keyframe_requests = load.peers[pi].keyframe_requests;
    let (deleted, del_s) = load.teardown();
    Ok(json!({
        "mode": "load",
        "label": args.label,
        "room": room,
        "viewers": n,
        "admitted": admitted,
        "refused": refused,
        "full_viewers": args.full_viewers.min(n),
        "duration_s": dur,
        "wall_s": s2.at.duration_since(s1.at).as_secs_f64(),
        "video_pps": args.video_pps,
        "packet_size": args.packet_size,
        "audio_pps": args.audio_pps,
        "sent_video": pubr.video_sent,
        "sent_audio": pubr.audio_sent,
        "keyframes_sent": pubr.keyframes,
        "keyframe_requests": keyframe_requests,
        "publisher_max_behind_ms": max_behind.as_secs_f64() * 1e3,
        "publisher_send_errors": pub_send_errors,
        "expected": expected,
        "received": received,
        "received_video": rx.video,
        "received_audio": rx.audio,
        "received_other": rx.other,
        "forwarded_pps": received as f64 / dur,
        "loss_ratio": loss,
        "worst_viewer_loss_ratio": worst_viewer_loss,
        "median_viewer_loss_ratio": viewer_loss_p50,
        "viewers_loss_under_0_5_pct": viewers_under_half_percent,
        "full_viewer_header_counted": full_hdr,
        "full_viewer_decrypted_ok": full_dec,
        "full_viewer_decrypted_other": dec.other,
        "full_viewer_bad_payload": bad,
        "latency_samples": lat.len(),
        "latency_p50_us": percentile(&lat, 0.5),
        "latency_p90_us": percentile(&lat, 0.9),
        "latency_p99_us": percentile(&lat, 0.99),
        "latency_max_us": lat.last(),
        "latency_clock": if kernel_ts > 0 { "kernel receive timestamp (SO_TIMESTAMPNS)" } else { "user-space read" },
        "latency_user_p50_us": percentile(&lat_user, 0.5),
        "latency_user_p99_us": percentile(&lat_user, 0.99),
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_packet": per_pkt(cpu_s),
        "server_sched_cpu_s": sched_s,
        "server_sched_cpu_us_per_packet": per_pkt(sched_s),
        "server_core_busy_s": core_s,
        "server_core_us_per_packet": per_pkt(core_s),
        "server_rss_kib": s2.rss_kib(),
        "server_rss_before_kib": s0.rss_kib(),
        "server_rss_after_setup_kib": after_setup.rss_kib(),
        "server_forwarded_total": mdelta("wisp_rtp_packets_forwarded_total"),
        "server_udp_send_errors": mdelta("wisp_udp_errors_total"),
        "server_packets_dropped": mdelta("wisp_packets_dropped_total"),
        "server_udp_receive_drops": mdelta("wisp_udp_receive_drops_total"),
        "server_udp_receive_buffer_bytes": gauge("wisp_udp_receive_buffer_bytes"),
        "server_loop_busy_ratio": gauge("wisp_loop_busy_ratio"),
        "server_loop_load_ratio": gauge("wisp_loop_load_ratio"),
        "server_send_batch": gauge("wisp_send_batch"),
        "server_load_headroom": gauge("wisp_load_headroom"),
        "server_load_headroom_pps": gauge("wisp_load_headroom_pps"),
        "server_cost_per_packet_s": gauge("wisp_cost_per_packet_seconds"),
        "server_viewers_paused": gauge("wisp_viewers_paused"),
        "server_admission_refusals": (!s0.metrics.is_empty() && !s2.metrics.is_empty()).then(|| {
            metric_sum(&s2.metrics, "wisp_admission_refusals_total")
                - metric_sum(&s0.metrics, "wisp_admission_refusals_total")
        }),
        "server_shed_actions": if shed.is_empty() { Value::Null } else { Value::Object(shed) },
        "udp_rcvbuf_errors": s2.udp.0 - s1.udp.0,
        "udp_sndbuf_errors": s2.udp.1 - s1.udp.1,
        "tool_cpu_s": s2.tool_cpu_s - s1.tool_cpu_s,
        "setup_s": setup_s,
        "setup_per_s": n as f64 / setup_s,
        "setup_post_per_s": n as f64 / post_time.max(1e-9),
        "deleted": deleted,
        "delete_s": del_s,
        "publish_url": format!("http://{}", args.publish_addr()),
        "view_urls": urls,
        "nodes": node_records(&n1, &n2, dur, sent),
        "per_second": per_sec,
    }))
}

/// The `action` labels of `wisp_shed_actions_total`.
const SHED_ACTIONS: [&str; 5] = ["down", "pause", "close", "resume", "lift"];

/// The counts at a second's boundary of the send period.
struct Tick {
    at: Instant,
    /// Media packets the publisher sent.
    sent: u64,
    /// Media packets all viewers received (by clear header).
    received: u64,
    server: ServerSnap,
}

/// The per-second record from `last` to `tick` (`n` admitted viewers, `t0` the start of
/// sending); prints the progress line unless `--quiet`, and moves this
/// second's latency samples to the run's.
fn second(args: &Args, load: &mut Load, n: usize, t0: Instant, last: &Tick, tick: &Tick) -> Value {
    let (now, s) = (tick.at, &tick.server);
    let dt = now.duration_since(last.at).as_secs_f64();
    let d_sent = tick.sent - last.sent;
    let d_rx = tick.received - last.received;
    let exp = d_sent * n as u64;
    let loss = loss_ratio(d_rx, exp);
    load.lat_sec.sort_unstable();
    let p50 = percentile(&load.lat_sec, 0.5);
    let p99 = percentile(&load.lat_sec, 0.99);
    let cpu = s.cpu_since(&last.server).map(|c| c / dt);
    let rec = json!({
        "t_s": now.duration_since(t0).as_secs_f64(),
        "sent_pps": d_sent as f64 / dt,
        "received_pps": d_rx as f64 / dt,
        "loss_ratio": loss,
        "latency_p50_us": p50,
        "latency_p99_us": p99,
        "server_cpu_util": cpu,
        "server_rss_kib": s.rss_kib(),
    });
    if !args.quiet {
        eprintln!(
            "  t={:>5.1}s sent {:>7.0} pps  rx {:>8.0} pps  loss {:>7.3}%  lat p50 {:>6} p99 {:>6} us  server cpu {:>5}  rss {:>8} KiB",
            now.duration_since(t0).as_secs_f64(),
            d_sent as f64 / dt,
            d_rx as f64 / dt,
            loss * 100.0,
            p50.map(|v| v.to_string()).unwrap_or("-".into()),
            p99.map(|v| v.to_string()).unwrap_or("-".into()),
            cpu.map(|c| format!("{:.0}%", c * 100.0)).unwrap_or("-".into()),
            s.rss_kib().map(|v| v.to_string()).unwrap_or("-".into()),
        );
    }
    load.lat_all.extend_from_slice(&load.lat_sec);
    load.lat_sec.clear();
    rec
}
