//! `wisp-load`: a fan-out load generator for a running wisp.
//!
//! One synthetic WHIP publisher (VP8-like video at `--video-pps` packets/s of
//! `--packet-size` payload bytes, Opus-like audio at `--audio-pps`) and N WHEP
//! viewers, all str0m peers (RTP mode) in this one process, driven by one mio
//! loop over real UDP sockets on loopback.
//!
//! What is measured, and how:
//! - **Sent**: RTP packets the publisher wrote (video + audio).
//! - **Received**: every viewer counts the SRTP datagrams it gets by the
//!   *clear* RTP header (the payload type tells video, audio and "other", e.g.
//!   RTX); "light" viewers never decrypt media (their STUN, DTLS and SRTCP go
//!   through str0m as usual). `--full-viewers` viewers (default 1) feed every
//!   datagram through str0m, which decrypts and authenticates it; their
//!   payloads are checked (magic, kind, counter) and give the latency samples.
//! - **Loss**: 1 - received / (sent × admitted viewers), over the whole send
//!   period plus a drain time; retransmissions and other payload types are not
//!   counted as received. A viewer POST answered `503` (overload control) is
//!   counted as refused, not retried, and left out of loss and delivery.
//! - **Latency**: receive time (the kernel's receive timestamp where the
//!   socket gives one, else the time right after the read) minus the send
//!   timestamp in the payload (taken right before `write_rtp`), both
//!   wall-clock µs; it includes the tool's own scheduling.
//! - **Server CPU**: utime+stime of `--server-pid` from `/proc/<pid>/stat`
//!   (all threads; clock ticks), and optionally the busy time of the core the
//!   server is pinned to (`--server-core`, from `/proc/stat`, includes softirq).
//!   Per-packet CPU = server CPU µs / media packets received by all viewers.
//! - **RSS**: VmRSS of the server at the end of the send period.
//! - **Setup rate**: WHEP sessions answered (201) per second.
//!
//! The modules: `args` (flags), `http` (the WHIP/WHEP client), `peer` (the
//! str0m peers), `media` (the payloads and the publisher), `driver` (the mio
//! loop over all peers), `server` (readings of the server: `/proc`,
//! `/metrics`), `nodes` (per-URL figures over several servers: publish to
//! one, view through others), `fanout` (one load run), `setup` (`--setup-rate`) and
//! `report` (what is printed and logged). This file picks the mode and runs
//! the ramp.

#![recursion_limit = "256"]

mod args;
mod driver;
mod fanout;
mod http;
mod media;
mod nodes;
mod peer;
mod report;
mod server;
mod setup;

use std::time::Duration;

use serde_json::{json, Value};

use args::{parse_args, Args};
use fanout::run_load;
use report::{emit, fmt_opt};
use setup::run_setup;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let one = match args.setup_rate {
        Some(m) => run_setup(&args, m, &args.room),
        None if !args.ramp => run_load(&args, args.viewers, &args.room),
        None => return ramp(&args),
    };
    match one {
        Ok(r) => emit(&args, &r),
        Err(e) => {
            eprintln!("wisp-load: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs at growing viewer counts (or video rates, `--ramp-pps`) until the
/// loss exceeds `--max-loss` or a run fails; prints each run, then a summary.
fn ramp(args: &Args) {
    let steps: Vec<usize> = if !args.ramp_pps.is_empty() {
        vec![args.viewers; args.ramp_pps.len()]
    } else if args.ramp_steps.is_empty() {
        let mut v = vec![10, 20, 50, 100, 200, 400];
        while *v.last().unwrap() * 2 <= args.max_viewers {
            let x = *v.last().unwrap() * 2;
            v.push(x);
        }
        v.retain(|&x| x <= args.max_viewers);
        v
    } else {
        args.ramp_steps.clone()
    };
    let mut held: Option<Value> = None;
    let mut failed: Option<Value> = None;
    for (k, n) in steps.into_iter().enumerate() {
        let mut a = args.clone();
        if let Some(pps) = args.ramp_pps.get(k) {
            a.video_pps = *pps;
        }
        let room = format!("{}-{n}-{}", args.room, a.video_pps as u64);
        match run_load(&a, n, &room) {
            Ok(r) => {
                emit(args, &r);
                let loss = r["loss_ratio"].as_f64().unwrap_or(1.0);
                if loss > args.max_loss {
                    failed =
                        Some(json!({"viewers": n, "video_pps": a.video_pps, "loss_ratio": loss}));
                    break;
                }
                held = Some(r);
            }
            Err(e) => {
                eprintln!("wisp-load: {n} viewers: {e}");
                failed = Some(json!({"viewers": n, "video_pps": a.video_pps, "error": e}));
                break;
            }
        }
        // Let the server settle between steps.
        std::thread::sleep(Duration::from_secs(1));
    }
    let summary = json!({
        "mode": "ramp",
        "label": args.label,
        "max_loss": args.max_loss,
        "held_viewers": held.as_ref().map(|h| h["viewers"].clone()),
        "held_video_pps": held.as_ref().map(|h| h["video_pps"].clone()),
        "held_forwarded_pps": held.as_ref().map(|h| h["forwarded_pps"].clone()),
        "held_server_cpu_us_per_packet": held.as_ref().map(|h| h["server_cpu_us_per_packet"].clone()),
        "failed_at": failed,
    });
    report::log(&summary);
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "ramp: held {} viewers at {} forwarded pps (loss <= {}); stopped at {}",
            fmt_opt(&summary["held_viewers"], 0),
            fmt_opt(&summary["held_forwarded_pps"], 0),
            args.max_loss,
            summary["failed_at"]
        );
    }
}
