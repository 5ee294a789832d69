//! Per-URL figures for runs over several servers (`--publish-url`,
//! `--view-url`, `--node-pid`): the delivery, loss and one-way delay of the
//! viewers of each view URL, and each node's CPU and `/metrics` counters over
//! the send period.
//!
//! One-way delay needs no clock sync and no map of sent packets: the publisher
//! and the viewers are in this process, and every payload carries its send
//! time (wall-clock µs, `media::stamp`); a full viewer's sample is its receive
//! time minus that. Samples go into a [`LatencyHist`] per full viewer: fixed
//! size, whatever the run's length.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::peer::{Kind, Peer};
use crate::server::{metric_sum, proc_sample, scrape, ProcSample};

/// Values below this are counted exactly (1 µs buckets).
const EXACT: u32 = 4096;
/// log2 of [`EXACT`].
const EXACT_BITS: u32 = 12;
/// Buckets per power of two above [`EXACT`]: a relative error of at most 1/64.
const SUB_BITS: u32 = 6;
const BUCKETS: usize = EXACT as usize + ((32 - EXACT_BITS) << SUB_BITS) as usize;

/// A histogram of latency samples (µs): exact below 4,096 µs, within 1/64
/// above, up to `u32::MAX`; 5,376 counters whatever the number of samples.
#[derive(Clone)]
pub struct LatencyHist {
    counts: Box<[u64]>,
    n: u64,
    max: u32,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            n: 0,
            max: 0,
        }
    }
}

/// The bucket of `v`.
fn bucket(v: u32) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 31 - v.leading_zeros(); // EXACT_BITS..=31
    let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (EXACT + ((e - EXACT_BITS) << SUB_BITS) + sub) as usize
}

/// The smallest value of bucket `b`.
fn bucket_low(b: usize) -> u32 {
    let b = b as u32;
    if b < EXACT {
        return b;
    }
    let k = b - EXACT;
    let e = (k >> SUB_BITS) + EXACT_BITS;
    let sub = k & ((1 << SUB_BITS) - 1);
    (1 << e) | (sub << (e - SUB_BITS))
}

impl LatencyHist {
    pub fn record(&mut self, us: u32) {
        self.counts[bucket(us)] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.n = 0;
        self.max = 0;
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    /// Adds `o`'s samples to these.
    pub fn merge(&mut self, o: &LatencyHist) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.n += o.n;
        self.max = self.max.max(o.max);
    }

    /// The `q` quantile, nearest rank as [`crate::report::percentile`] (the
    /// sample of rank round((n-1)·q)), as the low end of its bucket (exact
    /// below 4,096 µs) but never above the maximum, the maximum for the top
    /// rank; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<u32> {
        if self.n == 0 {
            return None;
        }
        let rank = ((self.n as f64 - 1.0) * q).round() as u64;
        if rank + 1 >= self.n {
            return Some(self.max);
        }
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(bucket_low(b).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn max(&self) -> Option<u32> {
        (self.n > 0).then_some(self.max)
    }
}

/// The viewers of one view URL.
#[derive(Default)]
pub struct UrlTally {
    pub viewers: usize,
    pub refused: usize,
    pub full: usize,
    pub video: u64,
    pub audio: u64,
    pub other: u64,
    /// The largest loss ratio of one of its viewers.
    pub worst_loss: f64,
    pub lat: LatencyHist,
}

impl UrlTally {
    fn admitted(&self) -> usize {
        self.viewers - self.refused
    }

    /// Adds viewer `p` (of a run that sent `sent` media packets).
    pub fn add(&mut self, p: &Peer, sent: u64) {
        self.video += p.rx.video;
        self.audio += p.rx.audio;
        self.other += p.rx.other;
        if p.kind == Kind::Full {
            self.full += 1;
        }
        if let Some(h) = &p.lat_hist {
            self.lat.merge(h);
        }
        let loss = 1.0 - p.rx.media() as f64 / sent.max(1) as f64;
        self.worst_loss = self.worst_loss.max(loss);
    }

