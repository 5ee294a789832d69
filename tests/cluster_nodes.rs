//! Cluster mode end to end (issue 15): real `wisp` binaries on loopback
//! sharing a real `redis-server` (tests/support/redis.rs), with str0m peers.
//! Covered: `307` when full or draining (Location on the other node, same
//! path and query plus the marker, no bounce), `503` + `Retry-After` when no
//! node has room, WHIP `409` for a room live on another node and for the
//! loser of a publish race, `/api/cluster`, `/api/rooms` and the cluster
//! metrics, the cluster token rule, and a node started with Redis down.
//! Without `redis-server` the tests print SKIPPED (unless `CI` is set).

mod cluster;
mod realnet;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use str0m::media::Direction;

use cluster::{node_field, nodes, offer, pump_for, Node};
use support::redis::{have_redis, Redis};

#[test]
fn full_or_draining_nodes_redirect_and_never_bounce() {
    if !have_redis("full_or_draining_nodes_redirect_and_never_bounce") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    let a = Node::start(&redis.url(), &[("WISP_MAX_SESSIONS", "1")]);
    let b = Node::start(&redis.url(), &[]);
    a.until("both nodes listed", Duration::from_secs(6), |v| {
        nodes(v).len() == 2
    });

    // A takes one publisher and is then full.
    let mut publisher = realnet::Peer::new(&a.wisp, "/whip/r1", Direction::SendOnly);
    publisher.pump();
    let view = offer(Direction::RecvOnly);
    let r = a.post("/whep/r1?x=1", &[], &view);
    assert_eq!(r.status, 307, "{}", r.text());
    let location = r.header("location").unwrap().to_string();
    assert_eq!(location, format!("{}/whep/r1?x=1&wisp_redirect=1", b.url));
    // Followed: B serves it (the viewer waits for the room there).
    let path = location.trim_start_matches(&b.url);
    let r = b.post(path, &[], &view);
    assert_eq!(r.status, 201, "{}", r.text());
    // A redirected request is never redirected again.
    let r = a.post("/whep/r1?wisp_redirect=1", &[], &view);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("2"));

    // B drains: no node has room any more.
    let r = b.wisp.request("POST", "/api/drain", &[], b"");
    assert_eq!((r.status, r.json()["draining"].clone()), (200, true.into()));
    a.until("B draining", Duration::from_secs(6), |v| {
        node_field(v, &b.id(), "draining") == true
    });
    let r = a.post("/whip/r2", &[], &offer(Direction::SendOnly));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("2"));
    // B itself, draining, sends a publisher to A... which is full: 503 too.
    b.until("A full", Duration::from_secs(6), |v| {
        node_field(v, &a.id(), "sessions") == 1
    });
    let r = b.post("/whip/r3", &[], &offer(Direction::SendOnly));
    assert_eq!(r.status, 503, "{}", r.text());

    // B back, A drains: A's new sessions go to B, with the path kept.
    let r = b.wisp.request("DELETE", "/api/drain", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(a.wisp.request("POST", "/api/drain", &[], b"").status, 200);
    a.until("B back", Duration::from_secs(6), |v| {
        node_field(v, &b.id(), "draining") == false && v["draining"] == true
    });
    let r = a.post("/whip/r4", &[], &offer(Direction::SendOnly));
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{}/whip/r4?wisp_redirect=1", b.url).as_str())
    );

    assert!(a.metric("wisp_redirects_total") >= 2);
    assert_eq!(a.metric("wisp_cluster_nodes"), 2);
    assert_eq!(a.metric("wisp_relay_upstreams"), 0);
    assert_eq!(a.metric("wisp_directory_errors_total"), 0);
    // The room API names the origin of A's room.
    let rooms = a.get("/api/rooms", &[]).json();
    let r1 = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r1")
        .unwrap()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r1 = r1;
    while r1["origin"] != a.id().as_str() && Instant::now() < deadline {
        publisher.pump();
        std::thread::sleep(Duration::from_millis(20));
        let rooms = a.get("/api/rooms", &[]).json();
        r1 = rooms[0].clone();
    }
    assert_eq!(r1["origin"], a.id().as_str(), "{r1}");
    assert_eq!(r1["relayed"], false);
}

