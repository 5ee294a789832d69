//! Pure HTTP request handling for WHIP, WHEP and the room API.
//!
//! No sockets, threads or tiny_http types: [`handle`] maps an [`HttpRequest`]
//! to an [`HttpResponse`], talking to the core only through the `core`
//! closure. `crate::http_thread` does the I/O. This keeps every route
//! unit-testable and fuzzable.
//!
//! Contracts:
//! - Every response carries the CORS headers `Access-Control-Allow-Origin: *`
//!   and `Access-Control-Expose-Headers`.
//! - Every error body is one short line of `text/plain; charset=utf-8`; it never
//!   contains the raw room name, the token, or a newline.
//! - The core is called at most once per request, and only after the request
//!   passed every edge check (method, room name, token, content type, size).

use std::sync::{Arc, Mutex};

use log::debug;
use serde_json::json;

use crate::auth::{Auth, Decision, Need};
use crate::metrics::{self, HttpCounters};
use crate::sfu::command::{ApiError, Command, Reply, Role, RoomInfo, ViewerState};
use crate::sfu::id::{RoomName, SessionToken};

/// Largest accepted request body (an SDP offer or an sdpfrag): 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Seconds a client should wait after a 503 because a capacity limit was reached.
pub const RETRY_AFTER_CAPACITY: &str = "5";
/// Seconds a client should wait after a 503 because the core was busy.
pub const RETRY_AFTER_BUSY: &str = "1";

const CORS_EXPOSE: &str = "Location, ETag, Link, Accept-Patch, Accept-Post";
/// `ETag` too: Eyevinn's whip-web-client sends the tag in an `ETag` request header.
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match, ETag";
const ENDPOINT_CORS_METHODS: &str = "POST, PATCH, DELETE, OPTIONS";
const SESSION_CORS_METHODS: &str = "PATCH, DELETE, OPTIONS";
const ENDPOINT_ALLOW: &str = "POST, GET, HEAD, OPTIONS";
const SESSION_ALLOW: &str = "PATCH, DELETE, GET, HEAD, OPTIONS";
const ROOMS_ALLOW: &str = "GET, HEAD, OPTIONS";
const ROOM_ALLOW: &str = "GET, HEAD, DELETE, OPTIONS";
const SDP: &str = "application/sdp";
/// The PATCH body type (RFC 8840).
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// `WWW-Authenticate` realm.
const REALM: &str = "Bearer realm=\"wisp\"";
/// Longest error body, in bytes.
const MAX_ERROR_BODY: usize = 200;
/// `rel` of the WHEP server-sent events extension.
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
/// `rel` of the WHEP layer selection extension.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";
/// The events wisp sends, as advertised in the SSE `Link` header.
pub const SSE_EVENTS: [&str; 4] = ["active", "inactive", "layers", "viewercount"];
/// Event streams (SSE) being sent at once, by default; more → 503.
pub const DEFAULT_MAX_SSE_STREAMS: usize = 64;
/// Event streams remembered (created by POST, streamed or not); the oldest
/// is forgotten first.
pub const MAX_SSE_ENTRIES: usize = 1024;
/// Event streams remembered per viewer session.
pub const MAX_SSE_PER_SESSION: usize = 4;
const SSE_ALLOW: &str = "POST, OPTIONS";
const SSE_STREAM_ALLOW: &str = "GET, DELETE, OPTIONS";
const LAYER_ALLOW: &str = "POST, OPTIONS";

/// A request as read from the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, e.g. `"POST"` (compared case-sensitively, as HTTP requires).
    pub method: String,
    /// Path plus optional `?query`; the query is ignored.
    pub url: String,
    /// Header names and values in arrival order; names compare case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The body; the driver already capped it at a little over the body limit.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers; a name may repeat (one `Link` per ICE server).
    pub headers: Vec<(String, String)>,
    /// The body (empty for 204).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All values of headers named `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A response with this status and the CORS headers every response carries.
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![
                ("Access-Control-Allow-Origin".into(), "*".into()),
                ("Access-Control-Expose-Headers".into(), CORS_EXPOSE.into()),
            ],
            body: Vec::new(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> HttpResponse {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Set the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        self.headers
            .push(("Content-Type".into(), content_type.to_string()));
        self.body = body.into();
        self
    }

    /// A one-line `text/plain` error response.
    pub fn error(status: u16, msg: &str) -> HttpResponse {
        HttpResponse::new(status).body(TEXT, one_line(msg))
    }

    /// 503 with `Retry-After: 1`: the core (or the driver's queue) is busy.
    pub fn busy() -> HttpResponse {
        HttpResponse::error(503, "server busy, retry later").with("Retry-After", RETRY_AFTER_BUSY)
    }

    /// 413: body over the limit.
    pub fn too_large() -> HttpResponse {
        HttpResponse::error(413, "request body too large")
    }

    /// 500: something inside wisp went wrong (never the client's fault).
    pub fn internal() -> HttpResponse {
        HttpResponse::error(500, "internal error")
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why the core could not answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// The command channel is full or closed, or the reply came too late (→ 503, Retry-After: 1).
    Busy,
}

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// One `Link` header value per ICE server (see `Config::ice_server_links`).
    pub ice_server_links: Vec<String>,
    /// Largest accepted body in bytes; larger → 413.
    pub body_limit: usize,
    /// Bearer tokens; [`Auth::default`] is fully open.
    pub auth: Auth,
    /// Responses by status, filled in by the driver, shown by `/metrics`.
    pub counters: Arc<HttpCounters>,
    /// The recorder's figures, when recording is configured (room API, metrics).
    pub recorder: Option<Arc<crate::record::RecorderStats>>,
    /// The WHEP event streams (server-sent events extension).
    pub sse: Arc<SseStreams>,
}

impl HttpConfig {
    /// These ICE server links, the default 64 KiB body limit, no auth, fresh counters.
    pub fn new(ice_server_links: Vec<String>) -> HttpConfig {
        HttpConfig {
            ice_server_links,
            body_limit: DEFAULT_BODY_LIMIT,
            auth: Auth::default(),
            counters: Arc::new(HttpCounters::new()),
            recorder: None,
            sse: Arc::new(SseStreams::new(DEFAULT_MAX_SSE_STREAMS)),
        }
    }

    /// The same configuration with these tokens.
    pub fn with_auth(mut self, auth: Auth) -> HttpConfig {
        self.auth = auth;
        self
    }

