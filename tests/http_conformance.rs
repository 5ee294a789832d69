//! HTTP-level conformance to WHIP (RFC 9725) and WHEP, against
//! `wisp::http::handle` with a fake core: one test (or a few) per server
//! rule, numbered `rule_NN` after the team's checklist of the two specs.
//! Rules that live in the SDP answer (8–13) or in the media path (27) are
//! covered by the core's tests; the WHEP extensions wisp implements (server-
//! sent events, layer selection) by tests/whep_extensions.rs.

mod support;

use support::req;
use wisp::auth::{self, Auth, Token};
use wisp::http::{handle, CoreError, HttpConfig, HttpRequest, HttpResponse};
use wisp::sfu::{ApiError, Command, Reply, Role, SessionToken, Stats};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
const FRAG: &str = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const EXPOSE: &str = "Location, ETag, Link, Accept-Patch, Accept-Post";
const STUN_LINK: &str = "<stun:stun.example.net:3478>; rel=\"ice-server\"";
const TURN_LINK: &str = "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; \
     username=\"u1\"; credential=\"p1\"; credential-type=\"password\"";

type CoreResult = Result<Result<Reply, ApiError>, CoreError>;

fn cfg() -> HttpConfig {
    HttpConfig::new(vec![STUN_LINK.into(), TURN_LINK.into()])
}

