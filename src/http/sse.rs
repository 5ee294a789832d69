//! The WHEP server-sent events extension: which event streams exist, the
//! events a viewer's state gives, and one stream written over any
//! [`Write`].
//!
//! Contracts:
//! - At most [`MAX_SSE_ENTRIES`] streams are remembered, at most
//!   [`MAX_SSE_PER_SESSION`] per session (the oldest is forgotten first), and
//!   at most `max_streaming` are sent at once.
//! - A stream being sent ends within one wait when it is deleted, taken over
//!   by a newer GET, or its session ends: the registry drops the sender its
//!   [`SseLease`] waits on, so no thread polls or sleeps to notice.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::json;

use crate::channel::CoreError;
use crate::sfu::command::{ApiError, Command, Reply, Role, ViewerState};
use crate::sfu::id::{RoomName, SessionToken};

use super::types::{CoreFn, HttpResponse};

/// The events wisp sends, as advertised in the SSE `Link` header.
pub const SSE_EVENTS: [&str; 4] = ["active", "inactive", "layers", "viewercount"];
/// Event streams (SSE) being sent at once, by default; more → 503.
pub const DEFAULT_MAX_SSE_STREAMS: usize = 64;
/// Event streams remembered (created by POST, streamed or not); the oldest
/// is forgotten first.
pub const MAX_SSE_ENTRIES: usize = 1024;
/// Event streams remembered per viewer session.
pub const MAX_SSE_PER_SESSION: usize = 4;

/// The start of a server-sent event stream, for the driver to keep going.
#[derive(Debug)]
pub struct SseStart {
    /// Status 200 and the headers (CORS, `Content-Type: text/event-stream`); no body.
    pub head: HttpResponse,
    /// The stream's place among the streams sent at once; ends it when dropped.
    pub lease: SseLease,
    /// The viewer's room.
    pub room: RoomName,
    /// The viewer's session token.
    pub token: SessionToken,
    /// The events the client asked for.
    pub events: EventSet,
    /// The viewer's state when the stream started (the first events).
    pub first: ViewerState,
}

/// A set of SSE event names (bit `i` = [`SSE_EVENTS`]`[i]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet(u8);

impl EventSet {
    /// Every event wisp sends.
    pub const ALL: EventSet = EventSet((1 << SSE_EVENTS.len()) - 1);

    /// Whether `name` is in the set.
    pub fn has(self, name: &str) -> bool {
        SSE_EVENTS
            .iter()
            .position(|e| *e == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The set of a POST body: empty → every event; else a JSON array of
    /// names, each one wisp sends. `Err` names the problem.
    pub fn parse(body: &[u8]) -> Result<EventSet, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(EventSet::ALL);
        }
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "body is not JSON".to_string())?;
        let arr = v
            .as_array()
            .ok_or_else(|| "body must be a JSON array of event names".to_string())?;
        let mut set = EventSet(0);
        for e in arr {
            let name = e
                .as_str()
                .ok_or_else(|| "event names are strings".to_string())?;
            match SSE_EVENTS.iter().position(|x| *x == name) {
                Some(i) => set.0 |= 1 << i,
                None => {
                    let shown: String = name
                        .chars()
                        .take(32)
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    return Err(format!(
                        "unsupported event {shown:?}: wisp sends {}",
                        SSE_EVENTS.join(", ")
                    ));
                }
            }
        }
        Ok(set)
    }
}

/// The WHEP event streams: which exist (created by POST, until DELETE or
/// their session ends), and how many are being sent. Shared by the handler
/// and the driver's stream threads.
#[derive(Debug)]
pub struct SseStreams {
    max_streaming: usize,
    inner: Mutex<SseInner>,
}

#[derive(Debug, Default)]
struct SseInner {
    next_id: u64,
    /// Oldest first.
    entries: Vec<SseEntry>,
    streaming: usize,
}

#[derive(Debug)]
struct SseEntry {
    id: u64,
    room: RoomName,
    token: SessionToken,
    events: EventSet,
    /// The sending end of the GET streaming it, if any; dropped (which ends
    /// that stream's wait) on DELETE, session end, or a newer GET.
    streaming: Option<Sender<()>>,
}

/// Why a stream could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// No such stream (never created, deleted, or its session ended).
    NotFound,
    /// As many streams as allowed are being sent.
    Full,
}