    /// The same configuration showing this recorder's figures.
    pub fn with_recorder(mut self, stats: Arc<crate::record::RecorderStats>) -> HttpConfig {
        self.recorder = Some(stats);
        self
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig::new(Vec::new())
    }
}

/// The function the driver passes to [`handle`]: send one command, wait for its reply.
pub type CoreFn<'a> = dyn FnMut(Command) -> Result<Result<Reply, ApiError>, CoreError> + 'a;

/// Where a path leads. Borrowed segments are raw (unvalidated) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Metrics,
    Endpoint(Role, &'a str),
    Session(Role, &'a str, &'a str),
    /// `/whep/{room}/{token}/sse`: create an event stream.
    Sse(&'a str, &'a str),
    /// `/whep/{room}/{token}/sse/{id}`: one event stream.
    SseStream(&'a str, &'a str, &'a str),
    /// `/whep/{room}/{token}/layer`: layer selection.
    Layer(&'a str, &'a str),
    Rooms,
    Room(&'a str),
    Unknown,
}

fn route(url: &str) -> Route<'_> {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    let Some(path) = path.strip_prefix('/') else {
        return Route::Unknown;
    };
    let segs: Vec<&str> = path.split('/').collect();
    let role = match segs.first() {
        Some(&"whip") => Some(Role::Publisher),
        Some(&"whep") => Some(Role::Subscriber),
        _ => None,
    };
    match (role, segs.as_slice()) {
        (None, ["healthz"]) => Route::Health,
        (None, ["metrics"]) => Route::Metrics,
        (Some(role), [_, room]) => Route::Endpoint(role, room),
        (Some(role), [_, room, token]) => Route::Session(role, room, token),
        (Some(Role::Subscriber), [_, room, token, "sse"]) => Route::Sse(room, token),
        (Some(Role::Subscriber), [_, room, token, "sse", id]) => Route::SseStream(room, token, id),
        (Some(Role::Subscriber), [_, room, token, "layer"]) => Route::Layer(room, token),
        (None, ["api", "rooms"]) => Route::Rooms,
        (None, ["api", "rooms", room]) => Route::Room(room),
        _ => Route::Unknown,
    }
}

fn need(role: Role) -> Need {
    match role {
        Role::Publisher => Need::Publish,
        Role::Subscriber => Need::View,
    }
}

/// `None` if the request may go on, else the 401/403 response.
fn deny(
    req: &HttpRequest,
    cfg: &HttpConfig,
    need: Need,
    room: Option<&RoomName>,
) -> Option<HttpResponse> {
    let decision = cfg.auth.check(
        need,
        room.map(RoomName::as_str),
        req.header("Authorization"),
    );
    match decision {
        Decision::Allow => None,
        Decision::Missing => Some(
            HttpResponse::error(401, "authorization required: send a Bearer token")
                .with("WWW-Authenticate", REALM),
        ),
        Decision::Invalid => Some(HttpResponse::error(401, "invalid token").with(
            "WWW-Authenticate",
            format!("{REALM}, error=\"invalid_token\""),
        )),
        Decision::Forbidden => Some(
            HttpResponse::error(403, "token not valid for this resource").with(
                "WWW-Authenticate",
                format!("{REALM}, error=\"insufficient_scope\""),
            ),
        ),
    }
}

/// Handle one request. `core` is called at most once.
///
/// Routes: `POST /whip/{room}`, `POST /whep/{room}` (201 + Location + ETag + Link),
/// `PATCH /whip|whep/{room}/{token}` (trickle 204, ICE restart 200),
/// `DELETE /whip|whep/{room}/{token}` (200), OPTIONS/GET/HEAD on both,
/// `GET /healthz`, `GET /metrics`, `GET /api/rooms`, `GET|DELETE /api/rooms/{room}`,
/// and the WHEP extensions (advertised by `Link` headers on the WHEP 201):
/// `POST /whep/{room}/{token}/sse` (201 + Location of an event stream),
/// `GET|DELETE /whep/{room}/{token}/sse/{id}` (the stream; see
/// [`handle_streaming`]), `POST /whep/{room}/{token}/layer` (200).
/// Unknown path → 404; known path, wrong method → 405 with `Allow`.
/// Auth (see [`crate::auth`]) is checked after the path and method, before
/// anything else; preflights, GET/HEAD on WHIP/WHEP URLs and `/healthz` never need it.
pub fn handle(req: &HttpRequest, cfg: &HttpConfig, core: &mut CoreFn<'_>) -> HttpResponse {
    match handle_streaming(req, cfg, core) {
        Handled::Response(r) => r,
        // The stream's place is given back when `s.lease` drops here.
        Handled::Stream(s) => s.head,
    }
}

/// What [`handle_streaming`] produced.
#[derive(Debug)]
pub enum Handled {
    /// An ordinary response.
    Response(HttpResponse),
    /// A `GET` on a WHEP event stream: send `head`, then events for as long
    /// as `lease` stays alive (see [`SseStart`]).
    Stream(Box<SseStart>),
}

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

/// [`handle`], but a `GET` on a WHEP event stream comes back as
/// [`Handled::Stream`] for the driver to stream. `core` is called at most once.
pub fn handle_streaming(req: &HttpRequest, cfg: &HttpConfig, core: &mut CoreFn<'_>) -> Handled {
    let m = req.method.as_str();
    match route(&req.url) {
        Route::Sse(raw_room, raw_token) => {
            return Handled::Response(sse_create(req, cfg, core, raw_room, raw_token))
        }
        Route::SseStream(raw_room, raw_token, raw_id) if m == "GET" => {
            return sse_get(cfg, core, raw_room, raw_token, raw_id)
        }
        Route::SseStream(raw_room, raw_token, raw_id) => {
            return Handled::Response(sse_stream(req, cfg, raw_room, raw_token, raw_id))
        }
        Route::Layer(raw_room, raw_token) => {
            return Handled::Response(layer(req, cfg, core, raw_room, raw_token))
        }
        _ => {}
    }
    Handled::Response(handle_plain(req, cfg, core))
}