/// Tokens: publish "pub", view "view", admin "admin"; room "vip" has its own.
fn locked() -> HttpConfig {
    let t = |s: &str| Some(Token::new(s).unwrap());
    let rooms =
        auth::parse_tokens_file(r#"{"vip": {"publish": "vip-pub", "view": "vip-view"}}"#).unwrap();
    cfg().with_auth(Auth::new(t("pub"), t("view"), t("admin")).with_rooms(rooms))
}

fn session(role: &str) -> String {
    format!("/{role}/room1/{TOKEN}")
}

/// Every response carries the CORS headers.
fn check_cors(r: &HttpResponse) {
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"), "{r:?}");
    assert_eq!(
        r.header("Access-Control-Expose-Headers"),
        Some(EXPOSE),
        "{r:?}"
    );
}

/// Run with a core that answers `answer` once; returns the response and the command.
fn run(c: &HttpConfig, r: &HttpRequest, answer: CoreResult) -> (HttpResponse, Option<Command>) {
    let mut seen = None;
    let mut answer = Some(answer);
    let resp = handle(r, c, &mut |cmd| {
        assert!(seen.is_none(), "core called twice");
        seen = Some(cmd);
        answer.take().unwrap()
    });
    check_cors(&resp);
    (resp, seen)
}

/// Run with a core that must not be called.
fn edge(c: &HttpConfig, r: &HttpRequest) -> HttpResponse {
    let resp = handle(r, c, &mut |cmd| panic!("core called with {cmd:?}"));
    check_cors(&resp);
    resp
}

fn created() -> CoreResult {
    Ok(Ok(Reply::Created {
        token: SessionToken::parse(TOKEN).unwrap(),
        answer: "v=0\r\nanswer\r\n".into(),
        etag: "\"ice-1\"".into(),
    }))
}

fn patched(fragment: Option<&str>, etag: Option<&str>) -> CoreResult {
    Ok(Ok(Reply::Patched {
        fragment: fragment.map(str::to_string),
        etag: etag.map(str::to_string),
    }))
}

fn post(url: &str) -> HttpRequest {
    req("POST", url, &[("Content-Type", "application/sdp")], OFFER)
}

fn patch(url: &str, headers: &[(&str, &str)]) -> HttpRequest {
    let mut h = vec![("Content-Type", SDPFRAG)];
    h.extend_from_slice(headers);
    req("PATCH", url, &h, FRAG)
}

// ---------------------------------------------------------------- HTTP basics

#[test]
fn rule_01_get_on_endpoint_and_session_is_2xx_without_body() {
    for role in ["whip", "whep"] {
        for url in [format!("/{role}/room1"), session(role)] {
            let r = edge(&locked(), &req("GET", &url, &[], ""));
            assert!((200..300).contains(&r.status), "{url}: {}", r.status);
            assert!(r.body.is_empty(), "{url}");
        }
    }
}

#[test]
fn rule_02_plain_options_has_accept_post_and_ice_links() {
    for role in ["whip", "whep"] {
        let r = edge(&cfg(), &req("OPTIONS", &format!("/{role}/room1"), &[], ""));
        assert!(r.status == 200 || r.status == 204);
        assert_eq!(r.header("Accept-Post"), Some("application/sdp"));
        let methods = r.header("Access-Control-Allow-Methods").unwrap();
        for m in ["POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        assert_eq!(
            r.header_all("Link").collect::<Vec<_>>(),
            [STUN_LINK, TURN_LINK]
        );
    }
}

#[test]
fn rule_02_preflight_needs_no_auth_and_never_carries_links() {
    let pre = [
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
        ("Origin", "https://app.example"),
    ];
    for url in [
        "/whip/room1".to_string(),
        "/whep/vip".to_string(),
        session("whep"),
    ] {
        let r = edge(&locked(), &req("OPTIONS", &url, &pre, ""));
        assert!(r.status == 200 || r.status == 204, "{url}: {}", r.status);
        assert_eq!(r.header_all("Link").count(), 0, "{url}");
        let allowed = r.header("Access-Control-Allow-Headers").unwrap();
        for h in ["Authorization", "Content-Type", "If-Match", "ETag"] {
            assert!(allowed.contains(h), "{allowed}");
        }
    }
}

#[test]
fn rule_02_plain_options_links_only_for_authorised_callers() {
    let c = locked();
    let r = edge(&c, &req("OPTIONS", "/whip/room1", &[], ""));
    assert!(r.status == 200 || r.status == 204);
    assert_eq!(r.header_all("Link").count(), 0);
    let r = edge(
        &c,
        &req(
            "OPTIONS",
            "/whip/room1",
            &[("Authorization", "Bearer view")],
            "",
        ),
    );
    assert_eq!(r.header_all("Link").count(), 0);
    let r = edge(
        &c,
        &req(
            "OPTIONS",
            "/whip/room1",
            &[("Authorization", "Bearer pub")],
            "",
        ),
    );
    assert_eq!(r.header_all("Link").count(), 2);
}

#[test]
fn rule_02_session_options_advertise_patch() {
    let r = edge(&cfg(), &req("OPTIONS", &session("whip"), &[], ""));
    assert_eq!(r.header("Accept-Patch"), Some(SDPFRAG));
    assert!(r.header("Allow").unwrap().contains("PATCH"));
    assert!(r
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("PATCH"));
}

#[test]
fn rule_02_room_api_answers_preflight() {
    let pre = [
        ("Access-Control-Request-Method", "DELETE"),
        ("Origin", "https://x"),
    ];
    let r = edge(&locked(), &req("OPTIONS", "/api/rooms/room1", &pre, ""));
    assert!(r.status == 200 || r.status == 204);
    assert!(r
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("DELETE"));
    assert!(r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));
    let r = edge(&locked(), &req("OPTIONS", "/api/rooms", &pre, ""));
    assert!(r.status == 200 || r.status == 204);
}

#[test]
fn rule_03_head_on_whep_endpoint() {
    let r = edge(&locked(), &req("HEAD", "/whep/room1", &[], ""));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert!(r.body.is_empty());
}

#[test]
fn rule_04_error_bodies_are_one_short_line() {
    let (r, _) = run(
        &cfg(),
        &post("/whip/room1"),
        Ok(Err(ApiError::BadOffer("a\r\nb".into()))),
    );
    assert_eq!(r.status, 400);
    let body = String::from_utf8(r.body).unwrap();
    assert_eq!(body.matches('\n').count(), 1, "{body:?}");
}

// ---------------------------------------------------------------- POST

