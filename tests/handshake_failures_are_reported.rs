//! A session that never connects says why: one info line with room, session,
//! remote address and the reason in words, and one count in
//! `handshake_failures` by stage (ICE or DTLS). A refused DTLS handshake ends
//! the session at once rather than at the connect timeout.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{JoinOpts, TestNet};
use str0m::media::{Direction, MediaKind};

/// Info lines the core logged (this test binary's logger).
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LINES.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn failures_logged(room: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(&format!("room {room}:")) && l.contains("handshake failed"))
        .cloned()
        .collect()
}

const VIEW: &[(MediaKind, Direction)] = &[
    (MediaKind::Audio, Direction::RecvOnly),
    (MediaKind::Video, Direction::RecvOnly),
];

#[test]
fn a_peer_that_never_sends_a_check_fails_at_ice_after_the_timeout() {
    capture();
    let mut net = TestNet::new(31);
    let v = net.join("hs-ice", false, VIEW).unwrap();
    net.clients[v].blackholed = true;
    net.run_for(Duration::from_secs(16));
    let s = net.sfu.stats();
    assert_eq!(s.handshake_failures, [1, 0]);
    assert_eq!(s.connect_timeouts, 1);
    let lines = failures_logged("hs-ice");
    assert_eq!(lines.len(), 1, "{lines:?}");
    eprintln!("logged: {}", lines[0]);
    assert!(
        lines[0].contains("(ice)") && lines[0].contains("no check from the peer within 15 s"),
        "{lines:?}"
    );
}

/// The client's certificate fingerprint in the offer is not its own.
fn wrong_fingerprint(offer: String) -> String {
    offer
        .lines()
        .map(|l| match l.strip_prefix("a=fingerprint:sha-256 ") {
            Some(fp) => {
                let flipped: String = fp
                    .chars()
                    .map(|c| match c {
                        '0' => '1',
                        '1' => '0',
                        'A' => 'B',
                        'B' => 'A',
                        c => c,
                    })
                    .collect();
                format!("a=fingerprint:sha-256 {flipped}")
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

#[test]
fn a_certificate_that_does_not_match_the_offer_fails_at_dtls_at_once() {
    capture();
    let mut net = TestNet::new(32);
    let p = net.publish("hs-dtls");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p)));
    let opts = JoinOpts {
        mangle: Some(wrong_fingerprint),
        ..JoinOpts::default()
    };
    net.join_opts("hs-dtls", false, VIEW, &opts).unwrap();
    // Well before the 15 s connect timeout.
    assert!(
        net.run_until(Duration::from_secs(3), |n| n.sfu.stats().handshake_failures
            != [0, 0])
    );
    let s = net.sfu.stats();
    assert_eq!(s.handshake_failures, [0, 1]);
    assert_eq!(s.sessions_live, [1, 0], "the failed viewer is gone");
    let lines = failures_logged("hs-dtls");
    assert_eq!(lines.len(), 1, "{lines:?}");
    eprintln!("logged: {}", lines[0]);
    assert!(
        lines[0].contains("(dtls)") && lines[0].contains("fingerprint") && lines[0].contains(":"),
        "{lines:?}"
    );
}

#[test]
fn sessions_that_connect_and_leave_are_not_failures() {
    capture();
    let mut net = TestNet::new(33);
    let p = net.publish("hs-ok");
    let v = net.view("hs-ok");
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
    net.delete(v).unwrap();
    net.clients[p].blackholed = true; // gone without a word: ICE times out later
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.sfu.stats().handshake_failures, [0, 0]);
    assert!(failures_logged("hs-ok").is_empty());
}