fn handle_plain(req: &HttpRequest, cfg: &HttpConfig, core: &mut CoreFn<'_>) -> HttpResponse {
    let m = req.method.as_str();
    // The browser page (GET / and its static files) is served by `crate::page`.
    if let Some(resp) = crate::page::serve(req) {
        return resp;
    }
    match route(&req.url) {
        Route::Unknown | Route::Sse(..) | Route::SseStream(..) | Route::Layer(..) => {
            HttpResponse::error(404, "not found")
        }
        Route::Health => match m {
            "GET" | "HEAD" => HttpResponse::new(200).body(TEXT, "ok"),
            _ => not_allowed("GET, HEAD"),
        },
        Route::Metrics => match m {
            "GET" | "HEAD" => {
                if let Some(r) = deny(req, cfg, Need::Admin, None) {
                    return r;
                }
                match core(Command::Stats) {
                    Ok(Ok(Reply::Stats(s))) => HttpResponse::new(200).body(
                        metrics::CONTENT_TYPE,
                        metrics::render(&s, &cfg.counters, cfg.recorder.as_deref()),
                    ),
                    other => from_failure(other, "Stats"),
                }
            }
            _ => not_allowed("GET, HEAD"),
        },
        Route::Endpoint(role, raw) => match m {
            "POST" | "OPTIONS" | "GET" | "HEAD" => {
                let Some(room) = room_name(raw) else {
                    return bad_room(raw);
                };
                match m {
                    "POST" => {
                        if let Some(r) = deny(req, cfg, need(role), Some(&room)) {
                            return r;
                        }
                        post_offer(req, cfg, core, role, room)
                    }
                    "OPTIONS" => {
                        // ICE servers (TURN credentials) only to authorised callers.
                        let links = deny(req, cfg, need(role), Some(&room)).is_none();
                        options(req, cfg, ENDPOINT_CORS_METHODS, ENDPOINT_ALLOW, links)
                            .with("Accept-Post", SDP)
                    }
                    "HEAD" => HttpResponse::new(200).with("Content-Type", SDP),
                    _ => HttpResponse::new(204),
                }
            }
            _ => not_allowed(ENDPOINT_ALLOW),
        },
        Route::Session(role, raw_room, raw_token) => match m {
            "PATCH" | "DELETE" | "OPTIONS" | "GET" | "HEAD" => {
                let Some(room) = room_name(raw_room) else {
                    return bad_room(raw_room);
                };
                if matches!(m, "PATCH" | "DELETE") {
                    if let Some(r) = deny(req, cfg, need(role), Some(&room)) {
                        return r;
                    }
                }
                let Some(token) = SessionToken::parse(raw_token) else {
                    return HttpResponse::error(404, "no such session");
                };
                match m {
                    "PATCH" => patch(req, cfg, core, role, room, token),
                    "DELETE" => {
                        // If-Match is ignored on DELETE (RFC 9725).
                        let cmd = Command::DeleteSession { role, room, token };
                        let r = core(cmd);
                        if matches!(r, Ok(Ok(Reply::Deleted)) | Ok(Err(ApiError::NotFound))) {
                            // Event streams die with their session.
                            cfg.sse.remove_session(token);
                        }
                        match r {
                            Ok(Ok(Reply::Deleted)) => HttpResponse::new(200),
                            other => from_failure(other, "DeleteSession"),
                        }
                    }
                    "OPTIONS" => options(req, cfg, SESSION_CORS_METHODS, SESSION_ALLOW, false)
                        .with("Accept-Patch", SDPFRAG),
                    _ => HttpResponse::new(204),
                }
            }
            _ => not_allowed(SESSION_ALLOW),
        },
        Route::Rooms => match m {
            "OPTIONS" => options(req, cfg, ROOMS_ALLOW, ROOMS_ALLOW, false),
            "GET" | "HEAD" => {
                if let Some(r) = deny(req, cfg, Need::Admin, None) {
                    return r;
                }
                match core(Command::ListRooms) {
                    Ok(Ok(Reply::Rooms(rooms))) => {
                        let list: Vec<_> = rooms.iter().map(|r| room_json(r, cfg)).collect();
                        json_response(200, &serde_json::Value::Array(list))
                    }
                    other => from_failure(other, "ListRooms"),
                }
            }
            _ => not_allowed(ROOMS_ALLOW),
        },
        Route::Room(raw) => match m {
            "GET" | "HEAD" | "DELETE" | "OPTIONS" => {
                let Some(room) = room_name(raw) else {
                    return bad_room(raw);
                };
                if m == "OPTIONS" {
                    return options(req, cfg, ROOM_ALLOW, ROOM_ALLOW, false);
                }
                if let Some(r) = deny(req, cfg, Need::Admin, None) {
                    return r;
                }
                if m == "DELETE" {
                    return match core(Command::CloseRoom { room }) {
                        Ok(Ok(Reply::RoomClosed { sessions })) => {
                            json_response(200, &json!({ "closed": sessions }))
                        }
                        other => from_failure(other, "CloseRoom"),
                    };
                }
                match core(Command::ListRooms) {
                    Ok(Ok(Reply::Rooms(rooms))) => {
                        match rooms.iter().find(|r| r.name == room.as_str()) {
                            Some(r) => json_response(200, &room_json(r, cfg)),
                            None => HttpResponse::error(404, "no such room"),
                        }
                    }
                    other => from_failure(other, "ListRooms"),
                }
            }
            _ => not_allowed(ROOM_ALLOW),
        },
    }
}

/// A text body of media type `ctype`: 415 (with the `accept` header) for
/// another type, 413 over the limit, 400 if it is not UTF-8.
fn text_body<'r>(
    req: &'r HttpRequest,
    cfg: &HttpConfig,
    ctype: &str,
    accept: (&str, &str),
    what: &str,
) -> Result<&'r str, HttpResponse> {
    if !has_content_type(&req.headers, ctype) {
        return Err(
            HttpResponse::error(415, &format!("Content-Type must be {ctype}"))
                .with(accept.0, accept.1),
        );
    }
    if req.body.len() > cfg.body_limit {
        return Err(HttpResponse::too_large());
    }
    std::str::from_utf8(&req.body)
        .map_err(|_| HttpResponse::error(400, &format!("{what} is not valid UTF-8")))
}