#[test]
fn rule_06_post_gives_201_sdp_location_and_etag() {
    for (role, kind) in [("whip", Role::Publisher), ("whep", Role::Subscriber)] {
        let (r, cmd) = run(&cfg(), &post(&format!("/{role}/room1")), created());
        assert_eq!(r.status, 201);
        assert_eq!(r.header("Content-Type"), Some("application/sdp"));
        assert_eq!(r.header("Location"), Some(session(role).as_str()));
        assert_eq!(r.body, b"v=0\r\nanswer\r\n");
        match (kind, cmd) {
            (Role::Publisher, Some(Command::Publish { offer, .. }))
            | (Role::Subscriber, Some(Command::Subscribe { offer, .. })) => {
                assert_eq!(offer, OFFER)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn rule_07_wrong_content_type_is_415_with_accept() {
    for ct in ["text/plain", "application/json", SDPFRAG] {
        let r = edge(
            &cfg(),
            &req("POST", "/whip/room1", &[("Content-Type", ct)], OFFER),
        );
        assert_eq!(r.status, 415, "{ct}");
        assert_eq!(r.header("Accept"), Some("application/sdp"));
    }
}

#[test]
fn rule_07_media_type_case_insensitive_parameters_ignored() {
    for ct in [
        "APPLICATION/SDP",
        "application/sdp;charset=UTF-8",
        " Application/Sdp ; x=1",
    ] {
        let (r, _) = run(
            &cfg(),
            &req("POST", "/whep/room1", &[("Content-Type", ct)], OFFER),
            created(),
        );
        assert_eq!(r.status, 201, "{ct}");
    }
}

#[test]
fn rule_07_malformed_sdp_400_oversized_413() {
    let (r, _) = run(
        &cfg(),
        &post("/whip/room1"),
        Ok(Err(ApiError::BadOffer("no m-lines".into()))),
    );
    assert_eq!(r.status, 400);
    let mut big = post("/whip/room1");
    big.body = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(edge(&cfg(), &big).status, 413);
}

#[test]
fn rule_10_unsupported_tracks_422() {
    let (r, _) = run(
        &cfg(),
        &post("/whip/room1"),
        Ok(Err(ApiError::Unsupported("two video tracks".into()))),
    );
    assert_eq!(r.status, 422);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("two video tracks"));
}

#[test]
fn rule_14_extension_links_only_for_implemented_extensions() {
    // WHEP: exactly the two implemented extensions (server-sent events with
    // the events wisp sends, and layer selection), each on its own line.
    let (r, _) = run(&cfg(), &post("/whep/room1"), created());
    let ext: Vec<_> = r
        .header_all("Link")
        .filter(|l| l.contains("urn:ietf:params:"))
        .collect();
    assert_eq!(ext.len(), 2, "{r:?}");
    assert!(ext[0].contains("rel=\"urn:ietf:params:whep:ext:core:server-sent-events\""));
    assert!(ext[0].contains("events=\"active,inactive,layers,viewercount\""));
    assert!(ext[1].ends_with("/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\""));
    // WHIP: none.
    let (r, _) = run(&cfg(), &post("/whip/room1"), created());
    for link in r.header_all("Link") {
        assert!(!link.contains("urn:ietf:params:"), "{link}");
    }
}

#[test]
fn rule_15_ice_servers_one_link_header_each_values_quoted() {
    let (r, _) = run(&cfg(), &post("/whip/room1"), created());
    let links: Vec<_> = r.header_all("Link").collect();
    assert_eq!(links, [STUN_LINK, TURN_LINK]);
    assert!(links.iter().all(|l| !l.contains(", <")));
}

#[test]
fn rule_16_overload_503_with_retry_after() {
    let (r, _) = run(&cfg(), &post("/whip/room1"), Ok(Err(ApiError::AtCapacity)));
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")));
    let (r, _) = run(&cfg(), &post("/whip/room1"), Err(CoreError::Busy));
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")));
}

#[test]
fn rule_18_second_publisher_409() {
    let (r, _) = run(
        &cfg(),
        &post("/whip/room1"),
        Ok(Err(ApiError::AlreadyPublished)),
    );
    assert_eq!(r.status, 409);
}

// ---------------------------------------------------------------- Auth

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn rule_19_missing_token_401_with_www_authenticate() {
    let c = locked();
    let del = req("DELETE", &session("whip"), &[], "");
    for r in [
        post("/whip/room1"),
        post("/whep/room1"),
        patch(&session("whep"), &[]),
        del,
    ] {
        let resp = edge(&c, &r);
        assert_eq!(resp.status, 401, "{} {}", r.method, r.url);
        assert_eq!(
            resp.header("WWW-Authenticate"),
            Some("Bearer realm=\"wisp\"")
        );
    }
    // Another scheme counts as no Bearer credentials.
    let mut r = post("/whip/room1");
    r.headers
        .push(("Authorization".into(), "Basic dTpw".into()));
    assert_eq!(edge(&c, &r).status, 401);
}

#[test]
fn rule_19_wrong_token_401_invalid_token() {
    let mut r = post("/whip/room1");
    r.headers.push(("Authorization".into(), bearer("guess")));
    let resp = edge(&locked(), &r);
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.header("WWW-Authenticate"),
        Some("Bearer realm=\"wisp\", error=\"invalid_token\"")
    );
    assert!(!String::from_utf8(resp.body).unwrap().contains("guess"));
}

#[test]
fn rule_19_token_for_another_role_or_stream_403() {
    let c = locked();
    for (url, tok) in [
        ("/whip/room1", "view"),
        ("/whep/room1", "pub"),
        ("/whip/vip", "pub"),
        ("/whip/room1", "vip-pub"),
    ] {
        let mut r = post(url);
        r.headers.push(("Authorization".into(), bearer(tok)));
        assert_eq!(edge(&c, &r).status, 403, "{url} {tok}");
    }
}

#[test]
fn rule_19_right_token_passes_and_admin_token_works_everywhere() {
    let c = locked();
    for (url, tok) in [
        ("/whip/room1", "pub"),
        ("/whep/room1", "view"),
        ("/whip/vip", "vip-pub"),
        ("/whep/vip", "vip-view"),
        ("/whip/vip", "admin"),
        ("/whep/room1", "admin"),
    ] {
        let mut r = post(url);
        r.headers.push(("Authorization".into(), bearer(tok)));
        assert_eq!(run(&c, &r, created()).0.status, 201, "{url} {tok}");
    }
    let auth = [("Authorization", "Bearer view")];
    let r = req("DELETE", &session("whep"), &auth, "");
    assert_eq!(run(&c, &r, Ok(Ok(Reply::Deleted))).0.status, 200);
}

#[test]
fn rule_19_no_tokens_configured_means_open() {
    let (r, _) = run(&cfg(), &post("/whip/room1"), created());
    assert_eq!(r.status, 201);
    let (r, _) = run(
        &cfg(),
        &req("DELETE", "/api/rooms/room1", &[], ""),
        Ok(Ok(Reply::RoomClosed { sessions: 0 })),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn rule_19_auth_is_checked_before_content_type() {
    let r = req(
        "POST",
        "/whip/room1",
        &[("Content-Type", "text/plain")],
        OFFER,
    );
    assert_eq!(edge(&locked(), &r).status, 401);
}

#[test]
fn room_api_and_metrics_need_admin_when_an_admin_token_is_set() {
    let c = locked();
    for (m, url) in [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/room1"),
        ("DELETE", "/api/rooms/room1"),
        ("GET", "/metrics"),
    ] {
        assert_eq!(edge(&c, &req(m, url, &[], "")).status, 401, "{m} {url}");
        let pub_tok = [("Authorization", "Bearer pub")];
        assert_eq!(
            edge(&c, &req(m, url, &pub_tok, "")).status,
            403,
            "{m} {url}"
        );
    }
    let admin = [("Authorization", "Bearer admin")];
    let (r, cmd) = run(
        &c,
        &req("DELETE", "/api/rooms/room1", &admin, ""),
        Ok(Ok(Reply::RoomClosed { sessions: 2 })),
    );
    assert_eq!(r.status, 200);
    assert!(matches!(cmd, Some(Command::CloseRoom { .. })));
    let (r, _) = run(
        &c,
        &req("GET", "/api/rooms", &admin, ""),
        Ok(Ok(Reply::Rooms(vec![]))),
    );
    assert_eq!(r.status, 200);
    // /healthz is always open.
    assert_eq!(edge(&c, &req("GET", "/healthz", &[], "")).status, 200);
}

#[test]
fn metrics_endpoint_prometheus_text() {
    let c = cfg();
    c.counters.record(201);
    let stats = Stats {
        rooms: 2,
        ..Stats::default()
    };
    let (r, cmd) = run(
        &c,
        &req("GET", "/metrics", &[], ""),
        Ok(Ok(Reply::Stats(Box::new(stats)))),
    );
    assert!(matches!(cmd, Some(Command::Stats)));
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("# TYPE wisp_rooms gauge\nwisp_rooms 2\n"),
        "{text}"
    );
    assert!(
        text.contains("wisp_http_requests_total{code=\"201\"} 1\n"),
        "{text}"
    );
    let (r, _) = run(&c, &req("GET", "/metrics", &[], ""), Err(CoreError::Busy));
    assert_eq!(r.status, 503);
}

// ---------------------------------------------------------------- PATCH

#[test]
fn rule_20_patch_wrong_content_type_415_with_accept_patch() {
    for ct in ["application/sdp", "application/json", "text/plain"] {
        let r = req(
            "PATCH",
            &session("whip"),
            &[("Content-Type", ct), ("If-Match", "\"e\"")],
            FRAG,
        );
        let resp = edge(&cfg(), &r);
        assert_eq!(resp.status, 415, "{ct}");
        assert_eq!(resp.header("Accept-Patch"), Some(SDPFRAG));
    }
    let r = req("PATCH", &session("whip"), &[("If-Match", "\"e\"")], FRAG);
    assert_eq!(edge(&cfg(), &r).status, 415);
}

#[test]
fn rule_20_patch_media_type_case_insensitive() {
    let r = req(
        "PATCH",
        &session("whep"),
        &[
            (
                "Content-Type",
                "Application/Trickle-ICE-Sdpfrag; charset=utf-8",
            ),
            ("If-Match", "\"e\""),
        ],
        FRAG,
    );
    assert_eq!(run(&cfg(), &r, patched(None, None)).0.status, 204);
}

#[test]
fn rule_20_malformed_fragment_400_unknown_session_404() {
    let r = patch(&session("whip"), &[("If-Match", "\"e\"")]);
    let (resp, _) = run(
        &cfg(),
        &r,
        Ok(Err(ApiError::BadFragment("no ufrag".into()))),
    );
    assert_eq!(resp.status, 400);
    let (resp, _) = run(&cfg(), &r, Ok(Err(ApiError::NotFound)));
    assert_eq!(resp.status, 404);
    // A malformed session token never reaches the core.
    assert_eq!(
        edge(&cfg(), &patch("/whip/room1/zz", &[("If-Match", "*")])).status,
        404
    );
    // Not UTF-8 → 400; too large → 413; both without the core.
    let mut bad = patch(&session("whip"), &[("If-Match", "*")]);
    bad.body = b"a=ice-ufrag:\xff\r\n".to_vec();
    assert_eq!(edge(&cfg(), &bad).status, 400);
    bad.body = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(edge(&cfg(), &bad).status, 413);
}

#[test]
fn rule_20_patch_command_carries_role_room_token_and_fragment() {
    let (_, cmd) = run(
        &cfg(),
        &patch(&session("whep"), &[("If-Match", "\"ice-1\"")]),
        patched(None, None),
    );
    match cmd {
        Some(Command::Patch {
            role,
            room,
            token,
            if_match,
            fragment,
        }) => {
            assert_eq!(role, Role::Subscriber);
            assert_eq!(room.as_str(), "room1");
            assert_eq!(token.to_string(), TOKEN);
            assert_eq!(if_match.as_deref(), Some("\"ice-1\""));
            assert_eq!(fragment, FRAG);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rule_23_missing_if_match_428_stale_412() {
    let (r, cmd) = run(
        &cfg(),
        &patch(&session("whip"), &[]),
        Ok(Err(ApiError::PreconditionRequired)),
    );
    assert_eq!(r.status, 428);
    assert!(matches!(cmd, Some(Command::Patch { if_match: None, .. })));
    let (r, _) = run(
        &cfg(),
        &patch(&session("whip"), &[("If-Match", "\"old\"")]),
        Ok(Err(ApiError::PreconditionFailed)),
    );
    assert_eq!(r.status, 412);
}

#[test]
fn rule_23_etag_request_header_is_used_when_if_match_is_absent() {
    let (_, cmd) = run(
        &cfg(),
        &patch(&session("whip"), &[("ETag", "\"ice-1\"")]),
        patched(None, None),
    );
    assert!(matches!(cmd, Some(Command::Patch { if_match: Some(t), .. }) if t == "\"ice-1\""));
    // If-Match wins when both are sent.
    let h = [("ETag", "\"other\""), ("If-Match", "\"ice-1\"")];
    let (_, cmd) = run(&cfg(), &patch(&session("whip"), &h), patched(None, None));
    assert!(matches!(cmd, Some(Command::Patch { if_match: Some(t), .. }) if t == "\"ice-1\""));
}

#[test]
fn rule_23_delete_ignores_if_match() {
    let r = req("DELETE", &session("whip"), &[("If-Match", "\"stale\"")], "");
    let (resp, cmd) = run(&cfg(), &r, Ok(Ok(Reply::Deleted)));
    assert_eq!(resp.status, 200);
    assert!(matches!(cmd, Some(Command::DeleteSession { .. })));
}

#[test]
fn rule_24_trickle_204_no_body_no_etag() {
    let (r, _) = run(
        &cfg(),
        &patch(&session("whip"), &[("If-Match", "\"ice-1\"")]),
        patched(None, None),
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("ETag"), None);
    assert_eq!(r.header("Content-Type"), None);
}

#[test]
fn rule_25_ice_restart_200_sdpfrag_and_new_etag() {
    let answer = "a=ice-ufrag:srv2\r\na=ice-pwd:newpassword012345678901\r\n";
    for tag in ["*", "\"*\""] {
        let (r, cmd) = run(
            &cfg(),
            &patch(&session("whep"), &[("If-Match", tag)]),
            patched(Some(answer), Some("\"ice-2\"")),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(SDPFRAG));
        assert_eq!(r.header("ETag"), Some("\"ice-2\""));
        assert_eq!(r.body, answer.as_bytes());
        // `*` and `"*"` reach the core verbatim; it accepts both.
        assert!(matches!(cmd, Some(Command::Patch { if_match: Some(t), .. }) if t == tag));
    }
}

#[test]
fn rule_25_failed_restart_is_an_error_code() {
    let (r, _) = run(
        &cfg(),
        &patch(&session("whip"), &[("If-Match", "*")]),
        Ok(Err(ApiError::Unsupported("restart not possible".into()))),
    );
    assert_eq!(r.status, 422);
}

// ---------------------------------------------------------------- Teardown

#[test]
fn rule_26_delete_200_repeat_404() {
    for role in ["whip", "whep"] {
        let r = req("DELETE", &session(role), &[], "");
        assert_eq!(run(&cfg(), &r, Ok(Ok(Reply::Deleted))).0.status, 200);
        assert_eq!(run(&cfg(), &r, Ok(Err(ApiError::NotFound))).0.status, 404);
    }
}

#[test]
fn unknown_paths_404_wrong_methods_405_with_allow() {
    assert_eq!(edge(&cfg(), &req("GET", "/nope", &[], "")).status, 404);
    let r = edge(&cfg(), &req("PUT", &session("whip"), &[], ""));
    assert_eq!(r.status, 405);
    assert!(r.header("Allow").unwrap().contains("PATCH"));
    let r = edge(&cfg(), &req("PATCH", "/whip/room1", &[], ""));
    assert_eq!(r.status, 405);
}
