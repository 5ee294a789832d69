//! The vocabulary between the drivers and the core: commands in, replies out.
//!
//! Parsing of HTTP happens at the edge (`crate::http::routes`); the core only sees
//! validated room names and raw SDP text, and answers with a [`Reply`] or an
//! [`ApiError`] that the HTTP layer maps to a status code.

use std::fmt;

use super::id::{RoomName, SessionToken};

/// Which side of a room a session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A WHIP publisher: sends media into the room.
    Publisher,
    /// A WHEP viewer: receives the room's media.
    Subscriber,
}

impl Role {
    /// `"whip"` or `"whep"`: the first path segment of the session URL.
    pub fn path_prefix(self) -> &'static str {
        match self {
            Role::Publisher => "whip",
            Role::Subscriber => "whep",
        }
    }
}

/// A request to the core, sent by the HTTP thread through the channel.
#[derive(Debug)]
pub enum Command {
    /// WHIP POST: publish into `room` with the client's SDP offer.
    Publish {
        /// The room to publish into.
        room: RoomName,
        /// The SDP offer text.
        offer: String,
        /// Per-publish recording override (`?record=0|1`, tokens file);
        /// `None`: the server default.
        record: Option<bool>,
    },
    /// WHEP POST: watch `room` with the client's SDP offer.
    Subscribe {
        /// The room to watch.
        room: RoomName,
        /// The SDP offer text.
        offer: String,
        /// The POST authenticated with the cluster token: another node
        /// pulling the room for its viewers (a downstream edge, shed last).
        edge: bool,
    },
    /// WHEP POST placed on a worker other than the room's home (several
    /// workers): like [`Command::Subscribe`], but the room's packets come
    /// from worker `home` through the relay (`src/sfu/relay.rs`) unless
    /// this worker has the room's publisher.
    SubscribeRelayed {
        /// The room to watch.
        room: RoomName,
        /// The SDP offer text.
        offer: String,
        /// The room's home worker.
        home: usize,
        /// As in [`Command::Subscribe`].
        edge: bool,
        /// Whether the room's publisher offered simulcast video, as the
        /// dispatcher saw its WHIP offer (`None`: not known, e.g. no
        /// publisher yet, or an edge's pull). A viewer that joins before
        /// this worker's copy of the room has video gets a bandwidth
        /// estimator (and its pacer) only if the room may be simulcast.
        simulcast: Option<bool>,
    },
    /// DELETE on a session URL.
    DeleteSession {
        /// Role from the URL; a token of the other role is "not found".
        role: Role,
        /// Room from the URL; a token of another room is "not found".
        room: RoomName,
        /// The session token from the URL.
        token: SessionToken,
    },
    /// PATCH on a session URL with an `application/trickle-ice-sdpfrag` body:
    /// trickled candidates (same ufrag) or an ICE restart (new ufrag/pwd).
    Patch {
        /// Role from the URL.
        role: Role,
        /// Room from the URL.
        room: RoomName,
        /// The session token from the URL.
        token: SessionToken,
        /// The `If-Match` request header (or, leniently, an `ETag` request
        /// header), verbatim; `None` when absent. `*` and `"*"` match any tag.
        if_match: Option<String>,
        /// The sdpfrag body.
        fragment: String,
    },
    /// Close a room: disconnect its publisher and every viewer.
    CloseRoom {
        /// The room to close.
        room: RoomName,
    },
    /// List all rooms (the room API and `/metrics` read this).
    ListRooms,
    /// Ask the room's publisher for a video keyframe (throttled); sent by the
    /// recorder after a gap.
    RequestKeyframe {
        /// The room.
        room: RoomName,
    },
    /// Read the counters for `/metrics`.
    Stats,
    /// Relay driver (cluster edge): pull `room` from its origin. Creates the
    /// room's upstream as its source and replies [`Reply::PullOffer`], whose
    /// offer the driver POSTs to the origin's WHEP endpoint. A room with a
    /// live source is refused with [`ApiError::AlreadyPublished`], and the
    /// session limits apply as to any session.
    Pull {
        /// The room to pull.
        room: RoomName,
    },
    /// Relay driver: the origin's answer to the upstream's offer; the
    /// upstream then connects. A refused answer ends the upstream and is a
    /// [`ApiError::BadOffer`] with the reason.
    PullAnswer {
        /// The room pulled.
        room: RoomName,
        /// The token of [`Reply::PullOffer`].
        token: SessionToken,
        /// The origin's SDP answer.
        answer: String,
    },
    /// Relay driver: the HTTP exchange with the origin failed, or (at any
    /// time) the driver knows the origin is gone or the room moved (its
    /// claim expired): the upstream ends at once, viewers keep waiting, and
    /// the room is free for the next `Pull`.
    PullFailed {
        /// The room pulled.
        room: RoomName,
        /// The token of [`Reply::PullOffer`].
        token: SessionToken,
    },
    /// Layer extension: pin a viewer's video to the simulcast layer `rid`, or
    /// (`None`) return it to automatic selection.
    PinLayer {
        /// Role from the URL; only viewers have layers.
        role: Role,
        /// Room from the URL.
        room: RoomName,
        /// The session token from the URL.
        token: SessionToken,
        /// The layer's rid; `None`: automatic.
        rid: Option<String>,
        /// The m-line index the client named (`mediaId`); `None`: the video m-line.
        media: Option<usize>,
    },
    /// Server-sent events extension: what a viewer's event stream reports
    /// (publisher active, viewer count, layers). Read once a second per stream.
    ViewerState {
        /// Role from the URL.
        role: Role,
        /// Room from the URL.
        room: RoomName,
        /// The session token from the URL.
        token: SessionToken,
    },
}