/// POST of an SDP offer to a WHIP or WHEP endpoint.
fn post_offer(
    req: &HttpRequest,
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    role: Role,
    room: RoomName,
) -> HttpResponse {
    let offer = match text_body(req, cfg, SDP, ("Accept", SDP), "offer") {
        Ok(t) => t,
        Err(r) => return r,
    };
    if offer.trim().is_empty() {
        return HttpResponse::error(400, "empty offer");
    }
    let offer = offer.to_string();
    let cmd = match role {
        Role::Publisher => Command::Publish {
            room: room.clone(),
            offer,
            record: record_override(&req.url).or(cfg.auth.room_record(room.as_str())),
        },
        Role::Subscriber => Command::Subscribe {
            room: room.clone(),
            offer,
        },
    };
    match core(cmd) {
        Ok(Ok(Reply::Created {
            token,
            answer,
            etag,
        })) => {
            let location = format!("/{}/{}/{}", role.path_prefix(), room, token);
            let mut resp = HttpResponse::new(201)
                .with("Location", location)
                .with("ETag", etag)
                .body(SDP, answer.into_bytes());
            for link in &cfg.ice_server_links {
                resp = resp.with("Link", link.clone());
            }
            if role == Role::Subscriber {
                // The WHEP extensions wisp implements, and only those.
                let base = format!("/whep/{room}/{token}");
                resp = resp
                    .with(
                        "Link",
                        format!(
                            "<{base}/sse>; rel=\"{SSE_REL}\"; events=\"{}\"",
                            SSE_EVENTS.join(",")
                        ),
                    )
                    .with("Link", format!("<{base}/layer>; rel=\"{LAYER_REL}\""));
            }
            resp
        }
        other => from_failure(other, "Publish/Subscribe"),
    }
}

/// PATCH of an `application/trickle-ice-sdpfrag` body on a session URL.
///
/// The tag comes from `If-Match`, else (leniently, for Eyevinn clients) from
/// an `ETag` request header, verbatim; the core answers 428/412 and tells
/// trickle (204) from ICE restart (200 + sdpfrag + new ETag).
fn patch(
    req: &HttpRequest,
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    role: Role,
    room: RoomName,
    token: SessionToken,
) -> HttpResponse {
    let fragment = match text_body(req, cfg, SDPFRAG, ("Accept-Patch", SDPFRAG), "sdpfrag") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let if_match = req
        .header("If-Match")
        .or_else(|| req.header("ETag"))
        .map(str::to_string);
    let cmd = Command::Patch {
        role,
        room,
        token,
        if_match,
        fragment: fragment.to_string(),
    };
    match core(cmd) {
        Ok(Ok(Reply::Patched { fragment: None, .. })) => HttpResponse::new(204),
        Ok(Ok(Reply::Patched {
            fragment: Some(frag),
            etag,
        })) => {
            let mut resp = HttpResponse::new(200);
            if let Some(etag) = etag {
                resp = resp.with("ETag", etag);
            }
            resp.body(SDPFRAG, frag.into_bytes())
        }
        other => from_failure(other, "Patch"),
    }
}

// ------------------------------------------------------------ WHEP extensions

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
    /// Bumped by every GET: a newer GET takes the stream over.
    gen: u64,
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
    id: u64,
    gen: u64,
}

impl SseLease {
    /// The registry the stream belongs to.
    pub fn registry(&self) -> &SseStreams {
        &self.streams
    }