#[test]
fn a_room_live_on_one_node_is_409_on_another_and_a_race_has_one_winner() {
    if !have_redis("a_room_live_on_one_node_is_409_on_another_and_a_race_has_one_winner") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    let a = Node::start(&redis.url(), &[]);
    let b = Node::start(&redis.url(), &[]);
    let pubs = offer(Direction::SendOnly);
    let r = a.post("/whip/room", &[], &pubs);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b.post("/whip/room", &[], &pubs);
    assert_eq!(r.status, 409, "{}", r.text());

    for round in 0..5 {
        let room = format!("/whip/race{round}");
        let (ua, ub) = (a.wisp.http, b.wisp.http);
        let (ra, rb) = (room.clone(), room.clone());
        let (oa, ob) = (pubs.clone(), pubs.clone());
        let post = |addr, path: String, body: String| {
            std::thread::spawn(move || {
                support::http(
                    addr,
                    "POST",
                    &path,
                    &[("Content-Type", "application/sdp")],
                    body.as_bytes(),
                    Duration::from_secs(10),
                )
                .unwrap()
                .status
            })
        };
        let ta = post(ua, ra, oa);
        let tb = post(ub, rb, ob);
        let mut got = [ta.join().unwrap(), tb.join().unwrap()];
        got.sort();
        assert_eq!(got, [201, 409], "round {round}");
    }
}