    /// The JSON record of the URL `addr` for a run that sent `sent` packets.
    pub fn to_json(&self, addr: SocketAddr, sent: u64) -> Value {
        let expected = sent * self.admitted() as u64;
        let received = self.video + self.audio;
        json!({
            "url": format!("http://{addr}"),
            "viewers": self.viewers,
            "admitted": self.admitted(),
            "refused": self.refused,
            "full_viewers": self.full,
            "expected": expected,
            "received": received,
            "received_video": self.video,
            "received_audio": self.audio,
            "received_other": self.other,
            "loss_ratio": if expected > 0 { 1.0 - received as f64 / expected as f64 } else { 0.0 },
            "worst_viewer_loss_ratio": self.worst_loss,
            "latency_samples": self.lat.len(),
            "latency_p50_us": self.lat.quantile(0.5),
            "latency_p90_us": self.lat.quantile(0.9),
            "latency_p99_us": self.lat.quantile(0.99),
            "latency_max_us": self.lat.max(),
        })
    }
}

/// Per view URL (in `view_addrs` order) tallies of `peers`; `group_of(p)` is
/// the index of `p`'s URL, `refused[i]` the POSTs URL `i` answered 503.
pub fn tally(peers: &[Peer], n_urls: usize, refused: &[usize], sent: u64) -> Vec<UrlTally> {
    let mut t: Vec<UrlTally> = (0..n_urls).map(|_| UrlTally::default()).collect();
    for (i, r) in refused.iter().enumerate() {
        t[i].viewers += r;
        t[i].refused += r;
    }
    for p in peers.iter().filter(|p| p.kind != Kind::Publisher) {
        let g = &mut t[p.group];
        g.viewers += 1;
        g.add(p, sent);
    }
    t
}

/// One node's readings at one instant.
pub struct NodeSnap {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub proc_: Option<ProcSample>,
    pub metrics: HashMap<String, f64>,
}

/// Reads every node (`/metrics`, and `/proc/PID` when its pid is known).
pub fn snap_nodes(nodes: &[(SocketAddr, Option<u32>)]) -> Vec<NodeSnap> {
    nodes
        .iter()
        .map(|&(addr, pid)| NodeSnap {
            addr,
            pid,
            proc_: pid.and_then(|p| proc_sample(&p.to_string())),
            metrics: scrape(addr),
        })
        .collect()
}

/// Each node's figures from `before` to `after` (the send period plus the
/// drain), `dur` seconds of sending, `sent` media packets sent.
pub fn node_records(before: &[NodeSnap], after: &[NodeSnap], dur: f64, sent: u64) -> Value {
    let recs: Vec<Value> = before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let have = !a.metrics.is_empty() && !b.metrics.is_empty();
            let delta = |name: &str| {
                have.then(|| metric_sum(&a.metrics, name) - metric_sum(&b.metrics, name))
            };
            let gauge = |name: &str| (!a.metrics.is_empty()).then(|| metric_sum(&a.metrics, name));
            let cpu = match (a.proc_, b.proc_) {
                (Some(x), Some(y)) => Some(x.cpu_s - y.cpu_s),
                _ => None,
            };
            let fwd = delta("wisp_rtp_packets_forwarded_total");
            let per_fwd = match (cpu, fwd) {
                (Some(c), Some(f)) if f > 0.0 => Some(c * 1e6 / f),
                _ => None,
            };
            json!({
                "url": format!("http://{}", a.addr),
                "pid": a.pid,
                "cpu_s": cpu,
                "rss_kib": a.proc_.map(|p| p.rss_kib),
                "forwarded_total": fwd,
                "forwarded_pps": fwd.map(|f| f / dur),
                // Copies of each sent packet the node wrote: its local viewers
                // plus the other nodes pulling from it.
                "forwarded_per_sent": fwd.filter(|_| sent > 0).map(|f| f / sent as f64),
                "received_total": delta("wisp_rtp_packets_received_total"),
                "cpu_us_per_forwarded": per_fwd,
                "sessions": gauge("wisp_sessions"),
                "relay_upstreams": gauge("wisp_relay_upstreams"),
                "packets_dropped": delta("wisp_packets_dropped_total"),
                "udp_send_errors": delta("wisp_udp_errors_total"),
            })
        })
        .collect();
    Value::Array(recs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::percentile;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..EXACT).chain((EXACT..u32::MAX).step_by(9973)) {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let lo = bucket_low(b);
            assert!(lo <= v, "{v}: low {lo}");
            // Exact below EXACT, within 1/64 above.
            assert!((v - lo) as u64 * 64 <= v as u64, "{v}: low {lo}");
        }
        assert_eq!(bucket(u32::MAX), BUCKETS - 1);
        assert_eq!(bucket_low(bucket(EXACT)), EXACT);
    }

    #[test]
    fn quantiles_match_the_sorted_samples() {
        // A spread of one-way delays: mostly small, a tail of large ones.
        let mut v: Vec<u32> = (0..10_000u32)
            .map(|i| (i * 7919) % 3000 + if i % 100 == 0 { 50_000 + i } else { 0 })
            .collect();
        let mut h = LatencyHist::default();
        for &x in &v {
            h.record(x);
        }
        v.sort_unstable();
        assert_eq!(h.len(), 10_000);
        // Exact where the samples are below 4,096 µs.
        assert_eq!(h.quantile(0.5), percentile(&v, 0.5));
        assert_eq!(h.quantile(0.9), percentile(&v, 0.9));
        // Within 1/64 above.
        let (got, want) = (h.quantile(0.995).unwrap(), percentile(&v, 0.995).unwrap());
        assert!(got <= want && (want - got) * 64 <= want, "{got} vs {want}");
        assert_eq!(h.max(), v.last().copied());
        assert_eq!(h.quantile(1.0), v.last().copied());
    }

    #[test]
    fn empty_merge_and_clear() {
        let mut a = LatencyHist::default();
        assert_eq!(a.quantile(0.5), None);
        assert_eq!(a.max(), None);
        let mut b = LatencyHist::default();
        for x in [100, 200, 300] {
            a.record(x);
        }
        for x in [400, 500] {
            b.record(x);
        }
        a.merge(&b);
        assert_eq!(a.len(), 5);
        assert_eq!(a.quantile(0.5), Some(300));
        assert_eq!(a.quantile(0.0), Some(100));
        assert_eq!(a.max(), Some(500));
        a.clear();
        assert_eq!((a.len(), a.quantile(0.5)), (0, None));
    }

    #[test]
    fn url_record_counts_admitted_viewers_only() {
        // 3 viewers at this URL, one refused; 1,000 packets sent; the two
        // admitted got 990 and 1,000.
        let mut t = UrlTally {
            viewers: 3,
            refused: 1,
            full: 1,
            video: 1_800,
            audio: 190,
            worst_loss: 0.01,
            ..Default::default()
        };
        t.lat.record(700);
        let r = t.to_json("127.0.0.1:9001".parse().unwrap(), 1_000);
        assert_eq!(r["url"], "http://127.0.0.1:9001");
        assert_eq!(
            (r["admitted"].as_u64(), r["expected"].as_u64()),
            (Some(2), Some(2_000))
        );
        assert_eq!(r["received"].as_u64(), Some(1_990));
        assert!((r["loss_ratio"].as_f64().unwrap() - 0.005).abs() < 1e-12);
        assert_eq!(r["latency_p99_us"].as_u64(), Some(700));
        // Nothing expected: no loss.
        let none = UrlTally::default().to_json("127.0.0.1:1".parse().unwrap(), 0);
        assert_eq!(none["loss_ratio"].as_f64(), Some(0.0));
        assert!(none["latency_p50_us"].is_null());
    }

    #[test]
    fn added_delay_of_a_slower_path() {
        // An edge path 300 µs slower than the origin's: the quantiles differ
        // by 300 µs (exactly, below 4,096 µs).
        let (mut origin, mut edge) = (LatencyHist::default(), LatencyHist::default());
        for i in 0..1000u32 {
            origin.record(200 + i);
            edge.record(500 + i);
        }
        for q in [0.5, 0.99] {
            assert_eq!(edge.quantile(q).unwrap() - origin.quantile(q).unwrap(), 300);
        }
    }
}