    /// The stream still exists and no newer GET took it over.
    pub fn alive(&self) -> bool {
        self.streams
            .lock()
            .entries
            .iter()
            .any(|e| e.id == self.id && e.gen == self.gen)
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
            gen: 0,
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
        e.gen += 1;
        let gen = e.gen;
        g.streaming += 1;
        Ok(SseLease {
            streams: self.clone(),
            id,
            gen,
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

/// Room, token and auth of an extension URL: `Err` is the response.
fn ext_session(
    req: &HttpRequest,
    cfg: &HttpConfig,
    raw_room: &str,
    raw_token: &str,
    needs_auth: bool,
) -> Result<(RoomName, SessionToken), HttpResponse> {
    let Some(room) = room_name(raw_room) else {
        return Err(bad_room(raw_room));
    };
    if needs_auth {
        if let Some(r) = deny(req, cfg, Need::View, Some(&room)) {
            return Err(r);
        }
    }
    let Some(token) = SessionToken::parse(raw_token) else {
        return Err(HttpResponse::error(404, "no such session"));
    };
    Ok((room, token))
}

/// A stream id from the URL (decimal, as wisp writes it).
fn stream_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// The common front of the extension POSTs: OPTIONS and other methods are
/// answered here; a POST yields its session (authorised) with a body within
/// the limit.
fn ext_post(
    req: &HttpRequest,
    cfg: &HttpConfig,
    raw_room: &str,
    raw_token: &str,
    allow: &str,
) -> Result<(RoomName, SessionToken), HttpResponse> {
    match req.method.as_str() {
        "POST" => {}
        "OPTIONS" => {
            if room_name(raw_room).is_none() {
                return Err(bad_room(raw_room));
            }
            return Err(options(req, cfg, allow, allow, false));
        }
        _ => return Err(not_allowed(allow)),
    }
    let session = ext_session(req, cfg, raw_room, raw_token, true)?;
    if req.body.len() > cfg.body_limit {
        return Err(HttpResponse::too_large());
    }
    Ok(session)
}

/// `POST /whep/{room}/{token}/sse`: create an event stream (201 + Location).
fn sse_create(
    req: &HttpRequest,
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    raw_room: &str,
    raw_token: &str,
) -> HttpResponse {
    let (room, token) = match ext_post(req, cfg, raw_room, raw_token, SSE_ALLOW) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let events = match EventSet::parse(&req.body) {
        Ok(e) => e,
        Err(why) => return HttpResponse::error(400, &why),
    };
    let cmd = Command::ViewerState {
        role: Role::Subscriber,
        room: room.clone(),
        token,
    };
    match core(cmd) {
        Ok(Ok(Reply::ViewerState(_))) => {
            let id = cfg.sse.create(room.clone(), token, events);
            HttpResponse::new(201).with("Location", format!("/whep/{room}/{token}/sse/{id}"))
        }
        Ok(Err(ApiError::NotFound)) => {
            cfg.sse.remove_session(token);
            HttpResponse::error(404, "no such session")
        }
        other => from_failure(other, "ViewerState"),
    }
}

/// `GET /whep/{room}/{token}/sse/{id}`: start sending the stream. No auth:
/// `EventSource` cannot send an `Authorization` header, and the URL holds the
/// session's unguessable token.
fn sse_get(
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    raw_room: &str,
    raw_token: &str,
    raw_id: &str,
) -> Handled {
    let req = HttpRequest::default();
    let (room, token) = match ext_session(&req, cfg, raw_room, raw_token, false) {
        Ok(x) => x,
        Err(r) => return Handled::Response(r),
    };
    let no_stream = || Handled::Response(HttpResponse::error(404, "no such event stream"));
    let Some(id) = stream_id(raw_id) else {
        return no_stream();
    };
    let Some(events) = cfg.sse.events(&room, token, id) else {
        return no_stream();
    };
    let cmd = Command::ViewerState {
        role: Role::Subscriber,
        room: room.clone(),
        token,
    };
    let first = match core(cmd) {
        Ok(Ok(Reply::ViewerState(v))) => *v,
        Ok(Err(ApiError::NotFound)) => {
            cfg.sse.remove_session(token);
            return no_stream();
        }
        other => return Handled::Response(from_failure(other, "ViewerState")),
    };
    let lease = match cfg.sse.attach(&room, token, id) {
        Ok(l) => l,
        Err(AttachError::NotFound) => return no_stream(),
        Err(AttachError::Full) => {
            return Handled::Response(
                HttpResponse::error(503, "too many event streams, retry later")
                    .with("Retry-After", RETRY_AFTER_CAPACITY),
            )
        }
    };
    let head = HttpResponse::new(200)
        .with("Content-Type", "text/event-stream")
        .with("Cache-Control", "no-cache")
        .with("X-Accel-Buffering", "no");
    Handled::Stream(Box::new(SseStart {
        head,
        lease,
        room,
        token,
        events,
        first,
    }))
}

/// DELETE or OPTIONS on an event stream.
fn sse_stream(
    req: &HttpRequest,
    cfg: &HttpConfig,
    raw_room: &str,
    raw_token: &str,
    raw_id: &str,
) -> HttpResponse {
    match req.method.as_str() {
        "DELETE" => {}
        "OPTIONS" => {
            let Some(_) = room_name(raw_room) else {
                return bad_room(raw_room);
            };
            return options(req, cfg, SSE_STREAM_ALLOW, SSE_STREAM_ALLOW, false);
        }
        _ => return not_allowed(SSE_STREAM_ALLOW),
    }
    let (room, token) = match ext_session(req, cfg, raw_room, raw_token, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match stream_id(raw_id) {
        Some(id) if cfg.sse.remove(&room, token, id) => HttpResponse::new(200),
        _ => HttpResponse::error(404, "no such event stream"),
    }
}

/// `POST /whep/{room}/{token}/layer`: pin a simulcast layer by `rid`, or go
/// back to automatic selection (no `rid`). Spatial/temporal layer ids and
/// size limits are not supported (422).
fn layer(
    req: &HttpRequest,
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    raw_room: &str,
    raw_token: &str,
) -> HttpResponse {
    let (room, token) = match ext_post(req, cfg, raw_room, raw_token, LAYER_ALLOW) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (rid, media) = match parse_layer_request(&req.body) {
        Ok(x) => x,
        Err((status, why)) => return HttpResponse::error(status, &why),
    };
    let cmd = Command::PinLayer {
        role: Role::Subscriber,
        room,
        token,
        rid,
        media,
    };
    match core(cmd) {
        Ok(Ok(Reply::Done)) => HttpResponse::new(200),
        Ok(Err(ApiError::NotFound)) => {
            cfg.sse.remove_session(token);
            HttpResponse::error(404, "no such session")
        }
        other => from_failure(other, "PinLayer"),
    }
}

/// A layer selection body: `(rid, mediaId)`, or `(status, reason)`.
pub fn parse_layer_request(body: &[u8]) -> Result<(Option<String>, Option<usize>), (u16, String)> {
    let bad = |why: &str| (400, why.to_string());
    let v: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body must be a JSON object"))?;
    let media = match obj.get("mediaId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(
            s.parse::<usize>()
                .map_err(|_| bad("mediaId must be an m-line index"))?,
        ),
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("mediaId must be an m-line index"))?,
        ),
        Some(_) => return Err(bad("mediaId must be an m-line index")),
    };
    let rid = match obj.get("rid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s))
            if !s.is_empty()
                && s.len() <= 16
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(s.clone())
        }
        Some(_) => return Err(bad("rid must be 1-16 of A-Z a-z 0-9 - _")),
    };
    for unsupported in [
        "spatialLayerId",
        "temporalLayerId",
        "maxSpatialLayerId",
        "maxTemporalLayerId",
        "maxWidth",
        "maxHeight",
    ] {
        if obj.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err((
                422,
                format!("{unsupported} is not supported: wisp selects simulcast layers by rid"),
            ));
        }
    }
    Ok((rid, media))
}

