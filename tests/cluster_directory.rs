//! The cluster directory (src/cluster/directory.rs) against a real
//! `redis-server` (Debian's package): each test starts its own on a free
//! loopback port with `--save "" --appendonly no` and kills it on drop.
//! Timings are shortened (1 s TTL, 200 ms refresh) so nothing waits for the
//! production 10 s. Without `redis-server` the tests print SKIPPED, unless
//! `CI` is set (.ci/run installs it), in which case they fail.

mod support;

use std::sync::{Arc, Barrier, Mutex, Once};
use std::time::{Duration, Instant};

use support::redis::Redis;

use wisp::cluster::{Claim, DirError, DirEvent, Directory, DirectoryConfig};

const TTL: Duration = Duration::from_millis(1000);
const REFRESH: Duration = Duration::from_millis(200);

/// Every log line of the directory, kept to check "once per outage".
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("wisp::cluster")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Captured lines containing both `a` and `b`.
fn logged(a: &str, b: &str) -> usize {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(a) && l.contains(b))
        .count()
}

/// Whether `redis-server` runs (see `support::redis`); starts the log capture.
fn have_redis(test: &str) -> bool {
    capture_logs();
    support::redis::have_redis(test)
}

fn node(url: &str, id: &str) -> Directory {
    Directory::start(DirectoryConfig {
        redis_url: url.to_string(),
        node_id: id.to_string(),
        node_url: format!("http://{id}.test:8080"),
        max_sessions: 100,
        ttl: TTL,
        refresh: REFRESH,
        op_timeout: Duration::from_millis(300),
        prefix: "wisp".to_string(),
    })
    .unwrap()
}

/// Poll `f` every 10 ms until it holds or `limit` passes; returns the time taken.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn exists(r: &Redis, key: &str) -> bool {
    // A fresh connection each time: the server may have been restarted.
    redis::Client::open(r.url())
        .ok()
        .and_then(|c| c.get_connection().ok())
        .and_then(|mut c| redis::cmd("EXISTS").arg(key).query::<i64>(&mut c).ok())
        == Some(1)
}

#[test]
fn records_appear_carry_load_and_expire() {
    if !have_redis("records_appear_carry_load_and_expire") {
        return;
    }
    let r = Redis::new();
    let a = node(&r.url(), "a");
    let b = node(&r.url(), "b");
    a.set_load(7, 1234);
    within(Duration::from_secs(2), "both nodes listed", || {
        let s = b.snapshot();
        s.connected && s.live(Instant::now()).count() == 2
    });
    within(Duration::from_secs(1), "a's load in b's snapshot", || {
        b.snapshot()
            .node("a", Instant::now())
            .is_some_and(|n| n.record.sessions == 7 && n.record.forwarded_pps == 1234)
    });
    let s = b.snapshot();
    let rec = &s.node("a", Instant::now()).unwrap().record;
    assert_eq!(rec.url, "http://a.test:8080");
    assert_eq!(rec.max_sessions, 100);
    assert!(!rec.draining && rec.updated_ms > 0);
    // The stored JSON has the contract's fields.
    let json: serde_json::Value =
        serde_json::from_str(&get(&mut r.conn(), "wisp:node:a").unwrap()).unwrap();
    for k in [
        "id",
        "url",
        "sessions",
        "max_sessions",
        "forwarded_pps",
        "draining",
        "updated_ms",
    ] {
        assert!(json.get(k).is_some(), "{k} in {json}");
    }
    // The key's expiry is the TTL, refreshed (never left without one).
    let pttl: i64 = redis::cmd("PTTL")
        .arg("wisp:node:a")
        .query(&mut r.conn())
        .unwrap();
    assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "{pttl}");

    // Draining shows at once (not at the next refresh).
    a.set_draining(true);
    within(Duration::from_millis(500), "draining in the record", || {
        get(&mut r.conn(), "wisp:node:a").is_some_and(|j| j.contains("\"draining\":true"))
    });

    // Killed (no cleanup): the record expires within the TTL of its last refresh.
    a.abandon();
    let t = within(TTL + REFRESH * 2, "a's record expired", || {
        !exists(&r, "wisp:node:a")
    });
    eprintln!("a's record expired {t:?} after the kill");
    within(REFRESH * 3, "a gone from b's snapshot", || {
        b.snapshot().node("a", Instant::now()).is_none()
    });
    // A clean shutdown deletes the record at once.
    b.shutdown();
    assert!(!exists(&r, "wisp:node:b"));
}

