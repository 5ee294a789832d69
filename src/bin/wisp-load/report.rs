//! The output: percentiles, the human-readable lines on stdout, the JSON
//! record (`--json`), and the JSON-lines log (`WISP_LOAD_LOG`). Users' scripts
//! parse all of them: keep their formats.

use std::io::Write;

use serde_json::Value;

use crate::args::Args;

/// The `q` quantile (nearest rank) of `sorted`; `None` if it is empty.
pub fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i])
}

/// A JSON value for a table: `-` for null, floats with `digits` decimals.
pub fn fmt_opt(v: &Value, digits: usize) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) if n.is_f64() => format!("{:.*}", digits, n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

fn print_human(r: &Value) {
    let g = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    if g("mode") == "setup" {
        println!(
            "setup: {} sessions answered in {}s = {} /s (concurrency {}), {} connected ({} /s), request p50 {} us p99 {} us",
            fmt_opt(&g("answered"), 0),
            fmt_opt(&g("duration_s"), 3),
            fmt_opt(&g("setup_per_s"), 1),
            fmt_opt(&g("concurrency"), 0),
            fmt_opt(&g("connected"), 0),
            fmt_opt(&g("connected_per_s"), 1),
            fmt_opt(&g("request_p50_us"), 0),
            fmt_opt(&g("request_p99_us"), 0),
        );
        println!(
            "       server CPU {} ms/session, RSS {} -> {} KiB = {} KiB per idle session; after DELETE {} KiB ({} deletes/s)",
            fmt_opt(&g("server_cpu_ms_per_session"), 2),
            fmt_opt(&g("server_rss_before_kib"), 0),
            fmt_opt(&g("server_rss_kib"), 0),
            fmt_opt(&g("rss_per_idle_session_kib"), 1),
            fmt_opt(&g("server_rss_after_delete_kib"), 0),
            fmt_opt(&g("delete_per_s"), 1),
        );
        return;
    }
    println!(
        "{:>7} {:>10} {:>11} {:>9} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8}",
        "viewers",
        "sent_pps",
        "fwd_pps",
        "loss_%",
        "p50_us",
        "p99_us",
        "cpu_s",
        "us/pkt",
        "rss_KiB",
        "setup/s",
        "tool_cpu",
        "refused"
    );
    let sent = g("sent_video").as_f64().unwrap_or(0.0) + g("sent_audio").as_f64().unwrap_or(0.0);
    println!(
        "{:>7} {:>10.0} {:>11.0} {:>9.4} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8}",
        fmt_opt(&g("viewers"), 0),
        sent / g("duration_s").as_f64().unwrap_or(1.0),
        g("forwarded_pps").as_f64().unwrap_or(0.0),
        g("loss_ratio").as_f64().unwrap_or(0.0) * 100.0,
        fmt_opt(&g("latency_p50_us"), 0),
        fmt_opt(&g("latency_p99_us"), 0),
        fmt_opt(&g("server_cpu_s"), 2),
        fmt_opt(&g("server_cpu_us_per_packet"), 3),
        fmt_opt(&g("server_rss_kib"), 0),
        fmt_opt(&g("setup_per_s"), 0),
        fmt_opt(&g("tool_cpu_s"), 2),
        fmt_opt(&g("refused"), 0),
    );
    println!(
        "  check: full viewers counted {} by header, {} decrypted with valid payload ({} bad); udp rcvbuf drops {}, server send errors {}, server dropped {}",
        fmt_opt(&g("full_viewer_header_counted"), 0),
        fmt_opt(&g("full_viewer_decrypted_ok"), 0),
        fmt_opt(&g("full_viewer_bad_payload"), 0),
        fmt_opt(&g("udp_rcvbuf_errors"), 0),
        fmt_opt(&g("server_udp_send_errors"), 0),
        fmt_opt(&g("server_packets_dropped"), 0),
    );
    print_urls(r);
}

/// With several servers (`--publish-url`, `--view-url`): a line per view URL
/// and per node. Nothing with one server, so that its output stays as it was.
fn print_urls(r: &Value) {
    let (urls, nodes) = (&r["view_urls"], &r["nodes"]);
    let many = |v: &Value| v.as_array().is_some_and(|a| a.len() > 1);
    if !many(urls) && !many(nodes) {
        return;
    }
    for u in urls.as_array().into_iter().flatten() {
        println!(
            "  view {}: {} viewers ({} refused), received {} of {}, loss {:.4}%, latency p50 {} p99 {} us ({} samples)",
            u["url"].as_str().unwrap_or("-"),
            fmt_opt(&u["viewers"], 0),
            fmt_opt(&u["refused"], 0),
            fmt_opt(&u["received"], 0),
            fmt_opt(&u["expected"], 0),
            u["loss_ratio"].as_f64().unwrap_or(0.0) * 100.0,
            fmt_opt(&u["latency_p50_us"], 0),
            fmt_opt(&u["latency_p99_us"], 0),
            fmt_opt(&u["latency_samples"], 0),
        );
    }
    for n in nodes.as_array().into_iter().flatten() {
        println!(
            "  node {}: forwarded {} ({} per sent packet), cpu {} s = {} us/forwarded, relay upstreams {}",
            n["url"].as_str().unwrap_or("-"),
            fmt_opt(&n["forwarded_total"], 0),
            fmt_opt(&n["forwarded_per_sent"], 2),
            fmt_opt(&n["cpu_s"], 2),
            fmt_opt(&n["cpu_us_per_forwarded"], 3),
            fmt_opt(&n["relay_upstreams"], 0),
        );
    }
}

/// Prints a run's record (one JSON line without the per-second samples with
/// `--json`, else the human lines) and logs it in full.
pub fn emit(args: &Args, r: &Value) {
    if args.json {
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("per_second");
        }
        println!("{r}");
    } else {
        print_human(r);
    }
    log(r);
}

/// Appends `r` as one JSON line to the file `WISP_LOAD_LOG` names, if any.
pub fn log(r: &Value) {
    if let Ok(path) = std::env::var("WISP_LOAD_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{r}");
        }
    }
}
