//! `GET /metrics`: the core's [`Stats`] plus HTTP-side counters, in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! Every family has `# HELP` and `# TYPE`; counters end in `_total`; label
//! values are fixed strings from wisp (never user input).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sfu::stats::{self, DropReason, Stats};

/// The `Content-Type` of a metrics response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Lowest and highest status code counted individually.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;

/// HTTP responses by status code, and requests abandoned without a response.
/// Lock-free; shared by the acceptor and the workers.
pub struct HttpCounters {
    by_status: [AtomicU64; (LAST_CODE - FIRST_CODE + 1) as usize],
    abandoned: AtomicU64,
    /// TCP connections of the front (`crate::http::front`); all zero without it.
    pub connections: ConnectionCounters,
}

impl Default for HttpCounters {
    fn default() -> Self {
        HttpCounters {
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            abandoned: AtomicU64::new(0),
            connections: ConnectionCounters::default(),
        }
    }
}

impl fmt::Debug for HttpCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCounters")
            .field("by_status", &self.snapshot())
            .field("abandoned", &self.abandoned())
            .field("connections", &self.connections)
            .finish()
    }
}

impl HttpCounters {
    /// All zero.
    pub fn new() -> HttpCounters {
        HttpCounters::default()
    }

    /// Count one response with `status` (codes outside 100–599 are ignored).
    pub fn record(&self, status: u16) {
        if let Some(c) = self.slot(status) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Responses sent with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.slot(status).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Count one request that was abandoned without an answer.
    pub fn record_abandoned(&self) -> u64 {
        self.abandoned.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Requests abandoned without an answer (see `crate::http::server`).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// `(status, count)` for every status seen, ascending.
    pub fn snapshot(&self) -> Vec<(u16, u64)> {
        (FIRST_CODE..=LAST_CODE)
            .map(|s| (s, self.count(s)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    fn slot(&self, status: u16) -> Option<&AtomicU64> {
        if (FIRST_CODE..=LAST_CODE).contains(&status) {
            Some(&self.by_status[usize::from(status - FIRST_CODE)])
        } else {
            None
        }
    }
}

/// Why the HTTP front closed a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished (or the client went away).
    Done,
    /// A read, write or connect failed.
    Error,
    /// Client bytes went unanswered for too long (slow headers, body or TLS handshake).
    RequestTimeout,
    /// Nothing in either direction for too long.
    IdleTimeout,
    /// The client read nothing of a pending response for too long.
    WriteStall,
    /// Refused at accept: too many connections open.
    OverCap,
}

impl CloseReason {
    /// Every reason, in the order of [`CloseReason::label`]'s metric samples.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Done,
        CloseReason::Error,
        CloseReason::RequestTimeout,
        CloseReason::IdleTimeout,
        CloseReason::WriteStall,
        CloseReason::OverCap,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Error => "error",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::WriteStall => "write_stall",
            CloseReason::OverCap => "over_cap",
        }
    }

    /// Closed by one of the front's timers.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            CloseReason::RequestTimeout | CloseReason::IdleTimeout | CloseReason::WriteStall
        )
    }
}

/// TCP connections of the HTTP front: accepted, open now, closed by reason.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    accepted: AtomicU64,
    open: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
}