#[test]
fn cluster_token_rule_and_admin_routes() {
    if !have_redis("cluster_token_rule_and_admin_routes") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    // Tokens without a cluster token: refused at start, with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .env("WISP_REDIS_URL", redis.url())
        .env("WISP_NODE_URL", "http://127.0.0.1:1")
        .env("WISP_VIEW_TOKEN", "v")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs WISP_CLUSTER_TOKEN"), "{err}");
    // No node URL: refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .env("WISP_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs WISP_NODE_URL"), "{err}");

    let a = Node::start(
        &redis.url(),
        &[
            ("WISP_PUBLISH_TOKEN", "pub"),
            ("WISP_VIEW_TOKEN", "view"),
            ("WISP_ADMIN_TOKEN", "admin"),
            ("WISP_CLUSTER_TOKEN", "c1uster"),
        ],
    );
    let admin = [("Authorization", "Bearer admin")];
    // Admin routes need the admin token.
    assert_eq!(a.get("/api/cluster", &[]).status, 401);
    assert_eq!(
        a.get("/api/cluster", &[("Authorization", "Bearer c1uster")])
            .status,
        401
    );
    assert_eq!(a.wisp.request("POST", "/api/drain", &[], b"").status, 401);
    let t = Instant::now();
    loop {
        let v = a.cluster(&admin);
        if nodes(&v).len() == 1 {
            assert_eq!(v["self"], a.id().as_str());
            assert_eq!(v["connected"], true);
            assert_eq!(nodes(&v)[0]["url"], a.url.as_str());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(6), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A pull with the cluster token is accepted whatever the view token says.
    let view = offer(Direction::RecvOnly);
    assert_eq!(a.post("/whep/r", &[], &view).status, 401);
    assert_eq!(
        a.post("/whep/r", &[("Authorization", "Bearer nope")], &view)
            .status,
        401
    );
    let r = a.post("/whep/r", &[("Authorization", "Bearer c1uster")], &view);
    assert_eq!(r.status, 201, "{}", r.text());
    // It counts as an edge's pull (shed last under load) though its offer
    // asks for no simulcast layers; a viewer with the view token does not.
    let r = a.post("/whep/r", &[("Authorization", "Bearer view")], &view);
    assert_eq!(r.status, 201, "{}", r.text());
    let m = a.get("/metrics", &admin).text();
    assert!(m.lines().any(|l| l == "wisp_relay_downstreams 1"), "{m}");
    // ... but it is no publish or admin token.
    let r = a.post(
        "/whip/r",
        &[("Authorization", "Bearer c1uster")],
        &offer(Direction::SendOnly),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        a.get("/metrics", &[("Authorization", "Bearer c1uster")])
            .status,
        401
    );
}

#[test]
fn starts_with_redis_down_serves_local_rooms_and_catches_up() {
    if !have_redis("starts_with_redis_down_serves_local_rooms_and_catches_up") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let mut redis = Redis::new();
    redis.kill();
    let a = Node::start(&redis.url(), &[]);
    let t = Instant::now();
    while a.wisp.log_lines("redis unreachable").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "no log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A local publish works; a view of a room this node does not know is 503.
    let mut publisher = realnet::Peer::new(&a.wisp, "/whip/local", Direction::SendOnly);
    let r = a.post("/whep/elsewhere", &[], &offer(Direction::RecvOnly));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(a.metric("wisp_directory_errors_total") > 0);
    // Once the publisher is live, its room is known: viewers are served.
    let t = Instant::now();
    let mut frame = 0;
    loop {
        publisher.pump();
        if publisher.connected {
            publisher.send_frame(frame);
            frame += 1;
        }
        let rooms = a.get("/api/rooms", &[]).json();
        if rooms[0]["publisher_live"] == true && rooms[0]["origin"] == a.id().as_str() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{rooms}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = a.post("/whep/local", &[], &offer(Direction::RecvOnly));
    assert_eq!(r.status, 201, "{}", r.text());

    // Redis comes up: the record and the claim are written within 2 s of
    // the reconnect (the retry backoff is at most 1 s).
    redis.start();
    let t = Instant::now();
    let mut c = loop {
        if let Ok(c) = redis::Client::open(redis.url()).unwrap().get_connection() {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    claim_and_record_within(&mut c, "local", &a.id(), t, || {
        std::thread::sleep(Duration::from_millis(20));
        publisher.pump();
    });
}

/// The core refusing a session for overload (or capacity) in cluster mode
/// turns into a `307` to a node with room, and into a `503` once the request
/// was redirected already. In process: the HTTP handler with a core that
/// refuses, this node's directory and another node's, on a real Redis.
#[test]
fn an_overloaded_core_redirects_in_cluster_mode() {
    use wisp::channel::CoreLink;
    use wisp::cluster::{ClusterConfig, ClusterNode, Directory, DirectoryConfig};
    use wisp::http::{handle, HttpConfig, HttpRequest};
    use wisp::sfu::command::ApiError;

    if !have_redis("an_overloaded_core_redirects_in_cluster_mode") {
        return;
    }
    let redis = Redis::new();
    let dir = |id: &str| {
        Directory::start(DirectoryConfig {
            redis_url: redis.url(),
            node_id: id.to_string(),
            node_url: format!("http://{id}.test:8080"),
            max_sessions: 100,
            ttl: Duration::from_millis(1000),
            refresh: Duration::from_millis(200),
            op_timeout: Duration::from_millis(300),
            prefix: "wisp".to_string(),
        })
        .unwrap()
    };
    let other = dir("b");
    let config = ClusterConfig {
        redis_url: redis.url(),
        node_url: "http://a.test:8080".into(),
        node_id: "a".into(),
        cluster_token: None,
        upstream_sockets: 64,
    };
    // The reporter's core link: never answered (it only reads load).
    let poll = mio::Poll::new().unwrap();
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (tx, _rx) = crossbeam_channel::bounded(64);
    let link = CoreLink::new(tx, waker, Duration::from_millis(50));
    let node = ClusterNode::with_directory(dir("a"), &config, 100, link, None).unwrap();
    let t = Instant::now();
    while node.dir.snapshot().nodes.len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "b not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = HttpConfig::default().with_cluster(node.clone());
    let post = |url: &str| {
        HttpRequest::new("POST", url)
            .with_header("Content-Type", "application/sdp")
            .with_body(offer(Direction::RecvOnly))
    };
    for refusal in [ApiError::Overloaded, ApiError::AtCapacity] {
        let mut calls = 0;
        let mut core = |_| {
            calls += 1;
            Ok(Err(refusal.clone()))
        };
        let r = handle(&post("/whep/r?k=v"), &cfg, &mut core);
        assert_eq!(r.status, 307, "{refusal:?}");
        assert_eq!(
            r.header("Location"),
            Some("http://b.test:8080/whep/r?k=v&wisp_redirect=1")
        );
        let r = handle(&post("/whip/p?wisp_redirect=1"), &cfg, &mut core);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Retry-After"), Some("2"));
        assert_eq!(calls, 2);
    }
    assert_eq!(node.redirects(), 2);
    // A WHIP POST without an offer is refused before it claims the room.
    let empty =
        HttpRequest::new("POST", "/whip/empty").with_header("Content-Type", "application/sdp");
    let r = handle(&empty, &cfg, &mut |_| panic!("the core is not asked"));
    assert_eq!(r.status, 400);
    assert_eq!(node.dir.room_owner("empty"), Ok(None));
    node.shutdown();
    other.shutdown();
}

#[test]
fn redis_stopped_local_rooms_flow_and_everything_is_rewritten_after() {
    if !have_redis("redis_stopped_local_rooms_flow_and_everything_is_rewritten_after") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let mut redis = Redis::new();
    let a = Node::start(&redis.url(), &[]);
    a.until("connected", Duration::from_secs(6), |v| nodes(v).len() == 1);
    let mut viewer = realnet::Peer::new(&a.wisp, "/whep/live", Direction::RecvOnly);
    let mut publisher = realnet::Peer::new(&a.wisp, "/whip/live", Direction::SendOnly);
    let mut frame = 0;
    let t = Instant::now();
    while viewer.got_video.len() < 20 {
        assert!(t.elapsed() < Duration::from_secs(20), "no video");
        pump_for(
            &mut publisher,
            &mut viewer,
            &mut frame,
            Duration::from_millis(100),
        );
    }

    redis.kill();
    let before = viewer.got_video.len();
    pump_for(
        &mut publisher,
        &mut viewer,
        &mut frame,
        Duration::from_secs(2),
    );
    assert!(
        viewer.got_video.len() >= before + 50,
        "video stopped with Redis: {before} -> {}",
        viewer.got_video.len()
    );
    // A view of a room this node does not know: 503; of its own room: served.
    let r = a.post("/whep/unknown", &[], &offer(Direction::RecvOnly));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        a.post("/whep/live", &[], &offer(Direction::RecvOnly))
            .status,
        201
    );
    a.until("disconnected", Duration::from_secs(6), |v| {
        v["connected"] == false
    });

    // Redis back (empty): the record and the claim are rewritten.
    redis.start();
    let t = Instant::now();
    let mut c = redis.conn();
    claim_and_record_within(&mut c, "live", &a.id(), t, || {
        pump_for(
            &mut publisher,
            &mut viewer,
            &mut frame,
            Duration::from_millis(20),
        );
    });
    eprintln!("rewritten {:?} after Redis came back", t.elapsed());
}

/// SIGTERM: the node closes its sessions, then releases its claims and its
/// record at once (not one TTL later), and exits.
#[test]
fn sigterm_releases_claims_and_record() {
    if !have_redis("sigterm_releases_claims_and_record") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let redis = Redis::new();
    let mut a = Node::start(&redis.url(), &[]);
    a.until("connected", Duration::from_secs(6), |v| nodes(v).len() == 1);
    let r = a.post("/whip/bye", &[], &offer(Direction::SendOnly));
    assert_eq!(r.status, 201);
    let mut c = redis.conn();
    let exists = |c: &mut redis::Connection, k: &str| -> bool {
        redis::cmd("EXISTS").arg(k).query::<i64>(c).unwrap() == 1
    };
    let node_key = format!("wisp:node:{}", a.id());
    assert!(exists(&mut c, "wisp:room:bye") && exists(&mut c, &node_key));
    let pid = a.wisp.child.id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while a.wisp.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!exists(&mut c, "wisp:room:bye"), "claim left behind");
    assert!(!exists(&mut c, &node_key), "record left behind");
}

/// Wait (at most 3 s from `t`, calling `between` between reads) until Redis
/// holds `node`'s claim of `room` and its node record again.
fn claim_and_record_within(
    c: &mut redis::Connection,
    room: &str,
    node: &str,
    t: Instant,
    mut between: impl FnMut(),
) {
    loop {
        let owner: Option<String> = redis::cmd("GET")
            .arg(format!("wisp:room:{room}"))
            .query(c)
            .unwrap();
        let record: Option<String> = redis::cmd("GET")
            .arg(format!("wisp:node:{node}"))
            .query(c)
            .unwrap();
        if owner.as_deref() == Some(node) && record.is_some() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{owner:?} {record:?}");
        between();
    }
}