/// OPTIONS on a WHIP/WHEP or room API URL.
///
/// A preflight (has `Access-Control-Request-Method`) gets the CORS allow
/// headers, never needs auth and never carries ICE server links; a plain
/// OPTIONS gets the links when `links` is true (an endpoint, and the caller
/// is authorised: clients such as whip-web-client read them before POSTing).
fn options(
    req: &HttpRequest,
    cfg: &HttpConfig,
    cors_methods: &str,
    allow: &str,
    links: bool,
) -> HttpResponse {
    let preflight = req.header("Access-Control-Request-Method").is_some();
    let mut resp = HttpResponse::new(204)
        .with("Allow", allow)
        .with("Access-Control-Allow-Methods", cors_methods);
    if preflight {
        resp = resp
            .with("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            .with("Access-Control-Max-Age", "600");
    } else if links {
        for link in &cfg.ice_server_links {
            resp = resp.with("Link", link.clone());
        }
    }
    resp
}

/// Map a core failure (or an unexpected success variant) to a response.
fn from_failure(r: Result<Result<Reply, ApiError>, CoreError>, what: &str) -> HttpResponse {
    match r {
        Err(CoreError::Busy) => HttpResponse::busy(),
        Ok(Err(e)) => api_error(&e),
        Ok(Ok(reply)) => {
            log::error!("core answered {what} with an unexpected reply: {reply:?}");
            HttpResponse::internal()
        }
    }
}

/// The status and body for an [`ApiError`].
pub fn api_error(e: &ApiError) -> HttpResponse {
    match e {
        ApiError::BadOffer(_) => HttpResponse::error(400, &e.to_string()),
        ApiError::Unsupported(_) => HttpResponse::error(422, &e.to_string()),
        ApiError::AlreadyPublished => HttpResponse::error(409, &e.to_string()),
        ApiError::NotFound => HttpResponse::error(404, &e.to_string()),
        ApiError::BadFragment(_) => HttpResponse::error(400, &e.to_string()),
        ApiError::PreconditionRequired => HttpResponse::error(428, &e.to_string()),
        ApiError::PreconditionFailed => HttpResponse::error(412, &e.to_string()),
        ApiError::AtCapacity | ApiError::Overloaded => {
            HttpResponse::error(503, &e.to_string()).with("Retry-After", RETRY_AFTER_CAPACITY)
        }
    }
}

fn not_allowed(allow: &str) -> HttpResponse {
    HttpResponse::error(405, "method not allowed").with("Allow", allow)
}

fn room_name(raw: &str) -> Option<RoomName> {
    RoomName::new(raw)
}

fn bad_room(raw: &str) -> HttpResponse {
    // Never echo the raw name: escape it, and cap what reaches the log.
    let shown: String = raw.chars().take(80).collect();
    debug!("rejected room name {shown:?} ({} bytes)", raw.len());
    HttpResponse::error(400, "invalid room name: use 1-64 of A-Z a-z 0-9 _ -")
}

/// True if there is exactly one Content-Type and its media type is `want`
/// (case-insensitive, parameters ignored).
fn has_content_type(headers: &[(String, String)], want: &str) -> bool {
    let mut cts = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Type"));
    match (cts.next(), cts.next()) {
        (Some((_, v)), None) => {
            let media = v.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case(want)
        }
        _ => false,
    }
}

fn room_json(r: &RoomInfo, cfg: &HttpConfig) -> serde_json::Value {
    let tracks: Vec<_> = r
        .tracks
        .iter()
        .map(|t| {
            json!({
                "kind": t.kind,
                "codec": t.codec,
                "packets": t.packets,
                "bytes": t.bytes,
            })
        })
        .collect();
    json!({
        "name": r.name,
        "publisher_live": r.publisher_live,
        "tracks": tracks,
        "viewers": r.viewers,
        "uptime_s": r.uptime_s,
        "recording": recording_json(r, cfg),
    })
}

/// The room's recording state: whether its publisher is recorded, and the
/// recorder's figures for the room.
fn recording_json(r: &RoomInfo, cfg: &HttpConfig) -> serde_json::Value {
    let figures = cfg.recorder.as_ref().and_then(|s| {
        let name = RoomName::new(&r.name)?;
        s.room(&name)
    });
    let f = figures.unwrap_or_default();
    json!({
        "on": r.recording,
        "files_open": f.files_open,
        "files_failed": f.files_failed,
        "bytes_written": f.bytes_written,
        "frames_written": f.frames_written,
        "frames_dropped": f.frames_dropped,
    })
}

fn json_response(status: u16, v: &serde_json::Value) -> HttpResponse {
    HttpResponse::new(status).body(JSON, v.to_string().into_bytes())
}

/// `msg` as one short line: control characters become spaces, at most
/// [`MAX_ERROR_BODY`] bytes (cut on a char boundary), ending in `\n`.
fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_ERROR_BODY) + 1);
    for c in msg.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_ERROR_BODY {
            break;
        }
        out.push(c);
    }
    let mut out = out.trim_end().to_string();
    out.push('\n');
    out
}