impl ConnectionCounters {
    /// One connection admitted (now open).
    pub fn record_accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// One open connection closed for `reason`.
    pub fn record_close(&self, reason: CloseReason) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One connection refused at accept because too many were open.
    pub fn record_rejected(&self) {
        self.closed[CloseReason::OverCap as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections admitted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed for `reason` so far.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    /// Connections closed by a timer so far.
    pub fn closed_by_timeout(&self) -> u64 {
        CloseReason::ALL
            .iter()
            .filter(|r| r.is_timeout())
            .map(|&r| self.closed(r))
            .sum()
    }

    /// Connections refused at accept so far.
    pub fn rejected_over_cap(&self) -> u64 {
        self.closed(CloseReason::OverCap)
    }
}

/// Text output with one helper per line kind.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One histogram family with a `role` label per role.
    fn histogram(&mut self, name: &str, help: &str, h: &[stats::Histogram; 2], bounds: &[f64]) {
        self.family(name, "histogram", help);
        for (role, h) in ROLES.iter().zip(h) {
            let mut cumulative = 0;
            for (i, le) in bounds
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                cumulative += h.buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    self.0,
                    "{name}_bucket{{role=\"{role}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(self.0, "{name}_sum{{role=\"{role}\"}} {}", h.sum);
            let _ = writeln!(self.0, "{name}_count{{role=\"{role}\"}} {}", h.count);
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One gauge with a fractional value.
    fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.0, "{name} {value}");
    }
}

const ROLES: [&str; 2] = ["publisher", "viewer"];

/// Cluster mode's figures (issue 15; names are contracts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    /// Live node records in the directory, this node's included.
    pub nodes: u64,
    /// Upstreams this node pulls (rooms it relays).
    pub upstreams: u64,
    /// `307`s answered.
    pub redirects: u64,
    /// Pulls from other nodes that failed.
    pub pull_failures: u64,
    /// Failed directory operations.
    pub directory_errors: u64,
}

/// Append cluster mode's families to a page from [`render`].
pub fn render_cluster(page: &mut String, c: &ClusterFigures) {
    let mut o = Out(std::mem::take(page));
    o.single(
        "wisp_cluster_nodes",
        "gauge",
        "Live nodes in the cluster directory, this one included.",
        c.nodes,
    );
    o.single(
        "wisp_relay_upstreams",
        "gauge",
        "Rooms this node pulls from another node.",
        c.upstreams,
    );
    o.single(
        "wisp_redirects_total",
        "counter",
        "WHIP/WHEP POSTs sent to another node with 307.",
        c.redirects,
    );
    o.single(
        "wisp_relay_pull_failures_total",
        "counter",
        "Pulls from another node that failed (refused, unreachable, certificate not trusted).",
        c.pull_failures,
    );
    o.single(
        "wisp_directory_errors_total",
        "counter",
        "Failed cluster directory (Redis) operations.",
        c.directory_errors,
    );
    *page = o.0;
}

/// The per-worker gauges, labelled `worker="i"`. A snapshot without
/// per-worker figures (straight from one core) is worker 0.
fn workers(o: &mut Out, s: &Stats) {
    let one = [stats::WorkerFigures {
        sessions: s.sessions_live.iter().sum(),
        forwarded: s.rtp_forwarded,
        busy_ratio: s.loop_busy_ratio,
    }];
    let list: &[stats::WorkerFigures] = if s.workers.is_empty() {
        &one
    } else {
        &s.workers
    };
    o.family(
        "wisp_worker_sessions",
        "gauge",
        "Live sessions on each worker (event loop).",
    );
    for (i, w) in list.iter().enumerate() {
        o.sample(
            "wisp_worker_sessions",
            &[("worker", &i.to_string())],
            w.sessions,
        );
    }
    o.family(
        "wisp_worker_forwarded_packets_total",
        "counter",
        "RTP packets each worker wrote to its viewers.",
    );
    for (i, w) in list.iter().enumerate() {
        o.sample(
            "wisp_worker_forwarded_packets_total",
            &[("worker", &i.to_string())],
            w.forwarded,
        );
    }
    o.family(
        "wisp_worker_busy_ratio",
        "gauge",
        "Share of the last load window each worker's loop spent working.",
    );
    for (i, w) in list.iter().enumerate() {
        let _ = writeln!(
            o.0,
            "wisp_worker_busy_ratio{{worker=\"{i}\"}} {}",
            w.busy_ratio
        );
    }
}

/// Render the metrics page.
pub fn render(
    s: &Stats,
    http: &HttpCounters,
    recorder: Option<&crate::record::RecorderStats>,
) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.single("wisp_rooms", "gauge", "Rooms that exist now.", s.rooms);
    o.single(
        "wisp_relay_downstreams",
        "gauge",
        "Viewers that are other nodes' upstreams (edges pulling rooms from this node).",
        s.relay_downstreams,
    );

    o.family("wisp_sessions", "gauge", "Live sessions by role and state.");
    for (i, role) in ROLES.iter().enumerate() {
        let connected = s.sessions_connected[i];
        let connecting = s.sessions_live[i].saturating_sub(connected);
        o.sample(
            "wisp_sessions",
            &[("role", role), ("state", "connected")],
            connected,
        );
        o.sample(
            "wisp_sessions",
            &[("role", role), ("state", "connecting")],
            connecting,
        );
    }

