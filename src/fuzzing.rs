//! Fuzzing entry points: not a public API, built with the `fuzzing` feature.
//!
//! Each target in `fuzz/fuzz_targets/` (cargo-fuzz, `RUSTC_BOOTSTRAP=1` on
//! stable) is a one-line wrapper around a body here, and `tests/fuzz_smoke.rs`
//! replays every seed corpus through the same bodies on stable, so CI
//! exercises exactly what the fuzzer does:
//!
//! - [`sdp_offer`]: an SDP offer through publish and subscribe;
//! - [`http_request`]: a request through [`crate::http::handle`] with a fake core;
//! - [`datagram`]: datagrams from anywhere into a core with live sessions;
//! - [`core_ops`]: a sequence of operations with the core's invariants after each;
//! - [`recording`]: the recorder's reorder window, depacketizers and writers.
//!
//! The stateful bodies run the core with real str0m clients on
//! [`crate::testnet`], the network the integration tests use.

mod core_ops;
#[cfg(fuzzing)]
pub(crate) mod crypto;
mod datagram;
mod http_request;
mod recording;
#[cfg(fuzzing)]
pub(crate) mod sdp_memo;

pub use core_ops::core_ops;
pub use datagram::{datagram, sample_datagrams};
pub use http_request::http_request;
pub use recording::recording;

/// Reads a fuzz input front to back; past the end it yields zeros and empty slices.
struct Tape<'a>(&'a [u8]);

impl<'a> Tape<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// A length byte times `unit`, then that many bytes.
    fn chunk(&mut self, unit: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) * unit;
        self.take(n)
    }
    /// Bytes up to the next 0x00 (consumed) or the end.
    fn field(&mut self) -> &'a [u8] {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(self.0.len());
        let (f, rest) = self.0.split_at(end);
        self.0 = rest.get(1..).unwrap_or(&[]);
        f
    }
    /// [`Tape::field`] as lossy UTF-8.
    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The test network of the stateful bodies: its clock at the fixed origin,
/// no latency (a datagram and everything it causes happen at once, see
/// [`TestNet::settle`]), room for a few rooms and sessions, and a client
/// error ends that client, as a closed browser tab would. Publishers send
/// a frame every 100 ms, not 33: simulated media was most of the time per
/// input, and a third of it drives the same paths.
fn net(seed: u8) -> TestNet {
    install_crypto();
    same_ids(seed);
    let config = SfuConfig {
        max_sessions: 64,
        max_rooms: 16,
        ..SfuConfig::default()
    };
    let mut net = TestNet::at(u64::from(seed), config, origin());
    net.latency = Duration::ZERO;
    net.client_errors_end_clients = true;
    net.media_every = Duration::from_millis(100);
    net
}

use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;

use crate::sfu::{ApiError, Command, Counts, Output, Reply, RoomName, Sfu, SfuConfig};
use crate::testnet::TestNet;

/// Most `poll_output` calls per drain; a core that never reaches its
/// `Timeout` is a bug, not a slow input.
const MAX_POLLS: usize = 10_000;

/// Clock steps selectable by the control byte; the last one crosses the
/// 15 s connect timeout within the run, so that path is exercised too.
const STEPS: [Duration; 4] = [
    Duration::from_millis(1),
    Duration::from_millis(250),
    Duration::from_secs(3),
    Duration::from_secs(8),
];

const ZERO: Counts = Counts {
    upstream_addrs_used: 0,
    sessions: 0,
    rooms: 0,
    tokens: 0,
    addrs: 0,
    ufrags: 0,
    addr_lists: 0,
    keyframe_timers: 0,
    recently_ended: 0,
};

/// str0m's `accept_offer` still panics on some offers (e.g. "Pt locked
/// multiple times"); wisp catches that (`caught_panics`, 400) and this target
/// checks wisp's handling, not str0m's parser. libFuzzer's panic hook would
/// abort even on a caught panic, so it is replaced by one that prints the
/// message and location only: a panic that escapes wisp still aborts at the
/// fuzz entry point and is reported. The default hook is not used because,
/// with `RUST_BACKTRACE` set (cargo fuzz sets it), it symbolizes a backtrace
/// for every caught panic, which cost more than the rest of such an input.
fn catch_str0m_sdp_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // `install_process_default` ignores a second install, but another
        // caller (a test, the binary) may have installed one already.
        if str0m::crypto::CryptoProvider::get_default().is_none() {
            str0m::crypto::from_feature_flags().install_process_default();
        }
    });
}

/// Seeds the thread-local generator str0m draws its ICE credentials, SSRCs,
/// mids and msids from (the client peers' and the core's `Rtc`s alike), so
/// that an input runs the same way every time it is run, in any process and
/// after any other input. The DTLS keys and randoms (aws-lc) stay random.
fn same_ids(seed: u8) {
    fastrand::seed(0x5749_5350_0000_0000 | u64::from(seed));
}

