//! Unit tests of the relay manager, against a fake core and fake origins:
//! pull, answer and DELETE; a refused pull; room-live notifications; silent
//! origins (plain and TLS); resolving `Location`.

use super::*;
use std::sync::mpsc;

/// What the fake core was asked.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Pull(String),
    Answer(String, u32, String),
    Failed(String, u32),
}

struct FakeCore(mpsc::Sender<Call>);

impl PullCore for FakeCore {
    type Token = u32;
    fn pull(&self, room: &RoomName) -> Result<(u32, String), String> {
        self.0.send(Call::Pull(room.to_string())).unwrap();
        Ok((7, "v=0 offer".into()))
    }
    fn answer(&self, room: &RoomName, token: u32, answer: String) -> Result<(), String> {
        self.0
            .send(Call::Answer(room.to_string(), token, answer))
            .unwrap();
        Ok(())
    }
    fn failed(&self, room: &RoomName, token: u32) {
        self.0.send(Call::Failed(room.to_string(), token)).unwrap();
    }
}

/// A fake origin: answers every request with `status` (201: an answer
/// and a Location) and reports (method, url, authorization, body).
fn origin(status: u16) -> (String, mpsc::Receiver<(String, String, String, String)>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut rq in server.incoming_requests() {
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(rq.as_reader(), &mut body);
            let auth = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string())
                .unwrap_or_default();
            let _ = tx.send((rq.method().to_string(), rq.url().to_string(), auth, body));
            let resp = tiny_http::Response::from_string("v=0 answer")
                .with_status_code(status)
                .with_header(tiny_http::Header::from_bytes("Location", "/whep/r/tok").unwrap());
            let _ = rq.respond(resp);
        }
    });
    (url, rx)
}

const WAIT: Duration = Duration::from_secs(5);

/// A relay manager on a fake core, with `token` as the cluster token; and
/// what the core is asked.
fn start(token: Option<&str>) -> (RelayHandle, mpsc::Receiver<Call>) {
    let (tx, calls) = mpsc::channel();
    let h = RelayHandle::start(FakeCore(tx), token.map(String::from), "http://self:1").unwrap();
    (h, calls)
}

/// Room `r` is pulled, the origin refuses, the core is told; returns what
/// the origin saw.
fn refused(
    calls: &mpsc::Receiver<Call>,
    seen: &mpsc::Receiver<(String, String, String, String)>,
) -> (String, String, String, String) {
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("r".into()));
    let request = seen.recv_timeout(WAIT).unwrap();
    assert_eq!(
        calls.recv_timeout(WAIT).unwrap(),
        Call::Failed("r".into(), 7)
    );
    request
}

/// Wait until `done` holds; fails after `WAIT`.
fn until(mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < WAIT);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pulls_answers_and_deletes_at_the_origin() {
    let (url, seen) = origin(201);
    let (h, calls) = start(Some("c1"));
    let want = RelayRequest {
        room: "r".into(),
        node: "a".into(),
        url: url.clone(),
    };
    h.want(want.clone());
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("r".into()));
    let (m, path, auth, body) = seen.recv_timeout(WAIT).unwrap();
    assert_eq!((m.as_str(), path.as_str()), ("POST", "/whep/r"));
    assert_eq!((auth.as_str(), body.as_str()), ("Bearer c1", "v=0 offer"));
    assert_eq!(
        calls.recv_timeout(WAIT).unwrap(),
        Call::Answer("r".into(), 7, "v=0 answer".into())
    );
    assert_eq!(h.origin_of("r").as_deref(), Some("a"));
    // At most one upstream per room.
    h.want(want);
    assert!(calls.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(h.count(), 1);
    // Another token's end is not this upstream's.
    h.ended("r", "8");
    h.ended("r", "7");
    let (m, path, auth, _) = seen.recv_timeout(WAIT).unwrap();
    assert_eq!((m.as_str(), path.as_str()), ("DELETE", "/whep/r/tok"));
    assert_eq!(auth, "Bearer c1");
    until(|| h.count() == 0);
    h.shutdown();
}