#[test]
fn claims_are_exclusive_and_only_the_owner_deletes() {
    if !have_redis("claims_are_exclusive_and_only_the_owner_deletes") {
        return;
    }
    let r = Redis::new();
    let a = Arc::new(node(&r.url(), "a"));
    let b = Arc::new(node(&r.url(), "b"));
    within(Duration::from_secs(2), "connected", || {
        a.connected() && b.connected()
    });
    // Two nodes race for each of 20 rooms: exactly one wins each time.
    let mut wins = [0u32; 2];
    for i in 0..20 {
        let room = format!("race{i}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|d| {
                let (room, barrier) = (room.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    d.claim(&room).unwrap()
                })
            })
            .collect();
        let res: Vec<Claim> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let owner = get(&mut r.conn(), &format!("wisp:room:{room}")).unwrap();
        match (&res[0], &res[1]) {
            (Claim::Owned, Claim::Taken { owner: o }) => {
                assert_eq!((o.as_str(), owner.as_str()), ("a", "a"));
                wins[0] += 1;
            }
            (Claim::Taken { owner: o }, Claim::Owned) => {
                assert_eq!((o.as_str(), owner.as_str()), ("b", "b"));
                wins[1] += 1;
            }
            other => panic!("{room}: {other:?}"),
        }
    }
    eprintln!("race wins a/b: {wins:?}");

    // Claimed again by its owner: still Owned; by the other: Taken.
    assert_eq!(a.claim("r").unwrap(), Claim::Owned);
    assert_eq!(a.claim("r").unwrap(), Claim::Owned);
    assert_eq!(
        b.claim("r").unwrap(),
        Claim::Taken {
            owner: "a".to_string()
        }
    );
    a.publisher_live("r");
    // b believes it has a publisher too (a split): it must not steal the claim...
    let events = b.events();
    b.publisher_live("r");
    let lost = loop {
        match events.recv_timeout(Duration::from_secs(1)).unwrap() {
            e @ DirEvent::ClaimLost { .. } => break e,
            _ => continue,
        }
    };
    assert_eq!(
        lost,
        DirEvent::ClaimLost {
            room: "r".into(),
            owner: "a".into()
        }
    );
    // ...nor delete it when its publisher leaves.
    b.publisher_left("r");
    std::thread::sleep(REFRESH * 2);
    assert_eq!(get(&mut r.conn(), "wisp:room:r").as_deref(), Some("a"));
    // Kept alive by the refreshes well past one TTL.
    std::thread::sleep(TTL);
    assert_eq!(get(&mut r.conn(), "wisp:room:r").as_deref(), Some("a"));
    // The owner deletes it when its publisher leaves.
    a.publisher_left("r");
    within(
        Duration::from_millis(500),
        "claim deleted by its owner",
        || !exists(&r, "wisp:room:r"),
    );
    // A claim whose publisher never goes live is released after one TTL.
    assert_eq!(a.claim("never").unwrap(), Claim::Owned);
    within(TTL + REFRESH * 3, "pending claim released", || {
        !exists(&r, "wisp:room:never")
    });
    assert_eq!(b.claim("never").unwrap(), Claim::Owned);
    // A refused publish gives its claim back at once, a live room keeps it.
    assert_eq!(a.claim("refused").unwrap(), Claim::Owned);
    a.claim_abandoned("refused");
    within(
        Duration::from_millis(500),
        "abandoned claim released",
        || !exists(&r, "wisp:room:refused"),
    );
    assert_eq!(a.claim("kept").unwrap(), Claim::Owned);
    a.publisher_live("kept");
    a.claim_abandoned("kept");
    std::thread::sleep(REFRESH * 2);
    assert!(exists(&r, "wisp:room:kept"));
    assert_eq!(a.errors() + b.errors(), 0);
}

