//! `http_request`: arbitrary requests through [`crate::http::handle`] with a
//! fake core that answers plausibly (or with errors carrying hostile text).

use std::collections::HashMap;

use crate::auth::{Auth, RoomTokens, Token};
use crate::http::{self, CoreError, HttpConfig, HttpRequest};
use crate::sfu::{ApiError, Command, Reply, RoomInfo, SessionToken, TrackInfo};

use super::Tape;

const METHODS: [&str; 9] = [
    "GET", "POST", "PATCH", "DELETE", "OPTIONS", "HEAD", "PUT", "post", "CONNECT",
];

/// Common pieces, so the fuzzer reaches routes without guessing them.
const PATHS: [&str; 8] = [
    "/whip/",
    "/whep/",
    "/api/rooms",
    "/api/rooms/",
    "/metrics",
    "/healthz",
    "/",
    "/whip/r/00112233445566778899aabbccddeeff",
];
const HEADERS: [&str; 8] = [
    "Content-Type",
    "Authorization",
    "If-Match",
    "ETag",
    "Access-Control-Request-Method",
    "Content-Length",
    "Transfer-Encoding",
    "Origin",
];

fn config(auth_mode: u8) -> HttpConfig {
    let links = vec![
        "<stun:stun.example.net:3478>; rel=\"ice-server\"".to_string(),
        "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; \
         credential=\"p\"; credential-type=\"password\""
            .to_string(),
    ];
    let cfg = HttpConfig::new(links);
    let token = |s: &str| Some(Token::new(s).expect("token"));
    match auth_mode % 3 {
        0 => cfg,
        1 => cfg.with_auth(Auth::new(
            token("pubsecret"),
            token("viewsecret"),
            token("adminsecret"),
        )),
        _ => {
            let rooms =
                crate::auth::parse_tokens_file("r publish=roomsecret view=roomview record=1\n")
                    .unwrap_or_else(|_| HashMap::<String, RoomTokens>::new());
            cfg.with_auth(Auth::new(token("pubsecret"), None, None).with_rooms(rooms))
        }
    }
}

/// The fake core: `pick` selects a plausible reply for the command, or an
/// error whose text comes from the input (CR/LF, long, non-ASCII).
fn fake_core(cmd: &Command, pick: u8, hostile: &str) -> Result<Result<Reply, ApiError>, CoreError> {
    let token = SessionToken::parse("00112233445566778899aabbccddeeff").expect("token");
    let err = match pick % 12 {
        0 => return Err(CoreError::Busy),
        1 => ApiError::BadOffer(hostile.to_string()),
        2 => ApiError::Unsupported(hostile.to_string()),
        3 => ApiError::AlreadyPublished,
        4 => ApiError::NotFound,
        5 => ApiError::AtCapacity,
        6 => ApiError::BadFragment(hostile.to_string()),
        7 => ApiError::PreconditionRequired,
        8 => ApiError::PreconditionFailed,
        9 => {
            // A reply of the wrong kind: the handler must answer 500, not panic.
            return Ok(Ok(Reply::Done));
        }
        _ => {
            let reply = match cmd {
                Command::Publish { offer, .. }
                | Command::Subscribe { offer, .. }
                | Command::SubscribeRelayed { offer, .. } => Reply::Created {
                    token,
                    answer: format!("v=0\r\n{}\r\n", offer.len()),
                    etag: "\"0011aabb\"".into(),
                },
                Command::Patch { fragment, .. } => Reply::Patched {
                    fragment: (pick & 0x80 != 0)
                        .then(|| format!("a=ice-ufrag:{}\r\n", fragment.len())),
                    etag: (pick & 0x40 != 0).then(|| "\"ffee\"".to_string()),
                },
                Command::DeleteSession { .. } => Reply::Deleted,
                Command::CloseRoom { .. } => Reply::RoomClosed {
                    sessions: usize::from(pick),
                },
                Command::ListRooms => Reply::Rooms(vec![RoomInfo {
                    name: "r".into(),
                    publisher_live: pick & 1 != 0,
                    tracks: vec![TrackInfo {
                        kind: "video",
                        codec: "vp8".into(),
                        packets: u64::from(pick),
                        bytes: 1000,
                    }],
                    viewers: 2,
                    uptime_s: 1.5,
                    recording: false,
                    relayed: pick & 2 != 0,
                }]),
                Command::Stats => Reply::Stats(Box::default()),
                Command::RequestKeyframe { .. } => Reply::Done,
                Command::PinLayer { .. } => Reply::Done,
                Command::ViewerState { .. } => Reply::ViewerState(Box::default()),
                // The relay driver's commands; the HTTP side never sends them.
                Command::Pull { .. } | Command::PullAnswer { .. } | Command::PullFailed { .. } => {
                    Reply::Done
                }
            };
            return Ok(Ok(reply));
        }
    };
    Ok(Err(err))
}

/// Decode one request from the input and check the response's shape.
///
/// Input: method byte, auth-mode byte, core-reply byte, then 0x00-separated
/// fields: a path prefix selector byte + path text, then header fields
/// (`selector byte` + value, or `name:value` text when the selector is ≥ 8),
/// an empty field, and the rest is the body.
pub fn http_request(data: &[u8]) {
    let mut t = Tape(data);
    let method = METHODS
        .get(usize::from(t.byte() % 10))
        .map_or_else(|| "GET".to_string(), |m| m.to_string());
    let cfg = config(t.byte());
    let pick = t.byte();
    let path_sel = t.byte();
    let tail = t.text();
    let url = match PATHS.get(usize::from(path_sel % 10)) {
        Some(p) => format!("{p}{tail}"),
        None => tail,
    };
    let mut headers = Vec::new();
    for _ in 0..32 {
        let f = t.field();
        let Some((&sel, rest)) = f.split_first() else {
            break;
        };
        let value = String::from_utf8_lossy(rest).into_owned();
        match HEADERS.get(usize::from(sel)) {
            Some(name) => headers.push((name.to_string(), value)),
            None => match value.split_once(':') {
                Some((k, v)) => headers.push((k.to_string(), v.trim().to_string())),
                None => headers.push((value, String::new())),
            },
        }
    }
    let body = t.0.to_vec();
    let hostile: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    let req = HttpRequest {
        method,
        url,
        headers,
        body,
    };
    let mut calls = 0;
    let resp = http::handle(&req, &cfg, &mut |cmd| {
        calls += 1;
        fake_core(&cmd, pick, &hostile)
    });
    assert!(calls <= 1, "the core was called {calls} times");
    assert!(
        (100..600).contains(&resp.status),
        "status {} for {req:?}",
        resp.status
    );
    for (k, v) in &resp.headers {
        assert!(
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "bad header name {k:?}"
        );
        assert!(
            !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
            "CR/LF/NUL in header {k}: {v:?}"
        );
    }
    if resp.status >= 400 {
        let body = std::str::from_utf8(&resp.body).expect("error bodies are UTF-8");
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1 && !body.contains('\r'),
            "error body is not one line: {body:?}"
        );
        assert!(body.len() <= 201, "error body too long: {}", body.len());
        assert_eq!(
            resp.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
    }
    if resp.status == 503 && calls == 1 {
        assert!(
            resp.header("Retry-After").is_some(),
            "503 without Retry-After"
        );
    }
    if resp.status == 201 {
        let loc = resp.header("Location").expect("201 has a Location");
        assert!(
            loc.starts_with("/whip/") || loc.starts_with("/whep/"),
            "{loc}"
        );
    }
    if resp.status == 204 {
        assert!(resp.body.is_empty(), "204 with a body");
    }
}
