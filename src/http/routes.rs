//! The routes: [`handle`] maps an [`HttpRequest`] to an [`HttpResponse`],
//! talking to the core only through the `core` closure.
//!
//! Contracts:
//! - Every response carries the CORS headers `Access-Control-Allow-Origin: *`
//!   and `Access-Control-Expose-Headers`.
//! - Every error body is one short line of `text/plain; charset=utf-8`; it never
//!   contains the raw room name, the token, or a newline.
//! - The core is called at most once per request, and only after the request
//!   passed every edge check (method, room name, token, content type, size).

use log::debug;
use serde_json::json;

use crate::auth::{Decision, Need};
use crate::channel::CoreError;
use crate::metrics;
use crate::sfu::command::{ApiError, Command, Reply, Role, RoomInfo};
use crate::sfu::id::{RoomName, SessionToken};

use super::extensions::{layer, sse_create, sse_get, sse_stream, LAYER_REL, SSE_REL};
use super::sse::{SseStart, SSE_EVENTS};
use super::types::{CoreFn, HttpConfig, HttpRequest, HttpResponse, RETRY_AFTER_CAPACITY, TEXT};

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
const JSON: &str = "application/json";
/// `WWW-Authenticate` realm.
const REALM: &str = "Bearer realm=\"wisp\"";

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
    /// `/api/drain` (cluster mode).
    Drain,
    /// `/api/cluster` (cluster mode).
    Cluster,
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
        (None, ["api", "drain"]) => Route::Drain,
        (None, ["api", "cluster"]) => Route::Cluster,
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
pub(super) fn deny(
    req: &HttpRequest,
    cfg: &HttpConfig,
    need: Need,
    room: Option<&RoomName>,
) -> Option<HttpResponse> {
    if need == Need::View && is_cluster_pull(req, cfg) {
        return None;
    }
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

/// Whether `req` carries the cluster token (`WISP_CLUSTER_TOKEN`): another
/// node pulling a room, accepted whatever the view tokens say.
fn is_cluster_pull(req: &HttpRequest, cfg: &HttpConfig) -> bool {
    let Some(token) = cfg
        .cluster
        .as_ref()
        .and_then(|c| c.config.cluster_token.as_ref())
    else {
        return false;
    };
    let Some(value) = req.header("Authorization").map(str::trim) else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("Bearer") && token.matches(rest.trim_start())
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
    // The browser page (GET / and its static files) is served by [`super::page`].
    if let Some(resp) = super::page::serve(req) {
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
                    Ok(Ok(Reply::Stats(s))) => {
                        let mut text = metrics::render(&s, &cfg.counters, cfg.recorder.as_deref());
                        if let Some(node) = &cfg.cluster {
                            metrics::render_cluster(&mut text, &super::cluster::figures(node));
                        }
                        HttpResponse::new(200).body(metrics::CONTENT_TYPE, text)
                    }
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
                        match &cfg.cluster {
                            Some(node) => super::cluster::post(req, cfg, core, role, room, node),
                            None => post_offer(req, cfg, core, role, room),
                        }
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
        Route::Drain | Route::Cluster => {
            super::cluster::admin(req, cfg, route(&req.url) == Route::Drain)
        }
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
pub(super) fn post_offer(
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
            // Another node pulling the room: its viewers' one session here.
            edge: is_cluster_pull(req, cfg),
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

/// OPTIONS on a WHIP/WHEP or room API URL.
///
/// A preflight (has `Access-Control-Request-Method`) gets the CORS allow
/// headers, never needs auth and never carries ICE server links; a plain
/// OPTIONS gets the links when `links` is true (an endpoint, and the caller
/// is authorised: clients such as whip-web-client read them before POSTing).
pub(super) fn options(
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
pub(super) fn from_failure(
    r: Result<Result<Reply, ApiError>, CoreError>,
    what: &str,
) -> HttpResponse {
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

pub(super) fn not_allowed(allow: &str) -> HttpResponse {
    HttpResponse::error(405, "method not allowed").with("Allow", allow)
}

pub(super) fn room_name(raw: &str) -> Option<RoomName> {
    RoomName::new(raw)
}

pub(super) fn bad_room(raw: &str) -> HttpResponse {
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
    let mut v = json!({
        "name": r.name,
        "publisher_live": r.publisher_live,
        "tracks": tracks,
        "viewers": r.viewers,
        "uptime_s": r.uptime_s,
        "recording": recording_json(r, cfg),
    });
    if let (Some(node), serde_json::Value::Object(m)) = (&cfg.cluster, &mut v) {
        let (origin, relayed) = super::cluster::room_origin(node, r);
        m.insert("origin".into(), origin.into());
        m.insert("relayed".into(), relayed.into());
    }
    v
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
mod tests;
