//! The WHEP extension routes wisp advertises on a viewer's 201: server-sent
//! events (create, stream, delete) and layer selection.

use serde_json::json;

use crate::auth::Need;
use crate::sfu::command::{ApiError, Command, Reply, Role};
use crate::sfu::id::{RoomName, SessionToken};

use super::routes::{bad_room, deny, from_failure, not_allowed, options, room_name, Handled};
use super::sse::{AttachError, EventSet, SseStart};
use super::types::{CoreFn, HttpConfig, HttpRequest, HttpResponse, RETRY_AFTER_CAPACITY};

/// `rel` of the WHEP server-sent events extension.
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
/// `rel` of the WHEP layer selection extension.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";
const SSE_ALLOW: &str = "POST, OPTIONS";
const SSE_STREAM_ALLOW: &str = "GET, DELETE, OPTIONS";
const LAYER_ALLOW: &str = "POST, OPTIONS";

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
pub(super) fn sse_create(
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
pub(super) fn sse_get(
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
pub(super) fn sse_stream(
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
pub(super) fn layer(
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
