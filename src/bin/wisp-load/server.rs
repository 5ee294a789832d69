//! What the tool reads about the server and the machine: the server's CPU and
//! RSS from `/proc/<pid>`, a core's busy time from `/proc/stat`, the kernel's
//! UDP drop counters, and the server's `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use crate::args::Args;
use crate::http::http;

/// One reading of a process from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime in seconds.
    pub cpu_s: f64,
    /// Sum of the threads' on-CPU time from schedstat, seconds (0 if unavailable).
    pub sched_s: f64,
    pub rss_kib: u64,
}

fn clk_tck() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/<pid>` (`pid` may be `self`); `None` if the process is gone.
pub fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut sched_ns = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some(ProcSample {
        cpu_s: ticks / clk_tck(),
        sched_s: sched_ns as f64 / 1e9,
        rss_kib,
    })
}

/// Busy seconds of core `c` (everything but idle and iowait) from /proc/stat.
fn core_busy_s(c: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{c}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&name))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy: f64 = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    Some(busy / clk_tck())
}

/// UDP counters of /proc/net/snmp (kernel-wide): receive-buffer and send-buffer drops.
fn udp_snmp() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let m: HashMap<&str, u64> = h
        .split_whitespace()
        .zip(v.split_whitespace())
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    (
        m.get("RcvbufErrors").copied().unwrap_or(0),
        m.get("SndbufErrors").copied().unwrap_or(0),
    )
}

/// Sum of the server's `/metrics` samples by metric name and labels (empty if unavailable).
pub fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let Ok(r) = http(addr, "GET", "/metrics", None, "") else {
        return HashMap::new();
    };
    if r.status != 200 {
        return HashMap::new();
    }
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of metric `prefix`, whatever its labels.
pub fn metric_sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == prefix || k.starts_with(&format!("{prefix}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Everything read about the server at one instant.
#[derive(Clone, Debug)]
pub struct ServerSnap {
    pub at: Instant,
    pub proc_: Option<ProcSample>,
    pub core: Option<f64>,
    /// Kernel-wide UDP receive-buffer and send-buffer drops.
    pub udp: (u64, u64),
    /// Empty unless asked for (a scrape costs the server a request).
    pub metrics: HashMap<String, f64>,
    /// This tool's own utime + stime, seconds.
    pub tool_cpu_s: f64,
}

/// Reads the server (`--server-pid`, `--server-core`, and `/metrics` if
/// `with_metrics`), the UDP counters and the tool's own CPU.
pub fn snap(args: &Args, with_metrics: bool) -> ServerSnap {
    ServerSnap {
        at: Instant::now(),
        proc_: args.server_pid.and_then(|p| proc_sample(&p.to_string())),
        core: args.server_core.and_then(core_busy_s),
        udp: udp_snmp(),
        metrics: if with_metrics {
            scrape(args.http)
        } else {
            HashMap::new()
        },
        tool_cpu_s: proc_sample("self").map(|p| p.cpu_s).unwrap_or(0.0),
    }
}

impl ServerSnap {
    /// The server's RSS, if `--server-pid` was read.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_.map(|p| p.rss_kib)
    }

    /// Server CPU seconds (utime + stime) from `before` to this reading.
    pub fn cpu_since(&self, before: &ServerSnap) -> Option<f64> {
        match (self.proc_, before.proc_) {
            (Some(a), Some(b)) => Some(a.cpu_s - b.cpu_s),
            _ => None,
        }
    }
}