/// One fixed origin for the fake clock, so runs differ only by their input.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The decisions taken from the first byte of the input.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Subscribe before publishing (viewer waits for a publisher).
    subscribe_first: bool,
    /// Also publish into the second room.
    publish_other: bool,
    /// Try a second publish into the first room (must be refused while the first is live).
    publish_twice: bool,
    /// Clock step between timeouts.
    step: Duration,
    /// Number of `handle_timeout` rounds (1..=4).
    rounds: usize,
    /// Rewrite bare `\n` line ends as `\r\n`.
    crlf: bool,
    /// Delete the sessions one by one before closing the rooms.
    delete_first: bool,
}

impl Plan {
    fn new(b: u8) -> Plan {
        Plan {
            subscribe_first: b & 0x01 != 0,
            publish_other: b & 0x02 != 0,
            publish_twice: b & 0x04 != 0,
            step: STEPS[usize::from((b >> 3) & 0x03)],
            rounds: 1 + usize::from((b >> 5) & 0x01) * 3,
            crlf: b & 0x40 != 0,
            delete_first: b & 0x80 != 0,
        }
    }
}

struct Harness {
    sfu: Sfu,
    now: Instant,
    /// Sessions created, with their role and room, for `delete_first`.
    created: Vec<(crate::sfu::Role, RoomName, crate::sfu::SessionToken)>,
    /// str0m's parser refused the offer text, or found it inconsistent
    /// (e.g. a BUNDLE group naming other mids than the m-lines): every later
    /// POST of it would be refused the same way (the roles' texts differ in
    /// direction lines only), so they are skipped. Parsing was most of the
    /// time per input.
    unparsable: bool,
    /// The offer was refused as a bad offer for this role (publisher,
    /// viewer) after it parsed (e.g. str0m's "No m-lines in offer"): what
    /// the core does with the text of one role before
    /// it looks at the room does not depend on the room, so a later POST of
    /// that role would parse the same text and be refused the same way; it
    /// is skipped. Not for a viewer's offer asking for every simulcast
    /// layer, whose text the core rewrites by the room's shape.
    refused: [bool; 2],
    /// An answer of this role (publisher, viewer) was re-parsed already:
    /// the next answers of that role to the same offer differ only in ICE
    /// credentials and ids, so they are not parsed again.
    answer_checked: [bool; 2],
}

impl Harness {
    /// Drain every output until the core reports its next timeout.
    fn drain(&mut self) -> Instant {
        for _ in 0..MAX_POLLS {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    assert!(!t.contents.is_empty(), "empty datagram queued");
                }
                Output::Record(_) | Output::Relay { .. } | Output::Upstream(_) => {}
                Output::Timeout(t) => return t,
            }
        }
        panic!("poll_output did not reach a Timeout in {MAX_POLLS} calls");
    }

    fn check_maps(&self) {
        let c = self.sfu.counts();
        assert_eq!(c.tokens, c.sessions, "one token per session: {c:?}");
        assert_eq!(c.ufrags, c.sessions, "one ufrag per session: {c:?}");
        assert!(c.rooms <= c.sessions, "a room without sessions: {c:?}");
        let s = self.sfu.stats();
        let live = s.sessions_live[0] + s.sessions_live[1];
        let created = s.sessions_created[0] + s.sessions_created[1];
        let closed = s.sessions_closed[0] + s.sessions_closed[1];
        assert_eq!(created - closed, live, "created - closed != live: {s:?}");
        assert_eq!(live as usize, c.sessions);
    }

    /// POST an offer; checks the reply's shape and returns whether a session was created.
    fn post(&mut self, publisher: bool, room: &RoomName, offer: &str) -> bool {
        if self.unparsable || self.refused[usize::from(publisher)] {
            return false;
        }
        let before = self.sfu.counts().sessions;
        let cmd = if publisher {
            Command::Publish {
                room: room.clone(),
                offer: offer.to_string(),
                record: None,
            }
        } else {
            Command::Subscribe {
                room: room.clone(),
                offer: offer.to_string(),
                edge: false,
            }
        };
        let created = match self.sfu.handle_command(self.now, cmd) {
            Ok(Reply::Created { token, answer, .. }) => {
                if !std::mem::replace(&mut self.answer_checked[usize::from(publisher)], true) {
                    if let Err(e) = SdpAnswer::from_sdp_string(&answer) {
                        panic!("the answer does not re-parse: {e}\n--- answer ---\n{answer}");
                    }
                }
                assert!(
                    answer.contains("a=candidate"),
                    "the answer has no server candidate:\n{answer}"
                );
                let role = if publisher {
                    crate::sfu::Role::Publisher
                } else {
                    crate::sfu::Role::Subscriber
                };
                self.created.push((role, room.clone(), token));
                true
            }
            Ok(other) => panic!("unexpected reply to a POST: {other:?}"),
            Err(ApiError::BadOffer(e)) => {
                let same_text = publisher || !crate::sfu::sdp::asks_every_layer(offer);
                self.unparsable |= e.starts_with("SDP parse:")
                    || (same_text && e.starts_with("SDP inconsistent:"));
                self.refused[usize::from(publisher)] |= same_text;
                false
            }
            Err(ApiError::Unsupported(_)) => false,
            Err(ApiError::AlreadyPublished) => {
                assert!(publisher, "AlreadyPublished for a viewer");
                false
            }
            Err(
                e @ (ApiError::NotFound
                | ApiError::AtCapacity
                | ApiError::Overloaded
                | ApiError::BadFragment(_)
                | ApiError::PreconditionRequired
                | ApiError::PreconditionFailed),
            ) => {
                panic!("unexpected error to a POST: {e:?}")
            }
        };
        let after = self.sfu.counts().sessions;
        if created {
            assert_eq!(after, before + 1, "Created but the session is not there");
        } else {
            assert_eq!(after, before, "a refused offer left a session behind");
        }
        self.check_maps();
        self.drain();
        created
    }
}

