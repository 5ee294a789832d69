//! The `--setup-rate` run: how fast the server answers and connects idle WHEP
//! sessions, what each costs it in CPU and memory, and how fast they go away.

use std::io;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::args::Args;
use crate::driver::Load;
use crate::http::{http, HttpResponse};
use crate::peer::{new_offer, Kind, Pending};
use crate::report::percentile;
use crate::server::snap;

/// Create `m` idle WHEP sessions as fast as possible, connect them, measure,
/// delete them. Offers are built beforehand so the tool's own `Rtc::build`
/// is not part of the rate.
pub fn run_setup(args: &Args, m: usize, room: &str) -> Result<Value, String> {
    let mut load = Load::new().map_err(|e| e.to_string())?;
    let path = format!("/whep/{room}");
    let io_opts = args.io();
    let t_build = Instant::now();
    let mut pend: Vec<Option<Pending>> = (0..m)
        .map(|_| new_offer(Kind::Light).map(Some))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let build_s = t_build.elapsed().as_secs_f64();
    load.pump_for(Duration::from_millis(200));
    let s0 = snap(args, false);

    let (job_tx, job_rx) = crossbeam_channel::unbounded::<(usize, String)>();
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<(usize, io::Result<HttpResponse>, f64)>();
    for (i, p) in pend.iter().enumerate() {
        job_tx.send((i, p.as_ref().unwrap().offer.clone())).unwrap();
    }
    drop(job_tx);
    let t0 = Instant::now();
    let mut workers = vec![];
    for _ in 0..args.setup_concurrency {
        let (rx, tx, addr, path) = (job_rx.clone(), res_tx.clone(), args.http, path.clone());
        workers.push(std::thread::spawn(move || {
            while let Ok((i, offer)) = rx.recv() {
                let t = Instant::now();
                let r = http(addr, "POST", &path, Some("application/sdp"), &offer);
                let _ = tx.send((i, r, t.elapsed().as_secs_f64()));
            }
        }));
    }
    drop(res_tx);
    let mut answered = 0usize;
    let mut failed = 0usize;
    let mut first_err = None;
    let mut req_lat = vec![];
    let mut t_last_answer = t0;
    // Accept answers as they come, and pump the peers meanwhile.
    loop {
        match res_rx.recv_timeout(Duration::from_millis(1)) {
            Ok((i, r, el)) => {
                req_lat.push((el * 1e6) as u32);
                let p = pend[i].take().unwrap();
                match r
                    .map_err(|e| e.to_string())
                    .and_then(|r| p.finish(&r, args.http, &path, io_opts))
                {
                    Ok(peer) => {
                        answered += 1;
                        t_last_answer = Instant::now();
                        load.add(peer).map_err(|e| e.to_string())?;
                    }
                    Err(e) => {
                        failed += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        load.turn(Duration::ZERO);
    }
    for w in workers {
        let _ = w.join();
    }
    let post_s = t_last_answer.duration_since(t0).as_secs_f64();
    let conn = load.wait_connected(0, Duration::from_secs(30));
    let connected = load.peers.iter().filter(|p| p.connected).count();
    let connect_s = t0.elapsed().as_secs_f64();
    let s_connected = snap(args, false);
    load.pump_for(Duration::from_secs(2));
    let s1 = snap(args, false);
    let (deleted, del_s) = load.teardown();
    std::thread::sleep(Duration::from_millis(500));
    let s2 = snap(args, false);
    req_lat.sort_unstable();
    let growth = match (s1.rss_kib(), s0.rss_kib()) {
        (Some(a), Some(b)) => Some(a as f64 - b as f64),
        _ => None,
    };
    let cpu = s_connected.cpu_since(&s0);
    Ok(json!({
        "mode": "setup",
        "label": args.label,
        "room": room,
        "viewers": m,
        "duration_s": post_s,
        "forwarded_pps": 0.0,
        "loss_ratio": null,
        "latency_p50_us": null,
        "latency_p99_us": null,
        "server_cpu_s": cpu,
        "server_cpu_us_per_packet": null,
        "server_cpu_ms_per_session": cpu.map(|c| c * 1e3 / answered.max(1) as f64),
        "server_rss_kib": s1.rss_kib(),
        "server_rss_before_kib": s0.rss_kib(),
        "server_rss_after_delete_kib": s2.rss_kib(),
        "rss_per_idle_session_kib": growth.map(|g| g / connected.max(1) as f64),
        "answered": answered,
        "failed": failed,
        "first_error": first_err,
        "connected": connected,
        "connect_error": conn.err(),
        "concurrency": args.setup_concurrency,
        "setup_per_s": answered as f64 / post_s.max(1e-9),
        "connected_per_s": connected as f64 / connect_s,
        "request_p50_us": percentile(&req_lat, 0.5),
        "request_p99_us": percentile(&req_lat, 0.99),
        "tool_offer_build_s": build_s,
        "deleted": deleted,
        "delete_per_s": deleted as f64 / del_s.max(1e-9),
    }))
}
