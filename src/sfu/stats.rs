//! Counters kept by the core. Plain integers, bumped on the packet path, read by `/metrics`.

/// Why an inbound datagram or an RTP packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Datagram from an address no session has validated, and not routable STUN.
    UnknownSource,
    /// STUN whose USERNAME names no session, or that failed the integrity check.
    StunRejected,
    /// The session's `Rtc` rejected the datagram (bad SRTP, DTLS error, ...).
    RtcError,
    /// A publisher track of a kind the room already has (one track per kind).
    ExtraTrack,
    /// The viewer did not negotiate the codec of the packet.
    CodecNotNegotiated,
    /// Video before the first keyframe for this viewer.
    WaitingForKeyframe,
    /// The viewer has no m-line of this kind.
    NoViewerTrack,
    /// The viewer has not finished ICE + DTLS yet.
    ViewerNotConnected,
    /// A publisher packet with a payload type its offer did not negotiate.
    UnknownPayloadType,
    /// The viewer is paused by overload control.
    ViewerPaused,
    /// The loop fell behind its ingress: the fan-out skipped this copy, one
    /// of the newest viewers' of its room, to catch up (see
    /// [`super::overload::Catchup`]).
    Overload,
}

impl DropReason {
    /// All reasons, for metrics output.
    pub const ALL: [DropReason; 11] = [
        DropReason::UnknownSource,
        DropReason::StunRejected,
        DropReason::RtcError,
        DropReason::ExtraTrack,
        DropReason::CodecNotNegotiated,
        DropReason::WaitingForKeyframe,
        DropReason::NoViewerTrack,
        DropReason::ViewerNotConnected,
        DropReason::UnknownPayloadType,
        DropReason::ViewerPaused,
        DropReason::Overload,
    ];

    /// Drops counted once per (packet, viewer) rather than once per datagram.
    pub fn is_per_viewer(self) -> bool {
        matches!(
            self,
            DropReason::CodecNotNegotiated
                | DropReason::WaitingForKeyframe
                | DropReason::NoViewerTrack
                | DropReason::ViewerNotConnected
                | DropReason::ViewerPaused
                | DropReason::Overload
        )
    }

    /// Stable snake_case label, used as a Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::StunRejected => "stun_rejected",
            DropReason::RtcError => "rtc_error",
            DropReason::ExtraTrack => "extra_track",
            DropReason::CodecNotNegotiated => "codec_not_negotiated",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::NoViewerTrack => "no_viewer_track",
            DropReason::ViewerNotConnected => "viewer_not_connected",
            DropReason::UnknownPayloadType => "unknown_payload_type",
            DropReason::ViewerPaused => "viewer_paused",
            DropReason::Overload => "overload",
        }
    }
}

/// Upper bounds (seconds) of the RTT histogram buckets; a last bucket is +Inf.
pub const RTT_BUCKETS_S: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Upper bounds of the loss-ratio histogram buckets; a last bucket is +Inf.
pub const LOSS_BUCKETS: [f64; 6] = [0.0, 0.001, 0.01, 0.02, 0.05, 0.1];