#[test]
fn a_refused_pull_is_dropped_in_the_core_and_retried_later() {
    let (url, seen) = origin(503);
    let (h, calls) = start(None);
    let want = RelayRequest {
        room: "r".into(),
        node: "a".into(),
        url,
    };
    h.want(want.clone());
    let (_, _, auth, _) = refused(&calls, &seen);
    assert_eq!(auth, "");
    // Counted (`wisp_relay_pull_failures_total`).
    until(|| h.failures() > 0);
    // Not again within RETRY_AFTER_FAILURE...
    until(|| h.origin_of("r").is_none());
    h.want(want.clone());
    assert!(calls.recv_timeout(Duration::from_millis(200)).is_err());
    // ... unless the room is now on another node ...
    let elsewhere = RelayRequest {
        node: "b".into(),
        ..want.clone()
    };
    h.want(elsewhere);
    refused(&calls, &seen);
    // ... and again after it.
    std::thread::sleep(RETRY_AFTER_FAILURE);
    h.want(want);
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("r".into()));
    h.shutdown();
}

/// A room-live notification (`moved`) pulls at once: with no upstream,
/// and through the pause that failed pulls of the same node left (they
/// were of the room before it went live again there).
#[test]
fn a_room_live_notification_pulls_at_once_despite_the_pause() {
    let (url, seen) = origin(503);
    let (h, calls) = start(None);
    let want = RelayRequest {
        room: "r".into(),
        node: "a".into(),
        url,
    };
    h.want(want.clone());
    refused(&calls, &seen);
    until(|| h.origin_of("r").is_none());
    // Paused for a want...
    h.want(want.clone());
    assert!(calls.recv_timeout(Duration::from_millis(200)).is_err());
    // ... not for the notification, well inside RETRY_AFTER_FAILURE.
    let asked = Instant::now();
    h.moved(want);
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("r".into()));
    assert!(asked.elapsed() < RETRY_AFTER_FAILURE / 2);
    h.shutdown();
}

/// An origin that takes the connection and never answers holds only
/// its own pull: another room's pull from a live origin goes on at once.
#[test]
fn a_silent_origin_does_not_hold_other_pulls() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.accept().map(|(c, _)| c));
    let (url, seen) = origin(201);
    let (h, calls) = start(None);
    h.want(RelayRequest {
        room: "stuck".into(),
        node: "dead".into(),
        url: silent_url,
    });
    assert_eq!(
        calls.recv_timeout(WAIT).unwrap(),
        Call::Pull("stuck".into())
    );
    let _conn = held.join().unwrap().unwrap();
    let asked = Instant::now();
    h.want(RelayRequest {
        room: "live".into(),
        node: "a".into(),
        url,
    });
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("live".into()));
    let _ = seen.recv_timeout(WAIT).unwrap();
    assert_eq!(
        calls.recv_timeout(WAIT).unwrap(),
        Call::Answer("live".into(), 7, "v=0 answer".into())
    );
    assert!(asked.elapsed() < HTTP_TIMEOUT / 5, "{:?}", asked.elapsed());
    assert_eq!(h.origin_of("stuck").as_deref(), Some("dead"));
    h.shutdown();
}

/// An `https://` origin that takes the connection and never starts the
/// TLS handshake: the pull fails within the timeout (no hang), like any
/// other failure.
#[test]
fn a_silent_https_origin_fails_the_pull_within_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.accept().map(|(c, _)| c));
    let (h, calls) = start(None);
    let asked = Instant::now();
    h.want(RelayRequest {
        room: "r".into(),
        node: "a".into(),
        url,
    });
    assert_eq!(calls.recv_timeout(WAIT).unwrap(), Call::Pull("r".into()));
    let _conn = held.join().unwrap().unwrap();
    assert_eq!(
        calls.recv_timeout(HTTP_TIMEOUT + WAIT).unwrap(),
        Call::Failed("r".into(), 7)
    );
    assert!(asked.elapsed() < HTTP_TIMEOUT + Duration::from_secs(2));
    until(|| h.failures() > 0);
    h.shutdown();
}

#[test]
fn locations() {
    assert_eq!(resolve("http://a:1", "/whep/r/t"), "http://a:1/whep/r/t");
    assert_eq!(resolve("http://a:1", "whep/r/t"), "http://a:1/whep/r/t");
    assert_eq!(resolve("http://a:1", "http://b:2/x"), "http://b:2/x");
    assert_eq!(base_of("http://a:1/whep/r?x=1"), "http://a:1");
    assert_eq!(base_of("https://a/p/whep/r"), "https://a/p");
}