/// A successful answer to a [`Command`].
#[derive(Debug)]
pub enum Reply {
    /// A session was created.
    Created {
        /// The unguessable token in the session URL.
        token: SessionToken,
        /// The SDP answer with every server candidate.
        answer: String,
        /// Strong entity tag of the ICE session, quoted (`"…"`), for the `ETag` header.
        etag: String,
    },
    /// A PATCH was applied.
    Patched {
        /// Trickle: `None` (204, no body, no ETag). ICE restart: the server's
        /// new sdpfrag (200, `application/trickle-ice-sdpfrag`).
        fragment: Option<String>,
        /// ICE restart: the new ETag (quoted). Trickle: `None`.
        etag: Option<String>,
    },
    /// A session was ended.
    Deleted,
    /// Done; nothing to report.
    Done,
    /// A room was closed; how many sessions were ended.
    RoomClosed {
        /// Number of sessions disconnected.
        sessions: usize,
    },
    /// The rooms, sorted by name.
    Rooms(Vec<RoomInfo>),
    /// A snapshot of the counters.
    Stats(Box<super::stats::Stats>),
    /// A viewer's state for its event streams.
    ViewerState(Box<ViewerState>),
    /// An upstream was created ([`Command::Pull`]).
    PullOffer {
        /// Names the upstream in `PullAnswer`, `PullFailed` and its
        /// `Output::Upstream` event. Not a WHIP or WHEP session token.
        token: SessionToken,
        /// The SDP offer to POST to the origin's WHEP endpoint.
        offer: String,
    },
}

/// What a viewer's server-sent event stream reports (see [`Command::ViewerState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerState {
    /// The room's publisher is connected.
    pub publisher_active: bool,
    /// Viewer sessions in the room.
    pub viewers: usize,
    /// Index of the viewer's video m-line in its SDP, if it receives video.
    pub video_mline: Option<usize>,
    /// The publisher's simulcast layers in publication order; empty when the
    /// video is not simulcast (or there is no publisher).
    pub layers: Vec<LayerState>,
    /// The layer forwarded to this viewer.
    pub current: Option<String>,
    /// The layer this viewer is switching to (waits for its keyframe).
    pub target: Option<String>,
    /// The layer the viewer pinned; `None`: automatic.
    pub pinned: Option<String>,
    /// The viewer's bandwidth estimate, bit/s.
    pub estimate: Option<u64>,
}

/// One simulcast layer in [`ViewerState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerState {
    /// Its rid.
    pub rid: String,
    /// Measured bit/s (0 while paused).
    pub bitrate: u64,
    /// Sending (not paused).
    pub active: bool,
    /// Picture width and height of its latest keyframe; `None` until one
    /// declared them (or for codecs wisp cannot read it from).
    pub width: Option<u16>,
    /// See `width`.
    pub height: Option<u16>,
}

/// What the room API shows about one room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInfo {
    /// Room name.
    pub name: String,
    /// Whether a publisher session exists and is connected.
    pub publisher_live: bool,
    /// The publisher's tracks.
    pub tracks: Vec<TrackInfo>,
    /// Number of viewer sessions.
    pub viewers: usize,
    /// Seconds since the room was created.
    pub uptime_s: f64,
    /// Whether the current publisher's tracks are being recorded.
    pub recording: bool,
    /// Whether the room's source is an upstream: this node relays the room
    /// from its origin (`publisher_live` then says the upstream is connected).
    pub relayed: bool,
}

/// One publisher track in [`RoomInfo`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    /// `"audio"` or `"video"`.
    pub kind: &'static str,
    /// Codec name of the last packet received, e.g. `"vp8"`, or empty before media.
    pub codec: String,
    /// Packets received on this track.
    pub packets: u64,
    /// Payload bytes received on this track.
    pub bytes: u64,
}

/// Why a command failed. Each variant maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The offer could not be parsed or accepted (400).
    BadOffer(String),
    /// The offer is valid SDP but asks for something wisp does not do (422).
    Unsupported(String),
    /// The room already has a live publisher (409).
    AlreadyPublished,
    /// No such session or room (404).
    NotFound,
    /// A capacity limit was reached (503 with Retry-After).
    AtCapacity,
    /// The predicted load of one more session is over the ceiling (503 with Retry-After).
    Overloaded,
    /// A PATCH body that is not a usable sdpfrag (400). The session is kept.
    BadFragment(String),
    /// PATCH without `If-Match` (428).
    PreconditionRequired,
    /// PATCH whose `If-Match` is not the session's current ETag (412).
    PreconditionFailed,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadOffer(r) => write!(f, "bad offer: {r}"),
            ApiError::Unsupported(r) => write!(f, "unsupported offer: {r}"),
            ApiError::AlreadyPublished => write!(f, "room already has a live publisher"),
            ApiError::NotFound => write!(f, "not found"),
            ApiError::AtCapacity => write!(f, "server at capacity"),
            ApiError::Overloaded => write!(f, "server overloaded: predicted load over the ceiling"),
            ApiError::BadFragment(r) => write!(f, "bad sdpfrag: {r}"),
            ApiError::PreconditionRequired => write!(f, "If-Match is required"),
            ApiError::PreconditionFailed => write!(f, "If-Match does not match the current ETag"),
        }
    }
}

impl std::error::Error for ApiError {}