    o.family(
        "wisp_datagrams_total",
        "counter",
        "UDP datagrams received and sent.",
    );
    o.sample(
        "wisp_datagrams_total",
        &[("direction", "in")],
        s.datagrams_in,
    );
    o.sample(
        "wisp_datagrams_total",
        &[("direction", "out")],
        s.datagrams_out,
    );
    o.family(
        "wisp_bytes_total",
        "counter",
        "UDP payload bytes received and sent.",
    );
    o.sample("wisp_bytes_total", &[("direction", "in")], s.bytes_in);
    o.sample("wisp_bytes_total", &[("direction", "out")], s.bytes_out);

    o.single(
        "wisp_rtp_packets_received_total",
        "counter",
        "RTP packets received from publishers (after SRTP).",
        s.rtp_in,
    );
    o.single(
        "wisp_rtp_packets_forwarded_total",
        "counter",
        "RTP packets written to viewers (one per viewer).",
        s.rtp_forwarded,
    );
    o.single(
        "wisp_layer_switches_total",
        "counter",
        "Simulcast layer switches made for viewers.",
        s.layer_switches,
    );
    o.single(
        "wisp_rtp_fanout_total",
        "counter",
        "(packet, viewer) pairs considered; = forwarded + per-viewer drops.",
        s.fanout_attempts,
    );
    o.family(
        "wisp_packets_dropped_total",
        "counter",
        "Datagrams and per-viewer packets not forwarded, by reason.",
    );
    for r in DropReason::ALL {
        o.sample(
            "wisp_packets_dropped_total",
            &[("reason", r.label())],
            s.dropped(r),
        );
    }
    o.sample(
        "wisp_packets_dropped_total",
        &[("reason", "relay_queue_full")],
        s.relay_queue_full,
    );
    workers(&mut o, s);

    o.family(
        "wisp_keyframe_requests_total",
        "counter",
        "Keyframe requests sent to publishers and received from viewers.",
    );
    o.sample(
        "wisp_keyframe_requests_total",
        &[("direction", "sent")],
        s.keyframe_requests_sent,
    );
    o.sample(
        "wisp_keyframe_requests_total",
        &[("direction", "received")],
        s.keyframe_requests_received,
    );