#[test]
fn redis_restart_gets_everything_rewritten_within_2s() {
    if !have_redis("redis_restart_gets_everything_rewritten_within_2s") {
        return;
    }
    let mut r = Redis::new();
    // Production refresh here: the rewrite must not wait for the next period.
    let start = |id: &str| {
        Directory::start(DirectoryConfig {
            redis_url: r.url(),
            node_id: id.to_string(),
            node_url: format!("http://{id}.test:8080"),
            max_sessions: 100,
            ttl: Duration::from_secs(10),
            refresh: Duration::from_secs(2),
            op_timeout: Duration::from_millis(300),
            prefix: "wisp".to_string(),
        })
        .unwrap()
    };
    let a = start("a");
    let b = start("b");
    within(Duration::from_secs(2), "connected", || {
        a.connected() && b.connected()
    });
    for room in ["r1", "r2"] {
        assert_eq!(a.claim(room).unwrap(), Claim::Owned);
        a.publisher_live(room);
    }
    b.publisher_live("r3");
    let keys = [
        "wisp:node:a",
        "wisp:node:b",
        "wisp:room:r1",
        "wisp:room:r2",
        "wisp:room:r3",
    ];
    within(Duration::from_secs(3), "all written", || {
        keys.iter().all(|k| exists(&r, k))
    });

    r.kill();
    std::thread::sleep(Duration::from_millis(300));
    r.start(); // empty: --save "" --appendonly no
    assert!(!exists(&r, "wisp:room:r1"));
    let t = within(Duration::from_secs(2), "all rewritten", || {
        keys.iter().all(|k| exists(&r, k))
    });
    eprintln!("every record and claim rewritten {t:?} after the restart");
    let mut c = r.conn();
    assert_eq!(get(&mut c, "wisp:room:r1").as_deref(), Some("a"));
    assert_eq!(get(&mut c, "wisp:room:r3").as_deref(), Some("b"));
    assert!(a.connected() && b.connected());
    // The outage was seen and counted (the subscriber's drop makes the
    // driver probe at once, so at least one failed operation), and logged
    // once per node when it began and once when it ended.
    assert!(a.errors() + b.errors() > 0);
    let at = format!("at redis://127.0.0.1:{};", r.port);
    assert_eq!(logged(&at, "unreachable"), 2, "{:?}", LOGS.lock().unwrap());
    assert_eq!(
        logged(&at, "reachable again"),
        2,
        "{:?}",
        LOGS.lock().unwrap()
    );
}

#[test]
fn starts_with_redis_down_then_catches_up() {
    if !have_redis("starts_with_redis_down_then_catches_up") {
        return;
    }
    let mut r = Redis::new();
    r.kill();
    let a = node(&r.url(), "a");
    a.publisher_live("early");
    // Every call fails fast, counted.
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(a.claim("x"), Err(DirError::Unavailable));
    assert_eq!(a.room_owner("x"), Err(DirError::Unavailable));
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    assert!(a.errors() >= 2);
    assert!(!a.snapshot().connected);

    r.start();
    let t = within(Duration::from_secs(2), "record and claim written", || {
        exists(&r, "wisp:node:a") && exists(&r, "wisp:room:early")
    });
    eprintln!("caught up {t:?} after redis came up");
    // Retried many times, logged once down and once back.
    let at = format!("at redis://127.0.0.1:{};", r.port);
    assert!(a.errors() >= 3);
    assert_eq!(logged(&at, "unreachable"), 1, "{:?}", LOGS.lock().unwrap());
    assert_eq!(
        logged(&at, "reachable again"),
        1,
        "{:?}",
        LOGS.lock().unwrap()
    );
    assert!(a.connected());
    assert_eq!(a.claim("x").unwrap(), Claim::Owned);
}

#[test]
fn room_live_notification_within_1s() {
    if !have_redis("room_live_notification_within_1s") {
        return;
    }
    let r = Redis::new();
    let origin = node(&r.url(), "origin");
    let edge = node(&r.url(), "edge");
    let events = edge.events();
    // Wait until both subscribers are subscribed.
    within(Duration::from_secs(2), "subscribed", || {
        let n: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("wisp:rooms")
            .query(&mut r.conn())
            .unwrap();
        matches!(n.get(1), Some(redis::Value::Int(2)))
    });
    // The command connections too (the subscribers connect on their own).
    within(Duration::from_secs(2), "connected", || {
        origin.connected() && edge.connected()
    });
    assert_eq!(edge.room_owner("show").unwrap(), None);

    let t = Instant::now();
    assert_eq!(origin.claim("show").unwrap(), Claim::Owned);
    origin.publisher_live("show");
    let ev = loop {
        match events.recv_timeout(Duration::from_secs(1).saturating_sub(t.elapsed())) {
            Ok(DirEvent::RoomLive { room, node, url }) if room == "show" => break (node, url),
            Ok(_) => continue,
            Err(e) => panic!("no notification within 1 s: {e}"),
        }
    };
    eprintln!("notified {:?} after the claim", t.elapsed());
    assert_eq!(ev, ("origin".into(), "http://origin.test:8080".into()));
    // The owner is known without another round trip, and with one.
    let o = edge.room_owner("show").unwrap().unwrap();
    assert_eq!(
        (o.node.as_str(), o.url.as_deref()),
        ("origin", Some("http://origin.test:8080"))
    );
    // The publisher leaves: the room is live nowhere.
    origin.publisher_left("show");
    within(Duration::from_millis(500), "claim gone", || {
        !exists(&r, "wisp:room:show")
    });
    std::thread::sleep(Duration::from_millis(1000)); // past the owner cache
    assert_eq!(edge.room_owner("show").unwrap(), None);
}