/// A stream's place among those being sent; given back on drop.
#[derive(Debug)]
pub struct SseLease {
    streams: Arc<SseStreams>,
    /// Disconnected when the stream is deleted or taken over (its entry
    /// dropped the sender); nothing is ever sent on it.
    ended: Receiver<()>,
}

impl SseLease {
    /// The registry the stream belongs to.
    pub fn registry(&self) -> &SseStreams {
        &self.streams
    }

    /// The stream still exists and no newer GET took it over.
    pub fn alive(&self) -> bool {
        matches!(self.ended.try_recv(), Err(TryRecvError::Empty))
    }

    /// Block for `d`, or less if the stream ends; returns [`alive`](Self::alive).
    pub fn wait(&self, d: Duration) -> bool {
        matches!(self.ended.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }
}

impl Drop for SseLease {
    fn drop(&mut self) {
        let mut g = self.streams.lock();
        g.streaming = g.streaming.saturating_sub(1);
    }
}

impl SseStreams {
    /// No streams; at most `max_streaming` sent at once.
    pub fn new(max_streaming: usize) -> SseStreams {
        SseStreams {
            max_streaming,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SseInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create a stream; returns its id. The oldest stream of the session
    /// (or of all) is forgotten when a bound is reached.
    pub fn create(&self, room: RoomName, token: SessionToken, events: EventSet) -> u64 {
        let mut g = self.lock();
        let mine = g.entries.iter().filter(|e| e.token == token).count();
        if mine >= MAX_SSE_PER_SESSION {
            if let Some(i) = g.entries.iter().position(|e| e.token == token) {
                g.entries.remove(i);
            }
        }
        if g.entries.len() >= MAX_SSE_ENTRIES {
            g.entries.remove(0);
        }
        g.next_id += 1;
        let id = g.next_id;
        g.entries.push(SseEntry {
            id,
            room,
            token,
            events,
            streaming: None,
        });
        id
    }

    /// The events of stream `id` of this session, if it exists.
    pub fn events(&self, room: &RoomName, token: SessionToken, id: u64) -> Option<EventSet> {
        self.lock()
            .entries
            .iter()
            .find(|e| e.id == id && e.token == token && e.room == *room)
            .map(|e| e.events)
    }

    /// Delete stream `id`; false if it did not exist. A GET streaming it ends.
    pub fn remove(&self, room: &RoomName, token: SessionToken, id: u64) -> bool {
        let mut g = self.lock();
        let before = g.entries.len();
        g.entries
            .retain(|e| !(e.id == id && e.token == token && e.room == *room));
        g.entries.len() != before
    }

    /// Delete every stream of a session (it ended).
    pub fn remove_session(&self, token: SessionToken) {
        self.lock().entries.retain(|e| e.token != token);
    }

    /// Start sending stream `id`: takes one of the places, and takes the
    /// stream over from an earlier GET.
    pub fn attach(
        self: &Arc<Self>,
        room: &RoomName,
        token: SessionToken,
        id: u64,
    ) -> Result<SseLease, AttachError> {
        let mut g = self.lock();
        if g.streaming >= self.max_streaming {
            return Err(AttachError::Full);
        }
        let e = g
            .entries
            .iter_mut()
            .find(|e| e.id == id && e.token == token && e.room == *room)
            .ok_or(AttachError::NotFound)?;
        // Replacing the sender ends an earlier GET's stream.
        let (tx, ended) = bounded(0);
        e.streaming = Some(tx);
        g.streaming += 1;
        Ok(SseLease {
            streams: self.clone(),
            ended,
        })
    }

    /// (streams remembered, streams being sent).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.streaming)
    }
}

/// What a stream has told its client so far.
#[derive(Debug, Clone, Default)]
pub struct SseState {
    started: bool,
    active: bool,
    viewers: Option<usize>,
    layers: Option<String>,
}

/// The events to send after `v` was read: on the first call the current
/// state (`active` only if the publisher is live: never an initial
/// `inactive`), then what changed. Each event is `event: <name>\ndata:
/// <one line of JSON>\n\n`; empty when nothing changed.
pub fn sse_events(state: &mut SseState, events: EventSet, v: &ViewerState) -> String {
    let mut out = String::new();
    let mut push = |name: &str, data: &str| {
        if events.has(name) {
            out.push_str("event: ");
            out.push_str(name);
            out.push_str("\ndata: ");
            out.push_str(data);
            out.push_str("\n\n");
        }
    };
    let first = !state.started;
    state.started = true;
    if (first && v.publisher_active) || (!first && v.publisher_active != state.active) {
        push(
            if v.publisher_active {
                "active"
            } else {
                "inactive"
            },
            "{}",
        );
    }
    state.active = v.publisher_active;
    if state.viewers != Some(v.viewers) {
        state.viewers = Some(v.viewers);
        push(
            "viewercount",
            &json!({ "viewercount": v.viewers }).to_string(),
        );
    }
    if let Some(data) = layers_json(v) {
        if state.layers.as_deref() != Some(data.as_str()) {
            push("layers", &data);
            state.layers = Some(data);
        }
    }
    out
}

/// The `layers` event data: the viewer's video m-line index → its layers,
/// `{rid, bitrate, active, width, height}` (bitrate 0 while a layer is
/// paused; width and height from its latest keyframe, `null` until known)
/// plus wisp's `current` / `target` / `pinned` flags for this viewer. `None`
/// without video.
pub fn layers_json(v: &ViewerState) -> Option<String> {
    let mline = v.video_mline?;
    let flag = |x: &Option<String>, rid: &str| x.as_deref() == Some(rid);
    let list: Vec<_> = v
        .layers
        .iter()
        .map(|l| {
            json!({
                "rid": l.rid,
                "bitrate": l.bitrate,
                "active": l.active,
                "width": l.width,
                "height": l.height,
                "current": flag(&v.current, &l.rid),
                "target": flag(&v.target, &l.rid),
                "pinned": flag(&v.pinned, &l.rid),
            })
        })
        .collect();
    let mut map = serde_json::Map::new();
    map.insert(mline.to_string(), serde_json::Value::Array(list));
    Some(serde_json::Value::Object(map).to_string())
}

/// How often an event stream reads the viewer's state.
pub const SSE_POLL: Duration = Duration::from_secs(1);
/// An event stream with nothing to say sends a comment this often (finds
/// clients that went away, keeps proxies from timing out).
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(5);

/// The timing of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// How often the viewer's state is read.
    pub poll: Duration,
    /// Quiet time after which a keep-alive comment is sent (counted in polls).
    pub keepalive: Duration,
}

impl Default for Pace {
    /// [`SSE_POLL`] and [`SSE_KEEPALIVE`].
    fn default() -> Self {
        Pace {
            poll: SSE_POLL,
            keepalive: SSE_KEEPALIVE,
        }
    }
}

/// Write one event stream to `w`: the response head, then events as the
/// viewer's state changes, until the stream is deleted or taken over, the
/// session ends, or a write fails (the client went away). Returns why it
/// ended.
///
/// The state is read with `core` every `pace.poll` (the wait in between
/// ends at once when the stream does); after `pace.keepalive` without an
/// event a comment is sent. `chunked` frames the body as HTTP/1.1 chunks (else it
/// ends with the connection); each batch of events is one flushed write, as
/// a browser's `EventSource` must see it at once.
pub fn write_stream(
    w: &mut impl Write,
    chunked: bool,
    sse: SseStart,
    pace: Pace,
    core: &mut CoreFn<'_>,
) -> String {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in &sse.head.headers {
        if !v.contains(['\r', '\n']) && !k.contains(['\r', '\n', ':']) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(if chunked {
        "Transfer-Encoding: chunked\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    if let Err(e) = w.write_all(head.as_bytes()).and_then(|()| w.flush()) {
        return format!("client gone before the head ({e})");
    }
    let mut send = |text: &str| -> std::io::Result<()> {
        if chunked {
            write!(w, "{:x}\r\n{text}\r\n", text.len())?;
        } else {
            w.write_all(text.as_bytes())?;
        }
        w.flush()
    };
    // Polls without a write after which a keep-alive goes out.
    let keepalive_polls = pace
        .keepalive
        .as_micros()
        .div_ceil(pace.poll.as_micros().max(1));
    let mut quiet_polls = 0;
    let mut state = SseState::default();
    let mut view = sse.first;
    let end = loop {
        let mut text = sse_events(&mut state, sse.events, &view);
        if text.is_empty() && quiet_polls >= keepalive_polls {
            text = ": keep-alive\n\n".to_string();
        }
        if text.is_empty() {
            quiet_polls += 1;
        } else {
            if let Err(e) = send(&text) {
                break format!("client gone ({e})");
            }
            quiet_polls = 1;
        }
        if !sse.lease.wait(pace.poll) {
            break "deleted or taken over".to_string();
        }
        let cmd = Command::ViewerState {
            role: Role::Subscriber,
            room: sse.room.clone(),
            token: sse.token,
        };
        match core(cmd) {
            Ok(Ok(Reply::ViewerState(v))) => view = *v,
            Ok(Err(ApiError::NotFound)) => {
                sse.lease.registry().remove_session(sse.token);
                break "session ended".to_string();
            }
            Ok(other) => break format!("unexpected reply {other:?}"),
            // Busy: try again at the next poll.
            Err(CoreError::Busy) => {}
        }
    };
    if chunked {
        let _ = write!(w, "0\r\n\r\n").and_then(|()| w.flush());
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(active: bool, viewers: usize) -> ViewerState {
        ViewerState {
            publisher_active: active,
            viewers,
            ..ViewerState::default()
        }
    }

    /// A stream on a fresh registry, its first state `first`.
    fn start(first: ViewerState) -> (Arc<SseStreams>, SseStart) {
        let streams = Arc::new(SseStreams::new(4));
        let room = RoomName::new("r").unwrap();
        let token = SessionToken::parse("0123456789abcdef0123456789abcdef").unwrap();
        let id = streams.create(room.clone(), token, EventSet::ALL);
        let lease = streams.attach(&room, token, id).unwrap();
        let head = HttpResponse::new(200).with("Content-Type", "text/event-stream");
        let start = SseStart {
            head,
            lease,
            room,
            token,
            events: EventSet::ALL,
            first,
        };
        (streams, start)
    }

    #[test]
    fn a_stream_writes_changes_keepalives_and_ends_with_its_session() {
        let (streams, sse) = start(view(false, 1));
        // The core's answers, one per poll: a change, seven quiet polls, the end.
        let state = |active, n| Ok(Ok(Reply::ViewerState(Box::new(view(active, n)))));
        let mut replies = vec![state(true, 1)];
        replies.extend((0..7).map(|_| state(true, 1)));
        replies.push(Ok(Err(ApiError::NotFound)));
        let mut replies = replies.into_iter();
        let mut out = Vec::new();
        let pace = Pace {
            poll: Duration::from_millis(1),
            keepalive: Duration::from_millis(3),
        };
        let end = write_stream(&mut out, true, sse, pace, &mut |_| replies.next().unwrap());
        assert_eq!(end, "session ended");
        assert!(replies.next().is_none(), "every reply was asked for");
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n\
             Access-Control-Expose-Headers: Location, ETag, Link, Accept-Patch, Accept-Post\r\n\
             Content-Type: text/event-stream\r\nTransfer-Encoding: chunked"
        );
        let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
        // Three quiet polls after each write, then a keep-alive.
        let expected = [
            chunk("event: viewercount\ndata: {\"viewercount\":1}\n\n"),
            chunk("event: active\ndata: {}\n\n"),
            chunk(": keep-alive\n\n"),
            chunk(": keep-alive\n\n"),
            "0\r\n\r\n".to_string(),
        ]
        .concat();
        assert_eq!(body, expected);
        // The session's streams are forgotten.
        assert_eq!(streams.counts(), (0, 0));
    }

    #[test]
    fn a_deleted_stream_ends_at_once() {
        let (streams, sse) = start(view(true, 2));
        let room = RoomName::new("r").unwrap();
        let token = sse.token;
        // Deleted before the first wait: no poll of the core at all.
        assert!(streams.remove(&room, token, 1));
        let mut out = Vec::new();
        let t0 = std::time::Instant::now();
        let pace = Pace {
            poll: Duration::from_secs(60),
            keepalive: SSE_KEEPALIVE,
        };
        let end = write_stream(&mut out, false, sse, pace, &mut |c| {
            panic!("core asked {c:?}")
        });
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(end, "deleted or taken over");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Connection: close\r\n\r\nevent: active\ndata: {}\n\n"));
        assert!(text.ends_with("data: {\"viewercount\":2}\n\n"), "{text}");
    }

    #[test]
    fn a_newer_get_takes_the_stream_over() {
        let (streams, sse) = start(view(true, 1));
        let (room, token) = (sse.room.clone(), sse.token);
        assert!(sse.lease.alive());
        let newer = streams.attach(&room, token, 1).unwrap();
        assert!(!sse.lease.alive());
        assert!(!sse.lease.wait(Duration::from_secs(60)));
        assert!(newer.alive());
        assert_eq!(streams.counts(), (1, 2));
        drop(sse);
        assert_eq!(streams.counts(), (1, 1));
    }
}
