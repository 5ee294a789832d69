//! Unit tests of the routes.

use super::*;
use crate::http::types::{one_line, CORS_EXPOSE, DEFAULT_BODY_LIMIT, MAX_ERROR_BODY};
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
    let r = HttpRequest::new(method, url).with_body(body);
    headers.iter().fold(r, |r, (k, v)| r.with_header(k, v))
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
        assert!(matches!(&seen[..], [Command::Subscribe { room, .. }] if room.as_str() == "r_2-x"));
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
fn cluster_routes_are_404_on_a_single_node() {
    for (m, url) in [
        ("POST", "/api/drain"),
        ("DELETE", "/api/drain"),
        ("GET", "/api/cluster"),
    ] {
        let resp = run_no_core(&req(m, url, &[], b""));
        assert_eq!(resp.status, 404, "{m} {url}");
        check_invariants(&resp);
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
            relayed: false,
        },
        RoomInfo {
            name: "b".into(),
            publisher_live: false,
            tracks: vec![],
            viewers: 0,
            uptime_s: 0.0,
            recording: false,
            relayed: false,
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