/// Feed one fuzz input to a fresh core as WHIP/WHEP offers and check the
/// core's invariants.
///
/// The first byte chooses the order and extra steps (see `Plan`); the rest
/// is the SDP offer text (lossy UTF-8). The offer is posted as a publisher
/// and a viewer of room `a` and a viewer (and maybe a publisher) of room
/// `b` (only the first POST when str0m cannot parse it, only the first of
/// a role that refused it as a bad offer, and only the first answer of each
/// role is parsed again); then the fake clock advances
/// through a few timeouts, and both rooms
/// are closed. Panics if the core panics, refuses a POST with an impossible
/// error, creates an answer that does not re-parse, or leaves anything in
/// any map after the rooms are closed.
pub fn sdp_offer(data: &[u8]) {
    install_crypto();
    catch_str0m_sdp_panics();
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    same_ids(ctl);
    let plan = Plan::new(ctl);
    let mut offer = String::from_utf8_lossy(rest).into_owned();
    if plan.crlf {
        offer = offer.replace("\r\n", "\n").replace('\n', "\r\n");
    }

    let now = origin();
    let config = SfuConfig {
        candidates: vec![crate::testnet::server_addr()],
        seed: [ctl; 32],
        dtls_cert: Some(crate::testnet::server_cert()),
        ..SfuConfig::default()
    };
    let mut h = Harness {
        sfu: Sfu::new(config, now),
        now,
        created: Vec::new(),
        unparsable: false,
        refused: [false; 2],
        answer_checked: [false; 2],
    };
    let a = RoomName::new("a").expect("room name");
    let b = RoomName::new("b").expect("room name");

    if plan.subscribe_first {
        h.post(false, &a, &offer);
    }
    let published = h.post(true, &a, &offer);
    if plan.publish_twice {
        let again = h.post(true, &a, &offer);
        assert!(
            !(published && again),
            "two live publishers accepted in one room"
        );
    }
    if !plan.subscribe_first {
        h.post(false, &a, &offer);
    }
    h.post(false, &b, &offer);
    if plan.publish_other {
        h.post(true, &b, &offer);
    }

    for _ in 0..plan.rounds {
        let next = h.drain();
        h.now = (h.now + plan.step).max(next.min(h.now + STEPS[3]));
        h.sfu.handle_timeout(h.now);
        h.check_maps();
    }
    h.drain();

    if plan.delete_first {
        for (role, room, token) in std::mem::take(&mut h.created) {
            let cmd = Command::DeleteSession { role, room, token };
            match h.sfu.handle_command(h.now, cmd) {
                Ok(Reply::Deleted) | Err(ApiError::NotFound) => {}
                other => panic!("unexpected reply to a DELETE: {other:?}"),
            }
            h.check_maps();
        }
    }

    h.now += Duration::from_millis(1);
    for room in [a, b] {
        match h.sfu.handle_command(h.now, Command::CloseRoom { room }) {
            Ok(Reply::RoomClosed { .. }) | Err(ApiError::NotFound) => {}
            other => panic!("unexpected reply to CloseRoom: {other:?}"),
        }
        h.check_maps();
    }
    h.drain();
    h.now += Duration::from_secs(1);
    h.sfu.handle_timeout(h.now);
    h.drain();
    // Tokens of sessions that ended without a DELETE stay for a bounded grace time.
    let c = Counts {
        recently_ended: 0,
        ..h.sfu.counts()
    };
    assert_eq!(c, ZERO, "something left after closing every room");
    assert_eq!(h.sfu.room_count(), 0);
}
