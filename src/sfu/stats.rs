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
}

impl DropReason {
    /// All reasons, for metrics output.
    pub const ALL: [DropReason; 8] = [
        DropReason::UnknownSource,
        DropReason::StunRejected,
        DropReason::RtcError,
        DropReason::ExtraTrack,
        DropReason::CodecNotNegotiated,
        DropReason::WaitingForKeyframe,
        DropReason::NoViewerTrack,
        DropReason::ViewerNotConnected,
    ];

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
        }
    }
}

/// Counters since start. `Clone` so a snapshot can cross the channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Dropped datagrams and per-viewer packet drops, indexed like [`DropReason::ALL`].
    pub dropped: [u64; 8],
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
    /// Live sessions now, by role: publishers, viewers.
    pub sessions_live: [u64; 2],
    /// Live sessions that completed ICE+DTLS, by role.
    pub sessions_connected: [u64; 2],
    /// Rooms now.
    pub rooms: u64,
    /// Filled in by the event loop: `send_to` failures (datagram dropped).
    pub io_send_errors: u64,
    /// Filled in by the event loop: `recv_from` errors other than WouldBlock.
    pub io_recv_errors: u64,
}

impl Stats {
    /// Count one drop.
    pub fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }

    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
}