    o.family(
        "wisp_sessions_created_total",
        "counter",
        "Sessions created, by role.",
    );
    for (i, role) in ROLES.iter().enumerate() {
        o.sample(
            "wisp_sessions_created_total",
            &[("role", role)],
            s.sessions_created[i],
        );
    }
    o.family(
        "wisp_sessions_closed_total",
        "counter",
        "Sessions ended, by role.",
    );
    for (i, role) in ROLES.iter().enumerate() {
        o.sample(
            "wisp_sessions_closed_total",
            &[("role", role)],
            s.sessions_closed[i],
        );
    }
    o.single(
        "wisp_connect_timeouts_total",
        "counter",
        "Sessions ended because ICE+DTLS did not complete in time.",
        s.connect_timeouts,
    );
    o.single(
        "wisp_caught_panics_total",
        "counter",
        "Panics caught in one session's work (each ended that session).",
        s.caught_panics,
    );
    o.family(
        "wisp_handshake_failures_total",
        "counter",
        "Sessions that ended before ICE and DTLS were up, by the stage that failed.",
    );
    for st in crate::sfu::handshake::Stage::ALL {
        o.sample(
            "wisp_handshake_failures_total",
            &[("stage", st.label())],
            s.handshake_failures[st as usize],
        );
    }
    o.gauge_f64(
        "wisp_loop_busy_ratio",
        "Share of the last load window the event loop spent working (not waiting in poll).",
        s.loop_busy_ratio,
    );
    o.gauge_f64(
        "wisp_loop_load_ratio",
        "The busy ratio less the share of send calls (which batching amortizes): what WISP_MAX_LOAD bounds.",
        s.loop_load_ratio,
    );
    o.gauge_f64(
        "wisp_load_headroom_pps",
        "wisp_load_headroom in forwarded packets/s at the measured cost per packet (0 when over).",
        s.load_headroom_pps,
    );
    o.gauge_f64(
        "wisp_send_batch",
        "Datagrams per send message (a GSO run to one destination) in the last load window.",
        s.send_batch,
    );
    o.gauge_f64(
        "wisp_cost_per_send_message_seconds",
        "Loop time per send message (a datagram or a GSO run), measured.",
        s.cost_per_message_s,
    );
    o.gauge_f64(
        "wisp_load_headroom",
        "WISP_MAX_LOAD minus the predicted load (admitted sessions included); negative when over.",
        s.load_headroom,
    );
    o.gauge_f64(
        "wisp_cost_per_packet_seconds",
        "Loop time per forwarded packet, send calls excluded, measured (the admission cost model).",
        s.cost_per_packet_s,
    );
    o.family(
        "wisp_admission_refusals_total",
        "counter",
        "WHIP/WHEP POSTs refused with 503 because the predicted load was over WISP_MAX_LOAD.",
    );
    for r in crate::sfu::overload::Refusal::ALL {
        o.sample(
            "wisp_admission_refusals_total",
            &[("reason", r.label())],
            s.admission_refusals[r as usize],
        );
    }
    o.family(
        "wisp_shed_actions_total",
        "counter",
        "Overload control's actions on viewers, in shedding order, then the way back.",
    );
    for (i, a) in ["down", "pause", "close", "resume", "lift"]
        .iter()
        .enumerate()
    {
        o.sample("wisp_shed_actions_total", &[("action", a)], s.shed[i]);
    }
    o.single(
        "wisp_viewers_paused",
        "gauge",
        "Viewers paused by overload control now (session kept, no media).",
        s.viewers_paused,
    );
    o.gauge_f64(
        "wisp_ingress_delay_seconds",
        "Age of the oldest datagram a read found in wisp's UDP socket, the largest in the last load window: how far the loop was behind its ingress.",
        s.ingress_delay_s,
    );
    o.gauge_f64(
        "wisp_fanout_skip_ratio",
        "Share of each room's newest viewers the fan-out skips now so that the loop catches up with its ingress (0: none; the copies count as dropped, reason overload).",
        s.fanout_skip_ratio,
    );
    o.family(
        "wisp_udp_errors_total",
        "counter",
        "UDP socket errors (send: datagram dropped).",
    );
    o.sample("wisp_udp_errors_total", &[("op", "send")], s.io_send_errors);
    o.sample("wisp_udp_errors_total", &[("op", "recv")], s.io_recv_errors);
    o.single(
        "wisp_udp_receive_drops_total",
        "counter",
        "Datagrams the kernel dropped at wisp's UDP socket, its receive buffer full (ingress lost).",
        s.io_recv_drops,
    );
    o.single(
        "wisp_udp_receive_buffer_bytes",
        "gauge",
        "Receive buffer of wisp's UDP socket (SO_RCVBUF as the kernel reports it).",
        s.io_recv_buffer_bytes,
    );

    o.family(
        "wisp_nacks_total",
        "counter",
        "NACKs: sent to publishers (repair of inbound loss), received from viewers.",
    );
    o.sample("wisp_nacks_total", &[("direction", "sent")], s.nacks_sent);
    o.sample(
        "wisp_nacks_total",
        &[("direction", "received")],
        s.nacks_received,
    );
    o.histogram(
        "wisp_rtt_seconds",
        "Round-trip time per session, sampled once a second.",
        &s.rtt,
        &stats::RTT_BUCKETS_S,
    );
    o.histogram(
        "wisp_packet_loss_ratio",
        "Loss per session once a second: from a publisher, toward a viewer.",
        &s.loss,
        &stats::LOSS_BUCKETS,
    );

