//! The WHEP extensions wisp implements and advertises with `Link` headers:
//! server-sent events (`active`, `inactive`, `layers`, `viewercount`) and
//! layer selection.
//!
//! Three levels: `wisp::http::handle` with a fake core (routes, status codes,
//! bounds); the handler over the real core on the deterministic TestNet
//! (pinning moves the forwarded layer, the state matches); and the real
//! binary over TCP (events stream, end on DELETE and with the session).

mod common;
mod realnet;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestNet;
use serde_json::{json, Value};
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;
use support::sse::Events;
use support::{req, Resp};
use wisp::auth::{Auth, Token};
use wisp::http::{
    self, CoreError, EventSet, Handled, HttpConfig, HttpRequest, HttpResponse, SseState, SseStreams,
};
use wisp::sfu::command::{LayerState, ViewerState};
use wisp::sfu::{ApiError, Command, Reply, Role};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
type CoreResult = Result<Result<Reply, ApiError>, CoreError>;

fn json_post(url: &str, body: &str) -> HttpRequest {
    req("POST", url, &[("Content-Type", "application/json")], body)
}

/// Run the handler with a core that answers `answer` (at most once) and
/// records what it was asked.
fn run(cfg: &HttpConfig, r: &HttpRequest, answer: CoreResult) -> (HttpResponse, Vec<Command>) {
    let mut seen = vec![];
    let mut answer = Some(answer);
    let resp = http::handle(r, cfg, &mut |c| {
        seen.push(c);
        answer.take().expect("core called twice")
    });
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    (resp, seen)
}

fn state(active: bool, viewers: usize) -> ViewerState {
    ViewerState {
        publisher_active: active,
        viewers,
        video_mline: Some(1),
        layers: vec![
            LayerState {
                rid: "h".into(),
                bitrate: 2_000_000,
                active: true,
                width: Some(1280),
                height: Some(720),
            },
            LayerState {
                rid: "l".into(),
                bitrate: 150_000,
                active: true,
                ..LayerState::default()
            },
        ],
        current: Some("l".into()),
        target: Some("l".into()),
        pinned: None,
        estimate: Some(400_000),
    }
}

fn viewer_state(active: bool, viewers: usize) -> CoreResult {
    Ok(Ok(Reply::ViewerState(Box::new(state(active, viewers)))))
}

fn base() -> String {
    format!("/whep/room1/{TOKEN}")
}

/// POST /sse through the handler: the stream's path.
fn create_stream(cfg: &HttpConfig, body: &str) -> String {
    let (r, seen) = run(
        cfg,
        &json_post(&format!("{}/sse", base()), body),
        viewer_state(true, 1),
    );
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(matches!(
        &seen[..],
        [Command::ViewerState {
            role: Role::Subscriber,
            ..
        }]
    ));
    let loc = r.header("Location").expect("Location").to_string();
    assert!(loc.starts_with(&format!("{}/sse/", base())), "{loc}");
    loc
}

// ---- HTTP with a fake core ----------------------------------------------------

#[test]
fn whep_201_advertises_both_extensions_and_whip_none() {
    let cfg = HttpConfig::default();
    let created = || {
        Ok(Ok(Reply::Created {
            token: wisp::sfu::SessionToken::parse(TOKEN).unwrap(),
            answer: "v=0\r\n".into(),
            etag: "\"e\"".into(),
        }))
    };
    let offer = |url: &str| {
        req(
            "POST",
            url,
            &[("Content-Type", "application/sdp")],
            "v=0\r\n",
        )
    };
    let (r, _) = run(&cfg, &offer("/whep/room1"), created());
    assert_eq!(r.status, 201);
    let links: Vec<_> = r.header_all("Link").collect();
    assert_eq!(
        links,
        [
            format!(
                "<{}/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; \
                 events=\"active,inactive,layers,viewercount\"",
                base()
            ),
            format!(
                "<{}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\"",
                base()
            ),
        ]
    );
    assert_eq!(r.header("Location"), Some(base().as_str()));
    let (r, _) = run(&cfg, &offer("/whip/room1"), created());
    assert_eq!(r.header_all("Link").count(), 0);
}