/// A Prometheus-style histogram: cumulative buckets are computed when exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); one more than the bounds (+Inf).
    pub buckets: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Add `o`'s observations (same bounds) to these.
    pub fn merge(&mut self, o: &Histogram) {
        if self.buckets.len() < o.buckets.len() {
            self.buckets.resize(o.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    /// Record `v` against `bounds`.
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() + 1 {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Counters since start. `Clone` so a snapshot can cross the channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Datagrams handed to `handle_receive`.
    pub datagrams_in: u64,
    /// Bytes handed to `handle_receive`.
    pub bytes_in: u64,
    /// Datagrams returned by `poll_output`.
    pub datagrams_out: u64,
    /// Bytes returned by `poll_output`.
    pub bytes_out: u64,
    /// RTP packets received from publishers (after SRTP).
    pub rtp_in: u64,
    /// RTP packets written to viewers (one per viewer).
    pub rtp_forwarded: u64,
    /// (packet, viewer) pairs the fan-out considered. Exact accounting:
    /// `fanout_attempts == rtp_forwarded + ` the per-viewer drops
    /// ([`DropReason::is_per_viewer`]).
    pub fanout_attempts: u64,
    /// Dropped datagrams and per-viewer packet drops, indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests (PLI/FIR) received from viewers.
    pub keyframe_requests_received: u64,
    /// Sessions created, by role: publishers, viewers.
    pub sessions_created: [u64; 2],
    /// Sessions ended, by role: publishers, viewers.
    pub sessions_closed: [u64; 2],
    /// Sessions ended because they never connected in time.
    pub connect_timeouts: u64,
    /// Panics caught in one session's work (each ended that session).
    pub caught_panics: u64,
    /// Live sessions now, by role: publishers, viewers (upstreams are
    /// counted in `relay_upstreams` only).
    pub sessions_live: [u64; 2],
    /// Live sessions that completed ICE+DTLS, by role.
    pub sessions_connected: [u64; 2],
    /// Rooms now.
    pub rooms: u64,
    /// Upstreams now (this node's pulls of rooms from their origins;
    /// `wisp_relay_upstreams`).
    pub relay_upstreams: u64,
    /// Upstreams connected now (ICE and DTLS up).
    pub relay_upstreams_connected: u64,
    /// Upstreams ended so far (each one `Output::Upstream` event).
    pub relay_upstreams_ended: u64,
    /// Viewers now that are other nodes' upstreams (their offer asked for
    /// every simulcast layer, as an upstream's does); counted in
    /// `sessions_live` too. The origin's cost per edge shows against it.
    pub relay_downstreams: u64,
    /// Round-trip times reported once a second per session, by role (publishers, viewers).
    pub rtt: [Histogram; 2],
    /// Loss ratio once a second per session, by role: from a publisher
    /// (what reaches wisp) and toward a viewer (what its receiver reports).
    pub loss: [Histogram; 2],
    /// Simulcast layer switches done for viewers (each on a keyframe of the new layer).
    pub layer_switches: u64,
    /// VP9 payloads copied to rewrite picture id / TL0PICIDX (one per packet
    /// and distinct rewrite, shared by the viewers that need it).
    pub vp9_payload_copies: u64,
    /// NACKs wisp sent to publishers (repair requests for packets lost on the way in).
    pub nacks_sent: u64,
    /// NACKs viewers sent to wisp (answered from the send history).
    pub nacks_received: u64,
    /// Sessions whose ICE/DTLS handshake failed, by
    /// [`super::handshake::Stage::ALL`] (ice, dtls).
    pub handshake_failures: [u64; 2],
    /// Overload control's actions on viewers: down a layer, paused, closed,
    /// resumed, layer cap lifted.
    pub shed: [u64; 5],
    /// Admissions refused by predicted load, by [`super::overload::Refusal::ALL`].
    pub admission_refusals: [u64; 2],
    /// The event loop's busy ratio in the last load sample.
    pub loop_busy_ratio: f64,
    /// The load of the last sample: the busy ratio less its send calls'
    /// share, which batching amortizes (what admission and shedding compare
    /// with `max_load`; see [`super::overload::Load`]).
    pub loop_load_ratio: f64,
    /// `max_load` minus the predicted load (negative when over).
    pub load_headroom: f64,
    /// [`Stats::load_headroom`] in forwarded packets/s at the measured cost:
    /// how much more fan-out this node admits (a 550 packets/s viewer needs
    /// 550). Zero when over; summed over the workers (each has its core).
    pub load_headroom_pps: f64,
    /// Seconds per send message (a datagram or a GSO run), measured.
    pub cost_per_message_s: f64,
    /// Datagrams per send message in the last sample (1: no batching).
    pub send_batch: f64,
    /// Seconds of loop time per forwarded packet (the cost model).
    pub cost_per_packet_s: f64,
    /// Viewers paused by overload control now.
    pub viewers_paused: u64,
    /// Age of the oldest datagram a read found in the socket, the largest in
    /// the last load window, seconds: how far the loop was behind its ingress.
    pub ingress_delay_s: f64,
    /// Share of each room's newest viewers the fan-out skips now to catch
    /// up with its ingress (0: it serves everyone).
    pub fanout_skip_ratio: f64,
    /// Filled in by the event loop: `send_to` failures (datagram dropped).
    pub io_send_errors: u64,
    /// Filled in by the event loop: `recv_from` errors other than WouldBlock.
    pub io_recv_errors: u64,
    /// Filled in by the event loop: datagrams the kernel dropped at the UDP
    /// socket because its receive buffer was full (ingress lost before wisp saw it).
    pub io_recv_drops: u64,
    /// Filled in by the event loop: the UDP socket's receive buffer, bytes
    /// (`SO_RCVBUF` as the kernel reports it).
    pub io_recv_buffer_bytes: u64,
    /// Filled in by the workers' driver: each worker's own figures, in
    /// worker order (empty from a core).
    pub workers: Vec<WorkerFigures>,
    /// Filled in by the workers' driver: packets the relay between workers
    /// dropped because a worker's queue was full.
    pub relay_queue_full: u64,
}

/// One worker's figures (the per-worker gauges of `/metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerFigures {
    /// Live sessions on the worker.
    pub sessions: u64,
    /// RTP packets it wrote to its viewers.
    pub forwarded: u64,
    /// Its loop's busy ratio in the last load window.
    pub busy_ratio: f64,
}

impl Stats {
    /// Count one drop.
    pub fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }

    /// Add another worker's snapshot to this one: counters and gauges of
    /// counts add up, histograms merge bucket by bucket; of the load
    /// figures the busiest worker's are kept (busy ratio and cost: the
    /// highest; headroom: the lowest).
    pub fn absorb(&mut self, o: &Stats) {
        // Every field named (no `..`): a new counter cannot be forgotten here.
        let Stats {
            datagrams_in,
            bytes_in,
            datagrams_out,
            bytes_out,
            rtp_in,
            rtp_forwarded,
            fanout_attempts,
            dropped,
            keyframe_requests_sent,
            keyframe_requests_received,
            sessions_created,
            sessions_closed,
            connect_timeouts,
            caught_panics,
            sessions_live,
            sessions_connected,
            rooms,
            relay_upstreams,
            relay_upstreams_connected,
            relay_upstreams_ended,
            relay_downstreams,
            rtt,
            loss,
            layer_switches,
            vp9_payload_copies,
            nacks_sent,
            nacks_received,
            handshake_failures,
            shed,
            admission_refusals,
            loop_busy_ratio,
            loop_load_ratio,
            load_headroom,
            load_headroom_pps,
            cost_per_packet_s,
            cost_per_message_s,
            send_batch,
            viewers_paused,
            ingress_delay_s,
            fanout_skip_ratio,
            io_send_errors,
            io_recv_errors,
            io_recv_drops,
            io_recv_buffer_bytes,
            workers: _,
            relay_queue_full,
        } = o;
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (a, b) in a.iter_mut().zip(b) {
                *a += b;
            }
        }
        for (a, b) in [
            (&mut self.datagrams_in, datagrams_in),
            (&mut self.bytes_in, bytes_in),
            (&mut self.datagrams_out, datagrams_out),
            (&mut self.bytes_out, bytes_out),
            (&mut self.rtp_in, rtp_in),
            (&mut self.rtp_forwarded, rtp_forwarded),
            (&mut self.fanout_attempts, fanout_attempts),
            (&mut self.keyframe_requests_sent, keyframe_requests_sent),
            (
                &mut self.keyframe_requests_received,
                keyframe_requests_received,
            ),
            (&mut self.connect_timeouts, connect_timeouts),
            (&mut self.caught_panics, caught_panics),
            (&mut self.rooms, rooms),
            (&mut self.relay_upstreams, relay_upstreams),
            (
                &mut self.relay_upstreams_connected,
                relay_upstreams_connected,
            ),
            (&mut self.relay_upstreams_ended, relay_upstreams_ended),
            (&mut self.relay_downstreams, relay_downstreams),
            (&mut self.layer_switches, layer_switches),
            (&mut self.vp9_payload_copies, vp9_payload_copies),
            (&mut self.nacks_sent, nacks_sent),
            (&mut self.nacks_received, nacks_received),
            (&mut self.viewers_paused, viewers_paused),
            (&mut self.io_send_errors, io_send_errors),
            (&mut self.io_recv_errors, io_recv_errors),
            (&mut self.io_recv_drops, io_recv_drops),
            (&mut self.relay_queue_full, relay_queue_full),
        ] {
            *a += b;
        }
        add(&mut self.dropped, dropped);
        add(&mut self.sessions_created, sessions_created);
        add(&mut self.sessions_closed, sessions_closed);
        add(&mut self.sessions_live, sessions_live);
        add(&mut self.sessions_connected, sessions_connected);
        add(&mut self.handshake_failures, handshake_failures);
        add(&mut self.shed, shed);
        add(&mut self.admission_refusals, admission_refusals);
        for i in 0..2 {
            self.rtt[i].merge(&rtt[i]);
            self.loss[i].merge(&loss[i]);
        }
        self.loop_busy_ratio = self.loop_busy_ratio.max(*loop_busy_ratio);
        self.loop_load_ratio = self.loop_load_ratio.max(*loop_load_ratio);
        self.load_headroom = self.load_headroom.min(*load_headroom);
        // Each worker has a core of its own: the node takes their sum.
        self.load_headroom_pps += load_headroom_pps;
        self.cost_per_packet_s = self.cost_per_packet_s.max(*cost_per_packet_s);
        self.cost_per_message_s = self.cost_per_message_s.max(*cost_per_message_s);
        self.send_batch = self.send_batch.max(*send_batch);
        self.ingress_delay_s = self.ingress_delay_s.max(*ingress_delay_s);
        self.fanout_skip_ratio = self.fanout_skip_ratio.max(*fanout_skip_ratio);
        // Every worker's socket asks for the same buffer.
        self.io_recv_buffer_bytes = self.io_recv_buffer_bytes.max(*io_recv_buffer_bytes);
    }

    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
}