    if let Some(r) = recorder {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, v) in [
            (
                "wisp_recordings_started_total",
                "Recording files opened.",
                &r.recordings_started,
            ),
            (
                "wisp_recordings_failed_total",
                "Recordings stopped by an I/O error.",
                &r.recordings_failed,
            ),
            (
                "wisp_recording_frames_written_total",
                "Frames (audio packets) written to files.",
                &r.frames_written,
            ),
            (
                "wisp_recording_frames_dropped_total",
                "Frames not recorded (loss until a keyframe, malformed).",
                &r.frames_dropped,
            ),
            (
                "wisp_recording_bytes_written_total",
                "Bytes written to recording files.",
                &r.bytes_written,
            ),
            (
                "wisp_recording_events_dropped_total",
                "Packets not handed to the recorder (its queue was full).",
                &r.events_dropped,
            ),
        ] {
            o.single(name, "counter", help, v.load(Relaxed));
        }
    }

    o.family(
        "wisp_http_requests_total",
        "counter",
        "HTTP responses by status code.",
    );
    for (code, n) in http.snapshot() {
        o.sample(
            "wisp_http_requests_total",
            &[("code", &code.to_string())],
            n,
        );
    }
    o.single(
        "wisp_http_requests_abandoned_total",
        "counter",
        "HTTP requests dropped without a response (undrainable body).",
        http.abandoned(),
    );
    let conns = &http.connections;
    o.family(
        "wisp_http_connections",
        "gauge",
        "TCP connections of the HTTP listener by state.",
    );
    o.sample("wisp_http_connections", &[("state", "open")], conns.open());
    o.single(
        "wisp_http_connections_accepted_total",
        "counter",
        "TCP connections admitted by the HTTP listener.",
        conns.accepted(),
    );
    o.family(
        "wisp_http_connections_closed_total",
        "counter",
        "TCP connections closed (or refused, over_cap) by the HTTP listener, by reason.",
    );
    for r in CloseReason::ALL {
        o.sample(
            "wisp_http_connections_closed_total",
            &[("reason", r.label())],
            conns.closed(r),
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        let c = HttpCounters::new();
        c.record(201);
        c.record(201);
        c.record(503);
        c.record(42);
        c.record(600);
        assert_eq!(c.snapshot(), vec![(201, 2), (503, 1)]);
        assert_eq!(c.record_abandoned(), 1);
    }

    #[test]
    fn render_format() {
        let mut s = Stats {
            rooms: 3,
            sessions_live: [2, 5],
            sessions_connected: [1, 4],
            rtp_in: 100,
            io_send_errors: 7,
            ..Stats::default()
        };
        s.drop(DropReason::WaitingForKeyframe);
        let c = HttpCounters::new();
        c.record(404);
        c.connections.record_accept();
        c.connections.record_accept();
        c.connections.record_close(CloseReason::RequestTimeout);
        c.connections.record_rejected();
        assert_eq!(c.connections.closed_by_timeout(), 1);
        assert_eq!(c.connections.rejected_over_cap(), 1);
        let text = render(&s, &c, None);
        for line in [
            "wisp_rooms 3",
            "wisp_sessions{role=\"publisher\",state=\"connected\"} 1",
            "wisp_sessions{role=\"publisher\",state=\"connecting\"} 1",
            "wisp_sessions{role=\"viewer\",state=\"connecting\"} 1",
            "wisp_rtp_packets_received_total 100",
            "wisp_packets_dropped_total{reason=\"waiting_for_keyframe\"} 1",
            "wisp_packets_dropped_total{reason=\"unknown_source\"} 0",
            "wisp_udp_errors_total{op=\"send\"} 7",
            "wisp_http_requests_total{code=\"404\"} 1",
            "# TYPE wisp_bytes_total counter",
            "# TYPE wisp_sessions gauge",
            "# TYPE wisp_rtt_seconds histogram",
            "wisp_rtt_seconds_bucket{role=\"viewer\",le=\"+Inf\"} 0",
            "wisp_nacks_total{direction=\"sent\"} 0",
            "wisp_http_connections{state=\"open\"} 1",
            "wisp_http_connections_closed_total{reason=\"request_timeout\"} 1",
            "wisp_http_connections_closed_total{reason=\"over_cap\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample belongs to a family declared just before it.
        let mut declared = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| declared.last().is_some_and(|d| d == f))
                    .unwrap_or(name);
                assert_eq!(declared.last().map(String::as_str), Some(family), "{l}");
            }
        }
        assert!(text.ends_with('\n'));
    }
}