#[test]
fn sse_create_validates_events_and_session() {
    let cfg = HttpConfig::default();
    let url = format!("{}/sse", base());
    // All four events, a subset, none named (empty body = all).
    create_stream(&cfg, r#"["active","inactive","layers","viewercount"]"#);
    create_stream(&cfg, r#"["layers"]"#);
    create_stream(&cfg, "");
    // Unsupported or unadvertised events, and bodies that are not an array of names: 400, no core call.
    for body in [
        r#"["active","reconnect"]"#,
        r#"["scte35"]"#,
        r#"["nope"]"#,
        r#"{"events":["active"]}"#,
        r#"[1]"#,
        "not json",
    ] {
        let resp = http::handle(&json_post(&url, body), &cfg, &mut |c| {
            panic!("core called with {c:?}")
        });
        assert_eq!(resp.status, 400, "{body}");
        assert!(!String::from_utf8_lossy(&resp.body).contains('\r'));
    }
    // The session must exist.
    let (r, _) = run(&cfg, &json_post(&url, "[]"), Ok(Err(ApiError::NotFound)));
    assert_eq!(r.status, 404);
    let (r, _) = run(&cfg, &json_post(&url, "[]"), Err(CoreError::Busy));
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")));
    // Bad token: 404 without the core; bad room: 400; WHIP has no extensions.
    for (u, status) in [
        ("/whep/room1/xyz/sse".to_string(), 404),
        (format!("/whep/a.b/{TOKEN}/sse"), 400),
        (format!("/whip/room1/{TOKEN}/sse"), 404),
        (format!("/whip/room1/{TOKEN}/layer"), 404),
    ] {
        let resp = http::handle(&json_post(&u, "[]"), &cfg, &mut |c| {
            panic!("core called with {c:?}")
        });
        assert_eq!(resp.status, status, "{u}");
    }
    // Wrong method: 405 with Allow.
    let resp = http::handle(&req("GET", &url, &[], ""), &cfg, &mut |_| unreachable!());
    assert_eq!(
        (resp.status, resp.header("Allow")),
        (405, Some("POST, OPTIONS"))
    );
}

#[test]
fn sse_and_layer_need_the_view_token_but_the_stream_get_does_not() {
    let t = |s: &str| Some(Token::new(s).unwrap());
    let auth = Auth::new(t("pub"), t("view"), None);
    let cfg = HttpConfig::default().with_auth(auth);
    let url = format!("{}/sse", base());
    let resp = http::handle(&json_post(&url, "[]"), &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 401);
    assert!(resp.header("WWW-Authenticate").is_some());
    let layer = format!("{}/layer", base());
    let resp = http::handle(&json_post(&layer, "{}"), &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 401);
    let with = |u: &str, body: &str| {
        req(
            "POST",
            u,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer view"),
            ],
            body,
        )
    };
    let (r, _) = run(&cfg, &with(&url, "[]"), viewer_state(false, 1));
    assert_eq!(r.status, 201);
    let stream = r.header("Location").unwrap().to_string();
    // EventSource cannot send Authorization: the GET works without it.
    let (r, _) = run(&cfg, &req("GET", &stream, &[], ""), viewer_state(false, 1));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
    // DELETE needs it.
    let resp = http::handle(
        &req("DELETE", &stream, &[], ""),
        &cfg,
        &mut |_| unreachable!(),
    );
    assert_eq!(resp.status, 401);
    let (r, _) = run(&cfg, &with(&layer, "{}"), Ok(Ok(Reply::Done)));
    assert_eq!(r.status, 200);
    // Preflights never need auth and allow the JSON content type.
    for u in [&url, &layer, &stream] {
        let pre = req(
            "OPTIONS",
            u,
            &[("Access-Control-Request-Method", "POST")],
            "",
        );
        let resp = http::handle(&pre, &cfg, &mut |_| unreachable!());
        assert_eq!(resp.status, 204, "{u}");
        assert!(resp
            .header("Access-Control-Allow-Headers")
            .unwrap()
            .contains("Content-Type"));
    }
}

#[test]
fn sse_stream_get_delete_and_session_end() {
    let cfg = HttpConfig::default();
    let stream = create_stream(&cfg, r#"["active","viewercount","layers"]"#);
    // GET through handle_streaming: a stream with the first state and the events asked for.
    let get = req("GET", &stream, &[], "");
    match http::handle_streaming(&get, &cfg, &mut |_| viewer_state(true, 3)) {
        Handled::Stream(s) => {
            assert_eq!(s.head.status, 200);
            assert_eq!(s.head.header("Content-Type"), Some("text/event-stream"));
            assert_eq!(s.head.header("Cache-Control"), Some("no-cache"));
            assert!(s.events.has("active") && !s.events.has("inactive"));
            assert_eq!(s.first.viewers, 3);
            assert!(s.lease.alive());
            assert_eq!(cfg.sse.counts(), (1, 1));
            // A second GET takes the stream over: the first one ends.
            let (r, _) = run(&cfg, &get, viewer_state(true, 3));
            assert_eq!(r.status, 200);
            assert!(!s.lease.alive());
        }
        Handled::Response(r) => panic!("not a stream: {r:?}"),
    }
    assert_eq!(cfg.sse.counts(), (1, 0), "leases given back");
    // DELETE: 200, then every later GET or DELETE is 404.
    let del = req("DELETE", &stream, &[], "");
    let resp = http::handle(&del, &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 200);
    let resp = http::handle(&get, &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 404);
    let resp = http::handle(&del, &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 404);
    // Unknown ids.
    for u in [
        format!("{}/sse/999", base()),
        format!("{}/sse/x", base()),
        format!("{}/sse/", base()),
    ] {
        let resp = http::handle(&req("GET", &u, &[], ""), &cfg, &mut |_| unreachable!());
        assert_eq!(resp.status, 404, "{u}");
    }
    // Streams die with the session: the session's DELETE removes them...
    let stream = create_stream(&cfg, "");
    let (r, _) = run(
        &cfg,
        &req("DELETE", &base(), &[], ""),
        Ok(Ok(Reply::Deleted)),
    );
    assert_eq!(r.status, 200);
    let resp = http::handle(&req("GET", &stream, &[], ""), &cfg, &mut |_| unreachable!());
    assert_eq!(resp.status, 404);
    // ...and so does a session that ended by itself (the core says NotFound).
    let stream = create_stream(&cfg, "");
    let (r, _) = run(
        &cfg,
        &req("GET", &stream, &[], ""),
        Ok(Err(ApiError::NotFound)),
    );
    assert_eq!(r.status, 404);
    assert_eq!(cfg.sse.counts(), (0, 0));
}

#[test]
fn streams_are_bounded() {
    let cfg = HttpConfig {
        sse: Arc::new(SseStreams::new(2)),
        ..HttpConfig::default()
    };
    let a = create_stream(&cfg, "");
    let b = create_stream(&cfg, "");
    let c = create_stream(&cfg, "");
    let start = |u: &str| match http::handle_streaming(&req("GET", u, &[], ""), &cfg, &mut |_| {
        viewer_state(true, 1)
    }) {
        Handled::Stream(s) => Ok(s),
        Handled::Response(r) => Err(r),
    };
    let sa = start(&a).expect("first");
    let sb = start(&b).expect("second");
    // Above the cap: 503 with Retry-After, and the stream is still there.
    let r = start(&c).expect_err("third");
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("5")));
    drop(sa);
    let sc = start(&c).expect("a place was given back");
    drop((sb, sc));
    // Remembered streams are bounded per session (the oldest goes).
    for _ in 0..10 {
        create_stream(&cfg, "");
    }
    assert_eq!(cfg.sse.counts(), (http::MAX_SSE_PER_SESSION, 0));
}