#[cfg(test)]
mod absorb_tests {
    use super::*;

    #[test]
    fn workers_snapshots_add_up() {
        let mut a = Stats {
            rtp_forwarded: 10,
            sessions_live: [1, 2],
            relay_upstreams: 1,
            loop_busy_ratio: 0.2,
            load_headroom: 0.5,
            ..Stats::default()
        };
        a.rtt[1].observe(&RTT_BUCKETS_S, 0.02);
        a.drop(DropReason::ViewerPaused);
        let mut b = a.clone();
        b.loop_busy_ratio = 0.7;
        b.load_headroom = 0.1;
        b.relay_queue_full = 3;
        b.load_headroom_pps = 1000.0;
        b.io_recv_drops = 4;
        a.absorb(&b);
        assert_eq!((a.load_headroom_pps, a.io_recv_drops), (1000.0, 4));
        assert_eq!(a.rtp_forwarded, 20);
        assert_eq!(a.sessions_live, [2, 4]);
        assert_eq!(a.relay_upstreams, 2);
        assert_eq!(a.relay_queue_full, 3);
        assert_eq!(a.dropped(DropReason::ViewerPaused), 2);
        assert_eq!(a.rtt[1].count, 2);
        assert_eq!((a.loop_busy_ratio, a.load_headroom), (0.7, 0.1));
    }
}