/// `?record=0|1` on a WHIP POST: per-publish recording override.
fn record_override(url: &str) -> Option<bool> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| match kv {
        "record=1" | "record=true" => Some(true),
        "record=0" | "record=false" => Some(false),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::command::TrackInfo;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n";

    fn cfg() -> HttpConfig {
        HttpConfig::new(vec![
            "<stun:s:3478>; rel=\"ice-server\"".into(),
            "<turn:t:3478>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; \
             credential-type=\"password\""
                .into(),
        ])
    }

    fn req(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    fn post(url: &str, ct: &str, body: &[u8]) -> HttpRequest {
        req("POST", url, &[("Content-Type", ct)], body)
    }

    /// Run `handle` with a core that records the command and answers `answer`.
    fn run_with(
        r: &HttpRequest,
        answer: Result<Result<Reply, ApiError>, CoreError>,
    ) -> (HttpResponse, Vec<Command>) {
        let mut seen = Vec::new();
        let mut answer = Some(answer);
        let resp = handle(r, &cfg(), &mut |c| {
            seen.push(c);
            answer.take().expect("core called twice")
        });
        check_invariants(&resp);
        (resp, seen)
    }

    /// Run `handle` with a core that must not be called.
    fn run_no_core(r: &HttpRequest) -> HttpResponse {
        let resp = handle(r, &cfg(), &mut |c| panic!("core called with {c:?}"));
        check_invariants(&resp);
        resp
    }

    fn check_invariants(resp: &HttpResponse) {
        assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(
            resp.header("Access-Control-Expose-Headers"),
            Some(CORS_EXPOSE)
        );
        if resp.status >= 400 {
            assert_eq!(resp.header("Content-Type"), Some(TEXT));
            let body = std::str::from_utf8(&resp.body).unwrap();
            assert!(
                body.ends_with('\n') && body.matches('\n').count() == 1,
                "{body:?}"
            );
            assert!(body.len() <= MAX_ERROR_BODY + 1);
        }
    }

    fn created() -> Result<Result<Reply, ApiError>, CoreError> {
        Ok(Ok(Reply::Created {
            token: SessionToken::parse(TOKEN).unwrap(),
            answer: "v=0\r\nanswer\r\n".into(),
            etag: "\"e1\"".into(),
        }))
    }

    #[test]
    fn record_query_override() {
        assert_eq!(record_override("/whip/r?record=1"), Some(true));
        assert_eq!(record_override("/whip/r?x=2&record=0"), Some(false));
        assert_eq!(record_override("/whip/r?record=true"), Some(true));
        assert_eq!(record_override("/whip/r?record=maybe"), None);
        assert_eq!(record_override("/whip/r"), None);
    }

    #[test]
    fn whip_post_created() {
        let (resp, seen) = run_with(
            &post("/whip/room1", "application/sdp", OFFER.as_bytes()),
            created(),
        );
        assert_eq!(resp.status, 201);
        assert_eq!(resp.header("Content-Type"), Some("application/sdp"));
        assert_eq!(
            resp.header("Location"),
            Some(&*format!("/whip/room1/{TOKEN}"))
        );
        assert_eq!(resp.body, b"v=0\r\nanswer\r\n");
        let links: Vec<_> = resp.header_all("Link").collect();
        assert_eq!(links, cfg().ice_server_links);
        match &seen[..] {
            [Command::Publish { room, offer, .. }] => {
                assert_eq!(room.as_str(), "room1");
                assert_eq!(offer, OFFER);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn whep_post_created_with_content_type_params() {
        for ct in [
            "application/sdp; charset=utf-8",
            "Application/SDP",
            " application/sdp ;x=y",
        ] {
            let (resp, seen) = run_with(
                &post("/whep/r_2-x?foo=bar", ct, OFFER.as_bytes()),
                created(),
            );
            assert_eq!(resp.status, 201, "{ct}");
            assert_eq!(
                resp.header("Location"),
                Some(&*format!("/whep/r_2-x/{TOKEN}"))
            );
            assert!(
                matches!(&seen[..], [Command::Subscribe { room, .. }] if room.as_str() == "r_2-x")
            );
        }
    }

    #[test]
    fn post_edge_rejections() {
        // Bad room names → 400, never echoed.
        for url in [
            "/whip/a.b",
            "/whip/..%2f",
            "/whep/",
            "/whip/%0d%0aX",
            &format!("/whip/{}", "a".repeat(65)),
        ] {
            let resp = run_no_core(&post(url, SDP, OFFER.as_bytes()));
            assert_eq!(resp.status, 400, "{url}");
            let body = String::from_utf8(resp.body).unwrap();
            assert!(!body.contains("%") && !body.contains("a.b"), "{body}");
        }
        // Wrong or missing content type → 415 with Accept.
        for headers in [
            vec![("Content-Type", "text/plain")],
            vec![("Content-Type", "application/sdpx")],
            vec![],
            vec![
                ("Content-Type", "application/sdp"),
                ("content-type", "text/plain"),
            ],
        ] {
            let resp = run_no_core(&req("POST", "/whip/r", &headers, OFFER.as_bytes()));
            assert_eq!(resp.status, 415, "{headers:?}");
            assert_eq!(resp.header("Accept"), Some("application/sdp"));
        }
        // Too large → 413; exactly the limit passes the edge.
        let big = vec![b'a'; DEFAULT_BODY_LIMIT + 1];
        assert_eq!(run_no_core(&post("/whip/r", SDP, &big)).status, 413);
        let (resp, _) = run_with(&post("/whip/r", SDP, &big[1..]), created());
        assert_eq!(resp.status, 201);
        // Not UTF-8, empty → 400.
        assert_eq!(
            run_no_core(&post("/whip/r", SDP, b"v=0\xff\xfe")).status,
            400
        );
        assert_eq!(run_no_core(&post("/whip/r", SDP, b" \r\n")).status, 400);
    }

    #[test]
    fn post_api_errors() {
        let cases: Vec<(ApiError, u16)> = vec![
            (
                ApiError::BadOffer("line one\r\nline two\x1b[31m".into()),
                400,
            ),
            (ApiError::Unsupported("two video tracks".into()), 422),
            (ApiError::AlreadyPublished, 409),
            (ApiError::NotFound, 404),
            (ApiError::AtCapacity, 503),
        ];
        for (e, status) in cases {
            let (resp, _) = run_with(&post("/whip/r", SDP, OFFER.as_bytes()), Ok(Err(e.clone())));
            assert_eq!(resp.status, status, "{e:?}");
            if status == 503 {
                assert_eq!(resp.header("Retry-After"), Some("5"));
            }
            if let ApiError::BadOffer(_) = e {
                assert_eq!(resp.body, b"bad offer: line one  line two [31m\n");
            }
        }
        let (resp, _) = run_with(
            &post("/whep/r", SDP, OFFER.as_bytes()),
            Err(CoreError::Busy),
        );
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("Retry-After"), Some("1"));
        // A wrong reply variant is an internal error, not a crash.
        let (resp, _) = run_with(
            &post("/whep/r", SDP, OFFER.as_bytes()),
            Ok(Ok(Reply::Deleted)),
        );
        assert_eq!(resp.status, 500);
        // A long reason is cut to one short line.
        let (resp, _) = run_with(
            &post("/whip/r", SDP, OFFER.as_bytes()),
            Ok(Err(ApiError::BadOffer("é".repeat(500)))),
        );
        assert_eq!(resp.status, 400);
    }

    #[test]
    fn delete_session() {
        let url = format!("/whep/room/{TOKEN}");
        let r = req("DELETE", &url, &[("If-Match", "\"stale\"")], b"");
        let (resp, seen) = run_with(&r, Ok(Ok(Reply::Deleted)));
        assert_eq!(resp.status, 200);
        match &seen[..] {
            [Command::DeleteSession { role, room, token }] => {
                assert_eq!(*role, Role::Subscriber);
                assert_eq!(room.as_str(), "room");
                assert_eq!(token.to_string(), TOKEN);
            }
            other => panic!("{other:?}"),
        }
        let (resp, seen) = run_with(
            &req(
                "DELETE",
                &format!("/whip/room/{}", TOKEN.to_uppercase()),
                &[],
                b"",
            ),
            Ok(Err(ApiError::NotFound)),
        );
        assert_eq!(resp.status, 404);
        assert!(matches!(
            &seen[..],
            [Command::DeleteSession {
                role: Role::Publisher,
                ..
            }]
        ));
        let (resp, _) = run_with(&req("DELETE", &url, &[], b""), Err(CoreError::Busy));
        assert_eq!(resp.status, 503);
        // Malformed tokens → 404 without asking the core; bad room → 400.
        for bad in [
            "/whip/room/xyz",
            "/whip/room/",
            &format!("/whip/room/{TOKEN}0"),
        ] {
            assert_eq!(
                run_no_core(&req("DELETE", bad, &[], b"")).status,
                404,
                "{bad}"
            );
        }
        assert_eq!(
            run_no_core(&req("DELETE", &format!("/whip/a b/{TOKEN}"), &[], b"")).status,
            400
        );
    }

    #[test]
    fn methods_not_allowed() {
        let session = format!("/whip/r/{TOKEN}");
        for (m, url, allow) in [
            ("PUT", "/whip/r", ENDPOINT_ALLOW),
            ("DELETE", "/whep/r", ENDPOINT_ALLOW),
            ("PATCH", "/whip/r", ENDPOINT_ALLOW),
            ("POST", session.as_str(), SESSION_ALLOW),
            ("POST", "/healthz", "GET, HEAD"),
            ("DELETE", "/api/rooms", ROOMS_ALLOW),
            ("PUT", "/api/rooms/r", ROOM_ALLOW),
            ("POST", "/metrics", "GET, HEAD"),
            ("get", "/healthz", "GET, HEAD"),
        ] {
            let resp = run_no_core(&req(m, url, &[], b""));
            assert_eq!(resp.status, 405, "{m} {url}");
            assert_eq!(resp.header("Allow"), Some(allow), "{m} {url}");
        }
    }

    #[test]
    fn unknown_paths() {
        for url in [
            "",
            "whip/r",
            "/whip",
            "/whip/r/t/x",
            "/api",
            "/api/rooms/r/x",
            "/WHIP/r",
            "/healthz/",
        ] {
            assert_eq!(
                run_no_core(&req("GET", url, &[], b"")).status,
                404,
                "{url:?}"
            );
        }
    }

    #[test]
    fn healthz() {
        let resp = run_no_core(&req("GET", "/healthz", &[], b""));
        assert_eq!((resp.status, &resp.body[..]), (200, &b"ok"[..]));
    }

    #[test]
    fn get_and_head_have_no_body() {
        for url in ["/whip/r".to_string(), format!("/whep/r/{TOKEN}")] {
            let resp = run_no_core(&req("GET", &url, &[], b""));
            assert_eq!(resp.status, 204, "{url}");
            assert!(resp.body.is_empty());
        }
        let resp = run_no_core(&req("HEAD", "/whep/r", &[], b""));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("Content-Type"), Some(SDP));
        assert!(resp.body.is_empty());
    }

    #[test]
    fn options_and_preflight() {
        // Plain OPTIONS on an endpoint: Accept-Post, methods, ICE links.
        let resp = run_no_core(&req("OPTIONS", "/whip/r", &[], b""));
        assert_eq!(resp.status, 204);
        assert_eq!(resp.header("Accept-Post"), Some("application/sdp"));
        assert_eq!(
            resp.header("Access-Control-Allow-Methods"),
            Some("POST, PATCH, DELETE, OPTIONS")
        );
        assert_eq!(resp.header_all("Link").count(), 2);
        assert_eq!(resp.header("Access-Control-Allow-Headers"), None);
        // Preflight: allow headers, never ICE links (no TURN credentials).
        let pre = req(
            "OPTIONS",
            "/whep/r",
            &[
                ("Access-Control-Request-Method", "POST"),
                ("Origin", "https://x"),
            ],
            b"",
        );
        let resp = run_no_core(&pre);
        assert_eq!(resp.status, 204);
        assert_eq!(
            resp.header("Access-Control-Allow-Headers"),
            Some("Authorization, Content-Type, If-Match, ETag")
        );
        assert_eq!(resp.header_all("Link").count(), 0);
        // Session URL.
        let resp = run_no_core(&req(
            "OPTIONS",
            &format!("/whip/r/{TOKEN}"),
            &[("access-control-request-method", "DELETE")],
            b"",
        ));
        assert_eq!(resp.status, 204);
        assert_eq!(
            resp.header("Access-Control-Allow-Methods"),
            Some(SESSION_CORS_METHODS)
        );
        assert_eq!(resp.header("Accept-Post"), None);
        assert!(resp.header("Access-Control-Allow-Headers").is_some());
        assert_eq!(resp.header_all("Link").count(), 0);
    }

    fn rooms() -> Vec<RoomInfo> {
        vec![
            RoomInfo {
                name: "a".into(),
                publisher_live: true,
                tracks: vec![TrackInfo {
                    kind: "video",
                    codec: "vp8".into(),
                    packets: 10,
                    bytes: 1000,
                }],
                viewers: 2,
                uptime_s: 1.5,
                recording: false,
            },
            RoomInfo {
                name: "b".into(),
                publisher_live: false,
                tracks: vec![],
                viewers: 0,
                uptime_s: 0.0,
                recording: false,
            },
        ]
    }

    #[test]
    fn room_api() {
        let (resp, seen) = run_with(
            &req("GET", "/api/rooms", &[], b""),
            Ok(Ok(Reply::Rooms(rooms()))),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert!(matches!(&seen[..], [Command::ListRooms]));
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        let rec_off = json!({"on": false, "files_open": 0, "files_failed": 0,
            "bytes_written": 0, "frames_written": 0, "frames_dropped": 0});
        assert_eq!(
            v,
            json!([
                {"name": "a", "publisher_live": true,
                 "tracks": [{"kind": "video", "codec": "vp8", "packets": 10, "bytes": 1000}],
                 "viewers": 2, "uptime_s": 1.5, "recording": rec_off},
                {"name": "b", "publisher_live": false, "tracks": [], "viewers": 0, "uptime_s": 0.0,
                 "recording": rec_off}
            ])
        );

        let (resp, _) = run_with(
            &req("GET", "/api/rooms/b", &[], b""),
            Ok(Ok(Reply::Rooms(rooms()))),
        );
        assert_eq!(resp.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["name"], "b");
        let (resp, _) = run_with(
            &req("GET", "/api/rooms/zz", &[], b""),
            Ok(Ok(Reply::Rooms(rooms()))),
        );
        assert_eq!(resp.status, 404);
        assert_eq!(
            run_no_core(&req("GET", "/api/rooms/a.b", &[], b"")).status,
            400
        );
        let (resp, _) = run_with(&req("GET", "/api/rooms", &[], b""), Err(CoreError::Busy));
        assert_eq!(resp.status, 503);

        let (resp, seen) = run_with(
            &req("DELETE", "/api/rooms/a", &[], b""),
            Ok(Ok(Reply::RoomClosed { sessions: 3 })),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&resp.body).unwrap(),
            json!({"closed": 3})
        );
        assert!(matches!(&seen[..], [Command::CloseRoom { room }] if room.as_str() == "a"));
        let (resp, _) = run_with(
            &req("DELETE", "/api/rooms/a", &[], b""),
            Ok(Err(ApiError::NotFound)),
        );
        assert_eq!(resp.status, 404);
    }

    #[test]
    fn one_line_is_bounded() {
        assert_eq!(one_line("a\nb\r\n"), "a b\n");
        let s = one_line(&"é".repeat(1000));
        assert!(s.len() <= MAX_ERROR_BODY + 1);
        assert!(s.ends_with('\n'));
    }
}