#[test]
fn layer_requests() {
    let cfg = HttpConfig::default();
    let url = format!("{}/layer", base());
    for (body, rid, media) in [
        ("{}", None, None),
        ("", None, None),
        (r#"{"mediaId":"1"}"#, None, Some(1)),
        (r#"{"mediaId":"1","rid":"l"}"#, Some("l"), Some(1)),
        (r#"{"rid":"h","mediaId":1}"#, Some("h"), Some(1)),
        (r#"{"rid":null,"spatialLayerId":null}"#, None, None),
    ] {
        let (r, seen) = run(&cfg, &json_post(&url, body), Ok(Ok(Reply::Done)));
        assert_eq!(r.status, 200, "{body}");
        match &seen[..] {
            [Command::PinLayer {
                role: Role::Subscriber,
                rid: got_rid,
                media: got_media,
                room,
                ..
            }] => {
                assert_eq!(got_rid.as_deref(), rid, "{body}");
                assert_eq!(*got_media, media, "{body}");
                assert_eq!(room.as_str(), "room1");
            }
            other => panic!("{other:?}"),
        }
    }
    // Malformed: 400; unsupported constraints: 422; neither reaches the core.
    for (body, status) in [
        ("[]", 400),
        ("nope", 400),
        (r#"{"rid":"a b"}"#, 400),
        (r#"{"rid":""}"#, 400),
        (r#"{"rid":7}"#, 400),
        (r#"{"mediaId":"video"}"#, 400),
        (r#"{"rid":"h","maxWidth":640}"#, 422),
        (r#"{"spatialLayerId":1}"#, 422),
        (r#"{"temporalLayerId":0}"#, 422),
    ] {
        let resp = http::handle(&json_post(&url, body), &cfg, &mut |c| {
            panic!("core called with {c:?}")
        });
        assert_eq!(resp.status, status, "{body}");
    }
    // The core's refusals.
    for (e, status) in [
        (
            ApiError::Unsupported("no simulcast layer with this rid".into()),
            422,
        ),
        (ApiError::NotFound, 404),
    ] {
        let (r, _) = run(&cfg, &json_post(&url, r#"{"rid":"x"}"#), Ok(Err(e)));
        assert_eq!(r.status, status);
    }
}

#[test]
fn events_say_what_changed_and_never_an_initial_inactive() {
    let all = EventSet::parse(b"").unwrap();
    let mut st = SseState::default();
    // No publisher yet: viewercount and layers, no inactive.
    let first = http::sse_events(&mut st, all, &state(false, 1));
    assert!(!first.contains("event: inactive") && !first.contains("event: active"));
    assert!(first.contains("event: viewercount\ndata: {\"viewercount\":1}\n\n"));
    assert!(first.contains("event: layers\ndata: {\"1\":[{"));
    // Nothing changed: nothing sent.
    assert_eq!(http::sse_events(&mut st, all, &state(false, 1)), "");
    // The publisher arrives, then leaves; a viewer joins.
    let e = http::sse_events(&mut st, all, &state(true, 1));
    assert_eq!(e, "event: active\ndata: {}\n\n");
    let e = http::sse_events(&mut st, all, &state(false, 2));
    assert_eq!(
        e,
        "event: inactive\ndata: {}\n\nevent: viewercount\ndata: {\"viewercount\":2}\n\n"
    );
    // Active from the start: an initial active.
    let mut st = SseState::default();
    assert!(http::sse_events(&mut st, all, &state(true, 1)).starts_with("event: active\n"));
    // Only what was asked for; every data line is one line of JSON.
    let only = EventSet::parse(br#"["layers"]"#).unwrap();
    let mut st = SseState::default();
    let e = http::sse_events(&mut st, only, &state(true, 1));
    assert!(e.starts_with("event: layers\ndata: ") && e.matches("event:").count() == 1);
    let data: Value =
        serde_json::from_str(e.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"1": [
            {"rid": "h", "bitrate": 2_000_000, "active": true, "width": 1280, "height": 720,
             "current": false, "target": false, "pinned": false},
            {"rid": "l", "bitrate": 150_000, "active": true, "width": null, "height": null,
             "current": true, "target": true, "pinned": false},
        ]})
    );
}

// ---- The real core on the deterministic net -------------------------------------

const LAYERS: &[(&str, usize, usize)] = &[("h", 6, 1100), ("m", 2, 1000), ("l", 1, 500)];

fn core_call(net: &mut TestNet, r: &HttpRequest) -> HttpResponse {
    // Routed as the dispatcher routes it (the viewer's own worker).
    http::handle(r, &HttpConfig::default(), &mut |c| Ok(net.command(c)))
}

#[test]
fn pinning_through_the_handler_moves_the_real_core() {
    let mut net = TestNet::new(81);
    net.publish_simulcast("sc", LAYERS);
    let v = net.view("sc");
    net.set_downlink(v, Some(10_000_000));
    let token = net.clients[v].token.unwrap();
    let base = format!("/whep/sc/{token}");
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.current_layer(v).is_some()),
        "no layer chosen"
    );
    // The state an event stream reports.
    let st = match net.command(Command::ViewerState {
        role: Role::Subscriber,
        room: wisp::sfu::RoomName::new("sc").unwrap(),
        token,
    }) {
        Ok(Reply::ViewerState(s)) => s,
        other => panic!("{other:?}"),
    };
    assert!(st.publisher_active);
    assert_eq!((st.viewers, st.video_mline), (1, Some(1)));
    let rids: Vec<_> = st.layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(rids, ["h", "m", "l"]);
    assert!(
        st.layers.iter().all(|l| l.active && l.bitrate > 0),
        "{st:?}"
    );
    assert!(st.current.is_some() && st.pinned.is_none());

    let pin = |rid: &str| {
        json_post(
            &format!("{base}/layer"),
            &format!(r#"{{"mediaId":"1","rid":"{rid}"}}"#),
        )
    };
    let on = |n: &TestNet, rid: &str| n.current_layer(v).as_deref() == Some(rid);
    // Pin the high layer (the viewer starts low): forwarded within 2 s,
    // packets of h arrive, and the layer is reported as pinned.
    assert_eq!(net.current_layer(v).as_deref(), Some("l"), "starts low");
    assert_eq!(core_call(&mut net, &pin("h")).status, 200);
    let t0 = net.elapsed();
    assert!(net.run_until(Duration::from_secs(2), |n| on(n, "h")));
    let took_h = net.elapsed() - t0;
    net.run_for(Duration::from_millis(500));
    let last = net.sim_packets(v).last().map(|p| p.layer);
    assert_eq!(last, Some(0), "packets of layer h arrive");
    // Pin the low layer: it stays there although the link carries more.
    assert_eq!(core_call(&mut net, &pin("l")).status, 200);
    let t0 = net.elapsed();
    assert!(net.run_until(Duration::from_secs(2), |n| on(n, "l")));
    let took_l = net.elapsed() - t0;
    let vl = net.core_ref_of(v).viewer_layers(token).unwrap();
    assert_eq!(vl.pinned.map(|r| r.to_string()).as_deref(), Some("l"));
    net.run_for(Duration::from_secs(4));
    assert!(on(&net, "l"));
    let switches = net.core_ref_of(v).viewer_layers(token).unwrap().switches;
    assert_eq!(switches, 2, "exactly the two pinned switches");
    // Unknown rid, wrong m-line: 422, nothing changes.
    assert_eq!(core_call(&mut net, &pin("zz")).status, 422);
    let wrong = json_post(&format!("{base}/layer"), r#"{"mediaId":"0","rid":"l"}"#);
    assert_eq!(core_call(&mut net, &wrong).status, 422);
    assert_eq!(
        net.core_ref_of(v)
            .viewer_layers(token)
            .unwrap()
            .pinned
            .map(|r| r.to_string())
            .as_deref(),
        Some("l")
    );
    // Back to automatic.
    assert_eq!(
        core_call(&mut net, &json_post(&format!("{base}/layer"), "{}")).status,
        200
    );
    assert_eq!(
        net.core_ref_of(v).viewer_layers(token).unwrap().pinned,
        None
    );
    net.run_for(Duration::from_secs(2));
    assert!(net.current_layer(v).is_some());
    eprintln!(
        "RESULT pin: l -> h in {} ms, h -> l in {} ms (simulated), {switches} switches",
        took_h.as_millis(),
        took_l.as_millis()
    );
    // A session that ended: 404 for the layer and the stream creation.
    net.delete(v).unwrap();
    assert_eq!(core_call(&mut net, &pin("l")).status, 404);
    assert_eq!(
        core_call(&mut net, &json_post(&format!("{base}/sse"), "[]")).status,
        404
    );
}

#[test]
fn pinning_a_plain_stream_is_422() {
    let mut net = TestNet::new(82);
    net.publish("plain");
    let v = net.view("plain");
    let token = net.clients[v].token.unwrap();
    net.run_for(Duration::from_secs(1));
    let r = core_call(
        &mut net,
        &json_post(&format!("/whep/plain/{token}/layer"), r#"{"rid":"h"}"#),
    );
    assert_eq!(r.status, 422);
    // Automatic is always fine.
    let r = core_call(
        &mut net,
        &json_post(&format!("/whep/plain/{token}/layer"), "{}"),
    );
    assert_eq!(r.status, 200);
    // A publisher's token is not a viewer's.
    let p = net.clients[0].token.unwrap();
    let r = core_call(
        &mut net,
        &json_post(&format!("/whep/plain/{p}/layer"), "{}"),
    );
    assert_eq!(r.status, 404);
}

// ---- The real binary over TCP -------------------------------------------------------

/// The real binary (see `realnet`), with the requests this file needs.
struct Server(realnet::Server);

impl Server {
    fn start() -> Server {
        Server(realnet::start_server_with(&[("WISP_STUN_URLS", "")]))
    }

    /// One request on its own connection.
    fn call(&self, method: &str, path: &str, ct: &str, body: &str) -> Resp {
        let headers = [("Content-Type", ct)];
        support::http(
            self.0.http,
            method,
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WHEP viewer session (it never connects; it lives until the connect timeout).
    fn viewer(&self, room: &str) -> String {
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _pending) = api.apply().unwrap();
        let r = self.call(
            "POST",
            &format!("/whep/{room}"),
            "application/sdp",
            &offer.to_sdp_string(),
        );
        assert_eq!(r.status, 201, "{r:?}");
        let links: Vec<_> = r.header_all("link").collect();
        assert!(links
            .iter()
            .any(|l| l.contains("rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"")));
        assert!(links
            .iter()
            .any(|l| l.contains("rel=\"urn:ietf:params:whep:ext:core:layer\"")));
        r.header("location").expect("Location").to_string()
    }
}

#[test]
fn the_binary_streams_events_and_ends_streams() {
    let srv = Server::start();
    let session = srv.viewer("live");
    let r = srv.call(
        "POST",
        &format!("{session}/sse"),
        "application/json",
        r#"["reconnect"]"#,
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = srv.call(
        "POST",
        &format!("{session}/sse"),
        "application/json",
        r#"["active","inactive","layers","viewercount"]"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let stream = r.header("location").unwrap().to_string();
    let t0 = Instant::now();
    let mut ev = Events::open(srv.0.http, &stream);
    // No publisher: the count and the (empty) layers of the video m-line, no `inactive`.
    let (first, v) = ev.next().expect("a first event");
    assert_eq!(first, "viewercount", "no initial inactive");
    assert_eq!(v, json!({"viewercount": 1}));
    assert_eq!(
        ev.next().expect("layers"),
        ("layers".to_string(), json!({"1": []}))
    );
    let first_ms = t0.elapsed().as_millis();
    // A second viewer joins: a new count within about a second.
    let t1 = Instant::now();
    let other = srv.viewer("live");
    assert_eq!(
        ev.wait("viewercount", Duration::from_secs(3)),
        Some(json!({"viewercount": 2}))
    );
    let change_ms = t1.elapsed().as_millis();
    // The layer extension answers for a live session: no layers to pin yet.
    let layer = format!("{session}/layer");
    let r = srv.call("POST", &layer, "application/json", r#"{"rid":"h"}"#);
    assert_eq!(r.status, 422);
    let r = srv.call("POST", &layer, "application/json", "{}");
    assert_eq!(r.status, 200);
    // The other viewer leaves.
    assert_eq!(srv.call("DELETE", &other, "text/plain", "").status, 200);
    assert_eq!(
        ev.wait("viewercount", Duration::from_secs(3)),
        Some(json!({"viewercount": 1}))
    );
    // DELETE on the stream ends the open GET, and later GETs are 404.
    let t2 = Instant::now();
    assert_eq!(srv.call("DELETE", &stream, "text/plain", "").status, 200);
    assert!(
        ev.ends_within(Duration::from_secs(3)),
        "the stream did not end on DELETE"
    );
    let delete_ms = t2.elapsed().as_millis();
    assert_eq!(srv.call("GET", &stream, "text/plain", "").status, 404);
    // A second stream dies with its session.
    let r = srv.call("POST", &format!("{session}/sse"), "application/json", "");
    assert_eq!(r.status, 201);
    let stream2 = r.header("location").unwrap().to_string();
    let mut ev2 = Events::open(srv.0.http, &stream2);
    assert!(ev2.next().is_some());
    let t3 = Instant::now();
    assert_eq!(srv.call("DELETE", &session, "text/plain", "").status, 200);
    assert!(
        ev2.ends_within(Duration::from_secs(3)),
        "the stream outlived its session"
    );
    let session_ms = t3.elapsed().as_millis();
    assert_eq!(srv.call("GET", &stream2, "text/plain", "").status, 404);
    // The server still answers (no worker was held).
    assert_eq!(srv.call("GET", "/healthz", "text/plain", "").status, 200);
    eprintln!(
        "RESULT sse: first events {first_ms} ms after GET, viewercount change {change_ms} ms, end on DELETE {delete_ms} ms, end with the session {session_ms} ms"
    );
}
